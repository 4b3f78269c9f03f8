//! Embeddings on remote OpenAI-compatible engines (`--embed-url`): the `Embedder` port over
//! `POST {url}/v1/embeddings`, in batches sent side by side.
//!
//! Vectors come back L2-normalised whatever the engine does, and are checked: one per
//! input, all of one length, finite. The embedder's id is the model's name (configured, or
//! the engine's first listed model) with the length its vectors have, learned from the
//! engine on first use (set `--embed-model` to fix the name across engines). Inputs are cut
//! at the same token budget in-process embedding reads (256 tokens of the chunking
//! tokenizer) and at six bytes a token, so a long question or an unbroken blob cannot
//! overflow the engine.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

use super::{EngineError, Engines, Pool, PoolConfig, add_us};
use crate::domain::EmbedderId;
use crate::embed::{Embedder, Tokenizer};

/// Where the embedding engines are and how to talk to them.
#[derive(Debug, Clone)]
pub struct EmbedConfig {
    /// The engines, and how they are reached (the timeout is the longest wait for one
    /// batch's response).
    pub engines: PoolConfig,
    /// Inputs per request.
    pub batch: usize,
}

/// The most tokens of one input sent (the chunking tokenizer's, special tokens aside), as
/// in-process MiniLM reads at most 256 with its two special tokens.
const MAX_INPUT_TOKENS: usize = 254;
/// The most bytes of one input sent: six per token, more than English prose takes (about
/// four and a half), so only text a tokenizer cannot split is cut by it.
const MAX_INPUT_BYTES: usize = 6 * MAX_INPUT_TOKENS;

/// An embedding engine's fault: out of reach, too slow, or a wrong answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("embedding: {0}")]
pub struct EmbedError(#[from] pub EngineError);

pub struct RemoteEmbedder {
    pool: Pool,
    batch: usize,
    /// Cuts inputs to `MAX_INPUT_TOKENS`.
    tokenizer: Arc<dyn Tokenizer>,
    id: Mutex<Option<EmbedderId>>,
}

impl RemoteEmbedder {
    /// Connects nothing yet: the engine is asked on first use.
    pub fn new(config: EmbedConfig, tokenizer: Arc<dyn Tokenizer>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.batch >= 1,
            "the embedding batch must hold one input at least"
        );
        let pool = Pool::new(config.engines, "docent-embed")?;
        Ok(RemoteEmbedder {
            pool,
            batch: config.batch,
            tokenizer,
            id: Mutex::new(None),
        })
    }

    /// Requests sent, errors by kind, and upstream time so far.
    pub fn counts(&self) -> (u64, Vec<(&'static str, u64)>, f64, u64) {
        self.pool.counts()
    }

    /// `text` cut at `MAX_INPUT_TOKENS` of the chunking tokenizer, and at
    /// `MAX_INPUT_BYTES`: a long unbroken string (base64, minified code) is one unknown
    /// word to MiniLM's tokenizer but many tokens to an engine's own.
    fn truncated<'a>(&self, text: &'a str) -> &'a str {
        let spans = self.tokenizer.token_spans(text);
        let text = match spans.get(MAX_INPUT_TOKENS) {
            Some(&(start, _)) => &text[..start],
            None => text,
        };
        let mut end = text.len().min(MAX_INPUT_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text[..end]
    }

    fn known_dim(&self) -> Option<usize> {
        self.id.lock().expect("id lock").as_ref().map(|id| id.dim)
    }
}

impl Embedder for RemoteEmbedder {
    fn health(&self) -> Result<(), String> {
        let engines = self.pool.engines().clone();
        self.pool
            .wait(async move { engines.probe().await.map(|_| ()) })
    }

    fn id(&self) -> anyhow::Result<EmbedderId> {
        if let Some(id) = self.id.lock().expect("id lock").clone() {
            return Ok(id);
        }
        let probe = self.embed(&["docent"])?;
        let engines = self.pool.engines().clone();
        // A name guessed now would be recorded on bots for good: without one, no id.
        let model = self.pool.wait(async move { engines.known_model().await });
        let model = model.ok_or_else(|| {
            EmbedError(EngineError::Unavailable(
                "no embedding engine listed its model (GET /v1/models); set --embed-model".into(),
            ))
        })?;
        let id = EmbedderId::new(model, probe[0].len());
        let mut known = self.id.lock().expect("id lock");
        Ok(known.get_or_insert(id).clone())
    }

    fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let batches: Vec<Vec<String>> = texts
            .chunks(self.batch)
            .map(|batch| {
                batch
                    .iter()
                    .map(|t| self.truncated(t).to_string())
                    .collect()
            })
            .collect();
        let engines = self.pool.engines().clone();
        let results = self.pool.wait(async move {
            let requests = batches
                .into_iter()
                .map(|batch| embed_batch(&engines, batch));
            futures::future::join_all(requests).await
        });
        let mut out = Vec::with_capacity(texts.len());
        for result in results {
            out.extend(result.map_err(EmbedError)?);
        }
        let dim = self.known_dim().unwrap_or(out[0].len());
        if let Some(bad) = out.iter().find(|v| v.len() != dim) {
            return Err(EmbedError(EngineError::Failed(format!(
                "the engine's vectors changed length from {dim} to {}: is it serving another model?",
                bad.len()
            )))
            .into());
        }
        Ok(out)
    }
}

/// One request: `texts` in, one normalised vector per text out, in input order.
async fn embed_batch(engines: &Engines, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EngineError> {
    let _turn = engines.turn().await;
    let counters = &engines.counters;
    counters
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let body = json!({"input": texts, "encoding_format": "float"});
    let result = engines
        .post_json("v1/embeddings", body)
        .await
        .and_then(|reply| read_vectors(&reply, texts.len()));
    add_us(&counters.upstream_us, &counters.upstream_count, started);
    if let Err(e) = &result {
        counters.error(e);
    }
    result
}

/// The vectors of an OpenAI `/v1/embeddings` reply, ordered by their `index`, normalised.
fn read_vectors(reply: &Value, expected: usize) -> Result<Vec<Vec<f32>>, EngineError> {
    let wrong = |why: String| EngineError::Failed(format!("unusable embeddings: {why}"));
    let data = reply["data"]
        .as_array()
        .ok_or_else(|| wrong(format!("no data in {:.200}", reply.to_string())))?;
    if data.len() != expected {
        return Err(wrong(format!(
            "{} vectors for {expected} inputs",
            data.len()
        )));
    }
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
    for (position, item) in data.iter().enumerate() {
        let index = item["index"].as_u64().map_or(position, |i| i as usize);
        let values = item["embedding"]
            .as_array()
            .ok_or_else(|| wrong(format!("item {index} has no embedding array")))?;
        let vector: Vec<f32> = values
            .iter()
            .map(|v| v.as_f64().map(|x| x as f32))
            .collect::<Option<_>>()
            .ok_or_else(|| wrong(format!("item {index} holds a non-number")))?;
        let slot = vectors
            .get_mut(index)
            .ok_or_else(|| wrong(format!("index {index} out of range")))?;
        *slot = Some(
            normalised(vector)
                .ok_or_else(|| wrong(format!("item {index} is empty, zero or not finite")))?,
        );
    }
    vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| wrong(format!("no vector for input {i}"))))
        .collect()
}

/// `v` scaled to unit length; None for an empty, zero or non-finite vector.
fn normalised(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if v.is_empty() || !norm.is_finite() || norm == 0.0 {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_in_index_order_and_normalised() {
        let reply = json!({"data": [
            {"index": 1, "embedding": [0.0, 2.0]},
            {"index": 0, "embedding": [3.0, 4.0]},
        ]});
        let vectors = read_vectors(&reply, 2).unwrap();
        assert_eq!(vectors, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
    }

    #[test]
    fn wrong_replies_are_errors_not_vectors() {
        for (reply, expected) in [
            (json!({"error": "no"}), 1),
            (json!({"data": [{"index": 0, "embedding": [1.0]}]}), 2),
            (json!({"data": [{"index": 0, "embedding": [0.0, 0.0]}]}), 1),
            (json!({"data": [{"index": 0, "embedding": []}]}), 1),
            (json!({"data": [{"index": 0, "embedding": ["x"]}]}), 1),
            (json!({"data": [{"index": 5, "embedding": [1.0]}]}), 1),
            (
                json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}),
                2,
            ),
        ] {
            assert!(
                matches!(read_vectors(&reply, expected), Err(EngineError::Failed(_))),
                "{reply}"
            );
        }
    }
}
