// Building the page: elements made one by one, text always as text. No
// HTML strings are ever parsed (the CSP's Trusted Types would refuse them).

/** Children as given, nested lists flattened, the absent (null,
 * undefined, false: a section a role may not see) left out. */
const present = (children) => children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);

/** An element: `attrs` are attributes, except `on` (event listeners). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'on') {
      for (const [event, listener] of Object.entries(value)) el.addEventListener(event, listener);
    } else if (value === true) {
      el.setAttribute(name, '');
    } else if (value !== false && value !== null && value !== undefined) {
      el.setAttribute(name, String(value));
    }
  }
  el.append(...present(children));
  return el;
}

/** Replaces the main area with `children`, titles the page, and moves focus there. */
export function show(title, ...children) {
  const main = document.getElementById('main');
  document.title = `${title} · Tether`;
  main.replaceChildren(...present(children));
  main.focus();
}

/** A labelled input; `hint` is read out with it. */
export function field(label, attrs, hint) {
  const id = attrs.id || `f-${attrs.name}`;
  const hintId = hint ? `${id}-hint` : null;
  return h('div', { class: 'field' }, h('label', { for: id }, label),
    hint ? h('span', { class: 'hint', id: hintId }, hint) : null,
    h('input', { id, 'aria-describedby': hintId, ...attrs }));
}

/** A form: `submit` gets its fields; its errors show in the form's alert.
 * While it is sent, its fields are read-only: what someone types meanwhile
 * would be lost to a reset by `submit`, or sent by the next click as
 * something they did not mean (read-only, not disabled, so focus stays). */
export function form(label, children, submit) {
  const error = h('p', { class: 'error', role: 'alert' });
  const submitButton = children.find((c) => c.tagName === 'BUTTON');
  const el = h('form', { 'aria-label': label, novalidate: true }, error, ...children);
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const values = Object.fromEntries(new FormData(el));
    const held = [...el.querySelectorAll('input, textarea')].filter((f) => !f.readOnly);
    for (const f of held) f.readOnly = true;
    if (submitButton) submitButton.disabled = true;
    try {
      await submit(values, error);
    } catch (e) {
      if (!e.cancelled) error.textContent = e.message;
    } finally {
      for (const f of held) f.readOnly = false;
      if (submitButton) submitButton.disabled = false;
    }
  });
  return el;
}

/** A short message for assistive technology and the eye. */
export function announce(text) {
  const status = document.getElementById('status');
  status.textContent = text;
  setTimeout(() => { if (status.textContent === text) status.textContent = ''; }, 6000);
}

/** A table: `columns` are headings, `rows` arrays of cells (text or
 * elements); `empty` is said when there are no rows. */
export function table(caption, columns, rows, empty = 'None yet.') {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'scroll' }, h('table', {},
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) => h('td', {}, c)))))));
}

/** A button that runs `action` (disabled while it runs; errors announced). */
export function button(label, action, attrs = {}) {
  const el = h('button', { type: 'button', ...attrs });
  el.textContent = label;
  el.addEventListener('click', async () => {
    el.disabled = true;
    try {
      await action();
    } catch (e) {
      if (!e.cancelled) announce(e.message);
    } finally {
      el.disabled = false;
    }
  });
  return el;
}

/** A time as the reader's clock shows it (the ISO text on hover). */
export function when(iso) {
  if (!iso) return '—';
  return h('time', { datetime: iso, title: iso }, new Date(iso).toLocaleString());
}

/** A section of a page with its heading. */
export function section(title, ...children) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return h('section', { 'aria-labelledby': id }, h('h2', { id }, title), ...children);
}

/** Something shown once (a new token, a join string): the text, a copy
 * button, and the warning that it will not be shown again. */
export function shownOnce(label, secret) {
  const text = h('code', { class: 'secret' }, secret);
  return h('div', { class: 'card once', role: 'region', 'aria-label': label },
    h('p', {}, h('strong', {}, label), ' — shown once: copy it now.'),
    h('p', {}, text),
    button('Copy', async () => {
      await navigator.clipboard.writeText(secret);
      announce('Copied.');
    }, { class: 'secondary' }));
}

/** A select with its label; `options` are [value, text] pairs. */
export function choice(label, name, options, hint) {
  const id = `f-${name}`;
  return h('div', { class: 'field' }, h('label', { for: id }, label),
    hint ? h('span', { class: 'hint', id: `${id}-hint` }, hint) : null,
    h('select', { id, name, 'aria-describedby': hint ? `${id}-hint` : null },
      options.map(([value, text]) => h('option', { value }, text))));
}

/** Hands `blob` to the browser as a download named `name`. */
export function saveAs(name, blob) {
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
