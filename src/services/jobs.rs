//! Crawl jobs: a queue, one worker thread that runs them one at a time (never inside a
//! request), their live progress, the sources a bot re-crawls on a schedule, and the
//! scheduler that queues them when `recrawl_every` has passed. Upload jobs (documents sent
//! to the API) run on the same queue, their files kept in the store until they finish.
//!
//! Crawls reach only public addresses unless the operator allowed private targets
//! (`allow_private_targets`) or listed the origin in the bot's `allowed_targets`, and go
//! through no proxy unless the operator configured one for crawling. Credentials in a
//! source URL are used, never shown: `redacted` jobs and errors replace them by `***`.
//! Job records are stored when queued, started and finished, so a job is known after a
//! restart and one that was queued or running when the server stopped is run again when
//! it starts (a crawl is one transaction: an interrupted one left the bot as its last
//! complete crawl did). Live progress (phase, pages fetched, pages in sight) is kept in
//! memory while a job runs; the finished record keeps its counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use url::Url;

use crate::domain::{BotId, CrawlJob, JobKind, JobState, Secret, SourceSchedule, UploadedFile};
use crate::embed::Embedders;
use crate::ingest::fetch::redact_userinfo;
use crate::ingest::ssrf::TargetGuard;
use crate::ingest::{self, IngestRequest, IngestSummary, Source, crawl::CrawlOptions};
use crate::ports::Storage;
use crate::telemetry::unix_now;

/// What the crawl worker needs from the node it runs in: the embedders its crawls use
/// (none while the models load), and a word when a bot's content changed (its search
/// indexes and cached answers are stale).
pub trait CrawlHost: Send + Sync + 'static {
    fn embedders(&self) -> Option<Arc<Embedders>>;
    fn crawled(&self, bot: &BotId);

    /// Whether the node still runs (a crawl waiting for its models stops waiting if not).
    fn alive(&self) -> bool {
        true
    }

    /// Checks the bot's golden questions after `job` changed its content (`services::golden`);
    /// none when it has none or the node cannot answer.
    fn check_golden(
        &self,
        _bot: &BotId,
        _job: &str,
        _changed: bool,
    ) -> Option<crate::golden::GoldenRun> {
        None
    }
}

/// A queued or running job: its record and its live progress.
struct Job {
    record: Mutex<CrawlJob>,
    progress: JobProgress,
}

/// What a running crawl reports: its phase and how many pages it got through.
#[derive(Default)]
struct JobProgress {
    phase: Mutex<String>,
    pages: AtomicU64,
    /// 0 until the crawl knows of any page.
    total: AtomicU64,
}

impl JobProgress {
    /// Writes the pages done and in sight into `record`.
    fn count(&self, record: &mut CrawlJob) {
        record.progress = self.pages.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        record.total = (total > 0).then_some(total);
    }
}

impl ingest::Progress for JobProgress {
    fn set_message(&self, message: &str) {
        *self.phase.lock().expect("progress lock") = message.to_string();
    }

    fn inc(&self, n: u64) {
        self.pages.fetch_add(n, Ordering::Relaxed);
    }

    fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }
}

pub struct Jobs {
    store: Arc<dyn Storage>,
    /// Queued and running jobs; finished ones are read from the store.
    active: Mutex<HashMap<String, Arc<Job>>>,
    queue: Mutex<Option<Sender<Arc<Job>>>>,
    pub allow_private_targets: bool,
    /// The proxy crawls go through, when the operator configured one (else none).
    proxy: Option<Secret>,
    /// How often the worker looks for orphaned jobs and due re-crawls
    /// (`LOOK_EVERY`; tests shorten it).
    look_every: Duration,
    /// How many times the worker has looked (tests wait on it rather than on a clock).
    looks: std::sync::atomic::AtomicU64,
}

/// The job as it may be shown: credentials in its URL or error replaced by `***`.
pub fn redacted(mut job: CrawlJob) -> CrawlJob {
    job.url = redact_userinfo(&job.url);
    job.error = job.error.as_deref().map(redact_userinfo);
    for skipped in &mut job.skipped {
        skipped.url = redact_userinfo(&skipped.url);
        skipped.reason = redact_userinfo(&skipped.reason);
    }
    job
}

impl Jobs {
    pub fn new(
        store: Arc<dyn Storage>,
        allow_private_targets: bool,
        proxy: Option<Secret>,
    ) -> Jobs {
        Jobs {
            store,
            active: Mutex::new(HashMap::new()),
            queue: Mutex::new(None),
            allow_private_targets,
            proxy,
            look_every: LOOK_EVERY,
            looks: Default::default(),
        }
    }

    /// How many times the worker has looked for orphaned jobs and due re-crawls.
    pub fn looks(&self) -> u64 {
        self.looks.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// These jobs with the worker looking for due re-crawls every `every` (at least 10 ms).
    pub fn looking_every(self, every: Duration) -> Jobs {
        Jobs {
            look_every: every.max(Duration::from_millis(10)),
            ..self
        }
    }

    /// Makes `source` one of the bot's sources (one entry per URL: the last one given
    /// stands, its schedule, scope and page limit) and queues its crawl now.
    pub fn add_source(&self, bot: &BotId, source: SourceSchedule) -> anyhow::Result<CrawlJob> {
        self.store.update_bot(bot, &mut |record| {
            let sources = &mut record.settings.sources;
            sources.retain(|s| s.url != source.url);
            // Claimed as the worker claims a due re-crawl (marked crawled now, the crawl's
            // end marks it again): a look between this and the job's queueing must not
            // take a never-crawled source for due and queue it twice.
            sources.push(SourceSchedule {
                last_crawl: Some(unix_now()),
                ..source.clone()
            });
        })?;
        self.submit(bot, &source).inspect_err(|_| {
            // Not queued after all: the source is not crawled either.
            let _ = self.store.update_bot(bot, &mut |record| {
                let sources = record.settings.sources.iter_mut();
                for stored in sources.filter(|s| s.url == source.url) {
                    stored.last_crawl = None;
                }
            });
        })
    }

    /// Queues a job indexing `files` into `bot`, cited under `base`: the files are stored
    /// with the job, so whichever node runs it (this one after a restart, too) reads them.
    pub fn upload(
        &self,
        bot: &BotId,
        base: &Url,
        files: &[UploadedFile],
    ) -> anyhow::Result<CrawlJob> {
        let job = CrawlJob::upload(crate::ids::job(), bot.clone(), base.as_str(), unix_now());
        self.store.put_upload(&job, files)?;
        self.enqueue(job.clone())?;
        Ok(job)
    }

    /// Unfinished upload jobs of `bot` anywhere in the cluster: what their stored
    /// documents hold in the store.
    pub fn pending_uploads(&self, bot: &BotId) -> anyhow::Result<usize> {
        let jobs = self.store.jobs()?;
        Ok(jobs
            .iter()
            .filter(|j| &j.bot_id == bot && j.kind == JobKind::Upload && j.state.unfinished())
            .count())
    }

    /// Queues a crawl of `source` into `bot`.
    pub fn submit(&self, bot: &BotId, source: &SourceSchedule) -> anyhow::Result<CrawlJob> {
        let id = crate::ids::job();
        let job = CrawlJob::queued(id, bot.clone(), source, unix_now());
        self.store.put_job(&job)?;
        self.enqueue(job.clone())?;
        Ok(job)
    }

    /// Hands a stored job to the worker.
    fn enqueue(&self, record: CrawlJob) -> anyhow::Result<()> {
        let id = record.id.clone();
        let job = Arc::new(Job {
            record: Mutex::new(record),
            progress: JobProgress::default(),
        });
        self.active
            .lock()
            .expect("jobs lock")
            .insert(id, job.clone());
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
    pub fn get(&self, id: &str) -> anyhow::Result<Option<CrawlJob>> {
        let active = self.active.lock().expect("jobs lock").get(id).cloned();
        let Some(job) = active else {
            return Ok(self.store.get_job(id)?);
        };
        let mut record = job.record.lock().expect("job lock").clone();
        if record.state == JobState::Running {
            record.phase = job.progress.phase.lock().expect("progress lock").clone();
            job.progress.count(&mut record);
        }
        Ok(Some(record))
    }

    /// Whether a crawl of `url` into `bot` is queued or running.
    fn is_active(&self, bot: &BotId, url: &str) -> bool {
        self.active.lock().expect("jobs lock").values().any(|job| {
            let record = job.record.lock().expect("job lock");
            &record.bot_id == bot && record.url == url
        })
    }

    /// Queues again the jobs a stopped node left queued or running (this one before a
    /// restart, or another sharing the store), oldest first.
    fn resume(&self) -> anyhow::Result<usize> {
        let unfinished = self.store.adopt_jobs()?;
        let n = unfinished.len();
        for mut job in unfinished {
            job.state = JobState::Queued;
            job.phase = "queued again after a restart".into();
            self.store.put_job(&job)?;
            self.enqueue(job)?;
        }
        Ok(n)
    }
}

/// Starts the worker thread: runs queued jobs in order and, once a minute, queues the
/// sources whose re-crawl is due. Unfinished jobs of a stopped server are queued first.
pub fn start_worker(jobs: Arc<Jobs>, host: Arc<dyn CrawlHost>) {
    let (tx, rx) = std::sync::mpsc::channel();
    *jobs.queue.lock().expect("jobs lock") = Some(tx);
    match jobs.resume() {
        Ok(0) => {}
        Ok(n) => tracing::info!("queued {n} crawl jobs left unfinished by the last run"),
        Err(e) => tracing::error!("cannot resume unfinished crawl jobs: {e:#}"),
    }
    let jobs = Arc::downgrade(&jobs);
    crate::telemetry::spawn_worker("docent-crawl", move |runtime| {
        worker_loop(&jobs, host.as_ref(), &rx, runtime)
    });
}

/// Runs jobs as they come and, once a minute, takes on orphaned jobs and queues due
/// re-crawls; ends once the node has dropped its `Jobs` (its queue's sender is theirs).
fn worker_loop(
    jobs: &std::sync::Weak<Jobs>,
    host: &dyn CrawlHost,
    rx: &Receiver<Arc<Job>>,
    runtime: &tokio::runtime::Runtime,
) {
    let Some(look_every) = jobs.upgrade().map(|j| j.look_every) else {
        return;
    };
    let mut next_look = std::time::Instant::now() + look_every;
    loop {
        let received = rx.recv_timeout(look_every.min(Duration::from_secs(5)));
        let Some(jobs) = jobs.upgrade() else {
            return;
        };
        match received {
            Ok(job) => run_job(&jobs, host, &job, runtime),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if std::time::Instant::now() >= next_look {
            next_look = std::time::Instant::now() + look_every;
            resume_orphans(&jobs);
            queue_due_recrawls(&jobs);
            jobs.looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// How often the worker looks for orphaned jobs and due re-crawls, by default.
pub const LOOK_EVERY: Duration = Duration::from_secs(60);

/// Takes on the jobs of a node that died since (one sharing the store).
fn resume_orphans(jobs: &Jobs) {
    match jobs.resume() {
        Ok(0) => {}
        Ok(n) => tracing::info!("queued {n} crawl jobs of a node that stopped"),
        Err(e) => tracing::warn!("cannot look for orphaned crawl jobs: {e:#}"),
    }
}

fn queue_due_recrawls(jobs: &Jobs) {
    let Ok(bots) = jobs.store.list_bots() else {
        return;
    };
    // Crawls under way anywhere (another node sharing the store, too): a re-crawl that
    // takes longer than its interval is not started twice.
    let Ok(stored) = jobs.store.jobs() else {
        return;
    };
    let running: std::collections::HashSet<(BotId, String)> = stored
        .into_iter()
        .filter(|j| j.state.unfinished())
        .map(|j| (j.bot_id, j.url))
        .collect();
    let now = unix_now();
    let due = |source: &SourceSchedule| {
        source
            .recrawl_every
            .is_some_and(|every| source.last_crawl.is_none_or(|t| now >= t + every))
    };
    for bot in bots {
        for source in bot.settings.sources.iter().filter(|s| due(s)) {
            if jobs.is_active(&bot.id, &source.url)
                || running.contains(&(bot.id.clone(), source.url.clone()))
            {
                continue;
            }
            // Claimed by marking it crawled now, unless another node sharing the store
            // did first: each due re-crawl is queued once in the cluster.
            let mut claimed = false;
            let marked = jobs.store.update_bot(&bot.id, &mut |record| {
                claimed = false;
                let stored = record.settings.sources.iter_mut();
                if let Some(stored) = stored.filter(|s| s.url == source.url).find(|s| due(s)) {
                    stored.last_crawl = Some(now);
                    claimed = true;
                }
            });
            if marked.is_err() || !claimed {
                continue;
            }
            if let Err(e) = jobs.submit(&bot.id, source) {
                tracing::warn!(
                    "cannot queue the re-crawl of {}: {e:#}",
                    redact_userinfo(&source.url)
                );
            }
        }
    }
}

fn run_job(jobs: &Jobs, host: &dyn CrawlHost, job: &Job, runtime: &tokio::runtime::Runtime) {
    let id = job.record.lock().expect("job lock").id.clone();
    // Another node sharing the store may have finished it meanwhile (it adopted the job
    // while this node looked gone): its record stands.
    if let Ok(Some(stored)) = jobs.store.get_job(&id)
        && !stored.state.unfinished()
    {
        jobs.active.lock().expect("jobs lock").remove(&id);
        return;
    }
    let started = {
        let mut record = job.record.lock().expect("job lock");
        record.state = JobState::Running;
        record.phase.clear();
        if let Err(e) = jobs.store.put_job(&record) {
            tracing::warn!(job = record.id, "cannot record the job's start: {e:#}");
        }
        record.clone()
    };
    let (bot, url) = (&started.bot_id, &started.url);
    let result = crawl(jobs, host, job, &started, runtime);
    host.crawled(bot);
    let golden = match &result {
        Ok(summary) => {
            use ingest::Progress;
            job.progress.set_message("checking the golden questions");
            let changed = summary.pages_indexed + summary.pages_removed > 0;
            host.check_golden(bot, &started.id, changed)
        }
        Err(_) => None,
    };
    if started.kind == JobKind::Crawl {
        let _ = jobs.store.update_bot(bot, &mut |b| {
            for source in b.settings.sources.iter_mut().filter(|s| &s.url == url) {
                source.last_crawl = Some(unix_now());
            }
        });
    }
    let mut record = job.record.lock().expect("job lock");
    job.progress.count(&mut record);
    finish(&mut record, result);
    record.golden = golden;
    if let Err(e) = jobs.store.put_job(&record) {
        tracing::error!(job = record.id, "cannot record the job's result: {e:#}");
    }
    let id = record.id.clone();
    drop(record);
    jobs.active.lock().expect("jobs lock").remove(&id);
}

/// Records how a crawl ended: its counts, or its error without credentials.
fn finish(record: &mut CrawlJob, result: anyhow::Result<IngestSummary>) {
    record.finished = Some(unix_now());
    record.phase.clear();
    match result {
        Ok(summary) => {
            record.state = JobState::Done;
            record.pages_indexed = Some(summary.pages_indexed);
            record.pages_unchanged = Some(summary.pages_unchanged);
            record.pages_skipped = Some(summary.pages_skipped);
            record.pages_removed = Some(summary.pages_removed);
            record.urls_refused = Some(summary.urls_refused);
            record.chunks = Some(summary.chunks);
            record.skipped = summary.skipped;
        }
        Err(e) => {
            let error = redact_userinfo(&format!("{e:#}"));
            tracing::warn!(job = record.id, "crawl failed: {error}");
            record.state = JobState::Failed;
            record.error = Some(error);
        }
    }
}

/// How long a crawl that starts while its node's models load waits for them.
const MODELS_WAIT: Duration = Duration::from_secs(600);

/// The node's embedders, waiting for its models if they are still loading (a crawl
/// queued right after the node started, or handed to it by a balancer meanwhile).
fn embedders_once_loaded(host: &dyn CrawlHost) -> anyhow::Result<Arc<Embedders>> {
    let deadline = std::time::Instant::now() + MODELS_WAIT;
    loop {
        if let Some(embedders) = host.embedders() {
            return Ok(embedders);
        }
        if !host.alive() {
            anyhow::bail!("the node stopped before its models loaded");
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("the models did not load within {} s", MODELS_WAIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the crawl `started` describes, with its scope and page limit.
fn crawl(
    jobs: &Jobs,
    host: &dyn CrawlHost,
    job: &Job,
    started: &CrawlJob,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<IngestSummary> {
    let embedders = embedders_once_loaded(host)?;
    let bot = &started.bot_id;
    let record = jobs.store.get_bot(bot)?;
    let embedding = embedders.for_bot(Some(&record))?;
    let guard = (!jobs.allow_private_targets).then(|| {
        Arc::new(TargetGuard {
            allowed_origins: record.exempt_origins(),
        })
    });
    let source = match started.kind {
        JobKind::Crawl => Source::Web(Url::parse(&started.url)?),
        JobKind::Upload => Source::Upload {
            base: Url::parse(&started.url)?,
            files: Arc::new(jobs.store.upload_files(&started.id)?),
        },
    };
    let request = IngestRequest {
        bot: bot.clone(),
        name: None,
        source,
        crawl: CrawlOptions {
            scope: started.scope,
            max_pages: started
                .max_pages
                .unwrap_or(CrawlOptions::default().max_pages),
            guard,
            proxy: jobs.proxy.clone(),
            env_proxy: false,
            ..CrawlOptions::default()
        },
        chunk: Default::default(),
        test: record.test,
    };
    runtime.block_on(ingest::run(
        jobs.store.clone(),
        embedding,
        request,
        &job.progress,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> CrawlJob {
        let source = SourceSchedule::once("https://ana:secret@docs.example/".into());
        CrawlJob::queued("job_1".into(), BotId::parse("docs").unwrap(), &source, 1)
    }

    #[test]
    fn a_source_is_kept_once_per_url_with_its_schedule_and_each_crawl_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path()).unwrap();
        let id = BotId::parse("docs").unwrap();
        store
            .create_bot(&crate::domain::fixtures::bot("docs"))
            .unwrap();
        let jobs = Jobs::new(store.clone(), false, None);
        let url = "https://docs.example/guide/";
        // No worker yet: nothing can be queued, and a source that could not be is not
        // marked crawled.
        assert!(jobs.submit(&id, &SourceSchedule::once(url.into())).is_err());
        assert!(
            jobs.add_source(&id, SourceSchedule::once(url.into()))
                .is_err()
        );
        let unqueued = store.get_bot(&id).unwrap().settings.sources;
        assert_eq!(unqueued[0].last_crawl, None, "{unqueued:?}");
        let (tx, rx) = std::sync::mpsc::channel();
        *jobs.queue.lock().unwrap() = Some(tx);
        let scheduled = SourceSchedule {
            recrawl_every: Some(3600),
            scope: crate::domain::Scope::Host,
            max_pages: Some(20),
            ..SourceSchedule::once(url.into())
        };
        let first = jobs.add_source(&id, scheduled).unwrap();
        assert_eq!(
            (first.scope, first.max_pages),
            (crate::domain::Scope::Host, Some(20)),
            "the job crawls as far as its source says"
        );
        let second = jobs
            .add_source(&id, SourceSchedule::once(url.into()))
            .unwrap();
        let sources = store.get_bot(&id).unwrap().settings.sources;
        assert_eq!(sources.len(), 1, "{sources:?}");
        assert_eq!(
            SourceSchedule {
                last_crawl: None,
                ..sources[0].clone()
            },
            SourceSchedule::once(url.into()),
            "the last schedule, scope and limit given stand"
        );
        // Queued is claimed: the worker's next look does not take it for due.
        assert!(sources[0].last_crawl.is_some(), "{sources:?}");
        assert_eq!(
            jobs.get(&first.id).unwrap().unwrap().state,
            JobState::Queued
        );
        assert_eq!(store.get_job(&second.id).unwrap().unwrap(), second);
        assert_eq!(rx.try_iter().count(), 2);
        assert!(jobs.is_active(&id, url));
        assert!(jobs.get("job_unknown").unwrap().is_none());
    }

    #[test]
    fn a_due_recrawl_is_queued_once_and_sources_not_due_are_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path()).unwrap();
        let id = BotId::parse("docs").unwrap();
        let now = unix_now();
        let source = |url: &str, every: Option<u64>, last: Option<u64>| SourceSchedule {
            recrawl_every: every,
            last_crawl: last,
            scope: crate::domain::Scope::Host,
            max_pages: Some(20),
            ..SourceSchedule::once(url.into())
        };
        let mut bot = crate::domain::fixtures::bot("docs");
        bot.settings.sources = vec![
            // Due: crawled two minutes ago, every minute.
            source("https://docs.example/due/", Some(60), Some(now - 120)),
            // Due: never crawled.
            source("https://docs.example/never/", Some(3600), None),
            // Not due yet, and not scheduled at all.
            source("https://docs.example/fresh/", Some(3600), Some(now - 60)),
            source("https://docs.example/once/", None, Some(now - 86_400)),
        ];
        store.create_bot(&bot).unwrap();
        let jobs = Jobs::new(store.clone(), false, None);
        let (tx, rx) = std::sync::mpsc::channel();
        *jobs.queue.lock().unwrap() = Some(tx);
        queue_due_recrawls(&jobs);
        let queued: Vec<Arc<Job>> = rx.try_iter().collect();
        let mut urls: Vec<String> = queued
            .iter()
            .map(|job| job.record.lock().unwrap().url.clone())
            .collect();
        urls.sort();
        assert_eq!(
            urls,
            ["https://docs.example/due/", "https://docs.example/never/"]
        );
        for job in &queued {
            let record = job.record.lock().unwrap();
            assert_eq!(
                (record.scope, record.max_pages),
                (crate::domain::Scope::Host, Some(20)),
                "a re-crawl crawls as far as its source says"
            );
        }
        // Each is marked crawled now, so the next look queues nothing (its jobs are also
        // still under way).
        let sources = store.get_bot(&id).unwrap().settings.sources;
        assert!(sources[..2].iter().all(|s| s.last_crawl >= Some(now)));
        assert_eq!(sources[2].last_crawl, Some(now - 60));
        queue_due_recrawls(&jobs);
        assert_eq!(rx.try_iter().count(), 0);
    }

    #[test]
    fn a_finished_crawl_records_its_counts_and_a_failed_one_its_error_without_credentials() {
        let mut done = job();
        let summary = IngestSummary {
            bot: "docs".into(),
            pages_indexed: 4,
            pages_unchanged: 1,
            pages_skipped: 2,
            pages_removed: 0,
            urls_refused: 3,
            chunks: 9,
            seconds: 0.5,
            skipped: vec![crate::domain::SkippedPage {
                url: "https://docs.example/scan.pdf".into(),
                reason: "no text layer".into(),
            }],
        };
        finish(&mut done, Ok(summary));
        assert_eq!(done.state, JobState::Done);
        assert_eq!(
            (done.pages_indexed, done.urls_refused, done.chunks),
            (Some(4), Some(3), Some(9))
        );
        assert_eq!(done.skipped[0].reason, "no text layer");
        assert!(done.finished.is_some());
        let mut failed = job();
        let error = anyhow::anyhow!("cannot fetch https://ana:secret@docs.example/a");
        finish(&mut failed, Err(error));
        assert_eq!(failed.state, JobState::Failed);
        // Stored without the credentials already, and shown without them.
        assert!(!failed.error.as_deref().unwrap().contains("secret"));
        let shown = redacted(failed);
        assert!(!shown.url.contains("secret") && shown.url.contains("docs.example"));
        let error = shown.error.unwrap();
        assert!(
            !error.contains("secret") && error.contains("docs.example/a"),
            "{error}"
        );
    }
}
