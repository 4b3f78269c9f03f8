//! The `Search` port on PostgreSQL: nearest chunks by cosine distance with pgvector (an
//! HNSW index per vector length, scanned iteratively so a bot's filter still yields `k`),
//! and keyword matches by PostgreSQL full-text search (any of the query's words, ranked
//! by `ts_rank_cd`). The database is the index: nothing to rebuild or forget per node.

use anyhow::Context;
use pgvector::Vector;

use super::PgStore;
use crate::domain::BotId;
use crate::ports::Search;

/// Vector lengths with an HNSW index (migration V3); others are searched exactly.
const INDEXED_DIMS: [usize; 2] = [384, 768];

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
            txn.batch_execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
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
        // The query's words, stemmed as the chunks' are, any of them (`|`).
        let sql = "WITH q AS (SELECT NULLIF(replace(plainto_tsquery('english', $2)::text, \
                   ' & ', ' | '), '')::tsquery AS words) \
                   SELECT id, ts_rank_cd(chunks.words, q.words) AS rank FROM chunks, q \
                   WHERE bot = $1 AND staged_by IS NULL AND chunks.words @@ q.words \
                   ORDER BY rank DESC, id LIMIT $3";
        Ok(self.client(|c| {
            let rows = c
                .query(sql, &[&bot.as_str(), &query, &(k as i64)])
                .context("search words")?;
            Ok(rows
                .iter()
                .map(|row| (row.get::<_, i64>(0) as u64, row.get::<_, f32>(1)))
                .collect())
        })?)
    }

    fn invalidate(&self, _bot: &BotId) {}
}
