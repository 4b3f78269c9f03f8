//! The answer stream's sentence gate: the model's text reaches the visitor a whole sentence
//! at a time, and only sentences whose specifics some retrieved passage states (`claims`).
//! Nothing is shown before a sentence that a passage supports (`grounding`) has come, so an
//! answer no source supports is never seen: the decline replaces it. Pure: no I/O.

use super::{claims, grounding};

/// A second judge of a sentence the passages' words allow: true keeps it.
pub type Verify<'v> = &'v mut dyn FnMut(&str) -> bool;

/// Short forms whose full stop does not end a sentence.
const ABBREVIATIONS: &[&str] = &["e.g.", "i.e.", "etc.", "vs.", "cf.", "approx."];

/// Holds streamed answer text back sentence by sentence (see the module doc).
pub struct SentenceGate<'a> {
    passages: &'a [&'a str],
    /// Text of a sentence not yet complete.
    pending: String,
    /// Checked sentences waiting for a supported one before they may be shown.
    held: String,
    /// Everything let through.
    shown: String,
    /// Sentences taken out for stating specifics no passage contains or for the verifier's
    /// doubt, and those pointing back at them.
    removed: Vec<String>,
    /// Whether the last sentence judged was taken out.
    removing: bool,
}

impl<'a> SentenceGate<'a> {
    /// A gate for an answer from `passages` (all those in the prompt).
    pub fn new(passages: &'a [&'a str]) -> SentenceGate<'a> {
        SentenceGate {
            passages,
            pending: String::new(),
            held: String::new(),
            shown: String::new(),
            removed: Vec::new(),
            removing: false,
        }
    }

    /// Feeds visible answer text; returns what may be shown now (often nothing). `hinted`:
    /// the sources the model has cited so far.
    pub fn push(&mut self, text: &str, hinted: &[usize]) -> String {
        self.push_verified(text, hinted, &mut |_| true)
    }

    /// `push`, with a second opinion: a sentence whose specifics the passages state still
    /// goes unless `verify` (the model asked about it, `verify_claims`) says it holds.
    pub fn push_verified(&mut self, text: &str, hinted: &[usize], verify: Verify<'_>) -> String {
        self.pending.push_str(text);
        let mut out = String::new();
        while let Some(end) = sentence_end(&self.pending) {
            let sentence: String = self.pending.drain(..end).collect();
            out.push_str(&self.judge(sentence, hinted, verify));
        }
        out
    }

    /// The end of the answer: judges the last, unfinished sentence.
    pub fn finish(&mut self, hinted: &[usize]) -> String {
        self.finish_verified(hinted, &mut |_| true)
    }

    /// `finish`, with `verify` as for `push_verified`.
    pub fn finish_verified(&mut self, hinted: &[usize], verify: Verify<'_>) -> String {
        let rest = std::mem::take(&mut self.pending);
        if rest.trim().is_empty() {
            return String::new();
        }
        self.judge(rest, hinted, verify)
    }

    /// Whether a supported sentence came, so the answer is shown.
    pub fn opened(&self) -> bool {
        !self.shown.is_empty()
    }

    /// Everything let through so far.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The sentences taken out, trimmed, in order.
    pub fn removed(&self) -> &[String] {
        &self.removed
    }

    fn judge(&mut self, sentence: String, hinted: &[usize], verify: Verify<'_>) -> String {
        // A sentence pointing back at one taken out ("This command …") goes with it:
        // shown alone, it would say something about nothing, or about the wrong thing.
        let orphaned = self.removing && points_back(&sentence, self.passages, hinted);
        if orphaned
            || !claims::unsupported(&sentence, self.passages).is_empty()
            || !verify(sentence.trim())
        {
            self.removed.push(sentence.trim().to_string());
            self.removing = true;
            return String::new();
        }
        self.removing = false;
        self.held.push_str(&sentence);
        let supported =
            self.opened() || !grounding::attribute(&sentence, self.passages, hinted).is_empty();
        if !supported {
            return String::new();
        }
        let mut out = std::mem::take(&mut self.held);
        if self.shown.is_empty() {
            out = out.trim_start().to_string();
        }
        self.shown.push_str(&out);
        out
    }
}

/// Words that open a sentence about the one before it.
const POINTING: &[&str] = &[
    "This", "That", "These", "Those", "Such", "Here", "Here's", "Here’s",
];

/// Words that open a sentence about the one before it, or about the answer's subject.
const PRONOUNS: &[&str] = &["It", "It's", "It’s", "Its", "They"];

/// Whether `sentence` opens with a word pointing back at the sentence before it: `This`
/// always does; `It` may mean the subject, so only a sentence no passage supports on its
/// own is read as pointing back.
fn points_back(sentence: &str, passages: &[&str], hinted: &[usize]) -> bool {
    let first = first_word(sentence);
    POINTING.contains(&first)
        || (PRONOUNS.contains(&first)
            && grounding::attribute(sentence, passages, hinted).is_empty())
}

/// The first word of `sentence`, past list markers and emphasis (`2. **This** command`).
fn first_word(sentence: &str) -> &str {
    sentence
        .trim_start_matches(|c: char| !c.is_alphabetic())
        .split(|c: char| c.is_whitespace() || ",:;".contains(c))
        .next()
        .unwrap_or_default()
        .trim_end_matches(|c: char| !c.is_alphanumeric())
}

/// Where the first complete sentence of `text` ends (a byte offset), if one has: after a
/// `.`, `!` or `?` that a space follows, or before a line break (whitespace always opens
/// the next sentence, so taking one out never glues its neighbours together) unless the
/// line ends in a colon, never
/// inside a `code span` or a fenced block (an odd number of backticks before), never after
/// a list number (`1.`) or an abbreviation (`e.g.`), and never before the sentence has a
/// word. A stray backtick keeps the rest of the answer one sentence: held to the end and
/// judged whole, which is safe.
fn sentence_end(text: &str) -> Option<usize> {
    let mut backticks = 0;
    let mut has_word = false;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        has_word |= c.is_alphabetic();
        if c == '`' {
            backticks += 1;
            continue;
        }
        if backticks % 2 == 1 {
            continue;
        }
        // A line that ends in a colon introduces what follows ("run this:" and a fenced
        // command): they stand or fall together.
        if c == '\n' && has_word && !text[..i].trim_end().ends_with(':') {
            return Some(i);
        }
        if ".!?".contains(c) && has_word {
            let Some(&(_, next)) = chars.peek() else {
                // The next piece decides.
                return None;
            };
            let end = i + c.len_utf8();
            if next.is_whitespace() && !abbreviation_or_number(&text[..end]) {
                return Some(end);
            }
        }
    }
    None
}

/// Whether the full stop ending `so_far` belongs to an abbreviation (`e.g.`) or to the
/// number opening a list item (`1.`).
fn abbreviation_or_number(so_far: &str) -> bool {
    let last_word = so_far.split_whitespace().next_back().unwrap_or("");
    let abbreviation = ABBREVIATIONS.contains(&last_word.to_lowercase().as_str());
    let list_number = last_word.trim_end_matches('.').parse::<u32>().is_ok()
        && so_far.trim_end_matches(last_word).trim().is_empty();
    abbreviation || list_number
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSAGE: &str = "The kettle shows E4 when it needs descaling. Descale it with \
        citric acid every 3 months. Run the cycle with `descale --deep`.";

    /// Feeds `pieces` through a gate over PASSAGE; returns what was shown, piece by piece.
    fn stream(pieces: &[&str]) -> (Vec<String>, Vec<String>) {
        let passages = [PASSAGE];
        let mut gate = SentenceGate::new(&passages);
        let mut shown: Vec<String> = pieces
            .iter()
            .map(|p| gate.push(p, &[]))
            .filter(|s| !s.is_empty())
            .collect();
        shown.push(gate.finish(&[]));
        shown.retain(|s| !s.is_empty());
        (shown, gate.removed().to_vec())
    }

    #[test]
    fn an_invented_number_is_removed_and_a_stated_one_kept() {
        let (shown, removed) = stream(&[
            "E4 means the kettle needs descaling.",
            " Descale it every 3 months.",
            " Each cycle takes 45 minutes.",
            " Use citric acid.",
        ]);
        assert_eq!(
            shown.concat(),
            "E4 means the kettle needs descaling. Descale it every 3 months. Use citric acid."
        );
        assert_eq!(removed, ["Each cycle takes 45 minutes."]);
    }

    #[test]
    fn a_sentence_the_verifier_doubts_goes_with_what_points_back_at_it() {
        let passages = [PASSAGE];
        let mut gate = SentenceGate::new(&passages);
        let mut asked = Vec::new();
        let mut verify = |sentence: &str| {
            asked.push(sentence.to_string());
            !sentence.contains("monthly")
        };
        let text = "E4 means the kettle needs descaling. Descale it monthly with citric \
            acid. This keeps it clean. Descale it with citric acid.";
        let mut shown = gate.push_verified(text, &[], &mut verify);
        shown.push_str(&gate.finish_verified(&[], &mut verify));
        assert_eq!(
            shown,
            "E4 means the kettle needs descaling. Descale it with citric acid."
        );
        assert_eq!(
            gate.removed(),
            [
                "Descale it monthly with citric acid.",
                "This keeps it clean."
            ]
        );
        // Only what the passages' words allow is put to the verifier, and each sentence once.
        assert_eq!(
            asked,
            [
                "E4 means the kettle needs descaling.",
                "Descale it monthly with citric acid.",
                "Descale it with citric acid."
            ]
        );
    }

    #[test]
    fn nothing_is_shown_before_a_sentence_a_passage_supports() {
        // The opening sentence invents nothing but no passage supports it: it waits.
        let (shown, removed) = stream(&[
            "Good question! ",
            "The kettle shows E4 when it needs descaling. ",
        ]);
        assert_eq!(
            shown,
            ["Good question! The kettle shows E4 when it needs descaling."]
        );
        assert!(removed.is_empty());
        // An answer with no supported sentence shows nothing at all.
        let (shown, removed) =
            stream(&["It was designed in 1987.", " Nobody remembers who made it."]);
        assert!(shown.is_empty(), "{shown:?}");
        assert_eq!(removed, ["It was designed in 1987."]);
    }

    #[test]
    fn a_sentence_pointing_back_at_a_removed_one_goes_with_it() {
        let (shown, removed) = stream(&[
            "The kettle shows E4 when it needs descaling.",
            " Run `kettle --reset` to clear it.",
            " This command also empties the tank.",
            " It takes a minute.",
            " Descale it with citric acid.",
            " It needs descaling every 3 months.",
        ]);
        assert_eq!(
            shown.concat(),
            "The kettle shows E4 when it needs descaling. Descale it with citric acid. It \
             needs descaling every 3 months."
        );
        assert_eq!(
            removed,
            [
                "Run `kettle --reset` to clear it.",
                "This command also empties the tank.",
                "It takes a minute."
            ]
        );
        assert_eq!(first_word("- **This** one"), "This");
        assert_eq!(first_word("2. This command"), "This");
        assert_eq!(first_word("It’s done"), "It’s");
        assert_eq!(first_word("Items, this and that"), "Items");
        // `It` may mean the subject: a sentence a passage supports stays.
        let (shown, removed) = stream(&[
            "The kettle shows E4 when it needs descaling.",
            " It was designed in 1987.",
            " It needs descaling every 3 months.",
        ]);
        assert_eq!(
            shown.concat(),
            "The kettle shows E4 when it needs descaling. It needs descaling every 3 months."
        );
        assert_eq!(removed, ["It was designed in 1987."]);
    }

    #[test]
    fn sentences_are_whole_across_pieces_code_and_lists() {
        let (shown, _) = stream(&["The kettle sh", "ows E4 when it needs desc", "aling", "."]);
        assert_eq!(shown, ["The kettle shows E4 when it needs descaling."]);
        // A full stop inside a code span, a list number or an abbreviation ends nothing.
        assert_eq!(sentence_end("Run `a. b` now"), None);
        assert_eq!(sentence_end("1. Descale it"), None);
        assert_eq!(sentence_end("Use acid, e.g. citric"), None);
        assert_eq!(sentence_end("Done. Next"), Some(5));
        assert_eq!(sentence_end("```sh\ndescale --deep\n```\nThen"), Some(24));
        assert_eq!(sentence_end("\nDescale it\nThen"), Some(11));
        // A fenced command the passage does not contain goes whole.
        let (shown, removed) = stream(&[
            "The kettle shows E4 when it needs descaling.\n",
            "```sh\ndescale --all\n```\n",
        ]);
        assert_eq!(
            shown.concat(),
            "The kettle shows E4 when it needs descaling."
        );
        assert_eq!(removed, ["```sh\ndescale --all\n```"]);
        // One it does contain stays, with the line break before it; one taken out of the
        // middle leaves its neighbours apart.
        let (shown, removed) = stream(&[
            "The kettle shows E4 when it needs descaling.\n",
            "```sh\ndescale --deep\n```\n",
            "```sh\ndescale --all\n```\nUse citric acid.",
        ]);
        assert_eq!(
            shown.concat(),
            "The kettle shows E4 when it needs descaling.\n```sh\ndescale --deep\n```\nUse citric acid."
        );
        assert_eq!(removed, ["```sh\ndescale --all\n```"]);
        // What a colon introduces goes with it.
        let (shown, removed) = stream(&[
            "The kettle shows E4 when it needs descaling. Run this:\n",
            "```sh\ndescale --all\n```",
        ]);
        assert_eq!(
            shown.concat(),
            "The kettle shows E4 when it needs descaling."
        );
        assert_eq!(removed, ["Run this:\n```sh\ndescale --all\n```"]);
    }
}
