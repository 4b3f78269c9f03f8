//! Crawl jobs started over the API: a queue, one worker thread that runs them one at a
//! time (never inside a request), their progress for `GET /v1/jobs/{id}`, and the
//! scheduler that re-queues sources whose `recrawl_every` has passed.
//!
//! API crawls reach only public addresses unless the operator allowed private targets
//! (`allow_private_targets`) or listed the origin in the bot's `allowed_targets`.
//! Job records live in memory: after a restart the data is whatever the last completed
//! crawl committed (each crawl is one transaction), and schedules resume from the bots.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::ProgressBar;
use serde::Serialize;
use url::Url;

use super::AppState;
use crate::domain::BotId;
use crate::ingest::{
    self, IngestRequest, IngestSummary, Source, chunk::ChunkSpec, crawl::CrawlOptions,
    ssrf::TargetGuard,
};
use crate::keys;
use crate::telemetry::unix_now;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    queue: Mutex<Option<Sender<Arc<Job>>>>,
    pub allow_private_targets: bool,
}

impl Jobs {
    pub fn new(allow_private_targets: bool) -> Jobs {
        Jobs {
            jobs: Mutex::new(HashMap::new()),
            queue: Mutex::new(None),
            allow_private_targets,
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
            chunks: None,
            error: None,
            created: unix_now(),
            finished: None,
        };
        let job = Arc::new(Job {
            view: Mutex::new(view.clone()),
            progress: ProgressBar::hidden(),
        });
        self.jobs
            .lock()
            .expect("jobs lock")
            .insert(view.id.clone(), job.clone());
        let queue = self.queue.lock().expect("jobs lock");
        let sender = queue
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the crawl worker is not running"))?;
        sender
            .send(job)
            .map_err(|_| anyhow::anyhow!("the crawl worker has stopped"))?;
        Ok(view)
    }

    pub fn get(&self, id: &str) -> Option<JobView> {
        let job = self.jobs.lock().expect("jobs lock").get(id).cloned()?;
        let mut view = job.view.lock().expect("job lock").clone();
        if view.state == "running" {
            view.phase = job.progress.message();
            view.progress = job.progress.position();
            view.total = job.progress.length();
        }
        Some(view)
    }
}

/// Starts the worker thread: runs queued jobs in order and, once a minute, queues the
/// sources whose re-crawl is due.
pub fn start_worker(state: Arc<AppState>) {
    let (tx, rx) = std::sync::mpsc::channel();
    *state.jobs.queue.lock().expect("jobs lock") = Some(tx);
    std::thread::Builder::new()
        .name("docent-crawl".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!("crawl worker cannot start: {e}");
                    return;
                }
            };
            worker_loop(&state, &rx, &runtime);
        })
        .expect("spawn the crawl worker");
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
            if source.last_crawl.is_some_and(|t| now < t + every) {
                continue;
            }
            if let Ok(url) = Url::parse(&source.url)
                && let Err(e) = state.jobs.submit(&bot.id, &url)
            {
                tracing::warn!("cannot queue the re-crawl of {}: {e:#}", source.url);
            }
        }
    }
}

fn run_job(state: &AppState, job: &Job, runtime: &tokio::runtime::Runtime) {
    let (bot, url) = {
        let mut view = job.view.lock().expect("job lock");
        view.state = "running".into();
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
            view.chunks = Some(summary.chunks);
        }
        Err(e) => {
            tracing::warn!(job = view.id, "crawl failed: {e:#}");
            view.state = "failed".into();
            view.error = Some(format!("{e:#}"));
        }
    }
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
            allowed_origins: record.settings.allowed_targets.clone(),
        })
    });
    let request = IngestRequest {
        bot: bot.clone(),
        name: None,
        source: Source::Web(Url::parse(url)?),
        crawl: CrawlOptions {
            guard,
            ..CrawlOptions::default()
        },
        chunk: ChunkSpec::default(),
        test: record.test,
    };
    let embedder = engine.retriever.embedder().clone();
    runtime.block_on(ingest::run(&state.store, embedder, request, &job.progress))
}
