// The setup wizard: the first boot of an appliance never set up. The setup
// code (printed on the appliance's console and journal) opens it; then the
// names its certificate carries, FIPS or not, the first admin's password,
// and how the vault unseals. The unseal shares are shown once, officer by
// officer (or the key file offered once); then the appliance serves
// normally, sealed.

import { get, post } from './api.js';
import { field, form, h, show } from './dom.js';

/** Everything the wizard has gathered, sent in one request at the end. */
const answers = {};

export async function setupWizard() {
  const about = await get('/api/v1/setup');
  const expires = new Date(about.code_expires_at).toLocaleTimeString();
  show('Set up', h('div', { class: 'card narrow' },
    h('h1', {}, 'Set up this appliance'),
    h('p', {}, 'Enter the setup code the appliance printed on its console (and in its journal). ',
      `It works once, until ${expires}.`),
    form('Enter the setup code', [
      field('Setup code', { name: 'code', autocomplete: 'off', required: true, autocapitalize: 'none' }, 'Like 4acd-d9aa-cbba.'),
      h('button', { type: 'submit' }, 'Continue'),
    ], async (values) => {
      await post('/api/v1/setup/code', { code: values.code });
      answers.code = values.code;
      names(about.suggested_names);
    })));
}

function names(suggested) {
  const wanted = [...new Set([location.hostname, ...suggested])].join(', ');
  show('Name the appliance', h('div', { class: 'card narrow' },
    h('h1', {}, 'Name the appliance'),
    h('p', {}, 'The names and addresses people and workers reach it by go into its certificate.'),
    form('Names and crypto', [
      field('Names and IP addresses', { name: 'names', value: wanted, required: true },
        'DNS names or IP addresses, separated by commas.'),
      h('div', { class: 'field' },
        h('label', { for: 'f-fips', class: 'check' }, h('input', { id: 'f-fips', name: 'fips', type: 'checkbox' }),
          ' FIPS mode'),
        h('span', { class: 'hint' }, 'Only FIPS-approved algorithms, for sites whose policy requires it.')),
      h('button', { type: 'submit' }, 'Continue'),
    ], async (values) => {
      answers.server_names = values.names.split(',').map((n) => n.trim()).filter(Boolean);
      answers.fips = values.fips === 'on';
      admin();
    })));
}

function admin() {
  show('The first admin', h('div', { class: 'card narrow' },
    h('h1', {}, 'The first admin'),
    h('p', {}, 'The account admin administers the appliance. Choose its password; its authenticator (TOTP) is set up at its first sign-in.'),
    form('The first admin', [
      field('Password for admin', { name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 12 },
        'At least 12 characters.'),
      field('Confirm the password', { name: 'confirm', type: 'password', autocomplete: 'new-password', required: true }),
      h('fieldset', {}, h('legend', {}, 'Rescue login at the machine (optional)'),
        field('Rescue password', { name: 'rescue', type: 'password', autocomplete: 'new-password', minlength: 12 },
          'Opens a root shell from the machine\'s own screen or serial console, for repairs. Left empty, there is no login there at all.'),
        field('Confirm the rescue password', { name: 'rescue_confirm', type: 'password', autocomplete: 'new-password' })),
      h('button', { type: 'submit' }, 'Continue'),
    ], async (values, error) => {
      if (values.password !== values.confirm) {
        error.textContent = 'The two passwords differ.';
        return;
      }
      if (values.rescue !== values.rescue_confirm) {
        error.textContent = 'The two rescue passwords differ.';
        return;
      }
      answers.admin_password = values.password;
      if (values.rescue) answers.rescue_password = values.rescue;
      unsealMethod();
    })));
}

function unsealMethod() {
  const choice = (value, label, checked) => h('label', { class: 'check', for: `f-method-${value}` },
    h('input', { id: `f-method-${value}`, type: 'radio', name: 'method', value, checked }), ` ${label}`);
  show('How the vault unseals', h('div', { class: 'card narrow' },
    h('h1', {}, 'How the vault unseals'),
    h('p', {}, 'After every start the appliance is sealed until it is given its unseal key.'),
    form('Unseal method', [
      h('fieldset', {}, h('legend', {}, 'Unseal with'),
        choice('shares', 'shares held by security officers, any few of them together (recommended)', true),
        choice('passphrase', 'a passphrase', false),
        choice('key_file', 'a key file, downloaded now and kept on separate media', false)),
      field('Shares', { name: 'count', type: 'number', min: 1, max: 32, value: 3, inputmode: 'numeric' }, 'One per officer.'),
      field('Shares needed to unseal', { name: 'threshold', type: 'number', min: 1, max: 32, value: 2, inputmode: 'numeric' }),
      field('Passphrase (for the passphrase method)', { name: 'passphrase', type: 'password', autocomplete: 'new-password' }),
      h('button', { type: 'submit' }, 'Set up the appliance'),
    ], async (values) => {
      answers.unseal = {
        passphrase: { passphrase: values.passphrase },
        key_file: 'key_file',
        shares: { shares: { count: Number(values.count), threshold: Number(values.threshold) } },
      }[values.method];
      const done = await post('/api/v1/setup', answers);
      for (const key of Object.keys(answers)) delete answers[key];
      if (done.shares && done.shares.length) handOut(done, 0);
      else if (done.key_file) handOutKeyFile(done);
      else finished(done);
    })));
}

/** Shows share `i` to its officer, and no other. */
function handOut(done, i) {
  const share = done.shares[i];
  const download = h('a', { class: 'button secondary', download: `tether-share-${i + 1}.txt`,
    href: URL.createObjectURL(new Blob([`${share}\n`], { type: 'text/plain' })) }, 'Download');
  const last = i + 1 === done.shares.length;
  show(`Share ${i + 1}`, h('div', { class: 'card narrow' },
    h('h1', {}, `Share for officer ${i + 1} of ${done.shares.length}`),
    h('p', {}, `Any ${done.threshold} of the ${done.shares.length} shares unseal the appliance. `,
      'This share is shown only now: the officer keeps it (printed, or on their own media).'),
    h('p', { class: 'secret', 'data-share': share }, share),
    h('p', {}, download, ' ', h('button', { type: 'button', class: 'secondary', on: { click: () => window.print() } }, 'Print')),
    h('button', { type: 'button', on: { click: () => (last ? finished(done) : handOut(done, i + 1)) } },
      last ? 'All shares are handed out' : 'Next officer')));
}

/** Hands out the key file, once: it goes onto media kept apart from the appliance. */
function handOutKeyFile(done) {
  const download = h('a', { class: 'button', download: 'tether-unseal.key',
    href: URL.createObjectURL(new Blob([done.key_file], { type: 'application/octet-stream' })) }, 'Download the key file');
  show('The unseal key file', h('div', { class: 'card narrow' },
    h('h1', {}, 'The unseal key file'),
    h('p', {}, 'The vault unseals with this file. It is offered only now: save it to removable media kept apart from the appliance. ',
      'Anyone holding it can read the appliance\'s data; without it, nobody can.'),
    h('p', {}, download),
    h('button', { type: 'button', class: 'secondary', on: { click: () => finished(done) } }, 'The key file is saved')));
}

function finished(done) {
  show('Set up', h('div', { class: 'card narrow' },
    h('h1', {}, 'The appliance is set up'),
    h('p', {}, 'From now on it presents a certificate from its own CA, whose fingerprint is:'),
    h('p', { class: 'secret' }, done.ca_fingerprint),
    h('p', {}, 'It is sealed: unseal it, then sign in as admin.'),
    h('button', { type: 'button', on: { click: () => location.reload() } }, 'Continue to the console')));
}
