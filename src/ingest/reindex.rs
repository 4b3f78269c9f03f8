//! Re-embedding a bot's stored chunks with the current embedder (`docent reindex`), for a
//! bot whose vectors another embedder made: no crawl, the same chunks, new vectors.
//!
//! It runs as an ingest does: the new vectors are staged with copies of their chunks batch
//! by batch (unreferenced), and one final transaction points every page at them, drops the
//! old ones and records the embedder on the bot. A run that fails or dies leaves the bot as
//! it was, old vectors and all.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use super::{EMBED_STEP, Progress, current_embedder, discard_if_failed, stage_batch};
use crate::domain::{Bot, BotId, Chunk, Page};
use crate::embed::Embedding;
use crate::ports::{ContentStore, IngestCommit};

#[derive(Debug, Clone, Serialize)]
pub struct ReindexSummary {
    pub bot: String,
    pub pages: usize,
    pub chunks: usize,
    /// The embedder that made the old vectors (`null`: not recorded, MiniLM).
    pub from: Option<String>,
    /// The embedder that made the new ones.
    pub to: String,
    pub seconds: f64,
}

/// Re-embeds every stored chunk of `bot` with `embedding`'s embedder, in one transaction at
/// the end.
#[tracing::instrument(skip_all, fields(bot = %bot))]
pub async fn reindex(
    store: Arc<dyn ContentStore>,
    embedding: impl Into<Embedding>,
    bot: &BotId,
    progress: &dyn Progress,
) -> anyhow::Result<ReindexSummary> {
    let ingest = crate::ids::ingest("rei");
    let result = reindex_staged(&store, embedding.into(), bot, progress, &ingest).await;
    discard_if_failed(&store, &ingest, &result).await;
    result
}

async fn reindex_staged(
    store: &Arc<dyn ContentStore>,
    embedding: Embedding,
    bot: &BotId,
    progress: &dyn Progress,
    ingest: &str,
) -> anyhow::Result<ReindexSummary> {
    let started = Instant::now();
    let (record, pages) = read_bot(store, bot).await?;
    let embedder_id = current_embedder(&embedding).await?;
    progress.set_message("embedding");
    progress.set_total(pages.len() as u64);
    let mut upserts = Vec::with_capacity(pages.len());
    let mut chunks = 0;
    let mut batch: Vec<(Page, Vec<Chunk>)> = Vec::new();
    let mut in_batch = 0;
    let total = pages.len();
    for (n, page) in pages.into_iter().enumerate() {
        let stored = read_chunks(store, &page.chunk_ids).await?;
        in_batch += stored.len();
        batch.push((page, stored));
        if in_batch >= EMBED_STEP || n + 1 == total {
            let step = std::mem::take(&mut batch);
            let done = step.len() as u64;
            let (staged, n_chunks) =
                stage_batch(store, embedding.embedder.clone(), ingest, step).await?;
            upserts.extend(staged);
            chunks += n_chunks;
            in_batch = 0;
            progress.inc(done);
        }
    }
    progress.set_message("saving");
    let summary = ReindexSummary {
        bot: bot.to_string(),
        pages: upserts.len(),
        chunks,
        from: record.embedder.as_ref().map(ToString::to_string),
        to: embedder_id.to_string(),
        seconds: 0.0,
    };
    let mut reindexed = Bot {
        embedder: (chunks > 0).then_some(embedder_id),
        ..record
    };
    reindexed.touch(crate::telemetry::unix_now());
    let commit = IngestCommit {
        ingest: ingest.to_string(),
        bot: reindexed,
        bot_existed: true,
        upserts,
        touched: Vec::new(),
        removed_urls: Vec::new(),
    };
    let writer = store.clone();
    tokio::task::spawn_blocking(move || writer.commit_ingest(commit))
        .await
        .context("commit task failed")??;
    Ok(ReindexSummary {
        seconds: started.elapsed().as_secs_f64(),
        ..summary
    })
}

async fn read_bot(store: &Arc<dyn ContentStore>, bot: &BotId) -> anyhow::Result<(Bot, Vec<Page>)> {
    let (store, bot) = (store.clone(), bot.clone());
    tokio::task::spawn_blocking(move || Ok((store.get_bot(&bot)?, store.pages(&bot)?)))
        .await
        .context("read task failed")?
}

async fn read_chunks(store: &Arc<dyn ContentStore>, ids: &[u64]) -> anyhow::Result<Vec<Chunk>> {
    let (store, ids) = (store.clone(), ids.to_vec());
    tokio::task::spawn_blocking(move || Ok(store.chunks(&ids)?))
        .await
        .context("read task failed")?
}
