//! The real MiniLM embedder reproduces the model card's similarities.

use docent::embed::Embedder;
use docent::index::dot;

use crate::helpers::embedder;

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
