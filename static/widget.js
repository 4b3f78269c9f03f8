/*
 * docent chat widget: the embeddable chat bubble served by docent at /widget.js.
 *
 *   <script src="https://docent.example.com/widget.js" data-bot="zephyr"
 *           data-token="pk_live_..." async></script>
 *
 * Optional: data-color, data-position (right|left), data-title, data-greeting,
 * data-avatar, data-api, data-open="true", data-fallback. Everything renders inside a
 * Shadow DOM built with createElement/textContent only (never innerHTML); answers stream
 * over SSE read with fetch. Page API: window.Docent.{open, close, toggle, on, off,
 * destroy}; window event `docent:ready`.
 */
(function () {
  'use strict';
  if (window.Docent && window.Docent.version) return; // the snippet was included twice

  var script = document.currentScript || document.querySelector('script[src*="widget"][data-bot]');
  if (!script) return;
  var cfg = script.dataset;
  var BOT = cfg.bot;
  var TOKEN = cfg.token;
  if (!BOT || !TOKEN) {
    if (window.console) console.warn('docent: the widget needs data-bot and data-token');
    return;
  }
  var API = httpUrl(cfg.api) || new URL(script.src, location.href).origin;
  API = API.replace(/\/+$/, '');

  var UNAVAILABLE = 'The assistant is unavailable right now. Please try again later.';
  var WAITING = "You're now waiting for a person. They'll reply here.";
  var BACK = "You're back with the assistant.";
  var CLOSED = 'The person closed this conversation. The assistant answers from here.';
  var LINK_REL = 'noopener noreferrer nofollow';

  /* ---------- small helpers ---------- */

  function h(tag, props, kids) {
    var el = document.createElement(tag);
    for (var k in props || {}) {
      var v = props[k];
      if (v == null || v === false) continue;
      if (typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    add(el, kids);
    return el;
  }
  function add(el, kids) {
    if (kids == null || kids === false) return;
    if (Array.isArray(kids)) kids.forEach(function (k) { add(el, k); });
    else el.appendChild(typeof kids === 'object' ? kids : document.createTextNode(String(kids)));
  }
  // Static line icons (no variable data).
  function icon(d) {
    var ns = 'http://www.w3.org/2000/svg';
    var svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    var path = document.createElementNS(ns, 'path');
    path.setAttribute('d', d);
    svg.appendChild(path);
    return svg;
  }
  var ICON_CHAT = 'M4 5h16v11H8l-4 4z';
  var ICON_CLOSE = 'M6 6l12 12M18 6L6 18';
  var ICON_NEW = 'M12 5v14M5 12h14';
  var ICON_SEND = 'M4 12l16-8-6 16-3-6z';
  var ICON_UP = 'M7 11v9H4v-9zM7 11l4-7c1.5 0 2.5 1 2 3l-1 3h6c1 0 2 1 1.7 2.2l-1.6 6c-.3 1-1 1.8-2.1 1.8H7';
  var ICON_DOWN = 'M7 13V4H4v9zM7 13l4 7c1.5 0 2.5-1 2-3l-1-3h6c1 0 2-1 1.7-2.2l-1.6-6C17.8 4.8 17.1 4 16 4H7';

  // A URL for a link: absolute, and http(s) (plus mailto: where allowed); else null.
  function safeUrl(raw, mailto) {
    try {
      var u = new URL(String(raw).trim());
      if (u.protocol === 'http:' || u.protocol === 'https:' || (mailto && u.protocol === 'mailto:')) return u.href;
    } catch (e) { /* not a URL */ }
    return null;
  }
  function httpUrl(raw) {
    try { return raw ? safeUrl(new URL(raw, location.href).href, false) : null; } catch (e) { return null; }
  }
  function link(href, text, cls) {
    return h('a', { href: href, target: '_blank', rel: LINK_REL, class: cls }, text);
  }

  // localStorage under docent:<bot>:, which may throw (privacy modes, sandboxed frames).
  var store = {
    get: function (k) { try { return localStorage.getItem('docent:' + BOT + ':' + k); } catch (e) { return null; } },
    set: function (k, v) { try { localStorage.setItem('docent:' + BOT + ':' + k, v); } catch (e) { /* ignore */ } },
    del: function (k) { try { localStorage.removeItem('docent:' + BOT + ':' + k); } catch (e) { /* ignore */ } }
  };

  function randomKey() {
    var abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
    var bytes = crypto.getRandomValues(new Uint8Array(32));
    var out = '';
    for (var i = 0; i < bytes.length; i++) out += abc[bytes[i] % abc.length];
    return out;
  }
  // The visitor's key: their credential, never shown. docent derives the visitor id it
  // stores and shows (leads, webhooks) from it, and the id cannot be used as a key.
  var visitorKey = store.get('visitor_key');
  if (!/^[A-Za-z0-9]{32}$/.test(visitorKey || '')) {
    visitorKey = randomKey();
    store.set('visitor_key', visitorKey);
  }

  /* ---------- markdown-lite (text in, DOM out; nothing is parsed as HTML) ---------- */

  var LIST_ITEM = /^\s*([-*]|\d{1,4}[.)])\s+(.*)$/;
  var INLINE = '`([^`\\n]+)`' + // 1 code
    '|\\*\\*(?=\\S)([^\\n]*?\\S)\\*\\*' + // 2 bold
    '|\\[([^\\]\\n]+)\\]\\(\\s*([^()\\s]+)\\s*\\)' + // 3 text, 4 url
    '|\\[(\\d{1,3})\\]' + // 5 citation
    '|(https?:\\/\\/[^\\s<>"\'`]*[^\\s<>"\'`.,;:!?)\\]}])'; // 6 bare URL

  function markdown(text, sources) {
    var frag = document.createDocumentFragment();
    var lines = String(text).replace(/\r\n?/g, '\n').split('\n');
    var para = [];
    var flush = function () {
      if (!para.length) return;
      var p = h('p');
      para.forEach(function (l, n) {
        if (n) p.appendChild(h('br'));
        inline(p, l, sources);
      });
      frag.appendChild(p);
      para = [];
    };
    for (var i = 0; i < lines.length;) {
      var line = lines[i];
      var m;
      if (/^\s*```/.test(line)) { // fenced code, until the closing fence (or the end, mid-stream)
        flush();
        var code = [];
        for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i]); i++) code.push(lines[i]);
        i++;
        frag.appendChild(h('pre', null, h('code', null, code.join('\n'))));
      } else if (!line.trim()) {
        flush();
        i++;
      } else if ((m = LIST_ITEM.exec(line))) {
        flush();
        var ordered = /\d/.test(m[1]);
        var list = h(ordered ? 'ol' : 'ul', ordered && parseInt(m[1], 10) !== 1 ? { start: parseInt(m[1], 10) } : null);
        while (i < lines.length && (m = LIST_ITEM.exec(lines[i])) && /\d/.test(m[1]) === ordered) {
          inline(list.appendChild(h('li')), m[2], sources);
          i++;
        }
        frag.appendChild(list);
      } else {
        para.push(line);
        i++;
      }
    }
    flush();
    return frag;
  }

  function inline(parent, text, sources) {
    var re = new RegExp(INLINE, 'g');
    var last = 0;
    var m;
    while ((m = re.exec(text))) {
      add(parent, text.slice(last, m.index));
      last = re.lastIndex;
      if (m[1] != null) add(parent, h('code', null, m[1]));
      else if (m[2] != null) inline(parent.appendChild(h('strong')), m[2], sources);
      else if (m[3] != null) {
        var href = safeUrl(m[4], true);
        add(parent, href ? link(href, m[3]) : m[3]);
      } else if (m[5] != null) add(parent, citation(m[5], m[0], sources));
      else add(parent, link(m[6], m[6]));
    }
    add(parent, text.slice(last));
  }

  function citation(n, raw, sources) {
    var src = (sources || []).filter(function (s) { return s && String(s.index) === n; })[0];
    var href = src && safeUrl(src.url, false);
    if (!href) return raw;
    var a = link(href, n, 'cite');
    a.setAttribute('aria-label', 'Source ' + n + (src.title ? ': ' + src.title : ''));
    return h('sup', null, a);
  }

  function sourceList(sources) {
    if (!sources || !sources.length) return null;
    return h('div', { class: 'sources' }, [
      h('div', { class: 'sources-title' }, 'Sources'),
      h('ol', null, sources.map(function (s) {
        var label = s.title || s.url || '';
        var href = safeUrl(s.url, false);
        // Numbered as the answer cites them ([3] is 3.), not by position.
        var n = parseInt(s.index, 10);
        return h('li', n > 0 ? { value: n } : null, href ? link(href, label) : h('span', null, label));
      }))
    ]);
  }

  /* ---------- Server-Sent Events over fetch ---------- */

  // Reads an event-stream body; onEvent(data, lastEventId) per event. Resolves at the end.
  function readSSE(res, onEvent) {
    var reader = res.body.getReader();
    var decoder = new TextDecoder('utf-8');
    var buf = '';
    var data = [];
    var lastId = null;
    function line(l) {
      if (l === '') {
        if (data.length) onEvent(data.join('\n'), lastId);
        data = [];
        return;
      }
      if (l[0] === ':') return; // comment (keep-alive)
      var c = l.indexOf(':');
      var field = c < 0 ? l : l.slice(0, c);
      var value = c < 0 ? '' : l.slice(c + 1).replace(/^ /, '');
      if (field === 'data') data.push(value);
      else if (field === 'id' && value.indexOf('\0') < 0) lastId = value;
    }
    function pump() {
      return reader.read().then(function (r) {
        buf += r.done ? decoder.decode() : decoder.decode(r.value, { stream: true });
        var m;
        while ((m = /\r\n|\n|\r/.exec(buf))) {
          if (m[0] === '\r' && m.index === buf.length - 1 && !r.done) break; // maybe half of \r\n
          var l = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          line(l);
        }
        return r.done ? undefined : pump();
      });
    }
    return pump();
  }

  function parse(json) {
    try { return JSON.parse(json); } catch (e) { return null; }
  }

  /* ---------- the API, with a widget session ---------- */

  function ApiError(status, code, message, retryAfter) {
    var e = new Error(message || 'HTTP ' + status);
    e.status = status;
    e.code = code;
    e.retryAfter = retryAfter;
    return e;
  }
  function httpError(res) {
    return res.text().then(function (body) {
      var err = (parse(body) || {}).error || {};
      var retry = parseInt(res.headers.get('Retry-After') || err.retry_after, 10);
      return ApiError(res.status, err.code, err.message, isNaN(retry) ? null : retry);
    });
  }

  var session = null;
  var sessionPending = null;
  var refreshTimer = null;

  function getSession(fresh) {
    if (session && !fresh) return Promise.resolve(session);
    if (!sessionPending) {
      sessionPending = fetch(API + '/v1/widget/session', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token: TOKEN, bot_id: BOT, visitor_key: visitorKey })
      }).then(function (res) {
        return res.ok ? res.json() : httpError(res).then(function (e) { throw e; });
      }).then(function (s) {
        session = { token: s.session_token, bot: s.bot || {} };
        clearTimeout(refreshTimer);
        var ms = s.expires_at ? s.expires_at * 1000 - Date.now() - 60000 : (s.expires_in - 60) * 1000;
        if (ms > 0) refreshTimer = setTimeout(function () { getSession(true).catch(function () {}); }, Math.min(Math.max(ms, 5000), 2147483000));
        applyBot(session.bot);
        return session;
      });
      sessionPending.then(done, done);
    }
    return sessionPending;
    function done() { sessionPending = null; }
  }

  // An authorised call; on a 401 (session expired) gets a new session once and repeats.
  function call(method, path, body, opts, retried) {
    opts = opts || {};
    return getSession(retried).then(function (s) {
      var headers = { Authorization: 'Bearer ' + s.token };
      for (var k in opts.headers || {}) headers[k] = opts.headers[k];
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      return fetch(API + path, {
        method: method,
        headers: headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: opts.signal,
        cache: 'no-store'
      });
    }).then(function (res) {
      if (res.status === 401 && !retried) return call(method, path, body, opts, true);
      return res;
    });
  }
  function callJSON(method, path, body) {
    return call(method, path, body).then(function (res) {
      return res.ok ? res.json() : httpError(res).then(function (e) { throw e; });
    });
  }

  /* ---------- events for the page ---------- */

  var handlers = {};
  var isReady = false;
  function emit(name, detail) {
    (handlers[name] || []).slice().forEach(function (fn) {
      try { fn(detail); } catch (e) { setTimeout(function () { throw e; }); }
    });
  }

  /* ---------- state ---------- */

  var conversation = store.get('conversation');
  var shownIds = {};
  var streaming = false;
  var humanPending = false; // a handoff request is under way
  var current = null; // AbortController of the answer being streamed
  var handedOff = false; // the waiting notice was shown for this conversation
  var leadOffered = false; // the lead form was shown for this conversation (this page view)
  var feed = null; // {conv, abort, last}
  var destroyed = false;
  var isOpen = false;
  var botInfo = {};

  function setConversation(id) {
    if (id === conversation) return;
    conversation = id || null;
    if (conversation) store.set('conversation', conversation);
    else store.del('conversation');
  }
  function leadSent() {
    return !!conversation && store.get('lead:' + conversation) === '1';
  }
  function fallbackText() {
    return botInfo.fallback || store.get('fallback') || cfg.fallback || '';
  }

  /* ---------- DOM ---------- */

  var host, root, ui = {};

  function build() {
    host = h('div', { 'data-docent-widget': '' });
    host.style.setProperty('all', 'initial', 'important'); // CSSOM: allowed under a strict CSP
    root = host.attachShadow({ mode: 'open' });
    // A constructed stylesheet is not subject to the page's CSP style-src; <style> otherwise.
    try {
      if (!('adoptedStyleSheets' in root)) throw 0;
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(STYLES);
      root.adoptedStyleSheets = [sheet];
    } catch (e) {
      root.appendChild(h('style', null, STYLES));
    }

    var wrap = h('div', { class: 'docent' + (cfg.position === 'left' ? ' left' : '') });
    if (cfg.color && window.CSS && window.CSS.supports('color', cfg.color)) wrap.style.setProperty('--accent', cfg.color);

    ui.launcher = h('button', {
      class: 'launcher', type: 'button', 'aria-label': 'Open chat', 'aria-expanded': 'false',
      'aria-controls': 'docent-panel', onclick: function () { toggle(); }
    }, [icon(ICON_CHAT), icon(ICON_CLOSE)]);

    var avatar = cfg.avatar && (/^data:image\//i.test(cfg.avatar) ? cfg.avatar : httpUrl(cfg.avatar));
    ui.title = h('div', { class: 'title' }, cfg.title || '');
    ui.handoff = h('button', { class: 'human', type: 'button', onclick: requestHuman }, 'Talk to a human');
    ui.log = h('div', { class: 'log', role: 'log', 'aria-live': 'polite' });
    ui.input = h('textarea', {
      rows: 1, placeholder: 'Type your message\u2026', 'aria-label': 'Message', maxlength: 4000,
      oninput: onInput, onkeydown: onKey
    });
    ui.send = h('button', { class: 'send', type: 'submit', 'aria-label': 'Send', disabled: true }, icon(ICON_SEND));

    ui.panel = h('div', {
      class: 'panel', id: 'docent-panel', role: 'dialog', 'aria-label': cfg.title || 'Chat', hidden: true,
      onkeydown: onPanelKey
    }, [
      h('div', { class: 'header' }, [
        avatar ? h('img', { class: 'avatar', src: avatar, alt: '' }) : null,
        ui.title,
        h('button', { class: 'icon', type: 'button', 'aria-label': 'New conversation', title: 'New conversation', onclick: newConversation }, icon(ICON_NEW)),
        h('button', { class: 'icon', type: 'button', 'aria-label': 'Close chat', title: 'Close', onclick: function () { close(); } }, icon(ICON_CLOSE))
      ]),
      ui.log,
      h('form', { class: 'composer', onsubmit: function (e) { e.preventDefault(); sendInput(); } }, [ui.input, ui.send]),
      h('div', { class: 'footer' }, [ui.handoff, h('span', { class: 'brand' }, 'Powered by docent')])
    ]);

    wrap.appendChild(ui.panel);
    wrap.appendChild(ui.launcher);
    ui.wrap = wrap;
    root.appendChild(wrap);
    document.body.appendChild(host);
    showGreeting();
  }

  function applyBot(bot) {
    botInfo = bot || {};
    if (botInfo.fallback) store.set('fallback', botInfo.fallback);
    else store.del('fallback');
    var title = cfg.title || botInfo.name || '';
    ui.title.textContent = title;
    ui.panel.setAttribute('aria-label', title || 'Chat');
    if (ui.greeting) showGreeting(); // now with the bot's name and intents
  }

  function showGreeting() {
    if (!ui.log) return;
    if (ui.log.childNodes.length > (ui.greeting ? 2 : 0)) return; // the conversation has started
    ui.log.textContent = '';
    var name = botInfo.name || cfg.title;
    var text = cfg.greeting || (name ? 'Hi! Ask me anything about ' + name + '.' : 'Hi! Ask me anything.');
    ui.greeting = bubble('assistant greeting', text);
    ui.log.appendChild(ui.greeting.el);
    ui.quick = h('div', { class: 'quick' }, (botInfo.intents || []).map(function (it) {
      return h('button', { type: 'button', class: 'qr', onclick: function () { ask({ intent: it.id, label: it.label }); } }, it.label);
    }));
    ui.log.appendChild(ui.quick);
  }

  function scrollDown() {
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  // A message bubble; role: user | assistant | agent. Returns {el, body, setText(text, sources)}.
  function bubble(role, text, sources, author) {
    var body = h('div', { class: 'body' });
    var el = h('div', { class: 'msg ' + role }, [
      role === 'agent' ? h('div', { class: 'author' }, author || 'Support') : null,
      h('div', { class: 'bubble' }, body)
    ]);
    var b = { el: el, body: body, text: '' };
    b.setText = function (t, srcs) {
      b.text = t;
      body.textContent = '';
      if (role === 'user') body.textContent = t;
      else body.appendChild(markdown(t, srcs));
    };
    if (text != null) b.setText(text, sources);
    var list = role !== 'user' && sourceList(sources);
    if (list) el.appendChild(list);
    return b;
  }
  // Thumbs up and down under an answer (POST /v1/messages/{id}/feedback); the last click
  // stands, and the pressed one says so.
  function rateBar(id, rating) {
    var buttons = {};
    function show(r) {
      Object.keys(buttons).forEach(function (k) { buttons[k].setAttribute('aria-pressed', String(k === r)); });
    }
    function rate(r) {
      var before = rating;
      rating = r;
      show(r);
      callJSON('POST', '/v1/messages/' + encodeURIComponent(id) + '/feedback', { rating: r }).then(function () {
        emit('feedback', { message_id: id, rating: r });
      }, function () { rating = before; show(before); });
    }
    buttons.up = h('button', { type: 'button', class: 'rate', 'aria-label': 'Helpful', title: 'Helpful', onclick: function () { rate('up'); } }, icon(ICON_UP));
    buttons.down = h('button', { type: 'button', class: 'rate', 'aria-label': 'Not helpful', title: 'Not helpful', onclick: function () { rate('down'); } }, icon(ICON_DOWN));
    show(rating);
    return h('div', { class: 'rating' }, [buttons.up, buttons.down]);
  }
  function push(node) {
    ui.log.appendChild(node);
    scrollDown();
    return node;
  }
  function hideQuick() {
    if (ui.quick) ui.quick.hidden = true;
  }

  function notice(kind, text, retry, md) {
    var body = h('div', { class: 'body' });
    if (md) body.appendChild(markdown(text));
    else body.textContent = text;
    var el = h('div', { class: 'notice ' + kind, role: kind === 'error' ? 'alert' : null }, body);
    if (retry) el.appendChild(h('button', { type: 'button', class: 'retry', onclick: function () { if (busy()) return; el.remove(); retry(); } }, 'Retry'));
    return push(el);
  }
  function unavailable(retry) {
    var fb = fallbackText();
    return notice('error', fb || UNAVAILABLE, retry, !!fb);
  }

  /* ---------- open / close ---------- */

  var phone = window.matchMedia ? window.matchMedia('(max-width:479.98px)') : null;
  function fullScreen() { return !!(phone && phone.matches); }
  // On a phone the open panel covers the page: a modal dialog.
  function updateModal() {
    if (ui.panel) ui.panel.setAttribute('aria-modal', String(isOpen && fullScreen()));
  }
  if (phone) {
    if (phone.addEventListener) phone.addEventListener('change', updateModal);
    else if (phone.addListener) phone.addListener(updateModal);
  }

  function onPanelKey(e) {
    if (e.key === 'Escape') {
      e.stopPropagation();
      close();
    } else if (e.key === 'Tab' && fullScreen()) { // keep focus inside the full-screen panel
      var els = [].filter.call(ui.panel.querySelectorAll('a[href],button,textarea,input,select,[tabindex]'), function (x) {
        return !x.disabled && x.tabIndex >= 0 && x.getClientRects().length;
      });
      if (!els.length) return;
      var first = els[0], last = els[els.length - 1], at = root.activeElement;
      if (e.shiftKey ? at === first || !ui.panel.contains(at) : at === last) {
        e.preventDefault();
        (e.shiftKey ? last : first).focus();
      }
    }
  }

  function open(opts) {
    if (destroyed || isOpen) return;
    isOpen = true;
    updateModal();
    ui.panel.hidden = false;
    ui.wrap.classList.add('open');
    ui.launcher.setAttribute('aria-expanded', 'true');
    scrollDown();
    if (!(opts && opts.noFocus)) ui.input.focus();
    emit('open');
  }
  function close() {
    if (destroyed || !isOpen) return;
    isOpen = false;
    updateModal();
    ui.panel.hidden = true;
    ui.wrap.classList.remove('open');
    ui.launcher.setAttribute('aria-expanded', 'false');
    ui.launcher.focus();
    emit('close');
  }
  function toggle() {
    if (isOpen) close(); else open();
  }

  /* ---------- composer ---------- */

  function onInput() {
    ui.input.style.height = 'auto';
    ui.input.style.height = Math.min(ui.input.scrollHeight, 120) + 'px';
    updateSend();
  }
  function onKey(e) {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendInput();
    }
  }
  // An answer is streaming or a handoff is being requested: one thing at a time, so that
  // both don't each start a conversation.
  function busy() {
    return streaming || humanPending;
  }
  function updateSend() {
    ui.send.disabled = busy() || !ui.input.value.trim();
    ui.handoff.disabled = busy();
  }
  function sendInput() {
    var text = ui.input.value.trim();
    if (!text || busy()) return;
    ui.input.value = '';
    onInput();
    ask({ message: text, label: text });
  }

  /* ---------- chat ---------- */

  // Asks a question ({message} or {intent}, with its label) and streams the answer.
  function ask(q, isRetry) {
    if (busy() || destroyed) return;
    if (!isRetry) push(bubble('user', q.label).el);
    hideQuick();
    streaming = true;
    updateSend();
    var msg = bubble('assistant');
    msg.el.setAttribute('data-state', 'thinking');
    var thinking = h('div', { class: 'thinking', role: 'status' }, [
      h('span', { class: 'dot' }), h('span', { class: 'dot' }), h('span', { class: 'dot' }),
      h('span', { class: 'sr' }, 'Thinking\u2026')
    ]);
    msg.body.appendChild(thinking);
    push(msg.el);

    var ctl = new AbortController();
    current = ctl;
    var text = '';
    var finished = null; // the done event
    var failed = null; // an error event
    var pending = 0;
    var render = function () {
      pending = 0;
      msg.setText(text);
      scrollDown();
    };
    var body = { bot_id: BOT };
    if (q.intent) body.intent = q.intent; else body.message = q.message;
    if (conversation) body.conversation_id = conversation;
    body.stream = true;

    call('POST', '/v1/chat', body, { signal: ctl.signal, headers: { Accept: 'text/event-stream' } }).then(function (res) {
      if (!res.ok) return httpError(res).then(function (e) { throw e; });
      return readSSE(res, function (data) {
        var ev = parse(data);
        if (!ev || ctl.signal.aborted) return;
        if (ev.event === 'start') {
          if (ev.conversation_id) setConversation(ev.conversation_id);
        } else if (typeof ev.delta === 'string') {
          text += ev.delta;
          msg.el.setAttribute('data-state', 'streaming');
          msg.el.setAttribute('aria-busy', 'true'); // announced once complete, not every frame
          if (!pending) pending = requestAnimationFrame(render);
        } else if (ev.event === 'done') {
          finished = ev;
        } else if (ev.event === 'error') {
          failed = ev;
        }
      });
    }).then(function () {
      if (ctl.signal.aborted) return;
      if (finished && !failed) return answered(msg, text, finished);
      if (text) return cutOff(msg, text, q);
      throw ApiError(503, failed && failed.code, failed && failed.message); // failed before any text
    }).catch(function (e) {
      if (ctl.signal.aborted) return;
      if (e.status === 404 && conversation && !q.fresh) { // the conversation is gone: start over
        msg.el.remove();
        forgetConversation();
        streaming = false;
        return ask({ message: q.message, intent: q.intent, label: q.label, fresh: true }, true);
      }
      if (text) return cutOff(msg, text, q);
      msg.el.remove();
      var retry = function () { ask(q, true); };
      if (e.status === 429) {
        notice('error', "You're sending messages too quickly; try again" + (e.retryAfter != null ? ' in ' + e.retryAfter + ' s.' : ' shortly.'), retry);
      } else if (!e.status || e.status >= 500 || !session) {
        unavailable(retry);
      } else {
        notice('error', e.message || UNAVAILABLE, retry);
      }
    }).then(function () {
      if (pending) cancelAnimationFrame(pending);
      msg.el.removeAttribute('aria-busy');
      if (current === ctl) {
        current = null;
        streaming = false;
        updateSend();
      }
    });
  }

  function answered(msg, text, done) {
    if (done.conversation_id) setConversation(done.conversation_id);
    if (done.finish_reason === 'handed_off' && !text) {
      msg.el.remove();
      showHandoff();
      return;
    }
    var cited = Array.isArray(done.cited) ? done.cited.map(String) : null;
    var sources = (done.sources || []).filter(function (s) { return !cited || cited.indexOf(String(s.index)) >= 0; });
    msg.setText(text, sources);
    msg.el.setAttribute('data-state', 'done');
    var list = sourceList(sources);
    if (list) msg.el.appendChild(list);
    if (done.message_id) {
      shownIds[done.message_id] = 1;
      if (done.finish_reason !== 'handed_off') msg.el.appendChild(rateBar(done.message_id, null));
    }
    scrollDown();
    emit('message', { role: 'assistant', content: text, sources: sources });
    if ((done.actions || []).indexOf('collect_lead') >= 0) offerLead();
    if (done.finish_reason === 'handed_off') showHandoff(false, text);
  }

  function cutOff(msg, text, q) {
    msg.setText(text);
    msg.el.setAttribute('data-state', 'error');
    msg.el.appendChild(h('div', { class: 'cut', role: 'alert' }, [
      h('span', null, 'The answer was cut off.'),
      h('button', { type: 'button', class: 'retry', onclick: function () { if (busy()) return; msg.el.remove(); ask(q, true); } }, 'Retry')
    ]));
    scrollDown();
  }

  /* ---------- transcript, new conversation ---------- */

  function loadTranscript() {
    var id = conversation;
    return callJSON('GET', '/v1/conversations/' + encodeURIComponent(id)).then(function (c) {
      if (id !== conversation) return;
      if (c.lead_id) store.set('lead:' + id, '1');
      var msgs = c.messages || [];
      if (msgs.length) hideQuick();
      // A handed-off conversation shows the waiting notice before the first agent reply.
      var handed = c.state === 'handed_off';
      var said = msgs.map(function (m) { return m.role === 'assistant' ? m.content : ''; }).join('\n');
      msgs.forEach(function (m) {
        if (handed && m.role === 'agent') { showHandoff(true, said); handed = false; }
        showStored(m);
      });
      if (handed) showHandoff(true, said);
    }, function (e) {
      if (e.status === 403 || e.status === 404) forgetConversation();
    });
  }

  // A stored message (transcript or live feed); returns whether it was new.
  function showStored(m) {
    if (!m || !m.id || shownIds[m.id]) return false;
    shownIds[m.id] = 1;
    var b = bubble(m.role === 'user' ? 'user' : m.role === 'agent' ? 'agent' : 'assistant', m.content || '', m.sources, m.author);
    if (m.role !== 'user') b.el.setAttribute('data-state', 'done');
    if (m.role === 'assistant' && m.answered != null) b.el.appendChild(rateBar(m.id, m.feedback && m.feedback.rating));
    push(b.el);
    return true;
  }

  function forgetConversation() {
    stopFeed();
    setConversation(null);
    shownIds = {};
    handedOff = false;
    leadOffered = false;
    ui.handoff.hidden = false;
  }

  function newConversation() {
    if (current) current.abort();
    current = null;
    streaming = false;
    forgetConversation();
    ui.greeting = null;
    ui.log.textContent = '';
    showGreeting();
    updateSend();
    ui.input.focus();
  }

  /* ---------- lead form ---------- */

  function offerLead() {
    if (leadOffered || leadSent()) return;
    leadOffered = true;
    var err = function () { return h('div', { class: 'field-error', 'aria-live': 'polite' }); };
    var nameErr = err(), emailErr = err(), formErr = err();
    var name = h('input', { type: 'text', name: 'name', autocomplete: 'name', maxlength: 200 });
    var email = h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true, maxlength: 254 });
    var consent = h('input', { type: 'checkbox', name: 'consent', required: true });
    var submit = h('button', { type: 'submit', class: 'primary' }, 'Send');
    var form = h('form', { class: 'lead', 'aria-label': 'Contact details' }, [
      h('div', { class: 'lead-title' }, 'Leave your details and we can follow up.'),
      h('label', null, ['Name', name]), nameErr,
      h('label', null, ['Email', email]), emailErr,
      h('label', { class: 'check' }, [consent, h('span', null, 'You may contact me about my question')]),
      formErr, submit
    ]);
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      [nameErr, emailErr, formErr].forEach(function (x) { x.textContent = ''; });
      submit.disabled = true;
      var body = { bot_id: BOT, name: name.value.trim(), email: email.value.trim(), consent: consent.checked };
      if (conversation) body.conversation_id = conversation;
      callJSON('POST', '/v1/leads', body).then(function (lead) {
        if (conversation) store.set('lead:' + conversation, '1');
        form.replaceWith(h('div', { class: 'notice thanks', role: 'status' }, "Thanks \u2014 we'll be in touch."));
        emit('lead', lead);
      }, function (e) {
        submit.disabled = false;
        var code = e.code || '';
        var target = /email/.test(code) ? emailErr : /name/.test(code) ? nameErr : formErr;
        target.textContent = e.message || UNAVAILABLE;
      });
    });
    push(form);
  }

  /* ---------- handoff and the live feed ---------- */

  function requestHuman() {
    if (destroyed || busy()) return;
    humanPending = true;
    updateSend();
    var id = conversation;
    (id ? Promise.resolve({ id: id }) : callJSON('POST', '/v1/conversations', { bot_id: BOT })).then(function (c) {
      setConversation(c.id);
      hideQuick();
      return callJSON('POST', '/v1/conversations/' + encodeURIComponent(c.id) + '/handoff', { reason: 'visitor_request' });
    }).then(function () {
      humanPending = false;
      updateSend();
      showHandoff();
      emit('handoff', { conversation_id: conversation });
    }, function (e) {
      humanPending = false;
      updateSend();
      if (!e.status || e.status >= 500) unavailable(requestHuman);
      else notice('error', e.message || UNAVAILABLE, requestHuman);
    });
  }

  // The waiting notice (once per conversation), the lead form if wanted, the live feed.
  // `said`: what the bot already said about it (the server's handoff reply includes the
  // fallback text, which then isn't repeated).
  function showHandoff(fromTranscript, said) {
    ui.handoff.hidden = true;
    if (!handedOff) {
      handedOff = true;
      var el = notice('system', WAITING);
      var fb = fallbackText();
      var squash = function (t) { return String(t || '').replace(/\s+/g, ' ').trim(); };
      if (fb && squash(said).indexOf(squash(fb)) < 0) el.appendChild(h('div', { class: 'body' }, markdown(fb)));
      if (!fromTranscript) offerLead();
    }
    startFeed();
  }

  function stopFeed() {
    if (feed) feed.abort.abort();
    feed = null;
  }

  function startFeed() {
    if (!conversation || destroyed || (feed && feed.conv === conversation)) return;
    stopFeed();
    var f = feed = { conv: conversation, abort: new AbortController(), last: null };
    var path = '/v1/conversations/' + encodeURIComponent(f.conv);
    var delay = 2000;
    var refused = 0; // consecutive 401s / refused sessions: a revoked key or a lost origin
    var alive = function () { return feed === f && !destroyed; };
    var onEvent = function (data, id) {
      var ev = parse(data);
      if (!ev || !alive()) return;
      delay = 2000;
      if (ev.event === 'message' && ev.message) {
        if (id != null) f.last = id;
        var m = ev.message;
        if (m.role === 'agent' || (m.role === 'assistant' && !streaming)) {
          if (showStored(m) && m.role === 'agent') emit('message', { role: 'agent', content: m.content, sources: m.sources || [] });
        }
      } else if (ev.event === 'state') {
        if (ev.state === 'handed_off') showHandoff();
        else if (ev.state === 'open' || ev.state === 'closed') {
          ui.handoff.hidden = false;
          if (handedOff) {
            handedOff = false;
            notice('system', ev.state === 'closed' ? CLOSED : BACK);
          }
        }
      }
    };
    // First the transcript's position (so nothing posted meanwhile is missed), then the
    // stream from there; reconnect with Last-Event-ID, backing off from 2 s to 30 s.
    var connect = function () {
      if (!alive()) return;
      var headers = f.last != null ? { 'Last-Event-ID': String(f.last) } : {};
      call('GET', path + '/events', undefined, { signal: f.abort.signal, headers: headers }).then(function (res) {
        if (res.status === 403 || res.status === 404) { stopFeed(); return; }
        if (res.status === 401) refused++;
        if (res.ok) {
          refused = 0;
          return readSSE(res, onEvent);
        }
      }).catch(function (e) {
        if (e && e.status && e.status < 500 && e.status !== 429) refused++; // the session was refused
      }).then(function () {
        if (!alive()) return;
        if (refused >= 3) { stopFeed(); return; }
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 30000);
      });
    };
    callJSON('GET', path).then(function (c) {
      if (!alive()) return;
      var msgs = c.messages || [];
      msgs.forEach(function (m) { if (m.role === 'agent') showStored(m); });
      if (msgs.length) f.last = String(msgs.length - 1);
    }).catch(function () {}).then(connect);
  }

  /* ---------- start ---------- */

  function destroy() {
    if (destroyed) return;
    if (current) current.abort();
    stopFeed();
    clearTimeout(refreshTimer);
    destroyed = true;
    if (host) host.remove();
  }

  // Calls made before the widget is built (script in <head>) run once it is.
  var queued = [];
  function whenBuilt(fn) {
    return function () { if (ui.panel) fn(); else queued.push(fn); };
  }
  window.Docent = {
    version: 1,
    open: whenBuilt(function () { open(); }),
    close: whenBuilt(function () { close(); }),
    toggle: whenBuilt(function () { toggle(); }),
    destroy: destroy,
    on: function (name, fn) {
      if (typeof fn !== 'function') return;
      (handlers[name] = handlers[name] || []).push(fn);
      if (name === 'ready' && isReady) fn();
    },
    off: function (name, fn) {
      handlers[name] = (handlers[name] || []).filter(function (f) { return f !== fn; });
    }
  };

  function init() {
    if (destroyed) return;
    build();
    if (cfg.open === 'true') open({ noFocus: true });
    queued.splice(0).forEach(function (fn) { fn(); });
    isReady = true;
    emit('ready');
    window.dispatchEvent(new CustomEvent('docent:ready'));
    getSession().then(function () {
      if (conversation) return loadTranscript();
    }).catch(function () { // reported when the visitor asks something
      if (!ui.title.textContent) ui.title.textContent = 'Chat';
    });
  }

  /* ---------- styles (inside the shadow root only) ---------- */

  var STYLES = [
    ':host{all:initial}',
    '.docent{--accent:#4f46e5;--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--soft:#f3f4f6;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);-webkit-font-smoothing:antialiased}',
    '.docent *,.docent *::before,.docent *::after{box-sizing:border-box}',
    '[hidden]{display:none!important}',
    'button{font:inherit;color:inherit;cursor:pointer}',
    'button:disabled{cursor:default;opacity:.5}',
    ':focus-visible{outline:2px solid var(--accent);outline-offset:2px}',
    '.header :focus-visible{outline-color:#fff}',
    '.launcher{position:fixed;right:20px;bottom:20px;z-index:2147483000;width:56px;height:56px;margin:0;padding:0;border:0;border-radius:50%;background:var(--accent);color:#fff;display:flex;align-items:center;justify-content:center;box-shadow:0 6px 20px rgba(0,0,0,.22);transition:transform .15s}',
    '.launcher:hover{transform:scale(1.06)}',
    '.launcher svg{width:26px;height:26px}',
    '.launcher svg:last-child,.open .launcher svg:first-child{display:none}',
    '.open .launcher svg:last-child{display:block}',
    '.left .launcher{right:auto;left:20px}',
    'svg{fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round}',
    '.panel{position:fixed;right:20px;bottom:88px;z-index:2147483000;width:370px;max-width:calc(100vw - 40px);height:min(640px,calc(100vh - 100px));display:flex;flex-direction:column;background:#fff;border-radius:16px;box-shadow:0 12px 48px rgba(0,0,0,.2);overflow:hidden;animation:pop .18s ease-out}',
    '.left .panel{right:auto;left:20px}',
    '@keyframes pop{from{opacity:0;transform:translateY(12px)}}',
    '.header{display:flex;align-items:center;gap:8px;padding:14px 12px 14px 16px;background:var(--accent);color:#fff}',
    '.avatar{width:32px;height:32px;border-radius:50%;object-fit:cover;background:#fff}',
    '.title{flex:1;font-weight:600;font-size:16px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}',
    '.icon{width:32px;height:32px;padding:6px;border:0;border-radius:8px;background:transparent;color:#fff}',
    '.icon:hover{background:rgba(255,255,255,.18)}',
    '.icon svg{width:20px;height:20px}',
    '.log{flex:1;overflow-y:auto;padding:16px;display:flex;flex-direction:column;gap:10px;background:#fafafa;overscroll-behavior:contain}',
    '.msg{display:flex;flex-direction:column;max-width:85%;align-self:flex-start}',
    '.msg.user{align-self:flex-end}',
    '.bubble{padding:9px 13px;border-radius:16px 16px 16px 4px;background:#fff;border:1px solid var(--line);overflow-wrap:anywhere}',
    '.user .bubble{border-radius:16px 16px 4px 16px;background:var(--accent);border-color:transparent;color:#fff;white-space:pre-wrap}',
    '.agent .bubble{background:#fffbeb;border-color:#fde68a}',
    '.author{font-size:12px;color:var(--muted);margin:0 0 3px 4px}',
    '.body p{margin:0 0 8px}.body>:last-child{margin-bottom:0}',
    '.body ul,.body ol{margin:0 0 8px;padding-left:20px}',
    '.body code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--soft);padding:1px 4px;border-radius:4px}',
    '.body pre{margin:0 0 8px;padding:8px 10px;background:#111827;color:#f9fafb;border-radius:8px;overflow-x:auto}',
    '.body pre code{background:none;padding:0;color:inherit}',
    'a{color:var(--accent)}',
    '.user a{color:inherit}',
    'sup{line-height:0}.cite{font-size:11px;text-decoration:none;padding:0 2px}',
    '.sources{margin:6px 0 0 4px;font-size:12px;color:var(--muted)}',
    '.sources-title{font-weight:600;margin-bottom:2px}',
    '.sources ol{margin:0;padding:0}',
    '.sources li{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;list-style-position:inside}',
    '.thinking{display:flex;gap:4px;padding:4px 0}',
    '.dot{width:7px;height:7px;border-radius:50%;background:var(--muted);animation:blink 1.2s infinite both}',
    '.dot:nth-child(2){animation-delay:.2s}.dot:nth-child(3){animation-delay:.4s}',
    '@keyframes blink{0%,80%,100%{opacity:.25}40%{opacity:1}}',
    '.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}',
    '.rating{display:flex;gap:2px;margin:4px 0 0 4px}',
    '.rate{width:28px;height:28px;padding:5px;border:0;border-radius:8px;background:none;color:var(--muted)}',
    '.rate svg{width:18px;height:18px;fill:none;stroke:currentColor;stroke-width:1.6;stroke-linejoin:round}',
    '.rate:hover,.rate:focus-visible{background:var(--soft);color:var(--fg)}',
    '.rate[aria-pressed=true]{color:var(--accent);background:var(--soft)}',
        '.cut{display:flex;align-items:center;gap:8px;margin:6px 0 0 4px;font-size:12px;color:#b91c1c}',
    '.retry{padding:3px 10px;border:1px solid currentColor;border-radius:999px;background:#fff;font-size:12px}',
    '.notice{align-self:stretch;padding:10px 12px;border-radius:10px;font-size:13px;background:var(--soft);color:var(--fg)}',
    '.notice.error{background:#fef2f2;color:#991b1b}',
    '.notice.thanks{background:#ecfdf5;color:#065f46}',
    '.notice .body+.body{margin-top:6px}',
    '.notice .retry{margin-top:8px;color:inherit}',
    '.quick{display:flex;flex-wrap:wrap;gap:6px}',
    '.qr{padding:6px 12px;border:1px solid var(--accent);border-radius:999px;background:#fff;color:var(--accent)}',
    '.qr:hover{background:var(--accent);color:#fff}',
    '.lead{align-self:stretch;display:flex;flex-direction:column;gap:6px;padding:12px;border:1px solid var(--line);border-radius:12px;background:#fff}',
    '.lead-title{font-weight:600}',
    '.lead label{display:flex;flex-direction:column;gap:3px;font-size:12px;color:var(--muted)}',
    '.lead label.check{flex-direction:row;align-items:flex-start;gap:8px;color:var(--fg)}',
    '.lead input[type=text],.lead input[type=email]{font:inherit;font-size:14px;color:var(--fg);padding:7px 9px;border:1px solid var(--line);border-radius:8px}',
    '.field-error{font-size:12px;color:#b91c1c}.field-error:empty{display:none}',
    '.primary{align-self:flex-start;padding:7px 16px;border:0;border-radius:8px;background:var(--accent);color:#fff}',
    '.composer{display:flex;align-items:flex-end;gap:8px;padding:10px 12px;border-top:1px solid var(--line);background:#fff}',
    'textarea{flex:1;resize:none;min-height:38px;max-height:120px;padding:9px 12px;border:1px solid var(--line);border-radius:12px;font:inherit;color:var(--fg);background:#fff}',
    'textarea:focus{border-color:var(--accent);outline:none;box-shadow:0 0 0 2px color-mix(in srgb,var(--accent) 25%,transparent)}',
    '.send{width:38px;height:38px;flex:none;padding:8px;border:0;border-radius:12px;background:var(--accent);color:#fff}',
    '.send svg{width:20px;height:20px}',
    '.footer{display:flex;align-items:center;justify-content:space-between;padding:0 14px 10px;background:#fff;font-size:12px;color:var(--muted)}',
    '.human{padding:2px 0;border:0;background:none;color:var(--accent);text-decoration:underline}',
    // .docent .panel (later, as specific as .left .panel) wins for both positions; 16px
    // inputs keep iOS from zooming in on focus.
    '@media (max-width:479.98px){.docent .panel{top:0;left:0;right:auto;bottom:auto;width:100vw;max-width:none;height:100vh;height:100dvh;border-radius:0}.open .launcher{display:none}.docent textarea,.docent .lead input{font-size:16px}}',
    '@media (prefers-reduced-motion:reduce){*,*::before,*::after{animation:none!important;transition:none!important}}'
  ].join('\n');

  if (document.body) init();
  else document.addEventListener('DOMContentLoaded', init);
})();
