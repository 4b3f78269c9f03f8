//! Engines reached over OpenAI-compatible HTTP (llama.cpp's `llama-server`, vLLM, Ollama,
//! TGI, a hosted API): the pool both remote adapters share, `chat` (the `Generator` port)
//! and `embed` (the `Embedder` port).
//!
//! A pool spreads requests round-robin over its engines; one that refuses connections or
//! breaks off is skipped for a while (1 s, doubling to 15 s) and tried again after, or as
//! soon as a readiness probe finds it answering. Before a response starts, an engine that
//! is busy (429) or loading (503) is retried with backoff and jitter, honouring its
//! `Retry-After`, at most `MAX_ATTEMPTS` times. The HTTP work runs on a small runtime of
//! the pool's own, so the ports stay blocking like the in-process models.

pub mod chat;
pub mod embed;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use url::Url;

use crate::domain::Secret;

pub use chat::{RemoteConfig, RemoteGenerator};
pub use embed::{EmbedConfig, EmbedError, RemoteEmbedder};

/// Why an engine gave no answer; the API maps each onto its own status and code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// Connection refused, or the engine stayed busy or loading through the retries.
    #[error("the engine is unavailable: {0}")]
    Unavailable(String),
    #[error("the engine sent nothing for {} s", .0.as_secs())]
    Timeout(Duration),
    /// The engine refused the request or broke off its answer.
    #[error("the engine failed: {0}")]
    Failed(String),
}

impl EngineError {
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Unavailable(_) => "unavailable",
            EngineError::Timeout(_) => "timeout",
            EngineError::Failed(_) => "failed",
        }
    }
}

/// Attempts one request makes across engines before its response starts.
const MAX_ATTEMPTS: u32 = 4;
/// The first retry waits about this long (then doubling, with jitter).
const RETRY_BASE: Duration = Duration::from_millis(250);
/// The longest wait between two attempts, whatever `Retry-After` says.
const RETRY_CAP: Duration = Duration::from_secs(5);
/// How long an engine that refused connections is skipped: 1 s, doubling up to this.
const DOWN_CAP: Duration = Duration::from_secs(15);
/// How long an idle connection to an engine is kept for reuse.
const POOL_IDLE: Duration = Duration::from_secs(4);
/// Readiness probes and small requests wait at most this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a pool's engines are and how to talk to them.
#[derive(Debug, Clone)]
pub struct PoolConfig {
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
}

/// Engines of one kind, their health, and the runtime their HTTP runs on.
pub struct Pool {
    inner: Arc<Engines>,
    runtime: Option<tokio::runtime::Runtime>,
}

pub(crate) struct Engines {
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    config: PoolConfig,
    client: reqwest::Client,
    in_flight: tokio::sync::Semaphore,
    model: Mutex<Option<String>>,
    pub(crate) counters: Counters,
}

pub(crate) struct Endpoint {
    /// The engine's root, ending in `/`.
    base: Url,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    failures: u32,
    down_until: Option<Instant>,
    last_error: Option<String>,
}

/// What a pool has sent its engines since it started.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    unavailable: AtomicU64,
    timeout: AtomicU64,
    failed: AtomicU64,
    pub(crate) upstream_us: AtomicU64,
    pub(crate) upstream_count: AtomicU64,
}

impl Pool {
    /// Connects nothing yet: engines are reached on first use (and by `probe`).
    pub fn new(config: PoolConfig, thread_name: &str) -> anyhow::Result<Pool> {
        anyhow::ensure!(!config.urls.is_empty(), "no engine URL given");
        // reqwest is built without a TLS provider of its own: take rustls' ring one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(PROBE_TIMEOUT))
            // Idle connections are dropped before the engines' own keep-alive ends them
            // (llama.cpp's server and uvicorn both close after 5 s), so a request is not
            // sent on a connection the engine is closing.
            .pool_idle_timeout(POOL_IDLE)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let endpoints = config
            .urls
            .iter()
            .map(|url| Endpoint {
                base: engine_root(url),
                health: Mutex::new(Health::default()),
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(thread_name)
            .enable_all()
            .build()?;
        Ok(Pool {
            inner: Arc::new(Engines {
                endpoints,
                next: AtomicUsize::new(0),
                in_flight: tokio::sync::Semaphore::new(config.concurrency.max(1)),
                model: Mutex::new(config.model.clone()),
                config,
                client,
                counters: Counters::default(),
            }),
            runtime: Some(runtime),
        })
    }

    pub(crate) fn engines(&self) -> &Arc<Engines> {
        &self.inner
    }

    /// Runs `work` on the pool's runtime and waits for it (from any thread, async or not).
    pub(crate) fn wait<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::sync_channel(1);
        self.runtime().spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().expect("the engine runtime stopped")
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("runtime lives until drop")
    }

    /// Requests sent, errors by kind and upstream time so far.
    pub(crate) fn counts(&self) -> (u64, Vec<(&'static str, u64)>, f64, u64) {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (
            get(&c.requests),
            vec![
                ("unavailable", get(&c.unavailable)),
                ("timeout", get(&c.timeout)),
                ("failed", get(&c.failed)),
            ],
            get(&c.upstream_us) as f64 / 1e6,
            get(&c.upstream_count),
        )
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async caller may not do: let it wind down.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Engines {
    pub(crate) fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// A request slot; at most `concurrency` requests are in flight.
    pub(crate) async fn turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.in_flight.acquire().await.expect("never closed")
    }

    /// Sends `body` to `path` on the next healthy engine, retrying other engines on refused
    /// connections and the same request after a pause while engines are busy or loading.
    pub(crate) async fn open(
        &self,
        path: &str,
        mut body: Value,
    ) -> Result<(&Endpoint, reqwest::Response), EngineError> {
        let started = Instant::now();
        let timeout = self.config.timeout;
        body["model"] = json!(self.model_name().await);
        let mut attempt = 0;
        let mut quiet_retry_used = false;
        loop {
            attempt += 1;
            let Some((_, endpoint)) = self.pick() else {
                return Err(EngineError::Unavailable(self.down_reasons()));
            };
            let request = self
                .authorized(self.client.post(endpoint.url(path)))
                .json(&body);
            let response = match tokio::time::timeout(timeout, request.send()).await {
                Err(_) => return Err(EngineError::Timeout(timeout)),
                Ok(Err(e)) => {
                    // Refused: skip this engine for a while. Failing otherwise before a
                    // response is once taken for a kept-alive connection the engine closed
                    // as it was reused, and sent again at once; a second time, the engine
                    // is skipped like a refusing one.
                    let why = error_text(&e);
                    if e.is_connect() || quiet_retry_used {
                        endpoint.failed(&why);
                    } else {
                        quiet_retry_used = true;
                        tracing::debug!(engine = %endpoint.base, "request failed, sending again: {why}");
                    }
                    if attempt >= MAX_ATTEMPTS || started.elapsed() > timeout {
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

    /// `open`, then the whole JSON body within the timeout.
    pub(crate) async fn post_json(&self, path: &str, body: Value) -> Result<Value, EngineError> {
        let (_, response) = self.open(path, body).await?;
        let timeout = self.config.timeout;
        let bytes = tokio::time::timeout(timeout, response.bytes())
            .await
            .map_err(|_| EngineError::Timeout(timeout))?
            .map_err(|e| EngineError::Failed(error_text(&e)))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::Failed(format!("unreadable {path} response: {e}")))
    }

    /// The next engine in turn that is not being skipped, with its position in the list.
    pub(crate) fn pick(&self) -> Option<(usize, &Endpoint)> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        (0..n)
            .map(|i| (start + i) % n)
            .map(|i| (i, &self.endpoints[i]))
            .find(|(_, e)| e.usable(now))
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

    pub(crate) fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.api_key {
            Some(key) => request.bearer_auth(&key.0),
            None => request,
        }
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The configured model, else the first one an engine lists (learned once; until then
    /// each request asks, without marking engines down: that is the readiness probe's job).
    pub(crate) async fn model_name(&self) -> String {
        self.known_model().await.unwrap_or_else(|| "default".into())
    }

    /// The configured model, else the first one an engine lists; None while no engine has
    /// listed one.
    pub(crate) async fn known_model(&self) -> Option<String> {
        if let Some(name) = self.model.lock().expect("model lock").clone() {
            return Some(name);
        }
        for endpoint in &self.endpoints {
            if self.list_models(endpoint).await.is_ok() {
                break;
            }
        }
        self.model.lock().expect("model lock").clone()
    }

    /// Asks every engine whether it answers (`GET /v1/models`), marking each up or down and
    /// learning the model name on the way; returns the engines that answered (an error
    /// with every engine's reason when none did).
    pub(crate) async fn probe(&self) -> Result<Vec<&Endpoint>, String> {
        let mut reasons = Vec::new();
        let mut up = Vec::new();
        for endpoint in &self.endpoints {
            match self.list_models(endpoint).await {
                Ok(()) => {
                    endpoint.answered();
                    up.push(endpoint);
                }
                Err(why) => {
                    endpoint.failed(&why);
                    reasons.push(format!("{}: {why}", endpoint.base));
                }
            }
        }
        if up.is_empty() {
            Err(reasons.join("; "))
        } else {
            Ok(up)
        }
    }

    async fn list_models(&self, endpoint: &Endpoint) -> Result<(), String> {
        let models = self.get_json(endpoint, "v1/models").await?;
        if let Some(id) = models["data"][0]["id"].as_str() {
            let mut model = self.model.lock().expect("model lock");
            model.get_or_insert_with(|| id.to_string());
        }
        Ok(())
    }

    pub(crate) async fn get_json(&self, endpoint: &Endpoint, path: &str) -> Result<Value, String> {
        self.fetch_json(endpoint, path)
            .await?
            .map_err(|status| format!("{path} answered {status}"))
    }

    /// `GET path` on one engine: its JSON, or the status it refused with (`Ok(Err(..))`),
    /// or why it gave no answer at all (`Err`).
    pub(crate) async fn fetch_json(
        &self,
        endpoint: &Endpoint,
        path: &str,
    ) -> Result<Result<Value, reqwest::StatusCode>, String> {
        let wait = self.probe_timeout();
        let request = || self.authorized(self.client.get(endpoint.url(path)));
        let response = tokio::time::timeout(wait, self.send_small(request))
            .await
            .map_err(|_| format!("no answer within {} s", wait.as_secs()))?
            .map_err(|e| error_text(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Ok(Err(status));
        }
        tokio::time::timeout(wait, response.json::<Value>())
            .await
            .map_err(|_| format!("{path} sent no body"))?
            .map(Ok)
            .map_err(|e| format!("{path}: {}", error_text(&e)))
    }

    /// Sends a small request (a probe, a token count), once more when it failed on a
    /// pooled connection the engine had just closed (not for a refused connection: that
    /// engine is down).
    pub(crate) async fn send_small(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        match request().send().await {
            Err(e) if !e.is_connect() && !e.is_timeout() => request().send().await,
            other => other,
        }
    }

    pub(crate) fn probe_timeout(&self) -> Duration {
        self.config.timeout.min(PROBE_TIMEOUT)
    }
}

impl Endpoint {
    pub(crate) fn url(&self, path: &str) -> Url {
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
    pub(crate) fn failed(&self, why: &str) {
        let mut health = self.health.lock().expect("health lock");
        health.failures = health.failures.saturating_add(1);
        let skip = Duration::from_secs(1)
            .saturating_mul(1 << health.failures.saturating_sub(1).min(4))
            .min(DOWN_CAP);
        health.down_until = Some(Instant::now() + skip);
        health.last_error = Some(why.to_string());
        tracing::warn!(engine = %self.base, "engine failed: {why}");
    }
}

impl Counters {
    pub(crate) fn error(&self, e: &EngineError) {
        let counter = match e {
            EngineError::Unavailable(_) => &self.unavailable,
            EngineError::Timeout(_) => &self.timeout,
            EngineError::Failed(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) fn add_us(sum: &AtomicU64, count: &AtomicU64, since: Instant) {
    sum.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    count.fetch_add(1, Ordering::Relaxed);
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
pub(crate) fn error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
    fn engines_that_fail_are_skipped_then_tried_again() {
        let endpoint = Endpoint {
            base: Url::parse("http://127.0.0.1:9/").unwrap(),
            health: Mutex::new(Health::default()),
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
