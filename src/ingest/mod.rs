//! The ingest pipeline: crawl (or scan a folder) → extract → chunk → embed in batches →
//! store in one transaction. The index is rebuilt from the store when a bot is next loaded.

pub mod chunk;
pub mod crawl;
pub mod extract;
pub mod local;
pub mod ssrf;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::ProgressBar;
use serde::Serialize;
use url::Url;

use crate::domain::{Bot, BotId, Chunk, Page};
use crate::embed::Embedder;
use crate::store::{IngestCommit, PageWrite, Store};
use chunk::{ChunkSpec, TextChunk};
use crawl::{CrawlOptions, CrawlReport, CrawledPage, Known};

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
            Source::Web(url) => url.to_string(),
            Source::Folder { root, .. } => root.display().to_string(),
            Source::Documents { name, .. } => name.clone(),
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
    /// Chunks embedded by this run (unchanged pages keep theirs).
    pub chunks: usize,
    pub seconds: f64,
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

/// Texts embedded per progress step; each step is one blocking call into the embedder.
const EMBED_STEP: usize = 128;

#[tracing::instrument(skip_all, fields(bot = %request.bot))]
pub async fn run(
    store: &Store,
    embedder: Arc<dyn Embedder>,
    request: IngestRequest,
    progress: &ProgressBar,
) -> anyhow::Result<IngestSummary> {
    let started = Instant::now();
    let existing = match store.get_bot(&request.bot) {
        Ok(bot) => Some(bot),
        Err(crate::store::Error::BotNotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
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

    // Stage 1: crawl or scan.
    let report = match &request.source {
        Source::Web(url) => crawl::crawl(url, &request.crawl, &known, progress).await?,
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
    };
    if report.pages.is_empty() && report.not_modified.is_empty() {
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

    // Stage 2: split pages into changed and unchanged.
    let mut changed: Vec<CrawledPage> = Vec::new();
    let mut touched: Vec<Page> = Vec::new();
    for page in report.pages {
        match previous.get(&page.url) {
            Some(old) if old.content_hash == page.content_hash => touched.push(Page {
                etag: page.etag,
                last_modified: page.last_modified,
                links: page.links,
                body_hash: page.body_hash,
                ..old.clone()
            }),
            _ => changed.push(page),
        }
    }
    let unchanged = touched.len() + report.not_modified.len();

    // Stage 3: chunk changed pages.
    let spec = request.chunk;
    let chunker = embedder.clone();
    let bot_id = request.bot.clone();
    let (changed, page_chunks) = tokio::task::spawn_blocking(move || {
        let spans = |text: &str| chunker.token_spans(text);
        let chunks: Vec<Vec<Chunk>> = changed
            .iter()
            .map(|page| {
                chunk::chunk_sections(&page.extracted.sections, &spans, spec)
                    .into_iter()
                    .map(|TextChunk { heading_path, text }| Chunk {
                        bot: bot_id.clone(),
                        url: page.url.clone(),
                        title: page.extracted.title.clone(),
                        heading_path,
                        text,
                    })
                    .collect()
            })
            .collect();
        (changed, chunks)
    })
    .await
    .context("chunking task failed")?;

    // Stage 4: embed in batches.
    let texts: Vec<String> = page_chunks
        .iter()
        .flatten()
        .map(Chunk::embedding_text)
        .collect();
    progress.set_length(texts.len() as u64);
    progress.set_position(0);
    progress.set_message("embedding");
    let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
    let texts = Arc::new(texts);
    for step in (0..texts.len()).step_by(EMBED_STEP) {
        let end = (step + EMBED_STEP).min(texts.len());
        let (embedder, texts) = (embedder.clone(), texts.clone());
        let batch = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts[step..end].iter().map(String::as_str).collect();
            embedder.embed(&refs)
        })
        .await
        .context("embedding task failed")??;
        vectors.extend(batch);
        progress.set_position(end as u64);
        crate::telemetry::failpoint("embed");
    }

    // Stage 5: one transaction.
    let mut vectors = vectors.into_iter();
    let n_chunks = texts.len();
    let upserts: Vec<PageWrite> = changed
        .into_iter()
        .zip(page_chunks)
        .map(|(page, chunks)| PageWrite {
            page: Page {
                url: page.url,
                title: page.extracted.title,
                content_hash: page.content_hash,
                body_hash: page.body_hash,
                etag: page.etag,
                last_modified: page.last_modified,
                links: page.links,
                chunk_ids: Vec::new(),
            },
            chunks: chunks
                .into_iter()
                .map(|c| (c, vectors.next().expect("one vector per chunk")))
                .collect(),
        })
        .collect();
    let kept: HashSet<&str> = upserts
        .iter()
        .map(|w| w.page.url.as_str())
        .chain(touched.iter().map(|p| p.url.as_str()))
        .chain(report.not_modified.iter().map(String::as_str))
        .chain(report.failed.iter().map(|(url, _)| url.as_str()))
        .collect();
    let removed_urls: Vec<String> = previous
        .keys()
        .filter(|url| !kept.contains(url.as_str()))
        .cloned()
        .collect();
    // After the commit the bot holds every kept page that is stored or being written.
    let upserted: HashSet<&str> = upserts.iter().map(|w| w.page.url.as_str()).collect();
    let total_pages = kept
        .iter()
        .filter(|url| previous.contains_key(**url) || upserted.contains(**url))
        .count();
    let total_chunks = n_chunks
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
        source: request.source.describe(),
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
    };
    let summary = IngestSummary {
        bot: request.bot.to_string(),
        pages_indexed: upserts.len(),
        pages_unchanged: unchanged,
        pages_skipped: report.skipped.len(),
        pages_removed: removed_urls.len(),
        chunks: n_chunks,
        seconds: 0.0,
    };
    progress.set_message("saving");
    let commit = IngestCommit {
        bot,
        upserts,
        touched,
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
