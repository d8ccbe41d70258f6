// The machine's network and time on the firmware image: its host name, DHCP
// or a static address, and the site's time servers. The appliance keeps
// them and the machine applies them at once (and at every boot); a new
// address moves the console there.

import { get, put } from '../api.js';
import { sensitive } from '../guard.js';
import { announce, choice, field, form, h, section, show } from '../dom.js';

const SITE = '/api/v1/system/site';

export async function network() {
  const view = await get(SITE);
  if (!view.on_the_image) {
    return show('Network and time', h('h1', {}, 'Network and time'), section('This host', h('p', {},
      'This tether does not run from the firmware image: the network and the clock are this host\'s own, set up by its administrator.')));
  }
  const net = view.network || {};
  const mode = choice('Address', 'mode', [['dhcp', 'By DHCP'], ['static', 'Static']],
    'A static address replaces the one DHCP gives; the console then answers at the new address only.');
  mode.querySelector('select').value = view.network ? 'static' : 'dhcp';
  show('Network and time', h('h1', {}, 'Network and time'),
    section('Settings', form('Network and time settings', [
      field('Host name', { name: 'hostname', value: view.hostname || '', placeholder: 'tether', autocomplete: 'off' },
        'Letters, digits and hyphens, e.g. tether-01. Empty: tether.'),
      mode,
      field('Static address', { name: 'address', value: net.address || '', placeholder: '192.168.10.5/24', autocomplete: 'off' },
        'With its prefix length. Only with a static address.'),
      field('Gateway', { name: 'gateway', value: net.gateway || '', placeholder: '192.168.10.1', autocomplete: 'off' }),
      field('DNS servers', { name: 'dns', value: (net.dns || []).join(' '), placeholder: '192.168.10.1', autocomplete: 'off' },
        'Separated by spaces.'),
      field('Time servers (NTP)', { name: 'ntp', value: (view.ntp || []).join(' '), placeholder: 'ntp.site.example', autocomplete: 'off' },
        'The site\'s own, separated by spaces. None: the clock runs from the machine\'s own (RTC) alone.'),
      h('button', { type: 'submit' }, 'Save and apply'),
    ], async (values) => {
      const words = (text) => (text || '').split(/\s+/).filter(Boolean);
      const site = { hostname: values.hostname.trim() || null, ntp: words(values.ntp) };
      if (values.mode === 'static') {
        site.network = { address: values.address.trim(), gateway: values.gateway.trim() || null, dns: words(values.dns) };
      }
      const saved = await sensitive('network_manage', () => put(SITE, site));
      const moved = saved.network ? saved.network.address.split('/')[0] : null;
      announce(moved && moved !== location.hostname
        ? `Saved: the machine takes the address ${moved} now; open https://${moved}:${location.port || 443}/ to go on.`
        : 'Saved: the machine applies the settings now.');
    })));
}
