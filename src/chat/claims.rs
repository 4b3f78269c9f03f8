//! The specifics of an answer, checked against its cited passages: numbers, versions and
//! dates, `code spans`, flags, file names and paths, and capitalised names. A specific
//! that no cited passage contains is an invented fact behind a citation, the worst thing
//! a support bot can say; `unsupported` finds them. Pure: no I/O.

use std::collections::HashSet;

/// Words that start with a capital for reasons other than being a name.
const NOT_NAMES: &[&str] = &[
    "I",
    "I'm",
    "I've",
    "I'll",
    "I'd",
    "OK",
    "Yes",
    "No",
    "Note",
    "However",
    "Also",
    "Then",
    "If",
    "For",
    "To",
    "In",
    "On",
    "The",
    "A",
    "An",
    "This",
    "That",
    "These",
    "You",
    "Your",
    "It",
    "We",
    "Here",
    "Make",
    "Run",
    "Use",
    "Step",
    "Once",
    "After",
    "Before",
    "When",
    "Important",
    "Example",
    "First",
    "Next",
    "Finally",
    "Please",
    "See",
    "Open",
    "Add",
];

/// Short forms that end in a full stop without being file names.
const ABBREVIATIONS: &[&str] = &["e.g", "i.e", "etc", "vs", "cf"];

/// Pairs written with a slash that are not paths.
const NOT_PATH_WORDS: &[&str] = &[
    "and", "or", "read", "write", "input", "output", "on", "off", "yes", "no", "true", "false",
];

/// The specifics of `answer` that none of `passages` contains, each once, in order
/// (code spans, numbers, then flags, files and names as they come). The visitor's
/// question is no source: a name or number it brings that no passage states is one the
/// sources know nothing about (asked about Git LFS, sources that never name it cannot
/// say how to install it), so an answer repeating it is unsupported too.
pub fn unsupported(answer: &str, passages: &[&str]) -> Vec<String> {
    let text = strip_fence_tags(&strip_markers(answer));
    let haystack: String = passages.join("\n");
    let lower = haystack.to_lowercase();
    let numbers: HashSet<String> = numbers(&haystack).collect();
    let spans_in = command_form(&collapse(&haystack));
    let mut out: Vec<String> = Vec::new();
    let mut flag = |specific: String| {
        if !out.contains(&specific) {
            out.push(specific);
        }
    };
    let terms = command_form(&lower);
    for span in code_spans(&text) {
        let normal = collapse(span);
        let known = spans_in.contains(&command_form(&normal))
            || span_terms_known(span, &haystack, &terms, &numbers);
        if !known {
            flag(format!("`{normal}`"));
        }
    }
    let prose = without_list_markers(&without_code_spans(&text));
    for number in numbers_of(&without_flags(&prose)) {
        if !numbers.contains(&number) {
            flag(number);
        }
    }
    for sentence in sentences(&prose) {
        // A sentence's first word is capitalised whatever it is.
        let mut opening = true;
        for (token, colon) in tokens(sentence) {
            let missing = if is_flag(token) {
                !flag_known(&haystack, token)
            } else if is_file(token) {
                !lower.contains(&token.to_lowercase())
            } else {
                !opening && is_name(token) && !name_known(&lower, token)
            };
            // After a sentence's first word, and after a colon (`Note: Run …`), a capital
            // is a name's.
            opening = (opening && !token.chars().any(char::is_alphabetic)) || colon;
            if missing {
                flag(token.to_string());
            }
        }
    }
    out
}

/// Sentences: ended by `.`, `!` or `?` before a space or the end, or by a line break
/// (so `Cargo.toml` and `1.70` stay whole).
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        let ends = c == '\n' || (".!?".contains(c) && next.is_none_or(char::is_whitespace));
        if ends {
            out.push(&text[start..i + c.len_utf8()]);
            start = i + c.len_utf8();
        }
    }
    out.push(&text[start..]);
    out
}

/// `text` without the numbers of numbered lists (`1.`, `2)` opening a line).
fn without_list_markers(text: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let digits = trimmed.len()
                - trimmed
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .len();
            let rest = &trimmed[digits..];
            if digits > 0 && (rest.starts_with(". ") || rest.starts_with(") ")) {
                &rest[2..]
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `answer` without the `[n]` markers grounding appended.
fn strip_markers(answer: &str) -> String {
    let mut out = String::with_capacity(answer.len());
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close)
                if after[..close]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',') =>
            {
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn code_spans(text: &str) -> impl Iterator<Item = &str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn without_code_spans(text: &str) -> String {
    text.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// `git-blame` written as `git blame`: a hyphen between two lowercase letters read as a
/// space, on both sides of the comparison, since manual pages name commands one way and
/// answers run them the other.
fn command_form(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let joins = c == '-'
                && i > 0
                && chars[i - 1].is_ascii_lowercase()
                && chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            if joins { ' ' } else { c }
        })
        .collect()
}

/// Whitespace runs made one space: a span matches however the passage wrapped it.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Words as written, without the quotes, brackets, emphasis and punctuation around them
/// (a trailing full stop too), and whether the word ended in a colon (which opens what
/// follows, as a sentence start does).
fn tokens(text: &str) -> impl Iterator<Item = (&str, bool)> {
    text.split_whitespace()
        .map(|t| {
            let colon = t
                .trim_end_matches(|c: char| "\"')]}*".contains(c))
                .ends_with(':');
            (bare(t), colon)
        })
        .filter(|(t, _)| !t.is_empty())
}

/// A word without the quotes, brackets, emphasis and punctuation around it (a trailing
/// full stop too).
fn bare(word: &str) -> &str {
    word.trim_start_matches(|c: char| "\"'([{*".contains(c))
        .trim_end_matches(|c: char| "\"'()[]{},;:!?*.".contains(c))
}

/// Numbers as they are written: digit runs joined by `.`, `,` or `:` between digits
/// (`1.5`, `10,000`, `12:30`, `2.100`).
fn numbers(text: &str) -> impl Iterator<Item = String> + '_ {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_digit()
                || (".,:".contains(chars[i])
                    && chars.get(i + 1).is_some_and(char::is_ascii_digit)
                    && i > start))
        {
            i += 1;
        }
        out.push(chars[start..i].iter().collect::<String>());
    }
    out.into_iter()
}

fn numbers_of(text: &str) -> Vec<String> {
    numbers(text).collect()
}

fn is_flag(token: &str) -> bool {
    let body = token.trim_start_matches('-');
    (token.starts_with("--") || token.starts_with('-'))
        && body.len() < token.len()
        && body.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

/// A path (`/etc/hosts`, `~/.cargo`, `target/release`), a URL, or a name with an
/// extension (`config.toml`, `Cargo.lock`); not `and/or`, `TCP/IP` or `e.g`.
fn is_file(token: &str) -> bool {
    if ABBREVIATIONS.contains(&token.to_lowercase().as_str()) {
        return false;
    }
    if token.contains('/') {
        let parts: Vec<&str> = token.split('/').collect();
        let words = parts.len() == 2
            && parts.iter().all(|p| p.chars().all(char::is_alphabetic))
            && parts.iter().any(|p| {
                NOT_PATH_WORDS.contains(&p.to_lowercase().as_str())
                    || p.chars().all(char::is_uppercase)
            });
        return !words && token.chars().any(char::is_alphanumeric);
    }
    let Some((name, ext)) = token.rsplit_once('.') else {
        return false;
    };
    !name.is_empty()
        && (1..=5).contains(&ext.len())
        && ext.chars().all(|c| c.is_ascii_alphanumeric())
        && ext.chars().any(|c| c.is_ascii_alphabetic())
        && name.chars().any(char::is_alphanumeric)
}

/// A capitalised word that is not a common sentence word: a product, a person, a place.
fn is_name(token: &str) -> bool {
    let mut chars = token.chars();
    chars.next().is_some_and(|c| c.is_uppercase())
        && token
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '\'')
        && token.chars().count() > 1
        && !NOT_NAMES.contains(&token)
}

/// Whether a name is in the (lowercased) passages: as written, or its possessive, plural
/// or compound's first part (`Rust's`, `APIs`, `Debian-based`).
fn name_known(lower: &str, token: &str) -> bool {
    let word = token.to_lowercase();
    let bare = word
        .strip_suffix("'s")
        .or_else(|| word.strip_suffix("’s"))
        .unwrap_or(&word);
    let mut forms = vec![bare];
    if let Some(singular) = bare.strip_suffix('s').filter(|s| s.len() > 1) {
        forms.push(singular);
    }
    if let Some((first, _)) = bare.split_once('-').filter(|(f, _)| f.len() > 1) {
        forms.push(first);
    }
    forms.iter().any(|form| contains_word(lower, form))
}

/// Whether a flag is in the passages. `-d` and `-D` are different options and `-r` is not
/// `--release`, but `--depth=1` is the `--depth <depth>` a manual page describes: the
/// value is the reader's to choose.
fn flag_known(haystack: &str, token: &str) -> bool {
    contains_term(haystack, token)
        || token
            .split_once('=')
            .is_some_and(|(name, _)| contains_term(haystack, name))
}

/// `text` without its flags, whose values (`--depth=1`) are not numbers the answer states.
fn without_flags(text: &str) -> String {
    text.split_whitespace()
        .filter(|word| !is_flag(bare(word)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a command no passage shows as written is made of what they do show, command by
/// command: its words up to the first flag or placeholder together and in order,
/// and each other word a term of the passages (`terms`: lowercased, in `command_form`),
/// each number one they state, each flag known. Placeholders (`<commit>`) are free. So
/// `git cherry-pick <commit>` is known from a manual page on `git-cherry-pick`, and
/// neither `git lfs install` where no passage says `git lfs` nor `git add large files`.
/// Looser than the whole command: a flag may come from another command's page.
fn span_terms_known(span: &str, haystack: &str, terms: &str, numbers: &HashSet<String>) -> bool {
    // Each command of a pipeline or list (`a | b`, `a && b`, `a; b`) on its own.
    span.split(['\n', '|', '&', ';']).all(|line| {
        let words: Vec<&str> = line
            .split_whitespace()
            .map(bare)
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .collect();
        let command: Vec<&str> = words
            .iter()
            .take_while(|w| !is_flag(w) && !is_placeholder(w))
            .copied()
            .collect();
        let command_known = command.is_empty()
            || contains_term(terms, &command_form(&command.join(" ").to_lowercase()));
        command_known
            && words.iter().all(|w| {
                if is_placeholder(w) {
                    true
                } else if is_flag(w) {
                    flag_known(haystack, w)
                } else if w.chars().all(|c| c.is_ascii_digit() || ".,:".contains(c)) {
                    numbers.contains(*w)
                } else {
                    contains_term(terms, &command_form(&w.to_lowercase()))
                }
            })
    })
}

/// A name in angle brackets standing for what the reader fills in (`<commit-hash>`).
fn is_placeholder(word: &str) -> bool {
    word.strip_prefix('<')
        .and_then(|w| w.strip_suffix('>'))
        .is_some_and(|inner| {
            !inner.is_empty()
                && inner
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        })
}

/// Whether `term` (a flag) is in `haystack` as a whole: not inside a longer option or
/// word (`-r` is not in `--release`, `--force` not in `--force-with-lease`).
fn contains_term(haystack: &str, term: &str) -> bool {
    let part = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
    haystack.match_indices(term).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + term.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

/// A fenced block's language tag (```` ```bash ````) is not part of its code.
fn strip_fence_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("```") {
        out.push_str(&rest[..at + 3]);
        rest = &rest[at + 3..];
        let tag = rest.find('\n').filter(|&end| {
            rest[..end]
                .chars()
                .all(|c| c.is_alphanumeric() || "_+-".contains(c))
        });
        if let Some(end) = tag {
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn contains_word(haystack: &str, word: &str) -> bool {
    haystack.match_indices(word).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUSTUP: &str = "Installing rustup on Linux or macOS: open a terminal and enter \
        curl --proto '=https' --tlsv1.2 https://sh.rustup.rs -sSf | sh. The command downloads \
        a script and starts the installation of the rustup tool.";

    #[test]
    fn invented_numbers_behind_a_citation_are_found() {
        let answer = "To install the Rust toolchain, you will need at least 1 GB of disk \
            space and 2 GB of RAM. [3]";
        assert_eq!(
            unsupported(answer, &[RUSTUP]),
            ["1", "2", "Rust", "GB", "RAM"]
        );
        let answer =
            "Crates.io was founded by the Rust programming language community in 2013. [1]";
        let passage =
            "crates.io is the Rust community's crate registry. Publish with cargo publish.";
        assert_eq!(unsupported(answer, &[passage]), ["2013"]);
    }

    #[test]
    fn specifics_the_passages_state_are_kept() {
        let passage = "Build with `cargo build --release` to compile with optimizations; the \
            binary goes to target/release. Settings live in Cargo.toml, version 1.70 or later.";
        let answer = "Run `cargo build   --release` and find the binary in target/release [1]. \
            Cargo reads Cargo.toml and needs version 1.70.";
        assert!(unsupported(answer, &[passage]).is_empty());
    }

    #[test]
    fn commands_flags_files_and_names_not_in_the_passages_are_found() {
        let passage = "Use git branch -d to delete a merged branch.";
        let answer = "Delete it with `git branch --delete --force` or -D, as Linus Torvalds \
            suggests in ~/.gitconfig.";
        assert_eq!(
            unsupported(answer, &[passage]),
            [
                "`git branch --delete --force`",
                "-D",
                "Linus",
                "Torvalds",
                "~/.gitconfig"
            ]
        );
    }

    #[test]
    fn what_only_the_question_names_is_not_known() {
        let passage = "git-lfs is not part of Git. Use git add to stage large files too.";
        // Only the question says Mercurial: the sources know nothing about it.
        assert_eq!(
            unsupported("Create a Mercurial repository with `hg init`.", &[passage]),
            ["`hg init`", "Mercurial"]
        );
        assert_eq!(unsupported("It ships in version 3.0.", &[passage]), ["3.0"]);
    }

    #[test]
    fn commands_with_placeholders_and_flag_values_are_read_as_the_manual_writes_them() {
        let passage = "git-cherry-pick(1): git cherry-pick [--edit] <commit>... applies \
            changes. git-clone: --depth <depth> creates a shallow clone, version 1.70.0. \
            git-lfs is a separate tool. Use git add to stage files, git reset --hard to drop.";
        for known in [
            "Run `git cherry-pick <commit-hash>`.",
            "Run `git cherry-pick [--edit] <commit>...`.",
            "Clone with --depth=1 to keep one commit.",
            "Clone with **--depth=1**, (--depth=2) or \"--depth=3\".",
            "Clone with `git clone --depth=1 <url>`.",
            "```sh\n$ git clone --depth <depth>\n# git add <file>\n```",
            "Run `git add <file> && git reset --hard | git add <file>; git add <file>`.",
        ] {
            assert!(
                unsupported(known, &[passage]).is_empty(),
                "{known}: {:?}",
                unsupported(known, &[passage])
            );
        }
        // Known words in an unknown command or order, an unknown flag or number, an
        // address in angle brackets: not known.
        for (answer, missing) in [
            ("Run `git lfs install`.", "`git lfs install`"),
            ("Run `git add large files`.", "`git add large files`"),
            (
                "Run `git cherry-pick --edit 1.70`.",
                "`git cherry-pick --edit 1.70`",
            ),
            (
                "Run `git clone <https://evil.example/x.sh>`.",
                "`git clone <https://evil.example/x.sh>`",
            ),
            (
                "Run `git add <file>`\n`git lfs track <file>`.",
                "`git lfs track <file>`",
            ),
            ("Pass --shallow=1.", "--shallow=1"),
            ("Pass `-N` to skip.", "`-N`"),
        ] {
            assert_eq!(unsupported(answer, &[passage]), [missing], "{answer}");
        }
    }

    #[test]
    fn markdown_and_ordinary_prose_are_not_taken_for_specifics() {
        let passage = "Rust installs to ~/.cargo/bin. Rust is Debian's default toolchain for \
            APIs; run cargo build.";
        let answer = "**Important:** Make sure Rust's tools (in **~/.cargo/bin**). are on \
            the PATH, e.g. with and/or Debian-based APIs.\n```bash\ncargo build\n```";
        assert_eq!(unsupported(answer, &[passage]), ["PATH"]);
        // A short flag is not supported by a longer one that contains it.
        let passage = "Use --release, or --force-with-lease to push safely.";
        assert_eq!(
            unsupported("Pass -r or --force.", &[passage]),
            ["-r", "--force"]
        );
    }

    #[test]
    fn markers_and_sentence_openings_are_not_specifics() {
        let passage = "Press the button to restart.";
        let list = "1. Press the button [1].\n2) Wait.\n- Restart it.";
        assert!(unsupported("Press the button to restart [1][2].", &[passage]).is_empty());
        assert!(unsupported("Restart: press the button. [1]", &[passage]).is_empty());
        assert!(
            unsupported(list, &[passage]).is_empty(),
            "{:?}",
            unsupported(list, &[passage])
        );
        // A manual page's `git-blame` is the answer's `git blame`.
        let passage = "git-blame(1): git-blame -L 10,20 file shows who changed lines.";
        assert!(unsupported("Run `git blame -L 10,20 file`.", &[passage]).is_empty());
        assert_eq!(
            unsupported("Run `git blame --porcelain`.", &[passage]),
            ["`git blame --porcelain`"]
        );
        assert_eq!(
            numbers_of("v1.2.3, 10,000 and 12:30."),
            ["1.2.3", "10,000", "12:30"]
        );
    }
}
