//! The ingest pipeline: crawl (or scan a folder) → extract → chunk → embed in batches →
//! stage → commit in one transaction. A crawl's pages stream through the stages, so memory
//! holds a few pages and one batch, not the site (a folder or a document set is read whole
//! first, up to `max_pages`); the index is rebuilt from the store when a bot is next loaded.

pub mod answers;
pub mod chunk;
pub mod crawl;
pub mod documents;
pub mod docx;
pub mod extract;
pub mod fetch;
pub mod isolate;
pub mod local;
pub mod pages;
pub mod pdf;
mod pdf_read;
mod reindex;
pub mod ssrf;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::mpsc;
use url::Url;

use crate::domain::{Bot, BotId, Chunk, Page, SkippedPage};
use crate::embed::{Embedding, minilm_id};
use crate::ports::{ContentStore, IngestCommit};
use chunk::{ChunkSpec, TextChunk};
use crawl::{CrawlOptions, CrawlReport, CrawledPage, Known};
pub use reindex::{ReindexSummary, reindex};

/// Where a bot's content comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Web(Url),
    Folder {
        root: PathBuf,
        base_url: Option<Url>,
    },
    /// Passages handed over as they are (evaluation corpora): each becomes one page,
    /// duplicates included, since each is its own document.
    Documents {
        name: String,
        documents: Arc<Vec<Document>>,
    },
    /// Documents uploaded to the API, cited under `base`: added or replaced by name, never
    /// removing what earlier uploads or other sources indexed.
    Upload {
        base: Url,
        files: Arc<Vec<crate::domain::UploadedFile>>,
    },
}

impl Source {
    /// What names this source on the pages it indexes: its start URL (without credentials
    /// or fragment), its folder (its `--base-url` when given), or its document set.
    pub fn key(&self) -> String {
        match self {
            Source::Web(url) => crawl::normalize(url.clone()).to_string(),
            Source::Folder {
                base_url: Some(base),
                ..
            } => crawl::normalize(base.clone()).to_string(),
            Source::Folder { root, .. } => std::fs::canonicalize(root)
                .unwrap_or_else(|_| root.clone())
                .display()
                .to_string(),
            Source::Documents { name, .. } => format!("documents:{name}"),
            Source::Upload { base, .. } => format!("upload:{base}"),
        }
    }

    /// Whether an ingest of this source removes the pages it indexed before and did not
    /// see again (a crawl or a folder does; an upload only adds).
    fn removes_vanished(&self) -> bool {
        !matches!(self, Source::Upload { .. })
    }
}

/// A passage to index as one page.
#[derive(Debug, Clone)]
pub struct Document {
    pub url: String,
    pub title: String,
    pub text: String,
}

impl Source {
    /// A URL when `raw` parses as http(s), a folder otherwise.
    pub fn parse(raw: &str, base_url: Option<&str>) -> anyhow::Result<Source> {
        if raw.starts_with("http://") || raw.starts_with("https://") {
            let url = Url::parse(raw).with_context(|| format!("invalid URL {raw:?}"))?;
            return Ok(Source::Web(url));
        }
        let base_url = base_url
            .map(|b| {
                let with_slash = if b.ends_with('/') {
                    b.to_string()
                } else {
                    format!("{b}/")
                };
                Url::parse(&with_slash).with_context(|| format!("invalid --base-url {b:?}"))
            })
            .transpose()?;
        let root = PathBuf::from(raw);
        if !root.exists() {
            bail!("{raw} is neither an http(s) URL nor an existing folder");
        }
        Ok(Source::Folder { root, base_url })
    }

    fn describe(&self) -> String {
        match self {
            // What is shown and stored as the bot's source: never its credentials.
            Source::Web(url) => fetch::redact_userinfo(url.as_str()),
            Source::Folder { root, .. } => root.display().to_string(),
            Source::Documents { name, .. } => name.clone(),
            Source::Upload { files, .. } => match files.as_slice() {
                [one] => format!("upload of {}", one.name),
                many => format!("upload of {} documents", many.len()),
            },
        }
    }
}

/// Pages for documents given as they are: plain text with their own titles (perhaps
/// none), none skipped as a duplicate.
fn document_pages(documents: &[Document]) -> CrawlReport {
    let mut report = CrawlReport::default();
    for document in documents {
        let mut extracted = extract::extract_text(&document.text);
        extracted.title = document.title.trim().to_string();
        if extracted.is_empty() {
            report
                .skipped
                .push((document.url.clone(), "no text".into()));
            continue;
        }
        let (content_hash, body_hash) = page_hashes(&extracted);
        report.pages.push(CrawledPage {
            url: document.url.clone(),
            extracted,
            content_hash,
            body_hash,
            etag: None,
            last_modified: None,
            links: Vec::new(),
        });
    }
    report
}

/// Where an ingest reports how far it got: the CLI's progress bar, a job's record, or
/// nowhere (`&()`).
pub trait Progress: Send + Sync {
    /// What it is doing now (`crawling`, the page it fetched, `saving`).
    fn set_message(&self, message: &str);
    /// `n` more pages read (fetched by a crawl, read from a folder, or re-embedded).
    fn inc(&self, n: u64);
    /// How many pages the run reads, as far as it knows: a folder's or a bot's count, or
    /// the pages a crawl has in sight (the URLs found so far, as far as its page budget
    /// reaches; never fewer than it read, and equal to them when it is done).
    fn set_total(&self, _total: u64) {}
}

impl Progress for () {
    fn set_message(&self, _: &str) {}
    fn inc(&self, _: u64) {}
}

pub struct IngestRequest {
    pub bot: BotId,
    pub name: Option<String>,
    pub source: Source,
    pub crawl: CrawlOptions,
    pub chunk: ChunkSpec,
    /// Create the bot in test mode (only test keys reach it); ignored for existing bots.
    pub test: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestSummary {
    pub bot: String,
    pub pages_indexed: usize,
    pub pages_unchanged: usize,
    pub pages_skipped: usize,
    pub pages_removed: usize,
    /// URLs the crawl did not fetch because the SSRF guard refused them.
    pub urls_refused: usize,
    /// Chunks embedded by this run (unchanged pages keep theirs).
    pub chunks: usize,
    pub seconds: f64,
    /// The first `MAX_SKIPPED_LISTED` skipped pages and documents, each with why.
    pub skipped: Vec<SkippedPage>,
}

/// Skipped pages an ingest lists by name (all of them are counted).
pub const MAX_SKIPPED_LISTED: usize = 100;

/// A skip reason as listed: at most 300 characters (a parser's error can be long).
fn clip_reason(reason: &str) -> String {
    match reason.char_indices().nth(299) {
        Some((at, _)) => format!("{}…", &reason[..at]),
        None => reason.to_string(),
    }
}

/// Bumped whenever extraction, chunking or the embedder changes what a page turns into, so
/// the next ingest re-embeds pages whose text did not change.
const PIPELINE_VERSION: &str = "extract-1 chunk-200/40 minilm-l6-256";

/// (content hash, body hash): the first decides whether a page changed since the last
/// ingest, the second finds duplicate bodies under different URLs or titles.
pub fn page_hashes(extracted: &extract::Extracted) -> (String, String) {
    use sha2::{Digest, Sha256};
    let mut content = Sha256::new();
    content.update(PIPELINE_VERSION.as_bytes());
    content.update(b"\n");
    content.update(extracted.full_text().as_bytes());
    let body = Sha256::digest(extracted.body_text().as_bytes());
    (hex::encode(content.finalize()), hex::encode(body))
}

/// Chunks embedded per blocking call into the embedder, and staged per transaction.
const EMBED_STEP: usize = 128;
/// Pages the crawler may have found ahead of the embedder: what bounds an ingest's memory.
const PAGE_QUEUE: usize = 16;

/// Runs one ingest: pages stream from the source to chunking and embedding, whose output is
/// staged in the store batch by batch and becomes the bot's in one final transaction. A
/// run that fails leaves nothing behind (its staged chunks are discarded).
#[tracing::instrument(skip_all, fields(bot = %request.bot))]
pub async fn run(
    store: Arc<dyn ContentStore>,
    embedding: impl Into<Embedding>,
    request: IngestRequest,
    progress: &dyn Progress,
) -> anyhow::Result<IngestSummary> {
    let ingest = crate::ids::ingest("ing");
    let result = run_staged(&store, embedding.into(), request, progress, &ingest).await;
    discard_if_failed(&store, &ingest, &result).await;
    result
}

/// Removes what a failed run staged (the next start would, otherwise).
async fn discard_if_failed<T>(
    store: &Arc<dyn ContentStore>,
    ingest: &str,
    result: &anyhow::Result<T>,
) {
    if result.is_err() {
        let (store, ingest) = (store.clone(), ingest.to_string());
        let discarded = tokio::task::spawn_blocking(move || store.discard_staged(Some(&ingest)))
            .await
            .context("discard task failed");
        if let Err(e) = discarded.and_then(|r| r.map_err(anyhow::Error::from)) {
            tracing::warn!("cannot discard a failed ingest's chunks (the next start will): {e:#}");
        }
    }
}

async fn run_staged(
    store: &Arc<dyn ContentStore>,
    embedding: Embedding,
    request: IngestRequest,
    progress: &dyn Progress,
    ingest: &str,
) -> anyhow::Result<IngestSummary> {
    let started = Instant::now();
    let existing = match store.get_bot(&request.bot) {
        Ok(bot) => Some(bot),
        Err(crate::ports::Error::BotNotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    // New vectors must be comparable with the ones the bot keeps.
    let embedder_id = current_embedder(&embedding).await?;
    if let Some(bot) = &existing {
        bot.check_embedder(&embedder_id, &minilm_id())?;
    }
    let previous: HashMap<String, Page> = store
        .pages(&request.bot)?
        .into_iter()
        .map(|p| (p.url.clone(), p))
        .collect();
    let known: HashMap<String, Known> = previous
        .values()
        .map(|p| {
            let known = Known {
                etag: p.etag.clone(),
                last_modified: p.last_modified.clone(),
                content_hash: p.content_hash.clone(),
                body_hash: p.body_hash.clone(),
                links: p.links.clone(),
            };
            (p.url.clone(), known)
        })
        .collect();

    // Stages 1 to 4, side by side: read the source; chunk, embed and stage what changed.
    let (tx, rx) = mpsc::channel(PAGE_QUEUE);
    let source = request.source.key();
    let stager = Stager {
        store,
        embedding: embedding.clone(),
        bot: &request.bot,
        spec: request.chunk,
        ingest,
        previous: &previous,
        source: source.clone(),
    };
    let (report, staged) =
        tokio::join!(read_source(&request, &known, progress, tx), stager.run(rx));
    // A failed stager is the cause; the source then only saw the ingest stop.
    let staged = staged?;
    let report = report?;
    if staged.upserts.is_empty() && staged.touched.is_empty() && report.not_modified.is_empty() {
        bail!(
            "no pages could be indexed from {}: {}",
            request.source.describe(),
            explain_nothing(&report)
        );
    }
    for (url, reason) in &report.skipped {
        tracing::debug!(%url, %reason, "skipped page");
    }
    for failure in &report.failed {
        tracing::warn!(page = %failure.0, reason = %failure.1, "page failed; keeping its last state");
    }

    // Stage 5: one transaction.
    let unchanged = staged.touched.len() + report.not_modified.len();
    let kept: HashSet<&str> = staged
        .upserts
        .iter()
        .chain(&staged.touched)
        .map(|p| p.url.as_str())
        .chain(report.not_modified.iter().map(String::as_str))
        .chain(report.failed.iter().map(|(url, _)| url.as_str()))
        // Curated answers are the operator's, not the site's, and the bot's other sources'
        // pages are theirs: an ingest keeps them.
        .chain(
            previous
                .values()
                .filter(|page| {
                    answers::is_curated(&page.url)
                        || !request.source.removes_vanished()
                        || !owns(&source, &report, page)
                })
                .map(|page| page.url.as_str()),
        )
        .collect();
    let removed_urls: Vec<String> = previous
        .keys()
        .filter(|url| !kept.contains(url.as_str()))
        .cloned()
        .collect();
    // After the commit the bot holds every kept page that is stored or being written.
    let upserted: HashSet<&str> = staged.upserts.iter().map(|p| p.url.as_str()).collect();
    let total_pages = kept
        .iter()
        .filter(|url| previous.contains_key(**url) || upserted.contains(**url))
        .count();
    let total_chunks = staged.chunks
        + previous
            .values()
            .filter(|p| kept.contains(p.url.as_str()) && !upserted.contains(p.url.as_str()))
            .map(|p| p.chunk_ids.len())
            .sum::<usize>();
    let now = crate::telemetry::unix_now();
    let bot = Bot {
        id: request.bot.clone(),
        name: request
            .name
            .clone()
            .or_else(|| existing.as_ref().map(|b| b.name.clone()))
            .unwrap_or_else(|| request.bot.to_string()),
        // An upload adds to a bot: what it was made from stays its description.
        source: match (&request.source, &existing) {
            (Source::Upload { .. }, Some(bot)) => bot.source.clone(),
            _ => request.source.describe(),
        },
        created_unix: existing.as_ref().map(|b| b.created_unix).unwrap_or(now),
        updated_unix: now,
        pages: total_pages as u64,
        chunks: total_chunks as u64,
        test: existing.as_ref().map(|b| b.test).unwrap_or(request.test),
        // The commit keeps whatever settings are current when it lands.
        settings: existing
            .as_ref()
            .map(|b| b.settings.clone())
            .unwrap_or_default(),
        embedder: (total_chunks > 0).then(|| embedder_id.clone()),
    };
    let summary = IngestSummary {
        bot: request.bot.to_string(),
        pages_indexed: staged.upserts.len(),
        pages_unchanged: unchanged,
        pages_skipped: report.skipped.len(),
        pages_removed: removed_urls.len(),
        urls_refused: report.refused,
        chunks: staged.chunks,
        seconds: 0.0,
        // Those failed for now (their last state kept) are listed too, with their reason.
        skipped: report
            .skipped
            .iter()
            .chain(&report.failed)
            .take(MAX_SKIPPED_LISTED)
            .map(|(url, reason)| SkippedPage {
                url: fetch::redact_userinfo(url),
                reason: clip_reason(&fetch::redact_userinfo(reason)),
            })
            .collect(),
    };
    progress.set_message("saving");
    let commit = IngestCommit {
        ingest: ingest.to_string(),
        bot,
        bot_existed: existing.is_some(),
        upserts: staged.upserts,
        touched: staged.touched,
        removed_urls,
    };
    let writer = store.clone();
    tokio::task::spawn_blocking(move || writer.commit_ingest(commit))
        .await
        .context("commit task failed")??;
    Ok(IngestSummary {
        seconds: started.elapsed().as_secs_f64(),
        ..summary
    })
}

/// Reads the source, sending each page to index to `pages`: the crawler as it goes, a
/// folder or a document set once read.
async fn read_source(
    request: &IngestRequest,
    known: &HashMap<String, Known>,
    progress: &dyn Progress,
    pages: mpsc::Sender<CrawledPage>,
) -> anyhow::Result<CrawlReport> {
    let mut report = match &request.source {
        Source::Web(url) => return crawl::crawl(url, &request.crawl, known, progress, pages).await,
        Source::Folder { root, base_url } => {
            let (root, base_url, max) = (root.clone(), base_url.clone(), request.crawl.max_pages);
            tokio::task::spawn_blocking(move || local::scan(&root, base_url.as_ref(), max))
                .await
                .context("folder scan task failed")??
        }
        Source::Documents { documents, .. } => {
            let documents = documents.clone();
            tokio::task::spawn_blocking(move || document_pages(&documents))
                .await
                .context("document task failed")?
        }
        Source::Upload { base, files } => {
            let (base, files) = (base.clone(), files.clone());
            tokio::task::spawn_blocking(move || local::uploaded(&base, &files))
                .await
                .context("upload task failed")??
        }
    };
    progress.set_total(report.pages.len() as u64);
    for page in std::mem::take(&mut report.pages) {
        pages
            .send(page)
            .await
            .map_err(|_| anyhow::anyhow!("the ingest stopped"))?;
        report.sent += 1;
        progress.inc(1);
    }
    Ok(report)
}

/// What the staging side of an ingest made: records of new and changed pages (pointing at
/// their staged chunks), unchanged pages with refreshed caching headers, and how many
/// chunks it embedded.
#[derive(Default)]
struct Staged {
    upserts: Vec<Page>,
    touched: Vec<Page>,
    chunks: usize,
}

/// Chunks, embeds and stages pages as they arrive, `EMBED_STEP` chunks at a time.
struct Stager<'a> {
    store: &'a Arc<dyn ContentStore>,
    embedding: Embedding,
    bot: &'a BotId,
    spec: ChunkSpec,
    ingest: &'a str,
    previous: &'a HashMap<String, Page>,
    /// `Source::key` of what is being ingested: each page it stages carries it.
    source: String,
}

/// Whether an ingest of `source` decides what becomes of `page`: a page it indexed last, or
/// one of unknown origin (stored before pages named their source) under its scope.
fn owns(source: &str, report: &CrawlReport, page: &Page) -> bool {
    match &page.source {
        Some(owner) => owner == source,
        None => report.covers(&page.url),
    }
}

impl Stager<'_> {
    async fn run(self, mut pages: mpsc::Receiver<CrawledPage>) -> anyhow::Result<Staged> {
        let mut staged = Staged::default();
        let mut batch: Vec<(Page, Vec<Chunk>)> = Vec::new();
        while let Some(page) = pages.recv().await {
            if let Some(old) = self.previous.get(&page.url)
                && old.content_hash == page.content_hash
            {
                staged.touched.push(Page {
                    etag: page.etag,
                    last_modified: page.last_modified,
                    links: page.links,
                    body_hash: page.body_hash,
                    crawled: Some(crate::telemetry::unix_now()),
                    source: Some(self.source.clone()),
                    ..old.clone()
                });
                continue;
            }
            batch.push(self.chunk(page).await?);
            if batch.iter().map(|(_, chunks)| chunks.len()).sum::<usize>() >= EMBED_STEP {
                self.embed_and_stage(std::mem::take(&mut batch), &mut staged)
                    .await?;
            }
        }
        if !batch.is_empty() {
            self.embed_and_stage(batch, &mut staged).await?;
        }
        Ok(staged)
    }

    /// A changed page's record (no chunks yet) and its chunks.
    async fn chunk(&self, page: CrawledPage) -> anyhow::Result<(Page, Vec<Chunk>)> {
        let (tokenizer, bot, spec, source) = (
            self.embedding.tokenizer.clone(),
            self.bot.clone(),
            self.spec,
            self.source.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let spans = |text: &str| tokenizer.token_spans(text);
            let chunks = chunk::chunk_sections(&page.extracted.sections, &spans, spec)
                .into_iter()
                .map(
                    |TextChunk {
                         heading_path,
                         text,
                         anchor,
                     }| Chunk {
                        bot: bot.clone(),
                        // A document's page is cited as itself: `guide.pdf#page=3`.
                        url: match anchor {
                            Some(anchor) => format!("{}#{anchor}", page.url),
                            None => page.url.clone(),
                        },
                        title: page.extracted.title.clone(),
                        heading_path,
                        text,
                    },
                )
                .collect();
            let record = Page {
                url: page.url,
                title: page.extracted.title,
                content_hash: page.content_hash,
                body_hash: page.body_hash,
                etag: page.etag,
                last_modified: page.last_modified,
                links: page.links,
                chunk_ids: Vec::new(),
                crawled: Some(crate::telemetry::unix_now()),
                source: Some(source),
            };
            (record, chunks)
        })
        .await
        .context("chunking task failed")
    }

    /// Embeds a batch's chunks and stages them; the pages learn their chunks' ids.
    async fn embed_and_stage(
        &self,
        batch: Vec<(Page, Vec<Chunk>)>,
        staged: &mut Staged,
    ) -> anyhow::Result<()> {
        let embedder = self.embedding.embedder.clone();
        let (pages, chunks) = stage_batch(self.store, embedder, self.ingest, batch).await?;
        staged.chunks += chunks;
        staged.upserts.extend(pages);
        Ok(())
    }
}

/// Embeds the chunks of a batch of pages and stages them under `ingest`; returns the pages
/// pointing at their staged chunks, and how many chunks that was.
async fn stage_batch(
    store: &Arc<dyn ContentStore>,
    embedder: Arc<dyn crate::embed::Embedder>,
    ingest: &str,
    batch: Vec<(Page, Vec<Chunk>)>,
) -> anyhow::Result<(Vec<Page>, usize)> {
    let (store, ingest) = (store.clone(), ingest.to_string());
    tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut rows = Vec::new();
        let mut pages = Vec::with_capacity(batch.len());
        let mut chunks = Vec::new();
        for (page, page_chunks) in batch {
            pages.push((page, page_chunks.len()));
            chunks.extend(page_chunks);
        }
        // The batch's chunks embedded together, not page by page: a site of one-chunk
        // pages would otherwise give the embedder one or two texts at a time (one thread).
        for step in chunks.chunks(EMBED_STEP) {
            let texts: Vec<String> = step.iter().map(Chunk::embedding_text).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let vectors = embedder.embed(&refs)?;
            if vectors.len() != step.len() {
                bail!(
                    "the embedder gave {} vectors for {} chunks",
                    vectors.len(),
                    step.len()
                );
            }
            rows.extend(step.iter().cloned().zip(vectors));
        }
        crate::telemetry::failpoint("embed");
        let mut ids = store.stage_chunks(&ingest, &rows)?.into_iter();
        crate::telemetry::failpoint("stage");
        let pages: Vec<Page> = pages
            .into_iter()
            .map(|(mut page, n)| {
                page.chunk_ids = ids.by_ref().take(n).collect();
                page
            })
            .collect();
        Ok((pages, rows.len()))
    })
    .await
    .context("embedding task failed")?
}

/// The embedder's id, asked off the async runtime (a remote one may call its engine).
async fn current_embedder(embedding: &Embedding) -> anyhow::Result<crate::domain::EmbedderId> {
    let embedder = embedding.embedder.clone();
    tokio::task::spawn_blocking(move || embedder.id())
        .await
        .context("embedder task failed")?
}

fn explain_nothing(report: &CrawlReport) -> String {
    let mut reasons: Vec<String> = report
        .skipped
        .iter()
        .map(|(url, why)| format!("{url}: {why}"))
        .chain(
            report
                .failed
                .iter()
                .map(|(url, why)| format!("{url}: {why}")),
        )
        .chain(report.gone.iter().map(|url| format!("{url}: not found")))
        .take(5)
        .collect();
    if reasons.is_empty() {
        reasons.push("no pages found".into());
    }
    reasons.join("; ")
}
