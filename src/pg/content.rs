//! Bots and their content in PostgreSQL: `bots`, `pages` by (bot, url), and `chunks` with
//! their vectors (pgvector) and, while an ingest has staged them and not yet committed,
//! that ingest's id. An ingest's commit and a bot's deletion are one transaction each that
//! holds the bot's advisory lock, so two of them on one bot (from any nodes) apply one
//! after the other.

use std::collections::HashMap;

use anyhow::Context;
use pgvector::Vector;
use postgres::types::{Json, ToSql};
use postgres::{GenericClient, Transaction};

use super::{PgStore, all, get};
use crate::accounts::Account;
use crate::domain::{Bot, BotId, Chunk, Page};
use crate::keys::{ApiKey, KeyScope};
use crate::ports::{ContentStore, Error, IngestCommit, Result};

impl PgStore {
    /// Removes the chunks staged by nodes that are gone.
    fn discard_orphans(&self) -> Result<usize> {
        let owners = "SELECT DISTINCT staged_node FROM chunks WHERE staged_by IS NOT NULL";
        let removed = self.for_gone_nodes(owners, false, |txn, node| {
            let removed = txn
                .execute(
                    "DELETE FROM chunks WHERE staged_by IS NOT NULL \
                     AND staged_node IS NOT DISTINCT FROM $1",
                    &[&node],
                )
                .context("discard staged chunks")?;
            Ok(removed as usize)
        })?;
        Ok(removed.into_iter().sum())
    }
}

impl ContentStore for PgStore {
    fn get_bot(&self, id: &BotId) -> Result<Bot> {
        self.client(|c| get(c, "bots", id.as_str()))?
            .ok_or_else(|| Error::BotNotFound(id.clone()))
    }

    fn list_bots(&self) -> Result<Vec<Bot>> {
        self.client(|c| all(c, "bots", "true", &[]))
    }

    fn create_bot(&self, bot: &Bot) -> Result<()> {
        self.insert_new(
            "write bot",
            "INSERT INTO bots (id, record) VALUES ($1, $2)",
            // NUL, which jsonb cannot hold, becomes U+FFFD (as in `write_bot`).
            &[
                &bot.id.as_str(),
                &super::storable(bot)? as &(dyn ToSql + Sync),
            ],
            || Error::BotExists(bot.id.clone()),
        )
    }

    fn update_bot(&self, id: &BotId, change: &mut dyn FnMut(&mut Bot)) -> Result<Bot> {
        // `change` runs here (it need not be Send); the write goes through only if the
        // record is still the one it changed, else it is applied again to the new one.
        let mut current = self.get_bot(id)?;
        loop {
            let mut bot = current.clone();
            change(&mut bot);
            let written = self.in_transaction(|txn| {
                let stored =
                    locked_bot(txn, id.as_str())?.ok_or_else(|| Error::BotNotFound(id.clone()))?;
                if stored != current {
                    return Ok(Some(stored));
                }
                write_bot(txn, &bot)?;
                Ok(None)
            })?;
            match written {
                None => return Ok(bot),
                Some(stored) => current = stored,
            }
        }
    }

    fn delete_bot(&self, id: &BotId) -> Result<Vec<String>> {
        self.in_transaction(|txn| {
            lock_bot(txn, id.as_str())?;
            // No turn, lead or erasure of it runs meanwhile.
            super::conversations::lock_talk(txn, id.as_str(), false)?;
            if locked_bot(txn, id.as_str())?.is_none() {
                return Err(Error::BotNotFound(id.clone()));
            }
            let bot = id.as_str();
            // Its pages' chunks; an ingest running meanwhile keeps what it staged until its
            // commit fails (the bot is gone) and discards them.
            txn.execute(
                "DELETE FROM chunks WHERE bot = $1 AND staged_by IS NULL",
                &[&bot],
            )
            .context("remove chunks")?;
            txn.execute("DELETE FROM pages WHERE bot = $1", &[&bot])
                .context("remove pages")?;
            txn.execute("DELETE FROM bots WHERE id = $1", &[&bot])
                .context("remove bot")?;
            super::outbox::delete_bot_in(txn, bot)?;
            // A bot made later under the same id starts with no key or agent granted it.
            rewrite(txn, "keys", |key: &mut ApiKey| match &mut key.scope {
                KeyScope::Bots(bots) => without(bots, id),
                KeyScope::Admin => false,
            })?;
            rewrite(txn, "accounts", |account: &mut Account| {
                without(&mut account.bots, id)
            })?;
            super::conversations::delete_bot_in(txn, bot)
        })
    }

    fn pages(&self, bot: &BotId) -> Result<Vec<Page>> {
        self.client(|c| bot_pages(c, bot.as_str()))
    }

    fn vectors(&self, bot: &BotId) -> Result<Vec<(u64, Vec<f32>)>> {
        let ids = chunk_ids(&self.pages(bot)?);
        let vectors = self.vectors_of(&ids)?;
        Ok(ids.into_iter().zip(vectors).collect())
    }

    fn vectors_of(&self, ids: &[u64]) -> Result<Vec<Vec<f32>>> {
        let found: HashMap<u64, Vector> = self.client(|c| by_id(c, "embedding", ids))?;
        in_order(ids, found, "vector").map(|v| v.into_iter().map(|v| v.to_vec()).collect())
    }

    fn bot_chunks(&self, bot: &BotId) -> Result<Vec<(u64, Chunk)>> {
        let ids = chunk_ids(&self.pages(bot)?);
        let chunks = self.chunks(&ids)?;
        Ok(ids.into_iter().zip(chunks).collect())
    }

    fn chunks(&self, ids: &[u64]) -> Result<Vec<Chunk>> {
        let found: HashMap<u64, Json<Chunk>> = self.client(|c| by_id(c, "record", ids))?;
        in_order(ids, found, "chunk").map(|v| v.into_iter().map(|j| j.0).collect())
    }

    fn stage_chunks(&self, ingest: &str, batch: &[(Chunk, Vec<f32>)]) -> Result<Vec<u64>> {
        let node = self.node()?;
        self.in_transaction(|txn| {
            let ids: Vec<i64> = txn
                .query(
                    "SELECT nextval('chunk_ids') FROM generate_series(1::bigint, $1::bigint)",
                    &[&(batch.len() as i64)],
                )
                .context("allocate chunk ids")?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let insert = txn
                .prepare(
                    "INSERT INTO chunks (id, bot, record, embedding, staged_by, staged_node) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .context("prepare chunk insert")?;
            for ((chunk, vector), id) in batch.iter().zip(&ids) {
                let embedding = Vector::from(vector.clone());
                txn.execute(
                    &insert,
                    &[
                        id,
                        &chunk.bot.as_str(),
                        &Json(chunk),
                        &embedding,
                        &ingest,
                        &node,
                    ],
                )
                .context("insert chunk")?;
            }
            Ok(ids.into_iter().map(|id| id as u64).collect())
        })
    }

    fn discard_staged(&self, ingest: Option<&str>) -> Result<usize> {
        let removed = match ingest {
            Some(ingest) => self.execute(
                "discard staged chunks",
                "DELETE FROM chunks WHERE staged_by = $1",
                &[&ingest],
            )?,
            None => return self.discard_orphans(),
        };
        Ok(removed as usize)
    }

    fn staged_chunks(&self) -> Result<u64> {
        self.client(|c| {
            let row = c
                .query_one(
                    "SELECT count(*) FROM chunks WHERE staged_by IS NOT NULL",
                    &[],
                )
                .context("count staged chunks")?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn commit_ingest(&self, commit: IngestCommit) -> Result<()> {
        self.in_transaction(|txn| commit_in(txn, &commit))
    }

    fn own_search(&self) -> Option<std::sync::Arc<dyn crate::ports::Search>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

/// Applies an ingest run within `txn` (see `ContentStore::commit_ingest`).
fn commit_in(txn: &mut Transaction<'_>, commit: &IngestCommit) -> Result<()> {
    let bot = commit.bot.id.as_str();
    // Publishing staged chunks rewrites their rows, and PostgreSQL indexes each new row
    // version again (HNSW included): about a millisecond a chunk here, so a large site's
    // commit outlasts the 60 s every other statement gets. Turns never wait for it (they
    // take other locks); searches read the previous content until it commits.
    txn.batch_execute("SET LOCAL statement_timeout = '30min'")
        .context("allow the commit its time")?;
    // The bot's lock orders this commit after any other to the same bot, and after its
    // deletion, even while it has no row yet.
    lock_bot(txn, bot)?;
    let current = locked_bot(txn, bot)?;
    if current.is_none() && commit.bot_existed {
        // Deleted while the run went on: it stays deleted.
        return Err(Error::BotNotFound(commit.bot.id.clone()));
    }
    let replaced = commit
        .upserts
        .iter()
        .map(|page| page.url.as_str())
        .chain(commit.removed_urls.iter().map(String::as_str));
    for url in replaced {
        let old = txn
            .query_opt(
                "DELETE FROM pages WHERE bot = $1 AND url = $2 RETURNING record",
                &[&bot, &url],
            )
            .context("remove page")?;
        if let Some(old) = old {
            let old: Page = old.get::<_, Json<Page>>(0).0;
            let ids: Vec<i64> = old.chunk_ids.iter().map(|&id| id as i64).collect();
            txn.execute("DELETE FROM chunks WHERE id = ANY($1)", &[&ids])
                .context("remove chunks")?;
        }
    }
    for page in commit.upserts.iter().chain(&commit.touched) {
        txn.execute(
            "INSERT INTO pages (bot, url, record) VALUES ($1, $2, $3) \
             ON CONFLICT (bot, url) DO UPDATE SET record = EXCLUDED.record",
            &[&bot, &page.url.as_str(), &Json(page) as &(dyn ToSql + Sync)],
        )
        .context("write page")?;
    }
    // The staged chunks are the pages' now.
    let named: Vec<i64> = chunk_ids(&commit.upserts)
        .into_iter()
        .map(|id| id as i64)
        .collect();
    let kept = txn
        .execute(
            "UPDATE chunks SET staged_by = NULL WHERE id = ANY($1) AND staged_by = $2",
            &[&named, &commit.ingest.as_str()],
        )
        .context("keep staged chunks")?;
    if kept as usize != named.len() {
        return Err(anyhow::anyhow!(
            "ingest {}: {} of its {} staged chunks are gone",
            commit.ingest,
            named.len() - kept as usize,
            named.len()
        )
        .into());
    }
    // Settings changed while the ingest ran win over its snapshot, and the counts are the
    // pages' as they stand after this commit.
    let mut record = commit.bot.clone();
    let pages = bot_pages(txn, bot)?;
    record.pages = pages.len() as u64;
    record.chunks = pages.iter().map(|p| p.chunk_ids.len() as u64).sum();
    if record.chunks == 0 {
        record.embedder = None;
    }
    if let Some(current) = current {
        record.settings = current.settings;
        record.test = current.test;
    }
    write_bot(txn, &record)?;
    // Anything else the run staged (nothing, unless a page was dropped) goes.
    txn.execute(
        "DELETE FROM chunks WHERE staged_by = $1",
        &[&commit.ingest.as_str()],
    )
    .context("discard staged chunks")?;
    crate::telemetry::failpoint("commit");
    Ok(())
}

/// Takes the bot's content lock until `txn` ends: ingest commits and deletion of one bot,
/// from any node, run one at a time (a row lock cannot cover a bot that has no row yet).
fn lock_bot(txn: &mut Transaction<'_>, id: &str) -> Result<()> {
    super::lock(txn, &format!("docent-bot:{id}"), false)
}

/// The bot's record, its row locked until `txn` ends.
fn locked_bot(txn: &mut Transaction<'_>, id: &str) -> Result<Option<Bot>> {
    let row = txn
        .query_opt("SELECT record FROM bots WHERE id = $1 FOR UPDATE", &[&id])
        .context("read bot")?;
    Ok(row.map(|row| row.get::<_, Json<Bot>>(0).0))
}

fn write_bot(txn: &mut Transaction<'_>, bot: &Bot) -> Result<()> {
    txn.execute(
        "INSERT INTO bots (id, record) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
        // NUL, which jsonb cannot hold, becomes U+FFFD wherever a setting has it.
        &[
            &bot.id.as_str(),
            &super::storable(bot)? as &(dyn ToSql + Sync),
        ],
    )
    .context("write bot")?;
    Ok(())
}

/// A bot's pages, in URL order.
fn bot_pages(client: &mut impl GenericClient, bot: &str) -> Result<Vec<Page>> {
    let rows = client
        .query(
            "SELECT record FROM pages WHERE bot = $1 ORDER BY url",
            &[&bot],
        )
        .context("read pages")?;
    Ok(rows
        .iter()
        .map(|row| row.get::<_, Json<Page>>(0).0)
        .collect())
}

/// The chunk ids the pages name, in page order.
fn chunk_ids(pages: &[Page]) -> Vec<u64> {
    pages
        .iter()
        .flat_map(|p| p.chunk_ids.iter().copied())
        .collect()
}

/// `column` of the chunks with these ids, by id.
fn by_id<T: for<'a> postgres::types::FromSql<'a>>(
    client: &mut impl GenericClient,
    column: &str,
    ids: &[u64],
) -> Result<HashMap<u64, T>> {
    let wanted: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
    let sql = format!("SELECT id, {column} FROM chunks WHERE id = ANY($1)");
    let rows = client.query(&sql, &[&wanted]).context("read chunks")?;
    Ok(rows
        .iter()
        .map(|row| (row.get::<_, i64>(0) as u64, row.get::<_, T>(1)))
        .collect())
}

/// The values for `ids`, in their order (an id twice, its value twice); an error naming
/// the first id without one.
fn in_order<T: Clone>(ids: &[u64], found: HashMap<u64, T>, what: &str) -> Result<Vec<T>> {
    ids.iter()
        .map(|id| {
            found
                .get(id)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("chunk {id} has no {what}").into())
        })
        .collect()
}

/// Takes `bot` out of `bots`; whether it was there.
fn without(bots: &mut Vec<BotId>, bot: &BotId) -> bool {
    let before = bots.len();
    bots.retain(|b| b != bot);
    bots.len() != before
}

/// Rewrites, within `txn`, each record of `table` that `change` changes (locking them all
/// while it reads); how many.
fn rewrite<T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug + Sync>(
    txn: &mut Transaction<'_>,
    table: &str,
    change: impl Fn(&mut T) -> bool,
) -> Result<usize> {
    let rows = txn
        .query(&format!("SELECT id, record FROM {table} FOR UPDATE"), &[])
        .with_context(|| format!("read {table}"))?;
    let mut changed = 0;
    for row in rows {
        let id: String = row.get(0);
        let mut record: T = row.get::<_, Json<T>>(1).0;
        if change(&mut record) {
            let sql = format!("UPDATE {table} SET record = $2 WHERE id = $1");
            txn.execute(&sql, &[&id, &Json(&record) as &(dyn ToSql + Sync)])
                .with_context(|| format!("write {table}"))?;
            changed += 1;
        }
    }
    Ok(changed)
}
