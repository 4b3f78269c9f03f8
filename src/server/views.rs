//! What the API returns (bots, pages, conversations and their messages, keys, webhooks,
//! deliveries, leads, chat and completion answers, health, widget sessions, accounts): each view is
//! built from the core's records and serialised as it is, and its schema is the OpenAPI
//! document's, so the document and the responses are one type. (Core types carried
//! unchanged inside a view take their schemas from `schemas.rs`.)

use serde::Serialize;
use utoipa::ToSchema;

use crate::chat::Answer;
use crate::domain::{
    Bot, BotId, Conversation, ConversationState, CrawlJob, EmbedderChoice, EmbedderId, Feedback,
    Intent, Lead, LeadCapture, Message, Page, Role, Scope, SourceRef,
};
use crate::ingest::fetch::redact_userinfo;
use crate::keys::{ApiKey, KeyEnv, KeyKind, KeyScope};
use crate::llm::Finish;
use crate::ports::{Delivery, Erased, Webhook};
use crate::services::jobs::redacted;
use crate::services::turn::TurnOutcome;
use crate::telemetry::unix_now;

#[derive(Serialize, ToSchema)]
pub struct SourceScheduleView {
    pub url: String,
    pub recrawl_every: Option<u64>,
    pub last_crawl: Option<u64>,
    #[schema(value_type = super::schemas::Scope)]
    pub scope: Scope,
    /// Most pages one crawl indexes; null: the crawler's default (1,000).
    pub max_pages: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct BotView {
    #[schema(value_type = String)]
    pub id: BotId,
    pub name: String,
    pub source: String,
    pub pages: u64,
    pub chunks: u64,
    pub test: bool,
    pub system_prompt: Option<String>,
    pub top_k: Option<usize>,
    pub min_score: Option<f32>,
    pub allowed_targets: Vec<String>,
    /// Credentials in a source's URL are shown as `***`.
    pub sources: Vec<SourceScheduleView>,
    #[schema(value_type = super::schemas::LeadCapture)]
    pub lead_capture: LeadCapture,
    pub handoff_topics: Vec<String>,
    pub fallback: Option<String>,
    #[schema(value_type = Vec<super::schemas::Intent>)]
    pub intents: Vec<Intent>,
    /// The embedder this bot asked for (`minilm`, `nomic`, `nomic-512`, `nomic-256`;
    /// null: the node's default).
    #[schema(value_type = Option<super::schemas::EmbedderName>)]
    pub embedder: Option<EmbedderChoice>,
    /// The model and width that made the bot's vectors (null: none yet, or MiniLM before
    /// embedders were recorded). When it differs from `embedder`, `docent reindex --bot ID`
    /// switches the bot.
    #[schema(value_type = Option<super::schemas::EmbedderIdView>)]
    pub embedded_with: Option<EmbedderId>,
    pub created: u64,
    pub updated: u64,
}

impl From<&Bot> for BotView {
    fn from(bot: &Bot) -> BotView {
        let settings = &bot.settings;
        BotView {
            id: bot.id.clone(),
            name: bot.name.clone(),
            source: bot.source.clone(),
            pages: bot.pages,
            chunks: bot.chunks,
            test: bot.test,
            system_prompt: settings.system_prompt.clone(),
            top_k: settings.top_k,
            min_score: settings.min_score,
            allowed_targets: settings.allowed_targets.clone(),
            sources: settings
                .sources
                .iter()
                .map(|s| SourceScheduleView {
                    url: redact_userinfo(&s.url),
                    recrawl_every: s.recrawl_every,
                    last_crawl: s.last_crawl,
                    scope: s.scope,
                    max_pages: s.max_pages,
                })
                .collect(),
            lead_capture: settings.lead_capture.clone(),
            handoff_topics: settings.handoff_topics.clone(),
            fallback: settings.fallback.clone(),
            intents: settings.intents.clone(),
            embedder: settings.embedder,
            embedded_with: (bot.chunks > 0)
                .then(|| bot.embedder.clone().unwrap_or_else(crate::embed::minilm_id)),
            created: bot.created_unix,
            updated: bot.updated_unix,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct BotList {
    pub data: Vec<BotView>,
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    /// `user`, `assistant` or `agent`.
    #[schema(value_type = String)]
    pub role: Role,
    pub content: String,
    #[schema(value_type = Vec<super::schemas::SourceRef>)]
    pub sources: Vec<SourceRef>,
    pub created: u64,
    /// Agent messages: who wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Bot answers: whether the sources held the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<bool>,
    /// Bot answers: the visitor's rating, once given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<FeedbackView>,
}

/// A visitor's rating of an answer.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct FeedbackView {
    /// `up` or `down`.
    pub rating: &'static str,
    pub comment: Option<String>,
    /// Unix seconds.
    pub at: u64,
}

impl From<&Feedback> for FeedbackView {
    fn from(f: &Feedback) -> FeedbackView {
        FeedbackView {
            rating: f.rating.as_str(),
            comment: f.comment.clone(),
            at: f.at,
        }
    }
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> MessageView {
        MessageView {
            id: m.id.clone(),
            role: m.role,
            content: m.content.clone(),
            sources: m.sources.clone(),
            created: m.created,
            author: m.author.clone(),
            // Answers only: a handoff notice is the bot's but answers nothing.
            answered: m.answered.filter(|_| {
                m.role == Role::Assistant && m.finish_reason.as_deref() != Some("handed_off")
            }),
            feedback: m.feedback.as_ref().map(FeedbackView::from),
        }
    }
}

/// Thumbs up and down a conversation's answers got.
#[derive(Serialize, ToSchema, Clone, Copy, Debug)]
pub struct RatingsView {
    pub up: u32,
    pub down: u32,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationView {
    pub id: String,
    #[schema(value_type = String)]
    pub bot_id: BotId,
    pub user_id: Option<String>,
    /// `open`, `handed_off` or `closed`.
    #[schema(value_type = String)]
    pub state: ConversationState,
    /// The quick reply last chosen.
    pub intent: Option<String>,
    pub handed_off_at: Option<u64>,
    /// `visitor_request`, `topic`, `agent`, `api` or the reason given.
    pub handoff_reason: Option<String>,
    pub lead_id: Option<String>,
    /// How the visitor rated its answers.
    pub ratings: RatingsView,
    pub created: u64,
    pub updated: u64,
    /// Present when one conversation is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageView>>,
}

impl ConversationView {
    /// The conversation, with its messages when given.
    pub fn new(c: &Conversation, messages: Option<&[Message]>) -> ConversationView {
        ConversationView {
            id: c.id.clone(),
            bot_id: c.bot_id.clone(),
            user_id: c.user_id.clone(),
            state: c.state,
            intent: c.intent.clone(),
            handed_off_at: c.handed_off_at,
            handoff_reason: c.handoff_reason.clone(),
            lead_id: c.lead_id.clone(),
            ratings: RatingsView {
                up: c.ratings.up,
                down: c.ratings.down,
            },
            created: c.created,
            updated: c.updated,
            messages: messages.map(|m| m.iter().map(MessageView::from).collect()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ConversationList {
    pub data: Vec<ConversationView>,
    pub next_cursor: Option<String>,
}

/// An operator account as the API and the CLI show it: never its password hash.
#[derive(Serialize, ToSchema)]
pub struct AccountView {
    /// `acct_…`: safe to show and log.
    pub id: String,
    pub email: String,
    /// `owner` or `agent`.
    pub role: String,
    /// The bots an agent works on (empty for an owner: every bot).
    #[schema(value_type = Vec<String>)]
    pub bots: Vec<BotId>,
    pub created: u64,
}

impl From<&crate::accounts::Account> for AccountView {
    fn from(account: &crate::accounts::Account) -> AccountView {
        AccountView {
            id: account.id.clone(),
            email: account.email.clone(),
            role: account.role.as_str().to_string(),
            bots: account.bots.clone(),
            created: account.created,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    /// `key_…`: safe to show and log.
    pub id: String,
    /// The key's first characters, e.g. `sk_live_AbCd1234…`.
    pub prefix: String,
    /// `secret` or `public`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: KeyKind,
    /// `live` or `test`.
    #[schema(value_type = String)]
    pub env: KeyEnv,
    pub admin: bool,
    #[schema(value_type = Vec<String>)]
    pub bots: Vec<BotId>,
    pub origins: Vec<String>,
    pub name: Option<String>,
    pub created: u64,
    pub revoked: Option<u64>,
    pub expires: Option<u64>,
}

impl From<&ApiKey> for KeyView {
    fn from(key: &ApiKey) -> KeyView {
        KeyView {
            id: key.id.clone(),
            prefix: key.display_prefix(),
            kind: key.kind,
            env: key.env,
            admin: key.scope == KeyScope::Admin,
            bots: match &key.scope {
                KeyScope::Admin => Vec::new(),
                KeyScope::Bots(bots) => bots.clone(),
            },
            origins: key.origins.clone(),
            name: key.name.clone(),
            created: key.created,
            revoked: key.revoked,
            expires: key.expires,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub data: Vec<KeyView>,
    pub next_cursor: Option<String>,
}

/// A new key: `key` is shown here once and never again.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub record: KeyView,
    /// After a rotation: the old key, with its deadline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<KeyView>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    /// `whk_…`.
    pub id: String,
    #[schema(value_type = String)]
    pub bot_id: BotId,
    pub url: String,
    pub events: Vec<String>,
    /// The secret's first characters, to tell secrets apart.
    pub secret_prefix: String,
    /// During a rotation's overlap: when the previous secret stops signing.
    pub previous_secret_expires: Option<u64>,
    pub created: u64,
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> WebhookView {
        WebhookView {
            id: w.id.clone(),
            bot_id: w.bot_id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            secret_prefix: format!("{}…", w.secret.chars().take(10).collect::<String>()),
            previous_secret_expires: w.previous_until.filter(|u| *u > unix_now()),
            created: w.created,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<WebhookView>,
    pub next_cursor: Option<String>,
}

/// A webhook with its signing secret (`whsec_…`), shown on creation and rotation only.
#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    pub secret: String,
    #[serde(flatten)]
    pub webhook: WebhookView,
}

impl From<&Webhook> for CreatedWebhook {
    fn from(w: &Webhook) -> CreatedWebhook {
        CreatedWebhook {
            secret: w.secret.clone(),
            webhook: WebhookView::from(w),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AssistantMessage {
    pub role: String,
    pub content: String,
}

#[derive(Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

impl From<&Answer> for Usage {
    fn from(answer: &Answer) -> Usage {
        Usage {
            prompt_tokens: answer.timings.prompt_tokens,
            completion_tokens: answer.timings.completion_tokens,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ChatResponse {
    pub conversation_id: String,
    /// Absent (null) when a person has the conversation.
    pub message_id: Option<String>,
    pub message: Option<AssistantMessage>,
    /// The sources the answer cites; `index` is the n of its `[n]`.
    #[schema(value_type = Vec<super::schemas::SourceRef>)]
    pub sources: Vec<SourceRef>,
    /// `stop`, `length`, `unanswered`, `handed_off` or `cancelled`.
    #[schema(value_type = String)]
    pub finish_reason: &'static str,
    pub answered: bool,
    /// What the client should do next: `collect_lead` (show the lead form).
    #[schema(value_type = Vec<String>)]
    pub actions: Vec<&'static str>,
    /// The bot's contact text, when it could not answer or handed off.
    pub fallback: Option<String>,
    pub usage: Usage,
}

impl ChatResponse {
    /// A turn's answer as `POST /v1/chat` returns it without streaming.
    pub fn new(conversation_id: String, outcome: TurnOutcome) -> ChatResponse {
        let answer = &outcome.answer;
        ChatResponse {
            conversation_id,
            message_id: outcome.reply.as_ref().map(|r| r.id.clone()),
            message: outcome.reply.as_ref().map(|_| AssistantMessage {
                role: "assistant".into(),
                content: answer.answer.clone(),
            }),
            sources: answer.sources.clone(),
            finish_reason: outcome.finish_reason(),
            answered: answer.answered,
            actions: outcome.actions.clone(),
            fallback: outcome.fallback.clone(),
            usage: Usage::from(answer),
        }
    }
}

/// `/healthz` and `/readyz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready`, `loading`, `llm_unavailable` or `embedder_unavailable`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// Why an engine is out of reach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Health {
    pub fn is(status: &'static str) -> Health {
        Health {
            status,
            reason: None,
        }
    }
}

/// What a `DELETE` answers.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

impl Deleted {
    pub fn new(id: impl Into<String>) -> Deleted {
        Deleted {
            id: id.into(),
            deleted: true,
        }
    }
}

/// A source added: the crawl job it queued.
#[derive(Serialize, ToSchema)]
pub struct SourceAccepted {
    pub job_id: String,
    #[schema(value_type = super::schemas::JobView)]
    pub job: CrawlJob,
}

impl SourceAccepted {
    /// `job` as callers see it: credentials out of its URL and error.
    pub fn new(job: CrawlJob) -> SourceAccepted {
        SourceAccepted {
            job_id: job.id.clone(),
            job: redacted(job),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PageView {
    pub url: String,
    pub title: String,
    pub chunks: usize,
    /// `page` (from a crawl or an ingest) or `answer` (a curated answer).
    pub kind: &'static str,
    /// When an ingest last fetched it, or the answer was written (unix seconds).
    pub crawled: Option<u64>,
}

impl From<&Page> for PageView {
    fn from(page: &Page) -> PageView {
        PageView {
            url: page.url.clone(),
            title: page.title.clone(),
            chunks: page.chunk_ids.len(),
            kind: if crate::ingest::answers::is_curated(&page.url) {
                "answer"
            } else {
                "page"
            },
            crawled: page.crawled,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PageList {
    pub data: Vec<PageView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserErased {
    pub user_id: String,
    pub deleted_conversations: usize,
    pub deleted_leads: usize,
}

impl UserErased {
    pub fn new(user_id: String, erased: &Erased) -> UserErased {
        UserErased {
            user_id,
            deleted_conversations: erased.conversations.len(),
            deleted_leads: erased.leads,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    #[schema(value_type = Vec<super::schemas::Delivery>)]
    pub data: Vec<Delivery>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Redelivered {
    pub event_id: String,
    /// The webhooks it was queued for.
    pub webhooks: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LeadList {
    #[schema(value_type = Vec<super::schemas::Lead>)]
    pub data: Vec<Lead>,
    pub next_cursor: Option<String>,
}

/// A bot as an OpenAI model.
#[derive(Serialize, ToSchema)]
pub struct ModelView {
    pub id: String,
    #[schema(value_type = String)]
    pub object: &'static str,
    pub created: u64,
    #[schema(value_type = String)]
    pub owned_by: &'static str,
    pub name: String,
}

impl From<&Bot> for ModelView {
    fn from(bot: &Bot) -> ModelView {
        ModelView {
            id: bot.id.to_string(),
            object: "model",
            created: bot.created_unix,
            owned_by: "docent",
            name: bot.name.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    #[schema(value_type = String)]
    pub object: &'static str,
    pub data: Vec<ModelView>,
}

#[derive(Serialize, ToSchema)]
pub struct CompletionChoice {
    pub index: usize,
    pub message: AssistantMessage,
    #[schema(value_type = String)]
    pub finish_reason: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct CompletionUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl From<&Answer> for CompletionUsage {
    fn from(answer: &Answer) -> CompletionUsage {
        let usage = Usage::from(answer);
        CompletionUsage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
        }
    }
}

/// docent's own verdict on an OpenAI-style completion.
#[derive(Serialize, ToSchema)]
pub struct DocentVerdict {
    pub answered: bool,
    /// As `POST /v1/chat` spells it.
    #[schema(value_type = String)]
    pub finish_reason: &'static str,
    pub conversation_id: String,
    /// What the client should do next: `collect_lead`.
    #[schema(value_type = Vec<String>)]
    pub actions: Vec<&'static str>,
}

/// How OpenAI spells why an answer ended: `length` at the token limit, else `stop`.
pub fn openai_finish_reason(answer: &Answer) -> &'static str {
    match answer.finish {
        Some(Finish::Length) => "length",
        _ => "stop",
    }
}

/// `POST /v1/chat/completions` without streaming.
#[derive(Serialize, ToSchema)]
pub struct Completion {
    pub id: String,
    #[schema(value_type = String)]
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: CompletionUsage,
    #[schema(value_type = Vec<super::schemas::SourceRef>)]
    pub sources: Vec<SourceRef>,
    pub docent: DocentVerdict,
}

impl Completion {
    /// A turn's answer as a `chat.completion` (`finish_reason` OpenAI's: `stop` or
    /// `length`).
    pub fn new(
        id: String,
        model: String,
        created: u64,
        conversation_id: String,
        outcome: &TurnOutcome,
    ) -> Completion {
        let answer = &outcome.answer;
        let finish_reason = openai_finish_reason(answer);
        Completion {
            id,
            object: "chat.completion",
            created,
            model,
            choices: vec![CompletionChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content: answer.answer.clone(),
                },
                finish_reason,
            }],
            usage: CompletionUsage::from(answer),
            sources: answer.sources.clone(),
            docent: DocentVerdict {
                answered: answer.answered,
                finish_reason: outcome.finish_reason(),
                conversation_id,
                actions: outcome.actions.clone(),
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WidgetIntent {
    pub id: String,
    pub label: String,
}

/// What the widget shows of its bot.
#[derive(Serialize, ToSchema)]
pub struct WidgetBot {
    pub id: String,
    pub name: String,
    pub fallback: Option<String>,
    pub intents: Vec<WidgetIntent>,
    /// `off`, `on_detection` or `after_messages`.
    #[schema(value_type = String)]
    pub lead_capture: &'static str,
}

impl From<&Bot> for WidgetBot {
    fn from(bot: &Bot) -> WidgetBot {
        let settings = &bot.settings;
        WidgetBot {
            id: bot.id.to_string(),
            name: bot.name.clone(),
            fallback: settings.fallback.clone(),
            intents: settings
                .intents
                .iter()
                .map(|i| WidgetIntent {
                    id: i.id.clone(),
                    label: i.label.clone(),
                })
                .collect(),
            lead_capture: match settings.lead_capture {
                LeadCapture::Off => "off",
                LeadCapture::OnDetection => "on_detection",
                LeadCapture::AfterMessages { .. } => "after_messages",
            },
        }
    }
}

/// A rotated widget session secret: tokens issued from now on use the new secret; those
/// issued before verify until `previous_valid_until`.
#[derive(Serialize, ToSchema)]
pub struct SessionSecretRotation {
    /// Unix time of the rotation.
    pub rotated_at: u64,
    /// Unix time the replaced secret stops verifying (null when there was none).
    pub previous_valid_until: Option<u64>,
}

/// A widget session: send `session_token` as `Authorization: Bearer`, from the same
/// origin, until `expires_at`.
#[derive(Serialize, ToSchema)]
pub struct WidgetSession {
    /// `ws_…`
    pub session_token: String,
    pub expires_at: u64,
    pub expires_in: u64,
    pub visitor_id: String,
    pub bot: WidgetBot,
}
