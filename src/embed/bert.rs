//! The BERT encoder's forward pass on the CPU, built for embedding throughput.
//!
//! candle's `BertModel` (kept as the reference in `embed::CandleMiniLm`) pads every
//! sentence to the batch's longest, runs each element-wise op as its own single-threaded
//! pass over fresh tensors, and computes GELU's erf through scalar libm. This encoder does
//! the same arithmetic without that overhead:
//! - a batch's tokens are packed end to end, so no compute is spent on padding: every
//!   layer but attention is per token, and attention runs per sentence on its real length;
//! - the four matmuls of a layer go to `gemm` (AVX-512 where the CPU has it); residual adds,
//!   layer norms, GELU and softmax are fused passes over one buffer, vectorised by the
//!   compiler for the host's SIMD level (chosen at run time);
//! - the sentences of a batch are split into one group per core, each group running the
//!   whole forward pass on its own thread with single-threaded matmuls: no synchronisation
//!   between layers.
//!
//! Numerics match the reference to float rounding (tested in `tests/api/embedder.rs`).

use std::path::Path;

use anyhow::{Context, bail};
use candle_core::Device;
use candle_core::safetensors::MmapedSafetensors;

/// The shapes an encoder needs from the model's `config.json`.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub max_positions: usize,
    pub eps: f32,
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// A dense layer in PyTorch's layout: `weight` is `[out, in]`, row-major; nomic-bert's
/// layers have no bias.
struct Linear {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    inputs: usize,
    outputs: usize,
}

/// How the encoder knows where a token stands: BERT's learned table added to the
/// embeddings, or rotary angles turning each head's queries and keys (nomic-bert, GPT-NeoX
/// style: the head's first half paired with its second).
enum Positions {
    /// `[max_positions × hidden]`.
    Learned(Vec<f32>),
    /// `cos` and `sin` of position × frequency, `[max_positions × head_dim / 2]`.
    Rotary { cos: Vec<f32>, sin: Vec<f32> },
}

/// The feed-forward half of a layer.
enum Ffn {
    /// BERT: `output(gelu(intermediate(x)))`.
    Gelu {
        intermediate: Linear,
        output: Linear,
    },
    /// nomic-bert: `down(up(x) * silu(gate(x)))`, with `up` and `gate` stacked in one
    /// matmul (up's rows first).
    SwiGlu { up_gate: Linear, down: Linear },
}

struct Layer {
    /// Query, key and value projections stacked: one matmul makes all three.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    ffn: Ffn,
    output_norm: Norm,
}

pub struct Bert {
    shape: Shape,
    word: Vec<f32>,
    positions: Positions,
    /// Token type 0's embedding: sentence embedders use only the first segment.
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

impl Bert {
    /// Reads the weights from a BERT safetensors file (names as in Hugging Face's
    /// `BertModel`, with or without a `bert.` prefix).
    pub fn load(path: &Path, shape: Shape) -> anyhow::Result<Bert> {
        if !path.is_file() {
            bail!("missing {} (run `make models`)", path.display());
        }
        if shape.heads == 0 || !shape.hidden.is_multiple_of(shape.heads) {
            bail!(
                "hidden size {} is not a multiple of {} heads",
                shape.hidden,
                shape.heads
            );
        }
        // SAFETY: the weights file is written once by `make models` and never modified in
        // place while docent runs; every tensor is copied out before the map is dropped.
        let st = unsafe { MmapedSafetensors::new(path) }
            .with_context(|| format!("failed to map {}", path.display()))?;
        let prefix = if st.get("bert.embeddings.word_embeddings.weight").is_ok() {
            "bert."
        } else {
            ""
        };
        let get = |name: &str, dims: &[usize]| -> anyhow::Result<Vec<f32>> {
            let full = format!("{prefix}{name}");
            let t = st
                .load(&full, &Device::Cpu)
                .with_context(|| format!("embedder weights: missing {full}"))?;
            if t.dims() != dims {
                bail!(
                    "embedder weights: {full} has shape {:?}, expected {dims:?}",
                    t.dims()
                );
            }
            Ok(t.to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        let h = shape.hidden;
        let norm = |name: &str| -> anyhow::Result<Norm> {
            Ok(Norm {
                weight: get(&format!("{name}.weight"), &[h])?,
                bias: get(&format!("{name}.bias"), &[h])?,
            })
        };
        let linear = |name: &str, outputs: usize, inputs: usize| -> anyhow::Result<Linear> {
            Ok(Linear {
                weight: get(&format!("{name}.weight"), &[outputs, inputs])?,
                bias: Some(get(&format!("{name}.bias"), &[outputs])?),
                inputs,
                outputs,
            })
        };
        let word_rows = st
            .get(&format!("{prefix}embeddings.word_embeddings.weight"))
            .map(|v| v.shape().first().copied().unwrap_or(0))
            .context("embedder weights: missing word embeddings")?;
        let token_types = get("embeddings.token_type_embeddings.weight", &[2, h])
            .or_else(|_| get("embeddings.token_type_embeddings.weight", &[1, h]))?;
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let p = format!("encoder.layer.{i}");
            let q = linear(&format!("{p}.attention.self.query"), h, h)?;
            let k = linear(&format!("{p}.attention.self.key"), h, h)?;
            let v = linear(&format!("{p}.attention.self.value"), h, h)?;
            let qkv = Linear {
                weight: [q.weight, k.weight, v.weight].concat(),
                bias: Some(
                    [q.bias, k.bias, v.bias]
                        .into_iter()
                        .flatten()
                        .flatten()
                        .collect(),
                ),
                inputs: h,
                outputs: 3 * h,
            };
            layers.push(Layer {
                qkv,
                attention_out: linear(&format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                ffn: Ffn::Gelu {
                    intermediate: linear(
                        &format!("{p}.intermediate.dense"),
                        shape.intermediate,
                        h,
                    )?,
                    output: linear(&format!("{p}.output.dense"), h, shape.intermediate)?,
                },
                output_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(Bert {
            shape,
            word: get("embeddings.word_embeddings.weight", &[word_rows, h])?,
            positions: Positions::Learned(get(
                "embeddings.position_embeddings.weight",
                &[shape.max_positions, h],
            )?),
            token_type: token_types[..h].to_vec(),
            embedding_norm: norm("embeddings.LayerNorm")?,
            layers,
        })
    }

    /// Builds nomic-bert from its tensors under candle-transformers' names (`take` hands
    /// each one over as f32 after checking its shape): no position table but rotary angles
    /// of base `rope_base`, no biases in the matmuls, SwiGLU feed-forward.
    pub fn nomic(
        shape: Shape,
        vocab: usize,
        rope_base: f32,
        mut take: impl FnMut(&str, &[usize]) -> anyhow::Result<Vec<f32>>,
    ) -> anyhow::Result<Bert> {
        let (h, inter) = (shape.hidden, shape.intermediate);
        if shape.heads == 0
            || !h.is_multiple_of(shape.heads)
            || !(h / shape.heads).is_multiple_of(2)
        {
            bail!(
                "hidden size {h} does not split into {} even heads",
                shape.heads
            );
        }
        let norm = |take: &mut Take, name: &str| {
            Ok::<_, anyhow::Error>(Norm {
                weight: take(&format!("{name}.weight"), &[h])?,
                bias: take(&format!("{name}.bias"), &[h])?,
            })
        };
        let word = take("embeddings.word_embeddings.weight", &[vocab, h])?;
        let token_types = take("embeddings.token_type_embeddings.weight", &[2, h])?;
        let embedding_norm = norm(&mut take, "emb_ln")?;
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let p = format!("encoder.layers.{i}");
            let mut linear = |name: &str, outputs: usize, inputs: usize| {
                Ok::<_, anyhow::Error>(Linear {
                    weight: take(&format!("{p}.{name}.weight"), &[outputs, inputs])?,
                    bias: None,
                    inputs,
                    outputs,
                })
            };
            let qkv = linear("attn.Wqkv", 3 * h, h)?;
            let attention_out = linear("attn.out_proj", h, h)?;
            let up = linear("mlp.fc11", inter, h)?;
            let gate = linear("mlp.fc12", inter, h)?;
            let down = linear("mlp.fc2", h, inter)?;
            let up_gate = Linear {
                weight: [up.weight, gate.weight].concat(),
                bias: None,
                inputs: h,
                outputs: 2 * inter,
            };
            layers.push(Layer {
                qkv,
                attention_out,
                attention_norm: norm(&mut take, &format!("{p}.norm1"))?,
                ffn: Ffn::SwiGlu { up_gate, down },
                output_norm: norm(&mut take, &format!("{p}.norm2"))?,
            });
        }
        Ok(Bert {
            shape,
            word,
            positions: rotary(shape, rope_base),
            token_type: token_types[..h].to_vec(),
            embedding_norm,
            layers,
        })
    }

    pub fn hidden(&self) -> usize {
        self.shape.hidden
    }

    /// Mean-pooled, L2-normalised embeddings of token-id sequences (special tokens
    /// included), spread over up to `threads` threads.
    pub fn embed(&self, sequences: &[Vec<u32>], threads: usize) -> anyhow::Result<Vec<Vec<f32>>> {
        let vocab = self.word.len() / self.shape.hidden;
        for ids in sequences {
            if ids.is_empty() || ids.len() > self.shape.max_positions {
                bail!(
                    "embedder input of {} tokens (must be 1..={})",
                    ids.len(),
                    self.shape.max_positions
                );
            }
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                bail!("token id {bad} outside the embedder's vocabulary of {vocab}");
            }
        }
        let groups = split_balanced(sequences, threads.max(1));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); sequences.len()];
        if groups.len() <= 1 {
            let all: Vec<usize> = (0..sequences.len()).collect();
            for (i, v) in all.iter().zip(self.run_group(sequences, &all)) {
                out[*i] = v;
            }
            return Ok(out);
        }
        let results: Vec<(Vec<usize>, Vec<Vec<f32>>)> =
            std::thread::scope(|scope| -> anyhow::Result<_> {
                let handles: Vec<_> = groups
                    .into_iter()
                    .map(|group| {
                        std::thread::Builder::new()
                            .name("docent-embed".into())
                            .spawn_scoped(scope, move || {
                                let vectors = self.run_group(sequences, &group);
                                (group, vectors)
                            })
                    })
                    .collect::<Result<_, _>>()?;
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .map_err(|_| anyhow::anyhow!("an embedding thread panicked"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })?;
        for (group, vectors) in results {
            for (i, v) in group.into_iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Runs the sentences `group` (indices into `sequences`) through the encoder on this
    /// thread, with the SIMD level the CPU offers.
    fn run_group(&self, sequences: &[Vec<u32>], group: &[usize]) -> Vec<Vec<f32>> {
        let seqs: Vec<&[u32]> = group.iter().map(|&i| sequences[i].as_slice()).collect();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU supports every feature the function is compiled for.
                return unsafe { forward_avx512(self, &seqs) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: as above.
                return unsafe { forward_avx2(self, &seqs) };
            }
        }
        forward(self, &seqs)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn forward_avx512(bert: &Bert, seqs: &[&[u32]]) -> Vec<Vec<f32>> {
    forward(bert, seqs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx2(bert: &Bert, seqs: &[&[u32]]) -> Vec<Vec<f32>> {
    forward(bert, seqs)
}

/// Hands over a named tensor as f32 after checking its shape.
type Take<'a> = dyn FnMut(&str, &[usize]) -> anyhow::Result<Vec<f32>> + 'a;

/// Rotary tables for every position: angle `p · base^(-2i / head_dim)` for the head's
/// `head_dim / 2` pairs, computed in f64.
fn rotary(shape: Shape, base: f32) -> Positions {
    let head_dim = shape.hidden / shape.heads;
    let half = head_dim / 2;
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in 0..shape.max_positions {
        for i in 0..half {
            let frequency = (base as f64).powf(-2.0 * i as f64 / head_dim as f64);
            let angle = p as f64 * frequency;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    Positions::Rotary { cos, sin }
}

/// Splits sentences into up to `parts` groups of about equal token count (longest first,
/// each to the lightest group).
fn split_balanced(sequences: &[Vec<u32>], parts: usize) -> Vec<Vec<usize>> {
    let parts = parts.min(sequences.len()).max(1);
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].len()));
    let mut groups: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); parts];
    for i in order {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(tokens, _)| *tokens)
            .expect("at least one group");
        lightest.0 += sequences[i].len();
        lightest.1.push(i);
    }
    groups
        .into_iter()
        .map(|(_, g)| g)
        .filter(|g| !g.is_empty())
        .collect()
}

/// The whole encoder for one group of sentences, packed: token `t` of sentence `s` is row
/// `offsets[s] + t` of every activation matrix.
#[inline(always)]
fn forward(bert: &Bert, seqs: &[&[u32]]) -> Vec<Vec<f32>> {
    let Shape {
        hidden: h,
        heads,
        intermediate: inter,
        eps,
        ..
    } = bert.shape;
    let head_dim = h / heads;
    let mut offsets = Vec::with_capacity(seqs.len() + 1);
    offsets.push(0usize);
    for s in seqs {
        offsets.push(offsets.last().copied().unwrap_or(0) + s.len());
    }
    let m = *offsets.last().unwrap_or(&0);
    let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(0);

    let mut x = embeddings(bert, seqs, &offsets);
    let mut qkv = vec![0f32; m * 3 * h];
    let mut context = vec![0f32; m * h];
    let mut attended = vec![0f32; m * h];
    let wide_rows = match bert.layers.first().map(|l| &l.ffn) {
        Some(Ffn::SwiGlu { .. }) => 2 * inter,
        _ => inter,
    };
    let mut wide = vec![0f32; m * wide_rows];
    let mut scores = vec![0f32; longest * longest];
    let scale = 1.0 / (head_dim as f32).sqrt();

    for layer in &bert.layers {
        linear(&x, m, &layer.qkv, &mut qkv);
        if let Positions::Rotary { cos, sin } = &bert.positions {
            rotate_rows(&mut qkv, seqs, &offsets, (h, head_dim), (cos, sin));
        }
        for s in 0..seqs.len() {
            let (start, n) = (offsets[s], offsets[s + 1] - offsets[s]);
            for head in 0..heads {
                let q = qkv[start * 3 * h + head * head_dim..].as_ptr();
                let k = qkv[start * 3 * h + h + head * head_dim..].as_ptr();
                let v = qkv[start * 3 * h + 2 * h + head * head_dim..].as_ptr();
                let sc = &mut scores[..n * n];
                // scores (n × n) = Q (n × d) · Kᵀ (d × n) · scale
                // SAFETY: every pointer, stride and extent stays inside its buffer: Q, K and
                // V rows are 3h apart and hold `head_dim` values from their offsets.
                unsafe {
                    gemm::gemm(
                        n,
                        n,
                        head_dim,
                        sc.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        q,
                        1,
                        (3 * h) as isize,
                        k,
                        (3 * h) as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for row in sc.chunks_exact_mut(n) {
                    softmax(row);
                }
                let ctx = context[start * h + head * head_dim..].as_mut_ptr();
                // context (n × d) = P (n × n) · V (n × d)
                // SAFETY: as above; the destination rows are h apart.
                unsafe {
                    gemm::gemm(
                        n,
                        head_dim,
                        n,
                        ctx,
                        1,
                        h as isize,
                        false,
                        sc.as_ptr(),
                        1,
                        n as isize,
                        v,
                        1,
                        (3 * h) as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        }
        linear(&context, m, &layer.attention_out, &mut attended);
        for (row, res) in attended.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
            add(row, res);
            layer_norm(row, &layer.attention_norm, eps);
        }
        feed_forward(&layer.ffn, &attended, m, &mut wide, &mut x);
        for (row, res) in x.chunks_exact_mut(h).zip(attended.chunks_exact(h)) {
            add(row, res);
            layer_norm(row, &layer.output_norm, eps);
        }
    }

    // Mean pooling over each sentence's tokens, then L2 normalisation.
    (0..seqs.len())
        .map(|s| {
            let mut pooled = vec![0f32; h];
            for row in x[offsets[s] * h..offsets[s + 1] * h].chunks_exact(h) {
                add(&mut pooled, row);
            }
            // The mean's division by the token count cancels in the normalisation.
            let norm = lane_sum(&pooled, |v| v * v).sqrt();
            if norm > 0.0 {
                pooled.iter_mut().for_each(|v| *v /= norm);
            }
            pooled
        })
        .collect()
}

/// The packed rows' embeddings: word + position (a learned table's) + token type, then
/// layer norm.
#[inline(always)]
fn embeddings(bert: &Bert, seqs: &[&[u32]], offsets: &[usize]) -> Vec<f32> {
    let h = bert.shape.hidden;
    let mut x = vec![0f32; offsets.last().copied().unwrap_or(0) * h];
    for (s, ids) in seqs.iter().enumerate() {
        for (p, &id) in ids.iter().enumerate() {
            let row = &mut x[(offsets[s] + p) * h..][..h];
            let word = &bert.word[id as usize * h..][..h];
            for i in 0..h {
                row[i] = word[i] + bert.token_type[i];
            }
            if let Positions::Learned(table) = &bert.positions {
                add(row, &table[p * h..][..h]);
            }
        }
    }
    for row in x.chunks_exact_mut(h) {
        layer_norm(row, &bert.embedding_norm, bert.shape.eps);
    }
    x
}

/// Turns every head's query and key in the packed `qkv` rows (`[q | k | v]`, `3 × hidden`
/// each) by the angles of its token's position within its sentence.
#[inline(always)]
fn rotate_rows(
    qkv: &mut [f32],
    seqs: &[&[u32]],
    offsets: &[usize],
    (hidden, head_dim): (usize, usize),
    (cos, sin): (&[f32], &[f32]),
) {
    let half = head_dim / 2;
    for (s, ids) in seqs.iter().enumerate() {
        for p in 0..ids.len() {
            let row = &mut qkv[(offsets[s] + p) * 3 * hidden..][..2 * hidden];
            let (cos, sin) = (&cos[p * half..][..half], &sin[p * half..][..half]);
            for head in row.chunks_exact_mut(head_dim) {
                rotate(head, cos, sin);
            }
        }
    }
}

/// Turns one head's query or key by its position's angles: pair `i` is the head's values
/// `i` and `i + head_dim / 2`.
#[inline(always)]
fn rotate(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let (first, second) = head.split_at_mut(cos.len());
    for (((a, b), c), s) in first.iter_mut().zip(second.iter_mut()).zip(cos).zip(sin) {
        let (x1, x2) = (*a, *b);
        *a = x1 * c - x2 * s;
        *b = x2 * c + x1 * s;
    }
}

/// `out = ffn(x)` for `m` rows, with `wide` as scratch (`m × intermediate`, twice that for
/// SwiGLU).
#[inline(always)]
fn feed_forward(ffn: &Ffn, x: &[f32], m: usize, wide: &mut [f32], out: &mut [f32]) {
    match ffn {
        Ffn::Gelu {
            intermediate,
            output,
        } => {
            let wide = &mut wide[..m * intermediate.outputs];
            linear(x, m, intermediate, wide);
            for v in wide.iter_mut() {
                *v = gelu(*v);
            }
            linear(wide, m, output, out);
        }
        Ffn::SwiGlu { up_gate, down } => {
            let inter = down.inputs;
            linear(x, m, up_gate, &mut wide[..m * 2 * inter]);
            // Row r's product goes to [r·inter, (r+1)·inter), below row r's own input at
            // [2r·inter, ...) for r ≥ 1, so rows are compacted in place, in order.
            for r in 0..m {
                let (done, rest) = wide.split_at_mut(2 * r * inter);
                let (up, gate) = rest[..2 * inter].split_at_mut(inter);
                for (u, g) in up.iter_mut().zip(gate.iter()) {
                    *u *= silu(*g);
                }
                if r > 0 {
                    done[r * inter..][..inter].copy_from_slice(up);
                }
            }
            linear(&wide[..m * inter], m, down, out);
        }
    }
}

/// `y (m × out) = x (m × in) · Wᵀ + b`.
#[inline(always)]
fn linear(x: &[f32], m: usize, layer: &Linear, y: &mut [f32]) {
    let (k, n) = (layer.inputs, layer.outputs);
    debug_assert!(x.len() >= m * k && y.len() >= m * n);
    if let Some(bias) = &layer.bias {
        for row in y[..m * n].chunks_exact_mut(n) {
            row.copy_from_slice(bias);
        }
    }
    // SAFETY: x holds m rows of k, y m rows of n, and the weight n rows of k; W is read
    // transposed through its strides (k index stride 1, n index stride k).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            layer.bias.is_some(),
            x.as_ptr(),
            1,
            k as isize,
            layer.weight.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[inline(always)]
fn add(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Sum over `LANES` partial sums: a float reduction the compiler can vectorise (a plain
/// `iter().sum()` must keep its sequential order and stays scalar).
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|&v| f(v)).sum::<f32>()
}

#[inline(always)]
fn lane_max(values: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
fn layer_norm(row: &mut [f32], norm: &Norm, eps: f32) {
    let n = row.len() as f32;
    let mean = lane_sum(row, |v| v) / n;
    let var = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
        *v = (*v - mean) * inv * w + b;
    }
}

#[inline(always)]
fn softmax(row: &mut [f32]) {
    let max = lane_max(row);
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / lane_sum(row, |v| v);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `exp(x)` for `x <= 0` (Cephes' single-precision polynomial, ~1 ulp), branch-free so
/// that loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // max/min (not clamp): a NaN input becomes -87 rather than reaching the int conversion.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(0.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // SAFETY: n is an integer in [-126, 0] (x is in [-87, 0]), so the conversion is exact.
    let n = unsafe { n.to_int_unchecked::<i32>() };
    e * f32::from_bits(((n + 127) as u32) << 23)
}

/// SiLU, `x · sigmoid(x)`, with `exp` kept on its negative domain so it vectorises.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    let e = exp(-x.abs());
    let s = 1.0 / (1.0 + e);
    x * if x >= 0.0 { s } else { e * s }
}

/// GELU with the exact erf form BERT was trained with; erf by Abramowitz & Stegun 7.1.26
/// (absolute error below 1.5e-7, f32's own resolution near 1).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let erf = (1.0 - poly * exp(-z * z)).copysign(x);
    0.5 * x * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_on_its_domain() {
        for i in 0..=8700 {
            let x = -(i as f32) / 100.0;
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= want * 2e-6 + 1e-37,
                "exp({x}) = {got}, std gives {want}"
            );
        }
        assert_eq!(exp(f32::NAN), exp(-87.0));
        assert_eq!(exp(5.0), 1.0, "the domain is x <= 0");
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        // Reference erf from a high-precision series in f64.
        fn erf64(x: f64) -> f64 {
            let mut sum = 0.0;
            let mut term = x;
            let mut n = 0.0;
            while term.abs() > 1e-17 || n < 5.0 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -x * x / n;
                if n > 200.0 {
                    break;
                }
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        for i in -600..=600 {
            let x = i as f64 / 100.0;
            let want = 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2));
            let got = gelu(x as f32) as f64;
            assert!((got - want).abs() < 2e-6, "gelu({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn groups_balance_tokens_and_cover_every_sentence() {
        let seqs: Vec<Vec<u32>> = [50usize, 10, 40, 20, 30, 5]
            .iter()
            .map(|&n| vec![1; n])
            .collect();
        let groups = split_balanced(&seqs, 2);
        assert_eq!(groups.len(), 2);
        let tokens: Vec<usize> = groups
            .iter()
            .map(|g| g.iter().map(|&i| seqs[i].len()).sum())
            .collect();
        assert!(tokens[0].abs_diff(tokens[1]) <= 10, "{tokens:?}");
        let mut all: Vec<usize> = groups.concat();
        all.sort();
        assert_eq!(all, (0..6).collect::<Vec<_>>());
        assert_eq!(split_balanced(&seqs[..1], 4).len(), 1);
    }
}
