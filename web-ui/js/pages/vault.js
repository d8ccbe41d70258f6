// The vault: state, seal (re-authenticated), key rotation, secrets by name
// only (values are write-only here). The PKI: the CA, its rotation and the
// certificates.

import { get, post, put } from '../api.js';
import { announce, button, field, form, h, section, show, table, when } from '../dom.js';
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
    section('Secrets', table('Secrets', ['Name', 'Version', 'Task kinds', 'Last written'],
      secrets.map((s) => [h('code', {}, s.name), String(s.version), s.policy.kinds.join(', ') || '—',
        when(s.versions.length ? s.versions[s.versions.length - 1].created_at : null)]), 'No secrets stored.'), writeSecret));
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
    section('Certificates', table('Certificates', ['Certificate', 'Fingerprint', 'Expires'],
      certificates.certificates.map((c) => [c.certificate.replace('_', ' '), h('code', { class: 'fingerprint' }, c.fingerprint), when(c.not_after)])),
    certificates.alerts.length ? h('ul', {}, certificates.alerts.map((a) => h('li', { class: 'warn' }, JSON.stringify(a)))) : null));
}
