//! Changing a bot's settings: the bounds every setting obeys, applied all or nothing. The
//! API's create and update routes (and anything else that edits a bot) go through here.

use std::collections::HashSet;

use crate::domain::{Bot, EmbedderChoice, Intent, LeadCapture};

/// A change to a bot's settings: `None` keeps a field; for the nullable ones, `Some(None)`
/// clears it.
#[derive(Debug, Clone, Default)]
pub struct SettingsChange {
    pub name: Option<String>,
    pub system_prompt: Option<Option<String>>,
    pub top_k: Option<Option<usize>>,
    /// As given (f64), so a value just outside the range cannot round into it.
    pub min_score: Option<Option<f64>>,
    pub allowed_targets: Option<Vec<String>>,
    pub lead_capture: Option<LeadCapture>,
    pub handoff_topics: Option<Vec<String>>,
    pub fallback: Option<Option<String>>,
    pub intents: Option<Vec<Intent>>,
    /// An embedder's name (`minilm`, `nomic`, `nomic-512`, `nomic-256`); `Some(None)`
    /// returns the bot to the node's default.
    pub embedder: Option<Option<String>>,
}

/// A setting outside its bounds, said so a caller can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSetting(pub String);

fn invalid(message: impl Into<String>) -> InvalidSetting {
    InvalidSetting(message.into())
}

impl SettingsChange {
    /// Whether the change lets the bot's crawls reach origins the SSRF guard would refuse
    /// (a live admin's decision; clearing the list is anyone's who may edit the bot).
    pub fn exempts_targets(&self) -> bool {
        self.allowed_targets.as_ref().is_some_and(|t| !t.is_empty())
    }

    /// Applies the change to `bot` when every field is within its bounds; otherwise
    /// changes nothing and says what is wrong.
    pub fn apply(&self, bot: &mut Bot) -> Result<(), InvalidSetting> {
        let mut changed = bot.clone();
        self.apply_profile(&mut changed)?;
        self.apply_retrieval(&mut changed)?;
        self.apply_engagement(&mut changed)?;
        *bot = changed;
        Ok(())
    }

    /// Name, operator instructions and the fallback text.
    fn apply_profile(&self, bot: &mut Bot) -> Result<(), InvalidSetting> {
        if let Some(name) = &self.name {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(invalid("name must be 1 to 200 characters"));
            }
            bot.name = name.to_string();
        }
        if let Some(prompt) = &self.system_prompt {
            if prompt.as_ref().is_some_and(|p| p.chars().count() > 4000) {
                return Err(invalid("system_prompt is limited to 4000 characters"));
            }
            bot.settings.system_prompt = prompt.clone().filter(|p| !p.trim().is_empty());
        }
        if let Some(fallback) = &self.fallback {
            if fallback.as_ref().is_some_and(|f| f.chars().count() > 1000) {
                return Err(invalid("fallback is limited to 1000 characters"));
            }
            bot.settings.fallback = fallback.clone().filter(|f| !f.trim().is_empty());
        }
        Ok(())
    }

    /// How many passages, how good, and which private origins crawls may reach.
    fn apply_retrieval(&self, bot: &mut Bot) -> Result<(), InvalidSetting> {
        if let Some(top_k) = self.top_k {
            if top_k.is_some_and(|k| !(1..=50).contains(&k)) {
                return Err(invalid("top_k must be 1 to 50"));
            }
            bot.settings.top_k = top_k;
        }
        if let Some(min_score) = self.min_score {
            if min_score.is_some_and(|m| !(-1.0..=1.0).contains(&m)) {
                return Err(invalid("min_score must be between -1 and 1"));
            }
            bot.settings.min_score = min_score.map(|m| m as f32);
        }
        if let Some(targets) = &self.allowed_targets {
            if let Some(bad) = targets.iter().find(|t| !is_origin(t)) {
                return Err(invalid(format!(
                    "allowed_targets: {bad:?} is not an origin like https://host[:port]"
                )));
            }
            bot.settings.allowed_targets = targets.clone();
        }
        if self.embedder.is_some() {
            bot.settings.embedder = self.embedder_choice()?;
        }
        Ok(())
    }

    /// The embedder the change asks for: `Some(Some(choice))` to set one, `Some(None)` to
    /// clear it, `None` to leave it; an unknown name is an invalid setting.
    pub fn embedder_choice(&self) -> Result<Option<EmbedderChoice>, InvalidSetting> {
        match &self.embedder {
            Some(Some(name)) => name.parse().map(Some).map_err(invalid),
            _ => Ok(None),
        }
    }

    /// Lead capture, handoff topics and quick replies.
    fn apply_engagement(&self, bot: &mut Bot) -> Result<(), InvalidSetting> {
        if let Some(mode) = &self.lead_capture {
            if matches!(mode, LeadCapture::AfterMessages { after_messages } if !(1..=100).contains(after_messages))
            {
                return Err(invalid("lead_capture.after_messages must be 1 to 100"));
            }
            bot.settings.lead_capture = mode.clone();
        }
        if let Some(topics) = &self.handoff_topics {
            let topics: Vec<String> = topics.iter().map(|t| t.trim().to_string()).collect();
            let bad_topic = |t: &String| t.is_empty() || t.chars().count() > 200;
            if topics.len() > 20 || topics.iter().any(bad_topic) {
                return Err(invalid(
                    "handoff_topics: up to 20 topics of 1 to 200 characters",
                ));
            }
            bot.settings.handoff_topics = topics;
        }
        if let Some(intents) = &self.intents {
            check_intents(intents)?;
            bot.settings.intents = intents.clone();
        }
        Ok(())
    }
}

/// `https://host[:port]` exactly: an http(s) URL that is its own origin.
fn is_origin(target: &str) -> bool {
    url::Url::parse(target).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.origin().ascii_serialization() == target
    })
}

/// Up to 20 quick replies with unique `[a-z0-9_-]{1,64}` ids, labels of 1 to 100
/// characters and messages (when given) of 1 to 1000.
fn check_intents(intents: &[Intent]) -> Result<(), InvalidSetting> {
    let valid_id = |id: &str| {
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    let mut seen = HashSet::new();
    for intent in intents {
        let label = intent.label.trim();
        let bad_message = |m: &String| m.trim().is_empty() || m.chars().count() > 1000;
        if !valid_id(&intent.id)
            || !seen.insert(intent.id.as_str())
            || label.is_empty()
            || label.chars().count() > 100
            || intent.message.as_ref().is_some_and(bad_message)
        {
            return Err(invalid(format!(
                "intent {:?}: ids are unique [a-z0-9_-]{{1,64}}, labels 1 to 100 characters, messages 1 to 1000",
                intent.id
            )));
        }
    }
    if intents.len() > 20 {
        return Err(invalid("at most 20 intents"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::BotSettings;

    fn bot() -> Bot {
        Bot {
            source: String::new(),
            settings: BotSettings {
                top_k: Some(5),
                fallback: Some("Mail us".into()),
                ..BotSettings::default()
            },
            ..crate::domain::fixtures::bot("docs")
        }
    }

    fn intent(id: &str, label: &str) -> Intent {
        Intent {
            id: id.into(),
            label: label.into(),
            message: None,
        }
    }

    #[test]
    fn a_valid_change_sets_clears_and_keeps_fields() {
        let mut b = bot();
        let change = SettingsChange {
            name: Some("  Help desk ".into()),
            top_k: Some(None),
            min_score: Some(Some(0.25)),
            allowed_targets: Some(vec!["http://10.0.0.5:8080".into()]),
            handoff_topics: Some(vec![" billing ".into()]),
            intents: Some(vec![intent("pricing", "Pricing")]),
            system_prompt: Some(Some("   ".into())),
            ..SettingsChange::default()
        };
        change.apply(&mut b).unwrap();
        assert_eq!(b.name, "Help desk");
        assert_eq!(b.settings.top_k, None, "null clears");
        assert_eq!(b.settings.min_score, Some(0.25));
        assert_eq!(b.settings.handoff_topics, vec!["billing"]);
        assert_eq!(b.settings.system_prompt, None, "blank is none");
        assert_eq!(
            b.settings.fallback.as_deref(),
            Some("Mail us"),
            "absent keeps"
        );
        assert!(change.exempts_targets());
        let clearing = SettingsChange {
            allowed_targets: Some(Vec::new()),
            ..SettingsChange::default()
        };
        assert!(!clearing.exempts_targets());
    }

    #[test]
    fn every_bound_is_enforced_and_a_bad_field_changes_nothing() {
        let long = |n: usize| "x".repeat(n);
        let cases: Vec<(SettingsChange, &str)> = vec![
            (
                SettingsChange {
                    name: Some(" ".into()),
                    ..Default::default()
                },
                "name",
            ),
            (
                SettingsChange {
                    name: Some(long(201)),
                    ..Default::default()
                },
                "name",
            ),
            (
                SettingsChange {
                    system_prompt: Some(Some(long(4001))),
                    ..Default::default()
                },
                "system_prompt",
            ),
            (
                SettingsChange {
                    top_k: Some(Some(0)),
                    ..Default::default()
                },
                "top_k",
            ),
            (
                SettingsChange {
                    top_k: Some(Some(51)),
                    ..Default::default()
                },
                "top_k",
            ),
            (
                SettingsChange {
                    min_score: Some(Some(1.0000001)),
                    ..Default::default()
                },
                "min_score",
            ),
            (
                SettingsChange {
                    allowed_targets: Some(vec!["https://h/path".into()]),
                    ..Default::default()
                },
                "allowed_targets",
            ),
            (
                SettingsChange {
                    allowed_targets: Some(vec!["ftp://h".into()]),
                    ..Default::default()
                },
                "allowed_targets",
            ),
            (
                SettingsChange {
                    lead_capture: Some(LeadCapture::AfterMessages { after_messages: 0 }),
                    ..Default::default()
                },
                "after_messages",
            ),
            (
                SettingsChange {
                    handoff_topics: Some(vec![long(201)]),
                    ..Default::default()
                },
                "handoff_topics",
            ),
            (
                SettingsChange {
                    handoff_topics: Some(vec!["a".into(); 21]),
                    ..Default::default()
                },
                "handoff_topics",
            ),
            (
                SettingsChange {
                    fallback: Some(Some(long(1001))),
                    ..Default::default()
                },
                "fallback",
            ),
            (
                SettingsChange {
                    intents: Some(vec![intent("A", "x")]),
                    ..Default::default()
                },
                "intent",
            ),
            (
                SettingsChange {
                    intents: Some(vec![intent("a", "x"), intent("a", "y")]),
                    ..Default::default()
                },
                "intent",
            ),
            (
                SettingsChange {
                    intents: Some(vec![intent("a", " ")]),
                    ..Default::default()
                },
                "intent",
            ),
            (
                SettingsChange {
                    intents: Some((0..21).map(|i| intent(&format!("i{i}"), "x")).collect()),
                    ..Default::default()
                },
                "20 intents",
            ),
        ];
        for (mut change, names) in cases {
            // A valid field beside the bad one is not applied either.
            change.name.get_or_insert_with(|| "Renamed".into());
            let mut b = bot();
            let error = change.apply(&mut b).unwrap_err();
            assert!(error.0.contains(names), "{error} should name {names}");
            assert_eq!(b, bot(), "{names}: nothing changed");
        }
    }
}
