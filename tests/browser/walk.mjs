// The console walked in headless Chromium (Debian's chromium, driven by
// playwright-core) the way a person would, each page checked by axe-core
// in light and dark. Run by tests/e2e/console.rs:
//
//   node walk.mjs CONFIG.json
//
// CONFIG: { scenario ("first-admin", "unseal", "setup", "operate" or
//           "roles"), console, spki (the certificate's SPKI SHA-256, base64,
//           the only certificate error Chromium may overlook),
//           admin_password, shares (two, for two officers), setup_code,
//           unseal ("setup" only: "key_file" to choose a key file, which
//           the walk downloads and unseals with, then stops at sign-in),
//           handoff (a file "setup" writes and "operate" reads: the
//           credentials the wizard made), tether and worker_state (the
//           binary and a directory for the worker "operate" enrolls),
//           people (for "roles": name, password, role, pages, crafted),
//           screenshots? (a directory) }
// Prints one JSON line: { problems: [...], pages: [...], axe: {page: count} }
// and exits 0 when there are no problems.

import { readFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { createHmac } from 'node:crypto';
import { spawn } from 'node:child_process';
import { chromium } from 'playwright-core';
import AxeBuilder from '@axe-core/playwright';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const origin = new URL(config.console).origin;
const problems = [];
const pages = [];
const axe = {};

// RFC 6238 with the appliance's parameters (SHA-1, 6 digits, 30 s).
function base32(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of text.replace(/[\s=]/g, '').toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}
function totpAt(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', base32(secret)).update(counter).digest();
  const at = mac[mac.length - 1] & 0xf;
  return String((mac.readUInt32BE(at) & 0x7fffffff) % 1000000).padStart(6, '0');
}

/** A code the appliance has not seen yet: each is accepted once, so the
 * next one is that of the step after the last used (the appliance takes
 * one step ahead; further ahead, this waits). */
let lastStep = 0;
async function unusedCode(secret) {
  const now = Math.floor(Date.now() / 30000);
  const step = Math.max(now, lastStep + 1);
  if (step > now + 1) await new Promise((done) => { setTimeout(done, (step - 1) * 30000 - Date.now() + 200); });
  lastStep = step;
  return totpAt(secret, step);
}

/** Refusals a step provokes on purpose (a wrong code): [status, path], each once. */
const provoked = [];
function expectRefusal(status, path) {
  provoked.push([status, path], [status, path]);
}
function takeProvoked(status, url) {
  const at = provoked.findIndex(([s, p]) => s === status && url.endsWith(p));
  if (at < 0) return false;
  provoked.splice(at, 1);
  return true;
}

function watch(page, label) {
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // The signed-out session probe is the one refusal in the normal flow.
    if (m.location().url.endsWith('/api/v1/auth/session') && m.text().includes('401')) return;
    const status = Number((m.text().match(/status of (\d+)/) || [])[1]);
    if (status && takeProvoked(status, m.location().url)) return;
    problems.push(`${label}: console error: ${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => problems.push(`${label}: uncaught: ${e.message}`));
  page.on('request', (r) => {
    const url = r.url();
    if (!url.startsWith('data:') && new URL(url).origin !== origin) problems.push(`${label}: a request to ${url}`);
  });
  page.on('response', (r) => {
    const probe = r.status() === 401 && r.url().endsWith('/api/v1/auth/session');
    if (r.status() >= 400 && !probe && !takeProvoked(r.status(), r.url())) problems.push(`${label}: ${r.status()} from ${r.request().method()} ${r.url()}`);
  });
}

/** Waits for the page titled `heading`, then checks it in light and dark;
 * `picture`: whether a screenshot may be taken (never of a page showing a secret). */
async function arrive(page, heading, name, picture = true) {
  await page.getByRole('heading', { level: 1, name: heading }).waitFor({ timeout: 15000 });
  pages.push(name);
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']).analyze();
    const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    axe[`${name} (${scheme})`] = bad.length;
    for (const v of bad) problems.push(`${name} (${scheme}): axe ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join('; ')})`);
    if (config.screenshots && picture) {
      mkdirSync(config.screenshots, { recursive: true });
      await page.screenshot({ path: `${config.screenshots}/${name}-${scheme}.png`, fullPage: true });
    }
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

/** A browser context as a person's own browser, watched and checked. */
async function person(browser, label) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // What the page itself sees of its Content Security Policy.
  await context.addInitScript(() => {
    window.cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  const page = await context.newPage();
  watch(page, label);
  return page;
}

async function cspSeen(page, label) {
  for (const v of await page.evaluate(() => window.cspViolations)) problems.push(`${label} saw a CSP violation: ${v}`);
}

/** The first admin signs in, chooses a password, enrolls TOTP, signs out and in again. */
async function firstAdmin(browser) {
  const page = await person(browser, 'admin');
  await page.goto(config.console);
  await arrive(page, 'Sign in to Tether', 'sign-in');
  await page.getByLabel('Name').fill('admin');
  await page.getByLabel('Password', { exact: true }).fill(config.admin_password);
  await page.getByLabel('Password', { exact: true }).press('Enter');

  await arrive(page, 'Choose your own password', 'password');
  const own = 'a long and private admin passphrase';
  await page.getByLabel('New password', { exact: true }).fill(own);
  await page.getByLabel('Confirm the new password').fill(own);
  await page.getByRole('button', { name: 'Set my password' }).click();

  await arrive(page, 'Set up your authenticator', 'totp', false);
  const secret = await page.locator('[data-secret]').getAttribute('data-secret');
  const qrWidth = await page.locator('img.qr').evaluate((img) => img.complete && img.naturalWidth);
  if (!qrWidth) problems.push('the TOTP QR code did not load');
  const code = page.getByLabel('Code from the app');
  for (const [attr, want] of [['autocomplete', 'one-time-code'], ['inputmode', 'numeric']]) {
    if (await code.getAttribute(attr) !== want) problems.push(`the TOTP code field lacks ${attr}="${want}"`);
  }
  await code.fill(await unusedCode(secret));
  await page.getByRole('button', { name: 'Confirm' }).click();

  await arrive(page, 'Keep your recovery codes', 'recovery-codes', false);
  const codes = await page.getByRole('list', { name: 'Recovery codes' }).getByRole('listitem').count();
  if (codes !== 10) problems.push(`${codes} recovery codes shown, not 10`);
  await page.getByRole('button', { name: /continue/ }).click();

  await arrive(page, 'Dashboard', 'dashboard');
  if (!await page.getByText('unsealed').count()) problems.push('the dashboard does not show the vault unsealed');

  // Sign out, and in again with the second factor (the next step's code:
  // the current one was spent confirming) — by keyboard alone from here:
  // Tab to each field, type, Enter; then to a page and a task submitted.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await arrive(page, 'Sign in to Tether', 'signed-out', false);
  await tabTo(page, page.getByLabel('Name'));
  await page.keyboard.type('admin');
  await tabTo(page, page.getByLabel('Password', { exact: true }));
  await page.keyboard.type(own);
  await tabTo(page, page.getByLabel('Authenticator code (if your account has one)'));
  await page.keyboard.type(await unusedCode(secret));
  await page.keyboard.press('Enter');
  await arrive(page, 'Dashboard', 'dashboard-again', false);
  await tabTo(page, page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Tasks', exact: true }));
  await page.keyboard.press('Enter');
  await arrive(page, 'Tasks', 'keyboard-tasks', false);
  await tabTo(page, page.getByLabel('Kind'));
  await page.keyboard.type('echo');
  await tabTo(page, page.getByLabel('Input (JSON)'));
  await page.keyboard.type('{"keys": "only"}');
  await tabTo(page, page.getByRole('button', { name: 'Submit' }));
  await page.keyboard.press('Enter');
  await arrive(page, 'Task echo', 'keyboard-task', false);

  // The gateway was used before the walk: its tokens are drawn per day.
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'LLM', exact: true }).click();
  const chart = page.getByRole('img', { name: /tokens per day: \d+ tokens from / });
  await chart.waitFor({ timeout: 10000 });
  await arrive(page, 'LLM gateway', 'llm-usage');
  await cspSeen(page, 'admin');
}

/** Presses Tab until `target` has the focus (at most `limit` times); every
 * element the focus passes on the way must show it. */
async function tabTo(page, target, limit = 80) {
  const wanted = await target.elementHandle();
  for (let i = 0; i < limit; i += 1) {
    await page.keyboard.press('Tab');
    const [reached, visible, what] = await page.evaluate((el) => {
      const at = document.activeElement;
      const style = getComputedStyle(at);
      // Past the last element the focus leaves the page (body), then wraps to the first.
      const ring = at === document.body || (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0) || style.boxShadow !== 'none';
      return [at === el, ring, `${at.tagName.toLowerCase()} "${(at.getAttribute('aria-label') || at.textContent || at.name || '').trim().slice(0, 40)}"`];
    }, wanted);
    if (!visible) problems.push(`the keyboard focus is not visible on ${what}`);
    if (reached) return;
  }
  throw new Error(`${limit} presses of Tab did not reach ${target}`);
}

/** Two officers, each in their own browser, unseal together; each sees the other's share arrive. */
async function unsealCeremony(browser) {
  const [first, second] = [await person(browser, 'officer 1'), await person(browser, 'officer 2')];
  for (const page of [first, second]) {
    await page.goto(config.console);
  }
  await arrive(first, 'The appliance is sealed', 'sealed');
  await second.getByRole('heading', { level: 1, name: 'The appliance is sealed' }).waitFor();
  await first.getByLabel('Your share').fill(config.shares[0]);
  await first.getByRole('button', { name: 'Give my share' }).click();
  // The second officer's page follows without a reload.
  await second.getByText('1 of 2 shares given.').waitFor({ timeout: 10000 });
  if (await first.getByLabel('Your share').inputValue() !== '') problems.push('the share stayed in the field');
  await arrive(second, 'The appliance is sealed', 'sealed-one-share');
  await second.getByLabel('Your share').fill(config.shares[1]);
  await second.getByRole('button', { name: 'Give my share' }).click();
  // Unsealed: both browsers go on to the sign-in page by themselves.
  await arrive(first, 'Sign in to Tether', 'unsealed-sign-in', false);
  await second.getByRole('heading', { level: 1, name: 'Sign in to Tether' }).waitFor();
  await cspSeen(first, 'officer 1');
  await cspSeen(second, 'officer 2');
}

/** First boot: the setup wizard with the printed code, the shares handed
 * out, the unseal, then the first admin's first sign-in. */
async function firstBoot(browser) {
  const page = await person(browser, 'operator');
  await page.goto(config.console);
  await arrive(page, 'Set up this appliance', 'setup-code');
  expectRefusal(401, '/api/v1/setup/code');
  await page.getByLabel('Setup code', { exact: true }).fill('0000-0000-0000');
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.getByRole('alert').filter({ hasText: 'setup code is wrong' }).waitFor();
  await page.getByLabel('Setup code', { exact: true }).fill(config.setup_code);
  await page.getByRole('button', { name: 'Continue' }).click();

  await arrive(page, 'Name the appliance', 'setup-names');
  const names = await page.getByLabel('Names and IP addresses').inputValue();
  if (!names.includes('127.0.0.1')) problems.push(`the suggested names lack the address in use: ${names}`);
  await page.getByRole('button', { name: 'Continue' }).click();

  await arrive(page, 'The first admin', 'setup-admin');
  const own = 'the first admin chose this passphrase';
  await page.getByLabel('Password for admin').fill(own);
  await page.getByLabel('Confirm the password').fill(own);
  await page.getByRole('button', { name: 'Continue' }).click();

  await arrive(page, 'How the vault unseals', 'setup-unseal');
  if (config.unseal === 'key_file') {
    await firstBootWithAKeyFile(page);
    return;
  }
  await page.getByRole('button', { name: 'Set up the appliance' }).click();
  const shares = [];
  for (let i = 1; i <= 3; i += 1) {
    const heading = `Share for officer ${i} of 3`;
    if (i === 1) await arrive(page, heading, 'setup-share', false);
    else await page.getByRole('heading', { level: 1, name: heading }).waitFor();
    shares.push(await page.locator('[data-share]').getAttribute('data-share'));
    await page.getByRole('button', { name: i === 3 ? 'All shares are handed out' : 'Next officer' }).click();
  }
  await arrive(page, 'The appliance is set up', 'setup-done');
  await page.getByRole('button', { name: 'Continue to the console' }).click();

  // Served by the appliance proper now (the same key, so the same pin): sealed.
  await arrive(page, 'The appliance is sealed', 'sealed');
  for (const share of shares.slice(0, 2)) {
    await page.getByLabel('Your share').fill(share);
    await page.getByRole('button', { name: 'Give my share' }).click();
  }
  await arrive(page, 'Sign in to Tether', 'sign-in');
  await page.getByLabel('Name').fill('admin');
  await page.getByLabel('Password', { exact: true }).fill(own);
  await page.getByRole('button', { name: 'Sign in' }).click();
  // The password was chosen in the wizard: only the authenticator is left.
  await arrive(page, 'Set up your authenticator', 'totp', false);
  const secret = await page.locator('[data-secret]').getAttribute('data-secret');
  await page.getByLabel('Code from the app').fill(await unusedCode(secret));
  await page.getByRole('button', { name: 'Confirm' }).click();
  await arrive(page, 'Keep your recovery codes', 'recovery-codes', false);
  await page.getByRole('button', { name: /continue/ }).click();
  await arrive(page, 'Dashboard', 'dashboard', false);
  await cspSeen(page, 'operator');
  // For the walk's second part, after the restart: kept in a file of the
  // test's own, never printed.
  if (config.handoff) writeFileSync(config.handoff, JSON.stringify({ password: own, secret, shares, last_step: lastStep }));
}

/** The end of first boot when the vault unseals with a key file: it is
 * downloaded once, and the sealed page takes it back from its "media". */
async function firstBootWithAKeyFile(page) {
  await page.getByLabel('a key file, downloaded now and kept on separate media').check();
  await page.getByRole('button', { name: 'Set up the appliance' }).click();
  await arrive(page, 'The unseal key file', 'setup-key-file');
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download the key file' }).click()]);
  const keyFile = await download.path();
  await page.getByRole('button', { name: 'The key file is saved' }).click();
  await arrive(page, 'The appliance is set up', 'setup-done', false);
  await page.getByRole('button', { name: 'Continue to the console' }).click();
  await arrive(page, 'The appliance is sealed', 'sealed-key-file');
  await page.getByLabel('Key file').setInputFiles(keyFile);
  await page.getByRole('button', { name: 'Unseal' }).click();
  await arrive(page, 'Sign in to Tether', 'sign-in', false);
  await cspSeen(page, 'operator');
  writeFileSync(config.handoff, JSON.stringify({ key_file: readFileSync(keyFile, 'utf8') }));
}

/** Goes to a page by the main navigation. */
async function visit(page, link, heading, name, picture = true) {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: link, exact: true }).click();
  await arrive(page, heading, name, picture);
}

/** The re-authentication dialog a sensitive action opens: the password
 * again, and a fresh code. */
async function confirmItIsYou(page, handoff) {
  const dialog = page.getByRole('dialog', { name: 'Confirm it is you' });
  await dialog.waitFor();
  await dialog.getByLabel('Password').fill(handoff.password);
  await dialog.getByLabel('Authenticator code').fill(await unusedCode(handoff.secret));
  await dialog.getByRole('button', { name: 'Confirm' }).click();
}

/** The restarted appliance, operated: two officers unseal it from their own
 * browsers, the admin enrolls a real worker, runs a task on it, revokes it,
 * makes and revokes an API token (re-authenticating), makes a virtual key,
 * runs the security check, verifies and exports the audit log, and is
 * signed out when idle. */
async function operate(browser) {
  const handoff = JSON.parse(readFileSync(config.handoff, 'utf8'));
  lastStep = handoff.last_step;
  const [first, second] = [await person(browser, 'officer 1'), await person(browser, 'officer 2')];
  for (const p of [first, second]) await p.goto(config.console);
  await arrive(first, 'The appliance is sealed', 'restarted-sealed', false);
  await second.getByRole('heading', { level: 1, name: 'The appliance is sealed' }).waitFor();
  await first.getByLabel('Your share').fill(handoff.shares[0]);
  await first.getByRole('button', { name: 'Give my share' }).click();
  await second.getByText(/^1 of 2 shares given/).waitFor({ timeout: 10000 });
  await second.getByLabel('Your share').fill(handoff.shares[1]);
  await second.getByRole('button', { name: 'Give my share' }).click();
  await second.getByRole('heading', { level: 1, name: 'Sign in to Tether' }).waitFor();
  await cspSeen(second, 'officer 2');
  await second.context().close();

  const page = first;
  await arrive(page, 'Sign in to Tether', 'restarted-sign-in', false);
  await page.getByLabel('Name').fill('admin');
  await page.getByLabel('Password', { exact: true }).fill(handoff.password);
  await page.getByLabel('Authenticator code (if your account has one)').fill(await unusedCode(handoff.secret));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await arrive(page, 'Dashboard', 'dashboard');
  // The overview arrives over the event stream.
  await page.getByText(/^now \d+ tasks/).first().waitFor({ timeout: 10000 });

  // A real worker enrolls with the join string the console shows.
  await visit(page, 'Workers', 'Workers', 'workers');
  await page.getByRole('button', { name: 'Make a join string' }).click();
  const join = await page.getByRole('region', { name: 'Join string' }).locator('code').textContent();
  const worker = spawn(config.tether, ['worker', '--join', join, '--state-dir', config.worker_state], { stdio: 'ignore' });
  try {
    const revoke = page.getByRole('button', { name: /^Revoke / });
    await revoke.waitFor({ timeout: 30000 });

    // A task, submitted here, runs on it; its page follows it to the end.
    await visit(page, 'Tasks', 'Tasks', 'tasks');
    await page.getByLabel('Kind').fill('echo');
    await page.getByLabel('Input (JSON)').fill('{"walk": true}');
    await page.getByRole('button', { name: 'Submit' }).click();
    await page.getByRole('heading', { level: 1, name: 'Task echo' }).waitFor();
    await page.locator('#task-state').getByText('succeeded').waitFor({ timeout: 30000 });
    await arrive(page, 'Task echo', 'task');

    await visit(page, 'Workers', 'Workers', 'workers-enrolled');
    page.once('dialog', (d) => d.accept());
    await page.getByRole('button', { name: /^Revoke / }).click();
    await page.getByRole('cell', { name: 'revoked' }).waitFor({ timeout: 10000 });
  } finally {
    worker.kill();
  }

  // An API token: creating one asks for the password again (and a code).
  await visit(page, 'People', 'People', 'people');
  await visit(page, 'API tokens', 'API tokens', 'tokens');
  await page.getByRole('button', { name: 'Create token' }).click();
  await confirmItIsYou(page, handoff);
  const made = page.getByRole('region', { name: /^API token / });
  await made.waitFor({ timeout: 10000 });
  const tokenId = (await made.getAttribute('aria-label')).replace('API token ', '');
  await page.getByRole('button', { name: `Revoke token ${tokenId}` }).click();
  await page.getByRole('button', { name: `Revoke token ${tokenId}` }).waitFor({ state: 'detached', timeout: 10000 });

  await visit(page, 'LLM', 'LLM gateway', 'llm');
  await page.getByRole('button', { name: 'Create key' }).click();
  await page.getByRole('region', { name: /^Virtual key / }).waitFor({ timeout: 10000 });

  await visit(page, 'Security', 'Security', 'security', false);
  await page.getByRole('button', { name: 'Run the security check' }).click();
  await page.getByText(/\d+ \/ 100 · grade [A-F]/).waitFor({ timeout: 20000 });
  await arrive(page, 'Security', 'security');
  // The dashboard shows the score the check just gave.
  await visit(page, 'Dashboard', 'Dashboard', 'dashboard-scored', false);
  await page.getByText(/^\d+ · [A-F]$/).waitFor({ timeout: 10000 });

  await visit(page, 'Audit', 'Audit log', 'audit-search', false);
  await page.getByRole('button', { name: 'Verify the chain' }).click();
  await page.getByText(/^Intact: \d+ records/).waitFor({ timeout: 20000 });
  // The checkpoint first: the export made after it must hold what it signed.
  const [saved] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Signed checkpoint' }).click()]);
  const checkpoint = JSON.parse(readFileSync(await saved.path(), 'utf8'));
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: /^Export/ }).click()]);
  const lines = readFileSync(await download.path(), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  if (lines.length < 20 || !lines.some((l) => l.event_type === 'worker.revoked')) problems.push(`the export has ${lines.length} lines, no worker.revoked`);
  const covered = lines.find((l) => l.seq === checkpoint.covers_seq);
  if (!covered || covered.hash !== checkpoint.covers_hash) problems.push(`the checkpoint of seq ${checkpoint.covers_seq} does not match the export`);
  await page.getByLabel('Action').fill('worker.');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.getByRole('cell', { name: 'worker.revoked' }).first().waitFor({ timeout: 10000 });
  await arrive(page, 'Audit log', 'audit');
  await visit(page, 'Models', 'Models', 'models');
  await visit(page, 'Vault', 'Vault', 'vault');
  // Rekey: two officers' shares prove the key in use; three new ones come
  // back, each shown once, none of them an old one.
  await page.getByLabel('Current share 1').fill(handoff.shares[0]);
  await page.getByLabel('Current share 2').fill(handoff.shares[2]);
  await page.getByRole('button', { name: 'Change the unseal key' }).click();
  await confirmItIsYou(page, handoff);
  const fresh = page.getByRole('region', { name: /^New share / });
  const refused = page.locator('form[aria-label="Change how the vault unseals"] [role=alert]').filter({ hasText: /./ });
  await fresh.first().or(refused).waitFor({ timeout: 20000 });
  if (await refused.count()) throw new Error(`the rekey was refused: ${await refused.textContent()}`);
  const newShares = await fresh.locator('code').allTextContents();
  if (newShares.length !== 3 || newShares.some((n) => handoff.shares.includes(n))) problems.push(`rekey gave ${newShares.length} shares, or an old one`);
  // The new shares are secrets too: the test looks for them in the logs.
  writeFileSync(config.handoff, JSON.stringify({ ...handoff, rekeyed: newShares, last_step: lastStep }));
  await arrive(page, 'Vault', 'vault-rekeyed', false);
  await visit(page, 'PKI', 'PKI', 'pki');
  const [crl] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download the CRL (DER)' }).click()]);
  // A DER SEQUENCE, holding the revoked worker's serial.
  if (readFileSync(await crl.path())[0] !== 0x30) problems.push('the CRL download is not DER');
  await visit(page, 'Backups', 'Backups', 'backups');
  await visit(page, 'Alerts', 'Alerts', 'alerts');
  // Not the firmware image here: the page says so, and offers no upload.
  await visit(page, 'Firmware', 'Firmware', 'firmware', false);
  if (!(await page.getByText('does not run from the firmware image').count())) problems.push('the firmware page does not say this host runs no image');
  await visit(page, 'Network and time', 'Network and time', 'network', false);
  if (!(await page.getByText('the network and the clock are this host').count())) problems.push('the network page does not say this host keeps its own network');

  // Idle: the warning comes; staying works once; then the sign-out.
  const warning = page.getByRole('alertdialog');
  await warning.waitFor({ timeout: 90000 });
  await warning.getByRole('button', { name: 'Stay signed in' }).click();
  await warning.waitFor({ state: 'detached', timeout: 10000 });
  await page.getByText('You were signed out because nothing was asked').waitFor({ timeout: 90000 });
  await arrive(page, 'Sign in to Tether', 'idle-signed-out', false);
  await cspSeen(page, 'admin');
}

/** Pages and actions a role must not be shown, by the names people see. */
const NOT_FOR = {
  viewer: [/^Submit$/, /^Make a join string$/, /^Revoke /, /^Seal/, /^Rotate the data key$/, /^Change the unseal key$/, /^Make and download/, /^Create key$/,
    /^Add$/, /^Approve/, /^Disable/, /^Verify the chain$/, /^Store$/],
  auditor: [/^Submit$/, /^Make a join string$/, /^Revoke [0-9a-f]/, /^Seal/, /^Rotate the data key$/, /^Change the unseal key$/, /^Make and download/,
    /^Create key$/, /^Add$/, /^Approve/, /^Disable/, /^Store$/],
};

/** A viewer and an auditor each sign in and go through every page they
 * are offered: no action their role lacks is there, and what they craft by
 * hand the API refuses. */
async function roles(browser) {
  for (const who of config.people) {
    const page = await person(browser, who.role);
    await page.goto(config.console);
    await page.getByRole('heading', { level: 1, name: 'Sign in to Tether' }).waitFor();
    await page.getByLabel('Name').fill(who.name);
    await page.getByLabel('Password', { exact: true }).fill(who.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { level: 1, name: 'Choose your own password' }).waitFor();
    const own = `${who.name} keeps this passphrase to herself`;
    await page.getByLabel('New password', { exact: true }).fill(own);
    await page.getByLabel('Confirm the new password').fill(own);
    await page.getByRole('button', { name: 'Set my password' }).click();
    await arrive(page, 'Dashboard', `${who.role}-dashboard`, false);
    const nav = page.getByRole('navigation', { name: 'Main' }).getByRole('link');
    const offered = await nav.allTextContents();
    if (offered.join(',') !== who.pages.join(',')) problems.push(`${who.role} is offered ${offered}, not ${who.pages}`);
    for (const link of offered) {
      const target = nav.getByText(link, { exact: true });
      const path = (await target.getAttribute('href')).replace('#/', '');
      await target.click();
      await page.locator(`main[data-page="${path}"]`).waitFor();
      pages.push(`${who.role}-${path}`);
      for (const control of await page.getByRole('button').all()) {
        const name = (await control.getAttribute('aria-label')) || (await control.textContent()).trim();
        if (NOT_FOR[who.role].some((rule) => rule.test(name))) problems.push(`${who.role} is shown "${name}" on ${link}`);
      }
    }
    for (const [method, path] of who.crafted) {
      expectRefusal(403, path);
      const status = await page.evaluate(async ([m, p]) => {
        const session = await (await fetch('/api/v1/auth/session')).json();
        const answer = await fetch(p, { method: m, headers: { 'content-type': 'application/json', 'x-csrf-token': session.csrf_token }, body: '{}' });
        return answer.status;
      }, [method, path]);
      if (status !== 403) problems.push(`${who.role}: ${method} ${path} answered ${status}, not 403`);
    }
    await cspSeen(page, who.role);
    await page.context().close();
  }
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', `--ignore-certificate-errors-spki-list=${config.spki}`],
});
try {
  const scenarios = { 'first-admin': firstAdmin, unseal: unsealCeremony, setup: firstBoot, operate, roles };
  const scenario = scenarios[config.scenario];
  if (!scenario) throw new Error(`no scenario ${config.scenario}`);
  await scenario(browser);
} catch (e) {
  problems.push(`the walk stopped: ${e.message}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify({ problems, pages, axe }));
process.exit(problems.length ? 1 : 0);
