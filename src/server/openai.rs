//! OpenAI-compatible routes, so the official `openai` SDKs work unmodified: bots are
//! models (`GET /v1/models`), and `POST /v1/chat/completions` answers from the bot named by
//! `model`, blocking or streamed as `chat.completion.chunk` objects ending in
//! `data: [DONE]`. The cited sources ride along in an extra `sources` field, and docent's
//! own verdict (`answered`, its finish reason, the conversation id) in `docent`.
//!
//! The caller's `system` messages are ignored: a bot's rules are its own, and a visitor must
//! not be able to rewrite them. Sampling knobs (`temperature`, `top_p`, ...) are accepted
//! and ignored; `max_tokens` lowers the reply budget.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::api::resource;
use super::auth::Caller;
use super::chat::{self, ChatRequest, InMessage, Wire};
use super::error::{ApiError, ApiResult};
#[allow(unused_imports)]
use super::openapi::*;
use crate::telemetry::unix_now;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/models", "GET").route(web::get().to(models)))
        .service(resource("/v1/chat/completions", "POST").route(web::post().to(completions)));
}

#[utoipa::path(get, path = "/v1/models", tag = "openai", summary = "Bots as OpenAI models", security(("bearer" = [])), responses((status = 200, description = "Models", body = ModelList), ApiErrors))]
pub(crate) async fn models(state: web::Data<AppState>, caller: Caller) -> ApiResult<HttpResponse> {
    let bots = state.stored(move |store| store.list_bots()).await?;
    Ok(HttpResponse::Ok().json(ModelList {
        object: "list",
        data: bots
            .iter()
            .filter(|b| caller.may_see(b))
            .map(ModelView::from)
            .collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct CompletionRequest {
    /// The bot id.
    #[schema(required = true, value_type = String, pattern = "^[a-z0-9-]{1,64}$")]
    model: Option<String>,
    /// Ending with a user message; `system` messages are ignored.
    #[schema(required = true, value_type = Vec<OpenAiMessage>, min_items = 1)]
    messages: Option<Vec<OpenAiMessage>>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    user: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct OpenAiMessage {
    /// `user`, `assistant`, `system` or `developer`.
    #[schema(pattern = "^(user|assistant|system|developer)$")]
    role: String,
    /// A string, or an array of parts of which `{"type": "text", "text"}` parts count.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    content: Option<Content>,
}

/// A message's content: a string, or an array of parts of which the text parts count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", summary = "OpenAI-compatible chat completion (model = bot id)", request_body = CompletionRequest, security(("bearer" = [])), responses((status = 200, description = "A chat.completion (or chunk stream ending in data: [DONE])", content((Completion = "application/json"), (SseEvent = "text/event-stream"))), ApiErrors))]
pub(crate) async fn completions(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<CompletionRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let model = body
        .model
        .ok_or_else(|| ApiError::bad_request("missing_field", "model (the bot id) is required"))?;
    let messages = body
        .messages
        .ok_or_else(|| ApiError::bad_request("missing_field", "messages is required"))?;
    let messages: Vec<InMessage> = messages
        .into_iter()
        .filter(|m| !matches!(m.role.as_str(), "system" | "developer"))
        .map(|m| InMessage {
            content: m.content.as_ref().map(Content::text).unwrap_or_default(),
            role: m.role,
        })
        .collect();
    let request = ChatRequest {
        bot_id: Some(model.clone()),
        message: None,
        conversation_id: None,
        user_id: body.user,
        stream: body.stream,
        messages: Some(messages),
        intent: None,
    };
    let turn = chat::prepare(&state, &caller, request).await?;
    let admission = chat::admit(&state, &caller, &turn.bot)?;
    let id = crate::ids::completion();
    let created = unix_now();
    let state = state.into_inner();
    let mut options = state.options.clone();
    if let Some(limit) = body.max_completion_tokens.or(body.max_tokens) {
        // A per-request reply budget, never above the server's.
        options.generation.max_tokens = limit.clamp(1, options.generation.max_tokens);
    }
    if body.stream {
        return Ok(chat::run_streaming(
            state,
            turn,
            admission,
            Wire::OpenAi { id, model, created },
            options,
        ));
    }
    let conversation_id = turn.conversation.id.clone();
    let outcome = chat::run_blocking(state, turn, admission, options).await?;
    Ok(HttpResponse::Ok().json(Completion::new(
        id,
        model,
        created,
        conversation_id,
        &outcome,
    )))
}
