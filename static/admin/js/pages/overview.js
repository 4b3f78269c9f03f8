// Overview page: a bot's analytics for a date range: stat cards, charts, top gaps.

import { h, clear, field, form, header, section, loadBots, botSelect, noBots, isoDay, fmtNum, fmtPct, fmtMs, errorText } from '../ui.js';
import { enc, query } from '../api.js';
import { stackedBars, lines } from '../chart.js';

export function rangeFields(prefix) {
  const from = h('input', { id: `${prefix}-from`, type: 'date', required: true, value: isoDay(29) });
  const to = h('input', { id: `${prefix}-to`, type: 'date', required: true, value: isoDay(0) });
  return { from, to, fields: [field('From', from), field('To', to)] };
}

function stat(label, value, note) {
  return h('li', { class: 'stat' }, [
    h('span', { class: 'stat-label' }, label),
    h('span', { class: 'stat-value' }, value),
    note ? h('span', { class: 'stat-note' }, note) : null,
  ]);
}

function stats(t) {
  return h('ul', { class: 'stats', 'aria-label': 'Totals' }, [
    stat('Conversations', fmtNum(t.conversations)),
    stat('Answered', fmtPct(t.answered_rate), `${fmtNum(t.answered)} of ${fmtNum(t.replies)} replies`),
    stat('Unanswered', fmtNum(t.unanswered), fmtPct(t.unanswered_rate)),
    stat('Handoffs', fmtNum(t.handoffs), fmtPct(t.handoff_rate)),
    stat('Leads', fmtNum(t.leads)),
    stat('Feedback', `${fmtNum(t.feedback_up)} up · ${fmtNum(t.feedback_down)} down`),
    stat('Time to first token', `p50 ${fmtMs(t.ttft_ms && t.ttft_ms.p50)}`, `p95 ${fmtMs(t.ttft_ms && t.ttft_ms.p95)}`),
  ]);
}

function charts(report) {
  const days = report.days || [];
  const labels = days.map((d) => d.date);
  const col = (k) => days.map((d) => d[k] || 0);
  const t = report.totals;
  return h('div', { class: 'charts' }, [
    stackedBars('Conversations and handoffs per day', labels, [
      { name: 'Conversations kept by the bot', values: days.map((d) => Math.max(0, (d.conversations || 0) - (d.handoffs || 0))), color: 0 },
      { name: 'Handed off to a person', values: col('handoffs'), color: 3 },
    ], `${fmtNum(t.conversations)} conversations, ${fmtNum(t.handoffs)} handed off.`),
    stackedBars('Replies per day: answered and unanswered', labels, [
      { name: 'Answered', values: col('answered'), color: 1 },
      { name: 'Unanswered', values: col('unanswered'), color: 2 },
    ], `${fmtNum(t.answered)} answered, ${fmtNum(t.unanswered)} unanswered.`),
    lines('Time to first token per day (ms)', labels, [
      { name: 'p50', values: days.map((d) => d.ttft_ms && d.ttft_ms.p50), color: 0 },
      { name: 'p95', values: days.map((d) => d.ttft_ms && d.ttft_ms.p95), color: 3 },
    ], fmtNum, `Over the range: p50 ${fmtMs(t.ttft_ms && t.ttft_ms.p50)}, p95 ${fmtMs(t.ttft_ms && t.ttft_ms.p95)}.`),
  ]);
}

function topGaps(report) {
  const gaps = (report.unanswered_questions || []).slice(0, 5);
  const list = gaps.length
    ? h('ol', { class: 'gap-list' }, gaps.map((g) => h('li', {}, [h('span', { class: 'count' }, `${fmtNum(g.count)}×`), ' ', g.question])))
    : h('p', { class: 'empty' }, 'No unanswered questions in this range.');
  return section('Top unanswered questions', [list, h('p', {}, h('a', { href: '#/gaps' }, 'Write answers for the gaps'))]);
}

export async function render(main, { api }) {
  main.append(...header('Overview'));
  const bots = await loadBots(api);
  if (!bots.length) { main.append(noBots()); return undefined; }
  const bot = botSelect('overview-bot', bots);
  const range = rangeFields('overview');
  const out = h('div', { class: 'report', 'aria-busy': 'false' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Show');
  const load = async () => {
    out.setAttribute('aria-busy', 'true');
    try {
      const id = bot.querySelector('select').value;
      const report = await api.get(`/v1/bots/${enc(id)}/analytics${query({ from: range.from.value, to: range.to.value })}`);
      clear(out).append(section(`Totals, ${report.from} to ${report.to}`, stats(report.totals)), charts(report), topGaps(report));
    } finally { out.setAttribute('aria-busy', 'false'); }
  };
  main.append(form({ class: 'toolbar', 'aria-label': 'Report range' }, [bot, ...range.fields], submit, load), out);
  await load().catch((err) => { out.append(h('p', { class: 'form-error', role: 'alert' }, errorText(err))); });
  return undefined;
}
