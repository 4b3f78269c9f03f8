// Content gaps page: unanswered and rated-down question groups, and the bot's curated answers.

import {
  h, clear, field, form, header, section, action, toast, errorText, confirmDialog, fmtNum,
  loadBots, botSelect, noBots,
} from '../ui.js';
import { enc, query } from '../api.js';
import { rangeFields } from './overview.js';

function gapItem(g, onWrite) {
  return h('li', { class: 'gap' }, [
    h('p', { class: 'gap-question' }, [h('span', { class: 'count' }, `${fmtNum(g.count)}×`), ' ', g.question]),
    (g.examples || []).length ? h('ul', { class: 'examples', 'aria-label': 'Examples' }, g.examples.map((x) => h('li', {}, x))) : null,
    h('button', { type: 'button', class: 'btn btn-small write-answer', onclick: () => onWrite(g.question) }, 'Write the answer'),
  ]);
}

function gapList(title, gaps, onWrite) {
  const body = (gaps || []).length
    ? h('ul', { class: 'gaps' }, gaps.map((g) => gapItem(g, onWrite)))
    : h('p', { class: 'empty' }, 'None in this range.');
  return section(title, body);
}

// The answer form: new, or editing one (its id kept here).
function answerEditor(api, botId, onSaved) {
  let editing = null;
  const question = h('input', { id: 'answer-question', type: 'text', required: true, maxlength: 500 });
  const answer = h('textarea', { id: 'answer-text', rows: 5, required: true, maxlength: 4000 });
  const title = h('h2', { id: 'answer-title' }, 'Write an answer');
  const save = h('button', { type: 'submit', class: 'btn btn-primary', id: 'answer-save' }, 'Save answer');
  const cancel = h('button', { type: 'button', class: 'btn', hidden: true }, 'Cancel editing');
  const reset = () => { editing = null; question.value = ''; answer.value = ''; title.textContent = 'Write an answer'; cancel.hidden = true; };
  cancel.addEventListener('click', reset);
  const f = form({ class: 'stack', 'aria-labelledby': 'answer-title' }, [
    field('Question', question), field('Answer', answer, 'The bot gives this answer to this question and ones like it.'),
  ], [save, cancel], async () => {
    const body = { question: question.value.trim(), answer: answer.value.trim() };
    const base = `/v1/bots/${enc(botId())}/answers`;
    if (editing) await api.patch(`${base}/${enc(editing)}`, body); else await api.post(base, body);
    toast('Answer saved.');
    reset();
    await onSaved();
  });
  const el = h('section', { class: 'card answer-editor', 'aria-labelledby': 'answer-title' }, [title, f]);
  const open = (q, a = '', id = null) => {
    editing = id;
    question.value = q;
    answer.value = a;
    title.textContent = id ? 'Edit the answer' : 'Write an answer';
    cancel.hidden = !id;
    el.scrollIntoView({ block: 'start' });
    (q ? answer : question).focus();
  };
  return { el, open, reset };
}

function answerItem(api, botId, a, edit, reload) {
  return h('li', { class: 'answer' }, [
    h('p', { class: 'answer-q' }, a.question),
    h('p', { class: 'answer-a' }, a.answer),
    h('div', { class: 'actions' }, [
      h('button', { type: 'button', class: 'btn btn-small', onclick: () => edit(a.question, a.answer, a.id) }, 'Edit'),
      action('Remove', async () => {
        if (!(await confirmDialog(`Remove the answer to "${a.question}"?`, 'Remove'))) return;
        await api.del(`/v1/bots/${enc(botId())}/answers/${enc(a.id)}`);
        toast('Answer removed.');
        await reload();
      }, { class: 'btn btn-small btn-danger' }),
    ]),
  ]);
}

export async function render(main, { api }) {
  main.append(...header('Content gaps', 'Questions the bot could not answer, or whose answers visitors rated down. Write the answers it should give.'));
  const bots = await loadBots(api);
  if (!bots.length) { main.append(noBots()); return undefined; }
  const picker = botSelect('gaps-bot', bots);
  const botId = () => picker.querySelector('select').value;
  const range = rangeFields('gaps');
  const groups = h('div');
  const answersBox = h('div');
  const loadAnswers = async () => {
    let list;
    try {
      list = await api.get(`/v1/bots/${enc(botId())}/answers`);
    } catch (err) {
      if (err.status === 404 && err.code === 'not_found') {
        clear(answersBox).append(h('p', { class: 'notice' }, 'Curated answers are not available on this server yet.'));
        return;
      }
      throw err;
    }
    const data = (list && list.data) || [];
    clear(answersBox).append(data.length
      ? h('ul', { class: 'answers' }, data.map((a) => answerItem(api, botId, a, editor.open, loadAnswers)))
      : h('p', { class: 'empty' }, 'No curated answers yet.'));
  };
  const editor = answerEditor(api, botId, loadAnswers);
  // An answer being edited belongs to the bot it was opened for.
  picker.querySelector('select').addEventListener('change', () => editor.reset());
  const load = async () => {
    const report = await api.get(`/v1/bots/${enc(botId())}/analytics${query({ from: range.from.value, to: range.to.value })}`);
    clear(groups).append(
      gapList('Unanswered questions', report.unanswered_questions, (q) => editor.open(q)),
      gapList('Answers rated down', report.rated_down_questions, (q) => editor.open(q)),
    );
    await loadAnswers().catch((err) => clear(answersBox).append(h('p', { class: 'form-error', role: 'alert' }, errorText(err))));
  };
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Show');
  main.append(
    form({ class: 'toolbar', 'aria-label': 'Bot and range' }, [picker, ...range.fields], submit, load),
    groups, editor.el, section('Curated answers', answersBox),
  );
  await load().catch((err) => toast(errorText(err), true));
  return undefined;
}
