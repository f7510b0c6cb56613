// The after-sales board (`/board`): tickets filtered by status, priority, region and
// technician, with deadline countdowns, the lifecycle buttons (assign, start, resolve,
// close) and a ticket's evidence with a chart of its readings. Agents and admins see
// every ticket; a technician sees their own (the API decides); homeowners are not allowed.
// Agents also see the unclaimed-devices queue: devices that report findings but are not
// registered; a critical finding of theirs is a ticket without a home ("find the owner").

import { api, boot, clear, h, notice, showError } from './api.js';
import { t, tOr, fmtDate, fmtDuration, getLang } from './i18n.js';
import { timeline } from './charts.js';
import { commandsSection, outcomeText } from './commands.js';

const ACTIVE = ['open', 'assigned', 'in_progress'];
const PRIORITIES = ['critical', 'high', 'normal', 'low'];
const STATUSES = ['open', 'assigned', 'in_progress', 'resolved', 'closed', 'cancelled'];

const state = { me: null, tickets: [], techs: [], unclaimed: null, selected: null, detailSeq: 0, filter: { status: 'active', priority: '', region: '', tech: '' } };

boot(async (me) => {
  state.me = me;
  if (me.role === 'homeowner') {
    notice('denied', t('not_allowed'));
    return;
  }
  await load();
});

async function load() {
  const canManage = ['admin', 'agent'].includes(state.me.role);
  const [tickets, techs, unclaimed] = await Promise.all([
    api('/tickets'),
    canManage ? api('/technicians') : Promise.resolve([]),
    canManage ? api('/unclaimed?limit=20') : Promise.resolve(null),
  ]);
  state.tickets = tickets;
  state.techs = techs;
  state.unclaimed = unclaimed;
  render();
}

function select(id, value, options, onchange) {
  return h('select', { id, onchange: (e) => onchange(e.target.value) },
    options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)));
}

function render() {
  const app = clear();
  const f = state.filter;
  const regions = [...new Set(state.tickets.map((x) => x.region).filter(Boolean))].sort();
  const set = (k) => (v) => {
    f[k] = v;
    render();
  };
  const filters = h('div', { class: 'filters' },
    h('label', {}, t('filter_status'), select('f-status', f.status, [['active', t('active')], ['', t('all')], ...STATUSES.map((s) => [s, t(`status_${s}`)])], set('status'))),
    h('label', {}, t('filter_priority'), select('f-priority', f.priority, [['', t('all')], ...PRIORITIES.map((p) => [p, t(`prio_${p}`)])], set('priority'))),
    h('label', {}, t('filter_region'), select('f-region', f.region, [['', t('all')], ...regions.map((r) => [r, r])], set('region'))),
    state.techs.length
      ? h('label', {}, t('filter_tech'), select('f-tech', f.tech, [['', t('all')], ['-', t('unassigned')], ...state.techs.map((x) => [x.id, x.name])], set('tech')))
      : null,
  );
  const shown = state.tickets.filter((x) =>
    (f.status === 'active' ? ACTIVE.includes(x.status) : !f.status || x.status === f.status)
    && (!f.priority || x.priority === f.priority)
    && (!f.region || x.region === f.region)
    && (!f.tech || (f.tech === '-' ? !x.assignee : x.assignee === f.tech)));
  shown.sort((a, b) => ACTIVE.includes(b.status) - ACTIVE.includes(a.status) || a.deadline_ts_ms - b.deadline_ts_ms);
  const list = h('div', { class: 'tickets', id: 'tickets' },
    shown.length ? shown.map(card) : h('p', { class: 'muted' }, t('no_tickets')));
  const detail = h('aside', { class: 'detail', id: 'detail' });
  // append() would print an absent part (no unclaimed devices) as "null": leave it out.
  app.append(...[
    h('h1', {}, t('board_title')),
    unclaimedSection(),
    filters,
    h('p', { class: 'muted', id: 'count' }, t('tickets_shown', { n: shown.length })),
    h('div', { class: 'board' }, list, detail),
  ].filter(Boolean));
  if (state.selected !== null) showDetail(state.selected);
  tick();
}

/** The unclaimed-devices queue (agents): devices that report findings but are not registered. */
function unclaimedSection() {
  const q = state.unclaimed;
  if (!q || q.device_count === 0) return null;
  const open = (id) => () => {
    state.selected = id;
    showDetail(id);
  };
  return h('section', { class: 'card unclaimed', id: 'unclaimed' },
    h('h2', {}, t('unclaimed_title', { n: q.device_count })),
    h('p', { class: 'muted small' }, t('unclaimed_hint', { findings: q.finding_count, tickets: q.open_tickets })),
    h('div', { class: 'table-scroll' },
      h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, t('device')), h('th', { class: 'num' }, t('findings')), h('th', {}, t('latest')), h('th', {}, t('last_seen')), h('th', {}, t('ticket')))),
        h('tbody', {}, q.devices.map((d) => h('tr', { id: `unclaimed-${d.device_id}`, class: d.critical > 0 ? 'critical' : '' },
          h('td', {}, d.device_id),
          h('td', { class: 'num' }, d.findings),
          h('td', {}, tOr(`kind_${d.last_kind}`, d.last_kind)),
          h('td', {}, fmtDate(d.last_ts_ms, true)),
          h('td', {}, d.ticket_id ? h('button', { type: 'button', class: 'link', onclick: open(d.ticket_id) }, `#${d.ticket_id}`) : t('none')))))),
    ),
  );
}

/** The assignee's name; a technician (who cannot list technicians) sees "You" on their own. */
function techName(id) {
  if (state.me.role === 'technician' && id === state.me.subject) return t('assigned_to_me');
  return state.techs.find((x) => x.id === id)?.name ?? id;
}

function card(x) {
  const role = state.me.role;
  const canManage = role === 'admin' || role === 'agent';
  const act = (cls, label, fn) => h('button', { type: 'button', class: cls, onclick: () => run(fn) }, label);
  const to = (status) => () => api(`/tickets/${x.id}/transition`, { method: 'POST', body: { to: status } });
  const actions = [];
  if (canManage && ACTIVE.includes(x.status)) {
    const pick = h('select', { class: 'assign-to', 'aria-label': t('assignee') },
      h('option', { value: '' }, t('auto_assign')),
      state.techs.map((tech) => h('option', { value: tech.id, selected: tech.id === x.assignee }, `${tech.name} · ${tech.region}`)));
    actions.push(pick, act('act-assign', t('assign'), () => api(`/tickets/${x.id}/assign`, { method: 'POST', body: { technician_id: pick.value || null } })));
  }
  if (x.status === 'assigned') actions.push(act('act-start', t('start'), to('in_progress')));
  if (ACTIVE.includes(x.status)) actions.push(act('act-resolve primary', t('resolve'), to('resolved')));
  if (canManage && x.status === 'resolved') actions.push(act('act-close', t('close'), to('closed')));
  actions.push(h('button', { type: 'button', class: 'act-evidence link', onclick: () => { state.selected = x.id; showDetail(x.id); } }, t('evidence')));
  const finished = !ACTIVE.includes(x.status);
  return h('article', { class: `ticket prio-${x.priority}${state.selected === x.id ? ' selected' : ''}`, id: `ticket-${x.id}`, dataset: { status: x.status } },
    h('header', {},
      h('span', { class: `badge prio-${x.priority}` }, t(`prio_${x.priority}`)),
      h('strong', {}, `#${x.id} ${tOr(`kind_${x.kind}`, x.kind)}`),
      h('span', { class: `status status-${x.status}` }, t(`status_${x.status}`)),
    ),
    h('dl', {},
      h('dt', {}, t('device')), h('dd', {}, x.device_id),
      h('dt', {}, t('home')), h('dd', {}, x.home_id ? `${x.home_id}${x.region ? ` · ${x.region}` : ''}` : t('owner_unknown')),
      h('dt', {}, t('assignee')), h('dd', { class: 'assignee' }, x.assignee ? techName(x.assignee) : t('unassigned')),
      h('dt', {}, t('deadline')), h('dd', {},
        h('span', { class: 'countdown', dataset: { deadline: x.deadline_ts_ms, finished: finished ? '1' : '' } }, ''),
      ),
    ),
    x.source === 'homeowner' ? h('p', { class: 'tag source' }, t('source_homeowner')) : null,
    !x.home_id ? h('p', { class: 'tag unclaimed' }, t('find_owner')) : null,
    x.condition_cleared && !finished ? h('p', { class: 'tag cleared' }, t('cleared')) : null,
    h('div', { class: 'actions' }, actions),
  );
}

async function run(action) {
  try {
    await action();
    await load();
  } catch (e) {
    showError(e);
  }
}

/** Updates every countdown; runs every second while the page is open. */
function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll('.countdown')) {
    const left = Number(el.dataset.deadline) - now;
    if (el.dataset.finished) {
      el.textContent = `${fmtDate(Number(el.dataset.deadline), true)} · ${t('met')}`;
      el.className = 'countdown';
    } else {
      el.textContent = left >= 0 ? t('due_in', { time: fmtDuration(left) }) : t('overdue', { time: fmtDuration(-left) });
      el.className = `countdown ${left < 0 ? 'late' : left < 3600000 ? 'soon' : 'ok'}`;
    }
  }
}
setInterval(tick, 1000);

/** The unit of a fault's reading (contract v1: the unit each fault code implies). */
const UNITS = {
  leak: 'mL/min',
  valve_stuck: 's',
  heater_over_temp: '°C',
  heater_failure: '°C',
  low_inlet_pressure: 'kPa',
  inlet_clog: '%',
};

/** A reading as shown: inlet clogging is a flow ratio, shown as a percentage. */
function reading(code, v) {
  return code === 'inlet_clog' && Math.abs(v) <= 1 ? Math.round(v * 1000) / 10 : v;
}

/** A time in the page's language (not the browser's). */
function fmtTime(ms) {
  return new Date(ms).toLocaleString(getLang() === 'zh' ? 'zh-CN' : 'en-GB', { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** One piece of evidence as words: "Leak flow · 850 mL/min · reported by the device". */
function describe(e) {
  if (e.source === 'command') {
    // A device's answer to a command: what was asked, how it went, what it means.
    const parts = [`${t('ev_command')} #${e.cmd_id} ${tOr(`cmd_${e.command}`, e.command)}`, tOr(`cmd_result_${e.status}`, e.status)];
    const o = outcomeText(e.outcome, e.diagnostics);
    if (o) parts.push(o);
    return parts.join(' · ');
  }
  const code = e.fault_code;
  const parts = [];
  if (code) parts.push(tOr(`fault_${code}`, code.replace(/_/g, ' ')));
  if (typeof e.value === 'number') parts.push(`${reading(code, e.value)}${UNITS[code] ? ` ${UNITS[code]}` : ''}`);
  for (const [k, v] of Object.entries(e)) {
    if (['fault_code', 'value'].includes(k)) continue;
    if (k === 'source') {
      parts.push(tOr(`src_${v}`, String(v)));
      continue;
    }
    parts.push(`${tOr(`ev_${k}`, k.replace(/_/g, ' '))}: ${typeof v === 'object' ? JSON.stringify(v) : v}`);
  }
  return parts.join(' · ');
}

async function showDetail(id) {
  const panel = document.getElementById('detail');
  if (!panel) return;
  state.detailSeq += 1;
  const seq = state.detailSeq;
  for (const el of document.querySelectorAll('.ticket.selected')) el.classList.remove('selected');
  document.getElementById(`ticket-${id}`)?.classList.add('selected');
  // A refresh of the ticket shown (a command finished) keeps it on screen until the new one is in.
  if (panel.dataset.ticket !== String(id)) panel.replaceChildren(h('p', { class: 'muted' }, t('loading')));
  let d;
  let around = null;
  try {
    // The readings around the finding come from the telemetry store (the gateway); without
    // them (store unreachable) the chart falls back to the values on the evidence.
    [d, around] = await Promise.all([api(`/tickets/${id}`), api(`/tickets/${id}/readings`).catch(() => null)]);
  } catch (e) {
    panel.replaceChildren(h('p', { class: 'error' }, t('error', { message: e.message })));
    return;
  }
  if (seq !== state.detailSeq) return; // another ticket was opened meanwhile
  const canCommand = ['admin', 'agent', 'technician'].includes(state.me.role);
  const readings = d.evidence.map((e) => ({ t: e.ts_ms, e: e.evidence ?? {}, severity: e.severity }));
  // The chart shows what was measured; a command's answer (ids, diagnostics) is not a reading.
  const measured = readings.filter((r) => r.e.source !== 'command');
  const numeric = [...new Set(measured.flatMap((r) => Object.keys(r.e).filter((k) => typeof r.e[k] === 'number')))];
  const key = numeric.includes('value') ? 'value' : numeric[0];
  const code = measured.find((r) => r.e.fault_code)?.e.fault_code;
  const unit = key === 'value' ? (UNITS[code] ?? '') : '';
  const points = key ? measured.filter((r) => typeof r.e[key] === 'number').map((r) => ({ t: r.t, v: key === 'value' ? reading(code, r.e[key]) : r.e[key] })) : [];
  const name = key === 'value' ? tOr(`fault_${code}`, tOr(`kind_${d.kind}`, d.kind)) : tOr(`ev_${key}`, key);
  // replaceChildren would print a null as "null": leave the absent parts out.
  panel.dataset.ticket = String(id);
  panel.replaceChildren(...[
    h('h2', {}, `#${d.id} ${tOr(`kind_${d.kind}`, d.kind)} · ${t('evidence')}`),
    h('p', { class: 'muted' }, `${t('device')} ${d.device_id} · ${t('opened')} ${fmtDate(d.opened_ts_ms, true)}`),
    d.contact ? contact(d) : null,
    d.address ? h('p', { class: 'address' }, `${t('address')}: ${d.address}`) : null,
    around?.series?.length
      ? readingsChart(around)
      : key ? h('figure', { class: 'evidence-chart' }, timeline(points, `${name}${unit ? ` (${unit})` : ''}`, fmtTime, unit), h('figcaption', {}, `${t('readings')}: ${name}${unit ? ` (${unit})` : ''}`)) : null,
    canCommand ? commandsSection(d, () => seq === state.detailSeq, () => showDetail(id)) : null,
    readings.length
      ? h('table', { class: 'evidence' },
        h('thead', {}, h('tr', {}, h('th', {}, t('time')), h('th', {}, t('severity')), h('th', {}, t('readings')))),
        h('tbody', {}, readings.map((r) => h('tr', {},
          h('td', {}, fmtTime(r.t)),
          h('td', {}, tOr(`sev_${r.severity}`, r.severity)),
          h('td', {}, describe(r.e)))))
      )
      : h('p', { class: 'muted' }, t('no_evidence')),
  ].filter(Boolean));
}

/** A series' name: "Water use", "Leak flow", "Inlet pressure". */
function seriesName(key) {
  return key.startsWith('fault_') ? tOr(key, key.slice(6).replace(/_/g, ' ')) : tOr(`series_${key}`, key.replace(/_/g, ' '));
}

/** A time on the chart's axis: day and minute. */
function fmtTick(ms) {
  return new Date(ms).toLocaleString(getLang() === 'zh' ? 'zh-CN' : 'en-GB', { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

/**
 * The device's readings around the finding (`GET /api/tickets/{id}/readings`): one series
 * at a time on a time axis from 12 h before the finding, the finding marked, with a chip
 * per series to switch.
 */
function readingsChart(r) {
  const fig = h('figure', { class: 'evidence-chart', id: 'readings' });
  const draw = (i) => {
    const sr = r.series[i];
    const label = `${seriesName(sr.key)} (${sr.unit})`;
    const pts = sr.points.map(([ts, v]) => ({ t: ts, v }));
    fig.replaceChildren(...[
      r.series.length > 1
        ? h('div', { class: 'series-pick' }, r.series.map((x, j) => h('button', {
          type: 'button',
          class: `chip${j === i ? ' on' : ''}`,
          'aria-pressed': j === i ? 'true' : 'false',
          dataset: { series: x.key },
          onclick: () => draw(j),
        }, seriesName(x.key))))
        : null,
      timeline(pts, label, fmtTick, sr.unit, { from: r.from_ts_ms, to: r.to_ts_ms, marker: r.finding_ts_ms, markerLabel: t('chart_finding') }),
      h('figcaption', {}, t('readings_caption', { name: label, n: pts.length, from: fmtTick(r.from_ts_ms), to: fmtTick(r.to_ts_ms) })),
    ].filter(Boolean));
  };
  draw(0);
  return fig;
}

/** The contact line: the phone masked, with "reveal" that asks for a reason (audited). */
function contact(d) {
  const phone = h('span', { class: 'phone' }, d.contact.phone);
  const line = h('p', { class: 'contact' }, `${t('contact')}: ${d.contact.name} `, phone);
  if (!d.contact.phone.includes('*')) return line;
  line.append(' ', h('span', { class: 'masked' }, `(${t('phone_masked')})`));
  const reason = h('input', { class: 'reveal-reason', placeholder: t('reveal_reason'), 'aria-label': t('reveal_reason'), maxlength: 200 });
  const button = h('button', {
    type: 'button',
    class: 'act-reveal',
    onclick: async () => {
      if (reason.value.trim().length < 3) {
        reason.setCustomValidity(t('reveal_need_reason'));
        reason.reportValidity();
        return;
      }
      try {
        const r = await api(`/tickets/${d.id}/reveal`, { method: 'POST', body: { reason: reason.value.trim() } });
        phone.textContent = r.phone;
        form.remove();
        line.querySelector('.masked')?.remove();
      } catch (e) {
        showError(e);
      }
    },
  }, t('reveal'));
  reason.addEventListener('input', () => reason.setCustomValidity(''));
  const form = h('div', { class: 'reveal' }, reason, button);
  return h('div', {}, line, form);
}
