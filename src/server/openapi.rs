//! The OpenAPI 3 document served at `/openapi.json`, generated from the handlers'
//! `#[utoipa::path]` attributes, the response types of `views.rs` and the request bodies
//! where they are defined; below, the error envelope and the shapes that are not a Rust
//! response (an SSE event, a webhook's payload).

#![allow(dead_code)] // `SseEvent` and `EventPayload` exist for their schemas.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

pub use super::views::*;
use super::{
    accounts, analytics, answers, api, chat, documents, feedback, handoff, leads, openai,
    questions, sessions, webhooks, widget,
};

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
        api::add_source, documents::upload_documents, api::list_pages, api::remove_page, api::get_job,
        answers::list, answers::create, answers::update, answers::delete,
        questions::list, questions::create, questions::delete,
        api::list_conversations, api::create_conversation, api::get_conversation,
        api::delete_conversation, api::delete_user,
        api::list_keys, api::create_key, api::revoke_key, api::rotate_key,
        accounts::list_accounts, accounts::create_account, accounts::delete_account,
        accounts::end_sessions,
        sessions::login, sessions::current, sessions::logout,
        chat::chat, openai::models, openai::completions, openapi_json,
        handoff::handoff, handoff::agent_message, handoff::events, handoff::resume,
        handoff::close, feedback::rate,
        leads::create_lead, leads::list_leads,
        webhooks::create_webhook, webhooks::list_webhooks, webhooks::get_webhook,
        webhooks::delete_webhook, webhooks::rotate, webhooks::list_deliveries,
        webhooks::redeliver, analytics::analytics, widget::create_session,
        widget::rotate_session_secret,
    ),
    components(schemas(EventPayload, ErrorEnvelope, ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "chat", description = "Answers"),
        (name = "openai", description = "OpenAI-compatible"),
        (name = "conversations", description = "Conversations and end users"),
        (name = "bots", description = "Bots, their content and crawl jobs"),
        (name = "keys", description = "API keys"),
        (name = "accounts", description = "Operator accounts (the console's logins)"),
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
