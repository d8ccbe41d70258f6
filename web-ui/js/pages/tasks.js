// Tasks: the newest first, filtered by state; one task's timeline; submit
// and cancel for the roles that may.

import { get, post } from '../api.js';
import { button, choice, field, form, h, section, show, table, when } from '../dom.js';
import { leavePage, subscribe } from '../live.js';

const STATES = [['', 'Any state'], ['queued', 'Queued'], ['leased', 'Running'], ['succeeded', 'Succeeded'],
  ['failed', 'Failed'], ['cancelled', 'Cancelled']];

export async function tasks(session, params) {
  if (params.get('id')) return taskDetail(session, params.get('id'));
  const may = (p) => session.permissions.includes(p);
  const state = params.get('state') || '';
  const list = await get(`/api/v1/tasks?limit=50${state ? `&state=${state}` : ''}`);
  const filter = form('Filter tasks', [choice('State', 'state', STATES), h('button', { type: 'submit', class: 'secondary' }, 'Show')],
    (values) => { location.hash = `#/tasks${values.state ? `?state=${values.state}` : ''}`; });
  filter.querySelector('select').value = state;
  const submit = may('task_create') ? section('Submit a task', form('Submit a task', [
    field('Kind', { name: 'kind', required: true, autocomplete: 'off' }, 'What the worker runs, e.g. echo.'),
    field('Input (JSON)', { name: 'input', required: true, autocomplete: 'off', value: '{}' }),
    field('Labels', { name: 'labels', autocomplete: 'off' }, 'Comma-separated; only workers with all of them take it.'),
    h('button', { type: 'submit' }, 'Submit'),
  ], async (values) => {
    let input;
    try { input = JSON.parse(values.input); } catch { throw new Error('The input is not JSON: write it like {"n": 1}.'); }
    const labels = values.labels.split(',').map((l) => l.trim()).filter(Boolean);
    const task = await post('/api/v1/tasks', { kind: values.kind, input, labels });
    location.hash = `#/tasks?id=${task.id}`;
  })) : null;
  show('Tasks', h('h1', {}, 'Tasks'), submit,
    section('Recent tasks', filter, table('Tasks, newest first', ['Task', 'Kind', 'State', 'Attempts', 'Created', 'By'],
      list.tasks.map((t) => [h('a', { href: `#/tasks?id=${t.id}` }, t.id.slice(0, 13)), t.kind,
        h('span', { class: `state ${t.state}` }, t.state), `${t.attempts}/${t.max_attempts}`, when(t.created_at), t.created_by]),
      'No tasks.')));
}

async function taskDetail(session, id) {
  const may = (p) => session.permissions.includes(p);
  const [t, trail] = await Promise.all([
    get(`/api/v1/tasks/${encodeURIComponent(id)}`),
    may('audit_read') ? get(`/api/v1/audit/records?resource=task:${encodeURIComponent(id)}&limit=50`) : null,
  ]);
  const steps = trail
    ? trail.records.slice().reverse().map((r) => h('li', {}, when(r.timestamp), ` ${r.event_type} by ${r.actor.id}`))
    : [h('li', {}, when(t.created_at), ' created'), t.lease ? h('li', {}, `leased to ${t.lease.worker}`) : null,
      t.finished_at ? h('li', {}, when(t.finished_at), ` ${t.state}`) : null];
  const finished = ['succeeded', 'failed', 'cancelled'].includes(t.state);
  // Until it finishes, each overview is a cue to look again.
  if (!finished) {
    subscribe('overview', async () => {
      const now = await get(`/api/v1/tasks/${encodeURIComponent(id)}`);
      if (now.state !== t.state || now.attempts !== t.attempts) {
        leavePage();
        await taskDetail(session, id);
      }
    });
  }
  const cancel = may('task_cancel') && !finished
    ? button('Cancel this task', async () => { await post(`/api/v1/tasks/${t.id}/cancel`); leavePage(); await taskDetail(session, id); },
      { class: 'danger' })
    : null;
  show(`Task ${t.id}`, h('p', {}, h('a', { href: '#/tasks' }, '← All tasks')),
    h('h1', {}, `Task ${t.kind}`),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Id'), h('dd', {}, h('code', {}, t.id)),
      h('dt', {}, 'State'), h('dd', { id: 'task-state' }, h('span', { class: `state ${t.state}` }, t.state)),
      h('dt', {}, 'Attempts'), h('dd', {}, `${t.attempts} of ${t.max_attempts}`),
      h('dt', {}, 'Labels'), h('dd', {}, t.labels.join(', ') || '—'),
      h('dt', {}, 'Created'), h('dd', {}, when(t.created_at), ` by ${t.created_by}`),
      t.error ? [h('dt', {}, 'Error'), h('dd', { class: 'bad' }, `${t.error.code}${t.error.message ? `: ${t.error.message}` : ''}`)] : null,
      t.result !== undefined ? [h('dt', {}, 'Result'), h('dd', {}, h('code', {}, JSON.stringify(t.result)))] : null),
    cancel,
    section('Timeline', h('ol', { class: 'timeline' }, steps)));
}
