// Remote commands on a ticket (the board's evidence panel): one button per command the
// device's model supports (the API lists them from the protocol catalogue), the commands
// sent for the ticket with their lifecycle (queued → sent → acknowledged → done | failed |
// expired), and a device's answer (diagnostics) in words and units. While a command is
// unfinished the list is polled; when one finishes, `onFinished` refreshes the panel (the
// answer is on the ticket's evidence too). Every command is audited by the API.

import { api, h } from './api.js';
import { t, tOr, getLang, STRINGS } from './i18n.js';

const STEPS = ['queued', 'sent', 'acknowledged'];
const FINAL = ['done', 'failed', 'expired'];

/** A time with seconds in the page's language. */
function fmtClock(ms) {
  return new Date(ms).toLocaleString(getLang() === 'zh' ? 'zh-CN' : 'en-GB', { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** A fault code's name ("Leak", "漏水"). */
export function faultName(code) {
  return tOr(`fc_${code}`, String(code).replace(/_/g, ' '));
}

/**
 * The engine's outcome sentence in the page's language: the known sentences are matched
 * and rebuilt from the diagnostics; anything else is shown as written.
 */
export function outcomeText(outcome, d) {
  if (!outcome) return null;
  if (outcome.startsWith('inlet valve closed')) return t('out_valve_closed');
  if (outcome.startsWith('inlet valve open')) return t('out_valve_open');
  if (outcome.startsWith('inlet clog confirmed')) {
    return t('out_clog_confirmed', { pct: d?.flow_permille != null ? Math.round(d.flow_permille / 10) : '?' });
  }
  if (outcome.startsWith('inlet clog not confirmed')) return t('out_clog_not_confirmed');
  if (outcome.startsWith('no fault active')) return t('out_no_fault');
  if (outcome.startsWith('faults active on the device')) {
    const codes = d?.active?.length ? d.active : outcome.split(':')[1].split(',').map((s) => s.trim());
    return t('out_faults', { faults: codes.map(faultName).join(getLang() === 'zh' ? '、' : ', ') });
  }
  if (outcome.includes('does not support')) return t('out_unsupported');
  return outcome;
}

/** A device's diagnostics as a definition list (only what it reported). */
export function diagnostics(d) {
  if (!d || typeof d !== 'object') return null;
  const rows = [];
  const row = (key, value, cls = '') => rows.push(h('dt', {}, t(key)), h('dd', { class: cls }, value));
  row('diag_active', d.active?.length ? d.active.map(faultName).join(getLang() === 'zh' ? '、' : ', ') : t('diag_none'), d.active?.length ? 'bad' : 'good');
  if (typeof d.sensors_ok === 'boolean') row('diag_sensors', d.sensors_ok ? t('diag_ok') : t('diag_sensor_fault'), d.sensors_ok ? 'good' : 'bad');
  if (typeof d.storage_failures === 'number') {
    row('diag_storage', d.storage_failures === 0 ? t('diag_ok') : t('diag_storage_failures', { n: d.storage_failures }), d.storage_failures === 0 ? 'good' : 'bad');
  }
  if (typeof d.inlet_valve_open === 'boolean') row('diag_valve', d.inlet_valve_open ? t('diag_valve_open') : t('diag_valve_closed'), d.inlet_valve_open ? '' : 'warn');
  if (typeof d.flow_permille === 'number') row('diag_flow', `${Math.round(d.flow_permille / 10)} %`, d.flow_permille < 800 ? 'warn' : '');
  if (typeof d.pressure_kpa === 'number') row('diag_pressure', `${Math.round(d.pressure_kpa)} kPa`);
  if (typeof d.sessions === 'number') row('diag_sessions', String(d.sessions));
  if (typeof d.water_ml === 'number') row('diag_water', `${(d.water_ml / 1000).toLocaleString(getLang() === 'zh' ? 'zh-CN' : 'en-GB', { maximumFractionDigits: 1 })} L`);
  if (typeof d.boot_id === 'number') row('diag_boot', String(d.boot_id));
  if (Array.isArray(d.log) && d.log.length) {
    row('diag_log', h('ul', { class: 'diag-log' }, d.log.map((e) => h('li', {},
      `${fmtClock(e.ts)} · ${faultName(e.code)} · ${t(e.state === 'raised' ? 'diag_raised' : 'diag_cleared')}`))));
  }
  return h('dl', { class: 'diag' }, rows);
}

/** The lifecycle as steps: queued → sent → acknowledged → done | failed | expired. */
function lifecycle(c) {
  const reached = {
    queued: c.created_ts_ms,
    sent: c.sent_ts_ms,
    acknowledged: c.ack_ts_ms,
  };
  const final = FINAL.includes(c.status) ? c.status : 'done';
  const steps = [...STEPS, final];
  const at = steps.indexOf(c.status);
  return h('ol', { class: 'cmd-steps', 'aria-label': t('cmd_lifecycle') }, steps.map((s, i) => {
    const ts = s === final ? (FINAL.includes(c.status) ? c.done_ts_ms : null) : reached[s];
    const cls = i === at ? `current ${s}` : (ts && i < at ? 'done' : '');
    return h('li', { class: cls, title: ts ? fmtClock(ts) : undefined }, t(`cmd_state_${s}`));
  }));
}

/**
 * The command's reason in the page's language. The policy's reasons (stored in English
 * for the audit log) and the board's own are known texts; an agent's free text stays
 * as written.
 */
function reasonText(c) {
  if (!c.reason) return '';
  if (c.requested_by === 'policy') return tOr(`cmd_reason_policy_${c.kind}`, t('cmd_reason_policy'));
  if (Object.values(STRINGS).some((table) => table.cmd_reason_board === c.reason)) return t('cmd_reason_board');
  return c.reason;
}

/** One command of the list. */
function commandItem(c) {
  const final = FINAL.includes(c.status);
  const who = c.requested_by === 'policy' ? t('cmd_by_policy') : c.requested_by;
  const outcome = outcomeText(c.outcome, c.result);
  return h('li', { class: `cmd cmd-${c.status}`, id: `cmd-${c.id}`, dataset: { status: c.status, kind: c.kind } },
    h('div', { class: 'cmd-head' },
      h('strong', {}, `#${c.id} ${tOr(`cmd_${c.kind}`, c.kind)}`),
      h('span', { class: `cmd-state state-${c.status}` }, t(`cmd_state_${c.status}`))),
    h('p', { class: 'muted small' }, t('cmd_meta', { who, time: fmtClock(c.created_ts_ms) }),
      c.reason ? ` · ${reasonText(c)}` : '',
      !final && c.attempts > 1 ? ` · ${t('cmd_attempts', { n: c.attempts })}` : ''),
    lifecycle(c),
    outcome ? h('p', { class: `cmd-outcome${c.status === 'done' ? '' : ' warn'}` }, outcome) : null,
    c.status === 'expired' ? h('p', { class: 'cmd-outcome warn' }, t('cmd_expired_hint')) : null,
    c.result ? diagnostics(c.result) : null,
  );
}

/**
 * The "Remote commands" section of ticket `d` (the ticket detail from the API, with its
 * `commands`). `isCurrent()` tells whether the panel still shows this ticket;
 * `onFinished()` is called once when a command the section saw unfinished has finished.
 * A refused command (e.g. 422) is said inside the section, the board stays.
 */
export function commandsSection(d, isCurrent, onFinished) {
  const list = h('ul', { class: 'cmd-list', id: 'cmd-list' }, h('li', { class: 'muted' }, t('loading')));
  const section = h('section', { class: 'commands', id: 'commands' },
    h('h3', {}, t('cmd_title')),
    d.commands?.length
      ? h('div', { class: 'cmd-buttons' }, d.commands.map((kind) => h('button', {
        type: 'button',
        class: `act-cmd cmd-${kind}${kind === 'close_inlet_valve' ? ' danger' : ''}`,
        dataset: { command: kind },
        onclick: (e) => send(kind, e.currentTarget),
      }, t(`cmd_${kind}`))))
      : h('p', { class: 'muted small' }, t(d.model ? 'cmd_none' : 'cmd_unregistered')),
    d.commands?.length ? h('p', { class: 'muted small' }, t('cmd_hint')) : null,
    list);
  const problem = h('p', { class: 'error cmd-error', role: 'alert', hidden: true });
  section.insertBefore(problem, list);
  let unfinished = new Set();
  let timer = null;

  async function refresh() {
    timer = null;
    if (!isCurrent()) return;
    let rows;
    try {
      rows = await api(`/tickets/${d.id}/commands?limit=20`);
    } catch (e) {
      list.replaceChildren(h('li', { class: 'error' }, t('error', { message: e.message })));
      return;
    }
    if (!isCurrent()) return;
    const finishedNow = rows.some((c) => unfinished.has(c.id) && FINAL.includes(c.status));
    unfinished = new Set(rows.filter((c) => !FINAL.includes(c.status)).map((c) => c.id));
    list.replaceChildren(...(rows.length ? rows.map(commandItem) : [h('li', { class: 'muted' }, t('cmd_no_commands'))]));
    if (finishedNow) {
      onFinished();
      return;
    }
    if (unfinished.size) timer = setTimeout(refresh, 1000);
  }

  async function send(kind, button) {
    button.disabled = true;
    problem.hidden = true;
    try {
      const c = await api(`/tickets/${d.id}/commands`, { method: 'POST', body: { command: kind, reason: t('cmd_reason_board') } });
      unfinished.add(c.id);
      if (timer) clearTimeout(timer);
      await refresh();
    } catch (e) {
      problem.textContent = t('cmd_refused', { message: e.message });
      problem.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  refresh();
  return section;
}
