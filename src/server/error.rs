//! The API's one error envelope, `{"error": {"code", "message", "request_id"}}`, and the
//! mapping from every failure (bad JSON, auth, store errors, internal faults) onto it.
//!
//! Codes are stable snake_case strings; README.md lists them. A 500 tells the client
//! nothing but the request id; the full cause goes to the log under that id.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};

use super::openapi::{ErrorBody, ErrorEnvelope};
use super::queue::QueueError;
use crate::domain::EmbedderMismatch;
use crate::ports;
use crate::remote::{EmbedError, EngineError};

tokio::task_local! {
    /// The current request's id, set by the request-id middleware around each handler.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(|id| id.clone())
        .unwrap_or_else(|_| "unknown".into())
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after: u64,
    ) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// A fault of ours: logged in full under the request id, opaque to the client.
    pub fn internal(cause: &anyhow::Error) -> ApiError {
        let request_id = current_request_id();
        tracing::error!(request_id, "internal error: {cause:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("internal error; the server log has the cause under request id {request_id}"),
        )
    }

    /// The envelope every error answers with.
    pub fn body(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code.to_string(),
                message: self.message.clone(),
                request_id: current_request_id(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status).json(self.body());
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<ports::Error> for ApiError {
    fn from(e: ports::Error) -> ApiError {
        match e {
            ports::Error::BotNotFound(id) => {
                ApiError::not_found("bot_not_found", format!("no bot with id \"{id}\""))
            }
            ports::Error::BotExists(id) => ApiError::new(
                StatusCode::CONFLICT,
                "bot_exists",
                format!("a bot with id \"{id}\" already exists"),
            ),
            ports::Error::ConversationNotFound(id) => ApiError::not_found(
                "conversation_not_found",
                format!("no conversation with id {id:?}"),
            ),
            ports::Error::KeyNotFound(id) => {
                ApiError::not_found("key_not_found", format!("no key with id {id:?}"))
            }
            ports::Error::AccountExists(email) => ApiError::new(
                StatusCode::CONFLICT,
                "account_exists",
                format!("an account with the email {email:?} already exists"),
            ),
            ports::Error::MessageNotFound(id) => {
                ApiError::not_found("message_not_found", format!("no message with id {id:?}"))
            }
            ports::Error::NotAnAnswer(id) => ApiError::bad_request(
                "not_an_answer",
                format!("message {id:?} is not the bot's answer: only answers are rated"),
            ),
            ports::Error::Unavailable(why) => {
                tracing::warn!("store unavailable: {why}");
                ApiError::unavailable(
                    "store_unavailable",
                    "the database is unavailable; retry shortly",
                    5,
                )
            }
            other => ApiError::internal(&anyhow::Error::new(other)),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        if let Some(waited) = e.downcast_ref::<QueueError>() {
            return ApiError::unavailable("overloaded", waited.to_string(), 5);
        }
        if let Some(EmbedError(engine)) = e.downcast_ref::<EmbedError>() {
            return embed_error(engine);
        }
        if let Some(engine) = e.downcast_ref::<EngineError>() {
            return engine_error(engine);
        }
        if let Some(missing) = e.downcast_ref::<crate::embed::EmbedderNotInstalled>() {
            return ApiError::new(
                StatusCode::CONFLICT,
                "embedder_not_installed",
                missing.to_string(),
            );
        }
        if let Some(mismatch) = e.downcast_ref::<EmbedderMismatch>() {
            return ApiError::new(
                StatusCode::CONFLICT,
                "embedder_mismatch",
                mismatch.to_string(),
            );
        }
        match e.downcast::<ports::Error>() {
            Ok(store_error) => store_error.into(),
            Err(e) => ApiError::internal(&e),
        }
    }
}

/// A remote generation engine's fault: out of reach is 503 `llm_unavailable` (retry), too
/// slow is 504 `llm_timeout`, a refused or broken-off answer is 502 `llm_failed`.
fn engine_error(e: &EngineError) -> ApiError {
    tracing::warn!(request_id = current_request_id(), "{e}");
    match e {
        EngineError::Unavailable(_) => ApiError::unavailable(
            "llm_unavailable",
            "the generation engine is out of reach; retry shortly",
            5,
        ),
        EngineError::Timeout(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "llm_timeout",
            format!("generation: {e} (--llm-timeout)"),
        ),
        EngineError::Failed(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "llm_failed",
            "the generation engine failed to answer; the server log has the cause",
        ),
    }
}

/// A remote embedding engine's fault, as `engine_error` maps generation's: 503
/// `embedder_unavailable`, 504 `embedder_timeout`, 502 `embedder_failed`.
fn embed_error(e: &EngineError) -> ApiError {
    tracing::warn!(request_id = current_request_id(), "embedding: {e}");
    match e {
        EngineError::Unavailable(_) => ApiError::unavailable(
            "embedder_unavailable",
            "the embedding engine is out of reach; retry shortly",
            5,
        ),
        EngineError::Timeout(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "embedder_timeout",
            format!("embedding: {e} (--embed-timeout)"),
        ),
        EngineError::Failed(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "embedder_failed",
            "the embedding engine failed to answer; the server log has the cause",
        ),
    }
}

/// Maps the JSON body extractor's failures onto the envelope.
pub fn json_error(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::OverflowKnownLength { length, limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is {length} bytes; the limit is {limit}"),
        ),
        E::Overflow { limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over the limit of {limit} bytes"),
        ),
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ),
        E::Deserialize(e) if e.is_data() => ApiError::bad_request("invalid_request", e.to_string()),
        E::Deserialize(e) => ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")),
        other => ApiError::bad_request("invalid_json", format!("unreadable body: {other}")),
    }
}

/// An optional JSON body (`web::Json` inside `Option` would turn a bad body into none):
/// no bytes means `None`; anything else must be a JSON object that parses as `T`, within
/// `limit` bytes (serde would also fill a struct from an array: `[null]`).
pub fn optional_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    limit: usize,
) -> Result<Option<T>, ApiError> {
    if body.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is {} bytes; the limit is {limit}", body.len()),
        ));
    }
    // Only no body at all is none: whitespace alone is not JSON (and the spec says so).
    if body.is_empty() {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))
}
