// Real-browser test of docent's chat widget (static/widget.js), in headless Chromium via
// playwright-core. Run by the Rust integration test, which has started docent (real model)
// and the host pages (tests/browser/host.html) on an allowed and a disallowed origin:
//
//   node tests/browser/widget.test.mjs <config.json>
//
// Prints `ok - <step>` per step and `metric <name> <value>` lines; on the first failure
// prints the error, saves artifacts/failure-<step>.png and exits 1.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const config = JSON.parse(fs.readFileSync(process.argv[2] || '', 'utf8'));
const DOCENT = config.docent.replace(/\/+$/, '');
const BOT = config.bot;
const ARTIFACTS = path.resolve(REPO, config.artifacts || 'tests/browser/artifacts');
const LOCAL = `docent:${BOT}:`;
const ANSWER_TIMEOUT = 180_000;
fs.mkdirSync(ARTIFACTS, { recursive: true });

const deadline = setTimeout(() => {
  console.error('not ok - the browser test took longer than 480 s');
  process.exit(1);
}, 480_000);

let browser;
let shotPage = null; // the page to photograph when a step fails
const pageErrors = [];

// A step may return {skip: reason} when the config lacks what it needs.
async function step(name, fn) {
  try {
    const result = await fn();
    console.log(`ok - ${name}${result?.skip ? ` # skipped: ${result.skip}` : ''}`);
  } catch (error) {
    console.log(`not ok - ${name}`);
    console.error(error);
    const slug = name.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').toLowerCase();
    if (shotPage) {
      await shotPage.screenshot({ path: path.join(ARTIFACTS, `failure-${slug}.png`), fullPage: true }).catch(() => {});
    }
    await browser?.close().catch(() => {});
    process.exit(1);
  }
}

/* ---------- helpers ---------- */

async function newContext(options = {}) {
  const ctx = await browser.newContext(options);
  // Timestamps the widget's ready event for the time-to-interactive metric.
  await ctx.addInitScript(() => {
    window.addEventListener('docent:ready', () => { window.__docentReadyAt = performance.now(); });
  });
  return ctx;
}

async function openPage(ctx, url) {
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`));
  page.on('dialog', (d) => { page.__dialogs = (page.__dialogs || 0) + 1; d.dismiss().catch(() => {}); });
  shotPage = page;
  await page.goto(url);
  await page.waitForFunction(() => window.__docentReadyAt != null, null, { timeout: 20_000 });
  return page;
}

// Locators inside the widget (Playwright's CSS engine pierces the open shadow root).
const widget = (page) => page.locator('[data-docent-widget]');
const $ = (page, css) => widget(page).locator(css);

// Runs fn(shadowRoot, arg) in the page.
function inShadow(page, fn, arg) {
  return page.evaluate(`(${fn})(document.querySelector('[data-docent-widget]').shadowRoot, ${JSON.stringify(arg ?? null)})`);
}

async function openPanel(page) {
  if (!(await $(page, '.panel').isVisible())) await $(page, '.launcher').click();
  await $(page, '.panel').waitFor({ state: 'visible', timeout: 5_000 });
}

const answerCount = (page) => inShadow(page, (root) => root.querySelectorAll('.msg.assistant:not(.greeting)').length);

// Waits until there are more than `before` answers and the last one finished (or failed).
function waitForAnswer(page, before) {
  return page.waitForFunction((n) => {
    const root = document.querySelector('[data-docent-widget]').shadowRoot;
    const answers = root.querySelectorAll('.msg.assistant:not(.greeting)');
    const last = answers[answers.length - 1];
    return answers.length > n && /^(done|error)$/.test(last.getAttribute('data-state'));
  }, before, { timeout: ANSWER_TIMEOUT });
}

// Types a question, sends it with Enter and waits for its answer to finish (or fail).
// Returns the answer's bubble state and text.
async function ask(page, question) {
  await openPanel(page);
  const before = await answerCount(page);
  const input = $(page, 'textarea');
  await input.fill(question);
  await input.press('Enter');
  await waitForAnswer(page, before);
  return inShadow(page, (root) => {
    const answers = root.querySelectorAll('.msg.assistant:not(.greeting)');
    const last = answers[answers.length - 1];
    return { state: last.getAttribute('data-state'), text: last.querySelector('.body').textContent };
  });
}

// Everything in the widget is inert: no script, markup from text, handler or bad link.
async function assertInert(page, what) {
  await page.waitForTimeout(300); // let any (wrongly) created <img onerror> fire
  const report = await inShadow(page, (root) => {
    const all = [...root.querySelectorAll('*')];
    return {
      pwned: window.__pwned,
      scripts: root.querySelectorAll('script').length,
      images: [...root.querySelectorAll('img')].filter((i) => !i.classList.contains('avatar')).length,
      svgOnload: root.querySelectorAll('svg[onload]').length,
      frames: root.querySelectorAll('iframe, object, embed').length,
      onAttributes: all.flatMap((el) => [...el.attributes].filter((a) => /^on/i.test(a.name)).map((a) => `${el.tagName}[${a.name}]`)),
      badLinks: [...root.querySelectorAll('a[href]')].map((a) => a.getAttribute('href')).filter((h) => !/^(https?:|mailto:)/i.test(h)),
    };
  });
  assert.equal(report.pwned, undefined, `${what}: injected code ran (window.__pwned = ${report.pwned})`);
  assert.equal(page.__dialogs || 0, 0, `${what}: a dialog was opened`);
  assert.equal(report.scripts, 0, `${what}: <script> elements in the widget`);
  assert.equal(report.images, 0, `${what}: <img> elements (other than the avatar) in the widget`);
  assert.equal(report.svgOnload, 0, `${what}: svg[onload] in the widget`);
  assert.equal(report.frames, 0, `${what}: iframe/object/embed in the widget`);
  assert.deepEqual(report.onAttributes, [], `${what}: elements with on* attributes`);
  assert.deepEqual(report.badLinks, [], `${what}: links that are not http(s)/mailto`);
}

const localGet = (page, key) => page.evaluate((k) => localStorage.getItem(k), LOCAL + key);

/* ---------- the run ---------- */

browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const desktop = await newContext({ viewport: { width: 1280, height: 800 } });
let page;
let conversationId;

await step('a. host page loads the widget; host CSS does not leak in', async () => {
  page = await openPage(desktop, config.host);
  const timing = await page.evaluate((url) => {
    const entry = performance.getEntriesByName(url)[0]
      || performance.getEntriesByType('resource').find((e) => e.name.includes('/widget.js'));
    return { ready: window.__docentReadyAt, start: entry.startTime, arrived: entry.responseEnd };
  }, `${DOCENT}/widget.js`);
  // The widget marks itself ready (a number it sets), and only after its script arrived:
  // the metric times the script's fetch and start, not something before it.
  assert.ok(Number.isFinite(timing.ready), `the widget marked itself ready: ${JSON.stringify(timing)}`);
  assert.ok(timing.arrived > timing.start && timing.ready >= timing.arrived, `ready after widget.js arrived: ${JSON.stringify(timing)}`);
  const tti = timing.ready - timing.start;
  console.log(`metric time_to_interactive_ms ${Math.round(tti)}`);
  // And until the widget holds its session (the first question can go out at once).
  await page.waitForFunction(() => performance.getEntriesByType('resource').some((e) => e.name.includes('/v1/widget/session') && e.responseEnd > 0), null, { timeout: 20_000 });
  const sessionReady = await page.evaluate(() => {
    const resources = performance.getEntriesByType('resource');
    const script = resources.find((e) => e.name.includes('/widget.js'));
    const session = resources.find((e) => e.name.includes('/v1/widget/session') && e.responseEnd > 0);
    return session.responseEnd - script.startTime;
  });
  console.log(`metric time_to_session_ms ${Math.round(sessionReady)}`);

  const launcher = $(page, '.launcher');
  await launcher.waitFor({ state: 'visible', timeout: 5_000 });
  assert.equal(await launcher.getAttribute('aria-label'), 'Open chat');
  assert.equal(await launcher.getAttribute('aria-expanded'), 'false');
  assert.ok(await launcher.getAttribute('aria-controls'), 'launcher has aria-controls');
  const look = await inShadow(page, (root) => {
    const s = getComputedStyle(root.querySelector('.launcher'));
    const r = root.querySelector('.launcher').getBoundingClientRect();
    return { width: s.width, height: s.height, background: s.backgroundColor, color: s.color, opacity: s.opacity, transform: s.transform, box: { x: r.x, y: r.y, right: innerWidth - r.right, bottom: innerHeight - r.bottom } };
  });
  assert.equal(look.width, '56px', 'launcher width untouched by host CSS');
  assert.equal(look.height, '56px', 'launcher height untouched by host CSS');
  assert.equal(look.background, 'rgb(15, 118, 110)', 'launcher has the data-color accent');
  assert.equal(look.color, 'rgb(255, 255, 255)', 'launcher icon colour untouched by host CSS');
  assert.equal(look.opacity, '1', 'launcher opacity untouched by host CSS');
  assert.equal(look.transform, 'none', 'launcher transform untouched by host CSS');
  assert.ok(Math.abs(look.box.right - 20) <= 1 && Math.abs(look.box.bottom - 20) <= 1, `launcher sits bottom-right: ${JSON.stringify(look.box)}`);
});

await step('b. a question streams an answer with a source link that opens a popup', async () => {
  await $(page, '.launcher').click();
  await $(page, '.panel').waitFor({ state: 'visible', timeout: 5_000 });
  assert.equal(await $(page, '.launcher').getAttribute('aria-expanded'), 'true');
  assert.equal(await $(page, '.panel').getAttribute('role'), 'dialog');
  assert.equal(await $(page, '.log').getAttribute('role'), 'log');
  assert.equal(await inShadow(page, (root) => root.activeElement?.tagName), 'TEXTAREA', 'opening focuses the textarea');
  const font = await inShadow(page, (root) => getComputedStyle(root.querySelector('.title')).fontSize);
  assert.equal(font, '16px', 'header font size untouched by host CSS');

  // Sample the answer bubble while it streams.
  await page.evaluate(() => {
    const root = document.querySelector('[data-docent-widget]').shadowRoot;
    window.__lengths = [];
    window.__sawThinking = false;
    window.__sampler = setInterval(() => {
      const answers = root.querySelectorAll('.msg.assistant:not(.greeting)');
      const last = answers[answers.length - 1];
      if (!last) return;
      const state = last.getAttribute('data-state');
      const thinking = last.querySelector('.thinking');
      if (state === 'thinking' && thinking && thinking.textContent.includes('Thinking…')) window.__sawThinking = true;
      const n = last.querySelector('.body').textContent.length;
      if (state === 'streaming' && n && window.__lengths[window.__lengths.length - 1] !== n) window.__lengths.push(n);
    }, 10);
  });
  const answer = await ask(page, config.question);
  const { lengths, sawThinking } = await page.evaluate(() => {
    clearInterval(window.__sampler);
    return { lengths: window.__lengths, sawThinking: window.__sawThinking };
  });
  assert.equal(answer.state, 'done', `the answer finished (state ${answer.state}): ${answer.text}`);
  assert.ok(answer.text.trim().length > 0, 'the answer has text');
  assert.ok(sawThinking, 'the thinking indicator ("Thinking…") showed before the first delta');
  assert.ok(lengths.length >= 2, `the answer grew while streaming (lengths seen: ${lengths.join(', ')})`);
  console.log(`metric streamed_lengths_seen ${lengths.length}`);

  const sourceLink = $(page, '.msg.assistant[data-state="done"] .sources a[href]').last();
  await sourceLink.waitFor({ state: 'visible', timeout: 5_000 });
  // The list is numbered as the answer cites: every [n] marker has its n. in the list.
  const numbering = await inShadow(page, (root) => {
    const answers = root.querySelectorAll('.msg.assistant[data-state="done"]');
    const last = answers[answers.length - 1];
    return {
      cited: [...last.querySelectorAll('sup')].map((s) => s.textContent.trim()),
      listed: [...last.querySelectorAll('.sources li')].map((li) => String(li.value)),
    };
  });
  assert.ok(numbering.cited.length > 0, 'the answer cites its source');
  for (const n of numbering.cited) assert.ok(numbering.listed.includes(n), `source [${n}] is listed as ${n}.: ${JSON.stringify(numbering)}`);
  const href = await sourceLink.getAttribute('href');
  assert.match(href, /^https?:\/\//, 'source link is http(s)');
  assert.equal(await sourceLink.getAttribute('target'), '_blank');
  assert.match(await sourceLink.getAttribute('rel'), /noopener/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'widget-desktop.png'), fullPage: true });

  // The external site is not reachable from the test: answer it locally.
  const target = new URL(href).href;
  const fetched = target.replace(/#.*$/, ''); // what goes over the network
  await desktop.route((u) => u.href === fetched, (route) => route.fulfill({ contentType: 'text/html', body: '<title>source</title>' }));
  const [popup] = await Promise.all([page.waitForEvent('popup', { timeout: 10_000 }), sourceLink.click()]);
  await popup.waitForLoadState('domcontentloaded').catch(() => {});
  assert.ok([target, fetched].includes(popup.url()), `the popup opened the source URL (${popup.url()}, expected ${target})`);
  await popup.close();

  conversationId = await localGet(page, 'conversation');
  assert.match(conversationId || '', /^conv_/, 'the conversation id is stored');
  assert.match(await localGet(page, 'visitor_key') || '', /^[A-Za-z0-9]{32}$/, 'the visitor key is stored');
});

await step('c. after a reload the conversation comes back from the transcript', async () => {
  await page.reload();
  await page.waitForFunction(() => window.__docentReadyAt != null, null, { timeout: 20_000 });
  await $(page, '.msg.user').first().waitFor({ state: 'attached', timeout: 15_000 });
  await $(page, '.msg.assistant[data-state="done"]').first().waitFor({ state: 'attached', timeout: 15_000 });
  const shown = await inShadow(page, (root) => ({
    user: [...root.querySelectorAll('.msg.user')].map((m) => m.textContent),
    answers: [...root.querySelectorAll('.msg.assistant:not(.greeting)')].map((m) => m.querySelector('.body').textContent),
  }));
  assert.ok(shown.user.some((t) => t.trim() === config.question.trim()), `the question is shown again: ${JSON.stringify(shown.user)}`);
  assert.ok(shown.answers.length >= 1 && shown.answers[0].trim().length > 0, 'the answer is shown again');
  assert.equal(await localGet(page, 'conversation'), conversationId, 'same conversation id');
});

await step('d. hostile content (mocked stream, then the real model) stays inert', async () => {
  const origin = new URL(config.host).origin;
  const event = (o) => `data: ${JSON.stringify(o)}\n\n`;
  const hostile = [
    'Careful:\n\n<scr', 'ipt>window.__pwned=1</scr', 'ipt>\n\n',
    '<img src=x onerror="window.__pw', 'ned=2">\n\n',
    '[click](javascr', 'ipt:window.__pwned=3)\n\n',
    '<a href="javascript:window.__pwned=4">x</a> <svg onload="window.__pwned=5">\n\n',
    '&lt;img src=x onerror=window.__pwned=6&gt;\n\n',
    '<iframe src="javascript:window.__pwned=8"></iframe> <img src=x onerror=alert(1)>\n\n',
    'See [1].',
  ];
  await page.route('**/v1/chat', async (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    const sent = JSON.parse(route.request().postData() || '{}');
    const conv = sent.conversation_id || 'conv_hostile';
    // Split one event mid-JSON-escape (the \" inside onerror) and others across lines.
    const deltas = hostile.map((delta) => event({ delta })).join('');
    const body = event({ event: 'start', conversation_id: conv }) + ': keep-alive\n\n'
      + deltas
      + event({
        event: 'done', conversation_id: conv, message_id: 'msg_hostile', finish_reason: 'stop', answered: true, cited: [1],
        sources: [{ index: 1, title: '<b onmouseover="window.__pwned=9">t</b>', url: 'javascript:window.__pwned=7', snippet: '' }],
        actions: [], fallback: null,
      });
    await route.fulfill({
      status: 200,
      headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'access-control-allow-origin': origin },
      body,
    });
  });
  const answer = await ask(page, 'Show me something hostile');
  await page.unroute('**/v1/chat');
  assert.equal(answer.state, 'done', 'the mocked answer finished');
  assert.equal(answer.text.replace(/\s+/g, ' ').includes('<script>window.__pwned=1</script>'), true, `literal <script> text is in the bubble: ${answer.text}`);
  assert.ok(answer.text.includes('&lt;img src=x onerror=window.__pwned=6&gt;'), 'entities are not decoded');
  assert.ok(answer.text.includes('click'), 'the javascript: link keeps its text');
  const visible = await $(page, '.msg.assistant[data-state="done"] .body').last().innerText();
  assert.ok(visible.includes('<script>'), 'the literal text <script> is visible');
  const sources = await $(page, '.msg.assistant[data-state="done"]').last().locator('.sources').innerText();
  assert.ok(sources.includes('<b onmouseover='), 'a hostile source title shows as text');
  // Markup split across deltas (and one delta split mid-escape) shows joined, as text.
  const shownText = answer.text.replace(/\s+/g, ' ');
  for (const literal of [
    '<img src=x onerror="window.__pwned=2">',
    '<svg onload="window.__pwned=5">',
    '<iframe src="javascript:window.__pwned=8"></iframe>',
  ]) assert.ok(shownText.includes(literal), `${literal} shown as text: ${shownText}`);
  await assertInert(page, 'mocked hostile stream');

  const real = await ask(page, config.hostile_question);
  assert.equal(real.state, 'done', `the real hostile answer finished (state ${real.state}): ${real.text}`);
  await assertInert(page, 'real hostile answer');
});

await step('e. the lead form appears after an answer and submits', async () => {
  const form = $(page, 'form.lead');
  if (!(await form.count())) {
    const again = await ask(page, config.question);
    assert.equal(again.state, 'done', `answer before the lead form finished (state ${again.state})`);
  }
  await form.last().waitFor({ state: 'visible', timeout: 10_000 });
  await form.last().locator('input[name="name"]').fill('Ada Lovelace');
  await form.last().locator('input[name="email"]').fill('ada@example.com');
  await form.last().locator('input[name="consent"]').check();
  assert.equal(await form.last().locator('input[name="email"]').getAttribute('type'), 'email');
  assert.ok(await form.last().getByText('You may contact me about my question').count(), 'consent label');
  await form.last().locator('button[type="submit"]').click();
  await $(page, '.thanks').getByText("Thanks — we'll be in touch.").waitFor({ timeout: 15_000 });
  const id = await localGet(page, 'conversation');
  assert.equal(await localGet(page, `lead:${id}`), '1', 'the lead is remembered for the conversation');
});

await step('f. talk to a human: the waiting notice, then the agent reply arrives live', async () => {
  await $(page, '.human').getByText('Talk to a human').click();
  await $(page, '.notice.system').getByText("You're now waiting for a person. They'll reply here.").waitFor({ timeout: 15_000 });
  const id = await localGet(page, 'conversation');
  assert.match(id || '', /^conv_/);
  const res = await fetch(`${DOCENT}/v1/conversations/${encodeURIComponent(id)}/messages`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${config.secret_key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ role: 'agent', content: 'Hi, this is Sam from support.', author: 'Sam' }),
  });
  assert.equal(res.status, 201, `posting the agent reply: ${res.status} ${await res.text()}`);
  const reply = $(page, '.msg.agent').filter({ hasText: 'Hi, this is Sam from support.' });
  await reply.first().waitFor({ state: 'visible', timeout: 15_000 });
  assert.equal((await reply.first().locator('.author').innerText()).trim(), 'Sam', 'the agent reply shows its author');
  assert.equal(await reply.count(), 1, 'the agent reply is shown once');
});

await step('g. a disallowed origin gets no working chat', async () => {
  const ctx = await newContext({ viewport: { width: 1280, height: 800 } });
  const okChats = [];
  ctx.on('response', (r) => { if (r.url().includes('/v1/chat') && r.status() === 200) okChats.push(r.url()); });
  const other = await openPage(ctx, config.other_host);
  await openPanel(other);
  const input = $(other, 'textarea');
  await input.fill(config.question);
  await input.press('Enter');
  await $(other, '.notice.error').first().waitFor({ state: 'visible', timeout: 20_000 });
  const noticeText = await $(other, '.notice.error').first().textContent();
  assert.match(noticeText, /help@zephyr\.example/, `the page's data-fallback instead of a dead end: ${noticeText}`);
  const answers = await inShadow(other, (root) => [...root.querySelectorAll('.msg.assistant:not(.greeting) .body')].map((b) => b.textContent.trim()).filter(Boolean));
  assert.deepEqual(answers, [], 'no answer bubble on a disallowed origin');
  assert.deepEqual(okChats, [], 'no /v1/chat request succeeded');
  const direct = await other.evaluate(async ({ docent, bot }) => {
    const token = document.querySelector('script[data-token]').dataset.token;
    try {
      const r = await fetch(`${docent}/v1/widget/session`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token, bot_id: bot, visitor_key: 'abcdefghijklmnopqrstuv' }),
      });
      return { status: r.status };
    } catch (e) {
      return { error: e.name };
    }
  }, { docent: DOCENT, bot: BOT });
  assert.ok(direct.error === 'TypeError' || direct.status === 403, `the session request is refused: ${JSON.stringify(direct)}`);
  await ctx.close();
  shotPage = page;
});

await step('h. on a 390x844 phone the panel is full-screen', async () => {
  const ctx = await newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  // The same visitor on their phone: the conversation so far (answer, lead, agent reply).
  const stored = await page.evaluate((prefix) => ({
    visitor_key: localStorage.getItem(prefix + 'visitor_key'),
    conversation: localStorage.getItem(prefix + 'conversation'),
  }), LOCAL);
  await ctx.addInitScript(({ prefix, stored }) => {
    for (const [k, v] of Object.entries(stored)) if (v) localStorage.setItem(prefix + k, v);
  }, { prefix: LOCAL, stored });
  const phone = await openPage(ctx, config.host);
  await $(phone, '.launcher').tap();
  await $(phone, '.panel').waitFor({ state: 'visible', timeout: 5_000 });
  // Until the opening animation is over (none left running on the panel).
  await phone.waitForFunction(() => document.querySelector('[data-docent-widget]').shadowRoot
    .querySelector('.panel').getAnimations().every((a) => a.playState === 'finished'), null, { timeout: 5_000 });
  const box = await $(phone, '.panel').boundingBox();
  const near = (a, b) => Math.abs(a - b) <= 1;
  assert.ok(near(box.x, 0) && near(box.y, 0) && near(box.width, 390) && near(box.height, 844), `panel fills the viewport: ${JSON.stringify(box)}`);
  assert.equal(await $(phone, '.launcher').isVisible(), false, 'launcher hidden while full-screen');
  await $(phone, '.msg.agent').first().waitFor({ state: 'visible', timeout: 15_000 });
  await phone.screenshot({ path: path.join(ARTIFACTS, 'widget-390x844.png') });
  await ctx.close();
  shotPage = page;
});

await step('i. keyboard: Escape, Enter on the launcher, Shift+Enter, Enter', async () => {
  await openPanel(page);
  await $(page, 'textarea').focus();
  await page.keyboard.press('Escape');
  await $(page, '.panel').waitFor({ state: 'hidden', timeout: 5_000 });
  assert.equal(await inShadow(page, (root) => root.activeElement?.className), 'launcher', 'focus returns to the launcher');
  await page.keyboard.press('Enter');
  await $(page, '.panel').waitFor({ state: 'visible', timeout: 5_000 });
  assert.equal(await inShadow(page, (root) => root.activeElement?.tagName), 'TEXTAREA', 'focus lands on the textarea');
  const users = await $(page, '.msg.user').count();
  await page.keyboard.type('first line');
  await page.keyboard.press('Shift+Enter');
  await page.keyboard.type('second line');
  assert.ok((await $(page, 'textarea').inputValue()).includes('\n'), 'Shift+Enter inserts a newline');
  await page.keyboard.press('Enter');
  await page.waitForFunction((n) => document.querySelector('[data-docent-widget]').shadowRoot.querySelectorAll('.msg.user').length > n, users, { timeout: 10_000 });
  assert.equal((await $(page, '.msg.user').last().innerText()).trim(), 'first line\nsecond line', 'Enter sent the two lines');
  assert.equal(await $(page, 'textarea').inputValue(), '', 'the textarea is cleared');
});

await step('j. same origin: docent\'s /demo page (ask, reload, talk to a human)', async () => {
  if (!config.demo) return { skip: 'no demo in config' };
  // /demo is served by docent itself: the widget's API origin is the page's, so the
  // browser sends no Origin header on its GET requests (transcript, live feed).
  const ctx = await newContext({ viewport: { width: 1280, height: 800 } });
  const gets = [];
  ctx.on('response', (r) => {
    if (r.request().method() === 'GET' && new URL(r.url()).pathname.startsWith('/v1/conversations/')) gets.push(`${r.status()} ${new URL(r.url()).pathname}`);
  });
  const demo = await openPage(ctx, config.demo);
  await $(demo, '.panel').waitFor({ state: 'visible', timeout: 10_000 }); // data-open="true"
  assert.equal(await $(demo, '.launcher').getAttribute('aria-expanded'), 'true', 'the demo page opens the chat by itself');

  const question = 'How long is the warranty?';
  const answer = await ask(demo, question);
  assert.equal(answer.state, 'done', `the demo answer finished (state ${answer.state}): ${answer.text}`);
  assert.ok(answer.text.trim().length > 0, 'the demo answer has text');
  const source = $(demo, '.msg.assistant[data-state="done"]').last().locator('.sources a[href]').first();
  await source.waitFor({ state: 'visible', timeout: 5_000 });
  assert.match(await source.getAttribute('href'), /^https?:\/\//, 'the demo answer has an http(s) source');
  const id = await localGet(demo, 'conversation');
  assert.match(id || '', /^conv_/, 'the demo conversation id is stored');

  // The transcript GET (same origin: no Origin header) brings the conversation back.
  gets.length = 0;
  await demo.reload();
  await demo.waitForFunction(() => window.__docentReadyAt != null, null, { timeout: 20_000 });
  try {
    await $(demo, '.msg.assistant[data-state="done"]:not(.greeting)').first().waitFor({ state: 'attached', timeout: 15_000 });
  } catch (e) {
    throw new Error(`the transcript did not come back after a reload on /demo (GETs: ${gets.join(', ') || 'none'})`);
  }
  const shown = await inShadow(demo, (root) => ({
    user: [...root.querySelectorAll('.msg.user')].map((m) => m.textContent.trim()),
    answers: [...root.querySelectorAll('.msg.assistant:not(.greeting) .body')].map((b) => b.textContent.trim()),
  }));
  assert.ok(shown.user.includes(question), `the demo question is shown again: ${JSON.stringify(shown.user)}`);
  const squash = (t) => t.replace(/\s+/g, ' ').trim().slice(0, 40);
  assert.ok(shown.answers.some((t) => t && squash(t) === squash(answer.text)), `the demo answer is shown again: ${JSON.stringify(shown.answers)}`);
  assert.equal(await localGet(demo, 'conversation'), id, 'same demo conversation id after the reload');
  assert.ok(gets.some((g) => g === `200 /v1/conversations/${id}`), `the transcript GET succeeded: ${gets.join(', ')}`);

  // Handoff, then an agent reply over the live feed (another same-origin GET).
  await $(demo, '.human').getByText('Talk to a human').click();
  await $(demo, '.notice.system').getByText("You're now waiting for a person. They'll reply here.").waitFor({ timeout: 15_000 });
  const res = await fetch(`${DOCENT}/v1/conversations/${encodeURIComponent(id)}/messages`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${config.secret_key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ role: 'agent', content: 'Hello from the demo desk.', author: 'Lee' }),
  });
  assert.equal(res.status, 201, `posting the demo agent reply: ${res.status} ${await res.text()}`);
  const reply = $(demo, '.msg.agent').filter({ hasText: 'Hello from the demo desk.' });
  try {
    await reply.first().waitFor({ state: 'visible', timeout: 15_000 });
  } catch (e) {
    throw new Error(`the agent reply did not arrive live on /demo (GETs: ${gets.join(', ') || 'none'})`);
  }
  assert.equal((await reply.first().locator('.author').innerText()).trim(), 'Lee', 'the demo agent reply shows its author');
  await demo.screenshot({ path: path.join(ARTIFACTS, 'widget-demo.png'), fullPage: true });
  await ctx.close();
  shotPage = page;
});

await step('k. new conversation: intents as quick replies, and the fallback on a decline', async () => {
  await openPanel(page);
  await $(page, 'button[aria-label="New conversation"]').click();
  await $(page, '.quick button.qr').first().waitFor({ state: 'visible', timeout: 5_000 });
  const labels = await $(page, '.quick button.qr').allTextContents();
  assert.deepEqual(labels, ['Returns'], 'the bot\'s intents are the quick replies');
  const before = await answerCount(page);
  await $(page, '.quick button.qr').first().click();
  await waitForAnswer(page, before);
  const shown = await inShadow(page, (root) => ({
    user: [...root.querySelectorAll('.msg.user')].map((m) => m.textContent.trim()),
    answer: [...root.querySelectorAll('.msg.assistant:not(.greeting) .body')].pop().textContent,
    quickVisible: !!root.querySelector('.quick') && !root.querySelector('.quick').hidden,
  }));
  assert.deepEqual(shown.user, ['Returns'], 'the quick reply shows as the visitor\'s message');
  assert.match(shown.answer, /45/, `the intent's question was answered: ${shown.answer}`);
  assert.equal(shown.quickVisible, false, 'quick replies hide once the conversation starts');
  const declined = await ask(page, 'What is the capital of Australia?');
  assert.equal(declined.state, 'done');
  assert.match(declined.text, /help@zephyr\.example/, `a decline carries the bot's fallback: ${declined.text}`);
});

await step('l. a session that expired while the tab slept is renewed, and the question answered', async () => {
  const expired = config.expired_session;
  if (!expired) return { skip: 'no expired_session in config' };
  const ctx = await newContext({ viewport: { width: 1280, height: 800 } });
  // The visitor whose session the server signed an hour past its lifetime.
  await ctx.addInitScript(([key, value]) => localStorage.setItem(key, value), [LOCAL + 'visitor_key', expired.visitor_key]);
  // The widget's first session is that one (as if issued before the tab slept); every
  // later request goes to docent untouched.
  let sessions = 0;
  let firstSession = null; // docent's own answer to the first session request
  await ctx.route(`${DOCENT}/v1/widget/session`, async (route) => {
    sessions++;
    if (sessions > 1) return route.fallback();
    const response = await route.fetch();
    const body = await response.json().catch(() => null);
    firstSession = { status: response.status(), body };
    if (response.status() !== 200 || !body) return route.fulfill({ response });
    body.session_token = expired.token;
    body.expires_at = expired.expires_at;
    body.expires_in = expired.expires_at - Math.floor(Date.now() / 1000);
    const headers = { ...response.headers() };
    delete headers['content-length'];
    return route.fulfill({ status: 200, headers, json: body });
  });
  const calls = [];
  const record = async (r) => {
    const url = new URL(r.url());
    if (!url.pathname.startsWith('/v1/') || url.pathname === '/v1/widget/session') return;
    const auth = (await r.request().allHeaders()).authorization || '';
    const call = { path: url.pathname, status: r.status(), expired: auth === `Bearer ${expired.token}` };
    if (r.status() === 401) call.code = (await r.json().catch(() => ({})))?.error?.code;
    calls.push(call);
  };
  // A response still arriving as the context closes must not fail the run.
  ctx.on('response', (r) => record(r).catch(() => {}));
  const slept = await openPage(ctx, config.host);
  const answer = await ask(slept, config.question);
  assert.equal(firstSession?.status, 200, `docent issued the first session: ${JSON.stringify(firstSession)}`);
  assert.equal(answer.state, 'done', `the answer finished after the session was renewed (state ${answer.state}): ${answer.text}`);
  assert.ok(answer.text.trim().length > 0, 'the answer has text');
  assert.equal(sessions, 2, 'one new session was fetched');
  const refused = calls.filter((c) => c.expired);
  assert.ok(refused.length >= 1, `the expired session was used: ${JSON.stringify(calls)}`);
  for (const c of refused) assert.deepEqual([c.status, c.code], [401, 'session_expired'], JSON.stringify(calls));
  const renewed = calls.filter((c) => !c.expired);
  assert.ok(renewed.some((c) => c.path === refused[0].path && c.status === 200), `the refused call was repeated with the new session: ${JSON.stringify(calls)}`);
  assert.ok(renewed.every((c) => c.status < 400), `nothing else was refused: ${JSON.stringify(calls)}`);
  await ctx.close();
  shotPage = page;
});

await step('widget size and page errors', async () => {
  const gz = zlib.gzipSync(fs.readFileSync(path.join(REPO, 'static/widget.js')), { level: 9 }).length;
  console.log(`metric widget_gzip_bytes ${gz}`);
  assert.ok(gz < 30720, `widget.js is ${gz} bytes gzipped (limit 30720)`);
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the pages');
});

clearTimeout(deadline);
await browser.close();
process.exit(0);
