//! `GET /v1/bots/{id}/analytics?from=&to=`: the bot's numbers per day and its unanswered
//! questions grouped by meaning (`crate::analytics`).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::api::{blocking, load_bot, parse_bot_id, resource};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
#[allow(unused_imports)]
use super::openapi::*;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/bots/{id}/analytics", "GET").route(web::get().to(analytics)));
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Range {
    /// First day, `YYYY-MM-DD` (UTC); default 29 days before `to`.
    #[param(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC); default today. At most 366 days in all.
    #[param(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    to: Option<String>,
}

#[utoipa::path(get, path = "/v1/bots/{id}/analytics", tag = "bots", summary = "Conversations, answer, unanswered and handoff rates, leads and latency per day; unanswered questions grouped", params(("id" = String, Path, description = "Bot id", pattern = "^[a-z0-9-]{1,64}$"), Range), security(("bearer" = [])), responses((status = 200, description = "The report", body = super::schemas::Report), ApiErrors))]
pub(crate) async fn analytics(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<Range>,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let bot = parse_bot_id(&path)?;
    let (from, to) = crate::analytics::analytics_range(query.from.as_deref(), query.to.as_deref())
        .map_err(|e| ApiError::bad_request("invalid_request", e))?;
    load_bot(&state, &caller, &bot).await?;
    let shared = state.clone();
    let report = blocking(move || {
        // Grouping uses the embedder once it is loaded; before that, or while a remote one
        // is out of reach, exact repeats only.
        // MiniLM whatever the bot's embedder: the grouping threshold was measured on it.
        let embedder = shared.engine.get().and_then(|e| {
            e.embedders
                .get(crate::domain::EmbedderChoice::MiniLm)
                .ok()
                .map(|m| m.embedder)
        });
        let store = shared.store.as_ref();
        match crate::analytics::report(store, embedder.as_deref(), &bot, from, to) {
            Err(e) if e.downcast_ref::<crate::remote::EmbedError>().is_some() => {
                tracing::warn!("unanswered questions grouped by exact repeats: {e:#}");
                crate::analytics::report(store, None, &bot, from, to)
            }
            other => other,
        }
        .map_err(ApiError::from)
    })
    .await?;
    Ok(HttpResponse::Ok().json(report))
}
