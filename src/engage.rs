//! What a visitor's message asks of the business rather than of the content: contact
//! details typed into the chat (leads), a request for a person (handoff), and questions
//! on topics an operator wants handled by people (regulated topics). Pure functions.

use std::sync::LazyLock;

use regex::Regex;

/// Contact details found in one message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contact {
    pub email: Option<String>,
    pub phone: Option<String>,
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[a-z0-9._%+-]{1,64}@[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})*\.[a-z]{2,24}\b")
        .expect("email pattern")
});

/// Runs that may be phone numbers: an optional `+` or `(`, then digits with separators.
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[+(]?\d[\d\s().-]{5,22}\d").expect("phone pattern"));

/// Is `text` (already matched by `PHONE`) a phone number: 7 to 15 digits, and either a
/// leading `+`, separators between digit groups, or at least 10 digits (so an order
/// number like 1234567 or a year range is not one).
fn phone_like(text: &str) -> Option<String> {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    if !(7..=15).contains(&digits) {
        return None;
    }
    let separated = text
        .chars()
        .any(|c| matches!(c, ' ' | '-' | '.' | '(' | ')'));
    if text.starts_with('+') || separated || digits >= 10 {
        Some(text.trim().to_string())
    } else {
        None
    }
}

/// The first email address and phone number in `text`, if any.
pub fn find_contact(text: &str) -> Option<Contact> {
    let email = EMAIL.find(text).map(|m| m.as_str().to_string());
    // Digits inside an email address are not a phone number.
    let without_email = EMAIL.replace_all(text, " ");
    let phone = PHONE
        .find_iter(&without_email)
        .find_map(|m| phone_like(m.as_str()));
    (email.is_some() || phone.is_some()).then_some(Contact { email, phone })
}

/// Is a syntactically plausible email address (what `POST /v1/leads` accepts).
pub fn valid_email(text: &str) -> bool {
    text.len() <= 254 && EMAIL.find(text).is_some_and(|m| m.as_str() == text)
}

/// Is a plausible phone number: digits with the usual separators, 7 to 15 digits.
pub fn valid_phone(text: &str) -> bool {
    let allowed = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')' | '+'));
    let digits = text.chars().filter(char::is_ascii_digit).count();
    allowed && (7..=15).contains(&digits) && !text[1..].contains('+')
}

/// Words for a person.
const PEOPLE: &[&str] = &[
    "human",
    "humans",
    "person",
    "people",
    "agent",
    "agents",
    "someone",
    "somebody",
    "representative",
    "rep",
    "operator",
    "staff",
    "support team",
    "customer service",
    "customer support",
    "real person",
    "live chat",
    "live agent",
];

/// Ways of asking for one.
const ASKS: &[&str] = &[
    "talk to",
    "talk with",
    "speak to",
    "speak with",
    "chat with",
    "chat to",
    "connect me",
    "transfer me",
    "put me through",
    "get me",
    "give me",
    "i want",
    "i need",
    "i'd like",
    "i would like",
    "can i get",
    "let me talk",
    "let me speak",
    "contact",
    "reach",
];

/// Whether the visitor asks for a person ("talk to a person", "agent please", "can I speak
/// with someone from support?"). A question that merely mentions a word ("what does the
/// user agent header do?") is not a request.
pub fn wants_human(message: &str) -> bool {
    let text: String = message
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect();
    let words: Vec<&str> = text.split_whitespace().collect();
    let normalized = words.join(" ");
    // A bare request: "agent", "human please", "a real person!".
    let filler = [
        "a", "an", "the", "please", "now", "pls", "plz", "real", "live",
    ];
    let content: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| !filler.contains(w))
        .collect();
    if content.len() == 1
        && ["human", "agent", "person", "operator", "representative"].contains(&content[0])
    {
        return true;
    }
    // An ask followed, within a few words, by a word for a person.
    for ask in ASKS {
        let mut from = 0;
        while let Some(found) = normalized[from..].find(ask) {
            let start = from + found;
            let at_word = start == 0 || normalized.as_bytes()[start - 1] == b' ';
            let after = &normalized[start + ask.len()..];
            if at_word {
                let window: Vec<&str> = after.split_whitespace().take(6).collect();
                let window = format!(" {} ", window.join(" "));
                if PEOPLE.iter().any(|p| window.contains(&format!(" {p} "))) {
                    return true;
                }
            }
            from = start + ask.len();
        }
    }
    false
}

/// Whether `question` is about `topic`. A topic is a name, optionally followed by `:` and
/// comma-separated trigger words or phrases: `"medical advice: dose, medication, burn,
/// side effect"`. It matches when every word of the name (less generic ones such as
/// "advice") or any trigger appears in the question. A word matches a question word that
/// starts with its first five letters ("medication" meets "medicine", "burn" meets
/// "burned"); a phrase matches when its words appear in a row.
///
/// Deterministic on purpose: a regulated deployment must be able to say which questions go
/// to people. (Measured: the embedder's similarity and the small model's yes/no did not
/// separate "Can I sue you?" from "What is the warranty?".)
pub fn mentions_topic(question: &str, topic: &str) -> bool {
    const GENERIC: &[&str] = &[
        "advice",
        "question",
        "questions",
        "help",
        "issue",
        "issues",
        "topic",
        "topics",
        "about",
        "and",
        "or",
        "the",
        "a",
        "of",
        "on",
        "for",
    ];
    let words = |text: &str| -> Vec<String> {
        text.to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let question = words(question);
    let matches = |word: &str, candidate: &str| {
        let prefix: String = word.chars().take(5).collect();
        candidate.starts_with(&prefix)
    };
    let phrase_at = |phrase: &[String], start: usize| {
        phrase
            .iter()
            .enumerate()
            .all(|(i, w)| question.get(start + i).is_some_and(|q| matches(w, q)))
    };
    let (name, triggers) = topic.split_once(':').unwrap_or((topic, ""));
    let wanted: Vec<String> = words(name)
        .into_iter()
        .filter(|w| w.len() > 2 && !GENERIC.contains(&w.as_str()))
        .collect();
    if !wanted.is_empty()
        && wanted
            .iter()
            .all(|w| question.iter().any(|q| matches(w, q)))
    {
        return true;
    }
    triggers.split(',').any(|trigger| {
        let phrase = words(trigger);
        !phrase.is_empty() && (0..question.len()).any(|start| phrase_at(&phrase, start))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_details_are_found_but_numbers_that_are_not_phones_are_not() {
        let c =
            find_contact("Sure, it's jane.doe+shop@example.co.uk, call +44 20 7946 0958").unwrap();
        assert_eq!(c.email.as_deref(), Some("jane.doe+shop@example.co.uk"));
        assert_eq!(c.phone.as_deref(), Some("+44 20 7946 0958"));
        assert_eq!(
            find_contact("my number is (555) 123-4567.")
                .unwrap()
                .phone
                .as_deref(),
            Some("(555) 123-4567")
        );
        assert_eq!(
            find_contact("reach me at 5551234567")
                .unwrap()
                .phone
                .as_deref(),
            Some("5551234567")
        );
        for none in [
            "order 1234567 arrived broken",
            "it costs 1,299.00 dollars",
            "between 2019 and 2024",
            "version 1.2.3 of the app",
            "no contact here",
            "user@localhost is not an address",
        ] {
            assert_eq!(find_contact(none), None, "{none}");
        }
        assert!(valid_email("a@b.io") && !valid_email("a@b") && !valid_email("a b@c.io"));
        assert!(
            valid_phone("+1 (555) 123-4567") && !valid_phone("12345") && !valid_phone("1+2345678")
        );
    }

    #[test]
    fn requests_for_a_person_are_told_from_questions_that_mention_one() {
        for yes in [
            "I want to talk to a human",
            "Can I speak with someone from support?",
            "agent",
            "Human please!",
            "please connect me to a real person",
            "I'd like to chat with customer service",
            "talk to an agent",
        ] {
            assert!(wants_human(yes), "{yes}");
        }
        for no in [
            "What does the user agent header do?",
            "How many people can use one account?",
            "Is the human-readable format supported?",
            "How do I contact the API from Python?",
            "Which agents does the crawler identify as?",
        ] {
            assert!(!wants_human(no), "{no}");
        }
    }

    #[test]
    fn topics_match_by_their_words() {
        assert!(mentions_topic(
            "Can you give me medical advice about my rash?",
            "medical advice"
        ));
        assert!(mentions_topic(
            "Is this medication safe with alcohol?",
            "medical"
        ));
        assert!(mentions_topic(
            "I need legal help with my lease",
            "legal advice"
        ));
        assert!(!mentions_topic(
            "How do I reset my password?",
            "medical advice"
        ));
        assert!(!mentions_topic("anything", "advice"));
    }
}
