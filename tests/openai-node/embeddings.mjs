// The official `openai` client for Node.js, a 4.x release and the current
// one, against Tether's gateway: embeddings as each asks by default (base64,
// decoded by the client into floats), as floats, as base64 decoded here,
// shortened by `dimensions` on a model that can, refused on one that
// cannot. Prints what each saw as one JSON line.
//
//   node embeddings.mjs BASE_URL MODEL SHORTENING_MODEL
//   (the key in TETHER_LLM_KEY, the appliance's CA in NODE_EXTRA_CA_CERTS)
import OpenAI from 'openai';
import OpenAI4 from 'openai4';

const [baseURL, model, shortening] = process.argv.slice(2);
const input = ['one two', 'three'];
const floats = (b64) => {
  const bytes = Buffer.from(b64, 'base64');
  return Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readFloatLE(i * 4));
};

const seen = {};
for (const [name, Client] of [['openai4', OpenAI4], ['openai', OpenAI]]) {
  const client = new Client({ baseURL, apiKey: process.env.TETHER_LLM_KEY, maxRetries: 0 });
  const got = {};
  got.default = (await client.embeddings.create({ model, input })).data.map((d) => Array.from(d.embedding));
  got.float = (await client.embeddings.create({ model, input, encoding_format: 'float' })).data.map((d) => d.embedding);
  const asBase64 = (await client.embeddings.create({ model, input, encoding_format: 'base64' })).data;
  got.base64_is_text = asBase64.every((d) => typeof d.embedding === 'string');
  got.base64 = asBase64.map((d) => floats(d.embedding));
  got.shortened = (await client.embeddings.create({ model: shortening, input, dimensions: 2 })).data.map((d) =>
    Array.from(d.embedding),
  );
  try {
    await client.embeddings.create({ model, input, dimensions: 2 });
  } catch (e) {
    got.refused = { status: e.status, code: e.code, message: e.message };
  }
  seen[name] = got;
}
console.log(JSON.stringify(seen));
