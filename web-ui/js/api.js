// The public JSON API, as the CLI uses it, over the console's cookie
// session (HttpOnly: no script ever holds it). The CSRF token the session
// answers with goes on every state-changing request; it lives in this
// module's memory only.

let csrf = null;
let activity = () => {};

export function setCsrf(token) { csrf = token; }

/** `listener(at)` hears of every answered request: each one keeps the
 * session alive on the appliance, so the idle warning starts over. */
export function onActivity(listener) { activity = listener; }

/** A problem code a refused request may be retried after re-authenticating. */
export const NEEDS_FRESH_LOGIN = 'reauthentication_required';

/** Why a request failed: the problem's stable `code` and `detail`. */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail || problem.title || `the appliance answered ${status}`);
    this.status = status;
    this.code = problem.code || '';
    this.retryAfter = retryAfter;
  }
}

/** Sends a request; resolves to the JSON answer (or null; a Blob if `as`
 * is 'blob'), rejects with ApiError. */
export async function call(method, path, body, as = 'json') {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['x-csrf-token'] = csrf;
  const sent = Date.now();
  const response = await fetch(path, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status !== 401) activity(sent);
  if (response.ok && as === 'blob') return response.blob();
  const text = await response.text();
  const type = (response.headers.get('content-type') || '').split(';')[0].trim();
  const json = type === 'application/json' || type.endsWith('+json');
  const answer = text && json ? JSON.parse(text) : (text || null);
  if (!response.ok) {
    const retry = Number(response.headers.get('retry-after')) || null;
    throw new ApiError(response.status, answer || {}, retry);
  }
  return answer;
}

/** Uploads `file` as the request's body (its length declared by the
 * browser); resolves to the JSON answer. */
export async function upload(path, file) {
  const headers = { accept: 'application/json', 'content-type': 'application/octet-stream' };
  if (csrf) headers['x-csrf-token'] = csrf;
  const sent = Date.now();
  const response = await fetch(path, { method: 'POST', headers, credentials: 'same-origin', body: file });
  activity(sent);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, answer, null);
  return answer;
}

export const get = (path) => call('GET', path);
export const del = (path) => call('DELETE', path);
export const put = (path, body = {}) => call('PUT', path, body);
export const post = (path, body = {}) => call('POST', path, body);
