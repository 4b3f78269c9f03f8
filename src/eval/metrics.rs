//! Quality metrics, pure functions: ranking metrics for retrieval (recall@k, MRR@k,
//! nDCG@k), SQuAD's answer normalisation and containment, percentiles, and 95% confidence
//! intervals for rates.

use std::collections::HashMap;

/// Relevance grades of one query's relevant documents (qrels), by document id.
pub type Qrels = HashMap<String, u32>;

/// The share of relevant documents among the first `k` ranked.
pub fn recall_at(ranked: &[String], relevant: &Qrels, k: usize) -> f64 {
    let wanted = relevant.values().filter(|&&g| g > 0).count();
    if wanted == 0 {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|id| relevant.get(*id).is_some_and(|&g| g > 0))
        .count();
    found as f64 / wanted as f64
}

/// 1 / rank of the first relevant document within the first `k`, else 0.
pub fn reciprocal_rank_at(ranked: &[String], relevant: &Qrels, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|id| relevant.get(id).is_some_and(|&g| g > 0))
        .map_or(0.0, |i| 1.0 / (i as f64 + 1.0))
}

/// nDCG@k with linear gains (the grade itself) and log2 discounts, as trec_eval and BEIR
/// compute it.
pub fn ndcg_at(ranked: &[String], relevant: &Qrels, k: usize) -> f64 {
    let discount = |i: usize| 1.0 / (i as f64 + 2.0).log2();
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, id)| f64::from(*relevant.get(id).unwrap_or(&0)) * discount(i))
        .sum();
    let mut grades: Vec<u32> = relevant.values().copied().filter(|&g| g > 0).collect();
    grades.sort_unstable_by(|a, b| b.cmp(a));
    let ideal: f64 = grades
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &g)| f64::from(g) * discount(i))
        .sum();
    if ideal == 0.0 { 0.0 } else { dcg / ideal }
}

/// SQuAD's answer normalisation: lower case, no punctuation, no articles (a, an, the),
/// single spaces.
pub fn normalize_answer(text: &str) -> String {
    let lower = text.to_lowercase();
    let no_punct: String = lower
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `answer`, normalised, contains one of the normalised gold answers as whole
/// words.
pub fn contains_gold(answer: &str, golds: &[String]) -> bool {
    let answer = format!(" {} ", normalize_answer(answer));
    golds.iter().any(|gold| {
        let gold = normalize_answer(gold);
        !gold.is_empty() && answer.contains(&format!(" {gold} "))
    })
}

/// The number of words in `text`.
pub fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// The value at quantile `q` (0..=1) of `values`, by nearest rank; 0 when empty.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// The Wilson score interval at 95% for `successes` out of `n`: (low, high).
pub fn wilson_interval(successes: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let (n, p) = (n as f64, successes as f64 / n as f64);
    let denominator = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denominator;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denominator;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The mean of `values` with a normal-approximation 95% interval: (mean, low, high).
pub fn mean_interval(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, mean, mean);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let half = 1.959_963_984_540_054 * (variance / n).sqrt();
    (mean, mean - half, mean + half)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn qrels(pairs: &[(&str, u32)]) -> Qrels {
        pairs.iter().map(|(id, g)| (id.to_string(), *g)).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn recall_counts_relevant_documents_in_the_first_k() {
        let ranked = ids(&["d3", "d1", "d7", "d2"]);
        let relevant = qrels(&[("d1", 1), ("d2", 1)]);
        assert!(close(recall_at(&ranked, &relevant, 1), 0.0));
        assert!(close(recall_at(&ranked, &relevant, 2), 0.5));
        assert!(close(recall_at(&ranked, &relevant, 4), 1.0));
        assert!(close(recall_at(&ranked, &qrels(&[]), 4), 0.0));
    }

    #[test]
    fn reciprocal_rank_is_one_over_the_first_hit_within_k() {
        let ranked = ids(&["d3", "d1", "d7"]);
        let relevant = qrels(&[("d1", 1), ("d7", 1)]);
        assert!(close(reciprocal_rank_at(&ranked, &relevant, 10), 0.5));
        assert!(close(reciprocal_rank_at(&ranked, &relevant, 1), 0.0));
    }

    #[test]
    fn ndcg_matches_a_hand_computed_case() {
        // Relevant d1 (grade 2) at rank 2 and d2 (grade 1) at rank 3:
        // DCG = 2/log2(3) + 1/log2(4) = 1.261859507 + 0.5; ideal = 2/1 + 1/log2(3).
        let ranked = ids(&["x", "d1", "d2"]);
        let relevant = qrels(&[("d1", 2), ("d2", 1)]);
        let dcg = 2.0 / 3f64.log2() + 0.5;
        let ideal = 2.0 + 1.0 / 3f64.log2();
        assert!(close(ndcg_at(&ranked, &relevant, 10), dcg / ideal));
        // One relevant document first: perfect.
        assert!(close(ndcg_at(&ids(&["d1"]), &qrels(&[("d1", 1)]), 10), 1.0));
        // Ranked below the cut: nothing.
        assert!(close(
            ndcg_at(&ids(&["a", "b", "d1"]), &qrels(&[("d1", 1)]), 2),
            0.0
        ));
        // Single relevant document at rank 3: 1/log2(4) = 0.5.
        assert!(close(
            ndcg_at(&ids(&["a", "b", "d1"]), &qrels(&[("d1", 1)]), 10),
            0.5
        ));
    }

    #[test]
    fn answers_are_normalised_as_squad_does() {
        assert_eq!(normalize_answer("The  Eiffel-Tower!"), "eiffel tower");
        assert!(contains_gold(
            "It was built in 1889, by Gustave Eiffel [1].",
            &["1889".into()]
        ));
        assert!(contains_gold("An apple a day", &["the apple".into()]));
        // Whole words only: "18" is not in "1889".
        assert!(!contains_gold("In 1889.", &["18".into()]));
        assert!(!contains_gold("anything", &["".into()]));
        assert_eq!(word_count(" one two  three "), 3);
    }

    #[test]
    fn percentiles_and_intervals_match_hand_computed_values() {
        let values = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert!(close(percentile(&values, 0.5), 3.0));
        assert!(close(percentile(&values, 0.95), 5.0));
        assert!(close(percentile(&values, 0.0), 1.0));
        // Wilson 95% for 8/10: (0.4902, 0.9433).
        let (low, high) = wilson_interval(8, 10);
        assert!(
            (low - 0.4902).abs() < 1e-4 && (high - 0.9433).abs() < 1e-4,
            "{low} {high}"
        );
        let (low, high) = wilson_interval(0, 10);
        assert!(close(low, 0.0) && (high - 0.2775).abs() < 1e-4, "{high}");
        // Mean 2 with sample sd 1 over 4 values: 2 ± 1.96 * 0.5.
        let (mean, low, high) = mean_interval(&[1.0, 2.0, 2.0, 3.0]);
        let half = 1.959_963_984_540_054 * (2.0f64 / 3.0 / 4.0).sqrt();
        assert!(close(mean, 2.0) && close(low, 2.0 - half) && close(high, 2.0 + half));
    }
}
