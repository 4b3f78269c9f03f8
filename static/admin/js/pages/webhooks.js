// Webhooks page: endpoints (secret shown once), rotation, deletion, delivery log and redelivery.

import {
  h, clear, field, form, header, section, td, action, button, toast, errorText, confirmDialog, secretBox,
  fmtTime, fmtMs, loadBots, botSelect, botName, noBots, checked,
} from '../ui.js';
import { enc, query } from '../api.js';

const EVENTS = ['conversation.started', 'lead.captured', 'conversation.handoff', 'message.unanswered', 'message.feedback', 'bot.regressed'];

function eventChecks() {
  const box = (value, label) => {
    const id = `webhook-event-${value === '*' ? 'all' : value.replace('.', '-')}`;
    const input = h('input', { type: 'checkbox', id, name: 'webhook-event', value, checked: value === '*' });
    return h('div', { class: 'check' }, [input, h('label', { for: id }, label)]);
  };
  return h('fieldset', { class: 'checks' }, [h('legend', {}, 'Events'), box('*', 'All events (*)'), EVENTS.map((e) => box(e, e))]);
}

function createForm(api, bots, show, reload) {
  const bot = botSelect('webhook-bot', bots);
  const url = h('input', { id: 'webhook-url', type: 'url', required: true, maxlength: 2000, placeholder: 'https://crm.example/docent' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'webhook-create' }, 'Create webhook');
  const f = form({ class: 'stack', 'aria-label': 'Create a webhook' }, [bot, field('URL', url), eventChecks()], submit, async () => {
    const events = checked(f, 'webhook-event');
    if (!events.length) throw new Error('Pick at least one event.');
    const created = await api.post('/v1/webhooks', { bot_id: bot.querySelector('select').value, url: url.value.trim(), events });
    show(secretBox(`Signing secret of ${created.id}`, created.secret));
    url.value = '';
    await reload();
  });
  return f;
}

function attempts(list) {
  if (!list || !list.length) return '—';
  return h('ol', { class: 'attempts' }, list.map((a) => h('li', {}, [
    `${fmtTime(Math.floor(a.at_ms / 1000))}: `, a.status != null ? `HTTP ${a.status}` : 'no response',
    a.error ? ` (${a.error})` : '', ` · ${fmtMs(a.latency_ms)}`,
  ])));
}

function deliveryRow(api, webhookId, d) {
  return h('tr', { class: 'delivery', 'data-event': d.event_id }, [
    td(fmtTime(d.created)), td(d.type), td(h('span', { class: `badge delivery-${d.state}` }, d.state)), td(attempts(d.attempts)),
    td(d.next_attempt_ms ? fmtTime(Math.floor(d.next_attempt_ms / 1000)) : '—'),
    td(action('Redeliver', async () => {
      await api.post(`/v1/events/${enc(d.event_id)}/redeliver`, { webhook_id: webhookId });
      toast(`Event ${d.event_id} queued again.`);
    }, { class: 'btn btn-small', 'aria-label': `Redeliver event ${d.event_id}` })),
  ]);
}

// The delivery log of one webhook, newest first, with paging; open at first.
function deliveryLog(api, w) {
  const tbody = h('tbody');
  const box = h('div', { class: 'deliveries' });
  let cursor = null;
  const more = button('Load more deliveries', () => load(false).catch((e) => toast(errorText(e), true)), { hidden: true, class: 'btn btn-small' });
  const load = async (fresh) => {
    if (fresh) { cursor = null; clear(tbody); }
    const page = await api.get(`/v1/webhooks/${enc(w.id)}/deliveries${query({ limit: 50, cursor })}`);
    tbody.append(...(page.data || []).map((d) => deliveryRow(api, w.id, d)));
    cursor = page.next_cursor || null;
    more.hidden = !cursor;
    if (!tbody.children.length) tbody.append(h('tr', {}, h('td', { colspan: 6 }, 'No deliveries yet.')));
  };
  box.append(h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': `Deliveries of ${w.url}` }, h('table', {}, [
    h('caption', { class: 'sr-only' }, `Deliveries of ${w.url}`),
    h('thead', {}, h('tr', {}, ['Event time', 'Type', 'State', 'Attempts', 'Next attempt', 'Actions'].map((x) => h('th', { scope: 'col' }, x)))),
    tbody,
  ])), more);
  const toggle = action('Deliveries', async () => {
    const opening = box.hidden;
    if (opening) await load(true);
    box.hidden = !opening;
    toggle.setAttribute('aria-expanded', String(opening));
  }, { class: 'btn btn-small', 'aria-expanded': 'true', 'aria-label': `Deliveries of ${w.url}` });
  const ready = load(true).catch((e) => { clear(tbody).append(h('tr', {}, h('td', { colspan: 6 }, errorText(e)))); });
  return { toggle, box, ready };
}

function webhookCard(api, w, bots, show, reload) {
  const log = deliveryLog(api, w);
  const card = h('li', { class: 'webhook', 'data-id': w.id }, [
    h('p', { class: 'webhook-url' }, [h('code', {}, w.url)]),
    h('p', { class: 'hint' }, [`${botName(bots, w.bot_id)} · ${w.events.join(', ')} · secret ${w.secret_prefix} · created ${fmtTime(w.created)}`,
      w.previous_secret_expires ? ` · previous secret signs until ${fmtTime(w.previous_secret_expires)}` : '']),
    h('div', { class: 'actions' }, [
      log.toggle,
      action('Rotate secret', async () => {
        if (!(await confirmDialog('Make a new signing secret? The old one keeps signing for 24 hours.', 'Rotate'))) return;
        const rotated = await api.post(`/v1/webhooks/${enc(w.id)}/rotate`, { overlap_seconds: 86400 });
        show(secretBox(`New signing secret of ${w.id}`, rotated.secret));
        await reload();
      }, { class: 'btn btn-small' }),
      action('Delete', async () => {
        if (!(await confirmDialog(`Delete the webhook to ${w.url}? Its pending deliveries go with it.`, 'Delete'))) return;
        await api.del(`/v1/webhooks/${enc(w.id)}`);
        toast('Webhook deleted.');
        await reload();
      }, { class: 'btn btn-small btn-danger' }),
    ]),
    log.box,
  ]);
  return { card, ready: log.ready };
}

// The page appears whole, delivery logs loaded, once everything has come.
export async function render(main, { api }) {
  const top = header('Webhooks', 'docent POSTs signed events to these URLs. Each secret is shown once.');
  const bots = await loadBots(api);
  if (!bots.length) { main.append(...top, noBots()); return undefined; }
  const secretSlot = h('div', { class: 'secret-slot' });
  const listBox = h('div');
  const show = (box) => { clear(secretSlot).append(box); box.focus(); };
  const reload = async () => {
    const hooks = (await api.get('/v1/webhooks')).data || [];
    const cards = hooks.map((w) => webhookCard(api, w, bots, show, reload));
    await Promise.all(cards.map((c) => c.ready));
    clear(listBox).append(cards.length
      ? h('ul', { class: 'webhooks' }, cards.map((c) => c.card))
      : h('p', { class: 'empty' }, 'No webhooks yet.'));
  };
  await reload();
  main.append(...top, secretSlot, section('Create a webhook', createForm(api, bots, show, reload)), section('Webhooks', listBox));
  return undefined;
}
