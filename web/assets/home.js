// The homeowner's view (`/home` for one's own home, `/home/{home_id}` for a given one):
// my fixtures, each cartridge's remaining life as a gauge (the litres left by the usage
// the device reports, against the cartridge's rated capacity) with its predicted date and
// replacement interval; reminders (one per cartridge) with snooze / done / book a visit —
// a leak instead shows safety steps, no snooze, and no second booking while a visit is
// open; and my visits, each with its status bar (reported → assigned → on the way →
// fixed → follow-up).
// The API scopes a homeowner to their home: another home's page answers 404 and the page
// shows "not allowed" and nothing else.

import { api, boot, clear, h, notice, showError, ApiError } from './api.js';
import { t, tOr, fmtDate } from './i18n.js';
import { gauge } from './charts.js';

const DAY = 86400000;
const ACTIVE = ['open', 'assigned', 'in_progress'];

boot(async (me) => {
  const fromPath = decodeURIComponent(location.pathname.split('/')[2] ?? '');
  const homeId = fromPath || (me.role === 'homeowner' ? me.subject : '');
  if (me.role === 'technician') {
    notice('denied', t('not_allowed'));
    return;
  }
  if (!homeId) {
    pickHome();
    return;
  }
  await show(homeId);
});

function pickHome() {
  const app = clear();
  const input = h('input', { id: 'home-id', required: true, pattern: '[a-z0-9_-]{1,32}' });
  const form = h('form', { class: 'card signin' }, h('h1', {}, t('open_home')), h('label', { for: 'home-id' }, t('home_id')), input,
    h('button', { type: 'submit', class: 'primary' }, t('open_page')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    location.href = `/home/${encodeURIComponent(input.value.trim())}`;
  });
  app.append(form);
}

async function show(homeId) {
  let home;
  try {
    home = await api(`/homes/${encodeURIComponent(homeId)}`);
  } catch (e) {
    // 404 (not yours, or no such home), 403 (role), 422 (malformed id): not allowed.
    if (e instanceof ApiError && [403, 404, 422].includes(e.status)) {
      notice('denied', t('not_allowed'));
      return;
    }
    throw e;
  }
  const q = encodeURIComponent(home.id);
  const [devices, reminders, tickets] = await Promise.all([
    api(`/homes/${q}/devices`),
    api(`/reminders?home_id=${q}`),
    api(`/tickets?home_id=${q}`),
  ]);
  const schedules = Object.fromEntries(await Promise.all(devices.map(async (d) => [d.id, await api(`/devices/${encodeURIComponent(d.id)}/filters`)])));
  const app = clear();
  const now = Date.now();
  app.append(
    h('h1', {}, t('home_title')),
    h('p', { class: 'muted', id: 'home-address' }, `${t('home_of', { id: home.id })} · ${home.address}`),
    h('section', { id: 'fixtures' }, h('h2', {}, t('my_fixtures')),
      devices.length ? h('div', { class: 'grid' }, devices.map((d) => fixture(d, schedules[d.id] ?? [], now))) : h('p', { class: 'muted' }, t('no_devices'))),
    h('section', { id: 'reminders' }, h('h2', {}, t('reminders')), reminderList(reminders, home.id, now, tickets, devices)),
    h('section', { id: 'visits' }, h('h2', {}, t('my_visits')), visitList(tickets.filter((x) => ACTIVE.includes(x.status) || (x.status === 'resolved' && now - (x.resolved_ts_ms ?? 0) < 7 * DAY)))),
  );
}

function fixture(d, schedules, now) {
  return h('article', { class: 'card fixture', id: `device-${d.id}` },
    h('h3', {}, tOr(`model_${d.model}`, d.model), h('span', { class: 'muted small' }, ` ${d.id}`)),
    d.cartridges.length
      ? h('div', { class: 'cartridges' }, d.cartridges.map((c) => cartridge(d, c, schedules.find((s) => s.slot === c.slot), now)))
      : h('p', { class: 'muted' }, t('no_cartridges')),
  );
}

/**
 * The share of the cartridge left: by the litres the device's reported usage leaves (the
 * forecast's `remaining_l`, carried forward at the learned daily use) against the rated
 * litres; without a report yet, by time towards the due date.
 */
function remainingFraction(d, c, schedule, now) {
  if (schedule?.remaining_l != null && c.rated_litres > 0) {
    const since = Math.max(0, now - (schedule.reported_ts_ms ?? now)) / DAY;
    const left = Math.max(0, schedule.remaining_l - (schedule.daily_l ?? 0) * since);
    return { fraction: left / c.rated_litres, litres: Math.round(left) };
  }
  const start = c.replaced_ts_ms ?? d.installed_ts_ms;
  const due = schedule?.due_ts_ms ?? start + c.max_age_days * DAY;
  return { fraction: due > start ? (due - now) / (due - start) : 0, litres: null };
}

function cartridge(d, c, schedule, now) {
  const start = c.replaced_ts_ms ?? d.installed_ts_ms;
  const due = schedule?.due_ts_ms ?? start + c.max_age_days * DAY;
  const { fraction, litres } = remainingFraction(d, c, schedule, now);
  const pct = Math.max(0, Math.min(100, Math.round(fraction * 100)));
  const kind = tOr(`cartridge_${c.kind}`, c.kind.replace(/_/g, ' '));
  return h('div', { class: 'cartridge', id: `cartridge-${d.id}-${c.slot}` },
    gauge(fraction, `${pct}%`, t('remaining', { pct })),
    h('div', {},
      h('p', { class: 'name' }, t('cartridge', { slot: c.slot, kind })),
      h('p', { class: 'remaining' }, t('remaining', { pct }), litres != null ? h('span', { class: 'muted small litres' }, ` · ${t('litres_left', { litres, rated: c.rated_litres })}`) : null),
      h('p', { class: 'due' }, t('predicted', { date: fmtDate(due) })),
      schedule?.lo_ts_ms != null && schedule?.hi_ts_ms != null
        ? h('p', { class: 'muted small range' }, t('range', { lo: fmtDate(schedule.lo_ts_ms), hi: fmtDate(schedule.hi_ts_ms) }))
        : null,
      h('p', { class: 'muted small interval' }, t('interval', { days: c.max_age_days, litres: c.rated_litres })),
      schedule ? h('p', { class: 'tag' }, tOr(`filter_state_${schedule.state}`, schedule.state)) : null,
    ),
  );
}

/** One reminder per device and cause (per cartridge for filters): the one sent, else the soonest. */
function onePerCause(reminders) {
  const rank = (r) => (r.status === 'sent' ? 0 : r.status === 'scheduled' ? 1 : 2);
  const best = new Map();
  for (const r of reminders) {
    const key = `${r.device_id}|${r.fault_key}`;
    const o = best.get(key);
    if (!o || rank(r) < rank(o) || (rank(r) === rank(o) && (r.send_at_ts_ms < o.send_at_ts_ms || (r.send_at_ts_ms === o.send_at_ts_ms && r.id > o.id)))) best.set(key, r);
  }
  return reminders.filter((r) => best.get(`${r.device_id}|${r.fault_key}`) === r);
}

/** The cartridge a filter reminder is about, by name. */
function reminderTitle(r, devices) {
  if (r.kind !== 'filter_due') return tOr(`kind_${r.kind}`, r.kind);
  const slot = r.vars?.slot;
  const kind = r.vars?.cartridge ?? devices.find((d) => d.id === r.device_id)?.cartridges.find((c) => c.slot === slot)?.kind;
  const name = kind ? tOr(`cartridge_${kind}`, kind.replace(/_/g, ' ')) : `#${slot}`;
  return t('filter_due_named', { name, date: fmtDate(r.vars?.due_ts_ms ?? r.send_at_ts_ms) });
}

function reminderList(reminders, homeId, now, tickets, devices) {
  const shown = onePerCause(reminders.filter((r) => !['cancelled', 'done'].includes(r.status)));
  if (!shown.length) return h('p', { class: 'muted' }, t('no_reminders'));
  const act = (r, cls, label, call) => h('button', {
    type: 'button',
    class: cls,
    onclick: async () => {
      try {
        await call();
        await show(homeId);
      } catch (e) {
        showError(e);
      }
    },
  }, label);
  return h('ul', { class: 'reminders' }, shown.map((r) => {
    const actionable = ['scheduled', 'sent'].includes(r.status);
    const later = r.status === 'scheduled' && r.send_at_ts_ms > now;
    const leak = r.kind === 'leak';
    const visit = tickets.find((x) => ACTIVE.includes(x.status) && x.device_id === r.device_id && (x.fault_key === r.fault_key || x.id === r.ticket_id));
    const buttons = [];
    if (actionable && !leak) buttons.push(act(r, 'act-snooze', t('snooze'), () => api(`/reminders/${r.id}/snooze`, { method: 'POST', body: { hours: 24 } })));
    if (actionable && !leak) buttons.push(act(r, 'act-done', t('done'), () => api(`/reminders/${r.id}/done`, { method: 'POST' })));
    if (actionable && !visit) buttons.push(act(r, 'act-book primary', t('book'), () => api(`/reminders/${r.id}/book`, { method: 'POST' })));
    return h('li', { class: `card reminder${leak ? ' urgent' : ''}`, id: `reminder-${r.id}`, dataset: { status: r.status, kind: r.kind } },
      h('div', {},
        h('strong', {}, reminderTitle(r, devices)),
        h('span', { class: 'muted small' }, ` ${(r.vars?.devices?.length > 1 ? r.vars.devices : [r.device_id]).join(', ')}`),
        r.vars?.homes > 1 ? h('p', { class: 'tag site-wide' }, t('site_wide', { n: r.vars.homes })) : null,
        h('p', { class: 'state' }, later ? t('next_reminder', { date: fmtDate(r.send_at_ts_ms, true) }) : tOr(`rem_${r.status}`, r.status)),
        visit ? h('p', { class: 'tag visit-open' }, t('visit_open', { id: visit.id })) : null,
        leak ? h('div', { class: 'safety', role: 'alert' },
          h('strong', {}, t('safety_title')),
          h('ol', {}, ['safety_1', 'safety_2', 'safety_3', 'safety_4'].map((k) => h('li', {}, t(k))))) : null,
      ),
      buttons.length ? h('div', { class: 'actions' }, buttons) : null,
    );
  }));
}

const STEPS = ['reported', 'assigned', 'on_the_way', 'fixed', 'followup'];

/** The step a visit is at: reported → assigned → technician on the way → fixed → follow-up. */
function stepOf(v) {
  switch (v.status) {
    case 'open': return 0;
    case 'assigned': return 1;
    case 'in_progress': return 2;
    case 'resolved': return 3;
    default: return 4;
  }
}

function visitList(visits) {
  if (!visits.length) return h('p', { class: 'muted' }, t('no_visits'));
  return h('ul', { class: 'visits' }, visits.map((v) => {
    const at = stepOf(v);
    return h('li', { class: 'card visit', id: `visit-${v.id}` },
      h('strong', {}, `#${v.id} ${tOr(`kind_${v.kind}`, v.kind)}`),
      h('span', { class: `status status-${v.status}` }, t(`status_${v.status}`)),
      h('ol', { class: 'steps', 'aria-label': t('visit_progress') }, STEPS.map((k, i) => h('li', {
        class: i < at ? 'done' : i === at ? 'current' : '',
        'aria-current': i === at ? 'step' : undefined,
      }, t(`step_${k}`)))),
      h('p', { class: 'muted small next-step' }, at < STEPS.length - 1 ? t(`step_notice_${STEPS[at]}`) : t('step_notice_followup')),
      h('p', { class: 'muted small' }, `${v.device_id} · ${t('opened')} ${fmtDate(v.opened_ts_ms, true)}`),
    );
  }));
}
