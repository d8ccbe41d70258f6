// The LLM gateway: virtual keys and their limits (the key shown once),
// model servers and their health, and the usage per key and model.

import { del, get, post } from '../api.js';
import { announce, button, choice, field, form, h, section, show, shownOnce, table, when } from '../dom.js';

const number = (v) => (v === '' || v === undefined ? undefined : Number(v));

export async function llm(session) {
  const may = (p) => session.permissions.includes(p);
  const [keys, upstreams, usage] = await Promise.all([
    may('llm_key_manage') ? get('/api/v1/llm/keys') : null,
    may('llm_upstream_manage') ? get('/api/v1/llm/upstreams') : null,
    may('llm_usage_read') ? get('/api/v1/llm/usage') : null,
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
  const perKey = new Map();
  for (const row of usage || []) {
    const k = `${row.key_id} · ${row.model}`;
    perKey.set(k, (perKey.get(k) || 0) + row.prompt_tokens + row.completion_tokens);
  }
  const top = Math.max(1, ...perKey.values());
  show('LLM', h('h1', {}, 'LLM gateway'),
    keys ? section('Virtual keys', made, table('Virtual keys', ['Key', 'Owner', 'Models', 'Limits', 'Expires', 'Actions'],
      keys.map((k) => [h('code', {}, k.id), k.owner, k.models.join(', ') || 'all', `${k.rpm ?? '∞'} rpm, ${k.tpm ?? '∞'} tpm`,
        when(k.expires_at), button('Revoke', async () => { await del(`/api/v1/llm/keys/${k.id}`); announce('The key is revoked.'); await again(); },
          { class: 'danger', 'aria-label': `Revoke key ${k.id}` })]), 'No virtual keys.'), keyForm) : null,
    upstreams ? section('Model servers', table('Model servers', ['Name', 'Kind', 'Address', 'Models', 'Health'],
      upstreams.map((u) => [u.name, u.kind, h('code', {}, u.url), u.models.join(', '),
        u.health ? JSON.stringify(u.health) : 'not probed yet']), 'No model server is configured: tether llm upstream add.')) : null,
    usage ? section('Usage (tokens, this period)', perKey.size
      ? h('ul', { class: 'bars' }, [...perKey].map(([k, tokens]) => h('li', {},
        h('span', {}, k), h('meter', { min: 0, max: top, value: tokens, 'aria-label': `${k}: ${tokens} tokens` }), h('span', {}, String(tokens)))))
      : h('p', { class: 'empty' }, 'No calls yet.')) : null);
}
