// Workers: who is enrolled, when each was last heard from, their
// certificates, labels; enrollment tokens with the join string a worker
// host is started with; revocation.

import { get, post, put } from '../api.js';
import { announce, button, field, form, h, section, show, shownOnce, table, when } from '../dom.js';
import { leavePage, subscribe } from '../live.js';

export async function workers(session) {
  const may = (p) => session.permissions.includes(p);
  const list = await get('/api/v1/workers');
  const joined = h('div', { 'aria-live': 'polite' });
  const enroll = may('worker_enroll') ? section('Enroll a worker', form('Enroll a worker', [
    field('Labels', { name: 'labels', autocomplete: 'off' }, 'Comma-separated, e.g. gpu,linux. Left empty, the worker says its own.'),
    field('Valid for', { name: 'ttl', autocomplete: 'off', value: '15m' }, 'How long the token can be used, like 15m or 2h.'),
    h('button', { type: 'submit' }, 'Make a join string'),
  ], async (values) => {
    const labels = values.labels.split(',').map((l) => l.trim()).filter(Boolean);
    const made = await post('/api/v1/workers/enrollment-tokens', { ttl: values.ttl || undefined, labels: labels.length ? labels : undefined });
    joined.replaceChildren(shownOnce('Join string', made.join),
      h('p', {}, 'On the worker host: ', h('code', {}, 'tether worker --join "<join string>"'), '. It works once, until ', when(made.expires_at), '.'));
  }), joined) : null;
  const rows = list.map((w) => [
    h('code', {}, w.id.slice(0, 13)),
    w.revoked ? h('span', { class: 'bad' }, 'revoked') : h('span', { class: 'good' }, 'enrolled'),
    w.labels.join(', ') || '—',
    when(w.enrolled_at),
    w.last_seen ? when(w.last_seen) : h('span', { class: 'hint' }, 'not since the appliance started'),
    [h('code', { title: 'serial' }, w.cert_serial.slice(0, 16)), ' until ', when(w.cert_not_after),
      w.renewed_at ? h('span', { class: 'hint' }, ' (renewed ', when(w.renewed_at), ')') : null],
    h('div', { class: 'actions' },
      may('worker_enroll') && !w.revoked ? button('Change labels', () => editLabels(session, w), { class: 'secondary', 'aria-label': `Change labels of ${w.id}` }) : null,
      may('worker_revoke') && !w.revoked ? button('Revoke', async () => {
        if (!confirm(`Revoke worker ${w.id}? It is cut off at once and cannot come back without enrolling again.`)) return;
        await post(`/api/v1/workers/${w.id}/revoke`);
        announce('The worker is revoked.');
        leavePage();
        await workers(session);
      }, { class: 'danger', 'aria-label': `Revoke ${w.id}` }) : null),
  ]);
  // A worker enrolling or being revoked elsewhere shows here by itself.
  const active = list.filter((w) => !w.revoked).length;
  subscribe('overview', (o) => {
    if (o.workers.enrolled !== active) {
      leavePage();
      workers(session);
    }
  });
  show('Workers', h('h1', {}, 'Workers'), enroll,
    section('Enrolled workers', table('Workers', ['Worker', 'State', 'Labels', 'Enrolled', 'Last seen', 'Certificate', 'Actions'], rows,
      'No worker has enrolled yet.')));
}

async function editLabels(session, worker) {
  const labels = prompt(`Labels for ${worker.id}, comma-separated:`, worker.labels.join(','));
  if (labels === null) return;
  await put(`/api/v1/workers/${worker.id}/labels`, { labels: labels.split(',').map((l) => l.trim()).filter(Boolean) });
  announce('Labels changed.');
  leavePage();
  await workers(session);
}
