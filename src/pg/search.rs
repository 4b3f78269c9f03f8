//! The `Search` port on PostgreSQL: nearest chunks by cosine distance with pgvector (an
//! HNSW index per vector length, scanned iteratively so a bot's filter still yields `k`),
//! and keyword matches by PostgreSQL full-text search: chunks holding any of the query's
//! words (the GIN index finds them), ranked by BM25 computed in SQL from the tsvectors
//! (term frequencies from the positions, document frequencies counted per query word,
//! the bot's chunk count and mean length cached per node for a minute), close to how the
//! in-process keyword index ranks them (lengths count distinct words here). (`ts_rank_cd`, PostgreSQL's own ranking, scored
//! nDCG@10 0.14 against BM25's 0.50 on nq_conflicts.) The database is the index: nothing
//! to rebuild per node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use pgvector::Vector;

use super::PgStore;
use crate::domain::BotId;
use crate::ports::Search;

/// Vector lengths with an HNSW index (migrations V3 and V7); others are searched exactly.
const INDEXED_DIMS: [usize; 4] = [256, 384, 512, 768];

/// How long a bot's BM25 statistics are reused before they are counted again (a node's
/// own ingests drop them at once, through `invalidate`).
const STATS_FOR: Duration = Duration::from_secs(60);

/// Per bot: when its statistics were counted, its chunk count and mean distinct words.
pub(super) type StatsCache = Arc<Mutex<HashMap<String, (Instant, f64, f64)>>>;

/// BM25 over the chunks holding any query word; `$4` chunk count (never taken below a
/// word's own count, so a count cached before a crawl elsewhere cannot turn weights
/// negative), `$5` mean length. Lengths are distinct words (a tsvector's length), where
/// the in-process index counts tokens; Robertson's k1 = 1.2, b = 0.75, as in process
/// (`keyword.rs`).
const BM25: &str = "WITH terms AS MATERIALIZED (SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', $2))), \
    query AS (SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery AS words FROM terms), \
    df AS MATERIALIZED (SELECT t.lexeme, (SELECT count(*) FROM chunks c WHERE c.bot = $1 \
        AND c.staged_by IS NULL AND c.words @@ quote_literal(t.lexeme)::tsquery)::float8 AS df \
        FROM terms t), \
    cand AS (SELECT c.id, c.words FROM chunks c, query q \
        WHERE c.bot = $1 AND c.staged_by IS NULL AND c.words @@ q.words) \
    SELECT cand.id, sum(ln(1 + (greatest($4::float8, df.df) - df.df + 0.5) / (df.df + 0.5)) * m.tf * 2.2 \
        / (m.tf + 1.2 * (0.25 + 0.75 * length(cand.words) / $5::float8)))::real AS score \
    FROM cand CROSS JOIN LATERAL (SELECT w.lexeme, \
        coalesce(array_length(w.positions, 1), 1)::float8 AS tf FROM unnest(cand.words) AS w \
        WHERE w.lexeme IN (SELECT lexeme FROM terms)) m \
    JOIN df ON df.lexeme = m.lexeme \
    GROUP BY cand.id ORDER BY score DESC, cand.id LIMIT $3";

impl Search for PgStore {
    fn dense(&self, bot: &BotId, query: &[f32], k: usize) -> anyhow::Result<Vec<(u64, f32)>> {
        let dims = query.len();
        // The indexed expression, so the planner may use that length's HNSW index.
        let column = if INDEXED_DIMS.contains(&dims) {
            format!("embedding::vector({dims})")
        } else {
            "embedding".to_string()
        };
        let sql = format!(
            "SELECT id, ({column} <=> $2)::real FROM chunks \
             WHERE bot = $1 AND staged_by IS NULL AND vector_dims(embedding) = {dims} \
             ORDER BY {column} <=> $2 LIMIT $3"
        );
        let query = Vector::from(query.to_vec());
        let mut hits: Vec<(u64, f32)> = self.in_transaction(|txn| {
            // A wider beam than pgvector's default 40: recall near exact search's (the
            // in-process index searches as wide).
            txn.batch_execute(
                "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = 100",
            )
            .context("configure the vector scan")?;
            let rows = txn
                .query(&sql, &[&bot.as_str(), &query, &(k as i64)])
                .context("search vectors")?;
            Ok(rows
                .iter()
                .map(|row| (row.get::<_, i64>(0) as u64, 1.0 - row.get::<_, f32>(1)))
                .collect())
        })?;
        // A relaxed scan may return neighbours slightly out of order.
        hits.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(hits)
    }

    fn keyword(&self, bot: &BotId, query: &str, k: usize) -> anyhow::Result<Vec<(u64, f32)>> {
        // PostgreSQL text cannot hold NUL, which a visitor's message may carry.
        let query = query.replace('\0', " ");
        let query = query.as_str();
        let (chunks, mean) = self.keyword_stats(bot)?;
        Ok(self.client(|c| {
            let rows = c
                .query(BM25, &[&bot.as_str(), &query, &(k as i64), &chunks, &mean])
                .context("search words")?;
            Ok(rows
                .iter()
                .map(|row| (row.get::<_, i64>(0) as u64, row.get::<_, f32>(1)))
                .collect())
        })?)
    }

    fn invalidate(&self, bot: &BotId) {
        self.keyword_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(bot.as_str());
    }
}

impl PgStore {
    /// The bot's chunk count and mean distinct words per chunk, counted at most once a
    /// `STATS_FOR`.
    fn keyword_stats(&self, bot: &BotId) -> anyhow::Result<(f64, f64)> {
        let cached = |stats: &StatsCache| {
            let stats = stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            stats
                .get(bot.as_str())
                .filter(|(at, _, _)| at.elapsed() < STATS_FOR)
                .map(|&(_, n, mean)| (n, mean))
        };
        if let Some(known) = cached(&self.keyword_stats) {
            return Ok(known);
        }
        let (n, mean): (f64, f64) = self.client(|c| {
            let row = c
                .query_one(
                    "SELECT count(*)::float8, coalesce(avg(length(words)), 1)::float8 \
                     FROM chunks WHERE bot = $1 AND staged_by IS NULL",
                    &[&bot.as_str()],
                )
                .context("count the bot's words")?;
            Ok((row.get(0), row.get(1)))
        })?;
        let mean = mean.max(1.0);
        if n == 0.0 {
            // Nothing to remember: the next search counts again.
            return Ok((n, mean));
        }
        self.keyword_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(bot.as_str().to_string(), (Instant::now(), n, mean));
        Ok((n, mean))
    }
}
