//! Curated answers over HTTP: `GET/POST /v1/bots/{id}/answers` and
//! `PATCH/DELETE /v1/bots/{id}/answers/{answer_id}` (admin keys and owners). An answer is
//! written once for a gap (an unanswered or rated-down question) and becomes a source of
//! the bot, cited as `answer:<id>`; the bot's search index and cached answers are dropped
//! after each change.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::api::{admin_bot, resource};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
#[allow(unused_imports)]
use super::openapi::*;
use super::views::Deleted;
use crate::domain::BotId;
use crate::ingest::answers::{
    self, AnswerError, CuratedAnswer, MAX_ANSWER_CHARS, MAX_QUESTION_CHARS,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/v1/bots/{id}/answers", "GET, POST")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource("/v1/bots/{id}/answers/{answer_id}", "PATCH, DELETE")
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    );
}

/// A curated answer as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AnswerView {
    /// `ans_…`
    id: String,
    question: String,
    answer: String,
    /// What answers cite it as (`answer:<id>`).
    url: String,
}

impl From<CuratedAnswer> for AnswerView {
    fn from(a: CuratedAnswer) -> AnswerView {
        AnswerView {
            id: a.id,
            question: a.question,
            answer: a.answer,
            url: a.url,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AnswerList {
    data: Vec<AnswerView>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnswerBody {
    /// The question as visitors ask it.
    #[schema(max_length = 500)]
    question: Option<String>,
    /// The right answer, in the operator's words.
    #[schema(max_length = 4000)]
    answer: Option<String>,
}

/// A required, trimmed, bounded text field.
fn text(name: &str, value: Option<String>, max: usize) -> ApiResult<String> {
    let value = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_field", format!("{name} is required")))?;
    if value.chars().count() > max {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("{name} is longer than {max} characters"),
        ));
    }
    Ok(value)
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "answer_not_found",
        format!("no curated answer with id {id:?}"),
    )
}

impl From<AnswerError> for ApiError {
    fn from(e: AnswerError) -> ApiError {
        match e {
            AnswerError::NotFound(id) => not_found(&id),
            AnswerError::Store(e) => e.into(),
            AnswerError::Other(e) => e.into(),
        }
    }
}

#[utoipa::path(get, path = "/v1/bots/{id}/answers", tag = "bots", summary = "The bot's curated answers", params(("id" = String, Path, description = "Bot id")), security(("bearer" = [])), responses((status = 200, description = "Curated answers", body = AnswerList), ApiErrors))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let bot = admin_bot(&state, &caller, &path).await?;
    let found = state
        .stored(move |store| answers::list(store, &bot.id))
        .await?;
    let data = found.into_iter().map(AnswerView::from).collect();
    Ok(HttpResponse::Ok().json(AnswerList { data }))
}

#[utoipa::path(post, path = "/v1/bots/{id}/answers", tag = "bots", summary = "Write a curated answer: a source of the bot from now on, cited as answer:<id>", request_body = AnswerBody, params(("id" = String, Path, description = "Bot id")), security(("bearer" = [])), responses((status = 201, description = "The answer, searchable at once", body = AnswerView), ApiErrors))]
pub(crate) async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<AnswerBody>,
) -> ApiResult<HttpResponse> {
    let bot = admin_bot(&state, &caller, &path).await?;
    let body = body.into_inner();
    let question = text("question", body.question, MAX_QUESTION_CHARS)?;
    let answer = text("answer", body.answer, MAX_ANSWER_CHARS)?;
    let written = write(&state, &bot.id, None, question, answer).await?;
    Ok(HttpResponse::Created().json(AnswerView::from(written)))
}

#[utoipa::path(patch, path = "/v1/bots/{id}/answers/{answer_id}", tag = "bots", summary = "Change a curated answer (question, answer or both)", request_body = AnswerBody, params(("id" = String, Path, description = "Bot id"), ("answer_id" = String, Path, description = "Answer id")), security(("bearer" = [])), responses((status = 200, description = "The answer as it is now", body = AnswerView), ApiErrors))]
pub(crate) async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: web::Json<AnswerBody>,
) -> ApiResult<HttpResponse> {
    let (bot, id) = path.into_inner();
    let bot = admin_bot(&state, &caller, &bot).await?;
    let body = body.into_inner();
    let (bot_id, wanted) = (bot.id.clone(), id.clone());
    let current = state
        .stored(move |store| answers::list(store, &bot_id))
        .await?
        .into_iter()
        .find(|a| a.id == wanted)
        .ok_or_else(|| not_found(&id))?;
    let question = match body.question {
        Some(q) => text("question", Some(q), MAX_QUESTION_CHARS)?,
        None => current.question,
    };
    let answer = match body.answer {
        Some(a) => text("answer", Some(a), MAX_ANSWER_CHARS)?,
        None => current.answer,
    };
    let written = write(&state, &bot.id, Some(id), question, answer).await?;
    Ok(HttpResponse::Ok().json(AnswerView::from(written)))
}

#[utoipa::path(delete, path = "/v1/bots/{id}/answers/{answer_id}", tag = "bots", summary = "Remove a curated answer", params(("id" = String, Path, description = "Bot id"), ("answer_id" = String, Path, description = "Answer id")), security(("bearer" = [])), responses((status = 200, description = "Removed", body = Deleted), ApiErrors))]
pub(crate) async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (bot, id) = path.into_inner();
    let bot = admin_bot(&state, &caller, &bot).await?;
    let removed = answers::remove(state.store.clone(), &bot.id, &id).await?;
    if !removed {
        return Err(not_found(&id));
    }
    state.content_changed(&bot.id);
    Ok(HttpResponse::Ok().json(Deleted::new(id)))
}

async fn write(
    state: &AppState,
    bot: &BotId,
    id: Option<String>,
    question: String,
    answer: String,
) -> ApiResult<CuratedAnswer> {
    let embedders = state.engine()?.embedders.clone();
    let written = answers::put(state.store.clone(), embedders, bot, id, question, answer).await?;
    state.content_changed(bot);
    Ok(written)
}
