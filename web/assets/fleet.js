// Fleet health (`/fleet`, agents and admins): devices online (the gateway's
// `/fleet/online`), findings and tickets per day and the worst devices (`/api/fleet`),
// the service KPIs (`/api/kpi`), drawn as inline SVG, and the platform's instances (the
// gateway's `/fleet/instances`: in clustered mode, which instance holds how many partitions).

import { api, boot, clear, gateway, h, notice } from './api.js';
import { t } from './i18n.js';
import { bars, lines, hbars } from './charts.js';

boot(async (me) => {
  if (!['admin', 'agent'].includes(me.role)) {
    notice('denied', t('not_allowed'));
    return;
  }
  const [fleet, kpi, online, platform] = await Promise.all([api('/fleet?days=14'), api('/kpi'), gateway('/fleet/online?within_s=900'), gateway('/fleet/instances')]);
  const app = clear();
  const day = (i) => {
    const d = new Date(fleet.from_ms + i * fleet.bucket_ms);
    return `${d.getUTCMonth() + 1}/${d.getUTCDate()}`;
  };
  const labels = fleet.findings.map((_, i) => day(i));
  const hours = (ms) => (ms == null ? t('none') : `${(ms / 3600000).toFixed(1)} h`);
  const pct = (r) => (r == null ? t('none') : `${Math.round(r * 100)}%`);
  const active = Object.values(fleet.active_by_priority).reduce((a, b) => a + b, 0);
  const stat = (id, label, value, cls = '') => h('div', { class: `stat ${cls}`, id }, h('span', { class: 'value' }, value), h('span', { class: 'label' }, label));
  app.append(
    h('h1', {}, t('fleet_title')),
    h('section', { class: 'stats' },
      stat('online', t('devices_online'), `${online.online} / ${Math.max(online.devices_seen, fleet.devices)}`),
      stat('registered', t('devices_registered'), fleet.devices),
      stat('homes', t('homes'), fleet.homes),
      stat('backlog', t('open_backlog'), active, active > 0 ? 'warn' : ''),
      stat('unclaimed', t('devices_unclaimed'), `${fleet.unclaimed_devices}`, fleet.unclaimed_devices > 0 ? 'warn' : ''),
    ),
    fleet.unclaimed_devices > 0
      ? h('p', { class: 'notice-line', id: 'unclaimed-line' }, t('unclaimed_fleet', { n: fleet.unclaimed_devices, findings: fleet.unclaimed_findings, tickets: fleet.unclaimed_tickets }), ' ', h('a', { href: '/board' }, t('nav_board')))
      : '', // (append() would print a null as "null")
    h('div', { class: 'grid' },
      h('section', { class: 'card' }, h('h2', {}, t('findings_per_day')), bars(fleet.findings, labels, t('findings_per_day'))),
      h('section', { class: 'card' }, h('h2', {}, t('tickets_per_day')),
        lines([
          { name: t('legend_opened'), values: fleet.tickets_opened, cls: 'opened' },
          { name: t('legend_resolved'), values: fleet.tickets_resolved, cls: 'resolved' },
        ], labels, t('tickets_per_day')),
        h('p', { class: 'legend' }, h('span', { class: 'key opened' }, t('legend_opened')), ' ', h('span', { class: 'key resolved' }, t('legend_resolved')))),
      h('section', { class: 'card', id: 'kpi' }, h('h2', {}, t('kpi_title')),
        h('dl', { class: 'kpis' },
          h('dt', {}, t('kpi_tickets')), h('dd', {}, kpi.tickets),
          h('dt', {}, t('kpi_ack')), h('dd', {}, hours(kpi.mean_ack_ms)),
          h('dt', {}, t('kpi_resolve')), h('dd', {}, hours(kpi.mean_resolve_ms)),
          h('dt', {}, t('kpi_ftf')), h('dd', {}, pct(kpi.first_time_fix_rate)),
          h('dt', {}, t('kpi_breach')), h('dd', { class: kpi.deadline_breach_rate > 0 ? 'late' : '' }, pct(kpi.deadline_breach_rate)),
        )),
      h('section', { class: 'card' }, h('h2', {}, t('active_by_priority')),
        hbars(['critical', 'high', 'normal', 'low'].map((p) => ({ name: t(`prio_${p}`), value: fleet.active_by_priority[p] ?? 0, cls: `prio-${p}` })), t('active_by_priority'))),
      h('section', { class: 'card', id: 'instances' }, h('h2', {}, t('platform_title')),
        platform.clustered
          ? h('div', {},
            h('p', { class: 'muted' }, t('platform_clustered', { n: platform.instances.length })),
            h('table', {},
              h('thead', {}, h('tr', {}, h('th', {}, t('platform_instance')), h('th', { class: 'num' }, t('platform_partitions')))),
              h('tbody', {}, platform.instances.map((id) => h('tr', { class: id === platform.instance ? 'this-instance' : '' },
                h('td', {}, id === platform.instance ? `${id} (${t('platform_this')})` : id),
                h('td', { class: 'num' }, platform.owners[id] ?? 0))))),
            platform.unsubscribed.length
              ? h('p', { class: 'notice-line', id: 'unsubscribed-line' }, t('platform_unsubscribed', { list: platform.unsubscribed.join(', ') }))
              : '')
          : h('p', { class: 'muted' }, t('platform_single'))),
      h('section', { class: 'card wide', id: 'worst' }, h('h2', {}, t('worst_devices')),
        fleet.worst_devices.length
          ? h('div', { class: 'table-scroll' }, h('table', {},
            h('thead', {}, h('tr', {}, h('th', {}, t('device')), h('th', {}, t('home')), h('th', {}, t('filter_region')), h('th', { class: 'num' }, t('findings')), h('th', { class: 'num' }, t('tickets')), h('th', { class: 'num' }, t('active')))),
            h('tbody', {}, fleet.worst_devices.map((d) => h('tr', {},
              h('td', {}, d.device_id), h('td', {}, d.home_id), h('td', {}, d.region),
              h('td', { class: 'num' }, d.findings), h('td', { class: 'num' }, d.tickets), h('td', { class: 'num' }, d.active))))))
          : h('p', { class: 'muted' }, t('none'))),
    ),
  );
});
