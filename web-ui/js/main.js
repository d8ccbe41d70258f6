// The console's start: what the appliance and the browser's session are,
// then the page for them. Pages are `#/name?params` in the address; each is
// listed with the permission it needs, so a role sees only what it may use.

import { ApiError, get, post, setCsrf } from './api.js';
import { h, show, form, field, announce } from './dom.js';
import { stopWatching, watchSession } from './guard.js';
import { closeLive, leavePage } from './live.js';
import { finishSetup, signIn } from './signin.js';
import { setupWizard } from './setup.js';
import { dashboard } from './pages/dashboard.js';
import { tasks } from './pages/tasks.js';
import { workers } from './pages/workers.js';
import { people, tokens } from './pages/people.js';
import { llm, models } from './pages/llm.js';
import { pki, vault } from './pages/vault.js';
import { audit } from './pages/audit.js';
import { security } from './pages/security.js';
import { alerts, backups } from './pages/backups.js';
import { firmware } from './pages/firmware.js';
import { network } from './pages/network.js';

const PAGES = [
  { path: 'dashboard', title: 'Dashboard', needs: null, render: dashboard },
  { path: 'tasks', title: 'Tasks', needs: 'task_read', render: tasks },
  { path: 'workers', title: 'Workers', needs: 'worker_read', render: workers },
  { path: 'people', title: 'People', needs: 'user_read', render: people },
  { path: 'tokens', title: 'API tokens', needs: 'token_manage', render: tokens },
  { path: 'llm', title: 'LLM', needs: ['llm_key_manage', 'llm_prompt_manage', 'llm_prompt_log_read'], render: llm },
  { path: 'models', title: 'Models', needs: ['llm_upstream_manage', 'llm_model_import', 'llm_model_trust'], render: models },
  { path: 'vault', title: 'Vault', needs: 'secret_read', render: vault },
  { path: 'pki', title: 'PKI', needs: 'audit_read', render: pki },
  { path: 'audit', title: 'Audit', needs: 'audit_read', render: audit },
  { path: 'security', title: 'Security', needs: 'audit_read', render: security },
  { path: 'backups', title: 'Backups', needs: 'backup_create', render: backups },
  { path: 'alerts', title: 'Alerts', needs: 'alert_read', render: alerts },
  { path: 'firmware', title: 'Firmware', needs: 'firmware_update', render: firmware },
  { path: 'network', title: 'Network and time', needs: 'network_manage', render: network },
];

let current = null;

/** Where the browser is, and what it may see: the page for that. */
async function start(notice, loginPassword) {
  const vaultStatus = await get('/api/v1/sys/vault');
  if (vaultStatus.sealed) return sealed(vaultStatus);
  let session;
  try {
    session = await get('/api/v1/auth/session');
  } catch (e) {
    // Signed out: the one refusal in the normal flow.
    if (e instanceof ApiError && e.status === 401) return signIn((password) => start(undefined, password), notice);
    throw e;
  }
  return enter(session, loginPassword);
}

async function enter(session, loginPassword) {
  setCsrf(session.csrf_token);
  if (!session.set_up) return finishSetup(session, () => start(), loginPassword);
  current = session;
  watchSession(session, ended);
  shell(session);
  return route();
}

/** The pages the session may open: each needs one of its permissions. */
function visible(session) {
  return PAGES.filter((p) => !p.needs || [p.needs].flat().some((n) => session.permissions.includes(n)));
}

function shell(session) {
  document.getElementById('nav').replaceChildren(...visible(session).map((p) => h('a', { href: `#/${p.path}` }, p.title)));
  document.getElementById('who').replaceChildren(
    h('span', {}, `${session.user.name} (${session.user.role.replace('_', ' ')})`),
    h('button', { type: 'button', class: 'secondary', on: { click: signOut } }, 'Sign out'));
}

/** The page the address names, if the role may see it; else the dashboard. */
async function route() {
  const [wanted, query] = location.hash.replace(/^#\//, '').split('?');
  const pages = visible(current);
  const page = pages.find((p) => p.path === wanted) || pages[0];
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.getAttribute('href') === `#/${page.path}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  leavePage();
  const main = document.getElementById('main');
  delete main.dataset.page;
  await page.render(current, new URLSearchParams(query || ''), sealedNow);
  // Which page is drawn, for tools that drive the console.
  main.dataset.page = page.path;
}

function leaveSession() {
  stopWatching();
  closeLive();
  setCsrf(null);
  current = null;
  document.getElementById('nav').replaceChildren();
  document.getElementById('who').replaceChildren();
}

async function signOut() {
  stopWatching();
  const answer = await post('/api/v1/auth/logout');
  leaveSession();
  if (answer && answer.idp_logout_url) {
    location.assign(answer.idp_logout_url);
    return;
  }
  announce('You are signed out.');
  await start();
}

/** The session ran out (`idle`, `expired`) or its owner ended it. */
function ended(reason) {
  leaveSession();
  const notice = reason === 'idle'
    ? 'You were signed out because nothing was asked of the appliance for a while. Sign in again to go on.'
    : reason === 'expired' ? 'Your session reached its eight-hour limit. Sign in again to go on.' : 'You are signed out.';
  start(notice);
}

/** After the seal button: the sealed page. */
function sealedNow() {
  leaveSession();
  start();
}

/** The live view of the vault while sealed (one at a time). */
let vaultEvents = null;

/** The sealed appliance: officers give their shares (or the passphrase,
 * or the key file) here, each in their own browser; every browser follows
 * the ceremony live. */
function sealed(status) {
  const byShares = status.method === 'shares';
  const progress = h('p', { id: 'progress', 'aria-live': 'polite' });
  const bar = h('progress', { 'aria-labelledby': 'progress', max: 1, value: 0 });
  const update = (s) => {
    if (!s.shares) return;
    const { received, threshold, expires_at: expires } = s.shares;
    bar.max = threshold;
    bar.value = received;
    const until = expires ? ` If it is not finished by ${new Date(expires).toLocaleTimeString()}, it starts over.` : '';
    progress.textContent = `${received} of ${threshold} shares given.${until}`;
  };
  const secret = {
    shares: () => field('Your share', { name: 'secret', type: 'password', autocomplete: 'off', required: true },
      'Officers give their shares one at a time; none is kept on disk.'),
    passphrase: () => field('Passphrase', { name: 'secret', type: 'password', autocomplete: 'off', required: true }),
    key_file: () => field('Key file', { name: 'secret', type: 'file', required: true }, 'The file saved at setup, from its media.'),
  }[status.method]();
  const unsealForm = form('Unseal', [secret, h('button', { type: 'submit' }, byShares ? 'Give my share' : 'Unseal')],
    async (values, error) => {
      if (status.method === 'key_file' && !values.secret.size) {
        error.textContent = 'Choose the key file.';
        return;
      }
      const credential = {
        shares: () => ({ share: values.secret }),
        passphrase: () => ({ passphrase: values.secret }),
        key_file: async () => ({ key_file: await values.secret.text() }),
      }[status.method];
      const answer = await post('/api/v1/sys/unseal', await credential());
      unsealForm.reset();
      if (answer.sealed) {
        update(answer);
        announce('Your share is taken.');
      }
    });
  const reset = byShares
    ? h('button', { type: 'button', class: 'secondary', on: { click: () => post('/api/v1/sys/unseal', { reset: true }) } },
      'Start the ceremony over')
    : null;
  show('Sealed', h('div', { class: 'card narrow' },
    h('h1', {}, 'The appliance is sealed'),
    h('p', {}, 'It holds no key: nothing runs until it is unsealed.'),
    byShares ? progress : null, byShares ? bar : null,
    unsealForm, reset));
  update(status);
  if (vaultEvents) vaultEvents.close();
  vaultEvents = new EventSource('/api/v1/sys/vault/events');
  vaultEvents.addEventListener('vault', (event) => {
    const s = JSON.parse(event.data);
    if (s.sealed) {
      update(s);
      return;
    }
    vaultEvents.close();
    vaultEvents = null;
    announce('The appliance is unsealed.');
    start();
  });
}

/** `setup` when the appliance was never set up (the page says which). */
const mode = document.querySelector('meta[name="tether-mode"]')?.content;

window.addEventListener('hashchange', () => { if (mode !== 'setup' && current) route().catch(failed); });

function failed(e) {
  show('Error', h('div', { class: 'card narrow' }, h('h1', {}, 'The page could not load'), h('p', { role: 'alert' }, e.message)));
}

(mode === 'setup' ? setupWizard() : start()).catch(failed);
