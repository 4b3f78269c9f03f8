//! Retrieval: hybrid search over a bot's chunks. The query is embedded and searched through
//! the `Search` port, by vector (cosine) and, for exact terms the embedder misses, by
//! keyword; the two candidate lists are fused here by a convex combination of their
//! min-max-normalised scores, whichever engine found them (`crate::search` is the
//! in-process one).
//!
//! Every hit's `score` is its cosine similarity to the query, whichever index found it, so
//! thresholds on evidence mean the same thing for every hit.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::{BotId, Chunk};
use crate::embed::{Embedder, Embedders, IntoEmbedders};
use crate::ports::{ContentStore, Search};

#[derive(Debug, Clone)]
pub struct Retrieved {
    pub chunk: Chunk,
    /// Cosine similarity between the query and the chunk.
    pub score: f32,
}

/// Which indexes answer a query (`eval retrieval --mode` compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Vector search only.
    Dense,
    /// BM25 only.
    Keyword,
    /// Both, fused.
    #[default]
    Hybrid,
}

/// The weight of the vector index's normalised score in the fusion (the keyword index
/// gets the rest). Measured on nq_conflicts (3,000 queries, seed 7): 0.5 gave the best
/// nDCG@10 of 0.3 to 0.8, and beat reciprocal rank fusion (see README, Quality).
const DENSE_WEIGHT: f32 = 0.5;

/// Candidates taken from each index before fusion, at least.
const CANDIDATES: usize = 50;

/// The retrieval service: embeds the query, asks the `Search` port for each side's
/// candidates, fuses them, and reads the chunks and their cosine scores from the store.
pub struct Retriever {
    store: Arc<dyn ContentStore>,
    search: Arc<dyn Search>,
    embedders: Arc<Embedders>,
    mode: Mode,
}

impl Retriever {
    /// Search through `search` over `store`'s content, with queries embedded by the
    /// embedder that serves each bot.
    pub fn new(
        store: Arc<dyn ContentStore>,
        search: Arc<dyn Search>,
        embedders: impl IntoEmbedders,
    ) -> Retriever {
        Retriever {
            store,
            search,
            embedders: embedders.into_embedders(),
            mode: Mode::default(),
        }
    }

    /// The same retriever answering with `mode`'s indexes only.
    pub fn with_mode(mut self, mode: Mode) -> Retriever {
        self.mode = mode;
        self
    }

    pub fn store(&self) -> &dyn ContentStore {
        self.store.as_ref()
    }

    pub fn embedders(&self) -> &Arc<Embedders> {
        &self.embedders
    }

    /// The embedder `bot`'s queries are embedded with: the one that made its vectors
    /// (vectors of another would be searched with a meaningless query vector). The bot is
    /// read on every query, so a switch made by another process or node (`docent
    /// reindex`) is seen at once; the models themselves are loaded once.
    fn embedder_for(&self, bot: &BotId) -> anyhow::Result<Arc<dyn Embedder>> {
        let record = self.store.get_bot(bot)?;
        let embedder = self.embedders.for_bot(Some(&record))?.embedder;
        record.check_embedder(&embedder.id()?, &crate::embed::minilm_id())?;
        Ok(embedder)
    }

    /// Forgets what was derived from a bot's content so the next query rebuilds it (after
    /// an ingest or delete).
    pub fn invalidate(&self, bot: &BotId) {
        self.search.invalidate(bot);
    }

    /// The `k` best chunks for `query`, best first. Blocking: call off the async runtime.
    pub fn retrieve(&self, bot: &BotId, query: &str, k: usize) -> anyhow::Result<Vec<Retrieved>> {
        let embedder = self.embedder_for(bot)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let query_vector = embedder
            .embed_queries(&[query])?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("embedder returned no vector"))?;
        let depth = CANDIDATES.max(k * 2);
        let dense = match self.mode {
            Mode::Keyword => Vec::new(),
            _ => self.search.dense(bot, &query_vector, depth)?,
        };
        let keyword = match self.mode {
            Mode::Dense => Vec::new(),
            _ => self.search.keyword(bot, query, depth)?,
        };
        let ranked = fuse(&dense, &keyword, k);
        let scores = self.cosines(&dense, &ranked, &query_vector)?;
        let chunks = self.store.chunks(&ranked)?;
        Ok(chunks
            .into_iter()
            .zip(scores)
            .map(|(chunk, score)| Retrieved { chunk, score })
            .collect())
    }

    /// The cosine similarity of each ranked chunk to the query: known for dense hits,
    /// computed from stored vectors for keyword-only ones.
    fn cosines(
        &self,
        dense: &[(u64, f32)],
        ranked: &[u64],
        query: &[f32],
    ) -> anyhow::Result<Vec<f32>> {
        let known: HashMap<u64, f32> = dense.iter().copied().collect();
        let missing: Vec<u64> = ranked
            .iter()
            .copied()
            .filter(|id| !known.contains_key(id))
            .collect();
        let computed: HashMap<u64, f32> = missing
            .iter()
            .copied()
            .zip(
                self.store
                    .vectors_of(&missing)?
                    .iter()
                    .map(|v| crate::index::dot(v, query)),
            )
            .collect();
        Ok(ranked
            .iter()
            .map(|id| known.get(id).or(computed.get(id)).copied().unwrap_or(0.0))
            .collect())
    }
}

/// Fuses two candidate lists (best first) by a convex combination of their scores, each
/// min-max normalised over its own list, and keeps the best `k` ids. An empty list adds
/// nothing, so one list alone keeps its own order.
fn fuse(dense: &[(u64, f32)], keyword: &[(u64, f32)], k: usize) -> Vec<u64> {
    let mut scores: HashMap<u64, f32> = HashMap::new();
    for (list, weight) in [(dense, DENSE_WEIGHT), (keyword, 1.0 - DENSE_WEIGHT)] {
        let max = list.iter().map(|h| h.1).fold(f32::MIN, f32::max);
        let min = list.iter().map(|h| h.1).fold(f32::MAX, f32::min);
        for &(id, score) in list {
            let normalised = if max > min {
                (score - min) / (max - min)
            } else {
                1.0
            };
            *scores.entry(id).or_default() += weight * normalised;
        }
    }
    let mut fused: Vec<(u64, f32)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused.truncate(k);
    fused.into_iter().map(|(id, _)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use crate::domain::EmbedderId;
    use crate::embed::FakeEmbedder;
    use crate::ingest::{Document, IngestRequest, Source};
    use crate::ports::ContentStore;

    /// A search engine that answers with scripted candidates and records what it was
    /// asked, standing in for any engine behind the port.
    #[derive(Default)]
    struct Scripted {
        dense: Vec<(u64, f32)>,
        keyword: Vec<(u64, f32)>,
        asked: Mutex<Vec<String>>,
    }

    impl Search for Scripted {
        fn dense(&self, _: &BotId, query: &[f32], k: usize) -> anyhow::Result<Vec<(u64, f32)>> {
            self.asked
                .lock()
                .unwrap()
                .push(format!("dense {} {k}", query.len()));
            Ok(self.dense.clone())
        }

        fn keyword(&self, _: &BotId, query: &str, k: usize) -> anyhow::Result<Vec<(u64, f32)>> {
            self.asked
                .lock()
                .unwrap()
                .push(format!("keyword {query} {k}"));
            Ok(self.keyword.clone())
        }

        fn invalidate(&self, bot: &BotId) {
            self.asked.lock().unwrap().push(format!("invalidate {bot}"));
        }
    }

    /// A store holding bot `docs` with three one-chunk pages, and their chunk ids in page
    /// order (a, b, c).
    fn store_with_three_pages() -> (tempfile::TempDir, Arc<dyn ContentStore>, Vec<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ContentStore> = crate::store::open(dir.path()).unwrap();
        let documents = [
            "alpha river stones",
            "beta mountain paths",
            "gamma forest trails",
        ]
        .iter()
        .enumerate()
        .map(|(i, text)| Document {
            url: format!("https://docs.example/{i}"),
            title: format!("Page {i}"),
            text: text.to_string(),
        })
        .collect();
        let request = IngestRequest {
            bot: BotId::parse("docs").unwrap(),
            name: None,
            source: Source::Documents {
                name: "docs".into(),
                documents: Arc::new(documents),
            },
            crawl: Default::default(),
            chunk: Default::default(),
            test: false,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let embedder = Arc::new(FakeEmbedder::default());
        runtime
            .block_on(crate::ingest::run(store.clone(), embedder, request, &()))
            .unwrap();
        let mut pages = store.pages(&BotId::parse("docs").unwrap()).unwrap();
        pages.sort_by(|x, y| x.url.cmp(&y.url));
        let ids = pages.iter().map(|p| p.chunk_ids[0]).collect();
        (dir, store, ids)
    }

    #[test]
    fn candidates_from_any_search_engine_are_fused_and_scored_by_cosine_here() {
        let (_dir, store, ids) = store_with_three_pages();
        let (a, b, c) = (ids[0], ids[1], ids[2]);
        let search = Arc::new(Scripted {
            dense: vec![(a, 0.9), (c, 0.5)],
            keyword: vec![(b, 7.0), (a, 5.0), (c, 3.0)],
            ..Scripted::default()
        });
        let embedder = Arc::new(FakeEmbedder::default());
        let retriever = Retriever::new(store.clone(), search.clone(), embedder.clone());
        let bot = BotId::parse("docs").unwrap();
        let hits = retriever.retrieve(&bot, "beta paths", 3).unwrap();
        // Fused: a 0.5 + 0.25, b 0.5, c 0 (each list min-max normalised, halved).
        let urls: Vec<&str> = hits.iter().map(|h| h.chunk.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://docs.example/0",
                "https://docs.example/1",
                "https://docs.example/2"
            ]
        );
        // Dense hits keep the engine's cosine; the keyword-only one gets its own from the
        // stored vector, so every score means the same.
        let query = embedder.embed(&["beta paths"]).unwrap().remove(0);
        let stored = store.vectors_of(&[b]).unwrap().remove(0);
        assert_eq!(hits[0].score, 0.9);
        assert_eq!(hits[1].score, crate::index::dot(&stored, &query));
        assert!(hits[1].score > 0.0);
        assert_eq!(hits[2].score, 0.5);
        assert_eq!(
            *search.asked.lock().unwrap(),
            [
                format!("dense {} 50", FakeEmbedder::DIM),
                "keyword beta paths 50".to_string()
            ]
        );
    }

    #[test]
    fn a_mode_asks_one_side_and_a_foreign_embedder_is_refused_before_searching() {
        let (_dir, store, ids) = store_with_three_pages();
        let search = Arc::new(Scripted {
            dense: vec![(ids[2], 0.4)],
            keyword: vec![(ids[0], 1.0)],
            ..Scripted::default()
        });
        let embedder = Arc::new(FakeEmbedder::default());
        let bot = BotId::parse("docs").unwrap();
        let dense =
            Retriever::new(store.clone(), search.clone(), embedder.clone()).with_mode(Mode::Dense);
        let hits = dense.retrieve(&bot, "gamma", 5).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].chunk.url, "https://docs.example/2");
        dense.invalidate(&bot);
        assert_eq!(
            *search.asked.lock().unwrap(),
            [
                format!("dense {} 50", FakeEmbedder::DIM),
                "invalidate docs".to_string()
            ]
        );
        store
            .update_bot(&bot, &mut |b| {
                b.embedder = Some(EmbedderId::new("another-model", 3))
            })
            .unwrap();
        search.asked.lock().unwrap().clear();
        let error = dense.retrieve(&bot, "gamma", 5).unwrap_err();
        assert!(
            error
                .downcast_ref::<crate::domain::EmbedderMismatch>()
                .is_some(),
            "{error:#}"
        );
        assert!(search.asked.lock().unwrap().is_empty());
    }

    #[test]
    fn fusion_rewards_agreement_and_keeps_a_single_list_in_order() {
        let dense = [(1, 0.9), (2, 0.8), (3, 0.5)];
        let keyword = [(3, 12.0), (4, 9.0), (5, 2.0)];
        // Normalised: dense 1 → 1, 2 → 0.75, 3 → 0; keyword 3 → 1, 4 → 0.7, 5 → 0.
        // Halved and summed: 1 → 0.5, 3 → 0.5, 2 → 0.375, 4 → 0.35, 5 → 0.
        assert_eq!(fuse(&dense, &keyword, 5), [1, 3, 2, 4, 5]);
        assert_eq!(fuse(&dense, &[], 2), [1, 2]);
        assert_eq!(fuse(&[], &keyword, 5), [3, 4, 5]);
        assert!(fuse(&[], &[], 5).is_empty());
    }
}
