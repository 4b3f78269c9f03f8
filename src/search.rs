//! The in-process adapter of the `Search` port: per bot, an HNSW vector index (cosine)
//! and a BM25 keyword index, built from the content store the first time the bot is
//! searched and kept until its content changes. Both are derived data: the store is the
//! truth, and a restart rebuilds them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::BotId;
use crate::index::VectorIndex;
use crate::keyword::KeywordIndex;
use crate::ports::{ContentStore, Search};

struct BotIndexes {
    vectors: VectorIndex,
    keywords: KeywordIndex,
}

/// HNSW and BM25 in this process's memory, one pair per bot searched.
pub struct InProcess {
    store: Arc<dyn ContentStore>,
    indexes: Mutex<HashMap<BotId, Arc<BotIndexes>>>,
}

impl InProcess {
    pub fn new(store: Arc<dyn ContentStore>) -> InProcess {
        InProcess {
            store,
            indexes: Mutex::new(HashMap::new()),
        }
    }

    /// The bot's indexes, built from its stored vectors and chunks the first time they are
    /// asked for.
    fn indexes(&self, bot: &BotId) -> anyhow::Result<Arc<BotIndexes>> {
        if let Some(index) = self.indexes.lock().expect("index lock").get(bot) {
            return Ok(index.clone());
        }
        let vectors = VectorIndex::build(&self.store.vectors(bot)?);
        let texts: Vec<(u64, String)> = self
            .store
            .bot_chunks(bot)?
            .into_iter()
            .map(|(id, chunk)| (id, chunk.embedding_text()))
            .collect();
        let keywords = KeywordIndex::build(&texts);
        let indexes = Arc::new(BotIndexes { vectors, keywords });
        self.indexes
            .lock()
            .expect("index lock")
            .insert(bot.clone(), indexes.clone());
        Ok(indexes)
    }
}

impl Search for InProcess {
    fn dense(&self, bot: &BotId, query: &[f32], k: usize) -> anyhow::Result<Vec<(u64, f32)>> {
        let hits = self.indexes(bot)?.vectors.search(query, k);
        Ok(hits.into_iter().map(|h| (h.chunk_id, h.score)).collect())
    }

    fn keyword(&self, bot: &BotId, query: &str, k: usize) -> anyhow::Result<Vec<(u64, f32)>> {
        Ok(self.indexes(bot)?.keywords.search(query, k))
    }

    fn invalidate(&self, bot: &BotId) {
        self.indexes.lock().expect("index lock").remove(bot);
    }
}
