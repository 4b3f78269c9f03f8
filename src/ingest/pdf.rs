//! PDF files to the same `Extracted` an HTML page gives: one section per page (or per
//! outline entry on a page), each anchored `page=N` so its chunks cite `file.pdf#page=N`;
//! headings from the document's outline (bookmarks); words split across lines by a hyphen
//! joined again. Reading the file is `pdf_read`'s job, run isolated by `isolate`.

use serde::{Deserialize, Serialize};

use super::extract::{Extracted, Section};

/// The media type a server gives a PDF file.
pub const MEDIA_TYPE: &str = "application/pdf";

/// Fewer visible characters per page than this on average: a scan without a text layer
/// (page numbers and stamps alone do not make a document).
const MIN_CHARS_PER_PAGE: usize = 16;

/// The longest heading kept (outline titles can be whole paragraphs).
const MAX_HEADING_CHARS: usize = 300;

/// Outline entries looked for in one page's text; those past it start at the page's end.
const MAX_ENTRIES_PER_PAGE: usize = 64;

/// What a reader took from a PDF: its pages' text in order and its outline.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PdfText {
    pub title: Option<String>,
    pub pages: Vec<String>,
    pub outline: Vec<OutlineEntry>,
}

/// One bookmark: its depth (0 at the top), title and the page (1-based) it points to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutlineEntry {
    pub level: usize,
    pub title: String,
    pub page: Option<u32>,
}

/// Sections for a PDF's pages, or the per-file reason there are none.
pub fn to_extracted(pdf: PdfText) -> Result<Extracted, String> {
    let pages: Vec<String> = pdf.pages.iter().map(|p| clean_page(p)).collect();
    let visible: usize = pages
        .iter()
        .map(|p| p.chars().filter(|c| !c.is_whitespace()).count())
        .sum();
    if pages.is_empty() || visible < MIN_CHARS_PER_PAGE * pages.len() {
        return Err(format!(
            "no text layer ({visible} characters on {} pages: a scan? OCR is not supported)",
            pages.len()
        ));
    }
    let outline: Vec<OutlineEntry> = pdf
        .outline
        .into_iter()
        .filter(|e| e.page.is_some_and(|p| p >= 1 && p as usize <= pages.len()))
        .map(|e| OutlineEntry {
            title: clip(&super::extract::collapse_whitespace(&e.title)),
            ..e
        })
        .filter(|e| !e.title.is_empty())
        .collect();
    let mut on_page: std::collections::BTreeMap<u32, Vec<&OutlineEntry>> = Default::default();
    for entry in &outline {
        on_page
            .entry(entry.page.unwrap_or(0))
            .or_default()
            .push(entry);
    }
    let mut out = Extracted::default();
    let mut path: Vec<(usize, String)> = Vec::new();
    for (index, text) in pages.iter().enumerate() {
        let number = index as u32 + 1;
        let anchor = Some(format!("page={number}"));
        let mut rest = text.as_str();
        for (nth, entry) in on_page.get(&number).into_iter().flatten().enumerate() {
            // The heading printed on the page starts its section (it is in the heading path,
            // not the text); not found (a bookmark's title need not be printed), the
            // page's text is all under it.
            let found = (nth < MAX_ENTRIES_PER_PAGE)
                .then(|| find_heading(rest, &entry.title))
                .flatten();
            let (start, end) = found.unwrap_or((0, 0));
            push(&mut out, &path, &rest[..start], &anchor);
            rest = &rest[end..];
            path.retain(|(level, _)| *level < entry.level);
            path.push((entry.level, entry.title.clone()));
        }
        push(&mut out, &path, rest, &anchor);
    }
    out.title = pdf
        .title
        .map(|t| clip(&super::extract::collapse_whitespace(&t)))
        .filter(|t| !t.is_empty())
        .or_else(|| {
            outline
                .iter()
                .find(|e| e.level == 0)
                .map(|e| e.title.clone())
        })
        .unwrap_or_default();
    Ok(out)
}

fn push(out: &mut Extracted, path: &[(usize, String)], text: &str, anchor: &Option<String>) {
    let text = text.trim();
    if !text.is_empty() {
        out.sections.push(Section {
            heading_path: path.iter().map(|(_, h)| h.clone()).collect(),
            text: text.to_string(),
            anchor: anchor.clone(),
        });
    }
}

/// Where a heading's words are in `text`, spacing, case, quote and dash styles and
/// ligatures aside: the byte range from its first word's start to its last word's end;
/// printed as a line of its own (after a section number, if any: `4.2 Refunds`) rather
/// than mentioned in a sentence when it is both.
fn find_heading(text: &str, heading: &str) -> Option<(usize, usize)> {
    find_words(text, heading, true).or_else(|| find_words(text, heading, false))
}

fn find_words(text: &str, heading: &str, line_start: bool) -> Option<(usize, usize)> {
    let words: Vec<String> = heading.split_whitespace().map(fold).collect();
    if words.is_empty() {
        return None;
    }
    // The end of the heading when its words start at `at`.
    let matches_at = |at: usize| {
        let mut end = at;
        for word in &words {
            let skipped = text[end..].len() - text[end..].trim_start().len();
            let token = text[end + skipped..].split_whitespace().next()?;
            if fold(token) != *word {
                return None;
            }
            end += skipped + token.len();
        }
        Some(end)
    };
    let first = words[0].chars().next()?;
    let (mut after_space, mut line) = (true, 0);
    text.char_indices().find_map(|(i, c)| {
        let at_line_start = || text[line..i].split_whitespace().all(is_section_number);
        let start = after_space && !c.is_whitespace() && (!line_start || at_line_start());
        after_space = c.is_whitespace();
        if c == '\n' {
            line = i + 1;
        }
        // Cheap first: the first letter, before folding whole words.
        let plausible = start && fold(c.encode_utf8(&mut [0; 4])).starts_with(first);
        let end = plausible.then(|| matches_at(i)).flatten()?;
        // A printed heading is its line, number aside.
        let line_rest = text[end..].split('\n').next().unwrap_or("");
        (!line_start || line_rest.trim().is_empty()).then_some((i, end))
    })
}

/// `4`, `4.2`, `4.2.`, `IV.`: what numbers a heading in print.
fn is_section_number(word: &str) -> bool {
    let word = word.trim_end_matches(['.', ')']);
    !word.is_empty()
        && (word
            .split('.')
            .all(|part| part.bytes().all(|b| b.is_ascii_digit()) && !part.is_empty())
            || word.bytes().all(|b| b"IVXivx".contains(&b)))
}

/// A word as headings are compared: lowercase, typographic quotes and dashes plain,
/// ligatures spelled out (a bookmark says `What's`, the page prints `What’s`).
fn fold(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars().flat_map(char::to_lowercase) {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201b}' | '\u{2032}' => out.push('\''),
            '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{2033}' => out.push('"'),
            '\u{2010}'..='\u{2015}' | '\u{2212}' => out.push('-'),
            '\u{fb00}' => out.push_str("ff"),
            '\u{fb01}' => out.push_str("fi"),
            '\u{fb02}' => out.push_str("fl"),
            '\u{fb03}' => out.push_str("ffi"),
            '\u{fb04}' => out.push_str("ffl"),
            c => out.push(c),
        }
    }
    out
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_HEADING_CHARS).collect()
}

/// A page's text with words hyphenated across lines joined (`exam-\nple`), trailing spaces
/// and runs of blank lines dropped, and no NULs or other control characters.
fn clean_page(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    let mut lines = text.lines().map(|l| l.trim_end()).peekable();
    while let Some(line) = lines.next() {
        let line: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if line.trim().is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        let next_starts_lower = lines
            .peek()
            .and_then(|n| n.trim_start().chars().next())
            .is_some_and(char::is_lowercase);
        match line.strip_suffix('-') {
            Some(head) if next_starts_lower && head.ends_with(char::is_alphabetic) => {
                out.push_str(head);
                // The word's second half follows directly, on this line.
                let next: String = lines
                    .next()
                    .unwrap_or_default()
                    .trim_start()
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                let (rest_of_word, rest) =
                    next.split_at(next.find(char::is_whitespace).unwrap_or(next.len()));
                out.push_str(rest_of_word);
                let rest = rest.trim();
                if !rest.is_empty() {
                    out.push('\n');
                    out.push_str(rest);
                }
            }
            _ => out.push_str(&line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(level: usize, title: &str, page: u32) -> OutlineEntry {
        OutlineEntry {
            level,
            title: title.into(),
            page: Some(page),
        }
    }

    #[test]
    fn pages_become_anchored_sections_under_the_outline() {
        let pdf = PdfText {
            title: None,
            pages: vec![
                "Guide\nWelcome to the shop.".into(),
                "Intro ends here.\nRefunds\nWe refund within 30 days.\nReturns\nSend it back."
                    .into(),
            ],
            outline: vec![
                entry(0, "Guide", 1),
                entry(1, "Refunds", 2),
                entry(1, "Returns", 2),
            ],
        };
        let out = to_extracted(pdf).unwrap();
        assert_eq!(out.title, "Guide");
        let got: Vec<(Vec<String>, &str, Option<&str>)> = out
            .sections
            .iter()
            .map(|s| (s.heading_path.clone(), s.text.as_str(), s.anchor.as_deref()))
            .collect();
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                (path(&["Guide"]), "Welcome to the shop.", Some("page=1")),
                (path(&["Guide"]), "Intro ends here.", Some("page=2")),
                (
                    path(&["Guide", "Refunds"]),
                    "We refund within 30 days.",
                    Some("page=2")
                ),
                (path(&["Guide", "Returns"]), "Send it back.", Some("page=2")),
            ]
        );
    }

    #[test]
    fn hyphenated_words_are_joined_and_controls_dropped() {
        assert_eq!(
            clean_page("an exam-\nple of it\n\n\n\nnext\u{0}para  \nwell-\nKnown"),
            "an example\nof it\n\nnext para\nwell-\nKnown"
        );
        assert_eq!(clean_page("end-\n"), "end-");
    }

    #[test]
    fn a_scan_without_text_is_a_reason() {
        let pdf = PdfText {
            pages: vec!["".into(), "3".into()],
            ..Default::default()
        };
        let reason = to_extracted(pdf).unwrap_err();
        assert!(reason.contains("no text layer"), "{reason}");
        assert!(to_extracted(PdfText::default()).is_err());
    }

    #[test]
    fn outline_entries_off_the_pages_or_unfound_are_harmless() {
        let pdf = PdfText {
            title: Some("  The   Title ".into()),
            pages: vec!["Some text on the only page.".into()],
            outline: vec![entry(0, "Elsewhere", 9), entry(0, "Not printed", 1)],
        };
        let out = to_extracted(pdf).unwrap();
        assert_eq!(out.title, "The Title");
        assert_eq!(out.sections.len(), 1);
        assert_eq!(out.sections[0].heading_path, vec!["Not printed"]);
        assert_eq!(find_heading("a Über  b c", "über B"), Some((2, 10)));
        assert_eq!(find_heading("aÜber b", "über b"), None);
        assert_eq!(
            find_heading("4.14 What’s Next?", "What's Next?"),
            Some((5, 19))
        );
        assert_eq!(
            find_heading("De\u{fb01}nitions", "Definitions"),
            Some((0, 12))
        );
        // Printed as a heading, not the earlier mention.
        let page = "See Returns below.\n  Returns\nSend it back.";
        assert_eq!(find_heading(page, "returns"), Some((21, 28)));
        assert_eq!(find_heading("See Returns below.", "Returns"), Some((4, 11)));
        let numbered = "Refunds are quick.\n3.1 Refunds\nWithin 30 days.";
        assert_eq!(find_heading(numbered, "Refunds"), Some((23, 30)));
        let roman = "II. Returns\nReturns are free.";
        assert_eq!(find_heading(roman, "Returns"), Some((4, 11)));
    }
}
