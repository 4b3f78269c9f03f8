//! Grounded answers: retrieve, decide whether the sources can answer, prompt the model,
//! stream its reply, and cite the sources that verifiably support it (see `grounding`).

pub mod claims;
pub mod grounding;
pub mod prompt;

use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::domain::BotId;
pub use crate::domain::{NOT_IN_SOURCES, SourceRef};
use crate::llm::{ChatMessage, Finish, GenParams, Generator};
use crate::retrieval::{Retrieved, Retriever};
use prompt::PromptSource;

#[derive(Debug, Clone)]
pub struct AskOptions {
    pub top_k: usize,
    /// Cosine similarity a chunk needs to count as evidence.
    pub min_score: f32,
    pub generation: GenParams,
    /// The bot's operator instructions, added to the system prompt.
    pub system_extra: Option<String>,
    /// Before answering, the model is asked whether the sources answer the question; below
    /// this probability of "yes" docent declines without generating (0 turns the check off).
    pub answerable_threshold: f32,
}

impl Default for AskOptions {
    fn default() -> Self {
        AskOptions {
            top_k: 5,
            min_score: 0.3,
            generation: GenParams::default(),
            system_extra: None,
            answerable_threshold: 0.0,
        }
    }
}

impl AskOptions {
    /// The server-wide answering options a configuration gives (bots may override the
    /// retrieval settings, `for_bot`).
    pub fn from_config(config: &Config) -> AskOptions {
        AskOptions {
            top_k: config.top_k.max(1),
            min_score: config.min_score,
            generation: GenParams {
                max_tokens: config.max_tokens.max(1),
                temperature: config.temperature,
                ..GenParams::default()
            },
            system_extra: None,
            answerable_threshold: config.answerable_threshold,
        }
    }

    /// These options refined by a bot's own settings (its `top_k`, `min_score` and system
    /// prompt additions), as every path that answers for a bot applies them.
    pub fn for_bot(mut self, settings: &crate::domain::BotSettings) -> AskOptions {
        if let Some(top_k) = settings.top_k {
            self.top_k = top_k.clamp(1, 50);
        }
        if let Some(min_score) = settings.min_score {
            self.min_score = min_score;
        }
        self.system_extra = settings.system_prompt.clone();
        self
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub retrieve_ms: f64,
    /// From the question to the first answer token.
    pub ttft_ms: f64,
    pub total_ms: f64,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub answer: String,
    pub answered: bool,
    pub sources: Vec<SourceRef>,
    pub timings: Timings,
    /// Every passage that cleared the threshold and went into the prompt, numbered as the
    /// model saw them (the cited `sources` are a subset).
    pub retrieved: Vec<SourceRef>,
    /// The model's probability that the sources answer the question (the check before
    /// answering), when it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answerable: Option<f32>,
    #[serde(skip)]
    pub finish: Option<Finish>,
    /// Specifics of the answer (numbers, names, commands, flags, file names) that none of
    /// its cited passages (nor the question) contains: invented facts behind a citation
    /// (`claims`). Measured, not yet acted on; empty for an answer not answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<String>,
}

/// Answers `question` from `bot`'s content, streaming answer text to `on_token` (which may
/// return false to stop). Blocking: call off the async runtime.
pub fn answer(
    retriever: &Retriever,
    generator: &dyn Generator,
    bot: &BotId,
    question: &str,
    options: &AskOptions,
    on_token: &mut dyn FnMut(&str) -> bool,
) -> anyhow::Result<Answer> {
    answer_turn(
        retriever,
        generator,
        bot,
        &[],
        question,
        options,
        &mut |_| {},
        on_token,
    )
}

/// One turn of a conversation: `history` holds the earlier turns (user and assistant
/// messages, oldest first). Retrieval reads the question in the light of the previous
/// user message, so a follow-up ("what about international orders?") finds the passages
/// its conversation is about. `on_retrieved` sees the candidate sources before the model
/// starts.
#[allow(clippy::too_many_arguments)]
pub fn answer_turn(
    retriever: &Retriever,
    generator: &dyn Generator,
    bot: &BotId,
    history: &[ChatMessage],
    question: &str,
    options: &AskOptions,
    on_retrieved: &mut dyn FnMut(&[SourceRef]),
    on_token: &mut dyn FnMut(&str) -> bool,
) -> anyhow::Result<Answer> {
    let started = Instant::now();
    let question = question.trim();
    anyhow::ensure!(!question.is_empty(), "the question is empty");
    let query = retrieval_query(history, question);
    let mut evidence: Vec<Retrieved> = retriever
        .retrieve(bot, &query, options.top_k)?
        .into_iter()
        .filter(|r| r.score >= options.min_score)
        .collect();
    let retrieve_ms = ms(started);
    on_retrieved(&source_refs(&evidence));
    let mut decline = |retrieved: Vec<SourceRef>, answerable: Option<f32>| {
        on_token(NOT_IN_SOURCES);
        Answer {
            answer: NOT_IN_SOURCES.to_string(),
            answered: false,
            sources: Vec::new(),
            timings: Timings {
                retrieve_ms,
                ttft_ms: ms(started),
                total_ms: ms(started),
                ..Timings::default()
            },
            retrieved,
            answerable,
            finish: None,
            unsupported: Vec::new(),
        }
    };
    if evidence.is_empty() {
        return Ok(decline(Vec::new(), None));
    }

    let messages = fit_prompt(generator, history, question, &mut evidence, options)?;
    // Ask first whether the sources answer the question at all. The check shares the
    // answer prompt's system message (rules and sources), so the sequence that reads it
    // keeps those tokens for the answer, and a "no" costs no generation.
    let answerable = if options.answerable_threshold > 0.0 {
        let check = prompt::answerability_check(&messages);
        let p = generator.classify(&check, &["yes", "no"])?[0];
        tracing::debug!(answerable = p, "answerability check");
        Some(p)
    } else {
        None
    };
    if answerable.is_some_and(|p| p < options.answerable_threshold) {
        return Ok(decline(source_refs(&evidence), answerable));
    }
    let mut filter = grounding::CitationFilter::new(evidence.len());
    let mut text = String::new();
    let mut first_token_ms = None;
    let stats = generator.generate(&messages, &options.generation, &mut |piece| {
        let visible = filter.push(piece);
        if visible.is_empty() {
            return true;
        }
        first_token_ms.get_or_insert_with(|| ms(started));
        text.push_str(&visible);
        on_token(&visible)
    })?;
    let rest = filter.finish();
    if stats.finish != Finish::Cancelled && !rest.is_empty() {
        text.push_str(&rest);
        on_token(&rest);
    }
    let hinted = prompt::cited_indices(filter.raw(), evidence.len());
    let declined = is_refusal(&text);
    let cited = if declined {
        Vec::new()
    } else {
        let source_texts: Vec<String> = evidence.iter().map(|r| r.chunk.embedding_text()).collect();
        let refs: Vec<&str> = source_texts.iter().map(String::as_str).collect();
        grounding::attribute(&text, &refs, &hinted)
    };
    if !cited.is_empty() && stats.finish != Finish::Cancelled {
        let marks: String = cited.iter().map(|n| format!("[{n}]")).collect();
        let suffix = if text.trim_end().is_empty() {
            marks
        } else {
            format!(" {marks}")
        };
        let trimmed_len = text.trim_end().len();
        text.truncate(trimmed_len);
        text.push_str(&suffix);
        on_token(&suffix);
    }
    let answer = text.trim().to_string();
    let retrieved = source_refs(&evidence);
    let sources: Vec<SourceRef> = cited.iter().map(|&n| retrieved[n - 1].clone()).collect();
    // An answer no source supports is not an answer from the sources, however fluent.
    let answered = !declined && !sources.is_empty();
    if !declined && !answered {
        tracing::info!("answer not supported by any retrieved source; marked unanswered");
    }
    let unsupported = if answered {
        let cited: Vec<String> = cited
            .iter()
            .map(|&n| evidence[n - 1].chunk.embedding_text())
            .collect();
        let cited: Vec<&str> = cited.iter().map(String::as_str).collect();
        claims::unsupported(&answer, &cited, question)
    } else {
        Vec::new()
    };
    if !unsupported.is_empty() {
        tracing::info!(
            count = unsupported.len(),
            "the answer states specifics no cited passage contains"
        );
    }
    Ok(Answer {
        answered,
        answer,
        sources,
        timings: Timings {
            retrieve_ms,
            ttft_ms: first_token_ms.unwrap_or_else(|| ms(started)),
            total_ms: ms(started),
            prompt_tokens: stats.prompt_tokens,
            completion_tokens: stats.completion_tokens,
        },
        retrieved,
        answerable,
        finish: Some(stats.finish),
        unsupported,
    })
}

/// Renders the prompt, dropping the weakest sources until it fits the context window with
/// room for the reply.
fn fit_prompt(
    generator: &dyn Generator,
    history: &[ChatMessage],
    question: &str,
    evidence: &mut Vec<Retrieved>,
    options: &AskOptions,
) -> anyhow::Result<Vec<ChatMessage>> {
    let params = &options.generation;
    let budget = generator
        .context_size()
        .saturating_sub(params.max_tokens + 64);
    // Earlier turns get at most a quarter of the window, newest kept first.
    let history = trim_history(generator, history, budget / 4)?;
    loop {
        let sources: Vec<PromptSource<'_>> = evidence
            .iter()
            .map(|r| PromptSource {
                title: &r.chunk.title,
                url: &r.chunk.url,
                heading_path: &r.chunk.heading_path,
                text: &r.chunk.text,
            })
            .collect();
        let mut messages = prompt::render_with(question, &sources, options.system_extra.as_deref());
        let user = messages.pop().expect("render returns system and user");
        messages.extend(history.iter().cloned());
        messages.push(user);
        let used: usize = messages
            .iter()
            .map(|m| generator.count_tokens(&m.content))
            .sum::<anyhow::Result<usize>>()?;
        if used <= budget || evidence.len() <= 1 {
            anyhow::ensure!(
                used <= budget,
                "the question is too long for the model's context window"
            );
            return Ok(messages);
        }
        evidence.pop();
    }
}

/// The newest earlier turns that fit in `budget` tokens, oldest first, starting with a user
/// message.
fn trim_history(
    generator: &dyn Generator,
    history: &[ChatMessage],
    budget: usize,
) -> anyhow::Result<Vec<ChatMessage>> {
    let mut kept = Vec::new();
    let mut used = 0;
    for message in history.iter().rev() {
        let tokens = generator.count_tokens(&message.content)? + 8;
        if used + tokens > budget {
            break;
        }
        used += tokens;
        kept.push(message.clone());
    }
    kept.reverse();
    while kept.first().is_some_and(|m| m.role != "user") {
        kept.remove(0);
    }
    Ok(kept)
}

/// What retrieval searches for: the question, preceded by the previous user message when
/// there is one, so that follow-ups keep their topic.
pub fn retrieval_query(history: &[ChatMessage], question: &str) -> String {
    match history.iter().rev().find(|m| m.role == "user") {
        Some(previous) => format!("{}\n{}", previous.content.trim(), question.trim()),
        None => question.trim().to_string(),
    }
}

fn source_refs(evidence: &[Retrieved]) -> Vec<SourceRef> {
    evidence
        .iter()
        .enumerate()
        .map(|(i, hit)| SourceRef {
            index: i + 1,
            title: hit.chunk.title.clone(),
            url: hit.chunk.url.clone(),
            snippet: snippet(&hit.chunk.text),
            score: hit.score,
        })
        .collect()
}

/// Whether a reply says the sources lack the answer.
pub fn is_refusal(answer: &str) -> bool {
    let lower = answer.to_lowercase().replace('’', "'");
    [
        "don't have that in my sources",
        "do not have that in my sources",
        "not in my sources",
        "sources do not contain",
        "sources don't contain",
        "no information",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

fn snippet(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(240) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::BotSettings;

    #[test]
    fn a_bots_settings_refine_the_options_and_unset_ones_keep_them() {
        let base = AskOptions {
            answerable_threshold: 0.55,
            ..AskOptions::default()
        };
        let kept = base.clone().for_bot(&BotSettings::default());
        assert_eq!((kept.top_k, kept.min_score), (base.top_k, base.min_score));
        assert_eq!(kept.system_extra, None);
        let settings = BotSettings {
            top_k: Some(80),
            min_score: Some(0.6),
            system_prompt: Some("Be brief.".into()),
            ..BotSettings::default()
        };
        let refined = base.for_bot(&settings);
        assert_eq!(refined.top_k, 50);
        assert_eq!(refined.min_score, 0.6);
        assert_eq!(refined.system_extra.as_deref(), Some("Be brief."));
        assert_eq!(refined.answerable_threshold, 0.55);
    }
}
