//! A bot's golden questions checked against its content: each asked the way a visitor's
//! question is (`ask`), judged (`golden::judge`), its verdict stored on the question, and a
//! question that passed and now fails emitted as `bot.regressed`. The crawl worker runs it
//! after every crawl or upload job of a bot that has golden questions.

use serde_json::json;

use crate::chat::Answer;
use crate::domain::{BotId, BotSettings};
use crate::golden::{self, GoldenRun, Regression, Verdict};
use crate::ports::{NewEvent, Storage};
use crate::telemetry::unix_now;

/// Asks `bot`'s golden questions through `ask` (the bot's settings at hand) and records
/// the verdicts; none when the bot has no golden questions. Each regression's event is
/// written before the verdicts (a crash between the two sends it again on the next check,
/// never loses it).
pub fn check(
    store: &dyn Storage,
    bot: &BotId,
    job_id: Option<&str>,
    changed: bool,
    ask: &mut dyn FnMut(&str, &BotSettings) -> anyhow::Result<Answer>,
) -> anyhow::Result<Option<GoldenRun>> {
    let record = store.get_bot(bot)?;
    let golden = &record.settings.golden;
    // Nothing changed and every question has its verdict: the answers would be the same.
    if golden.is_empty() || (!changed && golden.iter().all(|q| q.last.is_some())) {
        return Ok(None);
    }
    let mut verdicts = Vec::with_capacity(golden.len());
    let mut errors = 0;
    for question in golden {
        // A question the model could not answer now keeps its last verdict.
        let answer = match ask(&question.question, &record.settings) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(%bot, question = question.id, "cannot ask a golden question: {e:#}");
                errors += 1;
                continue;
            }
        };
        let (passed, reason) = golden::judge(&question.case(), &answer);
        let verdict = Verdict {
            passed,
            reason: reason.to_string(),
            answer: golden::clip_answer(&answer.answer),
            sources: answer.sources.iter().map(|s| s.url.clone()).collect(),
            checked: unix_now(),
            job_id: job_id.map(str::to_string),
        };
        verdicts.push((question.id.clone(), verdict));
    }
    let mut run = GoldenRun {
        total: golden.len(),
        passed: verdicts.iter().filter(|(_, v)| v.passed).count(),
        regressed: 0,
        errors,
    };
    let mut seen = golden.clone();
    for question in seen.iter_mut() {
        let Some((_, verdict)) = verdicts.iter().find(|(id, _)| *id == question.id) else {
            continue;
        };
        if let Some(regression) = question.record(verdict.clone()) {
            run.regressed += 1;
            store.emit(bot, regressed_event(bot, question, &regression))?;
        }
    }
    store.update_bot(bot, &mut |current| {
        // Questions added or removed meanwhile keep their state; the others take theirs.
        for question in current.settings.golden.iter_mut() {
            if let Some((_, verdict)) = verdicts.iter().find(|(id, _)| *id == question.id) {
                question.record(verdict.clone());
            }
        }
    })?;
    Ok(Some(run))
}

fn regressed_event(
    bot: &BotId,
    question: &golden::GoldenQuestion,
    regression: &Regression,
) -> NewEvent {
    NewEvent {
        kind: crate::domain::event_kinds::BOT_REGRESSED,
        data: json!({
            "bot_id": bot,
            "question_id": question.id,
            "question": question.question,
            "expected_answer_keywords": question.expected_answer_keywords,
            "source_url": question.source_url,
            "old_answer": regression.old_answer,
            "new_answer": regression.new_answer,
            "reason": regression.reason,
            "job_id": regression.job_id,
        }),
    }
}

/// Why a question cannot be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("{0}")]
    Invalid(String),
    #[error("a bot keeps at most {} golden questions", golden::MAX_QUESTIONS)]
    TooMany,
    #[error(transparent)]
    Store(#[from] crate::ports::Error),
}

/// Adds a golden question to `bot`; its first verdict comes with the next check.
pub fn add(
    store: &dyn Storage,
    bot: &BotId,
    new: golden::NewQuestion,
) -> Result<golden::GoldenQuestion, AddError> {
    let new = new.validated().map_err(AddError::Invalid)?;
    let question = golden::GoldenQuestion::new(crate::ids::golden(), new, unix_now());
    let mut full = false;
    store.update_bot(bot, &mut |record| {
        full = record.settings.golden.len() >= golden::MAX_QUESTIONS;
        if !full {
            record.settings.golden.push(question.clone());
        }
    })?;
    if full {
        return Err(AddError::TooMany);
    }
    Ok(question)
}

/// Replaces `bot`'s golden questions by `questions` (a file's); a question asked before
/// keeps its id and history.
pub fn replace(
    store: &dyn Storage,
    bot: &BotId,
    questions: Vec<golden::NewQuestion>,
) -> Result<Vec<golden::GoldenQuestion>, AddError> {
    if questions.len() > golden::MAX_QUESTIONS {
        return Err(AddError::TooMany);
    }
    let questions = questions
        .into_iter()
        .map(golden::NewQuestion::validated)
        .collect::<Result<Vec<_>, _>>()
        .map_err(AddError::Invalid)?;
    let now = unix_now();
    let fresh: Vec<golden::GoldenQuestion> = questions
        .iter()
        .map(|q| golden::GoldenQuestion::new(crate::ids::golden(), q.clone(), now))
        .collect();
    let updated = store.update_bot(bot, &mut |record| {
        let kept = std::mem::take(&mut record.settings.golden);
        let mut kept = kept;
        let mut replaced: Vec<golden::GoldenQuestion> = Vec::with_capacity(fresh.len());
        for q in &fresh {
            // A question given twice is kept once; one asked before keeps its history.
            if replaced.iter().any(|r| r.case() == q.case()) {
                continue;
            }
            match kept.iter().position(|old| old.case() == q.case()) {
                Some(at) => replaced.push(kept.swap_remove(at)),
                None => replaced.push(q.clone()),
            }
        }
        record.settings.golden = replaced;
    })?;
    Ok(updated.settings.golden)
}

/// Removes one of `bot`'s golden questions; whether it was there.
pub fn remove(store: &dyn Storage, bot: &BotId, id: &str) -> Result<bool, crate::ports::Error> {
    let mut removed = false;
    store.update_bot(bot, &mut |record| {
        let before = record.settings.golden.len();
        record.settings.golden.retain(|q| q.id != id);
        removed = record.settings.golden.len() != before;
    })?;
    Ok(removed)
}
