//! `docent serve`: the REST API on actix-web, in the same process as the embedder, the
//! llama.cpp model, the indexes and the database.
//!
//! `AppState` is shared by every worker. Models load in the background after the socket is
//! bound (`/healthz` answers at once, `/readyz` once they are loaded). A request-id
//! middleware wraps every route: it echoes or makes `X-Request-Id`, makes it the id in
//! error envelopes, and writes the access log line.

pub mod accounts;
pub mod analytics;
pub mod answers;
pub mod api;
pub mod auth;
pub mod budget;
pub mod chat;
pub mod console;
pub mod documents;
pub mod error;
pub mod feedback;
pub mod handoff;
pub mod leads;
pub mod metrics;
pub mod openai;
pub mod openapi;
pub mod questions;
pub mod queue;
pub mod ratelimit;
pub mod schemas;
pub mod sessions;
pub mod sse;
pub mod views;
pub mod webhooks;
pub mod widget;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpMessage, HttpServer, ResponseError, web};
use anyhow::Context;
use tokio::sync::Semaphore;

use crate::chat::AskOptions;
use crate::domain::Secret;
use crate::embed::{Embedders, IntoEmbedders};
use crate::keys::{self, KeyEnv, KeyKind, KeyScope};
use crate::llm::Generator;
use crate::ports::Storage;
use crate::retrieval::Retriever;
use crate::services::cache::AnswerCache;
use crate::services::jobs::{CrawlHost, Jobs};
use auth::{CallerBot, CallerKeyId, KeyCache};
use budget::{Budget, Budgets};
use error::{ApiError, ApiResult, REQUEST_ID};
pub use metrics::Metrics;
use ratelimit::{Quote, RateLimit};

/// The file, in the data dir, holding the admin key made on first start (mode 0600).
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// Present while `docent serve` runs on a data dir: lets the CLI say why the database is
/// locked.
pub const SERVE_MARKER: &str = "serve.pid";

/// Limits on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest chat message, in characters.
    pub max_message_chars: usize,
    /// Chat requests admitted at once (generating or waiting); beyond it, 503.
    pub max_queue: usize,
    /// Answers generated at once (the model's parallel sequences).
    pub parallel: usize,
    /// The longest a request waits for a free sequence; then 503.
    pub max_wait: Duration,
    /// Requests a minute per API key (0: no limit).
    pub per_key_per_minute: u32,
    /// Requests a minute per client IP (0: no limit).
    pub per_ip_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The origin clients reach docent at (`--public-url`), when known.
    pub public_url: Option<String>,
    /// IPv6 clients count as their network of this many bits for limits and budgets.
    pub ipv6_prefix: u8,
    /// How long a first-turn answer is reused (zero: no answer cache).
    pub answer_cache_ttl: std::time::Duration,
    /// The longest one answer may generate for.
    pub request_timeout: std::time::Duration,
    /// Let API-started crawls reach private, loopback and link-local addresses.
    pub allow_private_targets: bool,
    /// The proxy API-started crawls go through (none by default: a proxy would resolve
    /// names past the SSRF guard's resolver).
    pub crawl_proxy: Option<Secret>,
    /// How long a widget session token lasts.
    pub widget_session_ttl: Duration,
    /// Chat messages an hour per widget visitor (or public-key client address); 0: none.
    pub visitor_messages_per_hour: u32,
    /// Chat messages an hour per bot through public keys and widget sessions; 0: none.
    pub bot_public_messages_per_hour: u32,
    /// The most of a bot's hourly budget one client address (or IPv6 network) may use, in
    /// percent.
    pub bot_budget_share_percent: u32,
    /// Live feeds one visitor (a widget session, or a bare public key's client) may hold open.
    pub max_feeds_per_visitor: usize,
    /// Live feeds one client address may hold open through public keys.
    pub max_feeds_per_address: usize,
    /// A bearer token that may read `/metrics` from anywhere (else loopback clients and the
    /// metrics listener only).
    pub metrics_token: Option<Secret>,
    /// How often the crawl worker looks for due re-crawls and orphaned jobs (a minute;
    /// tests shorten it).
    pub schedule_every: Duration,
}

impl Limits {
    /// One address's share of a bot's hourly budget (0: no budget, so no share either).
    pub fn bot_address_budget(&self) -> u32 {
        let share = u64::from(self.bot_public_messages_per_hour)
            * u64::from(self.bot_budget_share_percent.clamp(1, 100))
            / 100;
        match self.bot_public_messages_per_hour {
            0 => 0,
            _ => share.max(1) as u32,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_message_chars: 4000,
            max_queue: 16,
            parallel: 4,
            max_wait: Duration::from_secs(60),
            per_key_per_minute: 120,
            per_ip_per_minute: 600,
            trusted_proxies: Vec::new(),
            public_url: None,
            ipv6_prefix: 64,
            answer_cache_ttl: std::time::Duration::from_secs(3600),
            request_timeout: std::time::Duration::from_secs(120),
            allow_private_targets: false,
            crawl_proxy: None,
            widget_session_ttl: Duration::from_secs(3600),
            visitor_messages_per_hour: 60,
            bot_public_messages_per_hour: 3000,
            bot_budget_share_percent: 10,
            max_feeds_per_visitor: 4,
            max_feeds_per_address: 32,
            metrics_token: None,
            schedule_every: crate::services::jobs::LOOK_EVERY,
        }
    }
}

/// What answering needs once the models are loaded.
pub struct Engine {
    pub retriever: Arc<Retriever>,
    pub generator: Arc<dyn Generator>,
    /// The embedders bots are searched and crawled with (the retriever's).
    pub embedders: Arc<Embedders>,
}

impl Engine {
    /// The engine over `store` with these models.
    pub fn new(
        store: Arc<dyn Storage>,
        embedders: impl IntoEmbedders,
        generator: Arc<dyn Generator>,
    ) -> Engine {
        let embedders = embedders.into_embedders();
        Engine {
            retriever: Arc::new(crate::app::retriever(store, embedders.clone())),
            generator,
            embedders,
        }
    }
}

pub struct AppState {
    pub store: Arc<dyn Storage>,
    pub keys: KeyCache,
    pub engine: OnceLock<Engine>,
    pub options: AskOptions,
    pub limits: Limits,
    /// Permits for chat requests in flight (`limits.max_queue`).
    pub admission: Arc<Semaphore>,
    /// Permits for uploads being read (`documents::UPLOADS_AT_ONCE`).
    pub uploads: Arc<Semaphore>,
    /// Turns at the model's sequences, fairly shared between callers.
    pub queue: queue::GenerationQueue,
    pub metrics: Metrics,
    pub per_key: Option<RateLimit>,
    pub per_ip: Option<RateLimit>,
    /// Public callers' hourly budgets: per visitor, per client address, per address within
    /// a bot (its share of the bot's), per bot; and the buckets they are charged to.
    pub per_visitor: Option<Budget>,
    pub per_address: Option<Budget>,
    pub per_bot_address: Option<Budget>,
    pub per_bot: Option<Budget>,
    pub budgets: Budgets,
    /// How many nodes share the limits and budgets above (kept current on a shared store).
    pub share: ratelimit::Share,
    /// Widget session tokens.
    pub sessions: widget::Sessions,
    /// Console login attempts' buckets.
    pub logins: sessions::LoginLimits,
    pub answers: Option<AnswerCache>,
    pub jobs: Arc<Jobs>,
    /// Live feeds of conversations' new messages (agent replies).
    pub live: handoff::Live,
    /// The webhook delivery worker's counts (the worker is started beside the server).
    pub deliveries: Arc<crate::events::DeliveryStats>,
    /// Set when the node begins to stop (SIGTERM, SIGINT): live feeds end at once, with
    /// `server_stopping`, while answers in flight finish.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Storage>,
        options: AskOptions,
        limits: Limits,
    ) -> anyhow::Result<AppState> {
        let keys = KeyCache::new(store.list_keys()?);
        let live = handoff::Live::new(store.notices());
        let session_secrets =
            store.shared_secrets(widget::SESSION_SECRET, &widget::Sessions::fresh_secret())?;
        anyhow::ensure!(
            session_secrets.is_usable(),
            "the stored widget session secret is shorter than {} bytes (a damaged store?): \
             rotate it with `docent keys rotate-session-secret`",
            crate::ports::SecretRing::MIN_LEN
        );
        let share = ratelimit::Share::default();
        Ok(AppState {
            keys,
            engine: OnceLock::new(),
            admission: Arc::new(Semaphore::new(limits.max_queue.max(1))),
            uploads: Arc::new(Semaphore::new(documents::UPLOADS_AT_ONCE)),
            queue: queue::GenerationQueue::new(limits.parallel, limits.max_wait),
            per_key: RateLimit::per_minute(limits.per_key_per_minute).map(|l| l.shared(&share)),
            per_ip: RateLimit::per_minute(limits.per_ip_per_minute).map(|l| l.shared(&share)),
            per_visitor: Budget::per_hour(
                limits.visitor_messages_per_hour,
                "this visitor's budget of {} messages an hour",
            ),
            per_address: Budget::per_hour(
                limits.visitor_messages_per_hour.saturating_mul(10),
                "this address's budget of {} visitor messages an hour",
            ),
            per_bot_address: Budget::per_hour(
                limits.bot_address_budget(),
                "this address's share of {} of the bot's visitor messages an hour",
            ),
            per_bot: Budget::per_hour(
                limits.bot_public_messages_per_hour,
                "this bot's budget of {} visitor messages an hour",
            ),
            budgets: Budgets::shared(&share),
            sessions: widget::Sessions::new(limits.widget_session_ttl, session_secrets),
            logins: sessions::LoginLimits::shared(&share),
            share,
            answers: AnswerCache::new(limits.answer_cache_ttl),
            jobs: Arc::new(
                Jobs::new(
                    store.clone(),
                    limits.allow_private_targets,
                    limits.crawl_proxy.clone(),
                )
                .looking_every(limits.schedule_every),
            ),
            store,
            options,
            limits,
            metrics: Metrics::default(),
            live,
            deliveries: Arc::default(),
            stopping: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Runs `work` on the store off the async workers (redb blocks); its errors become
    /// API errors (a missing bot 404, and so on).
    pub async fn stored<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn Storage) -> Result<T, crate::ports::Error> + Send + 'static,
    ) -> ApiResult<T> {
        let store = self.store.clone();
        api::blocking(move || Ok(work(store.as_ref())?)).await
    }

    /// A bot's content changed: its search indexes and cached answers are stale.
    pub fn content_changed(&self, bot: &crate::domain::BotId) {
        if let Some(engine) = self.engine.get() {
            engine.retriever.invalidate(bot);
        }
        if let Some(cache) = &self.answers {
            cache.invalidate(bot);
        }
    }

    pub fn engine(&self) -> Result<&Engine, ApiError> {
        self.engine.get().ok_or_else(|| {
            ApiError::unavailable(
                "not_ready",
                "the models are still loading; retry shortly",
                5,
            )
        })
    }
}

/// What a node starts from: its store, answer options and limits, the models when they
/// are loaded already (`serve` loads them after binding), and how webhooks are delivered
/// (no delivery worker when `None`). `serve`, the bench and the tests all start here.
pub struct Launch {
    pub store: Arc<dyn Storage>,
    pub options: AskOptions,
    pub limits: Limits,
    pub engine: Option<Engine>,
    pub deliveries: Option<crate::events::DeliveryConfig>,
}

impl Launch {
    /// The state every route shares, with its background workers running: crawl jobs
    /// (unfinished ones resumed), and webhook deliveries when configured.
    pub fn start(self) -> anyhow::Result<web::Data<AppState>> {
        let state = web::Data::new(AppState::new(
            self.store.clone(),
            self.options,
            self.limits,
        )?);
        if let Some(engine) = self.engine {
            let _ = state.engine.set(engine);
        }
        let notices = self.store.notices();
        if self.store.is_shared() {
            keep_current(Arc::downgrade(&state.clone().into_inner()), notices.clone());
        }
        if let Some(notices) = notices {
            hear_other_nodes(
                notices.as_ref(),
                Arc::downgrade(&state.clone().into_inner()),
            )?;
        }
        let host = Arc::new(NodeHost(Arc::downgrade(&state.clone().into_inner())));
        crate::services::jobs::start_worker(state.jobs.clone(), host);
        if let Some(config) = self.deliveries {
            crate::events::start_worker(self.store, config, state.deliveries.clone());
        }
        Ok(state)
    }
}

/// How often a node sharing its store re-reads every key and the widget session secrets
/// and counts the nodes serving: a key revoked or rotated on another node is refused here
/// within this, a rotated session secret signs here within it, and limits follow a node's
/// coming or going within it.
pub const KEY_REFRESH: Duration = Duration::from_millis(500);

/// Keeps the node's key cache the store's, and its share of the limits its count of the
/// nodes serving, while the node lives.
fn keep_current(state: std::sync::Weak<AppState>, notices: Option<Arc<dyn crate::ports::Notices>>) {
    let spawned = std::thread::Builder::new()
        .name("docent-keys".into())
        .spawn(move || {
            loop {
                std::thread::sleep(KEY_REFRESH);
                let Some(state) = state.upgrade() else {
                    return;
                };
                let generation = state.keys.generation();
                match state.store.list_keys() {
                    Ok(keys) => state.keys.replace_all(keys, generation),
                    Err(e) => tracing::warn!("cannot re-read the API keys: {e:#}"),
                }
                refresh_session_secrets(&state);
                // Unknown while the store is away: the last count holds.
                if let Some(nodes) = notices.as_ref().and_then(|n| n.nodes().ok()) {
                    state.share.set_nodes(nodes);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the key refresh: {e}");
    }
}

/// Takes up a widget session secret rotated on another node (or by the CLI).
fn refresh_session_secrets(state: &AppState) {
    let generation = state.sessions.generation();
    let fresh = widget::Sessions::fresh_secret();
    match state.store.shared_secrets(widget::SESSION_SECRET, &fresh) {
        Ok(secrets) if secrets.is_usable() => state.sessions.refresh(secrets, generation),
        Ok(_) => tracing::warn!("the stored widget session secret is too short: kept the last"),
        Err(e) => tracing::warn!("cannot re-read the widget session secret: {e:#}"),
    }
}

/// Passes the other nodes' notices on to this node's live feeds while the node lives.
fn hear_other_nodes(
    notices: &dyn crate::ports::Notices,
    state: std::sync::Weak<AppState>,
) -> anyhow::Result<()> {
    notices.listen(Box::new(move |notice| {
        let Some(state) = state.upgrade() else {
            return false;
        };
        if let Some(notice) = notice {
            state.live.receive(notice, state.store.as_ref());
        }
        true
    }))?;
    Ok(())
}

/// The crawl worker's view of the node: the engine's embedding once the models are
/// loaded; a crawled bot's search indexes and cached answers dropped. Weak, so a node that
/// stops (a test's) is dropped with its workers' connections.
struct NodeHost(std::sync::Weak<AppState>);

impl CrawlHost for NodeHost {
    fn embedders(&self) -> Option<Arc<Embedders>> {
        let state = self.0.upgrade()?;
        state.engine.get().map(|engine| engine.embedders.clone())
    }

    fn crawled(&self, bot: &crate::domain::BotId) {
        if let Some(state) = self.0.upgrade() {
            state.content_changed(bot);
        }
    }

    fn alive(&self) -> bool {
        self.0.strong_count() > 0
    }

    fn check_golden(
        &self,
        bot: &crate::domain::BotId,
        job: &str,
        changed: bool,
    ) -> Option<crate::golden::GoldenRun> {
        let state = self.0.upgrade()?;
        let engine = state.engine.get()?;
        // Behind visitors' questions in the fair queue, as a tenant of its own.
        let tenant = format!("golden:{bot}");
        let generator = queue::Queued {
            inner: engine.generator.as_ref(),
            queue: &state.queue,
            caller: &tenant,
            cancelled: &|| false,
        };
        let mut ask = |question: &str, settings: &crate::domain::BotSettings| {
            let options = state.options.clone().for_bot(settings);
            let retriever = &engine.retriever;
            crate::chat::answer(retriever, &generator, bot, question, &options, &mut |_| {
                true
            })
        };
        let store = state.store.as_ref();
        // A panic in the model costs this check, not the crawl worker.
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::services::golden::check(store, bot, Some(job), changed, &mut ask)
        }));
        match checked {
            Ok(Ok(run)) => run,
            Ok(Err(e)) => {
                tracing::warn!(%bot, job, "cannot check the golden questions: {e:#}");
                None
            }
            Err(_) => {
                tracing::error!(%bot, job, "the golden-question check panicked");
                None
            }
        }
    }
}

/// The HTTP server on a thread of its own, in its own actix system (the bench and the
/// tests); stopped when dropped.
pub struct Running(actix_web::dev::ServerHandle);

impl Drop for Running {
    fn drop(&mut self) {
        let handle = self.0.clone();
        std::thread::spawn(move || actix_web::rt::System::new().block_on(handle.stop(false)));
    }
}

/// Serves `state` on `listener` from a thread of its own, once it is listening.
pub fn spawn(
    state: web::Data<AppState>,
    listener: TcpListener,
    workers: usize,
) -> anyhow::Result<Running> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("docent-http".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = match server(state, listener, workers) {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(server.handle()));
                if let Err(e) = server.await {
                    tracing::error!("the server stopped: {e}");
                }
            })
        })?;
    let handle = rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the server thread ended before it listened"))??;
    Ok(Running(handle))
}

/// Registers every route under its path.
pub fn routes(cfg: &mut web::ServiceConfig) {
    api::routes(cfg);
    documents::routes(cfg);
    questions::routes(cfg);
    accounts::routes(cfg);
    answers::routes(cfg);
    sessions::routes(cfg);
    analytics::routes(cfg);
    chat::routes(cfg);
    feedback::routes(cfg);
    handoff::routes(cfg);
    leads::routes(cfg);
    webhooks::routes(cfg);
    widget::routes(cfg);
    console::routes(cfg);
    openai::routes(cfg);
    openapi::routes(cfg);
}

/// Builds the HTTP server on a bound listener (port 0 in tests).
pub fn server(
    state: web::Data<AppState>,
    listener: TcpListener,
    workers: usize,
) -> anyhow::Result<actix_web::dev::Server> {
    let max_body = state.limits.max_body_bytes;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(max_body)
                    .error_handler(|err, _| error::json_error(err).into()),
            )
            .app_data(web::PathConfig::default().error_handler(|err, _| {
                ApiError::bad_request("invalid_request", err.to_string()).into()
            }))
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                ApiError::bad_request("invalid_request", err.to_string()).into()
            }))
            .configure(routes)
            .default_service(web::to(api::not_found))
            .wrap(from_fn(request_context))
            // Outermost, so refusals (429s included) reach the page's script readable.
            .wrap(widget::cors(state.clone()))
    })
    .workers(workers.max(1))
    // Stopping is `stop_on_signals`' (feeds end first; SIGINT as graceful as SIGTERM).
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_SECS)
    .listen(listener)
    .context("failed to listen")?
    .run();
    Ok(server)
}

/// How long a stopping node waits for answers in flight before it closes their
/// connections.
pub const SHUTDOWN_SECS: u64 = 30;

/// Waits for SIGTERM or SIGINT, then stops the node gracefully: live feeds end with
/// `server_stopping` (nothing more will come on them), no new connection is taken, and
/// answers in flight get `SHUTDOWN_SECS` to finish.
pub async fn stop_on_signals(
    state: web::Data<AppState>,
    servers: Vec<actix_web::dev::ServerHandle>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .inspect_err(|e| tracing::error!("cannot listen for SIGTERM: {e}"))
        .ok();
    let mut stop_signal = async || {
        tokio::select! {
            Some(()) = async { term.as_mut()?.recv().await } => {}
            Ok(()) = tokio::signal::ctrl_c() => {}
            // Neither can be listened for: only a kill stops this node.
            else => std::future::pending::<()>().await,
        }
    };
    stop_signal().await;
    eprintln!(
        "docent stopping: answers in flight get {SHUTDOWN_SECS} s to finish (signal again to stop now)"
    );
    state.stopping.send_replace(true);
    let graceful = async {
        for server in &servers {
            server.stop(true).await;
        }
    };
    tokio::select! {
        () = graceful => {}
        () = stop_signal() => {
            eprintln!("docent stopping now");
            for server in &servers {
                server.stop(false).await;
            }
        }
    }
}

/// The metrics listener (`--metrics-bind`): `/metrics` alone, on a port of its own.
pub fn metrics_server(
    state: web::Data<AppState>,
    listener: TcpListener,
) -> anyhow::Result<actix_web::dev::Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(api::metrics_listener))
            .default_service(web::to(api::not_found))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .context("failed to listen for metrics")?
    .run();
    Ok(server)
}

/// Request id (echoed when the client sent a sane one), the task-local for error bodies,
/// the response header, metrics and the access log line.
async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(crate::ids::request);
    let method = req.method().to_string();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let exempt = matches!(
        req.path(),
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json"
    );
    let mut res = REQUEST_ID
        .scope(id.clone(), async move {
            // Per-IP limit first: it holds before any key is looked at.
            if let (Some(state), false) = (&state, exempt)
                && let Some(limit) = &state.per_ip
            {
                let ip = auth::client_address(req.request(), state);
                match limit.check(&ip) {
                    Ok(quote) => {
                        req.extensions_mut().insert(IpQuote(quote));
                    }
                    Err((quote, error)) => {
                        req.extensions_mut().insert(IpQuote(quote));
                        let response = error.error_response();
                        return Ok(req.into_response(response).map_into_right_body());
                    }
                }
            }
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        })
        .await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    // The tighter of the key's and the IP's quotas goes in the headers.
    let quote = {
        let extensions = res.request().extensions();
        let key = extensions.get::<KeyQuote>().map(|q| q.0);
        let ip = extensions.get::<IpQuote>().map(|q| q.0);
        match (key, ip) {
            (Some(k), Some(i)) => Some(if k.remaining <= i.remaining { k } else { i }),
            (k, i) => k.or(i),
        }
    };
    if let Some(quote) = quote {
        let headers = res.headers_mut();
        for (name, value) in [
            ("ratelimit-limit", quote.limit as u64),
            ("ratelimit-remaining", quote.remaining as u64),
            ("ratelimit-reset", quote.reset),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let status = res.status().as_u16();
    let latency = started.elapsed().as_secs_f64();
    if let Some(state) = res.request().app_data::<web::Data<AppState>>() {
        state.metrics.request(&route, status, latency);
    }
    let (key_id, bot) = {
        let extensions = res.request().extensions();
        (
            extensions
                .get::<CallerKeyId>()
                .map(|k| k.0.clone())
                .unwrap_or_default(),
            extensions
                .get::<CallerBot>()
                .and_then(|b| b.0.get().cloned())
                .unwrap_or_default(),
        )
    };
    tracing::info!(
        target: "docent::access",
        method,
        route,
        status,
        latency_ms = latency * 1000.0,
        bot,
        key_id,
        request_id = id,
    );
    Ok(res)
}

/// The per-key quota after this request (set by authentication).
#[derive(Debug, Clone, Copy)]
pub struct KeyQuote(pub Quote);

/// The per-IP quota after this request.
#[derive(Debug, Clone, Copy)]
struct IpQuote(Quote);

/// Creates an admin key when the database has none, writing it to `ADMIN_KEY_FILE` (0600)
/// in `data_dir`; once per store, even with many nodes starting on it together. Returns the
/// file's path when this node made the key.
pub fn bootstrap_admin_key(
    store: &dyn Storage,
    data_dir: &Path,
) -> anyhow::Result<Option<PathBuf>> {
    if !store.list_keys()?.is_empty() {
        return Ok(None);
    }
    let (key, record) = keys::generate(
        KeyKind::Secret,
        KeyEnv::Live,
        KeyScope::Admin,
        Vec::new(),
        Some("bootstrap admin".into()),
        crate::telemetry::unix_now(),
    )?;
    // The file first (under a name of this process's): a crash in between leaves a key
    // nobody can use, not one that nobody has; it takes the real name only once stored,
    // so a node that loses the race (another sharing the store and even this folder made
    // the first key) never touches the winner's file.
    let path = data_dir.join(ADMIN_KEY_FILE);
    let pending = data_dir.join(format!("{ADMIN_KEY_FILE}.{}", std::process::id()));
    write_private(&pending, &format!("{key}\n"))?;
    let stored = store.put_first_key(&record);
    if !matches!(stored, Ok(true)) {
        let _ = std::fs::remove_file(&pending);
        return stored.map(|_| None).map_err(Into::into);
    }
    std::fs::rename(&pending, &path)
        .with_context(|| format!("failed to move the admin key to {}", path.display()))?;
    Ok(Some(path))
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}
