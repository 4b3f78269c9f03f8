//! nomic-embed-text-v1.5 from its GGUF: docent's vectors against llama.cpp's own nomic-bert
//! on the same file (an independent implementation: its graph, its RoPE, its pooling), with
//! the task prefixes the model card prescribes, and Matryoshka cuts as the card computes
//! them.

use std::sync::OnceLock;

use docent::embed::{CandleNomic, DOCUMENT_PREFIX, Embedder, Nomic, QUERY_PREFIX};
use docent::index::dot;

use crate::helpers::models_dir;
use crate::remote::Engine;

/// The packed model, loaded once per test process; other widths share its weights.
fn nomic(dim: usize) -> Nomic {
    static MODEL: OnceLock<Nomic> = OnceLock::new();
    MODEL
        .get_or_init(|| Nomic::load(&gguf(), &models_dir().join("all-MiniLM-L6-v2"), 768).unwrap())
        .at_width(dim)
        .unwrap()
}

fn gguf() -> std::path::PathBuf {
    models_dir().join("nomic-embed-text-v1.5.f16.gguf")
}

/// The model card's example, and passages like a site's.
const DOCUMENTS: [&str; 4] = [
    "TSNE is a dimensionality reduction algorithm created by Laurens van Der Maaten",
    "Kettles may be returned within 45 days of delivery.",
    "The Zephyr Pro has a two-year warranty and a 1.7 litre tank.",
    "señor café: ünïcode survives",
];
const QUERIES: [&str; 3] = [
    "What is TSNE?",
    "How long do I have to return a kettle?",
    "Who is Laurens van der Maaten?",
];

fn prefixed(prefix: &str, texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| format!("{prefix}{t}")).collect()
}

/// The card's Matryoshka cut of a full vector: layer norm, the first `dim`, L2.
fn cut(full: &[f32], dim: usize) -> Vec<f32> {
    let n = full.len() as f32;
    let mean = full.iter().sum::<f32>() / n;
    let var = full.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n;
    let normed: Vec<f32> = full[..dim]
        .iter()
        .map(|x| (x - mean) / (var + 1e-5).sqrt())
        .collect();
    let norm = normed.iter().map(|x| x * x).sum::<f32>().sqrt();
    normed.iter().map(|x| x / norm).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn nomic_matches_llama_cpps_nomic_bert_on_the_same_gguf() {
    let engine = tokio::task::spawn_blocking(Engine::nomic).await.unwrap();
    let url = format!("{}/v1/embeddings", engine.url());
    let texts: Vec<String> = prefixed(DOCUMENT_PREFIX, &DOCUMENTS)
        .into_iter()
        .chain(prefixed(QUERY_PREFIX, &QUERIES))
        .collect();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reply: serde_json::Value = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({"input": texts}))
        .timeout(std::time::Duration::from_secs(120))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let oracle: Vec<Vec<f32>> = reply["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"))
        .iter()
        .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
        .collect();
    assert_eq!(oracle.len(), texts.len());
    let (docs, queries, short) = tokio::task::spawn_blocking(|| {
        let model = nomic(768);
        assert_eq!(
            model.id().unwrap().to_string(),
            "nomic-embed-text-v1.5 (768 dimensions)"
        );
        (
            model.embed(&DOCUMENTS).unwrap(),
            model.embed_queries(&QUERIES).unwrap(),
            nomic(256).embed(&DOCUMENTS).unwrap(),
        )
    })
    .await
    .unwrap();
    // Each vector is llama.cpp's, to float precision (the f16 weights are read alike).
    for (i, mine) in docs.iter().chain(&queries).enumerate() {
        assert_eq!(mine.len(), 768);
        let agreement = dot(mine, &oracle[i]);
        assert!(agreement > 0.9999, "{}: cosine {agreement}", texts[i]);
    }
    // The Matryoshka cut is the card's recipe applied to the full vector.
    for (i, mine) in short.iter().enumerate() {
        assert_eq!(mine.len(), 256);
        let agreement = dot(mine, &cut(&oracle[i], 256));
        assert!(agreement > 0.9999, "{}: cosine {agreement}", DOCUMENTS[i]);
    }
    // Queries find their passages: the prefixes are what the model was trained with.
    let best = |q: &[f32]| {
        (0..docs.len())
            .max_by(|&a, &b| dot(q, &docs[a]).total_cmp(&dot(q, &docs[b])))
            .unwrap()
    };
    assert_eq!(
        queries.iter().map(|q| best(q)).collect::<Vec<_>>(),
        [0, 1, 0]
    );
}

/// docent's packed encoder (rotary angles per packed row, SwiGLU, sentences split over
/// threads) gives candle-transformers' nomic-bert's vectors, for texts of very different
/// lengths in one batch (up to the 512-token cut, where the rotary angles are largest).
#[test]
fn the_packed_encoder_matches_candles_nomic_bert() {
    let long = "The warranty covers parts and labour for two years from delivery. ".repeat(50);
    let medium = "Kettles may be returned within 45 days. ".repeat(8);
    let texts: Vec<&str> = DOCUMENTS
        .iter()
        .copied()
        .chain([long.as_str(), medium.as_str(), "a", "Zephyr?"])
        .collect();
    let reference =
        CandleNomic::load(&gguf(), &models_dir().join("all-MiniLM-L6-v2"), 512).unwrap();
    let want = (
        reference.embed(&texts).unwrap(),
        reference.embed_queries(&QUERIES).unwrap(),
    );
    drop(reference);
    for threads in [1, 3] {
        let packed = nomic(512).with_threads(threads);
        let got = (
            packed.embed(&texts).unwrap(),
            packed.embed_queries(&QUERIES).unwrap(),
        );
        let pairs = got.0.iter().zip(&want.0).chain(got.1.iter().zip(&want.1));
        for (i, (mine, theirs)) in pairs.enumerate() {
            assert_eq!(mine.len(), 512);
            let agreement = dot(mine, theirs);
            assert!(
                agreement > 0.9999,
                "text {i}, {threads} threads: cosine {agreement}"
            );
        }
    }
}
