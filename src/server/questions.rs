//! Golden questions over HTTP: `GET/POST /v1/bots/{id}/questions` and
//! `DELETE /v1/bots/{id}/questions/{question_id}` (admin keys and owners). Each is checked
//! after every crawl or upload of the bot; a question that passed and then fails is a
//! regression (`bot.regressed`, and under `golden_questions` in the bot's analytics).

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::AppState;
use super::api::{admin_bot, resource};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
#[allow(unused_imports)]
use super::openapi::*;
use super::views::Deleted;
use crate::golden::{GoldenQuestion, NewQuestion};
use crate::services::golden::{self, AddError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/v1/bots/{id}/questions", "GET, POST")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource("/v1/bots/{id}/questions/{question_id}", "DELETE").route(web::delete().to(delete)),
    );
}

/// What a new golden question asks for.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuestionBody {
    /// The question as a visitor would ask it.
    #[schema(max_length = 1000)]
    question: String,
    /// Words or phrases the right answer contains, each (case-insensitive); none: the
    /// bot should decline the question.
    #[serde(default)]
    #[schema(max_items = 20)]
    expected_answer_keywords: Vec<String>,
    /// The page the answer must cite, if any (as the bot's sources list it).
    #[serde(default)]
    source_url: Option<String>,
}

impl From<QuestionBody> for NewQuestion {
    fn from(body: QuestionBody) -> NewQuestion {
        NewQuestion {
            question: body.question,
            expected_answer_keywords: body.expected_answer_keywords,
            source_url: body.source_url,
        }
    }
}

/// A golden question and how its last check went.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct QuestionView {
    /// `gq_…`
    id: String,
    question: String,
    expected_answer_keywords: Vec<String>,
    source_url: Option<String>,
    created: u64,
    /// The last check: `passed`, `reason`, `answer`, `sources` (cited URLs), `checked`
    /// (unix s), `job_id`; null until the first check.
    #[schema(value_type = Option<Object>)]
    last: Option<crate::golden::Verdict>,
    /// Set while the question fails after having passed: `old_answer`, `new_answer`,
    /// `reason`, `since` (unix s), `job_id`.
    #[schema(value_type = Option<Object>)]
    regression: Option<crate::golden::Regression>,
}

impl From<GoldenQuestion> for QuestionView {
    fn from(q: GoldenQuestion) -> QuestionView {
        QuestionView {
            id: q.id,
            question: q.question,
            expected_answer_keywords: q.expected_answer_keywords,
            source_url: q.source_url,
            created: q.created,
            last: q.last,
            regression: q.regression,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct QuestionList {
    data: Vec<QuestionView>,
}

impl From<AddError> for ApiError {
    fn from(e: AddError) -> ApiError {
        match e {
            AddError::Invalid(why) => ApiError::bad_request("invalid_request", why),
            AddError::TooMany => ApiError::bad_request("too_many_questions", e.to_string()),
            AddError::Store(e) => e.into(),
        }
    }
}

#[utoipa::path(get, path = "/v1/bots/{id}/questions", tag = "bots", summary = "The bot's golden questions and their last check", params(("id" = String, Path, description = "Bot id")), security(("bearer" = [])), responses((status = 200, description = "Golden questions", body = QuestionList), ApiErrors))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let bot = admin_bot(&state, &caller, &path).await?;
    let data = bot
        .settings
        .golden
        .into_iter()
        .map(QuestionView::from)
        .collect();
    Ok(HttpResponse::Ok().json(QuestionList { data }))
}

#[utoipa::path(post, path = "/v1/bots/{id}/questions", tag = "bots", summary = "Add a golden question, checked after every crawl of the bot", request_body = QuestionBody, params(("id" = String, Path, description = "Bot id")), security(("bearer" = [])), responses((status = 201, description = "The question (no verdict until the next crawl)", body = QuestionView), ApiErrors))]
pub(crate) async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<QuestionBody>,
) -> ApiResult<HttpResponse> {
    let bot = admin_bot(&state, &caller, &path).await?;
    let new = NewQuestion::from(body.into_inner());
    let store = state.store.clone();
    let added =
        super::api::blocking(move || Ok(golden::add(store.as_ref(), &bot.id, new)?)).await?;
    Ok(HttpResponse::Created().json(QuestionView::from(added)))
}

#[utoipa::path(delete, path = "/v1/bots/{id}/questions/{question_id}", tag = "bots", summary = "Remove a golden question", params(("id" = String, Path, description = "Bot id"), ("question_id" = String, Path, description = "Question id")), security(("bearer" = [])), responses((status = 200, description = "Removed", body = Deleted), ApiErrors))]
pub(crate) async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (bot, id) = path.into_inner();
    let bot = admin_bot(&state, &caller, &bot).await?;
    let wanted = id.clone();
    let removed = state
        .stored(move |store| golden::remove(store, &bot.id, &wanted))
        .await?;
    if !removed {
        return Err(ApiError::not_found(
            "question_not_found",
            format!("no golden question with id {id:?}"),
        ));
    }
    Ok(HttpResponse::Ok().json(Deleted::new(id)))
}
