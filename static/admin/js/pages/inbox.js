// Inbox page: conversations waiting for a person (polled), one of them live (SSE) with the reply form.

import { h, clear, field, form, section, action, toast, errorText, fmtAgo, loadBots, botName } from '../ui.js';
import { enc, query } from '../api.js';
import { transcript, conversationMeta, stateName } from './conversations.js';

const POLL_MS = 2000;

function itemFor(c, bots) {
  const when = h('span', { class: 'when' });
  const a = h('a', { class: 'inbox-item', href: `#/inbox/${enc(c.id)}`, 'data-id': c.id }, [
    h('span', { class: 'inbox-bot' }, botName(bots, c.bot_id)), when,
    h('span', { class: 'inbox-reason' }, c.handoff_reason ? `Reason: ${c.handoff_reason}` : ''),
  ]);
  return { li: h('li', {}, a), a, when };
}

// The waiting list, reconciled in place so focus and order stay put between polls.
function waitingList(api, bots, selected, live) {
  const ul = h('ul', { class: 'inbox-list', 'aria-label': 'Waiting conversations' });
  const empty = h('p', { class: 'empty' }, 'Nobody is waiting for a person.');
  const items = new Map();
  let first = true;

  const apply = (convs) => {
    const fresh = [];
    const ids = new Set(convs.map((c) => c.id));
    for (const [id, it] of items) if (!ids.has(id)) { it.li.remove(); items.delete(id); }
    convs.forEach((c, i) => {
      let it = items.get(c.id);
      if (!it) { it = itemFor(c, bots); items.set(c.id, it); fresh.push(c); }
      const text = `waiting ${fmtAgo(c.handed_off_at || c.updated)}`;
      if (it.when.textContent !== text) it.when.textContent = text;
      if (c.id === selected) it.a.setAttribute('aria-current', 'true');
      if (ul.children[i] !== it.li) ul.insertBefore(it.li, ul.children[i] || null);
    });
    empty.hidden = convs.length > 0;
    if (!first && fresh.length) live(`${fresh.length} new conversation${fresh.length > 1 ? 's' : ''} waiting: ${fresh.map((c) => botName(bots, c.bot_id)).join(', ')}.`);
    first = false;
    if (ul.isConnected) document.title = `${convs.length ? `(${convs.length}) ` : ''}Inbox · docent console`;
  };

  // Every waiting conversation: the list is in id order, not by time, so all pages are
  // read (at most 10, 2,000 conversations), then sorted newest handoff first.
  const fetchWaiting = async () => {
    const all = [];
    let cursor = null;
    for (let i = 0; i < 10; i++) {
      const page = await api.get(`/v1/conversations${query({ state: 'handed_off', limit: 200, cursor })}`);
      all.push(...(page.data || []));
      cursor = page.next_cursor || null;
      if (!cursor) break;
    }
    return all.filter((c) => c.state === 'handed_off')
      .sort((x, y) => (y.handed_off_at || 0) - (x.handed_off_at || 0));
  };
  return { el: h('div', {}, [ul, empty]), refresh: async () => apply(await fetchWaiting()) };
}

function replyForm(api, id, session, onSent) {
  const text = h('textarea', { id: 'reply-text', rows: 3, required: true, maxlength: 4000 });
  const send = h('button', { type: 'submit', class: 'btn btn-primary', id: 'reply-send' }, 'Send');
  const author = session.account.email.split('@')[0].slice(0, 100);
  const f = form({ class: 'reply', 'aria-label': 'Reply' }, [field('Reply to the visitor', text, `Sent as ${author}. Ctrl+Enter sends.`)], send, async () => {
    const m = await api.post(`/v1/conversations/${enc(id)}/messages`, { role: 'agent', content: text.value, author });
    text.value = '';
    onSent(m);
    text.focus();
  });
  text.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); f.requestSubmit(); } });
  return f;
}

function stateButtons(api, id, navigate) {
  const post = (path, done) => async () => {
    await api.post(`/v1/conversations/${enc(id)}/${path}`, {});
    toast(done);
    navigate('#/inbox');
  };
  return h('div', { class: 'actions' }, [
    action('Hand back to the bot', post('resume', 'Handed back to the bot.'), { id: 'hand-back' }),
    action('Close', post('close', 'Conversation closed.'), { id: 'close-conversation', class: 'btn btn-danger' }),
  ]);
}

// One conversation, kept current by its live feed; returns a function that closes the feed.
async function openConversation(panel, { api, session, navigate }, id, bots, live) {
  const c = await api.get(`/v1/conversations/${enc(id)}`);
  const t = transcript(c.messages);
  const meta = conversationMeta(c, bots);
  const feedNote = h('p', { class: 'hint' });
  clear(panel).append(h('h2', {}, 'Conversation'), meta, t.list, feedNote,
    replyForm(api, id, session, (m) => t.addMessage(m)), stateButtons(api, id, navigate));
  const after = (c.messages || []).length ? `?after=${c.messages.length - 1}` : '';
  const es = new EventSource(`/v1/conversations/${enc(id)}/events${after}`);
  es.onmessage = (e) => {
    let d;
    try { d = JSON.parse(e.data); } catch { return; }
    if (d.event === 'message' && d.message && t.addMessage(d.message)) {
      t.list.lastElementChild.scrollIntoView({ block: 'nearest' });
      if (d.message.role === 'user') live(`Visitor: ${d.message.content.slice(0, 200)}`);
    } else if (d.event === 'state') {
      const s = meta.querySelector('.state');
      if (s) s.textContent = stateName(d.state);
      // Given back or closed by someone else: a reply now would take it over again.
      const waiting = d.state === 'handed_off';
      panel.querySelectorAll('form.reply textarea, form.reply button, #hand-back, #close-conversation')
        .forEach((el) => { el.disabled = !waiting; });
      if (!waiting) feedNote.textContent = `This conversation is ${stateName(d.state).toLowerCase()} now; nobody waits for a reply.`;
    } else if (d.event === 'end') {
      // The node stopping: the browser reconnects by itself (to another node).
      if (d.reason === 'server_stopping') return;
      es.close();
      feedNote.textContent = `Live updates ended (${d.reason}).`;
    }
  };
  es.onerror = () => {
    if (es.readyState !== EventSource.CLOSED) return; // the browser reconnects by itself
    feedNote.textContent = 'Live updates stopped. Reload the page to resume them.';
    api.get('/v1/auth/session').catch(() => {}); // a lost session sends us to the login
  };
  return () => es.close();
}

export async function render(main, ctx) {
  const { api, params } = ctx;
  const announcer = h('p', { class: 'sr-only', id: 'inbox-live', 'aria-live': 'polite' });
  const live = (text) => { announcer.textContent = text; };
  const bots = await loadBots(api);
  const list = waitingList(api, bots, params.id, live);
  const panel = h('section', { class: 'card inbox-panel', 'aria-label': 'Selected conversation' },
    h('p', { class: 'empty' }, 'Pick a conversation to answer it.'));
  main.append(h('h1', {}, 'Inbox'), announcer, h('div', { class: `inbox${params.id ? ' has-selection' : ''}` }, [
    section('Waiting for a person', list.el, { class: 'card inbox-waiting' }), panel,
  ]));
  let timer = 0;
  let stopped = false;
  let closeFeed = null;
  const tick = async () => {
    try { await list.refresh(); } catch (err) { if (err.status !== 401) toast(errorText(err), true); }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  };
  const cleanup = () => { stopped = true; clearTimeout(timer); if (closeFeed) closeFeed(); };
  await tick();
  if (params.id) {
    try { closeFeed = await openConversation(panel, ctx, params.id, bots, live); } catch (err) {
      clear(panel).append(h('p', { class: 'form-error', role: 'alert' }, errorText(err)));
    }
    if (stopped && closeFeed) closeFeed();
  }
  return cleanup;
}
