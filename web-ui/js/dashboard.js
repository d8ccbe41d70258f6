// The dashboard: the appliance at a glance, from one API call.

import { get } from './api.js';
import { h, show } from './dom.js';

function stat(label, value, tone) {
  return h('div', { class: 'card' }, h('p', { class: `stat ${tone || ''}` }, String(value)), h('p', { class: 'stat-label' }, label));
}

export async function dashboard(session) {
  const may = (p) => session.permissions.includes(p);
  const cards = [];
  let warnings = [];
  if (may('worker_read')) {
    const s = await get('/api/v1/system/status');
    cards.push(
      stat('Vault', s.vault.sealed ? 'sealed' : 'unsealed', s.vault.sealed ? 'bad' : 'good'),
      stat('Workers enrolled', s.workers),
      stat('Workers waiting for work', s.parked_polls),
      stat('Certificates needing attention', s.certificate_alerts, s.certificate_alerts ? 'warn' : 'good'),
      stat('Crypto mode', s.crypto.mode),
    );
    warnings = s.warnings;
  } else {
    const v = await get('/api/v1/sys/vault');
    cards.push(stat('Vault', v.sealed ? 'sealed' : 'unsealed', v.sealed ? 'bad' : 'good'));
  }
  show('Dashboard',
    h('h1', {}, 'Dashboard'),
    h('section', { 'aria-label': 'At a glance', class: 'grid' }, cards),
    warnings.length
      ? h('section', { 'aria-labelledby': 'warnings' }, h('h2', { id: 'warnings' }, 'Warnings'),
        h('ul', {}, warnings.map((w) => h('li', { class: 'warn' }, w))))
      : null);
}
