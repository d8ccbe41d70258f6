// Backups (made and downloaded here, sealed under the appliance's keys)
// and alerts.

import { call, get } from '../api.js';
import { announce, button, h, saveAs, section, show, table, when } from '../dom.js';

export async function backups(session) {
  const may = (p) => session.permissions.includes(p);
  const last = await get('/api/v1/audit/records?action=backup.&limit=5');
  show('Backups', h('h1', {}, 'Backups'),
    may('backup_create') ? section('Make a backup', h('p', {}, 'A consistent copy of the store, encrypted and authenticated with the appliance\'s keys: restore it with tether restore and the unseal credentials.'),
      button('Make and download a backup', async () => {
        const blob = await call('POST', '/api/v1/sys/backup', {}, 'blob');
        saveAs(`tether-${new Date().toISOString().slice(0, 19).replace(/:/g, '')}.backup`, blob);
        announce('The backup is downloaded.');
        await backups(session);
      })) : null,
    section('Recent backups and restore tests', table('Backups', ['When', 'What', 'By', 'Details'],
      last.records.map((r) => [when(r.timestamp), r.event_type, r.actor.id,
        Object.entries(r.metadata.details || {}).map(([k, v]) => `${k}: ${v}`).join(', ')]), 'No backup has been made.')));
}

export async function alerts() {
  const list = await get('/api/v1/alerts?limit=200');
  show('Alerts', h('h1', {}, 'Alerts'), section('Raised alerts', table('Alerts, newest first', ['Raised', 'Kind', 'About', 'Details'],
    list.map((a) => [when(a.raised_at), a.kind, a.subject, Object.entries(a.details).map(([k, v]) => `${k}: ${v}`).join(', ')]),
    'No alerts.')));
}
