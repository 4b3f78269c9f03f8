//! The API's resource routes: health, metrics, bots, conversations, users and keys.
//! (Chat lives in `chat.rs`.) Lists share one envelope: `{"data": [...], "next_cursor"}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use sha2::Digest;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
#[allow(unused_imports)]
use super::openapi::*;
use crate::domain::{Bot, BotId, Conversation, ConversationState, Intent, LeadCapture, Rating};
use crate::ingest::fetch::redact_userinfo;
use crate::keys::{self, ApiKey, KeyEnv, KeyKind, KeyScope};
use crate::services::bots::{InvalidSetting, SettingsChange};
use crate::services::conversations::{Filter, Listing, visible_page};
use crate::services::jobs::redacted;
use crate::telemetry::unix_now;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz", "GET").route(web::get().to(healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(readyz)))
        .service(resource("/metrics", "GET").route(web::get().to(metrics)))
        .service(
            resource("/v1/bots", "GET, POST")
                .route(web::get().to(list_bots))
                .route(web::post().to(create_bot)),
        )
        .service(
            resource("/v1/bots/{id}", "GET, PATCH, DELETE")
                .route(web::get().to(get_bot))
                .route(web::patch().to(update_bot))
                .route(web::delete().to(delete_bot)),
        )
        .service(resource("/v1/bots/{id}/sources", "POST").route(web::post().to(add_source)))
        .service(
            resource("/v1/bots/{id}/pages", "GET, DELETE")
                .route(web::get().to(list_pages))
                .route(web::delete().to(remove_page)),
        )
        .service(resource("/v1/jobs/{id}", "GET").route(web::get().to(get_job)))
        .service(
            resource("/v1/conversations", "GET, POST")
                .route(web::get().to(list_conversations))
                .route(web::post().to(create_conversation)),
        )
        .service(
            resource("/v1/conversations/{id}", "GET, DELETE")
                .route(web::get().to(get_conversation))
                .route(web::delete().to(delete_conversation)),
        )
        .service(resource("/v1/users/{user_id}", "DELETE").route(web::delete().to(delete_user)))
        .service(
            resource("/v1/keys", "GET, POST")
                .route(web::get().to(list_keys))
                .route(web::post().to(create_key)),
        )
        .service(resource("/v1/keys/{id}", "DELETE").route(web::delete().to(revoke_key)))
        .service(resource("/v1/keys/{id}/rotate", "POST").route(web::post().to(rotate_key)));
}

/// A resource whose other methods get 405 with the error envelope and an `Allow` header
/// listing `allow` (which must name the routes the caller adds).
pub fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        let error = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route accepts {allow}"),
        );
        let mut response = actix_web::ResponseError::error_response(&error);
        response.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        response
    }))
}

pub async fn not_found() -> ApiResult<HttpResponse> {
    Err(ApiError::not_found("not_found", "no such route"))
}

#[utoipa::path(get, path = "/healthz", tag = "health", summary = "Process is up", responses((status = 200, description = "Up", body = Health)))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health::is("ok"))
}

#[utoipa::path(get, path = "/readyz", tag = "health", summary = "Models and indexes are loaded, and remote engines answer", responses((status = 200, description = "Ready", body = Health), (status = 503, description = "Still loading, or a remote engine is out of reach (`status` llm_unavailable or embedder_unavailable, with the `reason`)", body = Health)))]
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let Some(engine) = state.engine.get() else {
        return HttpResponse::ServiceUnavailable().json(Health::is("loading"));
    };
    // Remote engines are asked whether they answer (in-process models always can).
    let generator = engine.generator.clone();
    let embedder = engine.embedders.default_embedding().embedder;
    let checked = web::block(move || {
        generator
            .health()
            .map_err(|why| ("llm_unavailable", why))
            .and_then(|()| {
                embedder
                    .health()
                    .map_err(|why| ("embedder_unavailable", why))
            })
    })
    .await;
    match checked {
        Ok(Ok(())) => HttpResponse::Ok().json(Health::is("ready")),
        Ok(Err((status, reason))) => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(Health {
                status,
                reason: Some(reason),
            }),
        Err(_) => HttpResponse::ServiceUnavailable().json(Health::is("loading")),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health", summary = "Prometheus metrics (loopback clients, the metrics token, or the metrics listener)", security((), ("bearer" = [])), responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"), (status = 403, description = "Not from loopback and without the metrics token", body = ErrorEnvelope)))]
pub(crate) async fn metrics(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
) -> ApiResult<HttpResponse> {
    if !may_scrape(&state, &req, false) {
        return Err(ApiError::forbidden(
            "metrics are served to loopback clients, with the metrics token, or on the \
             metrics listener (--metrics-bind)",
        ));
    }
    Ok(metrics_page(&state).await)
}

/// `/metrics` on the metrics listener (`--metrics-bind`): the operator's own port, where
/// only the metrics token (when set) is asked for.
pub(crate) async fn metrics_listener(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
) -> ApiResult<HttpResponse> {
    if !may_scrape(&state, &req, true) {
        return Err(ApiError::unauthorized(
            "invalid_api_key",
            "send the metrics token as `Authorization: Bearer <token>`",
        ));
    }
    Ok(metrics_page(&state).await)
}

/// Who may read the metrics: the holder of the metrics token (compared in constant time);
/// the metrics listener's clients when no token is set; and direct loopback clients of the
/// public listener (not through a proxy, which would make everyone loopback: a request
/// with forwarding headers, or from a trusted proxy, is not direct).
fn may_scrape(state: &AppState, req: &actix_web::HttpRequest, metrics_listener: bool) -> bool {
    use subtle::ConstantTimeEq;
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let (Some(token), Some(presented)) = (&state.limits.metrics_token, presented) {
        let (a, b) = (
            sha2::Sha256::digest(token.0.as_bytes()),
            sha2::Sha256::digest(presented.trim().as_bytes()),
        );
        if bool::from(a.ct_eq(&b)) {
            return true;
        }
    }
    if metrics_listener {
        return state.limits.metrics_token.is_none();
    }
    let Some(peer) = req.peer_addr().map(|a| a.ip().to_canonical()) else {
        return false;
    };
    // A proxy's requests are its clients', wherever it runs: it forwards who they are,
    // or the operator named it as a trusted proxy.
    let proxied = state.limits.trusted_proxies.contains(&peer)
        || ["x-forwarded-for", "forwarded", "x-real-ip"]
            .iter()
            .any(|h| req.headers().contains_key(*h));
    !proxied && peer.is_loopback()
}

async fn metrics_page(state: &AppState) -> HttpResponse {
    let pending = state
        .stored(move |store| store.pending_deliveries())
        .await
        .unwrap_or(0);
    let stats = &state.deliveries;
    let gauges = super::metrics::Gauges {
        webhooks: [
            stats.delivered.load(std::sync::atomic::Ordering::Relaxed),
            stats.retried.load(std::sync::atomic::Ordering::Relaxed),
            stats.failed.load(std::sync::atomic::Ordering::Relaxed),
        ],
        webhooks_pending: pending,
        in_flight: state
            .limits
            .max_queue
            .max(1)
            .saturating_sub(state.admission.available_permits()),
        waiting: state.queue.waiting(),
        running: state.queue.running(),
        engine: state.engine.get().and_then(|e| e.generator.engine_stats()),
    };
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(&gauges))
}

/// Runs blocking store work off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let request_id = super::error::current_request_id();
    web::block(move || super::error::REQUEST_ID.sync_scope(request_id, f))
        .await
        .map_err(|e| ApiError::internal(&anyhow::anyhow!("blocking task failed: {e}")))?
}

/// A list's `limit`: 1 to 200, 50 when absent.
pub fn page_limit(limit: Option<u32>) -> ApiResult<usize> {
    let limit = limit.unwrap_or(50);
    if (1..=200).contains(&limit) {
        Ok(limit as usize)
    } else {
        Err(ApiError::bad_request(
            "invalid_request",
            "limit must be 1 to 200",
        ))
    }
}

pub fn parse_bot_id(raw: &str) -> ApiResult<BotId> {
    BotId::parse(raw).map_err(|e| ApiError::bad_request("invalid_bot_id", e))
}

#[utoipa::path(get, path = "/v1/bots", tag = "bots", summary = "List the bots this key may use", security(("bearer" = [])), responses((status = 200, description = "Bots", body = BotList), ApiErrors))]
pub(crate) async fn list_bots(
    state: web::Data<AppState>,
    caller: Caller,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let bots = state.stored(move |store| store.list_bots()).await?;
    let data = bots
        .iter()
        .filter(|b| caller.may_see(b))
        .map(BotView::from)
        .collect();
    Ok(HttpResponse::Ok().json(BotList {
        data,
        next_cursor: None,
    }))
}

/// The bot named by the path, for an admin key that may manage it.
pub(crate) async fn admin_bot(state: &AppState, caller: &Caller, path: &str) -> ApiResult<Bot> {
    caller.require_admin()?;
    let id = parse_bot_id(path)?;
    load_bot(state, caller, &id).await
}

/// The bot another resource (a job, a webhook, an event) belongs to: when the caller may
/// not see the bot, the resource itself is unknown (`not_found`).
pub async fn load_owner_bot(
    state: &AppState,
    caller: &Caller,
    id: &BotId,
    not_found: impl FnOnce() -> ApiError,
) -> ApiResult<Bot> {
    load_bot(state, caller, id).await.map_err(|e| {
        if e.code == "bot_not_found" {
            not_found()
        } else {
            e
        }
    })
}

/// Loads a bot the caller may use. A bot the caller may not see (another key's, or the
/// other environment's) is 404 `bot_not_found`, exactly as one that does not exist: the
/// answer never tells which.
pub async fn load_bot(state: &AppState, caller: &Caller, id: &BotId) -> ApiResult<Bot> {
    let not_found = || ApiError::not_found("bot_not_found", format!("no bot with id \"{id}\""));
    if !caller.may_see_id(id) {
        return Err(not_found());
    }
    let owned = id.clone();
    let bot = state.stored(move |store| store.get_bot(&owned)).await?;
    if !caller.may_see(&bot) {
        return Err(not_found());
    }
    let _ = caller.bot.set(bot.id.to_string());
    Ok(bot)
}

#[utoipa::path(get, path = "/v1/bots/{id}", tag = "bots", summary = "One bot", params(("id" = String, Path, description = "Bot id", pattern = "^[a-z0-9-]{1,64}$")), security(("bearer" = [])), responses((status = 200, description = "The bot", body = BotView), ApiErrors))]
pub(crate) async fn get_bot(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let id = parse_bot_id(&path)?;
    let bot = load_bot(&state, &caller, &id).await?;
    Ok(HttpResponse::Ok().json(BotView::from(&bot)))
}

#[utoipa::path(delete, path = "/v1/bots/{id}", tag = "bots", summary = "Delete a bot and its content (admin)", params(("id" = String, Path, description = "Bot id", pattern = "^[a-z0-9-]{1,64}$")), security(("bearer" = [])), responses((status = 200, description = "Deleted", body = Deleted), ApiErrors))]
pub(crate) async fn delete_bot(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let bot = admin_bot(&state, &caller, &path).await?;
    let id = bot.id.clone();
    let bot = id.clone();
    // The bot's conversations go with it (same transaction): nothing would be left to
    // reach them by.
    let erased = state.stored(move |store| store.delete_bot(&bot)).await?;
    state.keys.forget_bot(&id);
    state.live.end(&erased, "conversation_erased");
    state.content_changed(&id);
    Ok(HttpResponse::Ok().json(Deleted::new(id.as_str())))
}

/// Bot fields to set; on PATCH, a JSON null clears a setting and an absent field keeps it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BotFields {
    /// `[a-z0-9-]{1,64}`; made from the name when absent. Cannot change.
    #[schema(pattern = "^[a-z0-9-]{1,64}$")]
    id: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    name: Option<String>,
    /// Operator instructions added to the system prompt.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 4000)]
    system_prompt: Option<Option<String>>,
    /// Passages retrieved per question, 1 to 50.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<usize>, minimum = 1, maximum = 50)]
    top_k: Option<Option<usize>>,
    /// Cosine similarity a passage needs, -1 to 1.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>, minimum = -1.0, maximum = 1.0)]
    min_score: Option<Option<f64>>,
    /// Origins (`https://host[:port]`) this bot's crawls may reach even when private.
    #[schema(inline, value_type = Option<Vec<String>>)]
    allowed_targets: Option<Vec<String>>,
    /// `{"mode": "off"}`, `{"mode": "on_detection"}` (contact details typed in chat become
    /// leads) or `{"mode": "after_messages", "after_messages": N}` (also ask for them).
    #[schema(value_type = Option<super::schemas::LeadCapture>)]
    lead_capture: Option<LeadCapture>,
    /// Topics that always go to a person (up to 20, each up to 200 characters): a name,
    /// optionally `:` and comma-separated trigger words, e.g. `medical advice: dose, burn`.
    #[schema(inline, value_type = Option<Vec<String>>, max_items = 20)]
    handoff_topics: Option<Vec<String>>,
    /// Contact link or text shown when the bot cannot answer (up to 1000 characters).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 1000)]
    fallback: Option<Option<String>>,
    /// Quick replies (up to 20).
    #[schema(inline, value_type = Option<Vec<super::schemas::Intent>>, max_items = 20)]
    intents: Option<Vec<Intent>>,
    /// The embedder this bot wants: `minilm`, `nomic`, `nomic-512` or `nomic-256` (null:
    /// the node's `--embedder`). A bot with content keeps the embedder that made its
    /// vectors (`embedded_with`) until `docent reindex --bot ID` re-embeds them.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<super::schemas::EmbedderName>)]
    embedder: Option<Option<String>>,
}

/// The fields `PATCH /v1/bots/{id}` takes (documentation; the handler reads `BotFields`
/// and refuses an `id`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct BotPatch {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    name: Option<String>,
    #[schema(max_length = 4000)]
    system_prompt: Option<String>,
    #[schema(minimum = 1, maximum = 50)]
    top_k: Option<usize>,
    #[schema(minimum = -1.0, maximum = 1.0)]
    min_score: Option<f64>,
    allowed_targets: Option<Vec<String>>,
    #[schema(value_type = Option<super::schemas::LeadCapture>)]
    lead_capture: Option<LeadCapture>,
    handoff_topics: Option<Vec<String>>,
    #[schema(max_length = 1000)]
    fallback: Option<String>,
    #[schema(value_type = Option<Vec<super::schemas::Intent>>)]
    intents: Option<Vec<Intent>>,
    /// The embedder this bot wants (null: the node's `--embedder`); `docent reindex --bot
    /// ID` switches a bot with content to it.
    #[schema(value_type = Option<super::schemas::EmbedderName>)]
    embedder: Option<String>,
}

/// Tells an absent field (`None`) from an explicit null (`Some(None)`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl From<&BotFields> for SettingsChange {
    fn from(fields: &BotFields) -> SettingsChange {
        SettingsChange {
            name: fields.name.clone(),
            system_prompt: fields.system_prompt.clone(),
            top_k: fields.top_k,
            min_score: fields.min_score,
            allowed_targets: fields.allowed_targets.clone(),
            lead_capture: fields.lead_capture.clone(),
            handoff_topics: fields.handoff_topics.clone(),
            fallback: fields.fallback.clone(),
            intents: fields.intents.clone(),
            embedder: fields.embedder.clone(),
        }
    }
}

/// The settings change a create or update asks for, checked for what the caller may do:
/// exempting origins from the SSRF guard is a live admin's decision (a test key's crawls
/// stay on public addresses; clearing the list is always allowed).
fn settings_change(caller: &Caller, fields: &BotFields) -> ApiResult<SettingsChange> {
    let change = SettingsChange::from(fields);
    if change.exempts_targets() && caller.key.env == KeyEnv::Test {
        return Err(ApiError::forbidden(
            "allowed_targets can only be set with a live admin key",
        ));
    }
    Ok(change)
}

fn invalid_setting(e: InvalidSetting) -> ApiError {
    ApiError::bad_request("invalid_request", e.0)
}

/// A bot may only ask for an embedder this node can run: 409 `embedder_not_installed`
/// otherwise (a model not fetched, or a node embedding on a remote engine). Loads the
/// model now if it is the first use.
async fn check_embedder_offered(state: &AppState, change: &SettingsChange) -> ApiResult<()> {
    let Some(choice) = change.embedder_choice().map_err(invalid_setting)? else {
        return Ok(());
    };
    let Some(engine) = state.engine.get() else {
        return Ok(());
    };
    let embedders = engine.embedders.clone();
    blocking(move || {
        embedders.offers(choice).map_err(|why| {
            ApiError::new(
                actix_web::http::StatusCode::CONFLICT,
                "embedder_not_installed",
                why,
            )
        })
    })
    .await
}

#[utoipa::path(post, path = "/v1/bots", tag = "bots", summary = "Create a bot (admin)", request_body = BotFields, security(("bearer" = [])), responses((status = 201, description = "Created", body = BotView), ApiErrors))]
pub(crate) async fn create_bot(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<BotFields>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let fields = body.into_inner();
    let name = fields.name.clone().unwrap_or_default();
    let id = match &fields.id {
        Some(id) => parse_bot_id(id)?,
        None => {
            let slug: String = name
                .to_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>()
                .split('-')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("-");
            let slug: String = slug.chars().take(40).collect();
            let suffix = crate::ids::random_base62(6)
                .unwrap_or_default()
                .to_lowercase();
            parse_bot_id(&if slug.is_empty() {
                format!("bot-{suffix}")
            } else {
                format!("{slug}-{suffix}")
            })?
        }
    };
    let now = unix_now();
    let mut bot = Bot {
        test: caller.key.env == KeyEnv::Test,
        ..Bot::new(id, now)
    };
    let change = settings_change(&caller, &fields)?;
    change.apply(&mut bot).map_err(invalid_setting)?;
    check_embedder_offered(&state, &change).await?;
    let record = bot.clone();
    state.stored(move |store| store.create_bot(&record)).await?;
    Ok(HttpResponse::Created().json(BotView::from(&bot)))
}

#[utoipa::path(patch, path = "/v1/bots/{id}", tag = "bots", summary = "Change a bot's settings (admin)", request_body = BotPatch, params(("id" = String, Path, description = "Bot id", pattern = "^[a-z0-9-]{1,64}$")), security(("bearer" = [])), responses((status = 200, description = "The bot", body = BotView), ApiErrors))]
pub(crate) async fn update_bot(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<BotFields>,
) -> ApiResult<HttpResponse> {
    let bot = admin_bot(&state, &caller, &path).await?;
    let id = bot.id.clone();
    let fields = body.into_inner();
    if fields.id.is_some() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "a bot's id cannot change",
        ));
    }
    let change = settings_change(&caller, &fields)?;
    // Checked against the bot as read, then applied to the bot as it is when written (the
    // bounds do not depend on the rest of the bot, so it cannot fail there).
    change
        .clone()
        .apply(&mut bot.clone())
        .map_err(invalid_setting)?;
    check_embedder_offered(&state, &change).await?;
    let store = state.store.clone();
    let target = id.clone();
    let bot = blocking(move || {
        Ok(store.update_bot(&target, &mut |bot| {
            let _ = change.apply(bot);
            // A new version: other nodes' cached answers (keyed by it) go stale too.
            bot.touch(unix_now());
        })?)
    })
    .await?;
    if let Some(cache) = &state.answers {
        cache.invalidate(&id);
    }
    Ok(HttpResponse::Ok().json(BotView::from(&bot)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSource {
    /// The site's start URL (http or https; public addresses unless the bot allows more).
    #[schema(required = true, value_type = String, pattern = "^https?://[^/?#\\s]+")]
    url: Option<String>,
    /// `24h`, `30m`, `7d`, or seconds (at least a minute).
    #[schema(pattern = "^[0-9]{1,9}[smhd]?$")]
    recrawl_every: Option<String>,
    /// How far the crawl goes: `path` (the default), pages under the start URL's
    /// directory; `host`, the whole host.
    #[schema(value_type = Option<super::schemas::Scope>)]
    scope: Option<String>,
    /// Most pages one crawl indexes (default 1,000).
    #[schema(minimum = 1, maximum = 50000)]
    max_pages: Option<u64>,
}

/// The most pages one crawl of an API-added source may index.
const MAX_PAGES_LIMIT: u64 = 50_000;

impl NewSource {
    /// The scope and page limit asked for, checked.
    fn limits(&self) -> ApiResult<(crate::domain::Scope, Option<usize>)> {
        use crate::domain::Scope;
        let scope = match self.scope.as_deref() {
            None | Some("path") => Scope::Path,
            Some("host") => Scope::Host,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("scope must be \"path\" or \"host\", not {other:?}"),
                ));
            }
        };
        let max_pages = self
            .max_pages
            .map(|n| {
                (1..=MAX_PAGES_LIMIT)
                    .contains(&n)
                    .then_some(n as usize)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_request",
                            format!("max_pages must be between 1 and {MAX_PAGES_LIMIT}"),
                        )
                    })
            })
            .transpose()?;
        Ok((scope, max_pages))
    }
}

#[utoipa::path(post, path = "/v1/bots/{id}/sources", tag = "bots", summary = "Queue a crawl of a site into the bot (admin)", request_body = NewSource, params(("id" = String, Path, description = "Bot id", pattern = "^[a-z0-9-]{1,64}$")), security(("bearer" = [])), responses((status = 202, description = "Queued", body = SourceAccepted), ApiErrors))]
pub(crate) async fn add_source(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<NewSource>,
) -> ApiResult<HttpResponse> {
    let bot = admin_bot(&state, &caller, &path).await?;
    let id = bot.id.clone();
    let body = body.into_inner();
    let (scope, max_pages) = body.limits()?;
    let raw = body
        .url
        .ok_or_else(|| ApiError::bad_request("missing_field", "url is required"))?;
    // A source's URL as this API shows it (credentials as `***`) means that source.
    let raw = bot
        .settings
        .sources
        .iter()
        .find(|s| s.url != raw && redact_userinfo(&s.url) == raw)
        .map_or(raw, |s| s.url.clone());
    let url = url::Url::parse(&raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            let shown = redact_userinfo(&raw);
            ApiError::bad_request(
                "invalid_request",
                format!("{shown:?} is not an http(s) URL"),
            )
        })?;
    let every = body
        .recrawl_every
        .as_deref()
        .map(|e| crate::telemetry::parse_duration(e).map(|d| d.as_secs().max(60)))
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    check_extendable(&state, &bot).await?;
    // Refuse obviously private targets at once (names are checked again when resolved).
    if !state.jobs.allow_private_targets {
        let guard = crate::ingest::ssrf::TargetGuard {
            allowed_origins: bot.exempt_origins(),
        };
        guard.check(&url).map_err(|e| {
            let why = redact_userinfo(&e);
            ApiError::bad_request("target_not_allowed", format!("refusing to crawl: {why}"))
        })?;
    }
    let source = crate::domain::SourceSchedule {
        recrawl_every: every,
        scope,
        max_pages,
        ..crate::domain::SourceSchedule::once(url.to_string())
    };
    let jobs = state.jobs.clone();
    let job = blocking(move || Ok(jobs.add_source(&id, source)?)).await?;
    Ok(HttpResponse::Accepted().json(SourceAccepted::new(job)))
}

/// A bot whose vectors another embedder made cannot be extended: 409 now, not a job that
/// fails later.
pub(crate) async fn check_extendable(state: &AppState, bot: &Bot) -> ApiResult<()> {
    if let Some(engine) = state.engine.get() {
        let (embedders, record) = (engine.embedders.clone(), bot.clone());
        blocking(move || {
            let embedder = embedders.for_bot(Some(&record)).map_err(ApiError::from)?;
            let current = embedder.embedder.id().map_err(ApiError::from)?;
            record
                .check_embedder(&current, &crate::embed::minilm_id())
                .map_err(|e| ApiError::from(anyhow::Error::from(e)))
        })
        .await?;
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "bots", summary = "A crawl job's progress", params(("id" = String, Path, description = "Job id")), security(("bearer" = [])), responses((status = 200, description = "The job", body = super::schemas::JobView), ApiErrors))]
pub(crate) async fn get_job(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let id = path.into_inner();
    let not_found = || ApiError::not_found("job_not_found", format!("no job with id {id:?}"));
    let (jobs, wanted) = (state.jobs.clone(), id.clone());
    let job = blocking(move || Ok(jobs.get(&wanted)?))
        .await?
        .ok_or_else(not_found)?;
    load_owner_bot(&state, &caller, &job.bot_id, not_found).await?;
    Ok(HttpResponse::Ok().json(redacted(job)))
}

#[utoipa::path(get, path = "/v1/bots/{id}/pages", tag = "bots", summary = "What the bot has indexed", params(("id" = String, Path, description = "Bot id", pattern = "^[a-z0-9-]{1,64}$")), security(("bearer" = [])), responses((status = 200, description = "Pages", body = PageList), ApiErrors))]
pub(crate) async fn list_pages(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let id = parse_bot_id(&path)?;
    load_bot(&state, &caller, &id).await?;
    let pages = state.stored(move |store| store.pages(&id)).await?;
    Ok(HttpResponse::Ok().json(PageList {
        data: pages.iter().map(PageView::from).collect(),
        next_cursor: None,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// The page's URL, exactly as `GET /v1/bots/{id}/pages` lists it.
    #[param(required = true)]
    url: Option<String>,
}

#[utoipa::path(delete, path = "/v1/bots/{id}/pages", tag = "bots", summary = "Remove one indexed page with its passages (admin); a later crawl brings it back if the site still links it", params(("id" = String, Path, description = "Bot id", pattern = "^[a-z0-9-]{1,64}$"), PageQuery), security(("bearer" = [])), responses((status = 200, description = "Removed", body = Deleted), ApiErrors))]
pub(crate) async fn remove_page(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let bot = admin_bot(&state, &caller, &path).await?;
    let url = query
        .into_inner()
        .url
        .ok_or_else(|| ApiError::bad_request("missing_field", "url is required"))?;
    let removed = crate::ingest::pages::remove(state.store.clone(), &bot.id, &url).await?;
    if !removed {
        return Err(ApiError::not_found(
            "page_not_found",
            format!("bot {} has no page {url:?}", bot.id),
        ));
    }
    state.content_changed(&bot.id);
    Ok(HttpResponse::Ok().json(Deleted::new(url)))
}

// ---- conversations ----

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct NewConversation {
    #[schema(required = true, value_type = String, pattern = "^[a-z0-9-]{1,64}$")]
    bot_id: Option<String>,
    #[schema(pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,128}$")]
    user_id: Option<String>,
}

pub fn new_conversation(bot: &BotId, user_id: Option<String>, key_id: &str) -> Conversation {
    let now = unix_now();
    Conversation {
        id: crate::ids::conversation(),
        bot_id: bot.clone(),
        user_id,
        state: crate::domain::ConversationState::Open,
        key_id: key_id.to_string(),
        created: now,
        updated: now,
        intent: None,
        handed_off_at: None,
        handoff_reason: None,
        lead_id: None,
        ratings: Default::default(),
        releases: 0,
    }
}

/// The user id a conversation is started with: a widget session's visitor, or the
/// caller's `user_id`.
pub fn caller_user_id(caller: &Caller, user_id: Option<String>) -> ApiResult<Option<String>> {
    match &caller.visitor {
        Some(visitor) => Ok(Some(visitor.clone())),
        None if caller.key.kind == KeyKind::Public
            && user_id.as_deref().is_some_and(|u| u.starts_with("v_")) =>
        {
            Err(ApiError::bad_request(
                "invalid_request",
                "user ids starting with v_ are widget visitors'; a public key cannot claim one",
            ))
        }
        None => validate_user_id(user_id),
    }
}

pub fn validate_user_id(user_id: Option<String>) -> ApiResult<Option<String>> {
    match user_id {
        Some(u) if u.is_empty() || u.len() > 128 || u.chars().any(char::is_control) => {
            Err(ApiError::bad_request(
                "invalid_request",
                "user_id must be 1 to 128 printable characters",
            ))
        }
        other => Ok(other),
    }
}

#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", summary = "Start a conversation", request_body = NewConversation, security(("bearer" = [])), responses((status = 201, description = "Started", body = ConversationView), ApiErrors))]
pub(crate) async fn create_conversation(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<NewConversation>,
) -> ApiResult<HttpResponse> {
    let started_ms = crate::ids::now_ms();
    let body = body.into_inner();
    let raw = body
        .bot_id
        .ok_or_else(|| ApiError::bad_request("missing_field", "bot_id is required"))?;
    let bot = parse_bot_id(&raw)?;
    load_bot(&state, &caller, &bot).await?;
    let user_id = caller_user_id(&caller, body.user_id)?;
    super::chat::charge_budgets(&state, &caller, &bot)?;
    let conversation = new_conversation(&bot, user_id, &caller.key.id);
    let record = conversation.clone();
    // Begun now: a bot deleted or a user erased meanwhile gets no conversation.
    let extras = crate::ports::TurnExtras {
        started_ms: Some(started_ms),
        ..Default::default()
    };
    state
        .stored(move |store| store.append_turn(&record, &[], extras))
        .await?;
    Ok(HttpResponse::Created().json(ConversationView::new(&conversation, None)))
}

/// A conversation the caller may read: a secret key with access to its bot, or the public
/// key that started it.
pub async fn load_conversation(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Conversation> {
    let owned = id.to_string();
    let conversation = state
        .stored(move |store| store.get_conversation(&owned))
        .await?;
    let not_found = || {
        ApiError::not_found(
            "conversation_not_found",
            format!("no conversation with id {id:?}"),
        )
    };
    match load_bot(state, caller, &conversation.bot_id).await {
        Ok(_) => {}
        Err(e) if e.code == "bot_not_found" => {
            // A conversation whose bot was deleted while it was being written: only an
            // admin key of the environment it was started in can still reach it, to read
            // or erase it.
            let store = state.store.clone();
            let bot = conversation.bot_id.clone();
            let bot_gone = blocking(move || match store.get_bot(&bot) {
                Err(crate::ports::Error::BotNotFound(_)) => Ok(true),
                other => other.map(|_| false).map_err(ApiError::from),
            })
            .await?;
            let same_env = state
                .keys
                .get(&conversation.key_id)
                .is_some_and(|k| k.env == caller.key.env);
            if !(bot_gone && same_env && caller.require_admin().is_ok()) {
                return Err(not_found());
            }
        }
        Err(e) => return Err(e),
    }
    if caller.key.kind == KeyKind::Public && conversation.key_id != caller.key.id {
        return Err(ApiError::forbidden(
            "public keys may read only the conversations they started",
        ));
    }
    // A widget visitor's conversation is theirs alone: not another visitor's session's,
    // and not the bare public key's either.
    let visitor_owned = conversation
        .user_id
        .as_ref()
        .is_some_and(|u| u.starts_with("v_"));
    let allowed = match &caller.visitor {
        Some(v) => conversation.user_id.as_ref() == Some(v),
        None => caller.key.kind != KeyKind::Public || !visitor_owned,
    };
    if !allowed {
        return Err(ApiError::forbidden(
            "a widget visitor's conversation is readable only in that visitor's session",
        ));
    }
    Ok(conversation)
}

#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations", summary = "A conversation with its messages", params(("id" = String, Path, description = "Conversation id")), security(("bearer" = [])), responses((status = 200, description = "The conversation", body = ConversationView), ApiErrors))]
pub(crate) async fn get_conversation(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let conversation = load_conversation(&state, &caller, &path).await?;
    let id = conversation.id.clone();
    let messages = state.stored(move |store| store.messages(&id)).await?;
    Ok(HttpResponse::Ok().json(ConversationView::new(&conversation, Some(&messages))))
}

#[utoipa::path(delete, path = "/v1/conversations/{id}", tag = "conversations", summary = "Delete a conversation", params(("id" = String, Path, description = "Conversation id")), security(("bearer" = [])), responses((status = 200, description = "Deleted", body = Deleted), ApiErrors))]
pub(crate) async fn delete_conversation(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let conversation = load_conversation(&state, &caller, &path).await?;
    let ids = vec![conversation.id.clone()];
    state
        .stored(move |store| store.delete_conversations(&ids))
        .await?;
    state.live.end(
        std::slice::from_ref(&conversation.id),
        "conversation_erased",
    );
    Ok(HttpResponse::Ok().json(Deleted::new(conversation.id)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    #[param(pattern = "^[a-z0-9-]{1,64}$")]
    bot_id: Option<String>,
    user_id: Option<String>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `open`, `handed_off` or `closed`.
    #[param(pattern = "^(open|handed_off|closed)$")]
    state: Option<String>,
    /// Conversations with at least one answer rated `up` (or `down`).
    #[param(pattern = "^(up|down)$")]
    rating: Option<String>,
    /// Started on or after this day (`YYYY-MM-DD`, UTC).
    from: Option<String>,
    /// Started on or before this day (`YYYY-MM-DD`, UTC).
    to: Option<String>,
    /// Text some message contains (ignoring case; up to 200 characters).
    #[param(max_length = 200)]
    q: Option<String>,
}

impl ListQuery {
    fn filter(&self) -> ApiResult<Filter> {
        let invalid = |message: String| ApiError::bad_request("invalid_request", message);
        let state =
            match self.state.as_deref() {
                Some(text) => Some(ConversationState::parse(text).ok_or_else(|| {
                    invalid(format!("state {text:?}: open, handed_off or closed"))
                })?),
                None => None,
            };
        let rating = match self.rating.as_deref() {
            Some("up") => Some(Rating::Up),
            Some("down") => Some(Rating::Down),
            Some(other) => return Err(invalid(format!("rating {other:?}: up or down"))),
            None => None,
        };
        let day = |name: &str, text: &Option<String>| -> ApiResult<Option<u64>> {
            text.as_deref()
                .map(|t| {
                    crate::analytics::parse_date(t)
                        .map(|d| d as u64 * 86_400)
                        .ok_or_else(|| {
                            invalid(format!("{name} {t:?} is not a date like 2026-11-27"))
                        })
                })
                .transpose()
        };
        let text = self.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        if text.is_some_and(|q| q.chars().count() > 200) {
            return Err(invalid("q is longer than 200 characters".into()));
        }
        Ok(Filter {
            state,
            rating,
            since: day("from", &self.from)?,
            until: day("to", &self.to)?.map(|t| t + 86_400),
            text: text.map(str::to_string),
        })
    }
}

#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", summary = "List conversations", params(ListQuery), security(("bearer" = [])), responses((status = 200, description = "Conversations", body = ConversationList), ApiErrors))]
pub(crate) async fn list_conversations(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let query = query.into_inner();
    let bot = match &query.bot_id {
        Some(raw) => {
            let id = parse_bot_id(raw)?;
            load_bot(&state, &caller, &id).await?;
            Some(id)
        }
        None => None,
    };
    let limit = page_limit(query.limit)?;
    let filter = query.filter()?;
    let bots = store_bots_visible(&state, &caller).await?;
    let page = state
        .stored(move |store| {
            let listing = Listing {
                bot: bot.as_ref(),
                user: query.user_id.as_deref(),
                cursor: query.cursor.clone(),
                limit,
                filter,
            };
            visible_page(store, listing, &bots)
        })
        .await?;
    let data = page
        .0
        .iter()
        .map(|c| ConversationView::new(c, None))
        .collect();
    Ok(HttpResponse::Ok().json(ConversationList {
        data,
        next_cursor: page.1,
    }))
}

async fn store_bots_visible(state: &AppState, caller: &Caller) -> ApiResult<Vec<BotId>> {
    let bots = state.stored(move |store| store.list_bots()).await?;
    Ok(bots
        .into_iter()
        .filter(|b| caller.may_see(b))
        .map(|b| b.id)
        .collect())
}

#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "conversations", summary = "Erase everything stored about one end user", params(("user_id" = String, Path, description = "Your end user's id")), security(("bearer" = [])), responses((status = 200, description = "Erased", body = UserErased), ApiErrors))]
pub(crate) async fn delete_user(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let user = path.into_inner();
    let bots = store_bots_visible(&state, &caller).await?;
    let for_user = user.clone();
    // One transaction: a turn answered meanwhile is dropped, not stored after it.
    let erased = state
        .stored(move |store| store.erase_user(&for_user, &bots))
        .await?;
    state.live.end(&erased.conversations, "conversation_erased");
    Ok(HttpResponse::Ok().json(UserErased::new(user, &erased)))
}

// ---- keys ----

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKey {
    /// Every bot of its environment, plus key and bot management. Exclusive with `bots`.
    #[serde(default)]
    admin: bool,
    /// The bots a non-admin key may use (exactly one for a public key).
    #[serde(default)]
    #[schema(inline, value_type = Vec<String>)]
    bots: Vec<String>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    test: bool,
    #[schema(max_length = 200)]
    name: Option<String>,
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys", summary = "List keys (admin; never the keys themselves)", security(("bearer" = [])), responses((status = 200, description = "Keys", body = KeyList), ApiErrors))]
pub(crate) async fn list_keys(
    state: web::Data<AppState>,
    caller: Caller,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let keys = state.stored(move |store| store.list_keys()).await?;
    let env = caller.key.env;
    let data = keys
        .iter()
        .filter(|k| k.env == env)
        .map(KeyView::from)
        .collect();
    Ok(HttpResponse::Ok().json(KeyList {
        data,
        next_cursor: None,
    }))
}

/// Checks a key request and makes the key: shared by the API and the CLI.
pub fn make_key(
    admin: bool,
    bots: &[String],
    public: bool,
    origins: &[String],
    test: bool,
    name: Option<String>,
) -> Result<(String, ApiKey), String> {
    let bots: Vec<BotId> = bots
        .iter()
        .map(|b| BotId::parse(b))
        .collect::<Result<_, _>>()?;
    if admin && (public || !bots.is_empty()) {
        return Err("an admin key is neither public nor scoped to bots".into());
    }
    if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err("name is limited to 200 characters".into());
    }
    if !admin && bots.is_empty() {
        return Err("give the key's bots, or make it an admin key".into());
    }
    if public && (bots.len() != 1 || origins.is_empty()) {
        return Err("a public key needs exactly one bot and at least one origin".into());
    }
    if !public && !origins.is_empty() {
        return Err("origins apply to public keys only".into());
    }
    for origin in origins {
        let parsed =
            url::Url::parse(origin).map_err(|e| format!("invalid origin {origin:?}: {e}"))?;
        let canonical = parsed.origin().ascii_serialization();
        if !matches!(parsed.scheme(), "http" | "https") || canonical != *origin {
            return Err(format!(
                "invalid origin {origin:?}: use scheme://host[:port] with nothing after it"
            ));
        }
    }
    let scope = if admin {
        KeyScope::Admin
    } else {
        KeyScope::Bots(bots)
    };
    keys::generate(
        if public {
            KeyKind::Public
        } else {
            KeyKind::Secret
        },
        if test { KeyEnv::Test } else { KeyEnv::Live },
        scope,
        origins.to_vec(),
        name,
        unix_now(),
    )
    .map_err(|e| e.to_string())
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys", summary = "Create a key (admin); the key is shown once", request_body = NewKey, security(("bearer" = [])), responses((status = 201, description = "Created", body = CreatedKey), ApiErrors))]
pub(crate) async fn create_key(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<NewKey>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let body = body.into_inner();
    let test = body.test || caller.key.env == KeyEnv::Test;
    let (key, record) = make_key(
        body.admin,
        &body.bots,
        body.public,
        &body.origins,
        test,
        body.name,
    )
    .map_err(|e| ApiError::bad_request("invalid_request", e))?;
    let stored = record.clone();
    state.stored(move |store| store.put_key(&stored)).await?;
    state.keys.put(record.clone());
    Ok(HttpResponse::Created().json(CreatedKey {
        key,
        record: KeyView::from(&record),
        replaces: None,
    }))
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", summary = "Revoke a key at once (admin)", params(("id" = String, Path, description = "Key id (key_…)")), security(("bearer" = [])), responses((status = 200, description = "Revoked", body = KeyView), ApiErrors))]
pub(crate) async fn revoke_key(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let mut record = own_key(&state, &caller, &path)?;
    if record.revoked.is_none() {
        record.revoked = Some(unix_now());
        let stored = record.clone();
        state.stored(move |store| store.put_key(&stored)).await?;
        state.keys.put(record.clone());
    }
    Ok(HttpResponse::Ok().json(KeyView::from(&record)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rotate {
    /// Seconds the old key stays valid (default one day, at most 30 days).
    #[schema(maximum = 2592000)]
    overlap_seconds: Option<u64>,
}

#[utoipa::path(post, path = "/v1/keys/{id}/rotate", tag = "keys", summary = "New key with the same powers; the old one expires after the overlap (admin)", request_body = Rotate, params(("id" = String, Path, description = "Key id (key_…)")), security(("bearer" = [])), responses((status = 201, description = "Rotated", body = CreatedKey), ApiErrors))]
pub(crate) async fn rotate_key(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let body: Option<Rotate> = super::error::optional_json(&body, state.limits.max_body_bytes)?;
    caller.require_admin()?;
    let overlap = body.and_then(|b| b.overlap_seconds).unwrap_or(86_400);
    let old = own_key(&state, &caller, &path)?;
    let (key, old, new) = keys::rotate(old, overlap, unix_now())
        .map_err(|e| ApiError::bad_request("invalid_request", e))?;
    let (o, n) = (old.clone(), new.clone());
    state.stored(move |store| store.put_keys(&[&o, &n])).await?;
    state.keys.put(old.clone());
    state.keys.put(new.clone());
    Ok(HttpResponse::Created().json(CreatedKey {
        key,
        record: KeyView::from(&new),
        replaces: Some(KeyView::from(&old)),
    }))
}

/// A key of the caller's own environment: test and live keys are separate worlds, so the
/// other one's ids are 404 `key_not_found`, as unknown ones are.
fn own_key(state: &AppState, caller: &Caller, id: &str) -> ApiResult<ApiKey> {
    state
        .keys
        .get(id)
        .filter(|k| k.env == caller.key.env)
        .ok_or_else(|| ApiError::not_found("key_not_found", format!("no key with id {id:?}")))
}
