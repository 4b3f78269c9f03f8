//! HNSW recall against exact search, with the production parameters, on real embeddings.

use docent::embed::Embedder;
use docent::index::{VectorIndex, exact_search, recall_at_k};

use crate::helpers::embedder;

/// Varied sentences from templates: real MiniLM vectors with realistic neighbourhoods.
pub fn sentences(n: usize, seed: u64) -> Vec<String> {
    let subjects = [
        "The kettle",
        "A customer",
        "The crawler",
        "Our team",
        "The robot",
        "My neighbour",
        "The river",
        "A student",
        "The server",
        "The chef",
        "An old map",
        "The garden",
    ];
    let verbs = [
        "boils",
        "returns",
        "indexes",
        "paints",
        "repairs",
        "describes",
        "measures",
        "ignores",
        "follows",
        "celebrates",
        "orders",
        "cleans",
    ];
    let objects = [
        "the water",
        "a broken lamp",
        "every page on the site",
        "the winter festival",
        "three red apples",
        "the legal documents",
        "a quiet mountain village",
        "the network cable",
        "fresh bread",
        "a forgotten password",
        "the stadium lights",
        "ancient coins",
    ];
    let tails = [
        "before dawn.",
        "with great care.",
        "every Tuesday.",
        "in under a minute.",
        "despite the rain.",
        "for the first time.",
        "without any help.",
        "near the harbour.",
        "after the meeting.",
        "at a steady pace.",
    ];
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = std::collections::HashSet::new();
    std::iter::repeat_with(|| {
        format!(
            "{} {} {} {}",
            subjects[rng.usize(..subjects.len())],
            verbs[rng.usize(..verbs.len())],
            objects[rng.usize(..objects.len())],
            tails[rng.usize(..tails.len())]
        )
    })
    .filter(|s| seen.insert(s.clone()))
    .take(n)
    .collect()
}

#[test]
fn hnsw_recall_at_10_is_at_least_098_against_exact_search() {
    let model = embedder();
    let corpus = sentences(3000, 1);
    let refs: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let vectors = model.embed(&refs).unwrap();
    let entries: Vec<(u64, Vec<f32>)> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i as u64, v))
        .collect();
    let index = VectorIndex::build(&entries);

    let queries = sentences(200, 2);
    let query_refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let query_vectors = model.embed(&query_refs).unwrap();
    let recall: f64 = query_vectors
        .iter()
        .map(|q| recall_at_k(&exact_search(&entries, q, 10), &index.search(q, 10)))
        .sum::<f64>()
        / query_vectors.len() as f64;
    assert!(recall >= 0.98, "recall@10 = {recall:.4}");
}
