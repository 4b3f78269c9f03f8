//! `POST /v1/chat`: one turn of a conversation, answered in one JSON body or streamed as
//! Server-Sent Events.
//!
//! The stream is `data:` lines only: `start`, then `sources` (the retrieved candidates,
//! before the first token), `{"delta"}` pieces, and `done`; a failure after the start sends
//! `error` and ends. A comment line every 15 s keeps proxies from closing an idle stream.
//! When the client goes away the stream's receiver is dropped, the next token send fails,
//! and generation stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use super::AppState;
use super::api::{self, blocking, load_bot, load_conversation, parse_bot_id, resource};
use super::auth::Caller;
use super::budget::Charge;
use super::error::{ApiError, ApiResult, REQUEST_ID, current_request_id};
use super::metrics::AnswerSample;
#[allow(unused_imports)]
use super::openapi::*;
use super::queue::{QueueError, Queued};
use super::sse::{self, Heartbeat};
use crate::chat::{Answer, AskOptions, SourceRef};
use crate::domain::{BotId, Role};
use crate::llm::ChatMessage;
use crate::remote::{EmbedError, EngineError};
use crate::services::turn::{Sink, Turn, TurnOutcome, TurnService, strip_citations};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/chat", "POST").route(web::post().to(chat)));
}

/// One turn: `message` (with an optional `conversation_id`), or the whole history as
/// `messages`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ChatRequest {
    #[schema(required = true, value_type = String, pattern = "^[a-z0-9-]{1,64}$")]
    pub bot_id: Option<String>,
    #[schema(min_length = 1, max_length = 4000, pattern = "\\S")]
    pub message: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Your end user's id (1 to 128 printable characters), to find and erase their data.
    #[schema(pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,128}$")]
    pub user_id: Option<String>,
    #[serde(default)]
    pub stream: bool,
    /// Client-managed history instead of `message` + `conversation_id`.
    #[schema(min_items = 1)]
    pub messages: Option<Vec<InMessage>>,
    /// The id of one of the bot's `intents` (a quick reply the visitor chose). Stored on
    /// the conversation and carried in its events; without `message`, the intent's message
    /// (or label) is asked.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub intent: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InMessage {
    /// `user` or `assistant`; the last message must be the user's.
    #[schema(pattern = "^(user|assistant)$")]
    pub role: String,
    #[schema(min_length = 1, max_length = 4000, pattern = "\\S")]
    pub content: String,
}

#[utoipa::path(post, path = "/v1/chat", tag = "chat", summary = "Ask a bot; JSON, or Server-Sent Events with stream = true", request_body = ChatRequest, security(("bearer" = [])), responses((status = 200, description = "The answer (or, streaming, text/event-stream of data: lines)", content((ChatResponse = "application/json"), (SseEvent = "text/event-stream"))), ApiErrors))]
pub(crate) async fn chat(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<ChatRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let stream = body.stream;
    let turn = prepare(&state, &caller, body).await?;
    let admission = admit(&state, &caller, &turn.bot)?;
    if stream {
        Ok(stream_turn(state.into_inner(), turn, admission))
    } else {
        blocking_turn(state.into_inner(), turn, admission).await
    }
}

/// A slot for one chat request: 503 when the models are loading or the queue is full. An
/// admitted request from a public caller is then charged to its budgets (a refused one
/// never is), and refused with 429 when one is spent.
pub fn admit(state: &AppState, caller: &Caller, bot: &BotId) -> ApiResult<Admission> {
    state.engine()?;
    let permit = state.admission.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable(
            "overloaded",
            "too many chat requests are in flight; retry shortly",
            2,
        )
    })?;
    let charge = charge_budgets(state, caller, bot)?;
    Ok(Admission { permit, charge })
}

/// A chat request's place among those in flight, and what it cost the caller's budgets
/// (given back if it never gets a turn at the model).
pub struct Admission {
    permit: OwnedSemaphorePermit,
    charge: Charge,
}

/// What public keys and widget sessions do (messages, new conversations, handoffs, leads)
/// comes out of hourly budgets, on top of the rate limits: the visitor's (a session's
/// visitor, or a bare public key's client address), the client address's (ten visitors'
/// worth, since visitor ids are the client's to choose), the address's share of the bot's
/// budget, and the bot's. Secret keys have none.
pub fn charge_budgets(state: &AppState, caller: &Caller, bot: &BotId) -> ApiResult<Charge> {
    if caller.key.kind != crate::keys::KeyKind::Public {
        return Ok(Charge::default());
    }
    let address = caller.tenant.rsplit('@').next().unwrap_or_default();
    let visitor = match &caller.visitor {
        Some(visitor) => format!("{}#{visitor}", caller.key.id),
        None => caller.tenant.clone(),
    };
    let mut wanted = Vec::with_capacity(4);
    if let Some(budget) = &state.per_visitor {
        wanted.push((budget, visitor));
    }
    if let (Some(budget), Some(_)) = (&state.per_address, &caller.visitor) {
        wanted.push((budget, caller.tenant.clone()));
    }
    if let Some(budget) = &state.per_bot_address {
        wanted.push((budget, format!("{bot}@{address}")));
    }
    if let Some(budget) = &state.per_bot {
        wanted.push((budget, bot.to_string()));
    }
    // All or nothing: a refusal by one budget takes nothing from the others.
    state.budgets.charge(&wanted)
}

/// Validates the request and loads what the turn needs: the bot (with the caller's right
/// to use it), the conversation (new or continued) and the earlier turns.
pub async fn prepare(state: &AppState, caller: &Caller, body: ChatRequest) -> ApiResult<Turn> {
    let started_ms = crate::ids::now_ms();
    let raw_bot = body
        .bot_id
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("missing_field", "bot_id is required"))?;
    let bot = parse_bot_id(raw_bot)?;
    let record = load_bot(state, caller, &bot).await?;
    let (bot_version, settings) = (record.updated_unix, record.settings);
    let user_id = api::caller_user_id(caller, body.user_id)?;
    let intent = match &body.intent {
        Some(id) => Some(
            settings
                .intents
                .iter()
                .find(|i| &i.id == id)
                .cloned()
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "unknown_intent",
                        format!("bot {bot} has no intent {id:?}"),
                    )
                })?,
        ),
        None => None,
    };
    let limit = state.limits.max_message_chars;
    let check_length = |text: &str| {
        let chars = text.chars().count();
        if chars > limit {
            Err(ApiError::bad_request(
                "message_too_long",
                format!("the message is {chars} characters; the limit is {limit}"),
            ))
        } else {
            Ok(())
        }
    };
    if let Some(messages) = body.messages {
        if body.message.is_some() || body.conversation_id.is_some() {
            return Err(ApiError::bad_request(
                "invalid_request",
                "send either `messages` or `message` (with an optional `conversation_id`), not both",
            ));
        }
        let Some((last, earlier)) = messages.split_last() else {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`messages` is empty",
            ));
        };
        if last.role != "user" || last.content.trim().is_empty() {
            return Err(ApiError::bad_request(
                "invalid_request",
                "the last of `messages` must be a non-empty user message",
            ));
        }
        let mut history = Vec::with_capacity(earlier.len());
        for m in messages.iter() {
            if !matches!(m.role.as_str(), "user" | "assistant") {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!(
                        "message role {:?}: use user or assistant (the bot sets its own system prompt)",
                        m.role
                    ),
                ));
            }
            check_length(&m.content)?;
        }
        for m in earlier {
            history.push(ChatMessage::new(&m.role, m.content.clone()));
        }
        let mut conversation = api::new_conversation(&bot, user_id, &caller.key.id);
        conversation.intent = intent.map(|i| i.id);
        return Ok(Turn {
            conversation,
            bot,
            bot_version,
            settings,
            history,
            question: last.content.trim().to_string(),
            tenant: caller.tenant.clone(),
            started_ms,
        });
    }
    let message = body
        .message
        .or_else(|| {
            intent
                .as_ref()
                .map(|i| i.message.clone().unwrap_or_else(|| i.label.clone()))
        })
        .ok_or_else(|| ApiError::bad_request("missing_field", "message is required"))?;
    if message.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_request", "message is empty"));
    }
    check_length(&message)?;
    let (mut conversation, history) = match body.conversation_id {
        Some(id) => {
            let conversation = load_conversation(state, caller, &id).await?;
            if conversation.bot_id != bot {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("conversation {id} belongs to bot {}", conversation.bot_id),
                ));
            }
            let messages = state.stored(move |store| store.messages(&id)).await?;
            let history = messages
                .iter()
                .filter(|m| matches!(m.role, Role::User | Role::Assistant))
                .map(|m| ChatMessage::new(m.role.as_str(), strip_citations(&m.content)))
                .collect();
            (conversation, history)
        }
        None => (
            api::new_conversation(&bot, user_id, &caller.key.id),
            Vec::new(),
        ),
    };
    if let Some(intent) = intent {
        conversation.intent = Some(intent.id);
    }
    Ok(Turn {
        bot,
        bot_version,
        settings,
        conversation,
        history,
        question: message.trim().to_string(),
        tenant: caller.tenant.clone(),
        started_ms,
    })
}

/// A turn that waited out `max_wait` without a turn at the model, found a remote engine
/// out of reach, or a bot it cannot search yet (another embedder's vectors), is refused:
/// what it cost the caller's budgets comes back.
fn refund_if_unserved(state: &AppState, charge: &Charge, error: &anyhow::Error) {
    let engine_down = matches!(error.downcast_ref(), Some(EngineError::Unavailable(_)))
        || matches!(
            error.downcast_ref(),
            Some(EmbedError(EngineError::Unavailable(_)))
        )
        || error
            .downcast_ref::<crate::domain::EmbedderMismatch>()
            .is_some();
    if engine_down || matches!(error.downcast_ref(), Some(QueueError::TimedOut(_))) {
        state.budgets.refund(charge);
    }
}

/// Answers the turn through the turn service (blocking): generation waits for its turn in
/// the fair queue, giving up when `gone` says the client left; stored turns reach the live
/// feeds, and answers the bot gave reach the metrics.
fn answer_turn(
    state: &AppState,
    turn: &Turn,
    options: &AskOptions,
    gone: &(dyn Fn() -> bool + Sync),
    sink: Sink<'_>,
) -> anyhow::Result<TurnOutcome> {
    let engine = state
        .engine
        .get()
        .ok_or_else(|| anyhow::anyhow!("models not loaded"))?;
    let generator = Queued {
        inner: engine.generator.as_ref(),
        queue: &state.queue,
        caller: &turn.tenant,
        cancelled: gone,
    };
    let service = TurnService {
        store: state.store.as_ref(),
        retriever: &engine.retriever,
        generator: &generator,
        answers: state.answers.as_ref(),
        listener: &state.live,
        timeout: state.limits.request_timeout,
    };
    let outcome = service.answer(turn, options, sink)?;
    if !outcome.handed_off {
        let answer = &outcome.answer;
        state.metrics.answer(AnswerSample {
            answered: answer.answered,
            cached: outcome.cached,
            completion_tokens: answer.timings.completion_tokens,
            ttft_s: answer.timings.ttft_ms / 1000.0,
            total_s: answer.timings.total_ms / 1000.0,
        });
    }
    Ok(outcome)
}

/// Sets its flag when dropped: the blocking work sees that the request is gone.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Answers a turn off the async workers; the answer stops early if the request is dropped.
pub async fn run_blocking(
    state: Arc<AppState>,
    turn: Turn,
    admission: Admission,
    options: AskOptions,
) -> ApiResult<TurnOutcome> {
    let cancelled = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancelled.clone());
    let request_id = current_request_id();
    blocking(move || {
        let Admission { permit, charge } = admission;
        let _permit = permit;
        REQUEST_ID.sync_scope(request_id, || {
            let gone = || cancelled.load(Ordering::Relaxed);
            let sink = Sink {
                on_retrieved: &mut |_| {},
                on_token: &mut |_| !gone(),
            };
            answer_turn(&state, &turn, &options, &gone, sink)
                .inspect_err(|e| refund_if_unserved(&state, &charge, e))
                .map_err(ApiError::from)
        })
    })
    .await
}

async fn blocking_turn(
    state: Arc<AppState>,
    turn: Turn,
    admission: Admission,
) -> ApiResult<HttpResponse> {
    let conversation_id = turn.conversation.id.clone();
    let options = state.options.clone();
    let outcome = run_blocking(state, turn, admission, options).await?;
    Ok(HttpResponse::Ok().json(ChatResponse::new(conversation_id, outcome)))
}

/// How a stream's events are spelled: docent's own events, or OpenAI's
/// `chat.completion.chunk` objects.
pub enum Wire {
    Docent,
    OpenAi {
        id: String,
        model: String,
        created: u64,
    },
}

impl Wire {
    fn start(&self, conversation_id: &str) -> Bytes {
        match self {
            Wire::Docent => {
                sse::data(&json!({"event": "start", "conversation_id": conversation_id}))
            }
            Wire::OpenAi { .. } => sse::data(&self.chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
                None,
            )),
        }
    }

    fn sources(&self, sources: &[SourceRef]) -> Option<Bytes> {
        match self {
            Wire::Docent => Some(sse::data(&json!({"event": "sources", "sources": sources}))),
            Wire::OpenAi { .. } => None,
        }
    }

    fn delta(&self, piece: &str) -> Bytes {
        match self {
            Wire::Docent => sse::data(&json!({"delta": piece})),
            Wire::OpenAi { .. } => {
                sse::data(&self.chunk(json!({"content": piece}), Value::Null, None))
            }
        }
    }

    fn done(&self, conversation_id: &str, outcome: &TurnOutcome) -> Bytes {
        let answer = &outcome.answer;
        match self {
            Wire::Docent => sse::data(&json!({
                "event": "done",
                "conversation_id": conversation_id,
                "message_id": outcome.reply.as_ref().map(|r| &r.id),
                "finish_reason": outcome.finish_reason(),
                "answered": answer.answered,
                "cited": answer.sources.iter().map(|s| s.index).collect::<Vec<_>>(),
                "sources": answer.sources,
                "actions": outcome.actions,
                "fallback": outcome.fallback,
                "usage": Usage::from(answer),
            })),
            Wire::OpenAi { .. } => {
                let mut last =
                    self.chunk(json!({}), json!(openai_finish_reason(answer)), Some(answer));
                last["sources"] = json!(answer.sources);
                last["docent"] = json!({
                    "answered": answer.answered,
                    "conversation_id": conversation_id,
                    "finish_reason": outcome.finish_reason(),
                    "actions": outcome.actions,
                });
                let mut bytes = sse::data(&last).to_vec();
                bytes.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(bytes)
            }
        }
    }

    fn error(&self, error: &ApiError) -> Bytes {
        match self {
            Wire::Docent => {
                sse::data(&json!({"event": "error", "code": error.code, "message": error.message}))
            }
            Wire::OpenAi { .. } => sse::data(
                &json!({"error": {"code": error.code, "message": error.message, "type": "server_error"}}),
            ),
        }
    }

    fn chunk(&self, delta: Value, finish: Value, answer: Option<&Answer>) -> Value {
        let Wire::OpenAi { id, model, created } = self else {
            return Value::Null;
        };
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        if let Some(answer) = answer {
            chunk["usage"] = json!(CompletionUsage::from(answer));
        }
        chunk
    }
}

fn stream_turn(state: Arc<AppState>, turn: Turn, admission: Admission) -> HttpResponse {
    let options = state.options.clone();
    run_streaming(state, turn, admission, Wire::Docent, options)
}

/// Streams a turn as Server-Sent Events in the given wire format.
pub fn run_streaming(
    state: Arc<AppState>,
    turn: Turn,
    admission: Admission,
    wire: Wire,
    options: AskOptions,
) -> HttpResponse {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let conversation_id = turn.conversation.id.clone();
    let _ = tx.try_send(wire.start(&conversation_id));
    let request_id = current_request_id();
    actix_web::rt::task::spawn_blocking(move || {
        let Admission { permit, charge } = admission;
        let _permit = permit;
        REQUEST_ID.sync_scope(request_id, || {
            let sender = tx.clone();
            let gone = || tx.is_closed();
            let mut last_write = std::time::Instant::now();
            let sink = Sink {
                on_retrieved: &mut |sources| {
                    if let Some(event) = wire.sources(sources) {
                        let _ = sender.blocking_send(event);
                    }
                },
                on_token: &mut |piece| {
                    if piece.is_empty() {
                        // Nothing to show yet: is the client still there?
                        if last_write.elapsed() < sse::PROBE_EVERY {
                            return !sender.is_closed();
                        }
                        last_write = std::time::Instant::now();
                        return sender.blocking_send(Bytes::from_static(sse::PROBE)).is_ok();
                    }
                    last_write = std::time::Instant::now();
                    sender.blocking_send(wire.delta(piece)).is_ok()
                },
            };
            let result = answer_turn(&state, &turn, &options, &gone, sink);
            let last = match result {
                Ok(outcome) => wire.done(&conversation_id, &outcome),
                Err(e) => {
                    refund_if_unserved(&state, &charge, &e);
                    wire.error(&ApiError::from(e))
                }
            };
            let _ = tx.blocking_send(last);
        });
    });
    sse::response(rx, Heartbeat::Here)
}
