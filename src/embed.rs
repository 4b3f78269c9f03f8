//! Sentence embeddings: the `Embedder` and `Tokenizer` ports, MiniLM on docent's packed
//! encoder (with candle-transformers' `BertModel` as its reference), nomic-embed-text-v1.5
//! (`nomic.rs`), MiniLM's tokenizer alone (chunking's measure when vectors come from a
//! remote engine), and a deterministic fake.

mod bert;
mod nomic;
mod registry;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, HiddenAct, PositionEmbeddingType};
use std::sync::Arc;

use tokenizers::TruncationParams;

use crate::domain::EmbedderId;
use bert::{Bert, Shape};
pub use nomic::{
    CandleNomic, DOCUMENT_PREFIX, NOMIC_DIMS, NOMIC_MODEL, Nomic, QUERY_PREFIX, matryoshka,
};
pub use registry::{EmbedderNotInstalled, Embedders, IntoEmbedders, LocalModels, NOMIC_GGUF};

/// Texts embedded per forward pass.
pub const BATCH_SIZE: usize = 32;

/// What turns text into vectors for search.
pub trait Embedder: Send + Sync {
    /// Which model makes these vectors and their length: vectors of two embedders with
    /// different ids are not comparable. A remote embedder learns it from its engine.
    fn id(&self) -> anyhow::Result<EmbedderId>;
    /// Embeds texts (passages to search) into L2-normalised vectors, in input order.
    fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>>;
    /// Embeds questions to search with: the same as passages, unless the model was trained
    /// to tell them apart (nomic's `search_query: ` prefix).
    fn embed_queries(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        self.embed(texts)
    }
    /// Whether embedding can run now; the reason when not (an engine out of reach).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// What chunking measures text with.
pub trait Tokenizer: Send + Sync {
    /// Byte spans of `text`'s tokens (without special tokens), for chunking by tokens.
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)>;
}

/// An embedder with the tokenizer an ingest chunks by: one local model's both, or a remote
/// engine's vectors with MiniLM's tokenizer measuring the chunks.
#[derive(Clone)]
pub struct Embedding {
    pub embedder: Arc<dyn Embedder>,
    pub tokenizer: Arc<dyn Tokenizer>,
}

impl<T: Embedder + Tokenizer + 'static> From<Arc<T>> for Embedding {
    fn from(model: Arc<T>) -> Embedding {
        Embedding {
            embedder: model.clone(),
            tokenizer: model,
        }
    }
}

/// The id MiniLM's vectors carry; bots embedded before embedders were recorded had these.
pub fn minilm_id() -> EmbedderId {
    EmbedderId::new("all-MiniLM-L6-v2", 384)
}

/// all-MiniLM-L6-v2: BERT, mean pooling, L2 norm, on docent's packed CPU encoder
/// (`bert.rs`), with weights and tokenizer as shipped.
pub struct MiniLm {
    bert: Bert,
    tokenizers: Tokenizers,
    threads: usize,
}

impl MiniLm {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<MiniLm> {
        let config = read_config(dir)?;
        if !matches!(config.hidden_act, HiddenAct::Gelu)
            || !matches!(
                config.position_embedding_type,
                PositionEmbeddingType::Absolute
            )
        {
            bail!(
                "unsupported embedder: docent runs BERT models with erf GELU and absolute positions"
            );
        }
        let tokenizers = Tokenizers::load(dir, &config)?;
        let shape = Shape {
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            intermediate: config.intermediate_size,
            layers: config.num_hidden_layers,
            max_positions: config.max_position_embeddings,
            eps: config.layer_norm_eps as f32,
        };
        let bert = Bert::load(&dir.join("model.safetensors"), shape)
            .context("failed to load MiniLM weights")?;
        Ok(MiniLm {
            bert,
            tokenizers,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    /// Threads one batch is spread over (default: all cores).
    pub fn with_threads(mut self, threads: usize) -> MiniLm {
        self.threads = threads.max(1);
        self
    }
}

impl MiniLm {
    /// Vector length.
    pub fn dim(&self) -> usize {
        self.bert.hidden()
    }
}

impl Embedder for MiniLm {
    fn id(&self) -> anyhow::Result<EmbedderId> {
        Ok(EmbedderId::new("all-MiniLM-L6-v2", self.dim()))
    }

    fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH_SIZE) {
            let ids = self.tokenizers.encode(batch)?;
            out.extend(self.bert.embed(&ids, self.threads)?);
        }
        Ok(out)
    }
}

impl Tokenizer for MiniLm {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        self.tokenizers.token_spans(text)
    }
}

/// MiniLM's tokenizer without its weights: what chunks are measured with when the vectors
/// come from a remote engine (`--embed-url`), so chunk boundaries do not depend on which
/// engine embeds them.
pub struct WordPiece {
    tokenizers: Tokenizers,
}

impl WordPiece {
    /// Loads `config.json` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<WordPiece> {
        let config = read_config(dir)?;
        Ok(WordPiece {
            tokenizers: Tokenizers::load(dir, &config)?,
        })
    }
}

impl Tokenizer for WordPiece {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        self.tokenizers.token_spans(text)
    }
}

/// The model's tokenizer twice: truncating at the model's input limit, for embedding; and
/// untruncated, for measuring whole texts when chunking.
struct Tokenizers {
    tokenizer: tokenizers::Tokenizer,
    span_tokenizer: tokenizers::Tokenizer,
}

impl Tokenizers {
    fn load(dir: &Path, config: &Config) -> anyhow::Result<Tokenizers> {
        // The shipped tokenizer pads and truncates at a fixed 128; truncate at 256 tokens
        // instead, the length the model was tuned on, and never pad (callers pack or pad).
        Tokenizers::with_limit(dir, 256.min(config.max_position_embeddings))
    }

    /// `dir`'s `tokenizer.json`, truncating at `max_tokens` (special tokens included) for
    /// embedding, never padding.
    fn with_limit(dir: &Path, max_tokens: usize) -> anyhow::Result<Tokenizers> {
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(read(dir, "tokenizer.json")?)
            .map_err(|e| anyhow::anyhow!("invalid tokenizer.json: {e}"))?;
        tokenizer.with_padding(None);
        let mut span_tokenizer = tokenizer.clone();
        span_tokenizer
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        Ok(Tokenizers {
            tokenizer,
            span_tokenizer,
        })
    }

    /// Token ids with special tokens, truncated, unpadded.
    fn encode(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<u32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenization failed: {e}"))?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        match self.span_tokenizer.encode(text, false) {
            Ok(enc) => enc.get_offsets().to_vec(),
            Err(_) => word_spans(text),
        }
    }
}

fn read(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(dir.join(name)).with_context(|| {
        format!(
            "failed to read {} (run `make models`)",
            dir.join(name).display()
        )
    })
}

fn read_config(dir: &Path) -> anyhow::Result<Config> {
    serde_json::from_slice(&read(dir, "config.json")?).context("invalid embedder config.json")
}

/// The same model through candle-transformers' `BertModel`: batches padded to their
/// longest, one candle op at a time. The reference the packed encoder is tested and
/// benchmarked against.
pub struct CandleMiniLm {
    model: BertModel,
    tokenizers: Tokenizers,
    device: Device,
    dim: usize,
}

impl CandleMiniLm {
    pub fn load(dir: &Path) -> anyhow::Result<CandleMiniLm> {
        let config = read_config(dir)?;
        let tokenizers = Tokenizers::load(dir, &config)?;
        let device = Device::Cpu;
        let vb = mmap_weights(&dir.join("model.safetensors"), &device)?;
        let model = BertModel::load(vb, &config).context("failed to load MiniLM weights")?;
        Ok(CandleMiniLm {
            model,
            tokenizers,
            device,
            dim: config.hidden_size,
        })
    }

    fn embed_batch(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let (ids, mask) = padded(&self.tokenizers.encode(texts)?, &self.device)?;
        let type_ids = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let pooled = summed.broadcast_div(&counts)?;
        let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
        let normed = pooled.broadcast_div(&norms)?;
        Ok(normed.to_vec2::<f32>()?)
    }
}

impl Embedder for CandleMiniLm {
    fn id(&self) -> anyhow::Result<EmbedderId> {
        Ok(EmbedderId::new("all-MiniLM-L6-v2", self.dim))
    }

    fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        // Sort by length so each batch pads to a similar length: less wasted compute.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(BATCH_SIZE) {
            let batch_texts: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
            let vectors = self.embed_batch(&batch_texts)?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

/// A batch's token ids padded to its longest (with 0), and the mask of real tokens, both
/// (texts, longest): what candle's padded models take.
fn padded(encoded: &[Vec<u32>], device: &Device) -> anyhow::Result<(Tensor, Tensor)> {
    let (n, len) = (
        encoded.len(),
        encoded.iter().map(Vec::len).max().unwrap_or(0),
    );
    let mut ids = Vec::with_capacity(n * len);
    let mut mask = Vec::with_capacity(n * len);
    for seq in encoded {
        ids.extend_from_slice(seq);
        ids.extend(std::iter::repeat_n(0u32, len - seq.len()));
        mask.extend(std::iter::repeat_n(1u32, seq.len()));
        mask.extend(std::iter::repeat_n(0u32, len - seq.len()));
    }
    Ok((
        Tensor::from_vec(ids, (n, len), device)?,
        Tensor::from_vec(mask, (n, len), device)?,
    ))
}

/// Memory-maps the safetensors file. candle's mmap constructor is `unsafe` because the file
/// must not change while mapped; docent only maps its own verified model files.
fn mmap_weights(path: &Path, device: &Device) -> anyhow::Result<VarBuilder<'static>> {
    if !path.is_file() {
        bail!("missing {} (run `make models`)", path.display());
    }
    // SAFETY: the weights file is written once by `make models` and never modified in place.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device) }
        .with_context(|| format!("failed to map {}", path.display()))?;
    Ok(vb)
}

/// A deterministic bag-of-words embedder: words hashed into buckets. Similar texts get
/// similar vectors, so retrieval behaves sensibly in tests without loading a model.
#[derive(Default)]
pub struct FakeEmbedder {
    pub calls: AtomicUsize,
    pub texts_embedded: AtomicUsize,
}

impl FakeEmbedder {
    pub const DIM: usize = 128;
}

impl Embedder for FakeEmbedder {
    fn id(&self) -> anyhow::Result<EmbedderId> {
        Ok(EmbedderId::new("fake-bag-of-words", Self::DIM))
    }

    fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.texts_embedded.fetch_add(texts.len(), Ordering::SeqCst);
        Ok(texts.iter().map(|t| bag_of_words(t)).collect())
    }
}

impl Tokenizer for FakeEmbedder {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        word_spans(text)
    }
}

fn bag_of_words(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; FakeEmbedder::DIM];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
    {
        let word = word.to_lowercase();
        // FNV-1a: stable across runs and platforms.
        let hash = word.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        v[(hash % FakeEmbedder::DIM as u64) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        v[0] = 1.0;
    }
    v
}

/// Byte spans of whitespace-separated words.
pub fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}
