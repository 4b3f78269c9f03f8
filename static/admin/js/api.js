// Fetch wrapper for the docent REST API: JSON in and out, the CSRF header, errors, lost sessions.

let csrfToken = null;
let onLost = () => {};

export class ApiError extends Error {
  constructor(status, code, message, requestId, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

export function setSession(session) {
  csrfToken = session ? session.csrf_token : null;
}

// Called with the error when a request finds the session gone (401).
export function onSessionLost(fn) {
  onLost = fn;
}

// opts.bearer: send this key instead of the cookie; opts.quiet: a 401 is only thrown.
export async function request(method, path, body, opts = {}) {
  const headers = { Accept: 'application/json' };
  // A FormData body (an upload) sets its own multipart Content-Type and boundary.
  const isForm = typeof FormData !== 'undefined' && body instanceof FormData;
  if (body !== undefined && !isForm) headers['Content-Type'] = 'application/json';
  if (opts.bearer) headers.Authorization = `Bearer ${opts.bearer}`;
  else if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      body: body === undefined || isForm ? body : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'network_error', 'The server could not be reached.');
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (res.ok) return data;
  const e = (data && data.error) || {};
  const err = new ApiError(res.status, e.code || `http_${res.status}`, e.message || res.statusText || 'Request failed',
    e.request_id, res.headers.get('Retry-After'));
  if (res.status === 401 && !opts.bearer && !opts.quiet) onLost(err);
  throw err;
}

// A query string of the params that have a value.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

export const api = {
  get: (path, opts) => request('GET', path, undefined, opts),
  post: (path, body = {}, opts) => request('POST', path, body, opts),
  patch: (path, body, opts) => request('PATCH', path, body, opts),
  del: (path, opts) => request('DELETE', path, undefined, opts),
};

export const enc = encodeURIComponent;
