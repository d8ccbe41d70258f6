// Building the page: elements made one by one, text always as text. No
// HTML strings are ever parsed (the CSP's Trusted Types would refuse them).

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
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** Replaces the main area with `children`, titles the page, and moves focus there. */
export function show(title, ...children) {
  const main = document.getElementById('main');
  document.title = `${title} · Tether`;
  main.replaceChildren(...children);
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

/** A form: `submit` gets its fields; its errors show in the form's alert. */
export function form(label, children, submit) {
  const error = h('p', { class: 'error', role: 'alert' });
  const button = children.find((c) => c.tagName === 'BUTTON');
  const el = h('form', { 'aria-label': label, novalidate: true }, error, ...children);
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    if (button) button.disabled = true;
    try {
      await submit(Object.fromEntries(new FormData(el)), error);
    } catch (e) {
      error.textContent = e.message;
    } finally {
      if (button) button.disabled = false;
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
