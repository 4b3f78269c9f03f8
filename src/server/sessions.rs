//! Console logins: `POST /v1/auth/login` (email and password for a session cookie),
//! `GET /v1/auth/session`, `POST /v1/auth/logout`; and the session side of `auth`: a
//! request carrying the cookie acts as its account (an owner as a live admin key, an agent
//! as a key scoped to its bots), and one that changes anything must echo the session's
//! CSRF token in `X-CSRF-Token`.

use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::api::{blocking, resource};
use super::auth::{Caller, client_address};
use super::error::{ApiError, ApiResult};
use super::openapi::*;
use super::ratelimit::{RateLimit, Share};
use super::views::AccountView;
use crate::accounts::{self, Account, Role, SESSION_COOKIE, Session};
use crate::keys::{ApiKey, KeyEnv, KeyKind, KeyScope};
use crate::telemetry::unix_now;

/// The header a cookie-authenticated request that changes something must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session is written back (its idle clock reset) at most this often.
const TOUCH_SECS: u64 = 60;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/auth/login", "POST").route(web::post().to(login)))
        .service(resource("/v1/auth/session", "GET").route(web::get().to(current)))
        .service(resource("/v1/auth/logout", "POST").route(web::post().to(logout)));
}

/// Login attempts allowed, per account (its email, whether it exists or not) and per
/// client address, before 429: guessing passwords is slow whichever way it is spread.
pub struct LoginLimits {
    per_account: Option<RateLimit>,
    per_address: Option<RateLimit>,
    /// Password checks running at once.
    hashing: tokio::sync::Semaphore,
}

impl LoginLimits {
    /// The limits, each node enforcing its share among the nodes serving.
    pub fn shared(share: &Share) -> LoginLimits {
        LoginLimits {
            per_account: RateLimit::per_minute(5).map(|l| l.shared(share)),
            per_address: RateLimit::per_minute(20).map(|l| l.shared(share)),
            hashing: tokio::sync::Semaphore::new(4),
        }
    }
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits::shared(&Share::default())
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    email: String,
    password: String,
}

/// A console session as the API shows it (the token itself is only in the cookie).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SessionView {
    account: AccountView,
    /// Echo it in `X-CSRF-Token` on every request that changes something.
    csrf_token: String,
    /// When the session ends unless used again (unix seconds).
    expires: u64,
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "accounts", summary = "Log in to the console: sets the session cookie", request_body = Login, responses((status = 200, description = "Logged in; `Set-Cookie` holds the session", body = SessionView), ApiErrors))]
pub(crate) async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Login>,
) -> ApiResult<HttpResponse> {
    let Login { email, password } = body.into_inner();
    let email = email.trim().to_lowercase();
    let address = client_address(&req, &state);
    // The address first: a client refused for its own guessing spends no account's tries.
    for (limit, who) in [
        (&state.logins.per_address, &address),
        (&state.logins.per_account, &email),
    ] {
        if let Some(limit) = limit {
            limit.check(&format!("login:{who}")).map_err(|(_, e)| e)?;
        }
    }
    // Each check holds 19 MiB for tens of milliseconds: a few at a time.
    let _hashing = state
        .logins
        .hashing
        .acquire()
        .await
        .map_err(|e| ApiError::internal(&anyhow::anyhow!("login semaphore: {e}")))?;
    let store = state.store.clone();
    // A name no account could have (control characters, no `@`) is looked up nowhere: it
    // is refused like an unknown one (and a NUL would not reach PostgreSQL).
    let valid = accounts::normalize_email(&email).ok();
    let account = blocking(move || {
        let account = match valid {
            Some(email) => store.account_by_email(&email)?,
            None => None,
        };
        match account {
            Some(a) if accounts::verify_password(&password, &a.password_hash) => Ok(Some(a)),
            Some(_) => Ok(None),
            None => {
                accounts::verify_nothing(&password);
                Ok(None)
            }
        }
    })
    .await?;
    let Some(account) = account else {
        tracing::info!("login refused");
        return Err(ApiError::unauthorized(
            "invalid_credentials",
            "the email or the password is wrong",
        ));
    };
    let now = unix_now();
    let (token, session) = Session::start(&account.id, now)?;
    let stored = session.clone();
    state
        .stored(move |store| {
            store.delete_expired_sessions(now)?;
            store.put_session(&stored)
        })
        .await?;
    tracing::info!(account = %account.id, "logged in");
    let secure = secure_origin(&state, &req);
    Ok(HttpResponse::Ok()
        .insert_header(("set-cookie", cookie(&token, secure)))
        .insert_header(("cache-control", "no-store"))
        .json(view(&account, &session)))
}

#[utoipa::path(get, path = "/v1/auth/session", tag = "accounts", summary = "The console session behind the cookie", responses((status = 200, description = "The session's account and CSRF token", body = SessionView), ApiErrors))]
pub(crate) async fn current(state: web::Data<AppState>, caller: Caller) -> ApiResult<HttpResponse> {
    let (account, session) = caller_session(&state, &caller).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(view(&account, &session)))
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "accounts", summary = "End the console session behind the cookie", responses((status = 200, description = "Logged out; the cookie is cleared", body = Deleted), ApiErrors))]
pub(crate) async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
) -> ApiResult<HttpResponse> {
    let (account, session) = caller_session(&state, &caller).await?;
    let id = session.id.clone();
    state.stored(move |store| store.delete_session(&id)).await?;
    // Open live feeds look again.
    state.keys.announce();
    tracing::info!(account = %account.id, "logged out");
    let secure = secure_origin(&state, &req);
    let (name, flags) = (cookie_name(secure), if secure { "; Secure" } else { "" });
    Ok(HttpResponse::Ok()
        .insert_header((
            "set-cookie",
            format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{flags}"),
        ))
        .json(super::views::Deleted::new(account.id)))
}

/// The session (and account) of a caller that came with the cookie.
async fn caller_session(state: &AppState, caller: &Caller) -> ApiResult<(Account, Session)> {
    let id = caller.console_session.clone().ok_or_else(|| {
        ApiError::bad_request(
            "invalid_request",
            "this route is for console sessions; an API key has none",
        )
    })?;
    let account_id = caller.key.id.clone();
    let found = state
        .stored(move |store| Ok((store.get_account(&account_id)?, store.get_session(&id)?)))
        .await?;
    match found {
        (Some(account), Some(session)) => Ok((account, session)),
        _ => Err(session_invalid()),
    }
}

fn view(account: &Account, session: &Session) -> SessionView {
    SessionView {
        account: AccountView::from(account),
        csrf_token: session.csrf.clone(),
        expires: session.expires(),
    }
}

/// Whether clients reach docent over https: `--public-url` says so, else the request's
/// scheme (a proxy's `X-Forwarded-Proto`).
fn secure_origin(state: &AppState, req: &HttpRequest) -> bool {
    match &state.limits.public_url {
        Some(origin) => origin.starts_with("https://"),
        None => req.connection_info().scheme() == "https",
    }
}

/// The cookie's name: over https with the `__Host-` prefix, which browsers accept only
/// `Secure`, for `Path=/` and without a `Domain`, so a sibling subdomain cannot plant one.
fn cookie_name(secure: bool) -> String {
    if secure {
        format!("__Host-{SESSION_COOKIE}")
    } else {
        SESSION_COOKIE.to_string()
    }
}

/// The session cookie: script cannot read it, other sites' requests do not carry it, and
/// over https it never travels in clear.
fn cookie(token: &str, secure: bool) -> String {
    let max_age = accounts::SESSION_MAX_SECS;
    let name = cookie_name(secure);
    let flags = if secure { "; Secure" } else { "" };
    format!("{name}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{flags}")
}

fn session_invalid() -> ApiError {
    ApiError::unauthorized(
        "invalid_session",
        "the console session is not valid (expired, logged out or revoked); log in again",
    )
}

/// The session token in the request's cookies (every `Cookie` header), if any: the
/// `__Host-` one first.
pub fn session_token(req: &HttpRequest) -> Option<String> {
    let cookies: Vec<(String, String)> = req
        .headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    [cookie_name(true), cookie_name(false)]
        .iter()
        .find_map(|wanted| cookies.iter().find(|(name, _)| name == wanted))
        .map(|(_, value)| value.clone())
}

/// The caller behind a session cookie: the session live and its account there, and for a
/// request that may change something, the CSRF token echoed.
pub fn session_caller(req: &HttpRequest, state: &AppState, token: &str) -> ApiResult<Caller> {
    let now = unix_now();
    let id = accounts::session_id(token);
    let session = state.store.get_session(&id)?.ok_or_else(session_invalid)?;
    if !session.is_live(now) {
        let store = state.store.clone();
        tokio::task::spawn_blocking(move || store.delete_session(&id));
        return Err(session_invalid());
    }
    let account = state
        .store
        .get_account(&session.account)?
        .ok_or_else(session_invalid)?;
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let echoed = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !safe && !echoed.is_some_and(|t| session.csrf_matches(t)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "a console request that changes something must carry the session's X-CSRF-Token",
        ));
    }
    if account.role == Role::Agent {
        agent_may(req)?;
    }
    let session = touch(state, session, now);
    Ok(Caller {
        tenant: account.id.clone(),
        key: account_key(&account),
        bot: Arc::default(),
        visitor: None,
        session_bot: None,
        session_expires: Some(session.expires()),
        origin: super::auth::page_origin(req).unwrap_or_default(),
        console_session: Some(session.id),
    })
}

/// What an agent's session may call (method, route pattern): its bots' conversations,
/// their live feeds and leads, replying, and its own session. Everything else, routes
/// added later included, is refused.
const AGENT_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/bots"),
    ("GET", "/v1/conversations"),
    ("GET", "/v1/conversations/{id}"),
    ("GET", "/v1/conversations/{id}/events"),
    ("POST", "/v1/conversations/{id}/messages"),
    ("POST", "/v1/conversations/{id}/resume"),
    ("POST", "/v1/conversations/{id}/close"),
    ("GET", "/v1/leads"),
    ("GET", "/v1/auth/session"),
    ("POST", "/v1/auth/logout"),
];

fn agent_may(req: &HttpRequest) -> ApiResult<()> {
    let pattern = req.match_pattern().unwrap_or_default();
    let method = req.method().as_str();
    if AGENT_ROUTES
        .iter()
        .any(|&(m, p)| m == method && p == pattern)
    {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "an agent may read and answer its bots' conversations and leads, nothing else",
    ))
}

/// Resets the session's idle clock, at most once a `TOUCH_SECS`, on a blocking thread
/// (a write waits for redb's one writer), and only if the session still exists: a logout
/// racing this request stays a logout.
fn touch(state: &AppState, mut session: Session, now: u64) -> Session {
    if now >= session.last_seen + TOUCH_SECS {
        session.last_seen = now;
        let (store, id) = (state.store.clone(), session.id.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.touch_session(&id, now) {
                tracing::warn!("could not record a session's use: {e:#}");
            }
        });
    }
    session
}

/// Whether a caller (a live feed's, checked again when keys or sessions change) may still
/// be served: its key as `Caller::still_valid` says, and a console session still stored
/// and live.
pub fn still_valid(state: &AppState, caller: &Caller, now: u64) -> Result<(), &'static str> {
    caller.still_valid(&state.keys, now)?;
    let Some(id) = &caller.console_session else {
        return Ok(());
    };
    match state.store.get_session(id) {
        Ok(Some(session)) if session.is_live(now) => Ok(()),
        Ok(_) => Err("session_ended"),
        Err(e) => {
            tracing::warn!("could not read a session: {e:#}");
            Err("session_ended")
        }
    }
}

/// What an account may do, as the key the routes already check: an owner a live admin
/// key, an agent a secret key scoped to its bots. It is never stored.
fn account_key(account: &Account) -> ApiKey {
    ApiKey {
        id: account.id.clone(),
        kind: KeyKind::Secret,
        env: KeyEnv::Live,
        scope: match account.role {
            Role::Owner => KeyScope::Admin,
            Role::Agent => KeyScope::Bots(account.bots.clone()),
        },
        origins: Vec::new(),
        name: None,
        hash: String::new(),
        created: account.created,
        revoked: None,
        expires: None,
    }
}
