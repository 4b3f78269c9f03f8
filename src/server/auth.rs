//! Who is calling: the `Caller` extractor reads `Authorization: Bearer <key>`, finds the
//! key's record by id, and compares hashes in constant time. Route handlers then ask the
//! caller for what they need (`require_admin`, `require_secret`, `may_see`).
//!
//! Missing or unknown keys are 401; a valid key asking for what it may not do is 403, and
//! for a bot (or a bot's resource) it may not see, 404 as if it did not exist.
//! Public (`pk_`) keys work only from their allowed origins, only on one bot's
//! visitor-facing routes. Widget session tokens (`ws_`, see `widget`) act as their public
//! key, for one bot and one visitor, from the one origin they were issued to. Without a
//! key, the console's session cookie stands for its account (`sessions`).

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::sync::{Arc, OnceLock, RwLock};

use actix_web::dev::Payload;
use actix_web::http::header::{AUTHORIZATION, ORIGIN};
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};

use super::AppState;
use super::error::ApiError;
use crate::domain::{Bot, BotId};
use crate::keys::{self, ApiKey, KeyEnv, KeyKind, KeyScope};
use crate::telemetry::unix_now;

/// Every key record, by id. On redb the server owns the database, so every key change
/// passes through it and this cache stays exact; on a store nodes share it is re-read
/// (`replace_all`) and filled on a miss (`get_or_load`).
pub struct KeyCache {
    keys: RwLock<HashMap<String, ApiKey>>,
    /// Bumped on every change, so what a key authorised once (a live feed) can look again.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for KeyCache {
    fn default() -> KeyCache {
        KeyCache::new(Vec::new())
    }
}

impl KeyCache {
    pub fn new(records: Vec<ApiKey>) -> KeyCache {
        KeyCache {
            keys: RwLock::new(records.into_iter().map(|k| (k.id.clone(), k)).collect()),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn put(&self, key: ApiKey) {
        let mut keys = self.keys.write().expect("key cache lock");
        keys.insert(key.id.clone(), key);
        // Counted under the lock, so `replace_all` sees it.
        self.changes.send_modify(|n| *n += 1);
    }

    /// A count of the changes so far, for `replace_all`.
    pub fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Takes a deleted bot out of every cached key's bots, as the store did.
    pub fn forget_bot(&self, bot: &crate::domain::BotId) {
        let mut keys = self.keys.write().expect("key cache lock");
        for key in keys.values_mut() {
            if let KeyScope::Bots(bots) = &mut key.scope {
                bots.retain(|b| b != bot);
            }
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// Wakes the watchers of `changes` without a key changing: a console session ended
    /// (logout, revocation, its account deleted).
    pub fn announce(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Wakes when any key changes (made, revoked, rotated), or on `announce`.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn get(&self, id: &str) -> Option<ApiKey> {
        self.keys.read().expect("key cache lock").get(id).cloned()
    }

    /// The key `id`, read from `store` when it is not cached and another node may have
    /// made it (a store nodes share).
    pub fn get_or_load(&self, id: &str, store: &dyn crate::ports::KeyStore) -> Option<ApiKey> {
        if let Some(key) = self.get(id) {
            return Some(key);
        }
        if !store.is_shared() {
            return None;
        }
        let key = store.get_key(id).ok()?;
        // As a change, so a refresh read before it does not take it out again.
        self.put(key.clone());
        Some(key)
    }

    /// Every key as `records` (the store's, which other nodes change too, read when the
    /// cache was at `generation`); wakes the watchers of `changes` when anything differs.
    /// Left as it is if this node changed a key since: the read may predate that change.
    pub fn replace_all(&self, records: Vec<ApiKey>, generation: u64) {
        let fresh: HashMap<String, ApiKey> =
            records.into_iter().map(|k| (k.id.clone(), k)).collect();
        let mut keys = self.keys.write().expect("key cache lock");
        if self.generation() == generation && *keys != fresh {
            *keys = fresh;
            drop(keys);
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Whether some active public key may be used from `origin` (CORS).
    pub fn public_origin(&self, origin: &str, now: u64) -> bool {
        self.keys.read().expect("key cache lock").values().any(|k| {
            k.kind == KeyKind::Public && k.is_active(now) && k.origins.iter().any(|o| o == origin)
        })
    }
}

/// The authenticated key behind a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
    /// Who is charged for this request's share of the rate limit and of the generation
    /// queue: the key, or for a public key (and a widget session) the key and the
    /// client's address.
    pub tenant: String,
    /// The bot the request turned out to be about, for the access log.
    pub bot: Arc<OnceLock<String>>,
    /// A widget session's visitor (`v_…`): the user id of the conversations it starts, and
    /// the only one whose conversations it may read.
    pub visitor: Option<String>,
    /// A widget session's one bot.
    pub session_bot: Option<BotId>,
    /// When a widget session ends (unix seconds).
    pub session_expires: Option<u64>,
    /// The origin the request came from (a public caller's, checked against its key).
    pub origin: String,
    /// A console session's id, when the caller is an account logged in with the cookie
    /// (`sessions`): then `key` is the account's powers as a key, never stored.
    pub console_session: Option<String>,
}

/// The key id of the request, for the access log.
#[derive(Debug, Clone)]
pub struct CallerKeyId(pub String);

/// The bot the request was about (set once the handler loaded it), for the access log.
#[derive(Debug, Clone)]
pub struct CallerBot(pub Arc<OnceLock<String>>);

impl Caller {
    /// A public key acting for one visitor (a widget session). `tenant` is the key and
    /// the client's address: visitor ids are the client's to choose, addresses are not.
    pub fn public(key: ApiKey, visitor: String, tenant: String) -> Caller {
        Caller {
            tenant,
            key,
            bot: Arc::default(),
            visitor: Some(visitor),
            session_bot: None,
            session_expires: None,
            origin: String::new(),
            console_session: None,
        }
    }

    /// Whether what authorised this caller still holds: its key is active (and, for a
    /// public caller, still allows its origin) and its widget session has not expired.
    pub fn still_valid(&self, keys: &KeyCache, now: u64) -> Result<(), &'static str> {
        if self.session_expires.is_some_and(|t| t <= now) {
            return Err("session_expired");
        }
        if self.console_session.is_some() {
            // An account's session: its expiry above; whether it still exists is the
            // store's to say (`sessions::still_valid`).
            return Ok(());
        }
        let key = keys.get(&self.key.id).filter(|k| k.is_active(now));
        let allowed =
            key.is_some_and(|k| k.kind == KeyKind::Secret || k.origins.contains(&self.origin));
        if allowed { Ok(()) } else { Err("key_revoked") }
    }

    /// The soonest moment this caller stops being valid by itself: its session, or its key
    /// as rotated since, expiring.
    pub fn valid_until(&self, keys: &KeyCache) -> Option<u64> {
        let key = keys.get(&self.key.id).and_then(|k| k.expires);
        match (self.session_expires, key) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.key.kind == KeyKind::Secret && self.key.scope == KeyScope::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("this route needs an admin key"))
        }
    }

    pub fn require_secret(&self) -> Result<(), ApiError> {
        if self.key.kind == KeyKind::Secret {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "public keys may only chat with their bot",
            ))
        }
    }

    /// Whether the key may see this bot: in scope, and of the same environment (test keys
    /// see only test bots, live keys only live ones).
    pub fn may_see(&self, bot: &Bot) -> bool {
        let env_matches = (self.key.env == KeyEnv::Test) == bot.test;
        env_matches && self.may_see_id(&bot.id)
    }

    pub fn may_see_id(&self, bot: &BotId) -> bool {
        self.key.allows_bot(bot) && self.session_bot.as_ref().is_none_or(|b| b == bot)
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered");
    let result = check(req, state).and_then(|caller| {
        req.extensions_mut()
            .insert(CallerKeyId(caller.key.id.clone()));
        req.extensions_mut().insert(CallerBot(caller.bot.clone()));
        if let Some(limit) = &state.per_key {
            match limit.check(&caller.tenant) {
                Ok(quote) => {
                    req.extensions_mut().insert(super::KeyQuote(quote));
                }
                Err((quote, error)) => {
                    req.extensions_mut().insert(super::KeyQuote(quote));
                    return Err(error);
                }
            }
        }
        Ok(caller)
    });
    match &result {
        Ok(_) => {}
        Err(e) => {
            if matches!(e.status.as_u16(), 401 | 403) {
                state.metrics.auth_failure(e.status.as_u16());
            }
        }
    }
    result
}

/// `access_token` from the query string, on the routes that accept it (live feeds).
fn query_token(req: &HttpRequest) -> Option<String> {
    let path = req.path();
    let feed = path.starts_with("/v1/conversations/") && path.ends_with("/events");
    if !feed {
        return None;
    }
    // Public keys and widget sessions only: a secret key in a URL ends up in proxy logs
    // and browser history.
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
        .filter(|v| v.starts_with("pk_") || v.starts_with("ws_"))
}

fn check(req: &HttpRequest, state: &AppState) -> Result<Caller, ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = match header {
        Some(header) => header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .unwrap_or("")
            .to_string(),
        // The console's session cookie, when there is no key.
        None if query_token(req).is_none() && super::sessions::session_token(req).is_some() => {
            let token = super::sessions::session_token(req).unwrap_or_default();
            return super::sessions::session_caller(req, state, &token);
        }
        // EventSource cannot send headers: a conversation's live feed takes a public key
        // as `?access_token=` (still held to its origins below).
        None => query_token(req).ok_or_else(|| {
            ApiError::unauthorized(
                "missing_api_key",
                "send your key as `Authorization: Bearer <key>`",
            )
        })?,
    };
    let token = token.as_str();
    let invalid = || ApiError::unauthorized("invalid_api_key", "the API key is not valid");
    let origin = page_origin(req).unwrap_or_default();
    let origin = origin.as_str();
    if token.starts_with("ws_") {
        return session_caller(state, token, origin, client_address(req, state));
    }
    let presented = keys::parse(token).ok_or_else(invalid)?;
    let record = state
        .keys
        .get_or_load(&presented.id, state.store.as_ref())
        .ok_or_else(invalid)?;
    if !keys::verify(&presented, &record) || !record.is_active(unix_now()) {
        return Err(invalid());
    }
    if record.kind == KeyKind::Public && !record.origins.iter().any(|o| o == origin) {
        return Err(ApiError::forbidden(
            "this public key is not allowed from this origin",
        ));
    }
    // A public key is shared by every visitor of a site: its budgets are per visitor
    // address, so one busy page cannot starve the others.
    let tenant = match record.kind {
        KeyKind::Public => format!("{}@{}", record.id, client_address(req, state)),
        KeyKind::Secret => record.id.clone(),
    };
    Ok(Caller {
        key: record,
        tenant,
        bot: Arc::default(),
        visitor: None,
        session_bot: None,
        session_expires: None,
        origin: origin.to_string(),
        console_session: None,
    })
}

/// A widget session token: valid from its origin until it expires, while its public key
/// is active and still allows that origin.
fn session_caller(
    state: &AppState,
    token: &str,
    origin: &str,
    address: String,
) -> Result<Caller, ApiError> {
    let now = unix_now();
    let session = state
        .sessions
        .verify(token, origin, now)
        .map_err(|e| match e {
            super::widget::SessionError::Expired => ApiError::unauthorized(
                "session_expired",
                "the widget session has expired; make a new one",
            ),
            super::widget::SessionError::Invalid => ApiError::unauthorized(
                "invalid_api_key",
                "the session token is not valid (from this origin, or signed with a rotated secret)",
            ),
        })?;
    let record = state
        .keys
        .get_or_load(&session.key_id, state.store.as_ref())
        .filter(|k| k.kind == KeyKind::Public && k.is_active(now))
        .filter(|k| k.origins.iter().any(|o| o == origin))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "invalid_api_key",
                "the session's public key is revoked or no longer allows this origin",
            )
        })?;
    let tenant = format!("{}@{address}", record.id);
    let mut caller = Caller::public(record, session.visitor, tenant);
    caller.session_bot = Some(session.bot);
    caller.session_expires = Some(session.expires);
    caller.origin = origin.to_string();
    Ok(caller)
}

/// The client's address as limits and budgets count it (an IPv6 client by its network).
pub fn client_address(req: &HttpRequest, state: &AppState) -> String {
    super::ratelimit::client_ip(req, &state.limits.trusted_proxies).map_or_else(
        || "unknown".to_string(),
        |ip| super::ratelimit::address_group(ip, state.limits.ipv6_prefix),
    )
}

/// The origin of the page behind a request: its `Origin` header, or, for a same-origin
/// request (browsers send no `Origin` on same-origin GETs), this server's own origin as
/// the request addressed it. Neither can stop a non-browser client, which may send any
/// headers; they stop other sites' pages.
pub fn page_origin(req: &HttpRequest) -> Option<String> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    match header(ORIGIN.as_str()) {
        Some(origin) if !origin.is_empty() && origin != "null" => Some(origin.to_string()),
        Some(_) => None,
        None if header("sec-fetch-site") == Some("same-origin") => {
            let info = req.connection_info();
            Some(format!("{}://{}", info.scheme(), info.host()))
        }
        None => None,
    }
}
