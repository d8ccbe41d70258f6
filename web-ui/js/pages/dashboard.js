// The dashboard: the appliance at a glance from one call (with the security
// check's last score), then live from the event stream (queue depth and
// throughput plotted as they come).

import { get } from '../api.js';
import { LineChart } from '../chart.js';
import { h, section, show, table, when } from '../dom.js';
import { subscribe } from '../live.js';

function stat(label, value, tone) {
  const figure = h('p', { class: `stat ${tone || ''}` }, String(value));
  return { card: h('div', { class: 'card' }, figure, h('p', { class: 'stat-label' }, label)), figure };
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400), hrs = Math.floor((seconds % 86400) / 3600), m = Math.floor((seconds % 3600) / 60);
  return d ? `${d} d ${hrs} h` : hrs ? `${hrs} h ${m} min` : `${m} min`;
}

/** The security check's last score, with where to run it again. */
function security(run, mayRun) {
  if (!run) {
    return h('div', { class: 'card' }, h('p', { class: 'stat' }, '—'),
      h('p', { class: 'stat-label' }, 'Security score: ', mayRun ? h('a', { href: '#/security' }, 'run the check') : 'never checked'));
  }
  const tone = run.grade === 'A' ? 'good' : run.grade === 'B' ? 'warn' : 'bad';
  return h('div', { class: 'card' }, h('p', { class: `stat ${tone}` }, `${run.score} · ${run.grade}`),
    h('p', { class: 'stat-label' }, mayRun ? h('a', { href: '#/security' }, 'Security score') : 'Security score',
      `, ${run.failing} failing, checked `, when(run.checked_at)));
}

export async function dashboard(session) {
  const may = (p) => session.permissions.includes(p);
  if (!may('worker_read')) {
    const v = await get('/api/v1/sys/vault');
    show('Dashboard', h('h1', {}, 'Dashboard'),
      h('section', { 'aria-label': 'At a glance', class: 'grid' }, stat('Vault', v.sealed ? 'sealed' : 'unsealed', v.sealed ? 'bad' : 'good').card));
    return;
  }
  const [s, alerts] = await Promise.all([
    get('/api/v1/system/status'),
    may('alert_read') ? get('/api/v1/alerts?limit=5') : Promise.resolve(null),
  ]);
  const ready = stat('Tasks waiting', '…');
  const running = stat('Tasks running', '…');
  const polling = stat('Workers waiting for work', s.parked_polls);
  const enrolled = stat('Workers enrolled', s.workers);
  const cards = [
    stat('Vault', s.vault.sealed ? 'sealed' : 'unsealed', s.vault.sealed ? 'bad' : 'good').card,
    ready.card, running.card, enrolled.card, polling.card,
    stat('Certificates needing attention', s.certificate_alerts, s.certificate_alerts ? 'warn' : 'good').card,
    stat('Crypto mode', s.crypto.mode).card,
    security(s.security, may('audit_read')),
  ];
  const hostFacts = [
    ['Up for', s.host.uptime_s !== undefined && duration(s.host.uptime_s)],
    ['Load (1 min)', s.host.load_1m !== undefined && `${s.host.load_1m.toFixed(2)} on ${s.host.cpus} CPUs`],
    ['Memory in use', s.host.memory_total && `${bytes(s.host.memory_used)} of ${bytes(s.host.memory_total)}`],
    ['Disk free for data', s.host.disk_total && `${bytes(s.host.disk_free)} of ${bytes(s.host.disk_total)}`],
  ].filter(([, v]) => v);
  const host = section('Host', h('dl', { class: 'facts' }, hostFacts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
  const depth = new LineChart('Tasks waiting', 'tasks');
  const throughput = new LineChart('Tasks finished per 2 s', 'tasks');
  show('Dashboard',
    h('h1', {}, 'Dashboard'),
    h('section', { 'aria-label': 'At a glance', class: 'grid' }, cards),
    section('Work', h('div', { class: 'grid charts' }, depth.figure, throughput.figure)),
    host,
    alerts ? section('Recent alerts', table('Recent alerts', ['Raised', 'Kind', 'About'],
      alerts.map((a) => [when(a.raised_at), a.kind, a.subject]), 'No alerts.')) : null,
    s.warnings.length ? section('Warnings', h('ul', {}, s.warnings.map((w) => h('li', { class: 'warn' }, w)))) : null,
    h('p', { class: 'hint' }, 'Live: updated every two seconds. Status read ', when(new Date().toISOString()), '.'));
  subscribe('overview', (o) => {
    ready.figure.textContent = String(o.queue.ready + o.queue.delayed);
    running.figure.textContent = String(o.queue.leased);
    enrolled.figure.textContent = String(o.workers.enrolled);
    polling.figure.textContent = String(o.workers.polling);
    depth.push(o.queue.ready + o.queue.delayed);
    throughput.push(o.finished);
  });
}
