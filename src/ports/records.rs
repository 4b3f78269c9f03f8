//! The records the storage ports take and return beyond the domain's own: what a write
//! did (`Appended`, `Erased`), what it carries (`TurnExtras`, `IngestCommit`), and the
//! outbox's events, webhooks and deliveries.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{
    Bot, BotId, Conversation, Feedback, Lead, Message, Page, SettledTurn, TurnEvent, event_kinds,
};

/// How long a store remembers an erasure (of a conversation, a user, a bot), so that a
/// turn begun before it writes nothing: longer than any turn takes.
pub const ERASURES_KEPT_MS: u64 = 24 * 3600 * 1000;

/// What `ConversationStore::erase_user` erased.
#[derive(Debug, Clone, Default)]
pub struct Erased {
    pub conversations: Vec<String>,
    pub leads: usize,
}

/// What `ConversationStore::rate_message` wrote.
#[derive(Debug, Clone)]
pub struct Rated {
    pub conversation: Conversation,
    pub message: Message,
    /// The `message.feedback` event written with it (none when the rating and comment
    /// were already these).
    pub event_id: Option<String>,
}

/// What `ConversationStore::append_turn` wrote.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The conversation record as stored.
    pub conversation: Conversation,
    /// The position of the first message appended.
    pub first_position: u32,
    /// The messages as stored (without a bot reply the turn brought to a conversation a
    /// person took over meanwhile).
    pub messages: Vec<Message>,
    /// A bot reply was left out for that reason.
    pub reply_dropped: bool,
}

/// What else a conversation turn writes in its transaction.
#[derive(Debug, Default)]
pub struct TurnExtras {
    /// Events the turn caused beyond those the store derives itself
    /// (`conversation.started`, `conversation.handoff`, `lead.captured`).
    pub events: Vec<NewEvent>,
    /// Contact details the visitor gave in this turn.
    pub lead: Option<Lead>,
    /// When the turn began (ms), for a turn that may outlive an erasure of its user: if
    /// the user was erased since, nothing is written.
    pub started_ms: Option<u64>,
}

/// Everything one ingest run changes, applied in a single transaction.
pub struct IngestCommit {
    /// The run's id, under which it staged its chunks.
    pub ingest: String,
    pub bot: Bot,
    /// The bot existed when the run began (so, if it is gone now, it was deleted).
    pub bot_existed: bool,
    /// New or changed pages; their `chunk_ids` are chunks the run staged.
    pub upserts: Vec<Page>,
    /// Pages that stay, with caching headers refreshed (their chunks are kept as they are).
    pub touched: Vec<Page>,
    pub removed_urls: Vec<String>,
}

/// Something that happened, as stored and as sent (`id`, `type`, `created`, `data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `evt_` + creation time + random: the same on every delivery attempt.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds.
    pub created: u64,
    #[serde(skip)]
    pub bot_id: Option<BotId>,
    pub data: Value,
}

/// An event to write with a change: its type and data (the store adds id and time).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub data: Value,
}

impl NewEvent {
    /// The events a settled turn writes: those it announces, then the caller's that it
    /// keeps, each naming the conversation (bot, conversation, user, intent) unless it
    /// already does.
    pub fn of_turn(settled: &SettledTurn, caller: Vec<NewEvent>) -> Vec<NewEvent> {
        let record = &settled.record;
        let announced = settled.events.iter().map(NewEvent::announced);
        let kept = caller.into_iter().filter(|e| settled.keeps_event(e.kind));
        announced
            .chain(kept)
            .map(|mut event| {
                if let Value::Object(data) = &mut event.data {
                    for (key, value) in [
                        ("bot_id", serde_json::json!(record.bot_id)),
                        ("conversation_id", serde_json::json!(record.id)),
                        ("user_id", serde_json::json!(record.user_id)),
                        ("intent", serde_json::json!(record.intent)),
                    ] {
                        data.entry(key).or_insert(value);
                    }
                }
                event
            })
            .collect()
    }

    /// The event a turn announces.
    fn announced(event: &TurnEvent) -> NewEvent {
        let data = match event {
            TurnEvent::Started { message } => serde_json::json!({"message": message}),
            TurnEvent::LeadCaptured(lead) => serde_json::json!({"lead": lead}),
            TurnEvent::HandedOff { reason, message } => {
                serde_json::json!({"reason": reason, "message": message})
            }
        };
        NewEvent {
            kind: event.kind(),
            data,
        }
    }

    /// `lead.captured` for a lead given outside a chat turn.
    pub fn lead_captured(lead: &Lead) -> NewEvent {
        NewEvent {
            kind: event_kinds::LEAD_CAPTURED,
            data: serde_json::json!({
                "bot_id": lead.bot_id,
                "conversation_id": lead.conversation_id,
                "user_id": lead.user_id,
                "lead": lead,
            }),
        }
    }

    /// `message.feedback`: a visitor rated `answer` (asked by `question`) in `record`.
    pub fn feedback(
        record: &Conversation,
        answer: &Message,
        feedback: &Feedback,
        question: Option<String>,
    ) -> NewEvent {
        NewEvent {
            kind: event_kinds::MESSAGE_FEEDBACK,
            data: serde_json::json!({
                "bot_id": record.bot_id,
                "conversation_id": record.id,
                "user_id": record.user_id,
                "message_id": answer.id,
                "rating": feedback.rating,
                "comment": feedback.comment,
                "question": question,
                "answer": answer.content,
            }),
        }
    }
}

/// A receiver of one bot's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    /// `whk_` + random.
    pub id: String,
    pub bot_id: BotId,
    pub url: String,
    /// Event types sent to it (`*`: all).
    pub events: Vec<String>,
    /// The signing secret (`whsec_…`). Kept as is: signing needs it.
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_until`.
    #[serde(default)]
    pub previous_secret: Option<String>,
    #[serde(default)]
    pub previous_until: Option<u64>,
    pub created: u64,
}

impl Webhook {
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == kind || e == "*")
    }

    /// The secrets to sign with at `now`: the current one, and the previous one during
    /// its overlap.
    pub fn signing_secrets(&self, now: u64) -> Vec<&str> {
        let mut out = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_until)
            && now < until
        {
            out.push(previous);
        }
        out
    }
}

/// One send of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The receiver's HTTP status; absent when the request failed.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub webhook_id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending`, `delivered` or `failed` (the retry horizon passed).
    pub state: String,
    pub attempts: Vec<Attempt>,
    /// Unix milliseconds of the next attempt, while pending.
    pub next_attempt_ms: Option<u64>,
    /// Unix seconds the event was created.
    pub created: u64,
}

impl Delivery {
    /// `event`'s delivery to the webhook `webhook_id`, pending, with no attempt yet.
    pub fn pending(webhook_id: &str, event: &Event, next_attempt_ms: Option<u64>) -> Delivery {
        Delivery {
            webhook_id: webhook_id.to_string(),
            event_id: event.id.clone(),
            kind: event.kind.clone(),
            state: "pending".into(),
            attempts: Vec::new(),
            next_attempt_ms,
            created: event.created,
        }
    }
}

/// A pending delivery whose time has come, with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub due_ms: u64,
    pub webhook: Webhook,
    pub event: Event,
    pub attempts: usize,
}

/// What an attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Delivered,
    RetryAt(u64),
    Failed,
}
