//! The in-process keyword index: BM25 over chunk texts, so exact terms (error codes, flag
//! names, product names) are found even when the embedder misses them. Derived data, like
//! the vector index: built from the stored chunks when a bot is first queried.
//!
//! Tokens are lower-cased alphanumeric runs, Snowball-stemmed (English), minus a short
//! stopword list; a run joined by `-`, `_`, `.` or `::` (`max-depth`, `snake_case`,
//! `std::fs`) is also kept whole, so the exact spelling scores above its parts.

use std::collections::HashMap;

use rust_stemmers::{Algorithm, Stemmer};

/// BM25 parameters (Robertson's defaults; on nq_conflicts they beat k1 0.9 / b 0.4 and
/// k1 1.5 / b 0.9).
const K1: f32 = 1.2;
const B: f32 = 0.75;

pub struct KeywordIndex {
    chunk_ids: Vec<u64>,
    doc_len: Vec<u32>,
    avg_len: f32,
    /// Term → (document index, term frequency), by document index.
    postings: HashMap<String, Vec<(u32, u32)>>,
}

impl KeywordIndex {
    /// Builds the index from (chunk id, text) pairs.
    pub fn build(entries: &[(u64, String)]) -> KeywordIndex {
        let stemmer = Stemmer::create(Algorithm::English);
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut doc_len = Vec::with_capacity(entries.len());
        for (doc, (_, text)) in entries.iter().enumerate() {
            let tokens = tokenize(&stemmer, text);
            doc_len.push(tokens.len() as u32);
            let mut counts: HashMap<String, u32> = HashMap::new();
            for token in tokens {
                *counts.entry(token).or_default() += 1;
            }
            for (term, tf) in counts {
                postings.entry(term).or_default().push((doc as u32, tf));
            }
        }
        let total: u64 = doc_len.iter().map(|&l| u64::from(l)).sum();
        let avg_len = if doc_len.is_empty() {
            1.0
        } else {
            (total as f32 / doc_len.len() as f32).max(1.0)
        };
        KeywordIndex {
            chunk_ids: entries.iter().map(|(id, _)| *id).collect(),
            doc_len,
            avg_len,
            postings,
        }
    }

    pub fn len(&self) -> usize {
        self.chunk_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunk_ids.is_empty()
    }

    /// The `k` best chunks for `query` by BM25, best first: (chunk id, score).
    pub fn search(&self, query: &str, k: usize) -> Vec<(u64, f32)> {
        if self.chunk_ids.is_empty() || k == 0 {
            return Vec::new();
        }
        let stemmer = Stemmer::create(Algorithm::English);
        let mut terms = tokenize(&stemmer, query);
        terms.sort();
        terms.dedup();
        let n = self.chunk_ids.len() as f32;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for term in &terms {
            let Some(list) = self.postings.get(term) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(doc, tf) in list {
                let tf = tf as f32;
                let len = self.doc_len[doc as usize] as f32;
                let norm = K1 * (1.0 - B + B * len / self.avg_len);
                *scores.entry(doc).or_default() += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let mut hits: Vec<(u32, f32)> = scores.into_iter().collect();
        let k = k.min(hits.len());
        if k == 0 {
            return Vec::new();
        }
        hits.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.into_iter()
            .map(|(doc, score)| (self.chunk_ids[doc as usize], score))
            .collect()
    }
}

/// Words too common to say anything about a passage.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "does", "did", "for",
    "from", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no",
    "not", "of", "on", "or", "our", "so", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "to", "was", "we", "were", "what", "when", "where", "which", "who", "whom",
    "why", "will", "with", "you", "your",
];

/// Index and query terms of `text`.
fn tokenize(stemmer: &Stemmer, text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut out = Vec::new();
    let mut compound = String::new();
    let mut parts = 0;
    let mut word = String::new();
    let mut chars = lower.chars().peekable();
    let flush_word = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            if !STOPWORDS.contains(&word.as_str()) {
                out.push(stemmer.stem(word).into_owned());
            }
            word.clear();
        }
    };
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() {
            word.push(c);
            compound.push(c);
            continue;
        }
        let joiner = matches!(c, '-' | '_' | '.' | ':')
            && !compound.is_empty()
            && chars
                .peek()
                .is_some_and(|n| n.is_alphanumeric() || *n == ':');
        if !word.is_empty() {
            parts += 1;
        }
        flush_word(&mut word, &mut out);
        if joiner {
            compound.push(c);
        } else {
            if parts > 1 {
                out.push(compound.trim_matches(':').to_string());
            }
            compound.clear();
            parts = 0;
        }
    }
    if !word.is_empty() {
        parts += 1;
    }
    flush_word(&mut word, &mut out);
    if parts > 1 {
        out.push(compound.trim_matches(':').to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        tokenize(&Stemmer::create(Algorithm::English), text)
    }

    #[test]
    fn tokens_are_stemmed_words_plus_whole_compounds() {
        assert_eq!(tokens("The kettles are boiling"), ["kettl", "boil"]);
        assert_eq!(
            tokens("use --max-depth now"),
            ["use", "max", "depth", "max-depth", "now"]
        );
        assert_eq!(
            tokens("std::fs::read, snake_case."),
            [
                "std",
                "fs",
                "read",
                "std::fs::read",
                "snake",
                "case",
                "snake_case"
            ]
        );
        assert_eq!(tokens("Error E0277!"), ["error", "e0277"]);
    }

    #[test]
    fn bm25_ranks_the_exact_term_first_and_rarer_terms_higher() {
        let index = KeywordIndex::build(&[
            (
                10,
                "The kettle shows error E42 when the water is low.".into(),
            ),
            (
                11,
                "Error messages appear on the display of every kettle.".into(),
            ),
            (12, "Descaling keeps the kettle quiet.".into()),
        ]);
        let hits = index.search("what does E42 mean", 3);
        assert_eq!(hits[0].0, 10);
        assert_eq!(hits.len(), 1, "only one chunk has E42: {hits:?}");
        let hits = index.search("kettle error", 3);
        assert_eq!(hits.len(), 3);
        assert!(hits[0].0 == 10 || hits[0].0 == 11);
        assert_eq!(hits[2].0, 12, "{hits:?}");
        assert!(index.search("nothing matches", 3).is_empty());
    }
}
