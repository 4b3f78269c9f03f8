// API keys page: the list, creating a key (shown once), revoking and rotating.

import {
  h, clear, field, form, header, section, table, td, action, select, toast, confirmDialog, secretBox,
  fmtTime, splitList, loadBots, botChecks, checked,
} from '../ui.js';
import { enc } from '../api.js';

function scopeText(k) {
  return k.admin ? 'admin (every bot, management)' : (k.bots || []).join(', ');
}

function keyState(k) {
  const now = Date.now() / 1000;
  if (k.revoked) return `revoked ${fmtTime(k.revoked)}`;
  if (k.expires && k.expires <= now) return `expired ${fmtTime(k.expires)}`;
  if (k.expires) return `active until ${fmtTime(k.expires)}`;
  return 'active';
}

function createForm(api, bots, show, reload) {
  const name = h('input', { id: 'key-name', type: 'text', maxlength: 200 });
  const kind = select('key-kind', [['secret', 'Secret (sk_, for servers)'], ['public', 'Public (pk_, for the widget)']], 'secret');
  const env = select('key-env', [['live', 'Live'], ['test', 'Test']], 'live');
  const scope = select('key-scope', [['bots', 'Chosen bots'], ['admin', 'Admin: every bot, plus keys and bot management']], 'bots');
  const checks = botChecks(bots, 'key-bot');
  const origins = h('input', { id: 'key-origins', type: 'text', placeholder: 'https://www.example.com' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'key-create' }, 'Create key');
  const f = form({ class: 'stack', 'aria-label': 'Create a key' }, [
    field('Name (optional)', name), field('Kind', kind), field('Environment', env,
      'Test keys reach only test bots. The console lists live keys only.'),
    field('Scope', scope), checks,
    field('Allowed origins (public keys)', origins, 'Public keys need exactly one bot and at least one origin: scheme://host[:port], separated by spaces or commas.'),
  ], submit, async () => {
    const admin = scope.value === 'admin';
    const body = { admin, public: kind.value === 'public', test: env.value === 'test', bots: admin ? [] : checked(f, 'key-bot') };
    if (body.public) body.origins = splitList(origins.value);
    if (name.value.trim()) body.name = name.value.trim();
    const created = await api.post('/v1/keys', body);
    show(secretBox(`Key ${created.id} (${created.prefix})`, created.key));
    f.reset();
    await reload();
  });
  return f;
}

function row(api, k, show, reload) {
  const live = !k.revoked && !(k.expires && k.expires <= Date.now() / 1000);
  return h('tr', {}, [
    td(k.name || '—'), td(h('code', {}, k.id)), td(h('code', {}, k.prefix)), td(k.type), td(k.env), td(scopeText(k)),
    td((k.origins || []).join(', ') || '—'), td(fmtTime(k.created)), td(keyState(k)),
    td(live ? h('div', { class: 'row-actions' }, [
      action('Rotate', async () => {
        if (!(await confirmDialog(`Rotate ${k.prefix}? The old key keeps working for 24 hours.`, 'Rotate'))) return;
        const created = await api.post(`/v1/keys/${enc(k.id)}/rotate`, { overlap_seconds: 86400 });
        show(secretBox(`New key ${created.id} (${created.prefix}), replacing ${k.id}`, created.key));
        await reload();
      }, { class: 'btn btn-small', 'aria-label': `Rotate ${k.prefix}` }),
      action('Revoke', async () => {
        if (!(await confirmDialog(`Revoke ${k.prefix} now? Anything using it stops working at once.`, 'Revoke'))) return;
        await api.del(`/v1/keys/${enc(k.id)}`);
        toast(`Key ${k.id} revoked.`);
        await reload();
      }, { class: 'btn btn-small btn-danger', 'aria-label': `Revoke ${k.prefix}` }),
    ]) : '—'),
  ]);
}

export async function render(main, { api }) {
  main.append(...header('API keys', 'Keys are shown once, when made or rotated. The server keeps only their hashes.'));
  const bots = await loadBots(api);
  const secretSlot = h('div', { class: 'secret-slot' });
  const listBox = h('div');
  const show = (box) => { clear(secretSlot).append(box); box.focus(); };
  const reload = async () => {
    const keys = (await api.get('/v1/keys')).data || [];
    clear(listBox).append(table('API keys', ['Name', 'Id', 'Prefix', 'Kind', 'Env', 'Scope', 'Origins', 'Created', 'State', 'Actions'],
      keys.map((k) => row(api, k, show, reload))));
  };
  main.append(secretSlot, section('Create a key', createForm(api, bots, show, reload)), section('Keys', listBox));
  await reload();
  return undefined;
}
