//! Generation on remote OpenAI-compatible engines (llama.cpp's `llama-server`, vLLM,
//! Ollama, TGI, a hosted API): the `Generator` port over HTTP.
//!
//! Answers stream from `POST {url}/v1/chat/completions`; the answerability check reads the
//! first token's `top_logprobs`; prompts are measured with the engine's `/tokenize` where it
//! has one. Several engines share the load round-robin; one that refuses connections is
//! skipped for a while (1 s, doubling to 15 s) and tried again after, or as soon as a
//! readiness probe finds it answering. Before the first token, an engine that is busy
//! (429) or loading (503) is retried with backoff and jitter, honouring its `Retry-After`.
//! A stream that breaks off is an error, never a short answer. The HTTP work runs on a
//! small runtime of its own, so the port stays blocking like the in-process generator.

use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use url::Url;

use super::{ChatMessage, EngineStats, Finish, GenParams, GenStats, Generator};
use crate::domain::Secret;

/// Where the engines are and how to talk to them.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Each engine's root (`http://host:8080`; a trailing `/v1` is accepted too).
    pub urls: Vec<Url>,
    /// The model name sent with each request [default: the engine's first listed model].
    pub model: Option<String>,
    /// Sent as `Authorization: Bearer …`.
    pub api_key: Option<Secret>,
    /// The longest wait for the engine's response, and then between two streamed pieces.
    pub timeout: Duration,
    /// Requests in flight to the engines at once.
    pub concurrency: usize,
    /// Tokens one turn may use; the engine's own per-request context caps it when smaller.
    pub context_size: usize,
}

/// Why the engine gave no answer; the API maps each onto its own status and code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// Connection refused, or the engine stayed busy or loading through the retries.
    #[error("the generation engine is unavailable: {0}")]
    Unavailable(String),
    #[error("the generation engine sent nothing for {} s (--llm-timeout)", .0.as_secs())]
    Timeout(Duration),
    /// The engine refused the request or broke off its answer.
    #[error("the generation engine failed: {0}")]
    Failed(String),
}

impl EngineError {
    fn kind(&self) -> &'static str {
        match self {
            EngineError::Unavailable(_) => "unavailable",
            EngineError::Timeout(_) => "timeout",
            EngineError::Failed(_) => "failed",
        }
    }
}

/// Attempts one request makes across engines before the first token.
const MAX_ATTEMPTS: u32 = 4;
/// The first retry waits about this long (then doubling, with jitter).
const RETRY_BASE: Duration = Duration::from_millis(250);
/// The longest wait between two attempts, whatever `Retry-After` says.
const RETRY_CAP: Duration = Duration::from_secs(5);
/// How long an engine that refused connections is skipped: 1 s, doubling up to this.
const DOWN_CAP: Duration = Duration::from_secs(15);
/// Readiness probes and token counts wait at most this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RemoteGenerator {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Inner {
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    config: RemoteConfig,
    client: reqwest::Client,
    in_flight: tokio::sync::Semaphore,
    /// The engine's context per request, once learned (0: not yet).
    engine_context: AtomicUsize,
    model: Mutex<Option<String>>,
    counters: Counters,
}

struct Endpoint {
    /// The engine's root, ending in `/`.
    base: Url,
    health: Mutex<Health>,
    /// Whether `/tokenize` exists: 0 not known yet, 1 yes, 2 no.
    tokenize: AtomicU8,
}

#[derive(Default)]
struct Health {
    failures: u32,
    down_until: Option<Instant>,
    last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    unavailable: AtomicU64,
    timeout: AtomicU64,
    failed: AtomicU64,
    upstream_us: AtomicU64,
    upstream_count: AtomicU64,
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
        anyhow::ensure!(!config.urls.is_empty(), "no engine URL given");
        // reqwest is built without a TLS provider of its own: take rustls' ring one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(PROBE_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let endpoints = config
            .urls
            .iter()
            .map(|url| Endpoint {
                base: engine_root(url),
                health: Mutex::new(Health::default()),
                tokenize: AtomicU8::new(0),
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("docent-llm")
            .enable_all()
            .build()?;
        Ok(RemoteGenerator {
            inner: Arc::new(Inner {
                endpoints,
                next: AtomicUsize::new(0),
                in_flight: tokio::sync::Semaphore::new(config.concurrency.max(1)),
                model: Mutex::new(config.model.clone()),
                config,
                client,
                engine_context: AtomicUsize::new(0),
                counters: Counters::default(),
            }),
            runtime: Some(runtime),
        })
    }

    /// Runs `work` on the engine runtime and waits for it (from any thread, async or not).
    fn wait<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = mpsc::sync_channel(1);
        self.runtime().spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().expect("the engine runtime stopped")
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("runtime lives until drop")
    }
}

impl Drop for RemoteGenerator {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async caller may not do: let it wind down.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
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
        let inner = self.inner.clone();
        let body = json!({
            "messages": wire_messages(messages),
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "seed": params.seed,
        });
        let (tx, rx) = mpsc::channel();
        let task = self.runtime().spawn(async move {
            let counters = &inner.counters;
            counters.requests.fetch_add(1, Ordering::Relaxed);
            let upstream = Instant::now();
            if let Err(e) = inner.stream_chat(body, &tx).await {
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
                        let c = &self.inner.counters;
                        add_us(&c.ttft_us, &c.ttft_count, started);
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
        let inner = self.inner.clone();
        let body = json!({
            "messages": wire_messages(messages),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": true,
            "top_logprobs": 10,
        });
        let reply = self.wait(async move {
            inner.counters.requests.fetch_add(1, Ordering::Relaxed);
            let result = inner.complete(body).await;
            if let Err(e) = &result {
                inner.counters.error(e);
            }
            result
        })?;
        let labels: Vec<String> = labels.iter().map(|l| l.to_lowercase()).collect();
        Ok(label_scores(&reply, &labels))
    }

    fn count_tokens(&self, text: &str) -> anyhow::Result<usize> {
        let inner = self.inner.clone();
        let owned = text.to_string();
        let counted = self.wait(async move { inner.tokenize(&owned).await });
        Ok(counted.unwrap_or_else(|| estimate_tokens(text)))
    }

    fn context_size(&self) -> usize {
        match self.inner.engine_context.load(Ordering::Relaxed) {
            0 => self.inner.config.context_size,
            engine => engine.min(self.inner.config.context_size),
        }
    }

    fn health(&self) -> Result<(), String> {
        let inner = self.inner.clone();
        self.wait(async move { inner.probe().await })
    }

    fn engine_stats(&self) -> Option<EngineStats> {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Some(EngineStats {
            requests: get(&c.requests),
            errors: vec![
                ("unavailable", get(&c.unavailable)),
                ("timeout", get(&c.timeout)),
                ("failed", get(&c.failed)),
            ],
            upstream_seconds: get(&c.upstream_us) as f64 / 1e6,
            upstream_count: get(&c.upstream_count),
            ttft_seconds: get(&c.ttft_us) as f64 / 1e6,
            ttft_count: get(&c.ttft_count),
        })
    }
}

impl Inner {
    /// Streams one answer's pieces to `tx`; returns once the engine ends it or the
    /// receiver goes away.
    async fn stream_chat(&self, body: Value, tx: &mpsc::Sender<Piece>) -> Result<(), EngineError> {
        let _turn = self.in_flight.acquire().await.expect("never closed");
        let (endpoint, response) = self.open("v1/chat/completions", body).await?;
        let timeout = self.config.timeout;
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

    /// A blocking (non-streamed) completion's body.
    async fn complete(&self, body: Value) -> Result<Value, EngineError> {
        let _turn = self.in_flight.acquire().await.expect("never closed");
        let (_, response) = self.open("v1/chat/completions", body).await?;
        let timeout = self.config.timeout;
        let bytes = tokio::time::timeout(timeout, response.bytes())
            .await
            .map_err(|_| EngineError::Timeout(timeout))?
            .map_err(|e| EngineError::Failed(error_text(&e)))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::Failed(format!("unreadable completion: {e}")))
    }

    /// Sends `body` to `path` on the next healthy engine, retrying other engines on refused
    /// connections and the same request after a pause while engines are busy or loading.
    async fn open(
        &self,
        path: &str,
        mut body: Value,
    ) -> Result<(&Endpoint, reqwest::Response), EngineError> {
        let started = Instant::now();
        let timeout = self.config.timeout;
        body["model"] = json!(self.model_name().await);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(endpoint) = self.pick() else {
                return Err(EngineError::Unavailable(self.down_reasons()));
            };
            let request = self
                .authorized(self.client.post(endpoint.url(path)))
                .json(&body);
            let response = match tokio::time::timeout(timeout, request.send()).await {
                Err(_) => return Err(EngineError::Timeout(timeout)),
                Ok(Err(e)) => {
                    endpoint.failed(&error_text(&e));
                    if attempt >= MAX_ATTEMPTS {
                        return Err(EngineError::Unavailable(self.down_reasons()));
                    }
                    continue;
                }
                Ok(Ok(response)) => response,
            };
            let status = response.status();
            if status.is_success() {
                endpoint.answered();
                return Ok((endpoint, response));
            }
            if status.as_u16() != 429 && status.as_u16() != 503 {
                let text = response.text().await.unwrap_or_default();
                return Err(EngineError::Failed(format!("{status}: {text:.300}")));
            }
            let wait = crate::retry::backoff(
                RETRY_BASE,
                attempt as usize,
                crate::retry::retry_after(response.headers()),
                RETRY_CAP,
            );
            if attempt >= MAX_ATTEMPTS || started.elapsed() + wait > timeout {
                return Err(EngineError::Unavailable(format!(
                    "the engine answered {status} to {MAX_ATTEMPTS} attempts"
                )));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The next engine in turn that is not being skipped.
    fn pick(&self) -> Option<&Endpoint> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        (0..n)
            .map(|i| &self.endpoints[(start + i) % n])
            .find(|e| e.usable(now))
    }

    fn down_reasons(&self) -> String {
        let reasons: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| {
                let health = e.health.lock().expect("health lock");
                let why = health.last_error.as_deref().unwrap_or("not answering");
                format!("{}: {why}", e.base)
            })
            .collect();
        reasons.join("; ")
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.api_key {
            Some(key) => request.bearer_auth(&key.0),
            None => request,
        }
    }

    /// The configured model, else the first one an engine lists (learned once; until then
    /// each request asks, without marking engines down: that is the readiness probe's job).
    async fn model_name(&self) -> String {
        if let Some(name) = self.model.lock().expect("model lock").clone() {
            return name;
        }
        for endpoint in &self.endpoints {
            if self.probe_one(endpoint).await.is_ok() {
                break;
            }
        }
        let learned = self.model.lock().expect("model lock").clone();
        learned.unwrap_or_else(|| "default".into())
    }

    /// Asks every engine whether it answers (`GET /v1/models`), marking each up or down;
    /// learns the model name and the per-request context on the way. Ok when one answers.
    async fn probe(&self) -> Result<(), String> {
        let mut reasons = Vec::new();
        for endpoint in &self.endpoints {
            match self.probe_one(endpoint).await {
                Ok(()) => endpoint.answered(),
                Err(why) => {
                    endpoint.failed(&why);
                    reasons.push(format!("{}: {why}", endpoint.base));
                }
            }
        }
        if reasons.len() < self.endpoints.len() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }

    async fn probe_one(&self, endpoint: &Endpoint) -> Result<(), String> {
        let models = self.get_json(endpoint, "v1/models").await?;
        if let Some(id) = models["data"][0]["id"].as_str() {
            let mut model = self.model.lock().expect("model lock");
            model.get_or_insert_with(|| id.to_string());
        }
        if self.engine_context.load(Ordering::Relaxed) == 0
            && let Ok(props) = self.get_json(endpoint, "props").await
            && let Some(n) = props["default_generation_settings"]["n_ctx"].as_u64()
        {
            self.engine_context.store(n as usize, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn get_json(&self, endpoint: &Endpoint, path: &str) -> Result<Value, String> {
        let request = self.authorized(self.client.get(endpoint.url(path)));
        let wait = self.probe_timeout();
        let response = tokio::time::timeout(wait, request.send())
            .await
            .map_err(|_| format!("no answer within {} s", wait.as_secs()))?
            .map_err(|e| error_text(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{path} answered {status}"));
        }
        tokio::time::timeout(wait, response.json::<Value>())
            .await
            .map_err(|_| format!("{path} sent no body"))?
            .map_err(|e| format!("{path}: {}", error_text(&e)))
    }

    fn probe_timeout(&self) -> Duration {
        self.config.timeout.min(PROBE_TIMEOUT)
    }

    /// Tokens `text` takes, from the engine's `/tokenize` (llama.cpp); None when no engine
    /// has one or none answers.
    async fn tokenize(&self, text: &str) -> Option<usize> {
        let endpoint = self.pick()?;
        if endpoint.tokenize.load(Ordering::Relaxed) == 2 {
            return None;
        }
        let request = self
            .authorized(self.client.post(endpoint.url("tokenize")))
            .json(&json!({"content": text}));
        let response = match tokio::time::timeout(self.probe_timeout(), request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                endpoint.failed(&error_text(&e));
                return None;
            }
            Err(_) => {
                // Not worth waiting for again: the estimate is on the safe side.
                endpoint.tokenize.store(2, Ordering::Relaxed);
                return None;
            }
        };
        if matches!(response.status().as_u16(), 404 | 405 | 501) {
            endpoint.tokenize.store(2, Ordering::Relaxed);
            return None;
        }
        let body: Value = response.json().await.ok()?;
        let n = body["tokens"].as_array()?.len();
        endpoint.tokenize.store(1, Ordering::Relaxed);
        Some(n)
    }
}

impl Endpoint {
    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("a relative path joins")
    }

    fn usable(&self, now: Instant) -> bool {
        let health = self.health.lock().expect("health lock");
        health.down_until.is_none_or(|until| now >= until)
    }

    fn answered(&self) {
        let mut health = self.health.lock().expect("health lock");
        *health = Health::default();
    }

    /// A refused connection or a broken stream: skip this engine for a while.
    fn failed(&self, why: &str) {
        let mut health = self.health.lock().expect("health lock");
        health.failures = health.failures.saturating_add(1);
        let skip = Duration::from_secs(1)
            .saturating_mul(1 << health.failures.saturating_sub(1).min(4))
            .min(DOWN_CAP);
        health.down_until = Some(Instant::now() + skip);
        health.last_error = Some(why.to_string());
        tracing::warn!(engine = %self.base, "generation engine failed: {why}");
    }
}

impl Counters {
    fn error(&self, e: &EngineError) {
        let counter = match e.kind() {
            "unavailable" => &self.unavailable,
            "timeout" => &self.timeout,
            _ => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
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
struct SseLines {
    pending: Vec<u8>,
}

impl SseLines {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
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
fn wire_messages(messages: &[ChatMessage]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| json!({"role": m.role, "content": super::neutralize_special_tokens(&m.content)}))
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

/// The engine's root for `url`: a trailing `/v1` (as OpenAI clients are given) is dropped,
/// and the path ends in `/` so routes join under it.
fn engine_root(url: &Url) -> Url {
    let mut root = url.clone();
    let path = root.path().trim_end_matches('/');
    let path = path.strip_suffix("/v1").unwrap_or(path).to_string();
    root.set_path(&format!("{path}/"));
    root.set_query(None);
    root.set_fragment(None);
    root
}

/// A reqwest error with its causes (the top level alone says only "error sending request").
fn error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn add_us(sum: &AtomicU64, count: &AtomicU64, since: Instant) {
    sum.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    count.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_roots_accept_a_trailing_v1() {
        for given in [
            "http://h:8080",
            "http://h:8080/",
            "http://h:8080/v1",
            "http://h:8080/v1/",
        ] {
            let root = engine_root(&Url::parse(given).unwrap());
            assert_eq!(root.as_str(), "http://h:8080/", "{given}");
        }
        let root = engine_root(&Url::parse("https://h/proxy/llm/v1").unwrap());
        assert_eq!(
            root.join("v1/chat/completions").unwrap().as_str(),
            "https://h/proxy/llm/v1/chat/completions"
        );
    }

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

    #[test]
    fn engines_that_fail_are_skipped_then_tried_again() {
        let endpoint = Endpoint {
            base: Url::parse("http://127.0.0.1:9/").unwrap(),
            health: Mutex::new(Health::default()),
            tokenize: AtomicU8::new(0),
        };
        let now = Instant::now();
        assert!(endpoint.usable(now));
        endpoint.failed("refused");
        assert!(!endpoint.usable(Instant::now()));
        assert!(endpoint.usable(Instant::now() + Duration::from_millis(1001)));
        for _ in 0..10 {
            endpoint.failed("refused");
        }
        assert!(!endpoint.usable(Instant::now() + Duration::from_secs(14)));
        assert!(endpoint.usable(Instant::now() + DOWN_CAP + Duration::from_millis(1)));
        endpoint.answered();
        assert!(endpoint.usable(Instant::now()));
    }
}
