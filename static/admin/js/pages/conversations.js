// Conversations page: the filtered list with paging, and one conversation's transcript.

import {
  h, add, clear, field, form, header, section, td, select, button, toast, errorText,
  fmtTime, safeLink, loadBots, botSelect, botName,
} from '../ui.js';
import { enc, query } from '../api.js';

const STATES = [['', 'Any'], ['open', 'Open'], ['handed_off', 'Waiting for a person'], ['closed', 'Closed']];
const RATINGS = [['', 'Any'], ['up', 'Rated up'], ['down', 'Rated down']];
const ROLE_NAMES = { user: 'Visitor', assistant: 'Bot', agent: 'Agent' };
export const stateName = (s) => (STATES.find(([v]) => v === s) || [s, s])[1];

// ---- transcript (shared with the inbox) ----

function sources(list) {
  if (!list || !list.length) return null;
  return h('ol', { class: 'sources', 'aria-label': 'Sources' }, list.map((s) => h('li', {}, [
    s.index != null ? `[${s.index}] ` : '', safeLink(s.url, s.title || s.url),
  ])));
}

function feedback(f) {
  if (!f) return null;
  return h('p', { class: 'feedback', 'data-rating': f.rating }, [
    f.rating === 'up' ? 'Visitor rated this helpful' : 'Visitor rated this not helpful',
    f.comment ? h('q', {}, f.comment) : null,
  ]);
}

export function messageItem(m) {
  const who = m.role === 'agent' && m.author ? `${ROLE_NAMES.agent} · ${m.author}` : ROLE_NAMES[m.role] || m.role;
  return h('li', { class: 'message', 'data-role': m.role, 'data-id': m.id }, [
    h('p', { class: 'message-meta' }, [h('span', { class: 'who' }, who), ' ', h('time', {}, fmtTime(m.created)),
      m.answered === false ? h('span', { class: 'badge badge-warn' }, 'Not answered from the sources') : null]),
    h('div', { class: 'message-text' }, m.content),
    sources(m.sources),
    feedback(m.feedback),
  ]);
}

// A transcript list that adds each message once (by id).
export function transcript(messages) {
  const list = h('ol', { class: 'transcript', 'aria-label': 'Messages' });
  const addMessage = (m) => {
    if (list.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return false;
    list.append(messageItem(m));
    return true;
  };
  (messages || []).forEach(addMessage);
  return { list, addMessage };
}

export function conversationMeta(c, bots) {
  const item = (k, v) => (v == null || v === '' ? null : [h('dt', {}, k), h('dd', {}, v)]);
  return h('dl', { class: 'meta' }, [
    item('Bot', botName(bots, c.bot_id)), item('State', h('span', { class: 'state' }, stateName(c.state))),
    item('Started', fmtTime(c.created)), item('Handed off', c.handed_off_at ? fmtTime(c.handed_off_at) : null),
    item('Reason', c.handoff_reason), item('Visitor', c.user_id), item('Intent', c.intent),
    item('Ratings', `${c.ratings ? c.ratings.up : 0} up · ${c.ratings ? c.ratings.down : 0} down`),
    item('Lead', c.lead_id ? h('a', { href: '#/leads' }, c.lead_id) : null),
  ]);
}

async function detail(main, { api, params, setTitle }) {
  const [c, bots] = await Promise.all([api.get(`/v1/conversations/${enc(params.id)}`), loadBots(api)]);
  setTitle('Conversation');
  add(main, [
    h('p', { class: 'crumbs' }, h('a', { href: '#/conversations' }, '← All conversations')),
    h('h1', {}, 'Conversation'),
    conversationMeta(c, bots),
    c.state === 'handed_off' ? h('p', {}, h('a', { href: `#/inbox/${enc(c.id)}`, class: 'btn' }, 'Reply in the inbox')) : null,
    transcript(c.messages).list,
  ]);
  return undefined;
}

// ---- list ----

function row(c, bots) {
  const r = c.ratings || { up: 0, down: 0 };
  return h('tr', { class: 'conversation-row', 'data-id': c.id }, [
    td(h('a', { href: `#/conversations/${enc(c.id)}` }, fmtTime(c.created))), td(botName(bots, c.bot_id)),
    td(h('span', { class: `badge state-${c.state}` }, stateName(c.state))), td(`${r.up} up · ${r.down} down`),
    td(h('a', { href: `#/conversations/${enc(c.id)}` }, ['Transcript', h('span', { class: 'sr-only' }, ` of ${fmtTime(c.created)}`)])),
  ]);
}

function filters() {
  return {
    state: select('filter-state', STATES, ''),
    rating: select('filter-rating', RATINGS, ''),
    from: h('input', { id: 'filter-from', type: 'date' }),
    to: h('input', { id: 'filter-to', type: 'date' }),
    q: h('input', { id: 'filter-q', type: 'search', maxlength: 200 }),
  };
}

// The results table: `load(true)` starts over (dropping any answer still on its way),
// `load(false)` appends the next page.
function results(api, bots, params) {
  const tbody = h('tbody');
  const count = h('p', { class: 'hint', role: 'status' });
  let cursor = null;
  let seq = 0;
  const load = async (fresh) => {
    if (fresh) { seq += 1; cursor = null; clear(tbody); count.textContent = 'Loading…'; }
    const mine = seq;
    more.disabled = true;
    try {
      const page = await api.get(`/v1/conversations${query({ ...params(), limit: 50, cursor })}`);
      if (mine !== seq) return;
      tbody.append(...(page.data || []).map((c) => row(c, bots)));
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
      const n = tbody.children.length;
      count.textContent = n ? `${n} conversation${n === 1 ? '' : 's'} shown${cursor ? '; more to load' : ''}.` : 'No conversations match.';
    } catch (err) {
      if (mine === seq) { count.textContent = ''; toast(errorText(err), true); }
    } finally { more.disabled = false; }
  };
  const more = button('Load more', () => load(false), { id: 'load-more', hidden: true });
  const wrap = h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Conversations table' }, h('table', {}, [
    h('caption', { class: 'sr-only' }, 'Conversations'),
    h('thead', {}, h('tr', {}, ['Started', 'Bot', 'State', 'Ratings', 'Open'].map((x) => h('th', { scope: 'col' }, x)))),
    tbody,
  ]));
  return { el: [count, wrap, h('div', { class: 'actions' }, more)], load };
}

export async function render(main, ctx) {
  if (ctx.params.id) return detail(main, ctx);
  const { api } = ctx;
  main.append(...header('Conversations'));
  const bots = await loadBots(api);
  const f = filters();
  const botField = botSelect('filter-bot', bots, { any: true });
  const params = () => ({
    bot_id: botField.querySelector('select').value, state: f.state.value, rating: f.rating.value,
    from: f.from.value, to: f.to.value, q: f.q.value.trim(),
  });
  const list = results(api, bots, params);
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'filter-apply' }, 'Search');
  const filterForm = form({ class: 'filters', role: 'search', 'aria-label': 'Filters' }, [
    botField, field('State', f.state), field('Rating', f.rating), field('From', f.from), field('To', f.to), field('Text', f.q),
  ], submit, () => list.load(true));
  // Choices apply at once; the text applies on Enter or the button.
  filterForm.addEventListener('change', (e) => { if (e.target !== f.q) list.load(true); });
  main.append(filterForm, section('Results', list.el));
  await list.load(true);
  return undefined;
}
