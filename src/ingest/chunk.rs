//! Heading-aware chunking by tokens of the embedding tokenizer, with overlap. Pure: no I/O.
//!
//! Small neighbouring sections are packed together up to the token budget; a long section is
//! cut into overlapping windows that end at sentence or word boundaries. Chunks never cross
//! page boundaries because each call sees one page, nor a document's pages (sections with
//! different anchors), so each chunk cites the page it comes from.

use super::extract::Section;

#[derive(Debug, Clone, Copy)]
pub struct ChunkSpec {
    /// Most tokens of page text in one chunk (the title and heading path come on top).
    pub max_tokens: usize,
    /// Tokens repeated at the start of the next window when a section is split.
    pub overlap_tokens: usize,
}

impl Default for ChunkSpec {
    fn default() -> Self {
        ChunkSpec {
            max_tokens: 200,
            overlap_tokens: 40,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextChunk {
    pub heading_path: Vec<String>,
    pub text: String,
    /// The anchor of the section it starts in (`page=3`).
    pub anchor: Option<String>,
}

/// Splits a page's sections into chunks. `token_spans` gives the byte span of each token.
pub fn chunk_sections(
    sections: &[Section],
    token_spans: &dyn Fn(&str) -> Vec<(usize, usize)>,
    spec: ChunkSpec,
) -> Vec<TextChunk> {
    let spec = ChunkSpec {
        max_tokens: spec.max_tokens.max(8),
        overlap_tokens: spec.overlap_tokens.min(spec.max_tokens / 2),
    };
    let mut chunks: Vec<TextChunk> = Vec::new();
    // The chunk being packed and its token count.
    let mut open: Option<(TextChunk, usize)> = None;
    for section in sections {
        let text = section.text.trim();
        if text.is_empty() {
            continue;
        }
        let spans = token_spans(text);
        let n_tokens = spans.len();
        if n_tokens > spec.max_tokens {
            chunks.extend(open.take().map(|(c, _)| c));
            for window in split_windows(text, &spans, spec) {
                chunks.push(TextChunk {
                    heading_path: section.heading_path.clone(),
                    text: window,
                    anchor: section.anchor.clone(),
                });
            }
            continue;
        }
        match open.as_mut() {
            Some((chunk, used))
                if *used + n_tokens <= spec.max_tokens && chunk.anchor == section.anchor =>
            {
                // Packing a later section: keep its own heading visible inside the text.
                chunk.text.push_str("\n\n");
                if section.heading_path != chunk.heading_path
                    && let Some(heading) = section.heading_path.last()
                {
                    chunk.text.push_str(heading);
                    chunk.text.push('\n');
                }
                chunk.text.push_str(text);
                *used += n_tokens;
            }
            _ => {
                chunks.extend(open.take().map(|(c, _)| c));
                open = Some((
                    TextChunk {
                        heading_path: section.heading_path.clone(),
                        text: text.to_string(),
                        anchor: section.anchor.clone(),
                    },
                    n_tokens,
                ));
            }
        }
    }
    chunks.extend(open.map(|(c, _)| c));
    chunks
}

/// Overlapping windows of at most `max_tokens` tokens, each cut at the last sentence end
/// (or failing that, the last token) inside the window.
fn split_windows(text: &str, spans: &[(usize, usize)], spec: ChunkSpec) -> Vec<String> {
    let mut windows = Vec::new();
    let mut start = 0;
    while start < spans.len() {
        let hard_end = (start + spec.max_tokens).min(spans.len());
        let end = if hard_end == spans.len() {
            hard_end
        } else {
            sentence_end(text, spans, start, hard_end).unwrap_or(hard_end)
        };
        let from = spans[start].0;
        let to = spans[end - 1].1;
        windows.push(text[from..to].trim().to_string());
        if end == spans.len() {
            break;
        }
        // Step back by the overlap, but always move forward.
        start = end.saturating_sub(spec.overlap_tokens).max(start + 1);
    }
    windows
}

/// The token index just after the last sentence-ending token in the second half of
/// `start..end`, if any.
fn sentence_end(text: &str, spans: &[(usize, usize)], start: usize, end: usize) -> Option<usize> {
    let min = start + (end - start) / 2;
    (min..end).rev().find_map(|i| {
        let token = &text[spans[i].0..spans[i].1];
        let ends_sentence =
            token.ends_with(['.', '!', '?', ':', ';']) || text[spans[i].1..].starts_with('\n');
        ends_sentence.then_some(i + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::word_spans;

    fn section(path: &[&str], text: &str) -> Section {
        Section {
            heading_path: path.iter().map(|s| s.to_string()).collect(),
            text: text.to_string(),
            anchor: None,
        }
    }

    #[test]
    fn small_sections_are_packed_with_their_headings() {
        let sections = [
            section(&["A"], "one two"),
            section(&["A", "B"], "three four"),
        ];
        let spec = ChunkSpec {
            max_tokens: 10,
            overlap_tokens: 2,
        };
        let chunks = chunk_sections(&sections, &word_spans, spec);
        assert_eq!(
            chunks,
            vec![TextChunk {
                heading_path: vec!["A".into()],
                text: "one two\n\nB\nthree four".into(),
                anchor: None,
            }]
        );
    }

    #[test]
    fn a_documents_pages_are_never_packed_together() {
        let on_page = |n: u32, text: &str| Section {
            anchor: Some(format!("page={n}")),
            ..section(&["A"], text)
        };
        let sections = vec![on_page(1, "one"), on_page(1, "two"), on_page(2, "three")];
        let spec = ChunkSpec {
            max_tokens: 10,
            overlap_tokens: 2,
        };
        let chunks = chunk_sections(&sections, &word_spans, spec);
        let got: Vec<(&str, Option<&str>)> = chunks
            .iter()
            .map(|c| (c.text.as_str(), c.anchor.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![("one\n\ntwo", Some("page=1")), ("three", Some("page=2"))]
        );
    }

    #[test]
    fn long_sections_split_at_sentences_with_overlap() {
        let text = "a b c d. e f g h. i j k l. m n o p.";
        let spec = ChunkSpec {
            max_tokens: 8,
            overlap_tokens: 2,
        };
        let chunks = chunk_sections(&[section(&["S"], text)], &word_spans, spec);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            vec!["a b c d. e f g h.", "g h. i j k l.", "k l. m n o p."]
        );
        assert!(chunks.iter().all(|c| word_spans(&c.text).len() <= 8));
    }

    #[test]
    fn every_word_lands_in_some_chunk() {
        let text: String = (0..500).map(|i| format!("w{i} ")).collect();
        let chunks = chunk_sections(&[section(&[], &text)], &word_spans, ChunkSpec::default());
        for i in 0..500 {
            let word = format!("w{i}");
            assert!(chunks.iter().any(|c| c.text.split(' ').any(|w| w == word)));
        }
    }
}
