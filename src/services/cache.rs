//! The answer cache: identical first-turn questions to the same bot, within a TTL, get the
//! stored answer without retrieval or generation.
//!
//! Only first turns are cached (a conversation's history changes what an answer should
//! be), only answers that finished normally, and the key holds the bot's content version
//! (its last ingest time), so any re-ingest makes every older entry unreachable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::chat::Answer;
use crate::domain::BotId;

const MAX_ENTRIES: usize = 2048;

type Key = (BotId, u64, String);

pub struct AnswerCache {
    ttl: Duration,
    entries: Mutex<HashMap<Key, (Instant, Answer)>>,
}

/// Lower case, single spaces, no trailing punctuation: "How do I  return it?" and
/// "how do i return it" are the same question.
pub fn normalize(question: &str) -> String {
    question
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_end_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace())
        .to_string()
}

impl AnswerCache {
    /// `None` when `ttl` is zero (caching off).
    pub fn new(ttl: Duration) -> Option<AnswerCache> {
        (!ttl.is_zero()).then(|| AnswerCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        })
    }

    pub fn get(&self, bot: &BotId, version: u64, question: &str) -> Option<Answer> {
        let key = (bot.clone(), version, normalize(question));
        let entries = self.entries.lock().expect("cache lock");
        let (at, answer) = entries.get(&key)?;
        (at.elapsed() < self.ttl).then(|| answer.clone())
    }

    /// Forgets every answer of `bot` (its content changed or it is gone).
    pub fn invalidate(&self, bot: &BotId) {
        self.entries
            .lock()
            .expect("cache lock")
            .retain(|(b, _, _), _| b != bot);
    }

    pub fn put(&self, bot: &BotId, version: u64, question: &str, answer: &Answer) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                // Still full of fresh entries: drop the oldest.
                if let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
                {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            (bot.clone(), version, normalize(question)),
            (Instant::now(), answer.clone()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_normalise_to_one_key() {
        assert_eq!(normalize("  How do I  Return it?? "), "how do i return it");
        assert_eq!(normalize("how do i return it"), "how do i return it");
        assert_ne!(
            normalize("how do i return it"),
            normalize("how do i return them")
        );
    }
}
