//! Grounding: the citations docent shows are checked against the sources, not taken on the
//! model's word. Pure: no I/O.
//!
//! Small models cite the wrong number or none at all. So the stream drops the model's own
//! `[n]` markers (`CitationFilter`), and once the answer is complete each sentence is
//! attributed to the source that contains its content words (`attribute`), preferring a
//! source the model itself cited. Those verified numbers are appended to the answer.

use std::collections::HashSet;

/// Share of a sentence's content words a source must contain to support it.
pub const MIN_SUPPORT: f32 = 0.5;
/// The lower bar for a source the model itself cited for the answer.
pub const MIN_HINTED_SUPPORT: f32 = 0.35;

/// Removes `[n]`-style citation markers (and the space before them) from streamed text,
/// holding back only as much as it needs to decide. Brackets that cannot be citations
/// (`vec![1, 2]`, `arr[0]`, numbers beyond the sources) are left alone.
pub struct CitationFilter {
    n_sources: usize,
    pending: String,
    /// The character before `pending`: what decides whether a bracket is attached to a word.
    last: Option<char>,
    /// Everything the model produced, markers included.
    raw: String,
}

/// Whether `[inside]`, following the character `prev`, reads as a citation of sources
/// numbered 1..=n_sources.
pub fn is_citation(prev: Option<char>, inside: &str, n_sources: usize) -> bool {
    let attached = prev.is_some_and(|c| c.is_alphanumeric() || "_!`".contains(c));
    let mut numbers = inside
        .split([',', '-', '–'])
        .map(|n| n.trim().parse::<usize>());
    !attached && numbers.all(|n| n.is_ok_and(|n| (1..=n_sources).contains(&n)))
}

impl CitationFilter {
    pub fn new(n_sources: usize) -> CitationFilter {
        CitationFilter {
            n_sources,
            pending: String::new(),
            last: None,
            raw: String::new(),
        }
    }

    /// Feeds one piece of model output; returns the text that is safe to show now.
    pub fn push(&mut self, piece: &str) -> String {
        self.raw.push_str(piece);
        self.pending.push_str(piece);
        self.drain(false)
    }

    /// Flushes what is held back at the end of generation.
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// How many sources the answer may cite.
    pub fn sources(&self) -> usize {
        self.n_sources
    }

    /// Moves `pending[..n]` to `out`.
    fn release(&mut self, n: usize, out: &mut String) {
        let text: String = self.pending.drain(..n).collect();
        if let Some(c) = text.chars().next_back() {
            self.last = Some(c);
        }
        out.push_str(&text);
    }

    fn drain(&mut self, at_end: bool) -> String {
        let mut out = String::new();
        loop {
            let Some(open) = self.pending.find('[') else {
                // Hold trailing whitespace: a citation may follow it.
                let keep = if at_end {
                    self.pending.len()
                } else {
                    self.pending.trim_end().len()
                };
                self.release(keep, &mut out);
                return out;
            };
            let inside_len = self.pending[open + 1..]
                .find(|c: char| !(c.is_ascii_digit() || " ,-–".contains(c)));
            match inside_len {
                Some(len) if self.pending[open + 1 + len..].starts_with(']') => {
                    let before = self.pending[..open].trim_end().len();
                    let prev = if open > 0 {
                        self.pending[..open].chars().next_back()
                    } else {
                        self.last
                    };
                    let inside = &self.pending[open + 1..open + 1 + len];
                    if is_citation(prev, inside, self.n_sources) {
                        // Drop the marker and the whitespace before it.
                        self.release(before, &mut out);
                        self.pending.drain(..open + 1 + len + 1 - before);
                        self.last = Some(']');
                    } else {
                        self.release(open + 1, &mut out);
                    }
                }
                // Not a marker: release through the bracket.
                Some(_) => self.release(open + 1, &mut out),
                None if at_end => {
                    let all = self.pending.len();
                    self.release(all, &mut out);
                    return out;
                }
                None => {
                    // Could still become a marker: release only what comes before it.
                    let keep = self.pending[..open].trim_end().len();
                    self.release(keep, &mut out);
                    return out;
                }
            }
        }
    }
}

/// For each sentence of `answer`, the 1-based number of the source that supports it best,
/// preferring `hinted` (the model's own citations) among those that clear `MIN_SUPPORT`.
/// Returns the distinct numbers in order of first use; empty when nothing is supported.
pub fn attribute(answer: &str, sources: &[&str], hinted: &[usize]) -> Vec<usize> {
    let source_words: Vec<HashSet<String>> =
        sources.iter().map(|s| content_words(s).collect()).collect();
    let mut cited = Vec::new();
    for sentence in sentences(answer) {
        let words: Vec<String> = content_words(sentence).collect();
        if words.is_empty() {
            continue;
        }
        let support = |i: usize| {
            words
                .iter()
                .filter(|w| source_words[i].contains(*w))
                .count() as f32
                / words.len() as f32
        };
        let supported: Vec<(usize, f32)> = (0..sources.len())
            .map(|i| (i, support(i)))
            .filter(|&(i, s)| {
                let bar = if hinted.contains(&(i + 1)) {
                    MIN_HINTED_SUPPORT
                } else {
                    MIN_SUPPORT
                };
                s >= bar
            })
            .collect();
        let best = supported
            .iter()
            .filter(|(i, _)| hinted.contains(&(i + 1)))
            .chain(supported.iter())
            .fold(None::<(usize, f32)>, |best, &(i, s)| match best {
                // A hinted source wins unless another is clearly better supported.
                Some((bi, bs)) if bs + 0.2 >= s => Some((bi, bs)),
                _ => Some((i, s)),
            });
        if let Some((i, _)) = best
            && !cited.contains(&(i + 1))
        {
            cited.push(i + 1);
        }
    }
    cited
}

fn sentences(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(['.', '!', '?', '\n'])
        .map(str::trim)
        .filter(|s| s.chars().any(char::is_alphanumeric))
}

const STOPWORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "and",
    "or",
    "but",
    "of",
    "to",
    "in",
    "on",
    "at",
    "for",
    "by",
    "with",
    "from",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "as",
    "you",
    "your",
    "we",
    "our",
    "can",
    "will",
    "do",
    "does",
    "if",
    "not",
    "no",
    "yes",
    "i",
    "my",
    "me",
    "they",
    "their",
    "there",
    "which",
    "what",
    "when",
    "how",
    "so",
    "than",
    "then",
    "has",
    "have",
    "had",
    "also",
    "any",
    "all",
    "into",
    "about",
    "according",
    "source",
    "sources",
];

/// Lowercase words and numbers that carry meaning, with a crude plural fold.
fn content_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '$' || c == '%'))
        .map(|w| w.trim_matches('.').to_lowercase())
        .filter(|w| {
            let meaningful = w.len() > 2 || w.chars().any(|c| c.is_ascii_digit());
            meaningful && !STOPWORDS.contains(&w.as_str())
        })
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if stem.len() > 3 && !stem.ends_with('s') => stem.to_string(),
            _ => w,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_all(pieces: &[&str]) -> String {
        let mut f = CitationFilter::new(5);
        let mut out: String = pieces.iter().map(|p| f.push(p)).collect();
        out.push_str(&f.finish());
        out
    }

    #[test]
    fn markers_are_removed_even_when_split_across_pieces() {
        assert_eq!(
            filter_all(&["It is 45 days", " [", "1", "]."]),
            "It is 45 days."
        );
        assert_eq!(filter_all(&["A [1][2] and B [3, 4]. C"]), "A and B. C");
        assert_eq!(
            filter_all(&["keep [this] and [x1] as is"]),
            "keep [this] and [x1] as is"
        );
        assert_eq!(filter_all(&["ends with [", "12"]), "ends with [12");
        assert_eq!(filter_all(&["let v = vec![1, 2];"]), "let v = vec![1, 2];");
        assert_eq!(
            filter_all(&["`arr[0]` or ", "arr", "[2] or [9]"]),
            "`arr[0]` or arr[2] or [9]"
        );
    }

    #[test]
    fn each_sentence_goes_to_the_source_that_contains_it() {
        let sources = [
            "Express shipping costs $14.95 and arrives in 1 to 2 days.",
            "You can return any kettle within 45 days of delivery for a full refund.",
        ];
        let answer = "You have 45 days from delivery to return a kettle for a full refund. Express shipping costs $14.95.";
        assert_eq!(attribute(answer, &sources, &[]), vec![2, 1]);
        // A wrong hint is ignored; an unsupported claim gets no source.
        assert_eq!(
            attribute("Express shipping costs $14.95.", &sources, &[2]),
            vec![1]
        );
        assert!(attribute("Every kettle is free today.", &sources, &[]).is_empty());
    }
}
