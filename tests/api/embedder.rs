//! The real MiniLM embedder reproduces the model card's similarities and candle's
//! reference BERT.

use docent::embed::{CandleMiniLm, Embedder};
use docent::index::dot;

use crate::helpers::{embedder, models_dir};

#[test]
fn minilm_reproduces_the_model_card_similarities() {
    let model = embedder();
    let v = model
        .embed(&[
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
        ])
        .unwrap();
    let round = |x: f32| (x * 1000.0).round() / 1000.0;
    assert_eq!(round(dot(&v[0], &v[1])), 0.666);
    assert_eq!(round(dot(&v[0], &v[2])), 0.105);
    assert_eq!(round(dot(&v[1], &v[2])), 0.141);
    assert_eq!(v[0].len(), 384);
}

#[test]
fn batched_and_single_embeddings_agree_despite_padding() {
    let model = embedder();
    let texts = [
        "short",
        "a much longer sentence that needs padding for the short one in the same batch",
    ];
    let batched = model.embed(&texts).unwrap();
    for (text, vector) in texts.iter().zip(&batched) {
        let single = model.embed(&[text]).unwrap().pop().unwrap();
        assert!(dot(&single, vector) > 0.9999, "{text}");
    }
}

#[test]
fn long_input_is_truncated_not_rejected() {
    let model = embedder();
    let long = "kettle ".repeat(2000);
    let v = model.embed(&[&long]).unwrap();
    assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-4);
}

#[test]
fn packed_encoder_matches_candles_bert_on_mixed_batches() {
    let model = embedder();
    let reference = CandleMiniLm::load(&models_dir().join("all-MiniLM-L6-v2")).unwrap();
    let long = "The kettle's base has a 1.7 litre capacity and boils in four minutes. ".repeat(40);
    let mut texts: Vec<String> = vec![
        "x".into(),
        "How do I descale my kettle?".into(),
        "Ünïcödé, emoji 🫖 and CJK 茶壶 in one line".into(),
        long,
        "error E42: the lid sensor reports open while the lid is closed".into(),
    ];
    // More than one batch, in an order that mixes lengths within each batch.
    for i in 0..70 {
        texts.push(format!(
            "Passage {i}: {}",
            "warranty terms apply ".repeat(i % 13 + 1)
        ));
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for threads in [1, 2, 3] {
        let packed = docent::embed::MiniLm::load(&models_dir().join("all-MiniLM-L6-v2"))
            .unwrap()
            .with_threads(threads)
            .embed(&refs)
            .unwrap();
        let want = reference.embed(&refs).unwrap();
        assert_eq!(packed.len(), want.len());
        for ((text, a), b) in refs.iter().zip(&packed).zip(&want) {
            let cos = dot(a, b);
            assert!(cos > 0.99999, "{threads} threads, {text:.40}: cosine {cos}");
        }
    }
    // And the shared instance agrees with itself one text at a time.
    let single = model.embed(&refs[3..4]).unwrap();
    assert!(dot(&single[0], &reference.embed(&refs[3..4]).unwrap()[0]) > 0.99999);
}
