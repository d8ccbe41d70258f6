// Signing in, and the steps an account takes before it may do anything:
// its own password, its second factor (TOTP, enrolled with a QR code drawn
// by the appliance), or, after a single sign-on the provider vouched no
// second factor for, the appliance's own code.

import { ApiError, get, post, setCsrf } from './api.js';
import { announce, field, form, h, show } from './dom.js';

/** A six-digit TOTP code is sent as `totp`; anything else as a recovery code. */
export function secondFactor(code) {
  const typed = (code || '').trim();
  if (!typed) return {};
  return /^\d{6}$/.test(typed) ? { totp: typed } : { recovery_code: typed };
}

function codeField(label, required) {
  return field(label, {
    name: 'code', autocomplete: 'one-time-code', inputmode: 'numeric', required,
  }, 'Six digits from your authenticator app, or one of your recovery codes.');
}

function loginMessage(e) {
  if (!(e instanceof ApiError)) return e.message;
  switch (e.code) {
    case 'invalid_credentials': return 'The name, password or code is wrong.';
    case 'second_factor_required': return 'This account needs its authenticator code: enter it and sign in again.';
    case 'login_throttled': return `Too many failed attempts. Try again in ${e.retryAfter || 'a few'} seconds.`;
    default: return e.message;
  }
}

/** The sign-in page (with `notice` above it, if any); `done(password)`
 * follows a successful login. */
export async function signIn(done, notice) {
  const methods = await get('/api/v1/auth/methods');
  const sso = methods.sso
    ? h('p', {}, h('a', { class: 'button secondary', href: '/api/v1/auth/sso/login' }, 'Sign in with single sign-on'))
    : null;
  const signInForm = form('Sign in', [
    field('Name', { name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none' }),
    field('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
    codeField('Authenticator code (if your account has one)', false),
    h('button', { type: 'submit' }, 'Sign in'),
  ], async (values, error) => {
    try {
      const session = await post('/api/v1/auth/login', {
        username: values.username, password: values.password, ...secondFactor(values.code),
      });
      setCsrf(session.csrf_token);
      await done(values.password);
    } catch (e) {
      error.textContent = loginMessage(e);
      if (e.code === 'second_factor_required') signInForm.querySelector('[name=code]').focus();
    }
  });
  show('Sign in', h('div', { class: 'card narrow' }, h('h1', {}, 'Sign in to Tether'),
    notice ? h('p', { class: 'notice', role: 'status' }, notice) : null, signInForm, sso));
}

/** The next step of an account that is not set up yet; `done()` looks again. */
export async function finishSetup(session, done, loginPassword) {
  if (session.user.must_change_password) return choosePassword(session, done, loginPassword);
  if (session.second_factor_pending && session.user.second_factor) return giveSecondFactor(done);
  return enrollTotp(session, done);
}

function choosePassword(session, done, loginPassword) {
  const fields = [
    loginPassword ? null : field('Current password', { name: 'current', type: 'password', autocomplete: 'current-password', required: true }),
    field('New password', { name: 'new', type: 'password', autocomplete: 'new-password', required: true, minlength: 12 },
      'At least 12 characters, not your name.'),
    field('Confirm the new password', { name: 'confirm', type: 'password', autocomplete: 'new-password', required: true }),
    h('button', { type: 'submit' }, 'Set my password'),
  ].filter(Boolean);
  show('Choose your password', h('div', { class: 'card narrow' },
    h('h1', {}, 'Choose your own password'),
    h('p', {}, `Welcome, ${session.user.name}. Someone else set your password; choose one only you know.`),
    form('Choose your password', fields, async (values, error) => {
      if (values.new !== values.confirm) {
        error.textContent = 'The two new passwords differ.';
        return;
      }
      await post('/api/v1/auth/password', { current: loginPassword || values.current, new: values.new });
      announce('Your password is changed.');
      await done();
    })));
}

async function enrollTotp(session, done) {
  const setup = await post('/api/v1/auth/totp');
  const grouped = setup.secret.match(/.{1,4}/g).join(' ');
  const qr = h('img', {
    class: 'qr', alt: 'QR code of your TOTP secret, for an authenticator app', width: 216, height: 216,
    src: `data:image/svg+xml;base64,${btoa(setup.qr_svg)}`,
  });
  show('Set up your authenticator', h('div', { class: 'card narrow' },
    h('h1', {}, 'Set up your authenticator'),
    h('p', {}, `Your role (${session.user.role}) needs a second factor. Scan the code with an authenticator app, or type the secret into it.`),
    qr,
    h('p', {}, 'Secret: ', h('span', { class: 'secret', 'data-secret': setup.secret }, grouped)),
    form('Confirm your authenticator', [
      codeField('Code from the app', true),
      h('button', { type: 'submit' }, 'Confirm'),
    ], async (values) => {
      const answer = await post('/api/v1/auth/totp/confirm', { code: values.code.trim() });
      showRecoveryCodes(answer.recovery_codes, done);
    })));
}

function showRecoveryCodes(codes, done) {
  show('Your recovery codes', h('div', { class: 'card narrow' },
    h('h1', {}, 'Keep your recovery codes'),
    h('p', {}, 'Each works once in place of a code from the app. They are shown only now: print them or write them down.'),
    h('ul', { class: 'codes', 'aria-label': 'Recovery codes' }, codes.map((c) => h('li', {}, c))),
    h('button', { type: 'button', on: { click: () => done() } }, 'I have kept them — continue')));
}

function giveSecondFactor(done) {
  show('Your authenticator code', h('div', { class: 'card narrow' },
    h('h1', {}, 'One more step'),
    h('p', {}, 'Your identity provider did not check a second factor: enter the code from your authenticator app.'),
    form('Your authenticator code', [codeField('Code', true), h('button', { type: 'submit' }, 'Continue')],
      async (values, error) => {
        try {
          await post('/api/v1/auth/second-factor', secondFactor(values.code));
          await done();
        } catch (e) {
          error.textContent = loginMessage(e);
        }
      })));
}
