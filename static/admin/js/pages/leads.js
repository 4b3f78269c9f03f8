// Leads page: a bot's leads with paging, and the CSV download link.

import { h, clear, header, section, button, toast, errorText, fmtTime, loadBots, botSelect } from '../ui.js';
import { enc, query } from '../api.js';

const cell = (v) => h('td', {}, v == null || v === '' ? '—' : v);

function row(l) {
  const consent = l.consent == null ? 'not asked' : l.consent ? 'yes' : 'no';
  return h('tr', { class: 'lead-row', 'data-id': l.id }, [
    cell(fmtTime(l.created)), cell(l.name), cell(l.email), cell(l.phone), cell(consent), cell(l.obtained),
    cell(l.conversation_id ? h('a', { href: `#/conversations/${enc(l.conversation_id)}` }, 'Conversation') : null),
  ]);
}

export async function render(main, { api }) {
  main.append(...header('Leads', 'Contact details visitors gave, oldest first.'));
  const bots = await loadBots(api);
  if (!bots.length) { main.append(h('p', { class: 'empty' }, 'No bots are assigned to you.')); return undefined; }
  const picker = botSelect('leads-bot', bots);
  const sel = picker.querySelector('select');
  const csv = h('a', { class: 'btn', id: 'leads-csv', download: '' }, 'Download CSV');
  const tbody = h('tbody');
  const status = h('p', { class: 'hint', role: 'status' });
  let cursor = null;
  const more = button('Load more', () => load(false).catch((e) => toast(errorText(e), true)), { id: 'leads-more', hidden: true });

  let seq = 0;
  const load = async (fresh) => {
    if (fresh) { cursor = null; clear(tbody); }
    const mine = ++seq; // a load overtaken by a newer one (another bot picked) is dropped
    csv.href = `/v1/leads${query({ bot_id: sel.value, format: 'csv' })}`;
    more.disabled = true;
    try {
      const page = await api.get(`/v1/leads${query({ bot_id: sel.value, limit: 50, cursor })}`);
      if (mine !== seq) return;
      tbody.append(...(page.data || []).map(row));
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
      status.textContent = tbody.children.length ? `${tbody.children.length} leads shown.` : 'No leads yet.';
    } finally { more.disabled = false; }
  };

  sel.addEventListener('change', () => load(true).catch((e) => toast(errorText(e), true)));
  main.append(
    h('div', { class: 'toolbar' }, [picker, csv]),
    section('Leads', [status, h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Leads table' }, h('table', {}, [
      h('caption', { class: 'sr-only' }, 'Leads'),
      h('thead', {}, h('tr', {}, ['Received', 'Name', 'Email', 'Phone', 'Consent', 'Obtained', 'From'].map((x) => h('th', { scope: 'col' }, x)))),
      tbody,
    ])), h('div', { class: 'actions' }, more)]),
  );
  await load(true).catch((e) => toast(errorText(e), true));
  return undefined;
}

