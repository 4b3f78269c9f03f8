// DOM helpers (text only, never HTML), formatting, status line, dialogs, forms and the secret box.

const PROPS = new Set(['value', 'checked', 'indeterminate']);

// Builds an element; data goes in as text nodes only. attrs: class, on<event> handlers,
// value/checked as properties, true as an empty attribute, null/false left out.
export function h(tag, attrs, children) {
  const el = document.createElement(tag);
  add(el, children);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (PROPS.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  return el;
}

export function add(el, kids) {
  if (kids == null || kids === false) return el;
  if (Array.isArray(kids)) kids.forEach((k) => add(el, k));
  else el.appendChild(kids instanceof Node ? kids : document.createTextNode(String(kids)));
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

let uid = 0;
export const nextId = (prefix) => `${prefix}-${++uid}`;

// ---- formatting ----

export function fmtTime(unix) {
  if (unix == null) return '—';
  return new Date(unix * 1000).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export function fmtAgo(unix) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - unix));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return fmtTime(unix);
}

export const fmtNum = (n) => (n == null ? '—' : Number(n).toLocaleString());
export const fmtPct = (r) => (r == null ? '—' : `${(r * 100).toFixed(1)}%`);
export const fmtMs = (ms) => (ms == null ? '—' : `${Math.round(ms).toLocaleString()} ms`);

export function fmtDuration(secs) {
  if (!secs) return 'never';
  for (const [n, u] of [[86400, 'd'], [3600, 'h'], [60, 'min']]) {
    if (secs % n === 0) return `every ${secs / n} ${u}`;
  }
  return `every ${secs} s`;
}

// A UTC day as YYYY-MM-DD, `days` before today.
export function isoDay(daysAgo = 0) {
  return new Date(Date.now() - daysAgo * 86400000).toISOString().slice(0, 10);
}

// An http(s) link for a URL from the server, or plain text.
export function safeLink(url, text) {
  let ok = false;
  try { ok = ['http:', 'https:'].includes(new URL(url).protocol); } catch { ok = false; }
  const label = text || url;
  return ok ? h('a', { href: url, rel: 'noopener noreferrer', target: '_blank' }, label) : h('span', {}, label);
}

export const splitList = (text) => text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
export const lines = (text) => text.split('\n').map((s) => s.trim()).filter(Boolean);

// ---- status line ----

let toastTimer = 0;
export function toast(message, isError = false) {
  const status = document.getElementById('status');
  const alert = document.getElementById('alert');
  clearTimeout(toastTimer);
  status.textContent = isError ? '' : message;
  alert.textContent = isError ? message : '';
  toastTimer = setTimeout(() => { status.textContent = ''; alert.textContent = ''; }, isError ? 10000 : 5000);
}

export function errorText(err) {
  if (!err) return '';
  const code = err.code ? ` (${err.code})` : '';
  const retry = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : '';
  return `${err.message || String(err)}${code}${retry}`;
}

// ---- forms ----

export function errorBox(id) {
  return h('p', { class: 'form-error', role: 'alert', id, hidden: true });
}

export function showError(box, err) {
  box.textContent = errorText(err);
  box.hidden = !err;
}

// A labelled control: label, the control (its id set), an optional hint tied by aria-describedby.
export function field(label, control, hint) {
  if (!control.id) control.id = nextId('f');
  const kids = [h('label', { for: control.id }, label), control];
  if (hint) {
    const hid = `${control.id}-hint`;
    control.setAttribute('aria-describedby', hid);
    kids.push(h('p', { class: 'hint', id: hid }, hint));
  }
  return h('div', { class: 'field' }, kids);
}

// A form whose submit button (the first of `buttons`) is disabled while `onSubmit` runs;
// errors land in its alert box.
export function form(attrs, children, buttons, onSubmit, errorId) {
  const submit = [].concat(buttons)[0];
  const err = errorBox(errorId);
  const f = h('form', attrs, [children, h('div', { class: 'actions' }, buttons), err]);
  f.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (submit.disabled) return;
    submit.disabled = true;
    showError(err, null);
    try { await onSubmit(f); } catch (x) { showError(err, x); } finally { submit.disabled = false; }
  });
  return f;
}

export const button = (label, onclick, attrs = {}) =>
  h('button', { type: 'button', class: 'btn', ...attrs, onclick }, label);

// A button that runs `fn`, disabled meanwhile; failures go to the alert line.
export function action(label, fn, attrs = {}) {
  const b = button(label, async () => {
    b.disabled = true;
    try { await fn(); } catch (x) { toast(errorText(x), true); } finally { if (b.isConnected) b.disabled = false; }
  }, attrs);
  return b;
}

export function select(id, options, value, attrs = {}) {
  const s = h('select', { id, ...attrs }, options.map(([v, l]) => h('option', { value: v }, l)));
  if (value != null) s.value = value;
  return s;
}

// ---- dialogs ----

// A modal yes/no question; resolves true when confirmed.
export function confirmDialog(message, okLabel = 'Confirm') {
  return new Promise((resolve) => {
    const titleId = nextId('dlg');
    const ok = h('button', { type: 'button', class: 'btn btn-danger', id: 'confirm-ok' }, okLabel);
    const cancel = h('button', { type: 'button', class: 'btn', id: 'confirm-cancel' }, 'Cancel');
    const d = h('dialog', { class: 'dialog', 'aria-labelledby': titleId }, [
      h('p', { id: titleId }, message),
      h('div', { class: 'actions' }, [cancel, ok]),
    ]);
    const done = (v) => { d.close(); d.remove(); resolve(v); };
    ok.addEventListener('click', () => done(true));
    cancel.addEventListener('click', () => done(false));
    d.addEventListener('cancel', (e) => { e.preventDefault(); done(false); });
    document.body.appendChild(d);
    d.showModal();
    cancel.focus();
  });
}

// ---- copying and secrets ----

export async function copyText(text, fallbackEl) {
  try {
    await navigator.clipboard.writeText(text);
    toast('Copied to the clipboard.');
  } catch {
    if (fallbackEl) {
      const range = document.createRange();
      range.selectNodeContents(fallbackEl);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
    toast('Copying is blocked here: the text is selected, press Ctrl+C (⌘C).');
  }
}

export function copyButton(getText, target, label = 'Copy') {
  return button(label, () => copyText(getText(), target), { 'aria-label': `${label} to the clipboard` });
}

// A secret shown once, with a Copy button.
export function secretBox(title, secret, note = 'Copy it now: it is shown only once and cannot be read again.') {
  const code = h('code', { class: 'secret-value' }, secret);
  return h('div', { class: 'secret-once', tabindex: '-1' }, [
    h('p', { class: 'secret-title' }, title),
    h('p', { class: 'hint' }, note),
    h('div', { class: 'secret-row' }, [code, copyButton(() => secret, code)]),
  ]);
}

// ---- tables ----

export function table(caption, headers, rows) {
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': `${caption} table` }, h('table', {}, [
    h('caption', { class: 'sr-only' }, caption),
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows),
  ]));
}

export const td = (...kids) => h('td', {}, kids);

// ---- bots ----

// The bots the session may see, cached for half a minute.
let botsCache = null;
let botsAt = 0;
export async function loadBots(api, fresh = false) {
  if (!botsCache || fresh || Date.now() - botsAt > 30000) {
    botsCache = (await api.get('/v1/bots')).data || [];
    botsAt = Date.now();
  }
  return botsCache;
}
export const forgetBots = () => { botsCache = null; };

// The bot last picked in this tab, if it still exists.
export function rememberedBot(bots) {
  const last = sessionStorage.getItem('docent.bot');
  return bots.some((b) => b.id === last) ? last : bots[0] && bots[0].id;
}

export function botSelect(id, bots, { any = false, label = 'Bot' } = {}) {
  const opts = bots.map((b) => [b.id, b.test ? `${b.name} (test)` : b.name]);
  if (any) opts.unshift(['', 'All bots']);
  const s = select(id, opts, any ? '' : rememberedBot(bots));
  s.addEventListener('change', () => { if (s.value) sessionStorage.setItem('docent.bot', s.value); });
  return field(label, s);
}

export function botName(bots, id) {
  const b = bots.find((x) => x.id === id);
  return b ? b.name : id;
}

// Checkboxes for picking bots; `checked(root, name)` reads them.
export function botChecks(bots, name, legend = 'Bots') {
  return h('fieldset', { class: 'checks' }, [
    h('legend', {}, legend),
    bots.length ? bots.map((b) => {
      const id = `${name}-${b.id}`;
      return h('div', { class: 'check' }, [h('input', { type: 'checkbox', id, name, value: b.id }), h('label', { for: id }, `${b.name} (${b.id})`)]);
    }) : h('p', { class: 'hint' }, 'No bots yet.'),
  ]);
}

export const checked = (root, name) => [...root.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => i.value);

export const noBots = () => h('p', { class: 'empty' }, 'No bots yet. Create one on the Bots page first.');

// A page's top: its h1 and an optional lead paragraph.
export function header(title, lead) {
  return lead ? [h('h1', {}, title), h('p', { class: 'lead' }, lead)] : [h('h1', {}, title)];
}

export function section(title, children, attrs = {}) {
  const hid = nextId('sec');
  return h('section', { class: 'card', 'aria-labelledby': hid, ...attrs }, [h('h2', { id: hid }, title), children]);
}
