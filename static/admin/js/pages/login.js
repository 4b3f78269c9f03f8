// Login page, and the first owner's account made with the admin key.

import { h, field, form, section } from '../ui.js';

const MIN_PASSWORD = 12; // accounts.rs MIN_PASSWORD_CHARS

function input(id, type, attrs = {}) {
  return h('input', { id, name: id, type, required: true, ...attrs });
}

function loginForm(api, onLogin) {
  const email = input('login-email', 'email', { autocomplete: 'username' });
  const password = input('login-password', 'password', { autocomplete: 'current-password' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'login-submit' }, 'Log in');
  return form({ class: 'stack', 'aria-label': 'Log in' }, [field('Email', email), field('Password', password)], submit,
    async () => {
      try {
        const s = await api.post('/v1/auth/login', { email: email.value, password: password.value }, { quiet: true });
        password.value = '';
        onLogin(s);
      } catch (err) {
        if (err.code === 'rate_limited') {
          err.message = `Too many attempts. Wait ${err.retryAfter || 60} seconds, then try again.`;
        } else if (err.code === 'invalid_credentials') {
          err.message = 'The email or the password is wrong.';
        }
        throw err;
      }
    }, 'login-error');
}

function setupForm(api, onLogin) {
  const key = input('setup-key', 'password', { autocomplete: 'off', spellcheck: 'false' });
  const email = input('setup-email', 'email', { autocomplete: 'off' });
  const password = input('setup-password', 'password', { autocomplete: 'new-password', minlength: MIN_PASSWORD });
  const confirm = input('setup-confirm', 'password', { autocomplete: 'new-password', minlength: MIN_PASSWORD });
  const submit = h('button', { type: 'submit', class: 'btn', id: 'setup-submit' }, 'Create the owner account');
  const fields = [
    field('Admin key', key, 'The sk_live_… key in DATA_DIR/admin.key. It is used for this request only and never stored.'),
    field('Owner email', email),
    field('Password', password, `At least ${MIN_PASSWORD} characters.`),
    field('Confirm the password', confirm),
  ];
  return form({ class: 'stack', 'aria-label': 'Create the owner account' }, fields, submit, async () => {
    if (password.value !== confirm.value) throw new Error('The two passwords differ.');
    const body = { email: email.value, password: password.value, role: 'owner' };
    const bearer = key.value.trim();
    await api.post('/v1/accounts', body, { bearer });
    key.value = '';
    const s = await api.post('/v1/auth/login', { email: email.value, password: password.value }, { quiet: true });
    password.value = '';
    confirm.value = '';
    onLogin(s);
  }, 'setup-error');
}

export async function render(main, { api, notice, onLogin }) {
  main.append(
    h('div', { class: 'login' }, [
      h('h1', {}, 'Log in to the docent console'),
      notice ? h('p', { class: 'notice', role: 'status' }, notice) : null,
      h('div', { class: 'card' }, loginForm(api, onLogin)),
      section('First time here? Create the owner account with the admin key', [
        h('p', { class: 'hint' }, 'docent has no default account. With the admin key that docent serve wrote on its first start, make the first owner here; more accounts are made on the Accounts page.'),
        setupForm(api, onLogin),
      ], { class: 'card setup' }),
    ]),
  );
  return undefined;
}
