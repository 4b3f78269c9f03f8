//! Retrieval: embed the query, search the bot's vector index, load the chunks. Keeps one
//! index per bot, built from the store on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::{BotId, Chunk};
use crate::embed::Embedder;
use crate::index::VectorIndex;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct Retrieved {
    pub chunk: Chunk,
    pub score: f32,
}

pub struct Retriever {
    store: Store,
    embedder: Arc<dyn Embedder>,
    indexes: Mutex<HashMap<BotId, Arc<VectorIndex>>>,
}

impl Retriever {
    pub fn new(store: Store, embedder: Arc<dyn Embedder>) -> Retriever {
        Retriever {
            store,
            embedder,
            indexes: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// The bot's index, built from its stored vectors the first time it is asked for.
    pub fn index(&self, bot: &BotId) -> anyhow::Result<Arc<VectorIndex>> {
        if let Some(index) = self.indexes.lock().expect("index lock").get(bot) {
            return Ok(index.clone());
        }
        self.store.get_bot(bot)?;
        let entries = self.store.vectors(bot)?;
        let index = Arc::new(VectorIndex::build(&entries));
        self.indexes
            .lock()
            .expect("index lock")
            .insert(bot.clone(), index.clone());
        Ok(index)
    }

    /// Forgets a bot's index so the next query rebuilds it (after an ingest or delete).
    pub fn invalidate(&self, bot: &BotId) {
        self.indexes.lock().expect("index lock").remove(bot);
    }

    /// The `k` best chunks for `query`, best first. Blocking: call off the async runtime.
    pub fn retrieve(&self, bot: &BotId, query: &str, k: usize) -> anyhow::Result<Vec<Retrieved>> {
        let index = self.index(bot)?;
        let query_vector = self
            .embedder
            .embed(&[query])?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("embedder returned no vector"))?;
        let hits = index.search(&query_vector, k);
        let ids: Vec<u64> = hits.iter().map(|h| h.chunk_id).collect();
        let chunks = self.store.chunks(&ids)?;
        Ok(chunks
            .into_iter()
            .zip(hits)
            .map(|(chunk, hit)| Retrieved {
                chunk,
                score: hit.score,
            })
            .collect())
    }
}
