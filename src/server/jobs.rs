//! Crawl jobs started over the API: a queue, one worker thread that runs them one at a
//! time (never inside a request), their progress for `GET /v1/jobs/{id}`, and the
//! scheduler that re-queues sources whose `recrawl_every` has passed.
//!
//! API crawls reach only public addresses unless the operator allowed private targets
//! (`allow_private_targets`) or listed the origin in the bot's `allowed_targets`, and go
//! through no proxy unless the operator configured one for crawling (`crawl_proxy`).
//! Credentials in a source URL are used, never shown: job views and errors redact them.
//! Job records are stored when queued, started and finished, so `GET /v1/jobs/{id}`
//! answers after a restart and a job that was queued or running when the server stopped
//! is run again when it starts (a crawl is one transaction: an interrupted one left the
//! bot as its last complete crawl did). Live progress is kept in memory only.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use url::Url;

use super::AppState;
use crate::domain::BotId;
use crate::domain::Secret;
use crate::ingest::{
    self, IngestRequest, IngestSummary, Source, chunk::ChunkSpec, crawl::CrawlOptions,
    fetch::redact_userinfo, ssrf::TargetGuard,
};
use crate::keys;
use crate::store::Store;
use crate::telemetry::unix_now;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: String,
    #[schema(value_type = String)]
    pub bot_id: BotId,
    pub url: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// While running: what the crawler is doing and how far it got.
    pub phase: String,
    pub progress: u64,
    pub total: Option<u64>,
    pub pages_indexed: Option<usize>,
    pub pages_unchanged: Option<usize>,
    pub pages_skipped: Option<usize>,
    pub pages_removed: Option<usize>,
    /// URLs not fetched because the SSRF guard refused them (e.g. a sitemap listing a
    /// private address).
    #[serde(default)]
    pub urls_refused: Option<usize>,
    pub chunks: Option<usize>,
    pub error: Option<String>,
    pub created: u64,
    pub finished: Option<u64>,
}

struct Job {
    view: Mutex<JobView>,
    progress: ProgressBar,
}

pub struct Jobs {
    store: Store,
    /// Queued and running jobs; finished ones are read from the store.
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    queue: Mutex<Option<Sender<Arc<Job>>>>,
    pub allow_private_targets: bool,
    /// The proxy crawls go through, when the operator configured one (else none).
    proxy: Option<Secret>,
}

impl JobView {
    /// The job as the API shows it: credentials in its URL or error replaced by `***`.
    pub fn redacted(mut self) -> JobView {
        self.url = redact_userinfo(&self.url);
        self.error = self.error.as_deref().map(redact_userinfo);
        self
    }
}

impl Jobs {
    pub fn new(store: Store, allow_private_targets: bool, proxy: Option<Secret>) -> Jobs {
        Jobs {
            store,
            jobs: Mutex::new(HashMap::new()),
            queue: Mutex::new(None),
            allow_private_targets,
            proxy,
        }
    }

    /// Queues a crawl of `url` into `bot`; returns the job's view.
    pub fn submit(&self, bot: &BotId, url: &Url) -> anyhow::Result<JobView> {
        let view = JobView {
            id: format!("job_{}", keys::random_base62(16)?),
            bot_id: bot.clone(),
            url: url.to_string(),
            state: "queued".into(),
            phase: String::new(),
            progress: 0,
            total: None,
            pages_indexed: None,
            pages_unchanged: None,
            pages_skipped: None,
            pages_removed: None,
            urls_refused: None,
            chunks: None,
            error: None,
            created: unix_now(),
            finished: None,
        };
        self.store.put_job(&view.id, &view)?;
        self.enqueue(view.clone())?;
        Ok(view)
    }

    /// Hands a stored job to the worker.
    fn enqueue(&self, view: JobView) -> anyhow::Result<()> {
        let id = view.id.clone();
        let job = Arc::new(Job {
            view: Mutex::new(view),
            progress: ProgressBar::hidden(),
        });
        self.jobs.lock().expect("jobs lock").insert(id, job.clone());
        let queue = self.queue.lock().expect("jobs lock");
        let sender = queue
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the crawl worker is not running"))?;
        sender
            .send(job)
            .map_err(|_| anyhow::anyhow!("the crawl worker has stopped"))?;
        Ok(())
    }

    /// A job's state: live progress while it is queued or running, else its stored record.
    pub fn get(&self, id: &str) -> anyhow::Result<Option<JobView>> {
        let active = self.jobs.lock().expect("jobs lock").get(id).cloned();
        let Some(job) = active else {
            return Ok(self.store.get_job(id)?);
        };
        let mut view = job.view.lock().expect("job lock").clone();
        if view.state == "running" {
            view.phase = job.progress.message();
            view.progress = job.progress.position();
            view.total = job.progress.length();
        }
        Ok(Some(view))
    }

    /// Whether a crawl of `url` into `bot` is queued or running.
    fn is_active(&self, bot: &BotId, url: &str) -> bool {
        self.jobs.lock().expect("jobs lock").values().any(|job| {
            let view = job.view.lock().expect("job lock");
            &view.bot_id == bot && view.url == url
        })
    }

    /// Queues again the jobs a stopped server left queued or running, oldest first.
    fn resume(&self) -> anyhow::Result<usize> {
        let mut unfinished: Vec<JobView> = self
            .store
            .jobs::<JobView>()?
            .into_iter()
            .filter(|j| j.state == "queued" || j.state == "running")
            .collect();
        unfinished.sort_by_key(|j| j.created);
        let n = unfinished.len();
        for mut view in unfinished {
            view.state = "queued".into();
            view.phase = "queued again after a restart".into();
            self.store.put_job(&view.id, &view)?;
            self.enqueue(view)?;
        }
        Ok(n)
    }
}

/// Starts the worker thread: runs queued jobs in order and, once a minute, queues the
/// sources whose re-crawl is due.
pub fn start_worker(state: Arc<AppState>) {
    let (tx, rx) = std::sync::mpsc::channel();
    *state.jobs.queue.lock().expect("jobs lock") = Some(tx);
    match state.jobs.resume() {
        Ok(0) => {}
        Ok(n) => tracing::info!("queued {n} crawl jobs left unfinished by the last run"),
        Err(e) => tracing::error!("cannot resume unfinished crawl jobs: {e:#}"),
    }
    crate::telemetry::spawn_worker("docent-crawl", move |runtime| {
        worker_loop(&state, &rx, runtime)
    });
}

fn worker_loop(state: &AppState, rx: &Receiver<Arc<Job>>, runtime: &tokio::runtime::Runtime) {
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(job) => run_job(state, &job, runtime),
            Err(RecvTimeoutError::Timeout) => queue_due_recrawls(state),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn queue_due_recrawls(state: &AppState) {
    let Ok(bots) = state.store.list_bots() else {
        return;
    };
    let now = unix_now();
    for bot in bots {
        for source in &bot.settings.sources {
            let Some(every) = source.recrawl_every else {
                continue;
            };
            if source.last_crawl.is_some_and(|t| now < t + every)
                || state.jobs.is_active(&bot.id, &source.url)
            {
                continue;
            }
            if let Ok(url) = Url::parse(&source.url)
                && let Err(e) = state.jobs.submit(&bot.id, &url)
            {
                tracing::warn!(
                    "cannot queue the re-crawl of {}: {e:#}",
                    redact_userinfo(&source.url)
                );
            }
        }
    }
}

fn run_job(state: &AppState, job: &Job, runtime: &tokio::runtime::Runtime) {
    let (bot, url) = {
        let mut view = job.view.lock().expect("job lock");
        view.state = "running".into();
        view.phase.clear();
        if let Err(e) = state.store.put_job(&view.id, &*view) {
            tracing::warn!(job = view.id, "cannot record the job's start: {e:#}");
        }
        (view.bot_id.clone(), view.url.clone())
    };
    let result = crawl(state, job, &bot, &url, runtime);
    if let Some(engine) = state.engine.get() {
        engine.retriever.invalidate(&bot);
    }
    if let Some(cache) = &state.answers {
        cache.invalidate(&bot);
    }
    let _ = state.store.update_bot(&bot, |b| {
        for source in b.settings.sources.iter_mut().filter(|s| s.url == url) {
            source.last_crawl = Some(unix_now());
        }
    });
    let mut view = job.view.lock().expect("job lock");
    view.finished = Some(unix_now());
    match result {
        Ok(summary) => {
            view.state = "done".into();
            view.pages_indexed = Some(summary.pages_indexed);
            view.pages_unchanged = Some(summary.pages_unchanged);
            view.pages_skipped = Some(summary.pages_skipped);
            view.pages_removed = Some(summary.pages_removed);
            view.urls_refused = Some(summary.urls_refused);
            view.chunks = Some(summary.chunks);
        }
        Err(e) => {
            let error = redact_userinfo(&format!("{e:#}"));
            tracing::warn!(job = view.id, "crawl failed: {error}");
            view.state = "failed".into();
            view.error = Some(error);
        }
    }
    view.phase.clear();
    if let Err(e) = state.store.put_job(&view.id, &*view) {
        tracing::error!(job = view.id, "cannot record the job's result: {e:#}");
    }
    let id = view.id.clone();
    drop(view);
    state.jobs.jobs.lock().expect("jobs lock").remove(&id);
}

fn crawl(
    state: &AppState,
    job: &Job,
    bot: &BotId,
    url: &str,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<IngestSummary> {
    let engine = state
        .engine
        .get()
        .ok_or_else(|| anyhow::anyhow!("the models are not loaded yet"))?;
    let record = state.store.get_bot(bot)?;
    let guard = (!state.jobs.allow_private_targets).then(|| {
        Arc::new(TargetGuard {
            allowed_origins: record.exempt_origins(),
        })
    });
    let request = IngestRequest {
        bot: bot.clone(),
        name: None,
        source: Source::Web(Url::parse(url)?),
        crawl: CrawlOptions {
            guard,
            proxy: state.jobs.proxy.clone(),
            env_proxy: false,
            ..CrawlOptions::default()
        },
        chunk: ChunkSpec::default(),
        test: record.test,
    };
    let embedding = engine.embedding.clone();
    runtime.block_on(ingest::run(&state.store, embedding, request, &job.progress))
}
