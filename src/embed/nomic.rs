//! nomic-embed-text-v1.5 from its nomic-bert GGUF: on docent's packed encoder (`bert.rs`,
//! with rotary positions and SwiGLU), and on candle-transformers' `NomicBertModel` as its
//! reference. Both read the GGUF's tensors under candle's names, use MiniLM's WordPiece
//! tokenizer (the GGUF's vocabulary is the same, id for id), the task prefixes the model
//! was trained with (`search_document: ` for passages, `search_query: ` for questions),
//! mean pooling, and Matryoshka truncation to 512 or 256 dimensions (layer norm, cut, L2)
//! when asked.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::nomic_bert::{Config, NomicBertModel};

use super::bert::{Bert, Shape};
use super::{BATCH_SIZE, Embedder, Tokenizer, Tokenizers, padded};
use crate::domain::EmbedderId;

/// What nomic-embed-text-v1.5's vectors are called in an `EmbedderId`.
pub const NOMIC_MODEL: &str = "nomic-embed-text-v1.5";
/// The model's full width, and the Matryoshka widths it was trained to be cut to.
pub const NOMIC_DIMS: [usize; 3] = [768, 512, 256];
/// The prefixes the model was trained with: passages to search, and questions.
pub const DOCUMENT_PREFIX: &str = "search_document: ";
pub const QUERY_PREFIX: &str = "search_query: ";
/// Tokens a text is cut to (the prefix included): chunks are far shorter.
const MAX_TOKENS: usize = 512;

/// nomic-embed-text-v1.5 at `dim` dimensions, on docent's packed encoder. Widths cut from
/// one loaded model (`at_width`) share its weights.
#[derive(Clone)]
pub struct Nomic {
    model: Arc<(Bert, Tokenizers)>,
    dim: usize,
    threads: usize,
}

impl Nomic {
    /// Loads the GGUF at `gguf` and the WordPiece tokenizer in `tokenizer_dir` (MiniLM's
    /// folder), cutting vectors to `dim` (768, 512 or 256).
    pub fn load(gguf: &Path, tokenizer_dir: &Path, dim: usize) -> anyhow::Result<Nomic> {
        check_dim(dim)?;
        let (mut tensors, config) = read_gguf(gguf, &Device::Cpu)?;
        let shape = Shape {
            hidden: config.n_embd,
            heads: config.n_head,
            intermediate: config.n_inner,
            layers: config.n_layer,
            max_positions: MAX_TOKENS,
            eps: config.layer_norm_epsilon as f32,
        };
        let take = |name: &str, dims: &[usize]| -> anyhow::Result<Vec<f32>> {
            let tensor = tensors
                .remove(name)
                .with_context(|| format!("{} lacks {name}", gguf.display()))?;
            if tensor.dims() != dims {
                bail!("{name} has shape {:?}, expected {dims:?}", tensor.dims());
            }
            Ok(tensor
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        let bert = Bert::nomic(
            shape,
            config.vocab_size,
            config.rotary_emb_base as f32,
            take,
        )
        .context("failed to load nomic-embed-text-v1.5")?;
        let tokenizers = Tokenizers::with_limit(tokenizer_dir, MAX_TOKENS)?;
        Ok(Nomic {
            model: Arc::new((bert, tokenizers)),
            dim,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    /// The same weights giving vectors of `dim` dimensions (768, 512 or 256).
    pub fn at_width(&self, dim: usize) -> anyhow::Result<Nomic> {
        check_dim(dim)?;
        Ok(Nomic {
            dim,
            ..self.clone()
        })
    }

    /// Threads one batch is spread over (default: all cores).
    pub fn with_threads(mut self, threads: usize) -> Nomic {
        self.threads = threads.max(1);
        self
    }

    /// Embeds `texts`, each after `prefix`.
    fn embed_prefixed(&self, prefix: &str, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let prefixed: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
        let mut out = Vec::with_capacity(texts.len());
        for batch in prefixed.chunks(BATCH_SIZE) {
            let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
            let (bert, tokenizers) = &*self.model;
            let vectors = bert.embed(&tokenizers.encode(&batch)?, self.threads)?;
            out.extend(vectors.into_iter().map(|v| matryoshka(v, self.dim)));
        }
        Ok(out)
    }
}

impl Embedder for Nomic {
    fn id(&self) -> anyhow::Result<EmbedderId> {
        Ok(EmbedderId::new(NOMIC_MODEL, self.dim))
    }

    fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        self.embed_prefixed(DOCUMENT_PREFIX, texts)
    }

    fn embed_queries(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        self.embed_prefixed(QUERY_PREFIX, texts)
    }
}

impl Tokenizer for Nomic {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        self.model.1.token_spans(text)
    }
}

fn check_dim(dim: usize) -> anyhow::Result<()> {
    if !NOMIC_DIMS.contains(&dim) {
        bail!("nomic-embed-text-v1.5 gives 768, 512 or 256 dimensions, not {dim}");
    }
    Ok(())
}

/// The model card's Matryoshka recipe on a mean-pooled vector: layer norm without weights,
/// the first `dim` values, L2. The full width is only L2-normalised. `pooled` may already
/// be normalised: layer norm ignores its scale (its epsilon only changes one factor, which
/// the final L2 removes).
pub fn matryoshka(pooled: Vec<f32>, dim: usize) -> Vec<f32> {
    if dim >= pooled.len() {
        return normalised(pooled);
    }
    let n = pooled.len() as f32;
    let mean = pooled.iter().sum::<f32>() / n;
    let var = pooled.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n;
    let inv = 1.0 / (var + 1e-5).sqrt();
    normalised(pooled[..dim].iter().map(|x| (x - mean) * inv).collect())
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// The same model on candle-transformers' `NomicBertModel`: batches padded to their
/// longest, one candle op at a time. The reference the packed encoder is tested and
/// benchmarked against.
pub struct CandleNomic {
    model: NomicBertModel,
    tokenizers: Tokenizers,
    device: Device,
    dim: usize,
}

impl CandleNomic {
    /// As `Nomic::load`.
    pub fn load(gguf: &Path, tokenizer_dir: &Path, dim: usize) -> anyhow::Result<CandleNomic> {
        check_dim(dim)?;
        let device = Device::Cpu;
        let (tensors, config) = read_gguf(gguf, &device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model =
            NomicBertModel::load(vb, &config).context("failed to load nomic-embed-text-v1.5")?;
        Ok(CandleNomic {
            model,
            tokenizers: Tokenizers::with_limit(tokenizer_dir, MAX_TOKENS)?,
            device,
            dim,
        })
    }

    /// Embeds `texts`, each after `prefix`, in batches of similar lengths.
    fn embed_prefixed(&self, prefix: &str, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let prefixed: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| prefixed[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(BATCH_SIZE) {
            let batch_texts: Vec<&str> = batch.iter().map(|&i| prefixed[i].as_str()).collect();
            for (&i, v) in batch.iter().zip(self.embed_batch(&batch_texts)?) {
                out[i] = matryoshka(v, self.dim);
            }
        }
        Ok(out)
    }

    /// Mean-pooled (not yet normalised) vectors of one padded batch.
    fn embed_batch(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let (ids, mask) = padded(&self.tokenizers.encode(texts)?, &self.device)?;
        let hidden = self.model.forward(&ids, None, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let pooled = hidden
            .broadcast_mul(&mask)?
            .sum(1)?
            .broadcast_div(&mask.sum(1)?)?;
        Ok(pooled.to_vec2::<f32>()?)
    }
}

impl Embedder for CandleNomic {
    fn id(&self) -> anyhow::Result<EmbedderId> {
        Ok(EmbedderId::new(NOMIC_MODEL, self.dim))
    }

    fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        self.embed_prefixed(DOCUMENT_PREFIX, texts)
    }

    fn embed_queries(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        self.embed_prefixed(QUERY_PREFIX, texts)
    }
}

/// The GGUF name of each tensor candle's `NomicBertModel` reads, by candle's name.
fn candle_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("embeddings.word_embeddings.weight"),
        "token_types.weight" => Some("embeddings.token_type_embeddings.weight"),
        "token_embd_norm.weight" => Some("emb_ln.weight"),
        "token_embd_norm.bias" => Some("emb_ln.bias"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let part = match part {
        "attn_qkv.weight" => "attn.Wqkv.weight",
        "attn_output.weight" => "attn.out_proj.weight",
        "attn_output_norm.weight" => "norm1.weight",
        "attn_output_norm.bias" => "norm1.bias",
        // llama.cpp's `up` is the value half of SwiGLU (candle's fc11), `gate` the SiLU half.
        "ffn_up.weight" => "mlp.fc11.weight",
        "ffn_gate.weight" => "mlp.fc12.weight",
        "ffn_down.weight" => "mlp.fc2.weight",
        "layer_output_norm.weight" => "norm2.weight",
        "layer_output_norm.bias" => "norm2.bias",
        _ => return None,
    };
    Some(format!("encoder.layers.{layer}.{part}"))
}

/// The GGUF's tensors as f32 under candle's names, and the model's shape from its metadata.
fn read_gguf(path: &Path, device: &Device) -> anyhow::Result<(HashMap<String, Tensor>, Config)> {
    let mut file = std::fs::File::open(path).with_context(|| {
        format!(
            "failed to open {} (run `make models-nomic`)",
            path.display()
        )
    })?;
    let content = gguf_file::Content::read(&mut file)
        .with_context(|| format!("{} is not a GGUF file", path.display()))?;
    let meta = |key: &str| {
        content
            .metadata
            .get(key)
            .with_context(|| format!("{} lacks {key}", path.display()))
    };
    let architecture = meta("general.architecture")?.to_string()?.clone();
    if architecture != "nomic-bert" {
        bail!(
            "{} is a {architecture} model, not nomic-bert",
            path.display()
        );
    }
    let number = |key: &str| -> anyhow::Result<usize> {
        Ok(meta(&format!("nomic-bert.{key}"))?.to_u32()? as usize)
    };
    let mut tensors = HashMap::new();
    for name in content.tensor_infos.keys() {
        let Some(candle) = candle_name(name) else {
            bail!("{} holds an unexpected tensor {name}", path.display());
        };
        let tensor = content
            .tensor(&mut file, name, device)?
            .dequantize(device)?;
        tensors.insert(candle, tensor);
    }
    let vocab = tensors
        .get("embeddings.word_embeddings.weight")
        .context("no token embeddings")?
        .dim(0)?;
    let config = Config {
        vocab_size: vocab,
        n_embd: number("embedding_length")?,
        n_head: number("attention.head_count")?,
        n_layer: number("block_count")?,
        n_inner: number("feed_forward_length")?,
        n_positions: MAX_TOKENS,
        layer_norm_epsilon: meta("nomic-bert.attention.layer_norm_epsilon")?.to_f32()? as f64,
        rotary_emb_base: meta("nomic-bert.rope.freq_base")?.to_f32()? as f64,
        ..Config::default()
    };
    Ok((tensors, config))
}
