//! The widget over real HTTP: session tokens bound to an origin and a visitor, CORS only for
//! allowed origins, visitor and bot budgets, the script's caching headers and `/demo`; and
//! the widget itself driven in Debian's Chromium (playwright-core, tests/browser) against
//! the real small model, from a host page on another loopback origin.

use actix_web::{App, HttpResponse, HttpServer, web};
use docent::domain::BotId;
use docent::keys::{KeyEnv, KeyKind, KeyScope};
use docent::server::Limits;
use serde_json::{Value, json};

use crate::helpers::repo_root;
use crate::server::{TestServer, assert_error, fake_server};

const SHOP: &str = "https://shop.example";

pub(crate) fn zephyr_key(s: &TestServer, origins: &[&str]) -> String {
    s.make_key(
        KeyKind::Public,
        KeyEnv::Live,
        KeyScope::Bots(vec![BotId::parse("zephyr").unwrap()]),
        origins.iter().map(|o| o.to_string()).collect(),
    )
}

async fn session(s: &TestServer, pk: &str, origin: &str, visitor: Option<&str>) -> Value {
    let mut body = json!({"token": pk, "bot_id": "zephyr"});
    if let Some(v) = visitor {
        body["visitor_key"] = json!(v);
    }
    let response = s
        .call_from("POST", "/v1/widget/session", None, Some(origin), Some(body))
        .await;
    assert_eq!(response.0, 200, "{}", response.2);
    response.2
}

#[tokio::test(flavor = "multi_thread")]
async fn widget_sessions_are_bound_to_their_origin_visitor_and_key() {
    let (s, _) = fake_server(Limits::default()).await;
    let pk = zephyr_key(&s, &[SHOP]);
    let (status, _, _) = s
        .call(
            "PATCH",
            "/v1/bots/zephyr",
            Some(&s.admin),
            Some(json!({"fallback": "Email help@zephyr.example",
                "intents": [{"id": "returns", "label": "Returns", "message": "How do returns work?"}]})),
        )
        .await;
    assert_eq!(status, 200);
    let exchange = |token: &str, origin: Option<&'static str>| {
        let body = json!({"token": token, "bot_id": "zephyr"});
        s.call_from("POST", "/v1/widget/session", None, origin, Some(body))
    };

    // Refusals: no Origin, a foreign one, a secret key, a bad key, a malformed body.
    assert_error(&exchange(&pk, None).await, 403, "origin_not_allowed");
    assert_error(
        &exchange(&pk, Some("https://evil.example")).await,
        403,
        "origin_not_allowed",
    );
    assert_error(
        &exchange(&s.admin, Some(SHOP)).await,
        400,
        "invalid_request",
    );
    // The last character changed (to one it is not: a random key may end in `x`).
    let other = if pk.ends_with('x') { 'y' } else { 'x' };
    let forged = format!("{}{other}", &pk[..pk.len() - 1]);
    assert_error(&exchange(&forged, Some(SHOP)).await, 401, "invalid_api_key");
    let junk = json!({"token": pk, "visitor_key": "../etc/passwd/xxxxxx"});
    assert_error(
        &s.call_from("POST", "/v1/widget/session", None, Some(SHOP), Some(junk))
            .await,
        400,
        "invalid_request",
    );
    let sandbox = json!({"token": pk, "bot_id": "sandbox"});
    assert_error(
        &s.call_from(
            "POST",
            "/v1/widget/session",
            None,
            Some(SHOP),
            Some(sandbox),
        )
        .await,
        404,
        "bot_not_found",
    );

    // A session: the bot's public face, and a visitor id made when none is sent.
    let first = session(&s, &pk, SHOP, None).await;
    let token = first["session_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ws_"), "{first}");
    let visitor = first["visitor_id"].as_str().unwrap().to_string();
    assert!(visitor.starts_with("v_"), "{first}");
    assert!(first["expires_in"].as_u64().unwrap() > 3000, "{first}");
    assert_eq!(first["bot"]["name"], "zephyr");
    assert_eq!(first["bot"]["fallback"], "Email help@zephyr.example");
    assert_eq!(
        first["bot"]["intents"],
        json!([{"id": "returns", "label": "Returns"}])
    );
    assert_eq!(first["bot"]["lead_capture"], "off");

    // The token chats from its origin; the conversation is the visitor's.
    let ask = json!({"bot_id": "zephyr", "message": "How long is the warranty?"});
    let (status, _, answer) = s
        .call_from(
            "POST",
            "/v1/chat",
            Some(&token),
            Some(SHOP),
            Some(ask.clone()),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let conversation = answer["conversation_id"].as_str().unwrap().to_string();
    let transcript_path = format!("/v1/conversations/{conversation}");
    let (status, _, transcript) = s
        .call_from("GET", &transcript_path, Some(&token), Some(SHOP), None)
        .await;
    assert_eq!(status, 200, "{transcript}");
    assert_eq!(transcript["user_id"], visitor.as_str());
    assert_eq!(transcript["messages"].as_array().unwrap().len(), 2);

    // Copied to another site, or sent without an Origin, the token is worthless.
    for origin in [Some("https://evil.example"), None] {
        assert_error(
            &s.call_from("POST", "/v1/chat", Some(&token), origin, Some(ask.clone()))
                .await,
            401,
            "invalid_api_key",
        );
    }
    // Another visitor of the same site cannot read this visitor's conversation.
    let other = session(&s, &pk, SHOP, Some("someone-else-key-0001")).await;
    let other_token = other["session_token"].as_str().unwrap();
    let other_visitor = other["visitor_id"].as_str().unwrap();
    assert!(
        other_visitor.starts_with("v_") && other_visitor != visitor,
        "{other}"
    );
    // The same key is the same visitor.
    let again = session(&s, &pk, SHOP, Some("someone-else-key-0001")).await;
    assert_eq!(again["visitor_id"], other_visitor);
    assert_error(
        &s.call_from("GET", &transcript_path, Some(other_token), Some(SHOP), None)
            .await,
        403,
        "forbidden",
    );
    // A visitor's id (it is in leads, webhooks and exports) is not their key: used as a
    // key it makes a different visitor, who cannot read the conversation.
    let impostor = session(&s, &pk, SHOP, Some(&visitor)).await;
    assert_ne!(impostor["visitor_id"], visitor.as_str());
    assert_error(
        &s.call_from(
            "GET",
            &transcript_path,
            impostor["session_token"].as_str(),
            Some(SHOP),
            None,
        )
        .await,
        403,
        "forbidden",
    );
    // The bare public key cannot read a widget visitor's conversation, nor claim a visitor.
    assert_error(
        &s.call_from("GET", &transcript_path, Some(&pk), Some(SHOP), None)
            .await,
        403,
        "forbidden",
    );
    let claim = json!({"bot_id": "zephyr", "message": "hi", "user_id": visitor});
    assert_error(
        &s.call_from("POST", "/v1/chat", Some(&pk), Some(SHOP), Some(claim))
            .await,
        400,
        "invalid_request",
    );
    // Visitor-facing routes only: no bot lists, no agent messages, no key management.
    for (method, path, body) in [
        ("GET", "/v1/bots".to_string(), None),
        ("GET", "/v1/keys".to_string(), None),
        (
            "POST",
            format!("{transcript_path}/messages"),
            Some(json!({"role": "agent", "content": "hi"})),
        ),
    ] {
        assert_error(
            &s.call_from(method, &path, Some(&token), Some(SHOP), body)
                .await,
            403,
            "forbidden",
        );
    }
    // The visitor's own handoff, lead and live feed work with the session.
    let (status, _, handed) = s
        .call_from(
            "POST",
            &format!("{transcript_path}/handoff"),
            Some(&token),
            Some(SHOP),
            Some(json!({"reason": "visitor_request"})),
        )
        .await;
    assert_eq!(status, 200, "{handed}");
    assert_eq!(handed["state"], "handed_off");
    let lead = json!({"bot_id": "zephyr", "conversation_id": conversation,
        "name": "Ada", "email": "ada@example.com", "consent": true});
    let (status, _, lead) = s
        .call_from("POST", "/v1/leads", Some(&token), Some(SHOP), Some(lead))
        .await;
    assert_eq!(status, 201, "{lead}");
    assert_eq!(lead["user_id"], visitor.as_str());

    // Deleting the visitor as a user erases what the widget stored.
    let (status, _, erased) = s
        .call(
            "DELETE",
            &format!("/v1/users/{visitor}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{erased}");
    let (status, _, _) = s.call("GET", &transcript_path, Some(&s.admin), None).await;
    assert_eq!(status, 404);

    // Revoking the public key ends its sessions at once.
    let key_id = format!("key_{}", &pk[8..16]);
    let (status, _, _) = s
        .call(
            "DELETE",
            &format!("/v1/keys/{key_id}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_error(
        &s.call_from("POST", "/v1/chat", Some(&token), Some(SHOP), Some(ask))
            .await,
        401,
        "invalid_api_key",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn same_origin_pages_work_without_an_origin_header_on_gets() {
    // Browsers send no Origin on a same-origin GET (docent's own /demo page reading its
    // transcript); Sec-Fetch-Site says it is same-origin, and the server's own origin counts.
    let (s, _) = fake_server(Limits::default()).await;
    let pk = zephyr_key(&s, &[&s.base]);
    let token = session(&s, &pk, &s.base, None).await["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    let ask = json!({"bot_id": "zephyr", "message": "How long is the warranty?"});
    let (status, _, answer) = s
        .call_from("POST", "/v1/chat", Some(&token), Some(&s.base), Some(ask))
        .await;
    assert_eq!(status, 200, "{answer}");
    let path = format!(
        "/v1/conversations/{}",
        answer["conversation_id"].as_str().unwrap()
    );
    let get = |site: Option<&'static str>| {
        let mut req = s.http.get(s.url(&path)).bearer_auth(&token);
        if let Some(site) = site {
            req = req.header("Sec-Fetch-Site", site);
        }
        req.send()
    };
    assert_eq!(get(Some("same-origin")).await.unwrap().status(), 200);
    for site in [Some("cross-site"), Some("same-site"), None] {
        assert_eq!(get(site).await.unwrap().status(), 401, "{site:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_answers_only_allowed_origins_on_the_routes_a_page_calls() {
    let (s, _) = fake_server(Limits::default()).await;
    zephyr_key(&s, &[SHOP]);
    let preflight = |path: &'static str, origin: &'static str| {
        s.http
            .request(reqwest::Method::OPTIONS, s.url(path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("/v1/chat", SHOP).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], SHOP);
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    for (path, origin) in [
        ("/v1/chat", "https://evil.example"),
        ("/v1/widget/session", "https://evil.example"),
        // Allowed origin, but not a route a page calls.
        ("/v1/keys", SHOP),
        ("/v1/bots", SHOP),
    ] {
        let res = preflight(path, origin).await.unwrap();
        assert!(
            !res.headers().contains_key("access-control-allow-origin"),
            "{path} from {origin}: {:?}",
            res.headers()
        );
    }
    // Actual responses: the allowed origin is named (errors included), others are not.
    let body = json!({"token": "pk_live_nonsense", "bot_id": "zephyr"});
    let (_, headers, _) = s
        .call_from(
            "POST",
            "/v1/widget/session",
            None,
            Some(SHOP),
            Some(body.clone()),
        )
        .await;
    assert_eq!(headers["access-control-allow-origin"], SHOP);
    assert!(
        headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("retry-after")
    );
    let (status, headers, _) = s
        .call_from(
            "POST",
            "/v1/widget/session",
            None,
            Some("https://evil.example"),
            Some(body),
        )
        .await;
    assert_eq!(status, 401);
    assert!(!headers.contains_key("access-control-allow-origin"));
}

/// Whether the session `token` may chat from `SHOP` on `s` (200), or is refused (401).
async fn session_works(s: &TestServer, token: &str) -> bool {
    let ask = json!({"bot_id": "zephyr", "message": "How long is the warranty?"});
    let response = s
        .call_from("POST", "/v1/chat", Some(token), Some(SHOP), Some(ask))
        .await;
    match response.0 {
        200 => true,
        _ => {
            assert_error(&response, 401, "invalid_api_key");
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_session_secret_signs_new_sessions_and_the_old_one_verifies_for_the_overlap() {
    let (s, _) = fake_server(Limits::default()).await;
    let pk = zephyr_key(&s, &[SHOP]);
    let token = |v: Value| v["session_token"].as_str().unwrap().to_string();
    let first = token(session(&s, &pk, SHOP, None).await);
    assert!(session_works(&s, &first).await);
    let rotate = |key: String, body: Option<Value>| {
        let s = &s;
        async move {
            s.call("POST", "/v1/widget/session-secret/rotate", Some(&key), body)
                .await
        }
    };

    // Only a live admin key rotates it, with an overlap of at most 30 days.
    let test_admin = s.make_key(KeyKind::Secret, KeyEnv::Test, KeyScope::Admin, vec![]);
    assert_error(&rotate(test_admin, None).await, 403, "forbidden");
    let scoped = s.make_key(
        KeyKind::Secret,
        KeyEnv::Live,
        KeyScope::Bots(vec![BotId::parse("zephyr").unwrap()]),
        vec![],
    );
    assert_error(&rotate(scoped, None).await, 403, "forbidden");
    let admin = s.admin.clone();
    let too_long = json!({"overlap_seconds": 30 * 86_400 + 1});
    assert_error(
        &rotate(admin.clone(), Some(too_long)).await,
        400,
        "invalid_request",
    );
    for junk in [
        json!({"overlap": 10}),
        json!([null]),
        json!({"overlap_seconds": -1}),
    ] {
        let refused = rotate(admin.clone(), Some(junk)).await;
        assert_error(&refused, 400, "invalid_request");
    }
    assert!(
        session_works(&s, &first).await,
        "a refused rotation changed nothing"
    );

    // By default the old secret verifies for the session lifetime: nobody is cut off.
    let (status, _, rotated) = rotate(admin.clone(), None).await;
    assert_eq!(status, 200, "{rotated}");
    let at = rotated["rotated_at"].as_u64().unwrap();
    let ttl = Limits::default().widget_session_ttl.as_secs();
    assert_eq!(rotated["previous_valid_until"].as_u64(), Some(at + ttl));
    let second = token(session(&s, &pk, SHOP, None).await);
    assert!(session_works(&s, &first).await);
    assert!(session_works(&s, &second).await);

    // Overlap 0 (a leaked secret): both earlier secrets stop at once; new sessions work.
    let (status, _, rotated) = rotate(admin.clone(), Some(json!({"overlap_seconds": 0}))).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["previous_valid_until"], rotated["rotated_at"]);
    assert!(!session_works(&s, &first).await);
    assert!(!session_works(&s, &second).await);
    let third = token(session(&s, &pk, SHOP, None).await);
    assert!(session_works(&s, &third).await);

    // A node started on the same store afterwards (a restart) signs and verifies the same.
    let restarted = crate::server::restart(&s);
    assert!(session_works(&restarted, &third).await);
    assert!(!session_works(&restarted, &second).await);
    let fourth = token(session(&restarted, &pk, SHOP, None).await);
    assert!(session_works(&s, &fourth).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn visitors_and_bots_have_hourly_message_budgets() {
    let (s, _) = fake_server(Limits {
        visitor_messages_per_hour: 2,
        bot_public_messages_per_hour: 3,
        // One address may spend the whole of it here (the share has its own test).
        bot_budget_share_percent: 100,
        ..Limits::default()
    })
    .await;
    let pk = zephyr_key(&s, &[SHOP]);
    let ask = json!({"bot_id": "zephyr", "message": "How long is the warranty?"});
    let chat = |token: String| {
        let ask = ask.clone();
        let s = &s;
        async move {
            s.call_from("POST", "/v1/chat", Some(&token), Some(SHOP), Some(ask))
                .await
        }
    };
    let one = session(&s, &pk, SHOP, Some("visitor-one-key-0001")).await["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    let two = session(&s, &pk, SHOP, Some("visitor-two-key-0002")).await["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(chat(one.clone()).await.0, 200);
    assert_eq!(chat(one.clone()).await.0, 200);
    let refused = chat(one.clone()).await;
    assert_error(&refused, 429, "budget_exhausted");
    let retry: u64 = refused.1["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((60..=3600).contains(&retry), "{retry}");
    assert!(
        refused.2["error"]["message"]
            .as_str()
            .unwrap()
            .contains("visitor")
    );
    // Another visitor has their own budget, until the bot's runs out.
    assert_eq!(chat(two.clone()).await.0, 200);
    let refused = chat(two).await;
    assert_error(&refused, 429, "budget_exhausted");
    assert!(
        refused.2["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bot")
    );
    // Secret keys (the operator's backend) are not held to visitors' budgets.
    let (status, _, _) = s
        .call("POST", "/v1/chat", Some(&s.admin), Some(ask.clone()))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_visitor_ids_do_not_buy_one_address_more_than_ten_visitors_worth() {
    let (s, _) = fake_server(Limits {
        visitor_messages_per_hour: 1,
        bot_public_messages_per_hour: 0,
        ..Limits::default()
    })
    .await;
    let pk = zephyr_key(&s, &[SHOP]);
    let ask = json!({"bot_id": "zephyr", "message": "How long is the warranty?"});
    for n in 0..11 {
        // A fresh visitor id each time, all from one address.
        let token = session(&s, &pk, SHOP, None).await["session_token"]
            .as_str()
            .unwrap()
            .to_string();
        let response = s
            .call_from(
                "POST",
                "/v1/chat",
                Some(&token),
                Some(SHOP),
                Some(ask.clone()),
            )
            .await;
        if n < 10 {
            assert_eq!(response.0, 200, "{n}: {}", response.2);
        } else {
            assert_error(&response, 429, "budget_exhausted");
            assert!(
                response.2["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("address")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_script_is_cached_by_etag_and_version_and_the_demo_page_embeds_it() {
    let (s, _) = fake_server(Limits::default()).await;
    let res = s.http.get(s.url("/widget.js")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = headers["etag"].to_str().unwrap().to_string();
    let version = etag.trim_matches('"').to_string();
    assert_eq!(version.len(), 16, "{etag}");
    assert!(
        headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let script = res.text().await.unwrap();
    assert!(script.contains("attachShadow"), "the widget script");
    // Revalidation, compression, and the immutable versioned URL.
    let res = s
        .http
        .get(s.url("/widget.js"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let res = s
        .http
        .get(s.url("/widget.js"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let gzipped = res.bytes().await.unwrap().len();
    assert!(
        gzipped < 30 * 1024 && gzipped < script.len() / 2,
        "{gzipped}"
    );
    let res = s
        .http
        .get(s.url(&format!("/widget-{version}.js")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(
        s.http
            .get(s.url("/widget-0000000000000000.js"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // /demo embeds the widget for a bot and token; anything else gets the instructions.
    let pk = zephyr_key(&s, &[&s.base]);
    let page = s
        .http
        .get(s.url(&format!("/demo?bot=zephyr&token={pk}")))
        .send()
        .await
        .unwrap();
    assert!(page.headers().contains_key("content-security-policy"));
    let page = page.text().await.unwrap();
    assert!(
        page.contains(&format!(
            "<script src=\"/widget.js\" data-bot=\"zephyr\" data-token=\"{pk}\""
        )),
        "{page}"
    );
    let hostile = s
        .http
        .get(s.url("/demo?bot=%3Cscript%3E&token=%22%3E%3Cscript%3Ealert(1)%3C/script%3E"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!hostile.contains("<script"), "{hostile}");
    assert!(hostile.contains("docent keys create --public"), "{hostile}");
}

/// A page with the snippet, served from its own loopback origin.
pub(crate) struct HostPage {
    pub(crate) url: String,
    _server: crate::helpers::Running,
}

pub(crate) fn host_page(listener: std::net::TcpListener, html: String) -> HostPage {
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = crate::helpers::run_in_thread(move || {
        HttpServer::new(move || {
            let html = html.clone();
            App::new().default_service(web::to(move || {
                let html = html.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("text/html; charset=utf-8")
                        .body(html)
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run()
    });
    HostPage {
        url,
        _server: server,
    }
}

/// tests/browser, with its node modules (`make test` installs them with `npm ci`).
pub(crate) fn browser_tools() -> std::path::PathBuf {
    let dir = repo_root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "the browser tests need Node.js and `npm ci` in tests/browser (make test runs it)"
    );
    dir
}

/// Runs `script` from tests/browser in node with `config` (written into `data`) and
/// Chromium, within ten minutes; fails the test with its output unless it passes, and
/// returns what it printed.
pub(crate) async fn run_browser_test(
    dir: &std::path::Path,
    script: &str,
    config: &Value,
    data: &std::path::Path,
    chromium: String,
) -> String {
    let config_path = data.join(script.replace(".test.mjs", ".json"));
    std::fs::write(&config_path, config.to_string()).unwrap();
    let (dir, script) = (dir.to_path_buf(), script.to_string());
    let output = tokio::task::spawn_blocking(move || {
        crate::helpers::run_with_deadline(
            std::process::Command::new("node")
                .arg(&script)
                .arg(&config_path)
                .env("CHROMIUM", chromium)
                .current_dir(&dir),
            std::time::Duration::from_secs(600),
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// What a browser test runs against: Chromium's path, tests/browser, and a server on the
/// real models (private targets allowed: the fixture sites are on loopback) answering
/// token by token: with the claim check (on by default) a sentence arrives whole, and a
/// one-sentence answer in one piece.
pub(crate) async fn browser_setup() -> (String, std::path::PathBuf, crate::server::TestServer) {
    use crate::helpers::{dyn_embedder, generator};
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "the browser tests need Chromium at {chromium} (Debian: apt-get install chromium; make deps installs it)"
    );
    let dir = browser_tools();
    let options = docent::chat::AskOptions {
        min_score: 0.3,
        check_claims: false,
        ..docent::chat::AskOptions::default()
    };
    let limits = Limits {
        allow_private_targets: true,
        ..Limits::default()
    };
    let s = crate::server::start_with(dyn_embedder(), generator(), limits, options).await;
    (chromium, dir, s)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_widget_works_in_a_real_browser_against_the_real_model() {
    use crate::events::{receiver, start_delivery};
    let (chromium, dir, s) = browser_setup().await;
    start_delivery(&s);
    let hook = receiver();
    let (status, _, _) = s
        .call(
            "POST",
            "/v1/webhooks",
            Some(&s.admin),
            Some(json!({"bot_id": "zephyr", "url": hook.url, "events": ["lead.captured", "conversation.handoff"]})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _, bot) = s
        .call(
            "PATCH",
            "/v1/bots/zephyr",
            Some(&s.admin),
            Some(json!({
                "lead_capture": {"mode": "after_messages", "after_messages": 1},
                "fallback": "Email help@zephyr.example and a person will answer within a day.",
                "intents": [{"id": "returns", "label": "Returns", "message": "How many days do I have to return a kettle?"}],
            })),
        )
        .await;
    assert_eq!(status, 200, "{bot}");

    // Two host pages on their own loopback origins; the key allows only the first.
    let template = std::fs::read_to_string(dir.join("host.html")).unwrap();
    let (host_listener, other_listener) = (
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let host_origin = format!("http://{}", host_listener.local_addr().unwrap());
    let pk = zephyr_key(&s, &[&host_origin]);
    let fill = |t: &str| {
        t.replace("{{DOCENT}}", &s.base)
            .replace("{{BOT}}", "zephyr")
            .replace("{{TOKEN}}", &pk)
    };
    let host = host_page(host_listener, fill(&template));
    let other = host_page(other_listener, fill(&template));
    assert_ne!(host.url, other.url);

    // docent's own /demo page, with a key for docent's own origin (same-origin requests).
    let demo_key = zephyr_key(&s, &[&s.base]);
    let demo = format!("{}/demo?bot=zephyr&token={demo_key}", s.base);
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    // A session that expired while the visitor's tab slept: the browser is handed it in
    // place of its first one, for a visitor key the test sets.
    let sleeper = "Sleeper0Visitor0Key0000000000001";
    let live = session(&s, &pk, &host_origin, Some(sleeper)).await;
    let live = live["session_token"].as_str().unwrap();
    let (expired, expires_at) = expired_like(&s, live, &host_origin);
    let config = json!({
        "expired_session": {"visitor_key": sleeper, "token": expired, "expires_at": expires_at},
        "docent": s.base,
        "host": host.url,
        "other_host": other.url,
        "demo": demo,
        "bot": "zephyr",
        "secret_key": s.admin,
        "question": "How many days do I have to return a kettle?",
        "hostile_question": "What did the customer comment on the kettle care page say?",
        "artifacts": artifacts,
    });
    let stdout = run_browser_test(&dir, "widget.test.mjs", &config, s.data.path(), chromium).await;
    assert!(stdout.contains("metric time_to_interactive_ms"), "{stdout}");
    assert!(
        stdout.contains("ok - l. a session that expired") && !stdout.contains("# skipped"),
        "every step ran: {stdout}"
    );

    // The lead the browser submitted arrived as a signed webhook, and so did the handoff.
    let got = hook.wait_for(2, 30).await;
    let types: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_string())
        .collect();
    assert!(types.contains(&"lead.captured".to_string()), "{types:?}");
    assert!(
        types.contains(&"conversation.handoff".to_string()),
        "{types:?}"
    );
    let lead = got
        .iter()
        .map(|r| r.json())
        .find(|e| e["type"] == "lead.captured")
        .unwrap();
    assert_eq!(lead["data"]["lead"]["email"], "ada@example.com", "{lead}");
    assert!(
        lead["data"]["lead"]["user_id"]
            .as_str()
            .is_some_and(|u| u.starts_with("v_")),
        "{lead}"
    );
}

/// A session like `live` (same key, visitor and origin), signed by this server, issued a
/// lifetime and an hour ago: expired an hour ago. Returns it and its expiry.
fn expired_like(s: &TestServer, live: &str, origin: &str) -> (String, u64) {
    let fields: Vec<&str> = live.trim_start_matches("ws_").split('.').collect();
    let (key_id, visitor) = (format!("key_{}", fields[0]), fields[2]);
    let zephyr = BotId::parse("zephyr").unwrap();
    let lifetime = s.state.limits.widget_session_ttl.as_secs();
    let issued = docent::telemetry::unix_now() - lifetime - 3_600;
    let (expired, expires) = s
        .state
        .sessions
        .issue(&key_id, &zephyr, visitor, origin, issued);
    assert!(expires < docent::telemetry::unix_now(), "{expires}");
    (expired, expires)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_widget_session_is_refused_as_expired_and_a_new_one_works() {
    let (s, _) = fake_server(Limits::default()).await;
    let pk = zephyr_key(&s, &[SHOP]);
    let fresh = session(&s, &pk, SHOP, None).await;
    let token = fresh["session_token"].as_str().unwrap().to_string();
    let (expired, _) = expired_like(&s, &token, SHOP);
    let ask = json!({"bot_id": "zephyr", "message": "How long is the warranty?"});
    let chat = async |token: &str, origin: &str| {
        s.call_from(
            "POST",
            "/v1/chat",
            Some(token),
            Some(origin),
            Some(ask.clone()),
        )
        .await
    };
    // Its own page reads the refusal (CORS) and learns to fetch a new session.
    let refused = chat(&expired, SHOP).await;
    assert_error(&refused, 401, "session_expired");
    assert_eq!(refused.1["access-control-allow-origin"], SHOP);
    // From another origin it is no session at all (the signature covers the origin).
    assert_error(
        &chat(&expired, "https://evil.example").await,
        401,
        "invalid_api_key",
    );
    // A live session for the same visitor answers.
    assert_eq!(chat(&token, SHOP).await.0, 200);
}
