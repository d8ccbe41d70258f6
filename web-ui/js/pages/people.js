// People: accounts and their roles (a role change waits for a security
// officer's approval) and live sessions; API tokens (shown once) on their
// own page.

import { del, get, post, put } from '../api.js';
import { announce, button, choice, field, form, h, section, show, shownOnce, table, when } from '../dom.js';
import { sensitive } from '../guard.js';

const ROLES = [['viewer', 'Viewer'], ['developer', 'Developer'], ['auditor', 'Auditor'], ['admin', 'Admin'],
  ['security_officer', 'Security officer']];
const roleName = (r) => r.replace('_', ' ');

export async function people(session) {
  const may = (p) => session.permissions.includes(p);
  const [users, sessions] = await Promise.all([get('/api/v1/users'), get('/api/v1/sessions')]);
  const again = () => people(session);
  const shown = h('div', { 'aria-live': 'polite' });
  const sessionsOf = (name) => sessions.filter((s) => s.user === name).length;
  const accountRows = (users || []).map((u) => [
    u.name,
    [roleName(u.role), u.pending_role ? h('span', { class: 'warn' }, ` → ${roleName(u.pending_role)} (awaits approval)`) : null],
    u.disabled ? h('span', { class: 'bad' }, 'disabled') : u.second_factor ? 'password + TOTP' : 'password',
    String(sessionsOf(u.name)),
    h('div', { class: 'actions' },
      may('role_change') && !u.disabled ? button('Change role', () => changeRole(u).then(again), { class: 'secondary', 'aria-label': `Change role of ${u.name}` }) : null,
      may('role_approve') && u.pending_role ? button('Approve', () => sensitive('role_approve',
        () => post(`/api/v1/users/${encodeURIComponent(u.name)}/role/approve`)).then(again), { 'aria-label': `Approve ${u.name} as ${roleName(u.pending_role)}` }) : null,
      may('user_manage') && sessionsOf(u.name) ? button('End sessions', () => del(`/api/v1/users/${encodeURIComponent(u.name)}/sessions`).then(again),
        { class: 'secondary', 'aria-label': `End sessions of ${u.name}` }) : null,
      may('user_manage') && !u.disabled && u.name !== session.user.name ? button('Disable', async () => {
        if (!confirm(`Disable ${u.name}? Their sessions and tokens stop working.`)) return;
        await post(`/api/v1/users/${encodeURIComponent(u.name)}/disable`);
        await again();
      }, { class: 'danger', 'aria-label': `Disable ${u.name}` }) : null),
  ]);
  const addUser = may('user_manage') ? form('Add a person', [
    field('Name', { name: 'name', required: true, autocomplete: 'off', autocapitalize: 'none' }),
    choice('Role', 'role', ROLES, 'Admins and security officers must enrol TOTP at their first sign-in.'),
    h('button', { type: 'submit' }, 'Add'),
  ], async (values) => {
    const made = await post('/api/v1/users', { name: values.name, role: values.role });
    shown.replaceChildren(shownOnce(`First password for ${made.user.name}`, made.initial_password));
    announce(`${made.user.name} is added; they choose their own password at first sign-in.`);
  }) : null;
  show('People', h('h1', {}, 'People'),
    section('Accounts', table('Accounts', ['Name', 'Role', 'Sign-in', 'Sessions', 'Actions'], accountRows), addUser, shown),
    section('Live sessions', table('Live sessions', ['Session', 'Person', 'Signed in', 'Last request'],
      sessions.map((s) => [h('code', {}, s.id), s.user, when(s.created_at), when(s.last_seen)]))));
}

/** API tokens: everyone's for an admin, one's own for the rest. */
export async function tokens(session) {
  const list = await get('/api/v1/tokens');
  const again = () => tokens(session);
  const tokenForm = form('Create an API token', [
    choice('Role', 'role', ROLES.filter(([r]) => r === session.user.role || r === 'viewer'), 'A token acts with your rights or fewer.'),
    field('Valid for', { name: 'ttl', autocomplete: 'off', value: '30d' }, 'Like 30d or 12h.'),
    h('button', { type: 'submit' }, 'Create token'),
  ], async (values) => {
    const made = await sensitive('token_manage', () => post('/api/v1/tokens', { role: values.role, ttl: values.ttl || undefined }));
    await again();
    document.getElementById('token-made').replaceChildren(shownOnce(`API token ${made.id}`, made.token));
  });
  const tokenRows = list.map((t) => [h('code', {}, t.id), t.owner, roleName(t.role), when(t.expires_at), when(t.last_used),
    h('div', { class: 'actions' },
      button('Rotate', async () => {
        const made = await sensitive('token_manage', () => post(`/api/v1/tokens/${t.id}/rotate`));
        await again();
        document.getElementById('token-made').replaceChildren(shownOnce(`API token ${made.id}`, made.token));
      }, { class: 'secondary', 'aria-label': `Rotate token ${t.id}` }),
      button('Revoke', async () => { await del(`/api/v1/tokens/${t.id}`); announce('The token is revoked.'); await again(); },
        { class: 'danger', 'aria-label': `Revoke token ${t.id}` }))]);
  show('API tokens', h('h1', {}, 'API tokens'),
    h('div', { id: 'token-made', 'aria-live': 'polite' }),
    section('Tokens', table('API tokens', ['Token', 'For', 'Role', 'Expires', 'Last used', 'Actions'], tokenRows, 'No API tokens.')),
    section('Create a token', tokenForm));
}

async function changeRole(user) {
  const wanted = prompt(`New role for ${user.name} (${ROLES.map(([r]) => r).join(', ')}):`, user.role);
  if (wanted === null) return;
  const answer = await sensitive('role_change', () => put(`/api/v1/users/${encodeURIComponent(user.name)}/role`, { role: wanted.trim() }));
  announce(answer.result === 'done' ? `${user.name} is now ${roleName(answer.role)}.` : `The change waits for a security officer's approval.`);
}
