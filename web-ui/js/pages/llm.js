// The LLM gateway: virtual keys and their limits (the key shown once), the
// usage per key and model (in all and per day), enforcement prompts and
// the prompt log; model servers and offline bundles on the Models page.

import { del, get, post, put, upload } from '../api.js';
import { bars } from '../chart.js';
import { sensitive } from '../guard.js';
import { announce, button, choice, field, form, h, section, show, shownOnce, table, when } from '../dom.js';

const number = (v) => (v === '' || v === undefined ? undefined : Number(v));

/** The days usage is drawn over: the last 30, as the appliance names them (UTC). */
const DAYS = Array.from({ length: 30 }, (_, i) => new Date(Date.now() - (29 - i) * 86400000).toISOString().slice(0, 10));
/** How many key · model pairs get a chart of their own (the busiest). */
const CHARTED = 6;

export async function llm(session) {
  const may = (p) => session.permissions.includes(p);
  const [keys, usage] = await Promise.all([
    may('llm_key_manage') ? get('/api/v1/llm/keys') : null,
    may('llm_usage_read') ? get(`/api/v1/llm/usage?from=${DAYS[0]}`) : null,
  ]);
  const again = () => llm(session);
  const made = h('div', { id: 'key-made', 'aria-live': 'polite' });
  const keyForm = keys ? form('Create a virtual key', [
    field('Models', { name: 'models', autocomplete: 'off' }, 'Comma-separated; empty for every model.'),
    field('Requests per minute', { name: 'rpm', type: 'number', min: 1, inputmode: 'numeric' }),
    field('Tokens per minute', { name: 'tpm', type: 'number', min: 1, inputmode: 'numeric' }),
    choice('Enforcement prompt', 'enforcement', [['standard', 'Standard'], ['design-first', 'Design first'],
      ['unrestricted', 'None']]),
    field('Valid for', { name: 'ttl', autocomplete: 'off', value: '90d' }),
    h('button', { type: 'submit' }, 'Create key'),
  ], async (values) => {
    const key = await post('/api/v1/llm/keys', {
      models: values.models.split(',').map((m) => m.trim()).filter(Boolean),
      rpm: number(values.rpm), tpm: number(values.tpm), enforcement: values.enforcement, ttl: values.ttl || undefined,
    });
    await again();
    document.getElementById('key-made').replaceChildren(shownOnce(`Virtual key ${key.id}`, key.key));
  }) : null;
  // Tokens per key · model: in all, and day by day.
  const perKey = new Map();
  for (const row of usage || []) {
    const k = `${row.key_id} · ${row.model}`;
    const days = perKey.get(k) || new Map();
    days.set(row.day, (days.get(row.day) || 0) + row.prompt_tokens + row.completion_tokens);
    perKey.set(k, days);
  }
  const totals = [...perKey].map(([k, days]) => [k, [...days.values()].reduce((a, b) => a + b, 0)]).sort((a, b) => b[1] - a[1]);
  const top = Math.max(1, ...totals.map(([, t]) => t));
  show('LLM', h('h1', {}, 'LLM gateway'),
    keys ? section('Virtual keys', made, table('Virtual keys', ['Key', 'Owner', 'Models', 'Limits', 'Expires', 'Actions'],
      keys.map((k) => [h('code', {}, k.id), k.owner, k.models.join(', ') || 'all', `${k.rpm ?? '∞'} rpm, ${k.tpm ?? '∞'} tpm`,
        when(k.expires_at), button('Revoke', async () => { await del(`/api/v1/llm/keys/${k.id}`); announce('The key is revoked.'); await again(); },
          { class: 'danger', 'aria-label': `Revoke key ${k.id}` })]), 'No virtual keys.'), keyForm) : null,
    usage ? section('Usage (tokens, last 30 days)', totals.length
      ? [h('ul', { class: 'bars' }, totals.map(([k, tokens]) => h('li', {},
        h('span', {}, k), h('meter', { min: 0, max: top, value: tokens, 'aria-label': `${k}: ${tokens} tokens` }), h('span', {}, String(tokens))))),
      h('div', { class: 'grid charts' }, totals.slice(0, CHARTED).map(([k]) =>
        bars(`${k}, tokens per day`, 'tokens', DAYS, DAYS.map((d) => perKey.get(k).get(d) || 0))))]
      : h('p', { class: 'empty' }, 'No calls yet.')) : null,
    may('llm_prompt_manage') ? section('Enforcement prompts', form('Set an enforcement prompt', [
      choice('Level', 'level', [['standard', 'Standard'], ['design-first', 'Design first']]),
      h('div', { class: 'field' }, h('label', { for: 'f-prompt' }, 'What the gateway tells the model first'),
        h('textarea', { id: 'f-prompt', name: 'prompt', rows: 5, required: true })),
      h('button', { type: 'submit' }, 'Set the prompt'),
    ], async (values) => {
      await sensitive('llm_prompt_manage', () => put(`/api/v1/llm/prompts/${values.level}`, { prompt: values.prompt }));
      announce('The prompt is set; every key at that level uses it from its next call.');
    })) : null,
    may('llm_prompt_log_read') ? section('Prompt log', h('p', {}, 'Calls of keys that log their prompts, opened from the vault. Reading them is audited.'),
      button('Read the prompt log', async () => {
        const entries = await sensitive('llm_prompt_log_read', () => get('/api/v1/llm/prompt-log?limit=20'));
        document.getElementById('prompt-log').replaceChildren(table('Logged calls, newest first', ['When', 'Key', 'Model', 'Status', 'Request', 'Answer'],
          entries.map((e) => [when(e.at), e.key_id, e.model, String(e.status), h('code', {}, e.request.slice(0, 400)), h('code', {}, e.answer.slice(0, 400))]),
          'No logged calls.'));
      }), h('div', { id: 'prompt-log' })) : null);
}

/** Model servers and their health, the offline model bundles, and the key
 * bundles must be signed with. */
export async function models(session) {
  const may = (p) => session.permissions.includes(p);
  const [upstreams, bundles] = await Promise.all([
    may('llm_upstream_manage') ? get('/api/v1/llm/upstreams') : null,
    may('llm_model_import') ? get('/api/v1/llm/models') : null,
  ]);
  const again = () => models(session);
  show('Models', h('h1', {}, 'Models'),
    upstreams ? section('Model servers', table('Model servers', ['Name', 'Kind', 'Address', 'Models', 'Health'],
      upstreams.map((u) => [u.name, u.kind, h('code', {}, u.url), u.models.join(', '),
        u.health ? JSON.stringify(u.health) : 'not probed yet']), 'No model server is configured: tether llm upstream set NAME --kind … --url ….')) : null,
    bundles ? modelsSection(bundles, again) : null,
    may('llm_model_trust') ? section('Model-signing key', form('Trust a model-signing key', [
      h('div', { class: 'field' }, h('label', { for: 'f-pem' }, 'Public key (PEM, P-256)'),
        h('textarea', { id: 'f-pem', name: 'pem', rows: 4, required: true })),
      h('button', { type: 'submit' }, 'Trust this key'),
    ], async (values) => {
      const key = await sensitive('llm_model_trust', () => put('/api/v1/llm/model-signing-key', { public_key_pem: values.pem }));
      announce(`Bundles signed by ${key.key_id} are accepted from now on.`);
      await again();
    })) : null);
}

function modelsSection(bundles, again) {
  const importForm = form('Import a model bundle', [
    h('div', { class: 'field' }, h('label', { for: 'f-bundle' }, 'Bundle file'),
      h('span', { class: 'hint', id: 'f-bundle-hint' }, 'A signed bundle from tether models pack; verified before anything is written.'),
      h('input', { id: 'f-bundle', name: 'bundle', type: 'file', required: true, 'aria-describedby': 'f-bundle-hint' })),
    choice('Into', 'into', [['ollama', 'Ollama'], ['vllm-dir', 'vLLM model directory']]),
    h('button', { type: 'submit' }, 'Import'),
  ], async (values) => {
    const file = values.bundle;
    if (!file || !file.size) throw new Error('Choose the bundle file first.');
    announce(`Importing ${file.name} (${(file.size / 2 ** 30).toFixed(2)} GiB)…`);
    const model = await upload(`/api/v1/llm/models/import?into=${values.into}`, file);
    announce(`${model.name} is imported.`);
    await again();
  });
  return section('Offline models',
    h('p', {}, bundles.signing_key ? ['Bundles must be signed by ', h('code', {}, bundles.signing_key.key_id), ' (set ', when(bundles.signing_key.set_at), ').']
      : 'No model-signing key is trusted yet: a security officer sets one, then bundles can be imported.'),
    table('Imported models', ['Model', 'Format', 'Size', 'License', 'Into', 'Imported'],
      bundles.models.map((m) => [m.name, m.format, `${(m.bytes / 2 ** 30).toFixed(2)} GiB`, m.license, m.into, when(m.imported_at || m.packed_at)]),
      'No model imported.'),
    bundles.signing_key ? importForm : null);
}
