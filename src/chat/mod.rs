//! Grounded answers: retrieve, decide whether the sources can answer, prompt the model,
//! stream its reply, and cite the sources that verifiably support it (see `grounding`).

pub mod claims;
pub mod gate;
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
    /// The claim check: the answer streams a sentence at a time, sentences stating
    /// specifics no passage contains are removed, and an answer with no supported sentence
    /// left becomes the decline (`gate`).
    pub check_claims: bool,
    /// After the claim check (which this turns on too), the model is asked of each
    /// sentence whether the sources state it; the answer is held until all of it is
    /// verified (`verify_claims`).
    pub verify_claims: bool,
}

impl Default for AskOptions {
    fn default() -> Self {
        AskOptions {
            top_k: 5,
            min_score: 0.3,
            generation: GenParams::default(),
            system_extra: None,
            answerable_threshold: 0.0,
            check_claims: true,
            verify_claims: false,
        }
    }
}

impl AskOptions {
    /// Whether the answer goes through the sentence gate: the claim check, alone or with
    /// the model's verification.
    pub fn checks_claims(&self) -> bool {
        self.check_claims || self.verify_claims
    }

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
            check_claims: config.claim_check,
            verify_claims: config.verify_claims,
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

#[derive(Debug, Clone, Default, Serialize)]
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
    /// its cited passages contains: invented facts behind a citation
    /// (`claims`); empty for an answer not answered. With the claim check on, sentences
    /// stating such specifics are `removed` and the passages stating the rest are cited,
    /// so this stays empty but for what no passage could be cited for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<String>,
    /// Sentences the claim check took out of the answer before the visitor saw them: they
    /// stated specifics no passage in the prompt contains, pointed back at such a sentence,
    /// or (with `verify_claims`) the model doubted them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
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
            removed: Vec::new(),
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
    let passages: Vec<String> = evidence.iter().map(|r| r.chunk.embedding_text()).collect();
    let passages: Vec<&str> = passages.iter().map(String::as_str).collect();
    let mut stream = AnswerStream {
        filter: grounding::CitationFilter::new(evidence.len()),
        gate: options
            .checks_claims()
            .then(|| gate::SentenceGate::new(&passages)),
        held: options.verify_claims.then(String::new),
        text: String::new(),
        first_token_ms: None,
    };
    let stats = generator.generate(&messages, &options.generation, &mut |piece| {
        stream.push(piece, started, on_token)
    })?;
    let mut finish = stats.finish;
    if finish != Finish::Cancelled
        && !complete(
            &mut stream,
            generator,
            &messages,
            options,
            started,
            on_token,
        )?
    {
        finish = Finish::Cancelled;
    }
    let cancelled = finish == Finish::Cancelled;
    let settled = settle(stream, &passages, options, cancelled, started, on_token);
    let answer = settled.text.trim().to_string();
    let retrieved = source_refs(&evidence);
    let cited = settled.cited;
    let sources: Vec<SourceRef> = cited.iter().map(|&n| retrieved[n - 1].clone()).collect();
    // An answer no source supports is not an answer from the sources, however fluent.
    let answered = !settled.declined && !sources.is_empty();
    if !settled.declined && !answered {
        tracing::info!("answer not supported by any retrieved source; marked unanswered");
    }
    let unsupported = if answered {
        let cited: Vec<&str> = cited.iter().map(|&n| passages[n - 1]).collect();
        claims::unsupported(&answer, &cited)
    } else {
        Vec::new()
    };
    if !unsupported.is_empty() {
        tracing::info!(
            count = unsupported.len(),
            "the answer states specifics no cited passage contains"
        );
    }
    let (first_token_ms, removed) = (settled.first_token_ms, settled.removed);
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
        finish: Some(finish),
        unsupported,
        removed,
    })
}

/// The answer as it streams: the model's markers filtered out, then (with the claim
/// check) the sentence gate, then the visitor.
struct AnswerStream<'a> {
    filter: grounding::CitationFilter,
    gate: Option<gate::SentenceGate<'a>>,
    /// With `verify_claims`, the whole answer, held until it is complete and verified.
    held: Option<String>,
    /// What the visitor was shown.
    text: String,
    first_token_ms: Option<f64>,
}

impl AnswerStream<'_> {
    /// One piece of the model's output; false stops generation (the reader left).
    fn push(&mut self, piece: &str, started: Instant, on_token: OnToken<'_>) -> bool {
        let visible = self.filter.push(piece);
        if let Some(held) = self.held.as_mut() {
            held.push_str(&visible);
            return on_token("");
        }
        let shown = match self.gate.as_mut() {
            Some(gate) => {
                let hinted = prompt::cited_indices(self.filter.raw(), self.filter.sources());
                gate.push(&visible, &hinted)
            }
            None => visible,
        };
        self.show(&shown, started, on_token)
    }

    /// The end of generation: what the filter and the gate still hold, to be shown (nothing
    /// is asked of the reader: there is nothing left to stop). With verification, the
    /// whole answer goes through the gate now, each sentence put to `verify`.
    fn finish(&mut self, verify: gate::Verify<'_>) -> String {
        let mut rest = self.filter.finish();
        if let Some(mut held) = self.held.take() {
            held.push_str(&rest);
            rest = held;
        }
        match self.gate.as_mut() {
            Some(gate) => {
                let hinted = prompt::cited_indices(self.filter.raw(), self.filter.sources());
                let mut shown = gate.push_verified(&rest, &hinted, verify);
                shown.push_str(&gate.finish_verified(&hinted, verify));
                shown
            }
            None => rest,
        }
    }

    fn show(&mut self, shown: &str, started: Instant, on_token: OnToken<'_>) -> bool {
        if shown.is_empty() {
            // Nothing to show yet. While the gate holds a sentence back, an empty piece
            // asks whether the reader is still there; without it, nothing goes out.
            return self.gate.is_none() || on_token("");
        }
        self.first_token_ms.get_or_insert_with(|| ms(started));
        self.text.push_str(shown);
        on_token(shown)
    }
}

/// The end of generation: what the stream still holds is judged (with `verify_claims`,
/// each sentence put to the model too) and shown. False when the reader left, or the
/// request's time ran out, during verification: then nothing more is shown.
fn complete(
    stream: &mut AnswerStream<'_>,
    generator: &dyn Generator,
    messages: &[ChatMessage],
    options: &AskOptions,
    started: Instant,
    on_token: OnToken<'_>,
) -> anyhow::Result<bool> {
    let rest = if options.verify_claims {
        let written = stream.filter.raw().to_string();
        let mut verifier = Verifier::new(generator, messages, &written);
        let mut wanted = true;
        let rest = stream.finish(&mut |sentence| {
            // Each check takes a second or so: ask first whether anyone still waits.
            wanted = wanted && on_token("");
            wanted && verifier.holds(sentence)
        });
        // A failed check shows nothing: the turn fails as a failed generation does.
        verifier.result()?;
        if !wanted {
            return Ok(false);
        }
        rest
    } else {
        stream.finish(&mut |_| true)
    };
    if !rest.is_empty() {
        stream.show(&rest, started, on_token);
    }
    Ok(true)
}

/// Asks the model, sentence by sentence, whether the sources state what its answer says
/// (`verify_claims`). The first failure ends the asking: every later sentence counts as
/// not verified, and the turn fails with it.
struct Verifier<'a> {
    generator: &'a dyn Generator,
    messages: &'a [ChatMessage],
    written: &'a str,
    failed: Option<anyhow::Error>,
}

/// The probability of "yes" a sentence needs to stay (not tuned: the even odds).
const VERIFY_THRESHOLD: f32 = 0.5;

impl<'a> Verifier<'a> {
    fn new(generator: &'a dyn Generator, messages: &'a [ChatMessage], written: &'a str) -> Self {
        Verifier {
            generator,
            messages,
            written,
            failed: None,
        }
    }

    fn holds(&mut self, sentence: &str) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let check = prompt::sentence_check(self.messages, self.written, sentence);
        match self.generator.classify(&check, &["yes", "no"]) {
            Ok(p) => {
                tracing::debug!(verified = p[0], "sentence check");
                p[0] >= VERIFY_THRESHOLD
            }
            Err(e) => {
                self.failed = Some(e.context("verifying a sentence of the answer"));
                false
            }
        }
    }

    fn result(self) -> anyhow::Result<()> {
        self.failed.map_or(Ok(()), Err)
    }
}

/// The answer once generation is over: its text with the verified citations, which
/// passages they are, whether it is a decline, and what the claim check removed.
struct Settled {
    text: String,
    cited: Vec<usize>,
    declined: bool,
    removed: Vec<String>,
    first_token_ms: Option<f64>,
}

/// Settles a written answer: with the gate, one none of whose sentences a passage
/// supports was never shown and the decline takes its place (nothing, if the reader left
/// before it could be said); otherwise its sentences are attributed to their passages, the
/// passages stating its specifics are added, and the `[n]` marks go out.
fn settle(
    stream: AnswerStream<'_>,
    passages: &[&str],
    options: &AskOptions,
    cancelled: bool,
    started: Instant,
    on_token: OnToken<'_>,
) -> Settled {
    let hinted = prompt::cited_indices(stream.filter.raw(), passages.len());
    let withheld = stream.gate.as_ref().is_some_and(|g| !g.opened());
    let removed = stream
        .gate
        .as_ref()
        .map(|g| g.removed().to_vec())
        .unwrap_or_default();
    if !removed.is_empty() {
        tracing::info!(
            count = removed.len(),
            "sentences the claim check doubted were removed"
        );
    }
    let mut first_token_ms = stream.first_token_ms;
    let mut text = stream.text;
    if withheld && !cancelled {
        first_token_ms.get_or_insert_with(|| ms(started));
        text = NOT_IN_SOURCES.to_string();
        on_token(NOT_IN_SOURCES);
    }
    let declined = withheld || is_refusal(&text);
    let mut cited = if declined {
        Vec::new()
    } else {
        grounding::attribute(&text, passages, &hinted)
    };
    if options.checks_claims() && !cited.is_empty() {
        cite_specifics(&text, passages, &mut cited);
    }
    if !cited.is_empty() && !cancelled {
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
    Settled {
        text,
        cited,
        declined,
        removed,
        first_token_ms,
    }
}

type OnToken<'a> = &'a mut dyn FnMut(&str) -> bool;

/// Adds to `cited` the passages that state the answer's specifics no cited passage states
/// (a sentence the gate let through because some passage in the prompt states its
/// specifics, but grounding credited to another), best first, while each adds something.
fn cite_specifics(answer: &str, passages: &[&str], cited: &mut Vec<usize>) {
    loop {
        let known: Vec<&str> = cited.iter().map(|&n| passages[n - 1]).collect();
        let missing = claims::unsupported(answer, &known).len();
        if missing == 0 {
            return;
        }
        let best = (1..=passages.len())
            .filter(|n| !cited.contains(n))
            .map(|n| {
                let with: Vec<&str> = known.iter().copied().chain([passages[n - 1]]).collect();
                (n, claims::unsupported(answer, &with).len())
            })
            .min_by_key(|&(n, left)| (left, n));
        match best {
            Some((n, left)) if left < missing => cited.push(n),
            _ => return,
        }
    }
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
