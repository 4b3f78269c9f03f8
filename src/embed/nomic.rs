//! nomic-embed-text-v1.5 from its nomic-bert GGUF, on candle-transformers' `NomicBertModel`:
//! the GGUF's tensors renamed to candle's, MiniLM's WordPiece tokenizer (the GGUF's
//! vocabulary is the same, id for id), the task prefixes the model was trained with
//! (`search_document: ` for passages, `search_query: ` for questions), mean pooling, and
//! Matryoshka truncation to 512 or 256 dimensions (layer norm, cut, L2) when asked.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::nomic_bert::{Config, NomicBertModel};

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

/// nomic-embed-text-v1.5 at `dim` dimensions.
pub struct Nomic {
    model: NomicBertModel,
    tokenizers: Tokenizers,
    device: Device,
    dim: usize,
}

impl Nomic {
    /// Loads the GGUF at `gguf` and the WordPiece tokenizer in `tokenizer_dir` (MiniLM's
    /// folder), cutting vectors to `dim` (768, 512 or 256).
    pub fn load(gguf: &Path, tokenizer_dir: &Path, dim: usize) -> anyhow::Result<Nomic> {
        if !NOMIC_DIMS.contains(&dim) {
            bail!("nomic-embed-text-v1.5 gives 768, 512 or 256 dimensions, not {dim}");
        }
        let device = Device::Cpu;
        let (tensors, config) = read_gguf(gguf, &device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model =
            NomicBertModel::load(vb, &config).context("failed to load nomic-embed-text-v1.5")?;
        let tokenizers = Tokenizers::with_limit(tokenizer_dir, MAX_TOKENS)?;
        Ok(Nomic {
            model,
            tokenizers,
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
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let (ids, mask) = padded(&self.tokenizers.encode(texts)?, &self.device)?;
        let hidden = self.model.forward(&ids, None, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let pooled = hidden
            .broadcast_mul(&mask)?
            .sum(1)?
            .broadcast_div(&mask.sum(1)?)?;
        let pooled = if self.dim < 768 {
            // The model card's Matryoshka recipe: layer norm without weights, cut, L2.
            let mean = pooled.mean_keepdim(1)?;
            let centred = pooled.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(1)?;
            centred
                .broadcast_div(&(var + 1e-5)?.sqrt()?)?
                .narrow(1, 0, self.dim)?
        } else {
            pooled
        };
        let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
        Ok(pooled.broadcast_div(&norms)?.to_vec2::<f32>()?)
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
        self.tokenizers.token_spans(text)
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
