//! A bot's pages one at a time, outside a crawl: removing one (the console's Sources page,
//! `DELETE /v1/bots/{id}/pages`) and the read and commit that curated answers share. Each
//! change is one ingest commit, with the bot's page and chunk counts.

use std::sync::Arc;

use anyhow::Context;

use crate::domain::{Bot, BotId, Page};
use crate::ports::{ContentStore, IngestCommit};

/// Removes the page at `url` with its chunks and vectors; false when the bot has no such
/// page. A later crawl brings a site page back if the site still links it.
pub async fn remove(
    store: Arc<dyn ContentStore>,
    bot: &BotId,
    url: &str,
) -> crate::ports::Result<bool> {
    let (bot, pages) = read(&store, bot).await?;
    let Some(page) = pages.iter().find(|p| p.url == url) else {
        return Ok(false);
    };
    // The commit counts the pages and chunks left.
    let ingest = crate::ids::ingest("rm");
    commit(&store, &ingest, bot, Vec::new(), vec![page.url.clone()])
        .await
        .map_err(crate::ports::Error::Other)?;
    Ok(true)
}

/// The bot's record and pages (`BotNotFound` when there is none).
pub(super) async fn read(
    store: &Arc<dyn ContentStore>,
    bot: &BotId,
) -> Result<(Bot, Vec<Page>), crate::ports::Error> {
    let (store, bot) = (store.clone(), bot.clone());
    tokio::task::spawn_blocking(move || -> crate::ports::Result<_> {
        Ok((store.get_bot(&bot)?, store.pages(&bot)?))
    })
    .await
    .context("read task failed")?
}

/// Commits `upserts` (their chunks staged under `ingest`) and the removal of
/// `removed_urls`, with `bot`'s record, in one transaction.
pub(super) async fn commit(
    store: &Arc<dyn ContentStore>,
    ingest: &str,
    mut bot: Bot,
    upserts: Vec<Page>,
    removed_urls: Vec<String>,
) -> anyhow::Result<()> {
    bot.touch(crate::telemetry::unix_now());
    let commit = IngestCommit {
        ingest: ingest.to_string(),
        bot,
        bot_existed: true,
        upserts,
        touched: Vec::new(),
        removed_urls,
    };
    let writer = store.clone();
    tokio::task::spawn_blocking(move || writer.commit_ingest(commit))
        .await
        .context("commit task failed")??;
    Ok(())
}
