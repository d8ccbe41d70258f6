// The console's one event stream (GET /api/v1/events): pages subscribe to
// the kinds they show (`overview`, `audit`, `vault`); leaving a page drops
// its subscriptions, signing out closes the stream.

let source = null;
const listeners = new Map();

/** Calls `listener(data)` for each event of `kind` until the page changes. */
export function subscribe(kind, listener) {
  if (!source) {
    source = new EventSource('/api/v1/events');
    for (const k of ['overview', 'audit', 'vault']) {
      source.addEventListener(k, (event) => {
        const data = JSON.parse(event.data);
        for (const l of listeners.get(k) || []) l(data);
      });
    }
  }
  if (!listeners.has(kind)) listeners.set(kind, new Set());
  listeners.get(kind).add(listener);
}

/** A new page: the old one's listeners go. */
export function leavePage() { listeners.clear(); }

export function closeLive() {
  listeners.clear();
  if (source) source.close();
  source = null;
}
