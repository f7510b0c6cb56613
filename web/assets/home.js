// The homeowner's view (`/home` for one's own home, `/home/{home_id}` for a given one):
// my fixtures, each cartridge's remaining life as a gauge with its predicted date and
// replacement interval, reminders with snooze / done / book a visit, and my open visits.
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
    h('section', { id: 'reminders' }, h('h2', {}, t('reminders')), reminderList(reminders, home.id, now)),
    h('section', { id: 'visits' }, h('h2', {}, t('my_visits')), visitList(tickets.filter((x) => ACTIVE.includes(x.status)))),
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

function cartridge(d, c, schedule, now) {
  const start = c.replaced_ts_ms ?? d.installed_ts_ms;
  const due = schedule?.due_ts_ms ?? start + c.max_age_days * DAY;
  const fraction = due > start ? (due - now) / (due - start) : 0;
  const pct = Math.max(0, Math.min(100, Math.round(fraction * 100)));
  const kind = tOr(`cartridge_${c.kind}`, c.kind.replace(/_/g, ' '));
  return h('div', { class: 'cartridge', id: `cartridge-${d.id}-${c.slot}` },
    gauge(fraction, `${pct}%`, t('remaining', { pct })),
    h('div', {},
      h('p', { class: 'name' }, t('cartridge', { slot: c.slot, kind })),
      h('p', { class: 'remaining' }, t('remaining', { pct })),
      h('p', { class: 'due' }, t('predicted', { date: fmtDate(due) })),
      schedule?.lo_ts_ms != null && schedule?.hi_ts_ms != null
        ? h('p', { class: 'muted small range' }, t('range', { lo: fmtDate(schedule.lo_ts_ms), hi: fmtDate(schedule.hi_ts_ms) }))
        : null,
      h('p', { class: 'muted small interval' }, t('interval', { days: c.max_age_days, litres: c.rated_litres })),
      schedule ? h('p', { class: 'tag' }, tOr(`filter_state_${schedule.state}`, schedule.state)) : null,
    ),
  );
}

function reminderList(reminders, homeId, now) {
  const shown = reminders.filter((r) => !['cancelled', 'done'].includes(r.status));
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
    return h('li', { class: 'card reminder', id: `reminder-${r.id}`, dataset: { status: r.status } },
      h('div', {},
        h('strong', {}, tOr(`kind_${r.kind}`, r.kind)),
        h('span', { class: 'muted small' }, ` ${r.device_id}`),
        h('p', { class: 'state' }, later ? t('next_reminder', { date: fmtDate(r.send_at_ts_ms, true) }) : tOr(`rem_${r.status}`, r.status)),
      ),
      actionable
        ? h('div', { class: 'actions' },
          act(r, 'act-snooze', t('snooze'), () => api(`/reminders/${r.id}/snooze`, { method: 'POST', body: { hours: 24 } })),
          act(r, 'act-done', t('done'), () => api(`/reminders/${r.id}/done`, { method: 'POST' })),
          act(r, 'act-book primary', t('book'), () => api(`/reminders/${r.id}/book`, { method: 'POST' })))
        : null,
    );
  }));
}

function visitList(visits) {
  if (!visits.length) return h('p', { class: 'muted' }, t('no_visits'));
  return h('ul', { class: 'visits' }, visits.map((v) => h('li', { class: 'card visit', id: `visit-${v.id}` },
    h('strong', {}, `#${v.id} ${tOr(`kind_${v.kind}`, v.kind)}`),
    h('span', { class: `status status-${v.status}` }, t(`status_${v.status}`)),
    h('p', { class: 'muted small' }, `${v.device_id} · ${t('opened')} ${fmtDate(v.opened_ts_ms, true)}`),
  )));
}
