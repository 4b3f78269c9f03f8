//! Generation on remote OpenAI-compatible engines: the `Generator` port over HTTP.
//!
//! Answers stream from `POST {url}/v1/chat/completions`; the answerability check reads the
//! first token's `top_logprobs`; prompts are measured with the engine's `/tokenize` where it
//! has one, and the per-request context is read from its `/props`. A stream that breaks off
//! is an error, never a short answer. Engines, retries and health are the pool's (`super`).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use futures::StreamExt;
use serde_json::{Value, json};

use super::{EngineError, Engines, Pool, PoolConfig, add_us, error_text};
use crate::llm::{ChatMessage, EngineStats, Finish, GenParams, GenStats, Generator};

/// Where the engines are and how to talk to them.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The engines, and how they are reached (the timeout is the longest wait for the
    /// engine's response, and then between two streamed pieces).
    pub engines: PoolConfig,
    /// Tokens one turn may use; the engine's own per-request context caps it when smaller.
    pub context_size: usize,
}

pub struct RemoteGenerator {
    pool: Pool,
    chat: Arc<ChatState>,
}

/// What generation learns about its engines beyond the pool's health.
struct ChatState {
    /// The engine's context per request, once learned (0: not yet).
    engine_context: AtomicUsize,
    /// Whether an engine answered the question (its `/props`; some have none).
    context_asked: AtomicBool,
    /// The turn budget the configuration allows.
    context_size: usize,
    /// Per engine, whether `/tokenize` exists: 0 not known yet, 1 yes, 2 no.
    tokenize: Vec<AtomicU8>,
    ttft_us: AtomicU64,
    ttft_count: AtomicU64,
}

enum Piece {
    Text(String),
    End {
        finish: Finish,
        prompt_tokens: Option<usize>,
        completion_tokens: Option<usize>,
    },
    Failed(EngineError),
}

impl RemoteGenerator {
    /// Connects nothing yet: engines are reached on first use (and by `health`).
    pub fn new(config: RemoteConfig) -> anyhow::Result<RemoteGenerator> {
        let engines = config.engines.urls.len();
        let pool = Pool::new(config.engines, "docent-llm")?;
        Ok(RemoteGenerator {
            pool,
            chat: Arc::new(ChatState {
                engine_context: AtomicUsize::new(0),
                context_asked: AtomicBool::new(false),
                context_size: config.context_size,
                tokenize: (0..engines).map(|_| AtomicU8::new(0)).collect(),
                ttft_us: AtomicU64::new(0),
                ttft_count: AtomicU64::new(0),
            }),
        })
    }
}

impl Generator for RemoteGenerator {
    fn generate(
        &self,
        messages: &[ChatMessage],
        params: &GenParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> anyhow::Result<GenStats> {
        let started = Instant::now();
        let engines = self.pool.engines().clone();
        let body = json!({
            "messages": wire_messages(messages),
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "seed": params.seed,
        });
        let (tx, rx) = mpsc::channel();
        let task = self.pool.runtime().spawn(async move {
            let counters = &engines.counters;
            counters.requests.fetch_add(1, Ordering::Relaxed);
            let upstream = Instant::now();
            if let Err(e) = stream_chat(&engines, body, &tx).await {
                counters.error(&e);
                let _ = tx.send(Piece::Failed(e));
            }
            add_us(&counters.upstream_us, &counters.upstream_count, upstream);
        });
        let mut stats = GenStats {
            prompt_tokens: 0,
            completion_tokens: 0,
            ttft_ms: 0.0,
            total_ms: 0.0,
            finish: Finish::Cancelled,
        };
        let mut first = None;
        for piece in rx {
            match piece {
                Piece::Text(text) => {
                    if first.is_none() {
                        first = Some(started.elapsed());
                        add_us(&self.chat.ttft_us, &self.chat.ttft_count, started);
                    }
                    stats.completion_tokens += 1;
                    if !on_token(&text) {
                        // Dropping the response closes the connection: the engine stops.
                        task.abort();
                        stats.finish = Finish::Cancelled;
                        break;
                    }
                }
                Piece::End {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    stats.finish = finish;
                    stats.prompt_tokens = prompt_tokens.unwrap_or(0);
                    if let Some(n) = completion_tokens {
                        stats.completion_tokens = n;
                    }
                    break;
                }
                Piece::Failed(e) => return Err(e.into()),
            }
        }
        stats.ttft_ms = first.unwrap_or_else(|| started.elapsed()).as_secs_f64() * 1000.0;
        stats.total_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(stats)
    }

    fn classify(&self, messages: &[ChatMessage], labels: &[&str]) -> anyhow::Result<Vec<f32>> {
        anyhow::ensure!(!labels.is_empty(), "no labels to classify with");
        let engines = self.pool.engines().clone();
        let body = json!({
            "messages": wire_messages(messages),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": true,
            "top_logprobs": 10,
        });
        let reply = self.pool.wait(async move {
            engines.counters.requests.fetch_add(1, Ordering::Relaxed);
            let result = async {
                let _turn = engines.turn().await;
                engines.post_json("v1/chat/completions", body).await
            }
            .await;
            if let Err(e) = &result {
                engines.counters.error(e);
            }
            result
        })?;
        let labels: Vec<String> = labels.iter().map(|l| l.to_lowercase()).collect();
        Ok(label_scores(&reply, &labels))
    }

    fn count_tokens(&self, text: &str) -> anyhow::Result<usize> {
        let (engines, chat) = (self.pool.engines().clone(), self.chat.clone());
        let owned = text.to_string();
        let counted = self
            .pool
            .wait(async move { tokenize(&engines, &chat, &owned).await });
        Ok(counted.unwrap_or_else(|| estimate_tokens(text)))
    }

    fn context_size(&self) -> usize {
        // Asked once before the first prompt is fitted (the readiness probe may not have
        // run: `docent ask`, `docent eval`, or an engine down when `serve` started).
        if !self.chat.context_asked.load(Ordering::Relaxed) {
            let (engines, chat) = (self.pool.engines().clone(), self.chat.clone());
            self.pool.wait(async move {
                if let Some((_, endpoint)) = engines.pick() {
                    learn_context(&engines, &chat, endpoint).await;
                }
            });
        }
        match self.chat.engine_context.load(Ordering::Relaxed) {
            0 => self.chat.context_size,
            engine => engine.min(self.chat.context_size),
        }
    }

    fn health(&self) -> Result<(), String> {
        let (engines, chat) = (self.pool.engines().clone(), self.chat.clone());
        self.pool.wait(async move {
            let up = engines.probe().await?;
            for endpoint in up {
                if chat.context_asked.load(Ordering::Relaxed) {
                    break;
                }
                learn_context(&engines, &chat, endpoint).await;
            }
            Ok(())
        })
    }

    fn engine_stats(&self) -> Option<EngineStats> {
        let (requests, errors, upstream_seconds, upstream_count) = self.pool.counts();
        Some(EngineStats {
            requests,
            errors,
            upstream_seconds,
            upstream_count,
            ttft_seconds: self.chat.ttft_us.load(Ordering::Relaxed) as f64 / 1e6,
            ttft_count: self.chat.ttft_count.load(Ordering::Relaxed),
        })
    }
}

/// Streams one answer's pieces to `tx`; returns once the engine ends it or the receiver
/// goes away.
async fn stream_chat(
    engines: &Engines,
    body: Value,
    tx: &mpsc::Sender<Piece>,
) -> Result<(), EngineError> {
    let _turn = engines.turn().await;
    let (endpoint, response) = engines.open("v1/chat/completions", body).await?;
    let timeout = engines.timeout();
    let mut stream = response.bytes_stream();
    let mut lines = SseLines::default();
    let mut end = StreamEnd::default();
    loop {
        let next = tokio::time::timeout(timeout, stream.next())
            .await
            .map_err(|_| EngineError::Timeout(timeout))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            let broke = format!("the stream broke off: {}", error_text(&e));
            endpoint.failed(&broke);
            EngineError::Failed(broke)
        })?;
        for data in lines.push(&chunk) {
            if data == "[DONE]" {
                return end.send(tx);
            }
            let event: Value = serde_json::from_str(&data).map_err(|e| {
                EngineError::Failed(format!("unreadable stream event ({e}): {data:.200}"))
            })?;
            if let Some(message) = engine_error(&event) {
                return Err(EngineError::Failed(message));
            }
            if let Some(text) = end.read(&event)
                && tx.send(Piece::Text(text)).is_err()
            {
                return Ok(());
            }
        }
    }
    if end.finish.is_some() {
        return end.send(tx);
    }
    let broke = "the stream ended before the answer did".to_string();
    endpoint.failed(&broke);
    Err(EngineError::Failed(broke))
}

/// The per-request context the engine reports (llama.cpp's `/props`), noted once an engine
/// answered at all (an engine without `/props` leaves the configured size).
async fn learn_context(engines: &Engines, chat: &ChatState, endpoint: &super::Endpoint) {
    match engines.fetch_json(endpoint, "props").await {
        Ok(Ok(props)) => {
            if let Some(n) = props["default_generation_settings"]["n_ctx"].as_u64() {
                chat.engine_context.store(n as usize, Ordering::Relaxed);
            }
            chat.context_asked.store(true, Ordering::Relaxed);
        }
        // A refusal (no such route) is an answer too; no answer at all is asked again.
        Ok(Err(_)) => chat.context_asked.store(true, Ordering::Relaxed),
        Err(_) => {}
    }
}

/// Tokens `text` takes, from the engine's `/tokenize` (llama.cpp); None when no engine has
/// one or none answers.
async fn tokenize(engines: &Engines, chat: &ChatState, text: &str) -> Option<usize> {
    let (index, endpoint) = engines.pick()?;
    let known = &chat.tokenize[index];
    if known.load(Ordering::Relaxed) == 2 {
        return None;
    }
    let request = || {
        engines
            .authorized(engines.client().post(endpoint.url("tokenize")))
            .json(&json!({"content": text}))
    };
    let sent = engines.send_small(request);
    let response = match tokio::time::timeout(engines.probe_timeout(), sent).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            if e.is_connect() {
                endpoint.failed(&error_text(&e));
            }
            return None;
        }
        Err(_) => {
            // Not worth waiting for again: the estimate is on the safe side.
            known.store(2, Ordering::Relaxed);
            return None;
        }
    };
    if matches!(response.status().as_u16(), 404 | 405 | 501) {
        known.store(2, Ordering::Relaxed);
        return None;
    }
    let body: Value = response.json().await.ok()?;
    let n = body["tokens"].as_array()?.len();
    known.store(1, Ordering::Relaxed);
    Some(n)
}

/// What a stream told so far about how it ends.
#[derive(Default)]
struct StreamEnd {
    finish: Option<Finish>,
    prompt_tokens: Option<usize>,
    completion_tokens: Option<usize>,
}

impl StreamEnd {
    /// Notes an event's finish reason and usage; returns its text, if any.
    fn read(&mut self, event: &Value) -> Option<String> {
        let choice = &event["choices"][0];
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish = Some(if reason == "length" {
                Finish::Length
            } else {
                Finish::Stop
            });
        }
        let usage = &event["usage"];
        if let Some(n) = usage["prompt_tokens"].as_u64() {
            self.prompt_tokens = Some(n as usize);
        }
        if let Some(n) = usage["completion_tokens"].as_u64() {
            self.completion_tokens = Some(n as usize);
        }
        let text = choice["delta"]["content"].as_str()?;
        (!text.is_empty()).then(|| text.to_string())
    }

    fn send(self, tx: &mpsc::Sender<Piece>) -> Result<(), EngineError> {
        let _ = tx.send(Piece::End {
            finish: self.finish.unwrap_or(Finish::Stop),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
        });
        Ok(())
    }
}

/// Splits a Server-Sent Events byte stream into its `data:` payloads.
#[derive(Default)]
pub(crate) struct SseLines {
    pending: Vec<u8>,
}

impl SseLines {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut data = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(payload) = line.trim_end_matches(['\r', '\n']).strip_prefix("data:") {
                data.push(payload.trim().to_string());
            }
        }
        data
    }
}

/// An `{"error": …}` event inside a stream, as engines send them.
fn engine_error(event: &Value) -> Option<String> {
    let error = event.get("error")?;
    Some(
        error["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| error.to_string()),
    )
}

/// The messages as the engine gets them: chat-template control strings in the text stay
/// text, as they do in-process.
pub(crate) fn wire_messages(messages: &[ChatMessage]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| json!({"role": m.role, "content": crate::llm::neutralize_special_tokens(&m.content)}))
        .collect()
}

/// Each label's share of the first token's probability, from `top_logprobs` (labels match
/// tokens case-insensitively, spaces trimmed), renormalised over the labels. An engine that
/// sends no log probabilities is read by its one-word reply instead: the label it starts
/// with gets 1 (none: an even split).
fn label_scores(reply: &Value, labels: &[String]) -> Vec<f32> {
    let even = vec![1.0 / labels.len() as f32; labels.len()];
    let top = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"].as_array();
    if let Some(top) = top {
        let mut mass = vec![0.0f32; labels.len()];
        for entry in top {
            let (Some(token), Some(logprob)) = (entry["token"].as_str(), entry["logprob"].as_f64())
            else {
                continue;
            };
            let token = token.trim().to_lowercase();
            if let Some(i) = labels.iter().position(|l| *l == token) {
                mass[i] += (logprob as f32).exp();
            }
        }
        let total: f32 = mass.iter().sum();
        return if total > 0.0 {
            mass.into_iter().map(|m| m / total).collect()
        } else {
            even
        };
    }
    let text = reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .trim()
        .to_lowercase();
    match labels.iter().position(|l| text.starts_with(l.as_str())) {
        Some(pick) => (0..labels.len())
            .map(|i| if i == pick { 1.0 } else { 0.0 })
            .collect(),
        None => even,
    }
}

/// Tokens `text` may take when no engine can count them: one per three bytes, which
/// over-counts English BPE tokens (about four bytes each) by a third, the safety margin.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_payloads_survive_any_split() {
        let stream = b"data: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut lines = SseLines::default();
            let mut got = lines.push(&stream[..cut]);
            got.extend(lines.push(&stream[cut..]));
            assert_eq!(got, vec!["{\"a\":1}", "[DONE]"], "cut at {cut}");
        }
    }

    #[test]
    fn label_scores_read_logprobs_and_fall_back_to_the_reply() {
        let labels = vec!["yes".to_string(), "no".to_string()];
        let reply = json!({"choices": [{"logprobs": {"content": [{"top_logprobs": [
            {"token": "Yes", "logprob": (0.6f64).ln()},
            {"token": " yes", "logprob": (0.1f64).ln()},
            {"token": "No", "logprob": (0.3f64).ln()},
            {"token": "Maybe", "logprob": (0.01f64).ln()},
        ]}]}}]});
        let scores = label_scores(&reply, &labels);
        assert!((scores[0] - 0.7).abs() < 1e-4, "{scores:?}");
        assert!((scores[1] - 0.3).abs() < 1e-4, "{scores:?}");
        let plain = json!({"choices": [{"message": {"content": "No."}}]});
        assert_eq!(label_scores(&plain, &labels), vec![0.0, 1.0]);
        let neither = json!({"choices": [{"message": {"content": "Perhaps"}}]});
        assert_eq!(label_scores(&neither, &labels), vec![0.5, 0.5]);
    }

    #[test]
    fn stream_ends_read_finish_reasons_and_usage() {
        let mut end = StreamEnd::default();
        let text = end.read(&json!({"choices": [{"delta": {"content": "Hi"}}]}));
        assert_eq!(text.as_deref(), Some("Hi"));
        assert!(end.finish.is_none());
        let last = json!({"choices": [{"delta": {}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3}});
        assert_eq!(end.read(&last), None);
        assert_eq!(end.finish, Some(Finish::Length));
        assert_eq!(
            (end.prompt_tokens, end.completion_tokens),
            (Some(12), Some(3))
        );
    }

    #[test]
    fn estimates_over_count() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 2);
    }
}
