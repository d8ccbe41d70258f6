// The console's start: what the appliance and the browser's session are,
// then the page for them. Pages are `#/name` in the address; each is listed
// with the permission it needs, so a role sees only what it may use.

import { ApiError, get, post, setCsrf } from './api.js';
import { h, show, form, field, announce } from './dom.js';
import { finishSetup, signIn } from './signin.js';
import { dashboard } from './dashboard.js';
import { setupWizard } from './setup.js';

const PAGES = [
  { path: 'dashboard', title: 'Dashboard', needs: null, render: dashboard },
];

/** Where the browser is, and what it may see: the page for that. */
async function start(loginPassword) {
  const vault = await get('/api/v1/sys/vault');
  if (vault.sealed) return sealed(vault);
  let session;
  try {
    session = await get('/api/v1/auth/session');
  } catch (e) {
    // Signed out: the one refusal in the normal flow.
    if (e instanceof ApiError && e.status === 401) return signIn(start);
    throw e;
  }
  setCsrf(session.csrf_token);
  if (!session.set_up) return finishSetup(session, () => start(), loginPassword);
  shell(session);
  return route(session);
}

function shell(session) {
  const pages = PAGES.filter((p) => !p.needs || session.permissions.includes(p.needs));
  const current = location.hash.replace(/^#\//, '') || 'dashboard';
  document.getElementById('nav').replaceChildren(...pages.map((p) =>
    h('a', { href: `#/${p.path}`, 'aria-current': p.path === current ? 'page' : null }, p.title)));
  document.getElementById('who').replaceChildren(
    h('span', {}, `${session.user.name} (${session.user.role.replace('_', ' ')})`),
    h('button', { type: 'button', class: 'secondary', on: { click: signOut } }, 'Sign out'));
}

async function route(session) {
  const wanted = location.hash.replace(/^#\//, '') || 'dashboard';
  const page = PAGES.find((p) => p.path === wanted && (!p.needs || session.permissions.includes(p.needs)))
    || PAGES[0];
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.getAttribute('href') === `#/${page.path}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  await page.render(session);
}

async function signOut() {
  const answer = await post('/api/v1/auth/logout');
  setCsrf(null);
  document.getElementById('nav').replaceChildren();
  document.getElementById('who').replaceChildren();
  if (answer && answer.idp_logout_url) {
    location.assign(answer.idp_logout_url);
    return;
  }
  announce('You are signed out.');
  await start();
}

/** The live view of the vault while sealed (one at a time). */
let vaultEvents = null;

/** The sealed appliance: officers give their shares (or the passphrase)
 * here, each in their own browser; every browser follows the ceremony live. */
function sealed(vault) {
  const byShares = vault.method === 'shares';
  const progress = h('p', { id: 'progress', 'aria-live': 'polite' });
  const bar = h('progress', { 'aria-labelledby': 'progress', max: 1, value: 0 });
  const update = (status) => {
    if (!status.shares) return;
    const { received, threshold, expires_at: expires } = status.shares;
    bar.max = threshold;
    bar.value = received;
    const until = expires ? ` If it is not finished by ${new Date(expires).toLocaleTimeString()}, it starts over.` : '';
    progress.textContent = `${received} of ${threshold} shares given.${until}`;
  };
  const secret = byShares
    ? field('Your share', { name: 'secret', type: 'password', autocomplete: 'off', required: true },
      'Officers give their shares one at a time; none is kept on disk.')
    : field('Passphrase', { name: 'secret', type: 'password', autocomplete: 'off', required: true });
  const unsealForm = form('Unseal', [secret, h('button', { type: 'submit' }, byShares ? 'Give my share' : 'Unseal')],
    async (values) => {
      const status = await post('/api/v1/sys/unseal', byShares ? { share: values.secret } : { passphrase: values.secret });
      unsealForm.reset();
      if (status.sealed) {
        update(status);
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
  update(vault);
  if (vaultEvents) vaultEvents.close();
  vaultEvents = new EventSource('/api/v1/sys/vault/events');
  vaultEvents.addEventListener('vault', (event) => {
    const status = JSON.parse(event.data);
    if (status.sealed) {
      update(status);
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

window.addEventListener('hashchange', () => { if (mode !== 'setup') start(); });
(mode === 'setup' ? setupWizard() : start()).catch((e) => show('Error', h('div', { class: 'card narrow' },
  h('h1', {}, 'The console could not load'), h('p', { role: 'alert' }, e.message))));
