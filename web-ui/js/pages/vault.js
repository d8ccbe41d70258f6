// The vault: state, seal and rekey (re-authenticated), key rotation,
// secrets by name only (values are write-only here). The PKI: the CA, its
// rotation, the CRL and the certificates.

import { get, post, put } from '../api.js';
import { announce, button, choice, field, form, h, saveAs, section, show, shownOnce, table, when } from '../dom.js';
import { sensitive } from '../guard.js';

export async function vault(session, _params, sealedNow) {
  const may = (p) => session.permissions.includes(p);
  const [status, secrets] = await Promise.all([get('/api/v1/sys/vault'), get('/api/v1/secrets')]);
  const manage = may('vault_manage') ? h('div', { class: 'actions' },
    button('Seal the appliance', async () => {
      if (!confirm('Seal now? Everything stops until officers unseal it again.')) return;
      await sensitive('vault_manage', () => post('/api/v1/sys/seal'));
      sealedNow();
    }, { class: 'danger' }),
    button('Rotate the data key', async () => {
      const r = await sensitive('vault_manage', () => post('/api/v1/sys/rotate'));
      announce(`New data key version ${r.key_version}; older data is re-sealed in the background.`);
      await vault(session, _params, sealedNow);
    }, { class: 'secondary' })) : null;
  const writeSecret = may('secret_write') ? form('Store a secret', [
    field('Name', { name: 'name', required: true, autocomplete: 'off' }),
    field('Value', { name: 'value', type: 'password', required: true, autocomplete: 'off' }, 'Write-only: it is never shown again, here or anywhere.'),
    field('Task kinds that may receive it', { name: 'kinds', autocomplete: 'off' }, 'Comma-separated; empty for none yet.'),
    h('button', { type: 'submit' }, 'Store'),
  ], async (values) => {
    const kinds = values.kinds.split(',').map((k) => k.trim()).filter(Boolean);
    await put(`/api/v1/secrets/${encodeURIComponent(values.name)}`, { value: values.value, policy: { kinds, labels: [] } });
    announce(`Secret ${values.name} is stored.`);
    await vault(session, _params, sealedNow);
  }) : null;
  show('Vault', h('h1', {}, 'Vault'),
    section('State', h('dl', { class: 'facts' },
      h('dt', {}, 'State'), h('dd', {}, status.sealed ? 'sealed' : 'unsealed'),
      h('dt', {}, 'Unseal method'), h('dd', {}, (status.method || '—').replace('_', ' ')),
      status.key_version ? [h('dt', {}, 'Data key version'), h('dd', {}, String(status.key_version))] : null),
    manage),
    may('vault_manage') && !status.sealed ? section('Change how the vault unseals', rekey(status.method)) : null,
    section('Secrets', table('Secrets', ['Name', 'Version', 'Task kinds', 'Last written'],
      secrets.map((s) => [h('code', {}, s.name), String(s.version), s.policy.kinds.join(', ') || '—',
        when(s.versions.length ? s.versions[s.versions.length - 1].created_at : null)]), 'No secrets stored.'), writeSecret));
}

/** The rekey form: the present credentials proven, the new ones shown
 * once (shares, one per officer) or downloaded (a key file). */
function rekey(method) {
  const shown = h('div', { 'aria-live': 'polite' });
  let shares = 0;
  const currentShares = h('div');
  const addShare = () => {
    shares += 1;
    currentShares.append(field(`Current share ${shares}`, { name: `current_share_${shares}`, type: 'password', autocomplete: 'off', required: true }));
  };
  const current = {
    shares: () => [currentShares, button('Another share', async () => addShare(), { class: 'secondary' })],
    passphrase: () => field('Current passphrase', { name: 'current_passphrase', type: 'password', autocomplete: 'off', required: true }),
    key_file: () => field('Current key file', { name: 'current_key_file', type: 'file', required: true }),
  }[method]();
  if (method === 'shares') {
    addShare();
    addShare();
  }
  const el = form('Change how the vault unseals', [
    h('fieldset', {}, h('legend', {}, 'What unseals it now'), h('p', { class: 'hint' },
      method === 'shares' ? 'A quorum of the shares in use: each officer types their own.' : 'Proven first; nothing is changed otherwise.'), current),
    h('fieldset', {}, h('legend', {}, 'What will unseal it'),
      choice('New method', 'new_method', [['shares', 'Shares held by security officers'], ['passphrase', 'A passphrase'], ['key_file', 'A key file']]),
      field('Shares', { name: 'count', type: 'number', min: 1, max: 32, value: 3, inputmode: 'numeric' }, 'For the shares method: one per officer.'),
      field('Shares needed to unseal', { name: 'threshold', type: 'number', min: 1, max: 32, value: 2, inputmode: 'numeric' }),
      field('New passphrase', { name: 'passphrase', type: 'password', autocomplete: 'new-password' }, 'For the passphrase method.'),
      field('Confirm the new passphrase', { name: 'confirm', type: 'password', autocomplete: 'new-password' })),
    h('button', { type: 'submit' }, 'Change the unseal key'),
  ], async (values, error) => {
    const given = Object.entries(values).filter(([k, v]) => k.startsWith('current_share_') && v).map(([, share]) => ({ share }));
    const proof = { shares: given, passphrase: [{ passphrase: values.current_passphrase }],
      key_file: values.current_key_file && values.current_key_file.size ? [{ key_file: await values.current_key_file.text() }] : [] }[method];
    if (!proof.length) {
      error.textContent = 'Give what unseals the vault now.';
      return;
    }
    if (values.new_method === 'passphrase' && values.passphrase !== values.confirm) {
      error.textContent = 'The two new passphrases differ.';
      return;
    }
    const next = { shares: { method: 'shares', shares: Number(values.count), threshold: Number(values.threshold) },
      passphrase: { method: 'passphrase', passphrase: values.passphrase }, key_file: { method: 'key_file' } }[values.new_method];
    const done = await sensitive('vault_manage', () => post('/api/v1/sys/rekey', { current: proof, new: next }));
    el.reset();
    const old = { shares: 'The old shares no longer work.', passphrase: 'The old passphrase no longer works.',
      key_file: 'The old key file no longer works.' }[method];
    if (done.shares) {
      shown.replaceChildren(h('p', {}, `${old} Each officer takes one share:`),
        ...done.shares.map((share, i) => shownOnce(`New share ${i + 1} of ${done.shares.length}`, share)));
    } else if (done.key_file) {
      saveAs('tether-unseal.key', new Blob([done.key_file], { type: 'application/octet-stream' }));
      shown.replaceChildren(h('p', {}, `The new key file is downloaded: move it to separate media. ${old}`));
    } else {
      shown.replaceChildren(h('p', {}, `The vault now unseals with the new passphrase. ${old}`));
    }
    announce('The unseal key is changed.');
  });
  return [el, shown];
}

/** The PKI: the CA, its rotation's phase, the certificates served. */
export async function pki(session) {
  const [certificates, rotation] = await Promise.all([get('/api/v1/pki/certificates'), get('/api/v1/pki/ca/rotation')]);
  const phases = [['none', 'One CA'], ['added', 'Both trusted'], ['issuing', 'New CA issues']];
  // The steps open from each phase, and what each does.
  const next = { none: [['add', 'Add a new CA (both trusted)']], added: [['issue', 'Issue from the new CA'], ['rollback', 'Roll back']],
    issuing: [['retire', 'Retire the old CA'], ['rollback', 'Roll back']] }[rotation.phase] || [];
  const steps = session.permissions.includes('ca_manage') ? h('div', { class: 'actions' }, next.map(([step, label]) =>
    button(label, async () => {
      if (!confirm(`${label}? Workers follow by themselves as they renew.`)) return;
      await sensitive('ca_manage', () => post(`/api/v1/pki/ca/rotation/${step}`));
      announce('Done.');
      await pki(session);
    }, { class: step === 'rollback' ? 'secondary' : null }))) : null;
  show('PKI', h('h1', {}, 'PKI'),
    section('CA rotation', h('ol', { class: 'stepper' }, phases.map(([p, text]) =>
      h('li', { 'aria-current': rotation.phase === p ? 'step' : null }, text))),
    h('p', {}, `${rotation.workers_on_new_ca} of ${rotation.workers_active} active workers trust the new CA.`), steps),
    section('Revoked certificates', h('p', {}, 'Every revoked worker certificate not yet expired is in the CRL, signed by the CA that issues. ',
      h('a', { class: 'button secondary', href: '/api/v1/pki/crl', download: 'tether.crl' }, 'Download the CRL (DER)'))),
    section('Certificates', table('Certificates', ['Certificate', 'Fingerprint', 'Expires'],
      certificates.certificates.map((c) => [c.certificate.replace('_', ' '), h('code', { class: 'fingerprint' }, c.fingerprint), when(c.not_after)])),
    certificates.alerts.length ? h('ul', {}, certificates.alerts.map((a) => h('li', { class: 'warn' }, JSON.stringify(a)))) : null));
}
