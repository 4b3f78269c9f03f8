//! Sentence embeddings: the `Embedder` seam, the candle MiniLM implementation, and a
//! deterministic fake for fast tests.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

/// Texts embedded per forward pass.
pub const BATCH_SIZE: usize = 32;

pub trait Embedder: Send + Sync {
    /// Vector length.
    fn dim(&self) -> usize;
    /// The most tokens of a passage the model reads; longer input is truncated.
    fn max_tokens(&self) -> usize;
    /// Embeds texts into L2-normalised vectors, in input order.
    fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>>;
    /// Byte spans of `text`'s tokens (without special tokens), for chunking by tokens.
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)>;
}

/// all-MiniLM-L6-v2 on candle: BERT, mean pooling over the attention mask, L2 norm.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    /// The same vocabulary without padding or truncation, for measuring whole texts.
    span_tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    max_tokens: usize,
}

impl MiniLm {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<MiniLm> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).with_context(|| {
                format!(
                    "failed to read {} (run `make models`)",
                    dir.join(name).display()
                )
            })
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .context("invalid embedder config.json")?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| anyhow::anyhow!("invalid tokenizer.json: {e}"))?;
        // The shipped tokenizer pads and truncates at a fixed 128; pad to each batch's
        // longest instead and truncate at 256 tokens, the length the model was tuned on.
        let max_tokens = 256.min(config.max_position_embeddings);
        let mut span_tokenizer = tokenizer.clone();
        span_tokenizer.with_padding(None);
        span_tokenizer
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        let device = Device::Cpu;
        let vb = mmap_weights(&dir.join("model.safetensors"), &device)?;
        let model = BertModel::load(vb, &config).context("failed to load MiniLM weights")?;
        Ok(MiniLm {
            model,
            tokenizer,
            span_tokenizer,
            device,
            dim: config.hidden_size,
            max_tokens,
        })
    }

    fn embed_batch(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenization failed: {e}"))?;
        let n = encodings.len();
        let len = encodings[0].get_ids().len();
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for enc in &encodings {
            ids.extend_from_slice(enc.get_ids());
            mask.extend_from_slice(enc.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
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

impl Embedder for MiniLm {
    fn dim(&self) -> usize {
        self.dim
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
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

    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        match self.span_tokenizer.encode(text, false) {
            Ok(enc) => enc.get_offsets().to_vec(),
            Err(_) => word_spans(text),
        }
    }
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
    fn dim(&self) -> usize {
        Self::DIM
    }

    fn max_tokens(&self) -> usize {
        256
    }

    fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.texts_embedded.fetch_add(texts.len(), Ordering::SeqCst);
        Ok(texts.iter().map(|t| bag_of_words(t)).collect())
    }

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
