// Accounts page: operator accounts: list, create (agents pick bots), end sessions, delete.

import {
  h, clear, field, form, header, section, table, td, action, select, toast, confirmDialog,
  fmtTime, loadBots, botChecks, checked,
} from '../ui.js';
import { enc } from '../api.js';

const MIN_PASSWORD = 12; // accounts.rs MIN_PASSWORD_CHARS

function createForm(api, bots, reload) {
  const email = h('input', { id: 'account-email', type: 'email', required: true, autocomplete: 'off' });
  const password = h('input', { id: 'account-password', type: 'password', required: true, minlength: MIN_PASSWORD, autocomplete: 'new-password' });
  const role = select('account-role', [['agent', 'Agent: inbox, conversations and leads of chosen bots'], ['owner', 'Owner: everything']], 'agent');
  const checks = botChecks(bots, 'account-bot', 'Bots this agent works on');
  role.addEventListener('change', () => { checks.hidden = role.value !== 'agent'; });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'account-create' }, 'Create account');
  const f = form({ class: 'stack', 'aria-label': 'Create an account' }, [
    field('Email', email), field('Password', password, `At least ${MIN_PASSWORD} characters. Give it to the person over a safe channel.`),
    field('Role', role), checks,
  ], submit, async () => {
    const body = { email: email.value.trim(), password: password.value, role: role.value };
    if (role.value === 'agent') {
      body.bots = checked(f, 'account-bot');
      if (!body.bots.length) throw new Error('An agent needs at least one bot.');
    }
    const created = await api.post('/v1/accounts', body);
    toast(`Account ${created.email} created.`);
    f.reset();
    checks.hidden = false;
    await reload();
  });
  return f;
}

function row(api, a, me, reload) {
  const self = a.id === me;
  return h('tr', { 'data-id': a.id }, [
    td(a.email, self ? ' (you)' : ''), td(a.role), td(a.role === 'owner' ? 'all' : (a.bots || []).join(', ')), td(fmtTime(a.created)),
    td(h('div', { class: 'row-actions' }, [
      action('End sessions', async () => {
        const msg = self ? 'Log yourself out everywhere, this tab included?' : `Log ${a.email} out everywhere?`;
        if (!(await confirmDialog(msg, 'End sessions'))) return;
        const r = await api.del(`/v1/accounts/${enc(a.id)}/sessions`);
        toast(`${r.ended} session${r.ended === 1 ? '' : 's'} ended.`);
      }, { class: 'btn btn-small', 'aria-label': `End sessions of ${a.email}` }),
      action('Delete', async () => {
        if (!(await confirmDialog(`Delete the account ${a.email}?${self ? ' It is yours: you will be logged out.' : ''}`, 'Delete'))) return;
        await api.del(`/v1/accounts/${enc(a.id)}`);
        toast(`Account ${a.email} deleted.`);
        await reload();
      }, { class: 'btn btn-small btn-danger', 'aria-label': `Delete ${a.email}` }),
    ])),
  ]);
}

export async function render(main, { api, session }) {
  main.append(...header('Accounts', 'People who log in to this console.'));
  const bots = await loadBots(api);
  const listBox = h('div');
  const reload = async () => {
    const accounts = (await api.get('/v1/accounts')).data || [];
    clear(listBox).append(table('Accounts', ['Email', 'Role', 'Bots', 'Created', 'Actions'],
      accounts.map((a) => row(api, a, session.account.id, reload))));
  };
  main.append(section('Create an account', createForm(api, bots, reload)), section('Accounts', listBox));
  await reload();
  return undefined;
}
