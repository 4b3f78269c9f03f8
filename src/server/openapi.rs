//! The OpenAPI 3 document served at `/openapi.json`, generated from the handlers'
//! `#[utoipa::path]` attributes and the schemas below (response shapes the handlers build
//! as JSON; request bodies derive their schemas where they are defined).

#![allow(dead_code)] // Response types exist for their schemas.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::schemas::SourceRef;
use super::{analytics, api, chat, handoff, leads, openai, webhooks, widget};

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code, e.g. `bot_not_found`.
    pub code: String,
    pub message: String,
    /// Also in the `X-Request-Id` header; the server log has the details under it.
    pub request_id: String,
}

/// Every error: `{"error": {"code", "message", "request_id"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// One Server-Sent Event of a streamed answer: `data` is one JSON object (docent's
/// `start`, `sources`, `{"delta"}`, `done` or `error`; or an OpenAI chunk, then `[DONE]`).
#[derive(Serialize, ToSchema)]
pub struct SseEvent {
    pub data: String,
    pub event: Option<String>,
    pub id: Option<String>,
    pub retry: Option<u64>,
}

/// The error statuses every authenticated route may answer, each with the envelope.
#[derive(utoipa::IntoResponses)]
pub enum ApiErrors {
    #[response(status = 400, description = "Malformed or invalid request")]
    BadRequest(ErrorEnvelope),
    #[response(status = 401, description = "Missing or invalid API key")]
    Unauthorized(ErrorEnvelope),
    #[response(status = 403, description = "The key may not do this")]
    Forbidden(ErrorEnvelope),
    #[response(status = 404, description = "Not found")]
    NotFound(ErrorEnvelope),
    #[response(status = 405, description = "Method not allowed")]
    MethodNotAllowed(ErrorEnvelope),
    #[response(status = 409, description = "Conflict")]
    Conflict(ErrorEnvelope),
    #[response(status = 413, description = "Body too large")]
    PayloadTooLarge(ErrorEnvelope),
    #[response(status = 415, description = "Not JSON")]
    UnsupportedMediaType(ErrorEnvelope),
    #[response(status = 429, description = "Rate limited (see Retry-After)")]
    RateLimited(ErrorEnvelope),
    #[response(status = 500, description = "Internal error")]
    Internal(ErrorEnvelope),
    #[response(status = 503, description = "Loading or overloaded (see Retry-After)")]
    Unavailable(ErrorEnvelope),
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `loading`.
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct SourceScheduleView {
    pub url: String,
    pub recrawl_every: Option<u64>,
    pub last_crawl: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct BotView {
    pub id: String,
    pub name: String,
    pub source: String,
    pub pages: u64,
    pub chunks: u64,
    pub test: bool,
    pub system_prompt: Option<String>,
    pub top_k: Option<usize>,
    pub min_score: Option<f32>,
    pub allowed_targets: Vec<String>,
    pub sources: Vec<SourceScheduleView>,
    pub lead_capture: super::schemas::LeadCapture,
    pub handoff_topics: Vec<String>,
    pub fallback: Option<String>,
    pub intents: Vec<super::schemas::Intent>,
    pub created: u64,
    pub updated: u64,
}

#[derive(Serialize, ToSchema)]
pub struct BotList {
    pub data: Vec<BotView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

#[derive(Serialize, ToSchema)]
pub struct SourceAccepted {
    pub job_id: String,
    pub job: super::jobs::JobView,
}

#[derive(Serialize, ToSchema)]
pub struct PageView {
    pub url: String,
    pub title: String,
    pub chunks: usize,
}

#[derive(Serialize, ToSchema)]
pub struct PageList {
    pub data: Vec<PageView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    /// `user`, `assistant` or `agent`.
    pub role: String,
    pub content: String,
    pub sources: Vec<SourceRef>,
    pub created: u64,
    /// Agent messages: who wrote it.
    pub author: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationView {
    pub id: String,
    pub bot_id: String,
    pub user_id: Option<String>,
    /// `open` or `handed_off`.
    pub state: String,
    /// The quick reply last chosen.
    pub intent: Option<String>,
    pub handed_off_at: Option<u64>,
    /// `visitor_request`, `topic`, `agent`, `api` or the reason given.
    pub handoff_reason: Option<String>,
    pub lead_id: Option<String>,
    pub created: u64,
    pub updated: u64,
    /// Present when one conversation is read.
    pub messages: Option<Vec<MessageView>>,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationList {
    pub data: Vec<ConversationView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserErased {
    pub user_id: String,
    pub deleted_conversations: usize,
    pub deleted_leads: usize,
}

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    /// `key_…`: safe to show and log.
    pub id: String,
    /// The key's first characters, e.g. `sk_live_AbCd1234…`.
    pub prefix: String,
    /// `secret` or `public`.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: String,
    /// `live` or `test`.
    pub env: String,
    pub admin: bool,
    pub bots: Vec<String>,
    pub origins: Vec<String>,
    pub name: Option<String>,
    pub created: u64,
    pub revoked: Option<u64>,
    pub expires: Option<u64>,
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
    pub replaces: Option<KeyView>,
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

#[derive(Serialize, ToSchema)]
pub struct ChatResponse {
    pub conversation_id: String,
    /// Absent (null) when a person has the conversation.
    pub message_id: Option<String>,
    pub message: Option<AssistantMessage>,
    /// The sources the answer cites; `index` is the n of its `[n]`.
    pub sources: Vec<SourceRef>,
    /// `stop`, `length`, `unanswered`, `handed_off` or `cancelled`.
    pub finish_reason: String,
    pub answered: bool,
    /// What the client should do next: `collect_lead` (show the lead form).
    pub actions: Vec<String>,
    /// The bot's contact text, when it could not answer or handed off.
    pub fallback: Option<String>,
    pub usage: Usage,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    /// `whk_…`.
    pub id: String,
    pub bot_id: String,
    pub url: String,
    pub events: Vec<String>,
    /// The secret's first characters, to tell secrets apart.
    pub secret_prefix: String,
    /// During a rotation's overlap: when the previous secret stops signing.
    pub previous_secret_expires: Option<u64>,
    pub created: u64,
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

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<super::schemas::Delivery>,
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
    pub data: Vec<super::schemas::Lead>,
    pub next_cursor: Option<String>,
}

/// What a webhook receives: `POST` with this body and `Docent-Signature`.
#[derive(Serialize, ToSchema)]
pub struct EventPayload {
    /// `evt_…`: the same on every attempt; dedupe on it.
    pub id: String,
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: String,
    pub created: u64,
    pub data: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct ModelView {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelView>,
}

#[derive(Serialize, ToSchema)]
pub struct CompletionChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub finish_reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct CompletionUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Serialize, ToSchema)]
pub struct DocentVerdict {
    pub answered: bool,
    pub finish_reason: String,
    pub conversation_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct Completion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: CompletionUsage,
    pub sources: Vec<SourceRef>,
    pub docent: DocentVerdict,
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
    pub lead_capture: String,
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

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (sk_live_…, sk_test_… or pk_…) or a widget session token (ws_…)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "docent API",
        description = "Grounded, cited answers from your own content. Errors share one envelope; see README.md for the codes."
    ),
    paths(
        api::healthz, api::readyz, api::metrics,
        api::list_bots, api::create_bot, api::get_bot, api::update_bot, api::delete_bot,
        api::add_source, api::list_pages, api::get_job,
        api::list_conversations, api::create_conversation, api::get_conversation,
        api::delete_conversation, api::delete_user,
        api::list_keys, api::create_key, api::revoke_key, api::rotate_key,
        chat::chat, openai::models, openai::completions, openapi_json,
        handoff::handoff, handoff::agent_message, handoff::events,
        leads::create_lead, leads::list_leads,
        webhooks::create_webhook, webhooks::list_webhooks, webhooks::get_webhook,
        webhooks::delete_webhook, webhooks::rotate, webhooks::list_deliveries,
        webhooks::redeliver, analytics::analytics, widget::create_session,
    ),
    components(schemas(EventPayload, ErrorEnvelope, ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "chat", description = "Answers"),
        (name = "openai", description = "OpenAI-compatible"),
        (name = "conversations", description = "Conversations and end users"),
        (name = "bots", description = "Bots, their content and crawl jobs"),
        (name = "keys", description = "API keys"),
        (name = "leads", description = "Visitors' contact details"),
        (name = "webhooks", description = "Signed event deliveries"),
        (name = "widget", description = "The embeddable chat widget's sessions"),
        (name = "health", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/openapi.json", tag = "health", summary = "This document",
    responses((status = 200, description = "OpenAPI 3 document", body = Object)))]
pub(crate) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(api::resource("/openapi.json", "GET").route(web::get().to(openapi_json)));
}
