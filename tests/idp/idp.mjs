// A real OpenID provider for Tether's SSO end-to-end test: oidc-provider
// (the certified Node.js implementation) over HTTPS on loopback, with one
// confidential client and a few people in groups. Only the login page is
// ours: it checks a password from the people table. Consent is implied for
// the appliance (a first-party client), as site IdPs usually configure it.
//
//   node idp.mjs CONFIG.json
//
// CONFIG: { cert_file, key_file, client_id, client_secret,
//           redirect_uri, post_logout_redirect_uri,
//           people: { name: { password, groups: [..], amr?: [..], acr? } } }
// A person's amr and acr, when given, are what the provider says of how
// they authenticated (RFC 8176 methods; a level the site names).
// Listens on a free loopback port, then prints "issuer https://127.0.0.1:PORT".

import { createServer } from 'node:https';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const people = config.people;

const signing = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

// The issuer names the port, so the port is taken before the provider exists.
let handle = (_req, res) => { res.writeHead(503); res.end(); };
const server = createServer({ cert: readFileSync(config.cert_file), key: readFileSync(config.key_file) },
  (req, res) => handle(req, res));
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `https://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: [config.redirect_uri],
    post_logout_redirect_uris: [config.post_logout_redirect_uri],
    response_types: ['code'],
    grant_types: ['authorization_code'],
  }],
  pkce: { required: () => true },
  // acr and amr go in the ID token (as site providers send them) when the
  // login that made the session set them.
  claims: { openid: ['sub', 'acr', 'amr'], profile: ['preferred_username', 'name'], groups: ['groups'] },
  acrValues: ['urn:site:pwd', 'urn:site:mfa'],
  jwks: { keys: [{ ...signing, kid: 'test-rs256', alg: 'RS256', use: 'sig' }] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, id) {
    if (!people[id]) return undefined;
    return {
      accountId: id,
      claims: () => ({ sub: id, preferred_username: id, name: id, groups: people[id].groups }),
    };
  },
  async loadExistingGrant(ctx) {
    const { client, session } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope('openid profile groups');
    await grant.save();
    return grant;
  },
});

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

// GET /interaction/UID shows the login form; POST /interaction/UID/login
// checks it and hands the result back to the provider.
async function interaction(req, res, uid, step) {
  await provider.interactionDetails(req, res);
  if (req.method === 'GET' && !step) {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<form method="post" action="/interaction/${uid}/login">`
      + '<input name="login"><input name="password" type="password"><button>Sign in</button></form>');
    return;
  }
  if (req.method === 'POST' && step === 'login') {
    const form = await readForm(req);
    const person = people[form.get('login')];
    if (!person || person.password !== form.get('password')) {
      res.writeHead(401, { 'content-type': 'text/plain' });
      res.end('wrong name or password');
      return;
    }
    const login = { accountId: form.get('login'), amr: person.amr, acr: person.acr };
    await provider.interactionFinished(req, res, { login }, { mergeWithLastSubmission: false });
    return;
  }
  res.writeHead(404);
  res.end();
}

const callback = provider.callback();
handle = (req, res) => {
  const match = /^\/interaction\/([^/?]+)(?:\/([a-z]+))?/.exec(req.url);
  if (!match) return callback(req, res);
  interaction(req, res, match[1], match[2]).catch((err) => {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(String(err));
  });
};
console.log(`issuer ${issuer}`);
