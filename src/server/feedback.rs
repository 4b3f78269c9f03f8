//! Visitors' feedback on answers: `POST /v1/messages/{id}/feedback` (thumbs up or down and
//! an optional comment; a public caller only on its own conversation's answers), stored on
//! the answer with its `message.feedback` event.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::api::{load_conversation, resource};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
#[allow(unused_imports)]
use super::openapi::*;
use super::views::MessageView;
use crate::domain::{Feedback, Rating};
use crate::telemetry::unix_now;

/// The longest comment kept, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/messages/{id}/feedback", "POST").route(web::post().to(rate)));
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewFeedback {
    /// `up` or `down`; rating the same answer again replaces the earlier rating.
    #[schema(required = true, value_type = String, pattern = "^(up|down)$")]
    rating: Option<String>,
    /// What was wrong or right, in the visitor's words.
    #[schema(max_length = 2000)]
    comment: Option<String>,
}

impl NewFeedback {
    fn validate(self) -> ApiResult<Feedback> {
        let rating = match self.rating.as_deref() {
            Some("up") => Rating::Up,
            Some("down") => Rating::Down,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_rating",
                    format!("rating {other:?}: it is `up` or `down`"),
                ));
            }
            None => return Err(ApiError::bad_request("missing_field", "rating is required")),
        };
        let comment = self
            .comment
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        if comment
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS)
        {
            return Err(ApiError::bad_request(
                "comment_too_long",
                format!("the comment is longer than {MAX_COMMENT_CHARS} characters"),
            ));
        }
        Ok(Feedback {
            rating,
            comment,
            at: unix_now(),
        })
    }
}

#[utoipa::path(post, path = "/v1/messages/{id}/feedback", tag = "conversations", summary = "Rate a bot answer up or down (emits message.feedback); public callers only in their own conversations", request_body = NewFeedback, params(("id" = String, Path, description = "The answer's message id")), security(("bearer" = [])), responses((status = 200, description = "The answer with its feedback", body = MessageView), ApiErrors))]
pub(crate) async fn rate(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<NewFeedback>,
) -> ApiResult<HttpResponse> {
    let feedback = body.into_inner().validate()?;
    let id = path.into_inner();
    let not_found =
        || ApiError::not_found("message_not_found", format!("no message with id {id:?}"));
    let lookup = id.clone();
    let conversation = state
        .stored(move |store| store.message_conversation(&lookup))
        .await?
        .ok_or_else(not_found)?;
    // The same checks as reading the conversation; a caller that may not read it learns
    // nothing of the message, not even that it exists.
    load_conversation(&state, &caller, &conversation)
        .await
        .map_err(|e| match e.code {
            "conversation_not_found" | "forbidden" => not_found(),
            _ => e,
        })?;
    let rated = state
        .stored(move |store| store.rate_message(&id, &feedback))
        .await?;
    Ok(HttpResponse::Ok().json(MessageView::from(&rated.message)))
}
