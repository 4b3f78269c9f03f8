//! Prompt rendering and citation parsing. Pure: no I/O.
//!
//! The sources go in the system message and the question alone in the user turn: of the
//! layouts tried with the 0.5B model (sources in the user turn, fenced, with URLs, with a
//! citation reminder), this one answered all four fixture questions correctly, where the
//! others echoed source headers or declined answerable questions.

use crate::llm::ChatMessage;

pub const SYSTEM_PROMPT: &str = include_str!("prompts/system.md");

/// One numbered source as the model sees it.
#[derive(Debug, Clone)]
pub struct PromptSource<'a> {
    pub title: &'a str,
    pub url: &'a str,
    pub heading_path: &'a [String],
    pub text: &'a str,
}

/// The system and user messages for a grounded answer.
pub fn render(question: &str, sources: &[PromptSource<'_>]) -> Vec<ChatMessage> {
    render_with(question, sources, None)
}

/// `render`, with an operator's extra instructions after the rules (they add to them; the
/// rules come first and say what wins).
pub fn render_with(
    question: &str,
    sources: &[PromptSource<'_>],
    extra: Option<&str>,
) -> Vec<ChatMessage> {
    let mut system = SYSTEM_PROMPT.trim().to_string();
    if let Some(extra) = extra.map(str::trim).filter(|e| !e.is_empty()) {
        system.push_str("\n\nThe operator adds these instructions:\n");
        system.push_str(extra);
    }
    system.push_str("\n\nSources:\n");
    for (i, source) in sources.iter().enumerate() {
        let mut heading = source.title.to_string();
        for h in source.heading_path {
            if !source.title.contains(h.as_str()) {
                heading.push_str(" > ");
                heading.push_str(h);
            }
        }
        system.push_str(&format!(
            "\n[{}] {heading}\n{}\n",
            i + 1,
            source.text.trim()
        ));
    }
    vec![
        ChatMessage::new("system", system),
        ChatMessage::new("user", question.trim()),
    ]
}

/// The question put after answering, one per sentence (`verify_claims`): the answer
/// prompt's messages and the model's own `answer` as it wrote it, so that all of it is
/// already in the sequence's cache and only the question about `sentence` is new.
pub fn sentence_check(messages: &[ChatMessage], answer: &str, sentence: &str) -> Vec<ChatMessage> {
    let mut check = messages.to_vec();
    check.push(ChatMessage::new("assistant", answer));
    check.push(ChatMessage::new(
        "user",
        format!(
            "Check one sentence of your answer: \"{}\"\n\nDoes a source above state what this sentence says, and does it answer my question? Reply with only yes or no.",
            sentence.trim()
        ),
    ));
    check
}

/// The question put before answering: the answer prompt's messages, with the last user
/// message asking whether the sources state the answer (a yes/no question).
pub fn answerability_check(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut check = messages.to_vec();
    if let Some(last) = check.last_mut() {
        last.content = format!(
            "Question: {}\n\nDo the sources above state the answer to this question? Reply with only yes or no.",
            last.content.trim()
        );
    }
    check
}

/// The source numbers an answer cites, in order of first citation, each once. Accepts
/// `[1]`, `[1][2]`, `[1, 2]` and `[1-2]`; brackets that are not citations (`vec![1]`,
/// numbers outside `1..=n_sources`) are ignored.
pub fn cited_indices(answer: &str, n_sources: usize) -> Vec<usize> {
    let mut cited = Vec::new();
    let mut prev = None;
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        if open > 0 {
            prev = rest[..open].chars().next_back();
        }
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        if super::grounding::is_citation(prev, inside, n_sources) {
            for part in inside.split(',') {
                let bounds: Vec<usize> = part
                    .split(['-', '–'])
                    .filter_map(|n| n.trim().parse().ok())
                    .collect();
                let numbers = match bounds.as_slice() {
                    [n] => *n..=*n,
                    [a, b] if a <= b => *a..=*b,
                    _ => continue,
                };
                for n in numbers {
                    if !cited.contains(&n) {
                        cited.push(n);
                    }
                }
            }
        }
        prev = Some(']');
        rest = &rest[close..];
        rest = &rest[1..];
    }
    cited
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn citations_are_read_in_order_of_first_use() {
        assert_eq!(
            cited_indices("A [2]. B [1][2]. C [3, 1].", 3),
            vec![2, 1, 3]
        );
        assert_eq!(cited_indices("See [1-3] and [9] and [x]", 5), vec![1, 2, 3]);
        assert!(cited_indices("vec![1] and a[2]", 5).is_empty());
        assert!(cited_indices("no citations", 3).is_empty());
    }

    #[test]
    fn sources_are_numbered_in_the_system_message() {
        let headings = vec!["Returns".to_string()];
        let messages = render(
            " How long? ",
            &[PromptSource {
                title: "Returns",
                url: "http://x/returns.html",
                heading_path: &headings,
                text: "45 days.",
            }],
        );
        assert_eq!(messages[0].role, "system");
        assert!(
            messages[0]
                .content
                .ends_with("Sources:\n\n[1] Returns\n45 days.\n")
        );
        assert_eq!(messages[1].content, "How long?");
    }
}
