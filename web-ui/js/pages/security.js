// Security: the crypto mode, the FIPS module and its self-tests, and the
// security check's results with their evidence and remediation.

import { get } from '../api.js';
import { button, h, section, show, table } from '../dom.js';

const ORDER = { fail: 0, warn: 1, pass: 2 };

export async function security(session) {
  const crypto = await get('/api/v1/system/crypto');
  const results = h('div', { id: 'security-results', 'aria-live': 'polite' });
  const run = async () => {
    results.replaceChildren(h('p', {}, 'Checking…'));
    const report = await get('/api/v1/security/checks');
    const checks = report.checks.slice().sort((a, b) => (ORDER[a.status] ?? 3) - (ORDER[b.status] ?? 3));
    results.replaceChildren(
      h('p', { class: 'stat' }, `${report.score} / 100 · grade ${report.grade}`),
      table('Checks, failing first', ['Check', 'Severity', 'Result', 'What was seen', 'What to do'],
        checks.map((c) => [h('span', {}, c.title, h('br'), h('code', { class: 'hint' }, c.id)), c.severity,
          h('span', { class: c.status === 'pass' ? 'good' : c.status === 'warn' ? 'warn' : 'bad' }, c.status),
          c.evidence, c.status === 'pass' ? '—' : c.remediation])));
  };
  const policy = crypto.policy;
  show('Security', h('h1', {}, 'Security'),
    section('Cryptography', h('dl', { class: 'facts' },
      h('dt', {}, 'Mode'), h('dd', {}, crypto.mode),
      h('dt', {}, 'Module'), h('dd', {}, `${crypto.module}${crypto.validated_module ? ' (validated)' : ''}`),
      crypto.pending_mode ? [h('dt', {}, 'After the next start'), h('dd', { class: 'warn' }, crypto.pending_mode)] : null,
      h('dt', {}, 'Start-up self-tests passed'), h('dd', {}, crypto.self_tests_passed.length
        ? crypto.self_tests_passed.join(', ') : 'none (standard mode runs none)'),
      h('dt', {}, 'TLS'), h('dd', {}, `${policy.tls_versions.join(', ')}; ${policy.tls_suites.join(', ')}`),
      h('dt', {}, 'Key exchange groups'), h('dd', {}, policy.tls_groups.join(', ')),
      h('dt', {}, 'Worker keys'), h('dd', {}, policy.worker_keys.join(', ')),
      h('dt', {}, 'Passphrase KDF'), h('dd', {}, policy.passphrase_kdf))),
    section('Security check', h('p', {}, 'Runs every check now (the run is audited with its score).'),
      button('Run the security check', run), results));
}
