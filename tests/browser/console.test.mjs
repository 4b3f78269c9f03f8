// Real-browser test of docent's operator console (static/admin), in headless Chromium via
// playwright-core, against a real server with the real small model. Run by the Rust
// integration test (tests/api/console.rs), which has started docent, the fixture site, a
// widget host page and a webhook receiver:
//
//   node tests/browser/console.test.mjs <config.json>
//
// Prints `ok - <step>` per step and `metric <name> <value>` lines; on the first failure
// prints the error, saves artifacts/console-failure-<step>.png and exits 1.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const HERE = fileURLToPath(new URL('./', import.meta.url));
const config = JSON.parse(fs.readFileSync(process.argv[2] || '', 'utf8'));
const DOCENT = config.docent.replace(/\/+$/, '');
const ADMIN = `${DOCENT}/admin`;
const ARTIFACTS = path.resolve(REPO, config.artifacts || 'tests/browser/artifacts');
const ANSWER_TIMEOUT = 180_000;
const AXE = fs.readFileSync(path.join(HERE, 'node_modules/axe-core/axe.min.js'), 'utf8');
const VIEWPORTS = { desktop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } };
fs.mkdirSync(ARTIFACTS, { recursive: true });

const deadline = setTimeout(() => {
  console.error('not ok - the console browser test took longer than 540 s');
  process.exit(1);
}, 540_000);

let browser;
let shotPage = null;
const pageErrors = [];
const cspViolations = [];

async function step(name, fn) {
  try {
    await fn();
    console.log(`ok - ${name}`);
  } catch (error) {
    console.log(`not ok - ${name}`);
    console.error(error);
    const slug = name.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').toLowerCase();
    if (shotPage) {
      await shotPage.screenshot({ path: path.join(ARTIFACTS, `console-failure-${slug}.png`), fullPage: true }).catch(() => {});
    }
    await browser?.close().catch(() => {});
    process.exit(1);
  }
}

async function newPage(ctx) {
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`));
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(`${page.url()}: ${m.text()}`);
  });
  shotPage = page;
  return page;
}

// Goes to a console route and waits for its heading.
async function visit(page, route, heading) {
  // A hash change keeps the document: mark the old page stale so the wait below is for
  // the new one.
  await page.evaluate(() => document.querySelector('main')?.setAttribute('aria-busy', 'stale')).catch(() => {});
  const target = `${ADMIN}#/${route}`;
  // Going to the URL the page is on changes no hash and renders nothing: load it again.
  if (page.url() === target) await page.reload();
  else await page.goto(target);
  const h1 = page.locator('main h1');
  if (heading) await h1.filter({ hasText: heading }).first().waitFor({ timeout: 15_000 });
  else await h1.first().waitFor({ timeout: 15_000 });
  // The page's data arrives after its heading: the console marks <main> busy until then.
  await page.locator('main[aria-busy="false"]').waitFor({ state: 'attached', timeout: 15_000 });
}

async function login(page, email, password) {
  await page.goto(ADMIN);
  await page.locator('#login-email').fill(email);
  await page.locator('#login-password').fill(password);
  await page.locator('#login-submit').click();
  await page.locator('#nav').waitFor({ state: 'visible', timeout: 15_000 });
}

// The API as the page's own session calls it (cookie; the CSRF token only when given).
function fetchIn(page, method, route, body, csrf) {
  return page.evaluate(async ({ method, route, body, csrf }) => {
    const headers = { 'Content-Type': 'application/json' };
    if (csrf) headers['X-CSRF-Token'] = csrf;
    const res = await fetch(route, { method, headers, body: body ? JSON.stringify(body) : undefined });
    const text = await res.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: res.status, json, text };
  }, { method, route, body, csrf });
}

/* ---------- the widget on the host page ---------- */

const widget = (page) => page.locator('[data-docent-widget]');
const $ = (page, css) => widget(page).locator(css);

async function openPanel(page) {
  if (!(await $(page, '.panel').isVisible())) await $(page, '.launcher').click();
  await $(page, '.panel').waitFor({ state: 'visible', timeout: 5_000 });
}

async function askInWidget(page, question) {
  await openPanel(page);
  const answers = $(page, '.msg.assistant:not(.greeting)');
  const before = await answers.count();
  await $(page, 'textarea').fill(question);
  await $(page, 'textarea').press('Enter');
  await page.waitForFunction((n) => {
    const root = document.querySelector('[data-docent-widget]').shadowRoot;
    const all = root.querySelectorAll('.msg.assistant:not(.greeting)');
    const last = all[all.length - 1];
    return all.length > n && /^(done|error)$/.test(last.getAttribute('data-state'));
  }, before, { timeout: ANSWER_TIMEOUT });
  return answers.last();
}

/* ---------- the run ---------- */

browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const owner = await browser.newContext({ viewport: VIEWPORTS.desktop });
const ownerPage = await newPage(owner);

await step('a. first visit: the login page is interactive fast, and the owner is made from the admin key', async () => {
  await ownerPage.goto(ADMIN);
  await ownerPage.locator('#login-email').waitFor({ state: 'visible', timeout: 15_000 });
  const tti = await ownerPage.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    return Math.round(performance.now() - (nav ? nav.startTime : 0));
  });
  assert.ok(tti > 0, `time to an interactive login form: ${tti} ms`);
  console.log(`metric console_time_to_interactive_ms ${tti}`);
  const policy = (await (await fetch(ADMIN)).headers.get('content-security-policy')) || '';
  assert.match(policy, /script-src 'self'/, `the console's CSP: ${policy}`);
  assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval/, `the console's CSP: ${policy}`);
  await ownerPage.locator('#setup-key').fill(config.admin_key);
  await ownerPage.locator('#setup-email').fill(config.owner_email);
  await ownerPage.locator('#setup-password').fill(config.owner_password);
  await ownerPage.locator('#setup-confirm').fill(config.owner_password);
  await ownerPage.locator('#setup-submit').click();
  await ownerPage.locator('#nav').waitFor({ state: 'visible', timeout: 15_000 });
  const session = await fetchIn(ownerPage, 'GET', '/v1/auth/session');
  assert.equal(session.status, 200, session.text);
  assert.equal(session.json.account.email, config.owner_email);
  assert.equal(session.json.account.role, 'owner');
  const stored = await ownerPage.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  assert.ok(!stored.includes(config.admin_key), 'the admin key is not kept in the browser');
});

let csrf;
await step('b. the owner creates a bot from the form and crawls the fixture site, watching the job', async () => {
  csrf = (await fetchIn(ownerPage, 'GET', '/v1/auth/session')).json.csrf_token;
  await visit(ownerPage, 'bots');
  await ownerPage.locator('#bot-id').fill('acme');
  await ownerPage.locator('#bot-name').fill('Acme Kettles');
  await ownerPage.locator('#bot-create').click();
  await ownerPage.waitForFunction(() => location.hash.startsWith('#/bots/acme'), null, { timeout: 15_000 })
    .catch(() => {});
  const bot = await fetchIn(ownerPage, 'GET', '/v1/bots/acme');
  assert.equal(bot.status, 200, `the bot exists: ${bot.text}`);
  assert.equal(bot.json.name, 'Acme Kettles');
  await visit(ownerPage, 'sources');
  const botSelect = ownerPage.locator('main select').first();
  await botSelect.selectOption('acme');
  await ownerPage.locator('#source-url').fill(config.site_url);
  await ownerPage.locator('#source-scope').selectOption('host');
  await ownerPage.locator('#source-max-pages').fill('40');
  await ownerPage.locator('#source-add').click();
  const status = ownerPage.locator('#job-status');
  await ownerPage.waitForFunction(() => /\b(done|failed)\s*$/.test(document.querySelector('#job-status')?.textContent || ''), null, { timeout: 120_000 });
  assert.match(await status.textContent(), /done\s*$/, 'the crawl job finished');
  const pages = await fetchIn(ownerPage, 'GET', '/v1/bots/acme/pages');
  assert.equal(pages.status, 200, pages.text);
  const listed = pages.json.data || pages.json.pages || pages.json;
  assert.ok(Array.isArray(listed) && listed.length >= 3, `pages indexed: ${pages.text.slice(0, 300)}`);
  // The source keeps the scope and page limit the form gave, and the table says them.
  const acme = await fetchIn(ownerPage, 'GET', '/v1/bots/acme');
  const source = acme.json.sources.find((s) => s.url === config.site_url);
  assert.deepEqual([source?.scope, source?.max_pages], ['host', 40], acme.text);
  await ownerPage.getByRole('cell', { name: 'The whole site (host)' }).first().waitFor({ timeout: 15_000 });
  await ownerPage.getByText(listed[0].url, { exact: false }).first().waitFor({ timeout: 15_000 });
  // One page removed from the list, with its passages.
  const rows = ownerPage.locator('.page-row');
  const count = await rows.count();
  await rows.first().locator('.remove-page').click();
  await ownerPage.locator('#confirm-ok').click();
  await ownerPage.waitForFunction((n) => document.querySelectorAll('.page-row').length === n - 1, count, { timeout: 15_000 });
  const after = await fetchIn(ownerPage, 'GET', '/v1/bots/acme/pages');
  assert.equal((after.json.data || []).length, listed.length - 1, after.text.slice(0, 300));
  // A PDF uploaded from the form is indexed by its job and listed under its base URL.
  await ownerPage.locator('#upload-files').setInputFiles(path.join(REPO, 'tests/fixtures/documents/refund-policy.pdf'));
  await ownerPage.locator('#upload-base-url').fill('https://acme.example/files/');
  await ownerPage.locator('#upload-send').click();
  await ownerPage.waitForFunction(() => /^https:\/\/acme\.example\/files\/.*\b(done|failed)\s*$/.test(document.querySelector('#job-status')?.textContent || ''), null, { timeout: 120_000 });
  assert.match(await status.textContent(), /1 indexed.*done\s*$/, 'the upload job indexed the PDF');
  await ownerPage.getByText('https://acme.example/files/refund-policy.pdf', { exact: false }).first().waitFor({ timeout: 15_000 });
  const uploaded = await fetchIn(ownerPage, 'GET', '/v1/bots/acme/pages');
  assert.equal((uploaded.json.data || []).length, listed.length, 'the upload added one page and removed none');
});

await step('c. a webhook created in the console shows its secret once', async () => {
  await visit(ownerPage, 'webhooks');
  await ownerPage.locator('#webhook-bot').selectOption('zephyr');
  await ownerPage.locator('#webhook-url').fill(config.receiver_url);
  await ownerPage.locator('#webhook-create').click();
  await ownerPage.locator('.secret-once').first().waitFor({ timeout: 15_000 });
  assert.match(await ownerPage.locator('.secret-once').first().textContent(), /whsec_/);
  const hooks = await fetchIn(ownerPage, 'GET', '/v1/webhooks');
  const made = (hooks.json.data || hooks.json).filter((w) => w.url === config.receiver_url);
  assert.equal(made.length, 1, hooks.text);
});

const visitorCtx = await browser.newContext({ viewport: VIEWPORTS.desktop });
const visitor = await newPage(visitorCtx);
let conversationId;
await step('d. a visitor asks in the widget, rates the answer down and asks for a person', async () => {
  await visitor.goto(config.host);
  const answer = await askInWidget(visitor, config.question);
  assert.equal(await answer.getAttribute('data-state'), 'done');
  const down = answer.locator('button[aria-label="Not helpful"]');
  await down.click();
  await visitor.waitForFunction(() => {
    const root = document.querySelector('[data-docent-widget]').shadowRoot;
    const all = root.querySelectorAll('.msg.assistant:not(.greeting) button[aria-label="Not helpful"]');
    return all.length && all[all.length - 1].getAttribute('aria-pressed') === 'true';
  }, null, { timeout: 15_000 });
  conversationId = await visitor.evaluate((bot) => localStorage.getItem(`docent:${bot}:conversation`), 'zephyr');
  assert.match(conversationId || '', /^conv_/);
  // The button shows the rating at once; the store has it when the request is answered.
  let transcript;
  const until = Date.now() + 15_000;
  do {
    const rated = await fetch(`${DOCENT}/v1/conversations/${conversationId}`, { headers: { Authorization: `Bearer ${config.admin_key}` } });
    transcript = await rated.json();
    if (transcript.ratings && transcript.ratings.down === 1) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  } while (Date.now() < until);
  assert.deepEqual(transcript.ratings, { up: 0, down: 1 }, JSON.stringify(transcript));
});

const agentCtx = await browser.newContext({ viewport: VIEWPORTS.desktop });
const agent = await newPage(agentCtx);
await step('e. the agent sees the handed-off conversation arrive in the inbox without reloading, and replies', async () => {
  await login(agent, config.agent_email, config.agent_password);
  await visit(agent, 'inbox');
  const loadedAt = await agent.evaluate(() => performance.timeOrigin);
  await $(visitor, '.human').getByText('Talk to a human').click();
  await $(visitor, '.notice.system').first().waitFor({ timeout: 15_000 });
  const item = agent.locator(`.inbox-item[data-id="${conversationId}"]`);
  await item.waitFor({ timeout: 20_000 });
  assert.equal(await agent.evaluate(() => performance.timeOrigin), loadedAt, 'the inbox updated without a reload');
  await item.click();
  await agent.locator('.message[data-role="user"]').first().waitFor({ timeout: 15_000 });
  await agent.locator('#reply-text').fill('Hi, this is Robin from support. I can help.');
  await agent.locator('#reply-send').click();
  const reply = $(visitor, '.msg.agent').filter({ hasText: 'Hi, this is Robin from support.' });
  await reply.first().waitFor({ state: 'visible', timeout: 20_000 });
  await agent.locator('.message[data-role="agent"]').filter({ hasText: 'Robin' }).first().waitFor({ timeout: 15_000 });
  await agent.screenshot({ path: path.join(ARTIFACTS, 'console-inbox-reply-desktop.png') });
  await agent.locator('#hand-back').click();
  await $(visitor, '.notice.system').filter({ hasText: "You're back with the assistant." }).first().waitFor({ timeout: 15_000 });
});

await step('f. the agent cannot open Keys or Webhooks, in the UI or through the API', async () => {
  for (const route of ['keys', 'webhooks', 'accounts']) {
    assert.equal(await agent.locator(`#nav a[href="#/${route}"]`).count(), 0, `no ${route} link for an agent`);
    await visit(agent, route);
    assert.doesNotMatch(await agent.locator('main').textContent(), /whsec_|pk_live|sk_live/);
  }
  const agentCsrf = (await fetchIn(agent, 'GET', '/v1/auth/session')).json.csrf_token;
  for (const [method, route, body] of [
    ['GET', '/v1/keys'], ['GET', '/v1/webhooks'], ['GET', '/v1/accounts'],
    ['POST', '/v1/keys', { kind: 'secret' }], ['PATCH', '/v1/bots/zephyr', { name: 'x' }],
  ]) {
    const res = await fetchIn(agent, method, route, body, agentCsrf);
    assert.equal(res.status, 403, `${method} ${route} as an agent: ${res.status} ${res.text}`);
  }
});

await step('g. thumbs down shows in Conversations and in analytics', async () => {
  await visit(ownerPage, 'conversations');
  await ownerPage.locator('#filter-rating').selectOption('down');
  const row = ownerPage.locator(`.conversation-row[data-id="${conversationId}"]`);
  await row.waitFor({ timeout: 15_000 });
  assert.equal(await ownerPage.locator('.conversation-row').count(), 1, 'only the rated-down conversation');
  await ownerPage.goto(`${ADMIN}#/conversations/${conversationId}`);
  await ownerPage.locator('.feedback[data-rating="down"]').first().waitFor({ timeout: 15_000 });
  await visit(ownerPage, 'overview');
  await ownerPage.locator('svg.chart').first().waitFor({ timeout: 15_000 });
  const report = await fetchIn(ownerPage, 'GET', '/v1/bots/zephyr/analytics');
  assert.equal(report.json.totals.feedback_down, 1, report.text.slice(0, 400));
});

await step('g2. an unanswered question shows in Gaps, the owner answers it, and the widget answers from it', async () => {
  await openPanel(visitor);
  await $(visitor, 'button[aria-label="New conversation"]').click();
  const declined = await askInWidget(visitor, config.gap_question);
  const declinedText = await declined.locator('.body').textContent();
  await visit(ownerPage, 'gaps');
  await ownerPage.locator('#gaps-bot').selectOption('zephyr');
  await ownerPage.locator('main form').first().locator('button[type="submit"]').click();
  const gap = ownerPage.locator('.gap').filter({ hasText: config.gap_question }).first();
  await gap.waitFor({ timeout: 15_000 }).catch(() => {
    throw new Error(`the question is not among the gaps (the bot said: ${declinedText})`);
  });
  await gap.locator('.write-answer').click();
  assert.equal(await ownerPage.locator('#answer-question').inputValue(), config.gap_question);
  await ownerPage.locator('#answer-text').fill(config.gap_answer);
  await ownerPage.locator('#answer-save').click();
  await ownerPage.locator('.answer').filter({ hasText: config.gap_answer }).first().waitFor({ timeout: 30_000 });
  await $(visitor, 'button[aria-label="New conversation"]').click();
  const answer = await askInWidget(visitor, config.gap_question);
  assert.equal(await answer.getAttribute('data-state'), 'done');
  const text = await answer.locator('.body').textContent();
  const cited = await answer.locator('.sources li').allTextContents();
  assert.ok(cited.some((c) => c.includes(config.gap_question)), `the curated answer is cited: ${cited} (answer: ${text})`);
  assert.match(text, config.gap_pattern ? new RegExp(config.gap_pattern, 'i') : /./, `answered from the curated answer: ${text}`);
});

await step('h. the webhook made in the console shows its deliveries in the log', async () => {
  await visit(ownerPage, 'webhooks');
  const rows = ownerPage.locator('.delivery');
  for (let i = 0; i < 60 && (await rows.count()) === 0; i++) {
    // The log may sit behind a per-webhook control, and deliveries take a moment.
    const open = ownerPage.getByRole('button', { name: /deliveries/i }).first();
    if (await open.count()) await open.click();
    await rows.first().waitFor({ timeout: 1_000 }).catch(() => {});
  }
  assert.ok((await rows.count()) > 0, 'the delivery log lists deliveries');
});

await step('i. a cross-origin form post and a request without the CSRF token are refused', async () => {
  const noToken = await fetchIn(ownerPage, 'POST', '/v1/bots', { id: 'csrf-test', name: 'x' });
  assert.equal(noToken.status, 403, noToken.text);
  assert.equal(noToken.json.error.code, 'csrf_failed');
  const wrongToken = await fetchIn(ownerPage, 'POST', '/v1/bots', { id: 'csrf-test', name: 'x' }, 'f'.repeat(32));
  assert.equal(wrongToken.status, 403, wrongToken.text);
  // A page on another origin (same site: loopback) posts a form to docent with the owner's cookie.
  const evil = await newPage(owner);
  await evil.goto(config.host);
  await evil.evaluate((target) => {
    const form = document.createElement('form');
    form.method = 'POST';
    form.action = target;
    const field = document.createElement('input');
    field.name = 'email';
    field.value = 'mallory@example.com';
    form.appendChild(field);
    document.body.appendChild(form);
    form.submit();
  }, `${DOCENT}/v1/accounts`);
  await evil.waitForLoadState('load');
  const body = await evil.locator('body').textContent();
  assert.match(body, /"error"/, `the form post was refused: ${body.slice(0, 300)}`);
  await evil.close();
  const accounts = await fetch(`${DOCENT}/v1/accounts`, { headers: { Authorization: `Bearer ${config.admin_key}` } });
  const list = await accounts.json();
  assert.ok(!(list.data || list).some((a) => a.email === 'mallory@example.com'), 'no account was made');
  const still = await fetchIn(ownerPage, 'GET', '/v1/auth/session');
  assert.equal(still.status, 200, 'the owner is still logged in');
  const ok = await fetchIn(ownerPage, 'POST', '/v1/bots', { id: 'csrf-test', name: 'With token' }, csrf);
  assert.equal(ok.status, 201, `with the token the same request works: ${ok.text}`);
});

const OWNER_PAGES = ['overview', 'bots', 'bots/zephyr', 'sources', 'conversations', `conversations/${'CONV'}`,
  'inbox', 'gaps', 'leads', 'keys', 'webhooks', 'accounts'];

await step('j. axe-core finds no serious or critical violations on any page, logged out, owner or agent', async () => {
  const audit = async (page, label) => {
    await page.evaluate(AXE);
    const result = await page.evaluate(async () => {
      const r = await window.axe.run(document, { resultTypes: ['violations'] });
      return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
        .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
    });
    assert.deepEqual(result, [], `axe on ${label}`);
  };
  // axe is injected as a script: a context that bypasses the CSP (the pages are the same).
  const ctx = await browser.newContext({ viewport: VIEWPORTS.desktop, bypassCSP: true });
  const page = await newPage(ctx);
  await page.goto(ADMIN);
  await page.locator('#login-email').waitFor();
  await audit(page, 'login');
  await login(page, config.owner_email, config.owner_password);
  for (const route of OWNER_PAGES) {
    await visit(page, route.replace('CONV', conversationId));
    await page.waitForTimeout(0);
    await audit(page, route);
  }
  await ctx.close();
  const agentAudit = await browser.newContext({ viewport: VIEWPORTS.phone, bypassCSP: true });
  const phone = await newPage(agentAudit);
  await login(phone, config.agent_email, config.agent_password);
  await visit(phone, 'inbox');
  await audit(phone, 'agent inbox (phone)');
  await agentAudit.close();
});

await step('k. screenshots of every page at 1280x800 and 390x844', async () => {
  for (const [name, viewport] of Object.entries(VIEWPORTS)) {
    await ownerPage.setViewportSize(viewport);
    for (const route of OWNER_PAGES) {
      const resolved = route.replace('CONV', conversationId);
      await visit(ownerPage, resolved);
      const slug = route.replace('CONV', 'transcript').replace(/[^a-z0-9]+/g, '-');
      await ownerPage.screenshot({ path: path.join(ARTIFACTS, `console-${slug}-${name}.png`) });
    }
  }
  await agent.setViewportSize(VIEWPORTS.phone);
  await visit(agent, 'inbox');
  await agent.screenshot({ path: path.join(ARTIFACTS, 'console-agent-inbox-phone.png') });
});

await step('console size, page errors and CSP', async () => {
  const dir = path.join(REPO, 'static/admin');
  let raw = 0;
  let gz = 0;
  const walk = (d) => fs.readdirSync(d, { withFileTypes: true }).forEach((e) => {
    const p = path.join(d, e.name);
    if (e.isDirectory()) return walk(p);
    const bytes = fs.readFileSync(p);
    raw += bytes.length;
    gz += zlib.gzipSync(bytes, { level: 9 }).length;
  });
  walk(dir);
  console.log(`metric console_bytes ${raw}`);
  console.log(`metric console_gzip_bytes ${gz}`);
  assert.ok(gz > 1000, `the console's files add up to ${gz} bytes gzipped`);
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the pages');
  assert.deepEqual(cspViolations, [], 'nothing the console does is refused by its CSP');
});

clearTimeout(deadline);
await browser.close();
process.exit(0);
