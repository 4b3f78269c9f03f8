//! The embeddable widget's server side: `/widget.js` and `/demo` (embedded from `static/`),
//! `POST /v1/widget/session` (a public key exchanged for a short-lived session token bound
//! to the page's origin and an anonymous visitor), and CORS for the routes a browser calls.
//!
//! A session token is `ws_<key id>.<bot>.<visitor>.<expiry>.<hex HMAC-SHA256>`, the MAC
//! taken over those fields and the page's Origin under a secret kept in the store (made by
//! the first node to start): it holds no secret, cannot be widened, and works only from the
//! origin it was issued to. Tokens verify on every node sharing the store and outlive a
//! restart until they expire; the widget asks for a new one on a 401. Rotating the
//! secret (`docent keys rotate-session-secret`, `POST /v1/widget/session-secret/rotate`)
//! signs new tokens with a fresh one while the old one verifies until the overlap ends.
//! The visitor is the id derived from a key only the visitor's browser holds
//! (`visitor_id`), so the ids docent shows in leads and webhooks cannot be made into
//! sessions.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_cors::Cors;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AppState;
use super::api::{load_bot, parse_bot_id, resource};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::views::{SessionSecretRotation, WidgetBot, WidgetSession};
use crate::domain::BotId;
use crate::keys::{self, KeyKind, KeyScope};
use crate::ports::SecretRing;
use crate::telemetry::unix_now;

type HmacSha256 = Hmac<Sha256>;

/// The widget script, as served.
pub const WIDGET_JS: &str = include_str!("../../static/widget.js");
const DEMO_HTML: &str = include_str!("../../static/demo.html");

/// The first 16 hex digits of the script's sha256: its ETag and its versioned URL
/// (`/widget-<version>.js`).
pub fn widget_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| hex::encode(&Sha256::digest(WIDGET_JS.as_bytes())[..8]))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/widget/session", "POST").route(web::post().to(create_session)))
        .service(
            resource("/v1/widget/session-secret/rotate", "POST")
                .route(web::post().to(rotate_session_secret)),
        )
        .service(
            resource("/widget.js", "GET")
                .wrap(actix_web::middleware::Compress::default())
                .route(web::get().to(widget_js)),
        )
        .service(
            resource("/widget-{version}.js", "GET")
                .wrap(actix_web::middleware::Compress::default())
                .route(web::get().to(widget_js_versioned)),
        )
        .service(resource("/demo", "GET").route(web::get().to(demo)));
}

/// Paths a page's script may call with a public key or a session token.
fn browser_route(path: &str) -> bool {
    matches!(path, "/v1/widget/session" | "/v1/chat" | "/v1/leads")
        || path == "/v1/conversations"
        || path.starts_with("/v1/conversations/")
        || (path.starts_with("/v1/messages/") && path.ends_with("/feedback"))
}

/// CORS: only the browser routes, and only for an origin some active public key lists.
/// Other origins get no CORS headers (the browser then withholds the response), and the
/// request itself is still refused by the key check.
pub fn cors(state: web::Data<AppState>) -> Cors {
    Cors::default()
        .allowed_origin_fn(move |origin, head| {
            browser_route(head.uri.path())
                && origin
                    .to_str()
                    .is_ok_and(|origin| state.keys.public_origin(origin, unix_now()))
        })
        .allowed_methods(["GET", "POST"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            "x-request-id",
            "retry-after",
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
        ])
        .max_age(600)
        .block_on_origin_mismatch(false)
}

/// Issues and checks session tokens.
pub struct Sessions {
    /// The store's secrets: the current one signs, the previous one (after a rotation)
    /// still verifies until its deadline.
    secrets: RwLock<SecretRing>,
    /// Bumped by every rotation here, so a refresh read before it cannot undo it.
    generation: AtomicU64,
    pub ttl: Duration,
}

/// What a valid session token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `key_<id>` of the public key it was issued for.
    pub key_id: String,
    pub bot: BotId,
    pub visitor: String,
    pub expires: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SessionError {
    Invalid,
    Expired,
}

/// The name of the secret sessions are signed with, in the store.
pub const SESSION_SECRET: &str = "widget_sessions";

impl Sessions {
    /// Sessions signed with the store's secrets, so tokens verify on every node sharing
    /// it and after a restart.
    pub fn new(ttl: Duration, secrets: SecretRing) -> Sessions {
        Sessions {
            secrets: RwLock::new(secrets),
            generation: AtomicU64::new(0),
            ttl,
        }
    }

    /// A fresh random secret, for a store that has none yet and for a rotation.
    pub fn fresh_secret() -> [u8; 32] {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS's randomness");
        secret
    }

    /// Signs and verifies with `secrets` from now on (a rotation made on this node).
    pub fn set_secrets(&self, secrets: SecretRing) {
        let mut current = self.secrets.write().expect("session secrets lock");
        self.generation.fetch_add(1, Ordering::SeqCst);
        *current = secrets;
    }

    /// Where the secrets stand, for a refresh: read it before reading the store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Takes up `secrets` as read from the store (a rotation on another node or by the
    /// CLI), unless this node rotated since that read began (`generation`).
    pub fn refresh(&self, secrets: SecretRing, generation: u64) {
        let mut current = self.secrets.write().expect("session secrets lock");
        if self.generation() == generation && *current != secrets {
            *current = secrets;
        }
    }

    /// The secrets in use.
    #[cfg(test)]
    fn secrets(&self) -> SecretRing {
        self.secrets.read().expect("session secrets lock").clone()
    }

    fn mac(secret: &[u8], fields: &str, origin: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(fields.as_bytes());
        mac.update(b"|");
        mac.update(origin.as_bytes());
        mac
    }

    /// Whether `tag` signs `fields` for `origin` under the current secret, or under the
    /// previous one while it still verifies. Constant time per secret.
    fn signed(&self, fields: &str, origin: &str, tag: &[u8], now: u64) -> bool {
        let secrets = self.secrets.read().expect("session secrets lock");
        let current = Self::mac(&secrets.current, fields, origin).verify_slice(tag);
        let previous = secrets.previous.as_ref().is_some_and(|(secret, until)| {
            now < *until && Self::mac(secret, fields, origin).verify_slice(tag).is_ok()
        });
        current.is_ok() || previous
    }

    /// A token for `visitor` on `bot` through the public key `key_id`, usable from `origin`
    /// until the returned unix time.
    pub fn issue(
        &self,
        key_id: &str,
        bot: &BotId,
        visitor: &str,
        origin: &str,
        now: u64,
    ) -> (String, u64) {
        let expires = now + self.ttl.as_secs().max(1);
        let id = key_id.trim_start_matches("key_");
        let fields = format!("{id}.{}.{visitor}.{expires}", bot.as_str());
        let secrets = self.secrets.read().expect("session secrets lock");
        let tag = Self::mac(&secrets.current, &fields, origin).finalize();
        let tag = hex::encode(tag.into_bytes());
        (format!("ws_{fields}.{tag}"), expires)
    }

    /// The session a token grants to a request from `origin`.
    pub fn verify(&self, token: &str, origin: &str, now: u64) -> Result<Session, SessionError> {
        let body = token.strip_prefix("ws_").ok_or(SessionError::Invalid)?;
        let (fields, tag) = body.rsplit_once('.').ok_or(SessionError::Invalid)?;
        let tag = hex::decode(tag).map_err(|_| SessionError::Invalid)?;
        // Over the origin: a token copied to another site fails here.
        if !self.signed(fields, origin, &tag, now) {
            return Err(SessionError::Invalid);
        }
        let mut parts = fields.split('.');
        let (Some(id), Some(bot), Some(visitor), Some(expires), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SessionError::Invalid);
        };
        let expires: u64 = expires.parse().map_err(|_| SessionError::Invalid)?;
        if expires <= now {
            return Err(SessionError::Expired);
        }
        Ok(Session {
            key_id: format!("key_{id}"),
            bot: BotId::parse(bot).map_err(|_| SessionError::Invalid)?,
            visitor: visitor.to_string(),
            expires,
        })
    }
}

/// The longest the replaced session secret keeps verifying beside its successor: 30 days.
pub const MAX_SECRET_OVERLAP_SECS: u64 = keys::MAX_KEY_OVERLAP_SECS;

/// Replaces the store's session secret with a fresh one, the replaced one verifying for
/// `overlap` seconds more (at most `MAX_SECRET_OVERLAP_SECS`): for the API and the CLI.
/// Every node sharing the store takes it up within `KEY_REFRESH`.
pub fn rotate_secret(
    store: &dyn crate::ports::KeyStore,
    overlap: u64,
    now: u64,
) -> crate::ports::Result<(SecretRing, SessionSecretRotation)> {
    if overlap > MAX_SECRET_OVERLAP_SECS {
        let message = format!("the overlap is at most {MAX_SECRET_OVERLAP_SECS} seconds (30 days)");
        return Err(anyhow::Error::msg(message).into());
    }
    let secrets = store.rotate_secret(SESSION_SECRET, &Sessions::fresh_secret(), now + overlap)?;
    let rotation = SessionSecretRotation {
        rotated_at: now,
        previous_valid_until: secrets.previous.as_ref().map(|(_, until)| *until),
    };
    Ok((secrets, rotation))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateSessionSecret {
    /// Seconds the replaced secret keeps verifying tokens issued before the rotation
    /// (default: the session lifetime, so no visitor's session is cut short; 0 ends them
    /// at once, and the widget asks for a new one; at most 30 days).
    #[schema(maximum = 2592000)]
    overlap_seconds: Option<u64>,
}

#[utoipa::path(post, path = "/v1/widget/session-secret/rotate", tag = "widget", summary = "Sign widget sessions with a fresh secret; the old one verifies until the overlap ends (live admin)", request_body = Option<RotateSessionSecret>, security(("bearer" = [])), responses((status = 200, description = "Rotated", body = super::openapi::SessionSecretRotation), super::openapi::ApiErrors))]
pub(crate) async fn rotate_session_secret(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    if caller.key.env != keys::KeyEnv::Live {
        return Err(ApiError::forbidden(
            "the session secret serves every live visitor: rotate it with a live admin key",
        ));
    }
    let body: Option<RotateSessionSecret> =
        super::error::optional_json(&body, state.limits.max_body_bytes)?;
    let overlap = body
        .and_then(|b| b.overlap_seconds)
        .unwrap_or(state.sessions.ttl.as_secs().min(MAX_SECRET_OVERLAP_SECS));
    if overlap > MAX_SECRET_OVERLAP_SECS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("overlap_seconds is at most {MAX_SECRET_OVERLAP_SECS} (30 days)"),
        ));
    }
    let (secrets, rotation) = state
        .stored(move |store| rotate_secret(store, overlap, unix_now()))
        .await?;
    state.sessions.set_secrets(secrets);
    Ok(HttpResponse::Ok().json(rotation))
}

/// A visitor key the widget made and keeps: 16 to 128 characters of `[A-Za-z0-9_-]`.
pub fn valid_visitor_key(key: &str) -> bool {
    (16..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The visitor id (`v_` and 24 hex digits) of a visitor key. The key is the visitor's
/// credential and stays in their browser; the id is what docent stores and shows (the
/// conversations' `user_id`, leads, webhooks), and cannot be turned back into a session.
pub fn visitor_id(key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"docent visitor\0")
        .chain_update(key.as_bytes())
        .finalize();
    format!("v_{}", hex::encode(&digest[..12]))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionRequest {
    /// The site's public key (`pk_…`), as in the snippet's `data-token`.
    #[schema(required = true, value_type = String, pattern = "^pk_")]
    token: Option<String>,
    /// The bot (the key's only bot when absent).
    #[schema(pattern = "^[a-z0-9-]{1,64}$")]
    bot_id: Option<String>,
    /// A random key the widget keeps for its visitor (16 to 128 characters of
    /// `[A-Za-z0-9_-]`): the same key is the same visitor. A new visitor when absent.
    #[schema(pattern = "^[A-Za-z0-9_-]{16,128}$")]
    visitor_key: Option<String>,
}

#[utoipa::path(post, path = "/v1/widget/session", tag = "widget", summary = "Exchange a public key for a short-lived widget session token (from an allowed Origin)", request_body = SessionRequest, responses((status = 200, description = "The session", body = super::openapi::WidgetSession), super::openapi::ApiErrors))]
pub(crate) async fn create_session(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<SessionRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let token = body
        .token
        .ok_or_else(|| ApiError::bad_request("missing_field", "token is required"))?;
    let invalid = || ApiError::unauthorized("invalid_api_key", "the token is not valid");
    let now = unix_now();
    let presented = keys::parse(&token).ok_or_else(invalid)?;
    let record = state
        .keys
        .get_or_load(&presented.id, state.store.as_ref())
        .ok_or_else(invalid)?;
    if !keys::verify(&presented, &record) || !record.is_active(now) {
        return Err(invalid());
    }
    if record.kind != KeyKind::Public {
        return Err(ApiError::bad_request(
            "invalid_request",
            "widget sessions are made from public (pk_) keys; keep secret keys on your server",
        ));
    }
    let origin = super::auth::page_origin(&req).ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "a widget session is made from a web page: the request has no Origin",
        )
    })?;
    let origin = origin.as_str();
    if !record.origins.iter().any(|o| o == origin) {
        state.metrics.auth_failure(403);
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!("this key is not allowed from {origin}"),
        ));
    }
    let bot = match (&body.bot_id, &record.scope) {
        (Some(raw), _) => parse_bot_id(raw)?,
        (None, KeyScope::Bots(bots)) if bots.len() == 1 => bots[0].clone(),
        (None, _) => {
            return Err(ApiError::bad_request("missing_field", "bot_id is required"));
        }
    };
    let visitor = match body.visitor_key {
        Some(key) if valid_visitor_key(&key) => visitor_id(&key),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "visitor_key must be 16 to 128 characters of [A-Za-z0-9_-]",
            ));
        }
        None => visitor_id(&crate::ids::random_base62(32)?),
    };
    let address = super::auth::client_address(&req, &state);
    let caller = Caller::public(
        record.clone(),
        visitor.clone(),
        format!("{}@{address}", record.id),
    );
    let bot = load_bot(&state, &caller, &bot).await?;
    let (session_token, expires_at) = state
        .sessions
        .issue(&record.id, &bot.id, &visitor, origin, now);
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(WidgetSession {
            session_token,
            expires_at,
            expires_in: expires_at - now,
            visitor_id: visitor,
            bot: WidgetBot::from(&bot),
        }))
}

async fn widget_js(req: HttpRequest) -> HttpResponse {
    script_response(&req, "public, max-age=300")
}

async fn widget_js_versioned(req: HttpRequest, path: web::Path<String>) -> ApiResult<HttpResponse> {
    if path.as_str() != widget_version() {
        return Err(ApiError::not_found(
            "not_found",
            format!(
                "this server's widget is /widget-{}.js (or /widget.js)",
                widget_version()
            ),
        ));
    }
    Ok(script_response(&req, "public, max-age=31536000, immutable"))
}

/// The script with its ETag; 304 when the client has this version.
fn script_response(req: &HttpRequest, cache: &'static str) -> HttpResponse {
    let etag = format!("\"{}\"", widget_version());
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header(("cross-origin-resource-policy", "cross-origin"));
    if fresh {
        return response.finish();
    }
    response
        .content_type("text/javascript; charset=utf-8")
        .body(WIDGET_JS)
}

#[derive(Deserialize)]
struct DemoQuery {
    bot: Option<String>,
    token: Option<String>,
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `/demo?bot=<id>&token=<pk_…>`: a host page with the widget on it. The token must be a
/// public key allowing this server's own origin (`make run` makes one).
async fn demo(req: HttpRequest, query: web::Query<DemoQuery>) -> HttpResponse {
    let query = query.into_inner();
    let bot = query.bot.filter(|b| BotId::parse(b).is_ok());
    let token = query.token.filter(|t| {
        (t.starts_with("pk_live_") || t.starts_with("pk_test_"))
            && t.len() <= 64
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    });
    let page = match (bot, token) {
        (Some(bot), Some(token)) => {
            let host = req.connection_info().host().to_string();
            let scheme = req.connection_info().scheme().to_string();
            let snippet = format!(
                "<script src=\"{scheme}://{host}/widget.js\" data-bot=\"{bot}\" data-token=\"{token}\" async></script>"
            );
            DEMO_HTML
                .replace("{{SNIPPET}}", &escape_html(&snippet))
                .replace("{{BOT}}", &escape_html(&bot))
                .replace("{{TOKEN}}", &escape_html(&token))
        }
        _ => DEMO_HELP.to_string(),
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                 img-src 'self' data: https:; connect-src 'self'; frame-ancestors 'none'",
            ),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page)
}

const DEMO_HELP: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>docent demo</title>\
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}\
code,pre{background:#f3f4f6;border-radius:4px;padding:2px 4px}pre{padding:12px;overflow:auto}</style>\
</head><body><h1>docent widget demo</h1><p>This page shows the chat widget on one of your bots. \
It needs the bot and a public key that allows this server's origin:</p>\
<pre>docent keys create --public --bot BOT --origin http://127.0.0.1:8080</pre>\
<p>then open <code>/demo?bot=BOT&amp;token=pk_live_…</code>. <code>make run</code> does both \
and prints the link.</p></body></html>";

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> SecretRing {
        SecretRing {
            current: Sessions::fresh_secret().to_vec(),
            previous: None,
        }
    }

    #[test]
    fn a_session_token_works_only_from_its_origin_and_until_it_expires() {
        let sessions = Sessions::new(Duration::from_secs(60), fresh());
        let bot = BotId::parse("demo").unwrap();
        let (token, expires) = sessions.issue(
            "key_Ab12Cd34",
            &bot,
            "v_abcdefgh12",
            "https://a.example",
            1000,
        );
        assert_eq!(expires, 1060);
        let session = sessions.verify(&token, "https://a.example", 1001).unwrap();
        assert_eq!(session.key_id, "key_Ab12Cd34");
        assert_eq!(session.bot, bot);
        assert_eq!(session.visitor, "v_abcdefgh12");
        assert_eq!(
            sessions.verify(&token, "https://b.example", 1001),
            Err(SessionError::Invalid)
        );
        assert_eq!(
            sessions.verify(&token, "https://a.example", 1060),
            Err(SessionError::Expired)
        );
        // Changing any field (here the visitor) breaks the MAC.
        let forged = token.replace("v_abcdefgh12", "v_zzzzzzzz12");
        assert_eq!(
            sessions.verify(&forged, "https://a.example", 1001),
            Err(SessionError::Invalid)
        );
        // Another process's tokens are not this one's.
        let other = Sessions::new(Duration::from_secs(60), fresh());
        assert_eq!(
            other.verify(&token, "https://a.example", 1001),
            Err(SessionError::Invalid)
        );
        for junk in [
            "",
            "ws_",
            "ws_a.b",
            "ws_a.b.c.d.e",
            "sk_live_x",
            "ws_....zz",
        ] {
            assert_eq!(
                sessions.verify(junk, "https://a.example", 1001),
                Err(SessionError::Invalid),
                "{junk}"
            );
        }
    }

    #[test]
    fn after_a_rotation_old_tokens_verify_until_the_overlap_ends_and_new_ones_use_the_new_secret() {
        let sessions = Sessions::new(Duration::from_secs(600), fresh());
        let bot = BotId::parse("demo").unwrap();
        let origin = "https://a.example";
        let (old, _) = sessions.issue("key_Ab12Cd34", &bot, "v_abcdefgh12", origin, 1000);
        let before = sessions.secrets().current;
        sessions.set_secrets(SecretRing {
            current: Sessions::fresh_secret().to_vec(),
            previous: Some((before.clone(), 1100)),
        });
        let (new, _) = sessions.issue("key_Ab12Cd34", &bot, "v_abcdefgh12", origin, 1000);
        assert_ne!(old, new);
        assert!(sessions.verify(&old, origin, 1099).is_ok());
        assert!(sessions.verify(&new, origin, 1099).is_ok());
        // The overlap is over: the old secret no longer verifies, the new one does.
        assert_eq!(
            sessions.verify(&old, origin, 1100),
            Err(SessionError::Invalid)
        );
        assert!(sessions.verify(&new, origin, 1100).is_ok());
        // A node that only knows the old secret refuses tokens signed with the new one.
        let stale = Sessions::new(
            Duration::from_secs(600),
            SecretRing {
                current: before,
                previous: None,
            },
        );
        assert_eq!(stale.verify(&new, origin, 1001), Err(SessionError::Invalid));
        // The previous secret's stored form reads back; malformed or short ones as none.
        let value = SecretRing::encode_previous(&[7; 32], 1100);
        let decoded = SecretRing::decode_previous(&value);
        assert_eq!(decoded, Some((vec![7; 32], 1100)));
        assert_eq!(SecretRing::decode_previous(&value[..8]), None);
        assert_eq!(SecretRing::decode_previous(b"short"), None);
        let short = SecretRing::encode_previous(b"secret", 1100);
        assert_eq!(SecretRing::decode_previous(&short), None);
        // Neither secret is ever printed.
        let ring = SecretRing {
            current: vec![b'k'; 32],
            previous: Some((vec![b'k'; 32], 1100)),
        };
        assert!(!format!("{ring:?}").contains("107"), "{ring:?}");
        assert!(!format!("{ring:?}").contains("kkkk"), "{ring:?}");
        assert!(ring.is_usable());
        assert!(
            !SecretRing {
                current: vec![1; 31],
                previous: None
            }
            .is_usable()
        );
    }

    #[test]
    fn visitor_keys_are_bounded_and_their_ids_are_derived() {
        assert!(valid_visitor_key("abcdEFGH1234_-xy"));
        assert!(!valid_visitor_key("short"));
        assert!(!valid_visitor_key("abcdefgh.ijklmnopq"));
        assert!(!valid_visitor_key(&"a".repeat(129)));
        let id = visitor_id("abcdEFGH1234_-xy");
        assert!(id.starts_with("v_") && id.len() == 26, "{id}");
        assert_eq!(id, visitor_id("abcdEFGH1234_-xy"));
        assert_ne!(id, visitor_id("abcdEFGH1234_-xz"));
        // An id is not a key for itself: knowing a visitor's id gives another visitor.
        assert_ne!(visitor_id(&id), id);
    }

    #[test]
    fn only_the_routes_a_page_calls_get_cors() {
        for path in [
            "/v1/widget/session",
            "/v1/chat",
            "/v1/leads",
            "/v1/conversations",
            "/v1/conversations/conv_1/events",
        ] {
            assert!(browser_route(path), "{path}");
        }
        for path in [
            "/v1/keys",
            "/v1/bots",
            "/v1/webhooks",
            "/metrics",
            "/v1/chat/completions",
        ] {
            assert!(!browser_route(path), "{path}");
        }
    }

    #[test]
    fn demo_values_are_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
