// Sources page: a bot's crawled sites, adding and re-crawling one, uploading documents, with live job progress; its pages.

import {
  h, clear, field, form, header, section, table, td, action, select, toast, errorText,
  fmtTime, fmtNum, fmtDuration, safeLink, loadBots, botSelect, noBots, confirmDialog,
} from '../ui.js';
import { enc, query } from '../api.js';

const SCHEDULES = [['', 'Never (crawl once)'], ['1h', 'Every hour'], ['6h', 'Every 6 hours'], ['24h', 'Every day'], ['7d', 'Every week']];
const SCOPES = [['path', 'Under the start URL\'s folder'], ['host', 'The whole site (host)']];
const SCOPE_NAMES = Object.fromEntries(SCOPES);
const FINAL = ['done', 'failed'];

function jobLine(job) {
  const parts = [`${job.url}: ${fmtNum(job.progress)}${job.total != null ? ` of ${fmtNum(job.total)}` : ''} pages fetched`];
  if (job.phase && !FINAL.includes(job.state)) parts.push(job.phase);
  for (const [k, label] of [['pages_indexed', 'indexed'], ['pages_unchanged', 'unchanged'], ['pages_skipped', 'skipped'],
    ['pages_removed', 'removed'], ['urls_refused', 'refused'], ['chunks', 'chunks']]) {
    if (job[k] != null) parts.push(`${fmtNum(job[k])} ${label}`);
  }
  return `${parts.join(' · ')} · ${job.state}`;
}

// The job panel: a progress bar and a live status line that ends with the job's state.
function jobPanel() {
  const bar = h('progress', { id: 'job-progress', max: 1, 'aria-label': 'Crawl progress' });
  const status = h('p', { id: 'job-status', 'aria-live': 'polite' });
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const panel = h('div', { class: 'job', hidden: true }, [bar, status, error]);
  const show = (job) => {
    panel.hidden = false;
    const total = Math.max(job.total || 0, job.progress || 0);
    if (job.state === 'done') { bar.max = 1; bar.value = 1; } else if (total) { bar.max = total; bar.value = job.progress || 0; } else bar.removeAttribute('value');
    status.textContent = jobLine(job);
    error.hidden = !job.error;
    error.textContent = job.error ? `${job.kind === 'upload' ? 'Upload' : 'Crawl'} failed: ${job.error}` : '';
  };
  return { panel, show };
}

// Watches one crawl job at a time: polls it every second until it is done or failed.
function jobWatcher(api, panel, onFinal) {
  let timer = 0;
  let watching = null;
  let stopped = false;
  let polling = false;
  const poll = async () => {
    polling = true;
    const id = watching;
    try {
      const j = await api.get(`/v1/jobs/${enc(id)}`);
      if (stopped) return;
      if (id === watching) {
        panel.show(j);
        if (FINAL.includes(j.state)) { onFinal(j); return; }
      }
    } catch (err) {
      if (err.status === 401) return;
      toast(errorText(err), true);
    } finally {
      polling = false;
    }
    if (!stopped) timer = setTimeout(poll, 1000);
  };
  return {
    // A poll in flight sees the new job id when it schedules the next one: one loop.
    watch(job) {
      clearTimeout(timer);
      watching = job.id;
      panel.show(job);
      if (!polling) timer = setTimeout(poll, 1000);
    },
    stop() { stopped = true; clearTimeout(timer); },
  };
}

function sourceTable(bot, crawl) {
  if (!(bot.sources || []).length) return h('p', { class: 'empty' }, 'No sources yet.');
  return table('Sources', ['URL', 'Scope', 'Page limit', 'Re-crawl', 'Last crawl', 'Actions'], bot.sources.map((s) => h('tr', {}, [
    td(safeLink(s.url)), td(SCOPE_NAMES[s.scope] || s.scope), td(s.max_pages != null ? fmtNum(s.max_pages) : 'Default (1,000)'),
    td(fmtDuration(s.recrawl_every)), td(fmtTime(s.last_crawl)),
    td(action('Re-crawl', () => crawl({
      url: s.url, scope: s.scope, max_pages: s.max_pages, recrawl_every: s.recrawl_every ? String(s.recrawl_every) : null,
    }), { 'aria-label': `Re-crawl ${s.url}`, class: 'btn btn-small' })),
  ])));
}

function addForm(crawl) {
  const url = h('input', { id: 'source-url', type: 'url', required: true, placeholder: 'https://docs.example.com/' });
  const scope = select('source-scope', SCOPES, 'path');
  const limit = h('input', { id: 'source-max-pages', type: 'number', min: 1, max: 50000, step: 1, placeholder: '1000' });
  const every = select('source-schedule', SCHEDULES, '');
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'source-add' }, 'Add and crawl');
  return form({ class: 'grid-form', 'aria-label': 'Add a site' }, [
    field('Start URL', url, 'The crawl follows links and sitemaps on this site.'),
    field('Scope', scope, 'Which links the crawl follows from the start URL.'),
    field('Page limit', limit, 'Most pages one crawl indexes (default 1,000).'), field('Re-crawl', every),
  ], submit, async () => {
    await crawl({
      url: url.value.trim(), scope: scope.value, max_pages: limit.value ? Number(limit.value) : null, recrawl_every: every.value || null,
    });
    url.value = '';
  });
}

// Documents sent as they are (multipart): each cited under the base URL if one is given.
function uploadForm(send) {
  const files = h('input', {
    id: 'upload-files', type: 'file', multiple: true, required: true,
    accept: '.pdf,.docx,.html,.htm,.md,.markdown,.txt',
  });
  const base = h('input', { id: 'upload-base-url', type: 'url', placeholder: 'https://docs.example.com/files/' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'upload-send' }, 'Upload and index');
  return form({ class: 'grid-form', 'aria-label': 'Upload documents' }, [
    field('Documents', files, 'PDF, Word (.docx), HTML, Markdown or text: up to 20 files, 64 MB in all. A name uploaded again replaces that document.'),
    field('Published at', base, 'Optional: where these files are online, so answers link to them (a PDF by page).'),
  ], submit, async () => {
    const body = new FormData();
    for (const f of files.files) body.append('file', f, f.name);
    if (base.value.trim()) body.append('base_url', base.value.trim());
    await send(body);
    files.value = '';
  });
}

export async function render(main, { api }) {
  main.append(...header('Sources', 'The sites a bot answers from. Crawls run in the background.'));
  const bots = await loadBots(api);
  if (!bots.length) { main.append(noBots()); return undefined; }
  const picker = botSelect('sources-bot', bots);
  const botId = () => picker.querySelector('select').value;
  const sourcesBox = h('div');
  const pagesBox = h('div');
  const panel = jobPanel();
  const refresh = async () => {
    const id = botId();
    const [bot, pages] = await Promise.all([api.get(`/v1/bots/${enc(id)}`), api.get(`/v1/bots/${enc(id)}/pages`)]);
    clear(sourcesBox).append(sourceTable(bot, crawl));
    clear(pagesBox).append(pageTable(pages.data || [], removePage));
  };
  const watcher = jobWatcher(api, panel, (j) => {
    toast(`${j.kind === 'upload' ? 'Upload' : 'Crawl'} ${j.state}.`, j.state === 'failed');
    refresh().catch((e) => toast(errorText(e), true));
  });
  const removePage = async (url) => {
    if (!(await confirmDialog(`Remove ${url} and its passages? A later crawl brings it back if the site still links it.`, 'Remove'))) return;
    await api.del(`/v1/bots/${enc(botId())}/pages${query({ url })}`);
    toast('Page removed.');
    await refresh();
  };
  // A source as the API takes it; unset fields are left out (the server's defaults).
  const crawl = async (source) => {
    const body = Object.fromEntries(Object.entries(source).filter(([, v]) => v != null && v !== ''));
    const accepted = await api.post(`/v1/bots/${enc(botId())}/sources`, body);
    watcher.watch(accepted.job);
  };
  const send = async (body) => {
    const accepted = await api.post(`/v1/bots/${enc(botId())}/documents`, body);
    watcher.watch(accepted.job);
  };
  picker.querySelector('select').addEventListener('change', () => refresh().catch((e) => toast(errorText(e), true)));
  main.append(h('div', { class: 'toolbar' }, picker), section('Add a site', [addForm(crawl), panel.panel]),
    section('Upload documents', uploadForm(send)),
    section('Crawled sites', sourcesBox), section('Indexed pages', pagesBox));
  await refresh();
  return watcher.stop;
}

function pageTable(pages, remove) {
  if (!pages.length) return h('p', { class: 'empty' }, 'Nothing indexed yet.');
  const kind = (p) => (p.kind === 'answer' ? 'Curated answer' : 'Indexed');
  return table('Indexed pages', ['Title', 'URL', 'Status', 'Last crawl', 'Chunks', 'Actions'], pages.map((p) => h('tr', { class: 'page-row' }, [
    td(p.title || '(untitled)'), td(safeLink(p.url)), td(kind(p)), td(fmtTime(p.crawled)), td(fmtNum(p.chunks)),
    td(action('Remove', () => remove(p.url), { class: 'btn btn-small btn-danger remove-page', 'aria-label': `Remove ${p.url}` })),
  ])));
}
