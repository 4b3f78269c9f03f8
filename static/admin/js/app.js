// Console boot: the session, the nav by role, the hash router and page lifecycles.

import { api, setSession, onSessionLost } from './api.js';
import { h, clear, toast, errorText, forgetBots } from './ui.js';

const ROUTES = {
  overview: { title: 'Overview', load: () => import('./pages/overview.js'), owner: true },
  inbox: { title: 'Inbox', load: () => import('./pages/inbox.js') },
  conversations: { title: 'Conversations', load: () => import('./pages/conversations.js') },
  leads: { title: 'Leads', load: () => import('./pages/leads.js') },
  gaps: { title: 'Content gaps', load: () => import('./pages/gaps.js'), owner: true },
  bots: { title: 'Bots', load: () => import('./pages/bots.js'), owner: true },
  sources: { title: 'Sources', load: () => import('./pages/sources.js'), owner: true },
  keys: { title: 'API keys', load: () => import('./pages/keys.js'), owner: true },
  webhooks: { title: 'Webhooks', load: () => import('./pages/webhooks.js'), owner: true },
  accounts: { title: 'Accounts', load: () => import('./pages/accounts.js'), owner: true },
};

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let session = null;
let cleanup = null;
let generation = 0;

const isOwner = () => session && session.account.role === 'owner';
const defaultRoute = () => (isOwner() ? '#/overview' : '#/inbox');
const navigate = (hash) => { if (location.hash === hash) route(); else location.hash = hash; };

function setTitle(title) {
  document.title = `${title} · docent console`;
}

function endPage() {
  generation += 1;
  if (cleanup) {
    try { cleanup(); } catch (e) { console.error(e); }
  }
  cleanup = null;
}

function buildNav() {
  const links = Object.entries(ROUTES)
    .filter(([, r]) => !r.owner || isOwner())
    .map(([name, r]) => h('li', {}, h('a', { href: `#/${name}`, 'data-route': name }, r.title)));
  clear(nav).append(
    h('ul', { class: 'nav-links' }, links),
    h('div', { class: 'nav-account' }, [
      h('span', { class: 'who' }, `${session.account.email} (${session.account.role})`),
      h('button', { type: 'button', class: 'btn btn-small', id: 'logout', onclick: logout }, 'Log out'),
    ]),
  );
  nav.hidden = false;
}

function markNav(name) {
  for (const a of nav.querySelectorAll('a[data-route]')) {
    if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function focusMain() {
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

function message(title, text) {
  clear(main).append(h('h1', {}, title), h('p', { class: 'lead' }, text));
  setTitle(title);
}

async function route() {
  if (!session) return;
  const hash = location.hash;
  if (hash === '' || hash === '#' || hash === '#/') { location.replace(defaultRoute()); return; }
  if (!hash.startsWith('#/')) return;
  endPage();
  const mine = generation;
  const [name, ...rest] = hash.slice(2).split('/');
  let id = null;
  try {
    id = rest.length ? decodeURIComponent(rest.join('/')) : null;
  } catch {
    id = rest.join('/'); // a malformed escape stays as typed; the page then finds nothing
  }
  const r = ROUTES[name];
  markNav(name);
  // Busy until the page has its data: assistive technology (and the tests) wait on it.
  main.setAttribute('aria-busy', 'true');
  if (!r) {
    message('Page not found', 'There is no such page in the console.');
  } else if (r.owner && !isOwner()) {
    message('Not available for your role', 'This page is for owners. Agents work in the Inbox, Conversations and Leads.');
  } else {
    clear(main).append(h('p', { class: 'loading' }, 'Loading…'));
    setTitle(r.title);
    try {
      const page = await r.load();
      if (mine !== generation) return;
      // A page of its own: what a page adds after it was left lands nowhere.
      const root = h('div', { class: 'page' });
      clear(main).append(root);
      const done = await page.render(root, { api, session, params: { id }, navigate, setTitle });
      if (mine !== generation) { if (typeof done === 'function') done(); return; }
      cleanup = typeof done === 'function' ? done : null;
    } catch (err) {
      if (mine !== generation || !session) return;
      message(r.title, `This page could not be shown: ${errorText(err)}`);
    }
  }
  if (mine === generation) main.setAttribute('aria-busy', 'false');
  focusMain();
}

async function showLogin(notice) {
  endPage();
  session = null;
  setSession(null);
  forgetBots();
  nav.hidden = true;
  clear(nav);
  clear(main);
  setTitle('Log in');
  const page = await import('./pages/login.js');
  const root = h('div', { class: 'page page-login' });
  clear(main).append(root);
  await page.render(root, { api, notice, onLogin: start });
  focusMain();
}

function start(s) {
  session = s;
  setSession(s);
  buildNav();
  const hash = location.hash;
  if (hash.startsWith('#/') && hash !== '#/') route();
  else location.replace(defaultRoute()); // hashchange renders it
}

async function logout() {
  try { await api.post('/v1/auth/logout', {}, { quiet: true }); } catch (err) {
    if (err.status !== 401) { toast(errorText(err), true); return; }
  }
  history.replaceState(null, '', location.pathname + location.search);
  showLogin('You are logged out.');
}

async function boot() {
  onSessionLost(() => { if (session) showLogin('Your session ended. Log in again.'); });
  window.addEventListener('hashchange', route);
  document.getElementById('skip-link').addEventListener('click', (e) => { e.preventDefault(); focusMain(); });
  try {
    start(await api.get('/v1/auth/session', { quiet: true }));
  } catch (err) {
    if (err.status === 401 || err.status === 400) showLogin();
    else message('The console could not start', errorText(err));
  }
}

boot();
