// The public JSON API, as the CLI uses it, over the console's cookie
// session (HttpOnly: no script ever holds it). The CSRF token the session
// answers with goes on every state-changing request; it lives in this
// module's memory only.

let csrf = null;

export function setCsrf(token) { csrf = token; }

/** Why a request failed: the problem's stable `code` and `detail`. */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail || problem.title || `the appliance answered ${status}`);
    this.status = status;
    this.code = problem.code || '';
    this.retryAfter = retryAfter;
  }
}

/** Sends a request; resolves to the JSON answer (or null), rejects with ApiError. */
export async function call(method, path, body) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['x-csrf-token'] = csrf;
  const response = await fetch(path, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const answer = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const retry = Number(response.headers.get('retry-after')) || null;
    throw new ApiError(response.status, answer || {}, retry);
  }
  return answer;
}

export const get = (path) => call('GET', path);
export const post = (path, body = {}) => call('POST', path, body);
