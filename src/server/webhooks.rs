//! Webhook endpoints and event replays: `POST/GET /v1/webhooks`, `GET/DELETE
//! /v1/webhooks/{id}`, `POST /v1/webhooks/{id}/rotate`, `GET /v1/webhooks/{id}/deliveries`
//! and `POST /v1/events/{id}/redeliver`. Secret keys with access to the bot manage them;
//! the signing secret is shown when made or rotated, never again.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::api::{blocking, load_bot, load_owner_bot, parse_bot_id, resource};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
#[allow(unused_imports)]
use super::openapi::*;
use crate::events::TYPES;
use crate::ingest::ssrf::TargetGuard;
use crate::ports::Webhook;
use crate::telemetry::unix_now;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/v1/webhooks", "GET, POST")
            .route(web::get().to(list_webhooks))
            .route(web::post().to(create_webhook)),
    )
    .service(
        resource("/v1/webhooks/{id}", "GET, DELETE")
            .route(web::get().to(get_webhook))
            .route(web::delete().to(delete_webhook)),
    )
    .service(resource("/v1/webhooks/{id}/rotate", "POST").route(web::post().to(rotate)))
    .service(resource("/v1/webhooks/{id}/deliveries", "GET").route(web::get().to(list_deliveries)))
    .service(resource("/v1/events/{id}/redeliver", "POST").route(web::post().to(redeliver)));
}

/// The webhook named by the path, for a secret key that may use its bot.
async fn load_webhook(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Webhook> {
    caller.require_secret()?;
    let owned = id.to_string();
    let webhook = state
        .stored(move |store| store.get_webhook(&owned))
        .await?
        .ok_or_else(|| {
            ApiError::not_found("webhook_not_found", format!("no webhook with id {id:?}"))
        })?;
    // Not the caller's: as if it did not exist.
    load_owner_bot(state, caller, &webhook.bot_id, || {
        ApiError::not_found("webhook_not_found", format!("no webhook with id {id:?}"))
    })
    .await?;
    Ok(webhook)
}

fn new_secret() -> ApiResult<String> {
    crate::ids::random_base62(32)
        .map(|s| format!("whsec_{s}"))
        .map_err(|e| ApiError::internal(&e))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    #[schema(required = true, value_type = String, pattern = "^[a-z0-9-]{1,64}$")]
    bot_id: Option<String>,
    /// Where events are POSTed (http or https; public addresses unless the operator allowed
    /// private targets).
    #[schema(required = true, value_type = String, pattern = "^https?://[^/?#\\s]+", max_length = 2000)]
    url: Option<String>,
    /// Event types to send: `conversation.started`, `lead.captured`,
    /// `conversation.handoff`, `message.unanswered`, `message.feedback`, `bot.regressed`,
    /// or `*` for all.
    #[schema(required = true, value_type = Vec<String>, min_items = 1)]
    events: Option<Vec<String>>,
}

/// Checks a webhook URL: http(s), and public unless private targets are allowed.
async fn check_url(raw: &str, allow_private: bool) -> ApiResult<String> {
    let url = url::Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .filter(|_| raw.len() <= 2000)
        .ok_or_else(|| {
            ApiError::bad_request("invalid_request", format!("{raw:?} is not an http(s) URL"))
        })?;
    if allow_private {
        return Ok(url.to_string());
    }
    let refused = |why: String| {
        ApiError::bad_request(
            "target_not_allowed",
            format!("refusing to deliver to {url}: {why}"),
        )
    };
    // IP literals and `localhost` are refused here; names are checked by the delivery
    // worker's resolver each time they are resolved (a name can change where it points).
    TargetGuard::default().check(&url).map_err(refused)?;
    Ok(url.to_string())
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", summary = "Send a bot's events to a URL; the signing secret is shown once", request_body = NewWebhook, security(("bearer" = [])), responses((status = 201, description = "Created, with `secret`", body = CreatedWebhook), ApiErrors))]
pub(crate) async fn create_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<NewWebhook>,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let body = body.into_inner();
    let raw_bot = body
        .bot_id
        .ok_or_else(|| ApiError::bad_request("missing_field", "bot_id is required"))?;
    let bot = parse_bot_id(&raw_bot)?;
    let raw_url = body
        .url
        .ok_or_else(|| ApiError::bad_request("missing_field", "url is required"))?;
    let mut events = body
        .events
        .ok_or_else(|| ApiError::bad_request("missing_field", "events is required"))?;
    if events.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "events must name at least one event type (or \"*\")",
        ));
    }
    for event in &events {
        if event != "*" && !TYPES.contains(&event.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "unknown event type {event:?}; use one of {} or \"*\"",
                    TYPES.join(", ")
                ),
            ));
        }
    }
    events.sort();
    events.dedup();
    load_bot(&state, &caller, &bot).await?;
    let url = check_url(&raw_url, state.limits.allow_private_targets).await?;
    let webhook = Webhook {
        id: crate::ids::webhook(),
        bot_id: bot,
        url,
        events,
        secret: new_secret()?,
        previous_secret: None,
        previous_until: None,
        created: unix_now(),
    };
    let stored = webhook.clone();
    state
        .stored(move |store| store.put_webhook(&stored))
        .await?;
    Ok(HttpResponse::Created().json(CreatedWebhook::from(&webhook)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WebhookQuery {
    #[param(pattern = "^[a-z0-9-]{1,64}$")]
    bot_id: Option<String>,
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", summary = "List webhooks (never their secrets)", params(WebhookQuery), security(("bearer" = [])), responses((status = 200, description = "Webhooks", body = WebhookList), ApiErrors))]
pub(crate) async fn list_webhooks(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<WebhookQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let bot = match &query.bot_id {
        Some(raw) => {
            let id = parse_bot_id(raw)?;
            load_bot(&state, &caller, &id).await?;
            Some(id)
        }
        None => None,
    };
    let store = state.store.clone();
    let (webhooks, bots) =
        blocking(move || Ok((store.list_webhooks(bot.as_ref())?, store.list_bots()?))).await?;
    let visible: Vec<_> = bots
        .into_iter()
        .filter(|b| caller.may_see(b))
        .map(|b| b.id)
        .collect();
    let data = webhooks
        .iter()
        .filter(|w| visible.contains(&w.bot_id))
        .map(WebhookView::from)
        .collect();
    Ok(HttpResponse::Ok().json(WebhookList {
        data,
        next_cursor: None,
    }))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", summary = "One webhook (without its secret)", params(("id" = String, Path, description = "Webhook id (whk_…)")), security(("bearer" = [])), responses((status = 200, description = "The webhook", body = WebhookView), ApiErrors))]
pub(crate) async fn get_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let webhook = load_webhook(&state, &caller, &path).await?;
    Ok(HttpResponse::Ok().json(WebhookView::from(&webhook)))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", summary = "Delete a webhook and its pending deliveries", params(("id" = String, Path, description = "Webhook id (whk_…)")), security(("bearer" = [])), responses((status = 200, description = "Deleted", body = Deleted), ApiErrors))]
pub(crate) async fn delete_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let webhook = load_webhook(&state, &caller, &path).await?;
    let id = webhook.id.clone();
    state.stored(move |store| store.delete_webhook(&id)).await?;
    Ok(HttpResponse::Ok().json(Deleted::new(webhook.id)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateSecret {
    /// Seconds the old secret keeps signing beside the new one (default one day, at most
    /// 30 days).
    #[schema(maximum = 2592000)]
    overlap_seconds: Option<u64>,
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate", tag = "webhooks", summary = "New signing secret; deliveries carry both signatures for the overlap", request_body = Option<RotateSecret>, params(("id" = String, Path, description = "Webhook id (whk_…)")), security(("bearer" = [])), responses((status = 200, description = "Rotated, with the new `secret`", body = CreatedWebhook), ApiErrors))]
pub(crate) async fn rotate(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let body: Option<RotateSecret> =
        super::error::optional_json(&body, state.limits.max_body_bytes)?;
    let webhook = load_webhook(&state, &caller, &path).await?;
    let overlap = body.and_then(|b| b.overlap_seconds).unwrap_or(86_400);
    if overlap > 30 * 86_400 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "overlap_seconds is at most 2592000 (30 days)",
        ));
    }
    let secret = new_secret()?;
    let until = unix_now() + overlap;
    let store = state.store.clone();
    let id = webhook.id.clone();
    let webhook = blocking(move || {
        // Safe to apply again (an engine may retry a transaction): the same change.
        Ok(store.update_webhook(&id, &mut |w| {
            if w.secret != secret {
                w.previous_secret = Some(std::mem::replace(&mut w.secret, secret.clone()));
                w.previous_until = Some(until);
            }
        })?)
    })
    .await?
    .ok_or_else(|| {
        ApiError::not_found(
            "webhook_not_found",
            format!("no webhook with id {:?}", webhook.id),
        )
    })?;
    Ok(HttpResponse::Ok().json(CreatedWebhook::from(&webhook)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", summary = "Deliveries, newest first, with every attempt's status and latency", params(("id" = String, Path, description = "Webhook id (whk_…)"), DeliveriesQuery), security(("bearer" = [])), responses((status = 200, description = "Deliveries", body = DeliveryList), ApiErrors))]
pub(crate) async fn list_deliveries(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<DeliveriesQuery>,
) -> ApiResult<HttpResponse> {
    let webhook = load_webhook(&state, &caller, &path).await?;
    let limit = super::api::page_limit(query.limit)?;
    let cursor = query.cursor.clone();
    let deliveries = state
        .stored(move |store| store.deliveries(&webhook.id, cursor.as_deref(), limit))
        .await?;
    let next = (deliveries.len() == limit)
        .then(|| deliveries.last().map(|d| d.event_id.clone()))
        .flatten();
    Ok(HttpResponse::Ok().json(DeliveryList {
        data: deliveries,
        next_cursor: next,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redeliver {
    /// Only to this webhook (any webhook of the event's bot, even one made after the
    /// event); otherwise to every webhook of the bot that wants this event type.
    webhook_id: Option<String>,
}

#[utoipa::path(post, path = "/v1/events/{id}/redeliver", tag = "webhooks", summary = "Send an event again (same id); its deliveries become pending now", request_body = Option<Redeliver>, params(("id" = String, Path, description = "Event id (evt_…)")), security(("bearer" = [])), responses((status = 202, description = "Queued", body = Redelivered), ApiErrors))]
pub(crate) async fn redeliver(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let body: Option<Redeliver> = super::error::optional_json(&body, state.limits.max_body_bytes)?;
    caller.require_secret()?;
    let id = path.into_inner();
    let owned = id.clone();
    let event = state.stored(move |store| store.get_event(&owned)).await?;
    let not_found = || ApiError::not_found("event_not_found", format!("no event with id {id:?}"));
    let event = event.ok_or_else(not_found)?;
    let bot = event.bot_id.clone().ok_or_else(not_found)?;
    load_owner_bot(&state, &caller, &bot, not_found).await?;
    let targets = match body.and_then(|b| b.webhook_id) {
        Some(webhook_id) => {
            let webhook = load_webhook(&state, &caller, &webhook_id).await?;
            if webhook.bot_id != bot {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("webhook {webhook_id} belongs to another bot"),
                ));
            }
            vec![webhook]
        }
        None => {
            let store = state.store.clone();
            let kind = event.kind.clone();
            let target = bot.clone();
            blocking(move || {
                Ok(store
                    .list_webhooks(Some(&target))?
                    .into_iter()
                    .filter(|w| w.wants(&kind))
                    .collect::<Vec<_>>())
            })
            .await?
        }
    };
    let replayed = event.clone();
    let queued = state
        .stored(move |store| store.redeliver(&replayed, &targets))
        .await?;
    Ok(HttpResponse::Accepted().json(Redelivered {
        event_id: event.id,
        webhooks: queued,
    }))
}
