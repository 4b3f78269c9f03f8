// Bots page: the list and create form; a bot's settings, widget snippet, preview and deletion.

import {
  h, field, form, header, section, table, td, action, select, toast, confirmDialog, copyButton,
  fmtTime, fmtNum, lines, splitList, loadBots, forgetBots,
} from '../ui.js';
import { enc } from '../api.js';

const PREVIEW_ID = 'docent-preview-script';

function list(bots) {
  if (!bots.length) return h('p', { class: 'empty' }, 'No bots yet.');
  return table('Bots', ['Name', 'Id', 'Pages', 'Chunks', 'Environment', 'Updated'], bots.map((b) => h('tr', {}, [
    td(h('a', { href: `#/bots/${enc(b.id)}` }, b.name)), td(h('code', {}, b.id)), td(fmtNum(b.pages)),
    td(fmtNum(b.chunks)), td(b.test ? 'test' : 'live'), td(fmtTime(b.updated)),
  ])));
}

function createForm(api, navigate) {
  const name = h('input', { id: 'bot-name', type: 'text', required: true, maxlength: 200 });
  const id = h('input', { id: 'bot-id', type: 'text', pattern: '[a-z0-9\\-]{1,64}', maxlength: 64, autocomplete: 'off' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'bot-create' }, 'Create bot');
  return form({ class: 'grid-form' }, [
    field('Name', name),
    field('Id (optional)', id, 'Lowercase letters, digits and dashes; made from the name when empty. It cannot change later.'),
  ], submit, async () => {
    const bot = await api.post('/v1/bots', { name: name.value, ...(id.value ? { id: id.value } : {}) });
    forgetBots();
    toast(`Bot ${bot.name} created.`);
    navigate(`#/bots/${enc(bot.id)}`);
  });
}

const num = (v) => (v === '' ? null : Number(v));

function intentsText(intents) {
  return (intents || []).map((i) => [i.id, i.label, i.message].filter((x) => x != null).join(' | ')).join('\n');
}

function parseIntents(text) {
  return lines(text).map((line) => {
    const [id, label, ...rest] = line.split('|').map((s) => s.trim());
    if (!id || !label) throw new Error(`Intent "${line}": write id | label | message (the message is optional).`);
    const message = rest.join('|').trim();
    return message ? { id, label, message } : { id, label };
  });
}

function settingsFields(bot) {
  const lc = bot.lead_capture || { mode: 'off' };
  const c = {
    name: h('input', { id: 'set-name', type: 'text', required: true, maxlength: 200, value: bot.name }),
    system_prompt: h('textarea', { id: 'set-prompt', rows: 4, maxlength: 4000, value: bot.system_prompt || '' }),
    top_k: h('input', { id: 'set-topk', type: 'number', min: 1, max: 50, step: 1, value: bot.top_k ?? '' }),
    min_score: h('input', { id: 'set-minscore', type: 'number', min: -1, max: 1, step: 0.01, value: bot.min_score ?? '' }),
    fallback: h('textarea', { id: 'set-fallback', rows: 2, maxlength: 1000, value: bot.fallback || '' }),
    handoff_topics: h('textarea', { id: 'set-topics', rows: 3, value: (bot.handoff_topics || []).join('\n') }),
    mode: select('set-lead', [['off', 'Off'], ['on_detection', 'When a visitor types contact details'], ['after_messages', 'Also ask after N messages']], lc.mode),
    after: h('input', { id: 'set-lead-after', type: 'number', min: 1, max: 100, step: 1, value: lc.after_messages ?? 3 }),
    intents: h('textarea', { id: 'set-intents', rows: 3, value: intentsText(bot.intents) }),
    allowed_targets: h('textarea', { id: 'set-targets', rows: 2, value: (bot.allowed_targets || []).join('\n') }),
  };
  const fields = [
    field('Name', c.name),
    field('Instructions added to the system prompt', c.system_prompt, 'Up to 4000 characters.'),
    field('Passages per question (top_k)', c.top_k, '1 to 50; empty for the server default.'),
    field('Minimum similarity (min_score)', c.min_score, '-1 to 1; empty for the server default.'),
    field('Fallback contact text', c.fallback, 'Shown when the bot cannot answer or hands off. Up to 1000 characters.'),
    field('Handoff topics', c.handoff_topics, 'One per line: a name, optionally ":" and trigger words, e.g. "legal advice: sue, lawyer". Up to 20.'),
    field('Lead capture', c.mode),
    field('Ask for contact details after this many messages', c.after, 'Used by "Also ask after N messages" (1 to 100).'),
    field('Quick replies (intents)', c.intents, 'One per line: id | label | message (the message is optional). Up to 20.'),
    field('Private origins crawls may reach (allowed_targets)', c.allowed_targets, 'One origin per line, e.g. http://intranet:8080.'),
  ];
  return { c, fields };
}

function settingsBody(c) {
  const mode = c.mode.value;
  return {
    name: c.name.value,
    system_prompt: c.system_prompt.value.trim() || null,
    top_k: num(c.top_k.value),
    min_score: num(c.min_score.value),
    fallback: c.fallback.value.trim() || null,
    handoff_topics: lines(c.handoff_topics.value),
    lead_capture: mode === 'after_messages' ? { mode, after_messages: Number(c.after.value) } : { mode },
    intents: parseIntents(c.intents.value),
    allowed_targets: lines(c.allowed_targets.value),
  };
}

function settingsForm(api, bot, onSaved) {
  const { c, fields } = settingsFields(bot);
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'bot-save' }, 'Save settings');
  return form({ class: 'stack', 'aria-label': 'Bot settings' }, fields, submit, async () => {
    const saved = await api.patch(`/v1/bots/${enc(bot.id)}`, settingsBody(c));
    forgetBots();
    toast('Settings saved.');
    onSaved(saved);
  });
}

const snippetText = (bot, token) =>
  `<script src="${location.origin}/widget.js" data-bot="${bot.id}" data-token="${token}" async></script>`;

function widgetSection(api, bot) {
  const code = h('pre', { class: 'snippet', id: 'widget-snippet' }, snippetText(bot, bot.test ? 'pk_test_…' : 'pk_live_…'));
  const note = h('p', { class: 'hint', 'aria-live': 'polite' }, 'Replace the token with a public key of this bot, or make one below.');
  const origins = h('input', { id: 'snippet-origins', type: 'text', required: true, placeholder: 'https://www.example.com' });
  const submit = h('button', { type: 'submit', class: 'btn', id: 'snippet-key' }, 'Create a public key for this snippet');
  const keyForm = form({ class: 'stack' }, [
    field('Allowed origins of the pages that embed it', origins, 'scheme://host[:port], separated by spaces or commas.'),
  ], submit, async () => {
    const created = await api.post('/v1/keys', { public: true, bots: [bot.id], origins: splitList(origins.value), test: !!bot.test, name: `widget ${bot.id}` });
    code.textContent = snippetText(bot, created.key);
    note.textContent = `Public key ${created.id} is in the snippet. Copy it now: the key is shown only once.`;
  });
  return section('Widget', [
    h('p', {}, 'Paste this snippet before </body> on your site.'),
    code, h('div', { class: 'actions' }, copyButton(() => code.textContent, code, 'Copy snippet')), note, keyForm,
    h('div', { class: 'actions' }, action('Preview the widget here', () => preview(api, bot), { id: 'preview-widget' })),
  ]);
}

function removePreview() {
  if (window.Docent && typeof window.Docent.destroy === 'function') window.Docent.destroy();
  delete window.Docent;
  const old = document.getElementById(PREVIEW_ID);
  if (old) old.remove();
}

// The widget on this page, with a public key (made once per bot per tab) for this origin.
async function preview(api, bot) {
  const cacheKey = `docent.preview.${bot.id}`;
  let key = sessionStorage.getItem(cacheKey);
  if (!key) {
    const created = await api.post('/v1/keys', { public: true, bots: [bot.id], origins: [location.origin], test: !!bot.test, name: `console preview ${bot.id}` });
    key = created.key;
    sessionStorage.setItem(cacheKey, key);
  }
  removePreview();
  const script = document.createElement('script');
  script.id = PREVIEW_ID;
  script.src = '/widget.js';
  Object.assign(script.dataset, { bot: bot.id, token: key, open: 'true' });
  document.body.appendChild(script);
  toast('The widget is open at the bottom of the page.');
}

function dangerSection(api, bot, navigate) {
  return section('Delete this bot', [
    h('p', {}, 'Deletes the bot with its pages, conversations, leads and webhooks. This cannot be undone.'),
    action('Delete bot', async () => {
      if (!(await confirmDialog(`Delete bot ${bot.name} (${bot.id}) and everything in it?`, 'Delete'))) return;
      await api.del(`/v1/bots/${enc(bot.id)}`);
      forgetBots();
      sessionStorage.removeItem(`docent.preview.${bot.id}`);
      toast(`Bot ${bot.id} deleted.`);
      navigate('#/bots');
    }, { class: 'btn btn-danger', id: 'bot-delete' }),
  ], { class: 'card danger' });
}

async function detail(main, { api, params, navigate, setTitle }) {
  const bot = await api.get(`/v1/bots/${enc(params.id)}`);
  const title = h('h1', {}, bot.name);
  setTitle(bot.name);
  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/bots' }, '← All bots')), title,
    h('p', { class: 'lead' }, [h('code', {}, bot.id), ` · ${bot.test ? 'test' : 'live'} · ${fmtNum(bot.pages)} pages, ${fmtNum(bot.chunks)} chunks · `,
      h('a', { href: '#/sources' }, 'Sources')]),
    section('Settings', settingsForm(api, bot, (saved) => { title.textContent = saved.name; })),
    widgetSection(api, bot),
    dangerSection(api, bot, navigate),
  );
  return removePreview;
}

export async function render(main, ctx) {
  if (ctx.params.id) return detail(main, ctx);
  main.append(...header('Bots', 'Each bot answers from its own sources.'));
  const bots = await loadBots(ctx.api, true);
  main.append(section('Create a bot', createForm(ctx.api, ctx.navigate)), section('All bots', list(bots)));
  return undefined;
}
