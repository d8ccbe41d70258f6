// The session's limits as the appliance enforces them: a warning before the
// idle sign-out with the choice to stay, the sign-out itself, and the
// password asked again before a sensitive action.

import { NEEDS_FRESH_LOGIN, get, onActivity, post } from './api.js';
import { field, form, h } from './dom.js';
import { secondFactor } from './signin.js';

let watched = null;

/** Follows `session` until it ends; `ended(reason)` runs then. */
export function watchSession(session, ended) {
  stopWatching();
  watched = { session, ended, timers: [] };
  onActivity(schedule);
  schedule(Date.now());
}

export function stopWatching() {
  if (!watched) return;
  watched.timers.forEach(clearTimeout);
  document.getElementById('idle-warning')?.remove();
  onActivity(() => {});
  watched = null;
}

/** When the session ends if nothing more is asked after `lastRequest`: the
 * appliance counts idle time from its own last-seen time, which may be up
 * to `idle_slack_s` older than the page's last request. */
function endOf(session, lastRequest) {
  const idle = lastRequest + (session.idle_timeout_s - session.idle_slack_s) * 1000;
  const absolute = Date.parse(session.expires_at);
  return idle < absolute ? { at: idle, reason: 'idle' } : { at: absolute, reason: 'expired' };
}

function schedule(lastRequest) {
  if (!watched) return;
  watched.timers.forEach(clearTimeout);
  document.getElementById('idle-warning')?.remove();
  const { at, reason } = endOf(watched.session, lastRequest);
  const lead = Math.min(120, watched.session.idle_timeout_s / 4) * 1000;
  watched.timers = [
    setTimeout(() => warn(at, reason), Math.max(0, at - lead - Date.now())),
    setTimeout(() => end(reason), Math.max(0, at - Date.now())),
  ];
}

function warn(at, reason) {
  const time = new Date(at).toLocaleTimeString();
  const stay = reason === 'idle'
    ? h('button', { type: 'button', on: { click: () => get('/api/v1/auth/session') } }, 'Stay signed in')
    : null;
  const dialog = h('div', { id: 'idle-warning', class: 'card warning-bar', role: 'alertdialog', 'aria-labelledby': 'idle-text' },
    h('p', { id: 'idle-text' }, reason === 'idle'
      ? `You will be signed out at ${time}: nothing has been asked of the appliance for a while.`
      : `Your session ends at ${time}, eight hours after you signed in.`),
    stay,
    h('button', { type: 'button', class: 'secondary', on: { click: () => end('signed_out') } }, 'Sign out now'));
  document.body.append(dialog);
  (stay || dialog.querySelector('button')).focus();
}

async function end(reason) {
  if (!watched) return;
  const { ended } = watched;
  stopWatching();
  // The appliance may still hold the session for a moment: end it there too.
  try { await post('/api/v1/auth/logout'); } catch { /* already over */ }
  ended(reason);
}

/** The session as it stands now (after a re-authentication, say). */
export function updateSession(session) {
  if (watched) watched.session = session;
}

/** Runs `action`, first asking for the password again if `permission`
 * needs a recent login and the last one is not recent enough (and once
 * more if the appliance says so anyway). */
export async function sensitive(permission, action) {
  const session = watched?.session;
  const needs = session && session.sensitive.includes(permission);
  if (needs && Date.parse(session.reauth_until) - 30_000 < Date.now()) await reauthenticate();
  try {
    return await action();
  } catch (e) {
    if (e.code !== NEEDS_FRESH_LOGIN) throw e;
    await reauthenticate();
    return action();
  }
}

/** The re-authentication dialog; resolves once the password (and code) is
 * taken, rejects with `cancelled` if the person closes it. */
function reauthenticate() {
  const session = watched.session;
  return new Promise((resolve, reject) => {
    const dialog = h('dialog', { 'aria-labelledby': 'reauth-title' });
    const close = () => { dialog.close(); dialog.remove(); };
    const fields = [
      field('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
      session.user.second_factor
        ? field('Authenticator code', { name: 'code', autocomplete: 'one-time-code', inputmode: 'numeric', required: true })
        : null,
      h('button', { type: 'submit' }, 'Confirm'),
    ].filter(Boolean);
    const confirm = form('Confirm it is you', fields, async (values) => {
      await post('/api/v1/auth/reauth', { password: values.password, ...secondFactor(values.code) });
      updateSession(await get('/api/v1/auth/session'));
      close();
      resolve();
    });
    const cancel = h('button', { type: 'button', class: 'secondary', on: { click: () => dialog.close() } }, 'Cancel');
    dialog.addEventListener('close', () => {
      if (dialog.isConnected) {
        dialog.remove();
        reject(Object.assign(new Error('cancelled'), { cancelled: true }));
      }
    });
    dialog.append(h('h2', { id: 'reauth-title' }, 'Confirm it is you'),
      h('p', {}, 'This action needs your password again.'), confirm, cancel);
    document.body.append(dialog);
    dialog.showModal();
  });
}
