// The audit log: search and filter, the live tail, the chain verified with
// its result, the JSONL export and the newest signed checkpoint, and the
// SIEM sinks with their cursors.

import { call, get } from '../api.js';
import { button, choice, field, form, h, saveAs, section, show, table, when } from '../dom.js';
import { subscribe } from '../live.js';

const FILTERS = ['actor', 'action', 'resource', 'outcome', 'since', 'until'];

function row(r) {
  return [String(r.seq), when(r.timestamp), `${r.actor.type}:${r.actor.id}`, r.event_type,
    `${r.resource.type}:${r.resource.id}`, h('span', { class: r.result === 'success' ? 'good' : 'bad' }, r.result)];
}

export async function audit(session, params) {
  const query = new URLSearchParams();
  for (const f of FILTERS) if (params.get(f)) query.set(f, params.get(f));
  const page = new URLSearchParams(query);
  if (params.get('before')) page.set('before', params.get('before'));
  const [found, sinks] = await Promise.all([get(`/api/v1/audit/records?limit=100&${page}`), get('/api/v1/audit/sinks')]);
  const filter = form('Search the log', [
    h('div', { class: 'grid' },
      field('Actor', { name: 'actor', autocomplete: 'off' }),
      field('Action', { name: 'action', autocomplete: 'off' }, 'Part of the event, like auth.login or task.'),
      field('Resource', { name: 'resource', autocomplete: 'off' }, 'type:id, or part of it.'),
      choice('Outcome', 'outcome', [['', 'Any'], ['success', 'Success'], ['failure', 'Failure'], ['denied', 'Denied']]),
      field('From', { name: 'since', autocomplete: 'off', placeholder: '2026-12-01T00:00:00Z' }),
      field('Until', { name: 'until', autocomplete: 'off', placeholder: '2026-12-31T23:59:59Z' })),
    h('button', { type: 'submit' }, 'Search'),
  ], (values) => {
    const next = new URLSearchParams(Object.entries(values).filter(([, v]) => v));
    location.hash = `#/audit?${next}`;
  });
  for (const f of FILTERS) if (params.get(f)) filter.querySelector(`[name=${f}]`).value = params.get(f);
  const columns = ['Seq', 'Time', 'Actor', 'Event', 'Resource', 'Outcome'];
  const verdict = h('p', { id: 'verdict', 'aria-live': 'polite' });
  const tail = h('tbody');
  show('Audit', h('h1', {}, 'Audit log'),
    section('The chain', h('div', { class: 'actions' },
      button('Verify the chain', async () => {
        verdict.textContent = 'Verifying…';
        const v = await get('/api/v1/audit/verify');
        verdict.className = v.ok ? 'good' : 'bad';
        verdict.textContent = v.ok
          ? `Intact: ${v.records} records, head seq ${v.head_seq} (${(v.head_hash || '').slice(0, 16)}…).`
          : `Broken: ${v.problem}`;
      }),
      h('a', { class: 'button secondary', href: '/api/v1/audit/export', download: 'tether-audit.jsonl' }, 'Export (JSONL, signed seal)'),
      h('a', { class: 'button secondary', href: '/api/v1/audit/public-key', download: 'tether-audit-key.pem' }, 'Audit public key'),
      button('Signed checkpoint', async () => {
        const blob = await call('GET', '/api/v1/audit/checkpoint', undefined, 'blob');
        const checkpoint = JSON.parse(await blob.text());
        saveAs(`tether-audit-checkpoint-${checkpoint.covers_seq}.json`, blob);
        verdict.className = '';
        verdict.textContent = `Checkpoint downloaded: it vouches for records up to seq ${checkpoint.covers_seq}. `
          + 'Keep it apart; tether audit verify --checkpoint checks a later export against it.';
      }, { class: 'secondary' })),
    verdict),
    section('Search', filter, table('Matching records, newest first', columns, found.records.map(row), 'No record matches.'),
      found.next_before !== undefined
        ? h('p', {}, h('a', { href: `#/audit?${new URLSearchParams([...query, ['before', found.next_before]])}` }, 'Older records'))
        : null),
    section('Live tail', h('p', { class: 'hint' }, 'Records as they are written.'),
      h('div', { class: 'scroll' }, h('table', {}, h('caption', {}, 'New records'),
        h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))), tail))),
    section('SIEM sinks', table('Sinks', ['Name', 'Kind', 'Delivered up to', 'State'],
      sinks.map((s) => [s.name, Object.keys(s.kind)[0].replace('_', ' '), String(s.status.delivered_through ?? '—'),
        s.status.connected ? h('span', { class: 'good' }, 'connected')
          : h('span', { class: 'bad' }, `down${s.status.last_error ? `: ${s.status.last_error}` : ''}`)]),
      'No sinks: records stay on the appliance only.')));
  subscribe('audit', (records) => {
    for (const r of records) tail.prepend(h('tr', {}, row(r).map((c) => h('td', {}, c))));
    while (tail.children.length > 200) tail.lastChild.remove();
  });
}
