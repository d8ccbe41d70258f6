// The firmware image: what runs, and an update uploaded here. The appliance
// checks the bundle as `tether update apply` does (signature, every digest,
// no downgrade) before anything is written; the machine then writes it to
// the other slot and restarts into it, coming back by itself if it fails.

import { get, upload } from '../api.js';
import { sensitive } from '../guard.js';
import { announce, form, h, section, show } from '../dom.js';

const STATUS = '/api/v1/system/firmware';
let refresh = null;

export async function firmware(session) {
  clearTimeout(refresh);
  const view = await get(STATUS);
  if (!view.on_the_image) {
    return show('Firmware', h('h1', {}, 'Firmware'), section('Updates', h('p', {},
      'This tether does not run from the firmware image, so it has no slots to update: update a host with ',
      h('code', {}, 'tether install --upgrade BUNDLE'), '.')));
  }
  const update = view.update;
  const underWay = update && update.state !== 'failed';
  show('Firmware', h('h1', {}, 'Firmware'),
    section('Running', h('p', {}, 'Tether ', h('strong', {}, view.version), ' (commit ', h('code', {}, view.commit.slice(0, 12)), ').')),
    update ? progressSection(update) : null,
    underWay ? null : uploadSection(session));
  // While the machine works on it, the page follows (until it restarts).
  if (underWay) {
    refresh = setTimeout(() => { if (location.hash.startsWith('#/firmware')) firmware(session).catch(() => {}); }, 2000);
  }
}

function progressSection(update) {
  const percent = update.total ? Math.floor((update.done * 100) / update.total) : 0;
  const what = {
    'handed over': 'Checked here; waiting for the machine to start writing it.',
    restarting: 'Written and read back: the machine restarts into it now. It is kept once the appliance on it is healthy; otherwise the running version comes back by itself. Unseal the vault after the restart.',
    failed: `Not installed: ${update.error || 'the update failed'}. The running version stays.`,
  }[update.state] || `${update.state}: ${percent}%`;
  return section(`Update to ${update.version}`,
    update.total && update.state !== 'restarting' && update.state !== 'failed'
      ? h('progress', { max: 100, value: percent, 'aria-label': `${update.state}, ${percent}%` }) : null,
    h('p', { role: 'status' }, what));
}

function uploadSection(session) {
  return section('Install an update', form('Upload a firmware update', [
    h('div', { class: 'field' }, h('label', { for: 'f-update' }, 'Release bundle'),
      h('span', { class: 'hint', id: 'f-update-hint' },
        'tether-VERSION-COMMIT.bundle, with the firmware image in it. Its signature, every digest and its version are checked before anything is written; the machine then restarts into it.'),
      h('input', { id: 'f-update', name: 'bundle', type: 'file', accept: '.bundle', required: true, 'aria-describedby': 'f-update-hint' })),
    h('button', { type: 'submit' }, 'Upload and install'),
  ], async (values) => {
    const file = values.bundle;
    if (!file || !file.size) throw new Error('Choose the release bundle first.');
    announce(`Uploading ${file.name} (${(file.size / 2 ** 20).toFixed(1)} MiB)…`);
    const view = await sensitive('firmware_update', () => upload('/api/v1/system/firmware/update', file));
    announce(`Tether ${view.update.version} is checked and handed over: the machine writes it, then restarts.`);
    await firmware(session);
  }));
}
