//! Console accounts over HTTP: login for a session cookie, what an owner's and an agent's
//! sessions may do, CSRF on every change, logout, revocation by deleting the account,
//! and login rate limits.

use serde_json::{Value, json};

use crate::server::{TestServer, fake_server};
use docent::server::Limits;

const PASSWORD: &str = "a long enough password";

/// A request as a browser on the console would make it: the session cookie, and the CSRF
/// token when given.
async fn as_session(
    s: &TestServer,
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = s
        .http
        .request(method.parse().unwrap(), s.url(path))
        .header("cookie", format!("docent_session={cookie}"));
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Logs in; returns the status, the Set-Cookie header and the body.
async fn login(s: &TestServer, email: &str, password: &str) -> (u16, String, Value) {
    let response = s
        .http
        .post(s.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, cookie, response.json().await.unwrap())
}

/// The session token in a Set-Cookie header.
fn token(set_cookie: &str) -> String {
    let value = set_cookie.split(';').next().unwrap();
    value.strip_prefix("docent_session=").unwrap().to_string()
}

async fn create_account(s: &TestServer, body: Value) -> Value {
    let (status, _, created) = s
        .call("POST", "/v1/accounts", Some(&s.admin), Some(body))
        .await;
    assert_eq!(status, 201, "{created}");
    created
}

/// An agent of the zephyr bot (ana@example.org), logged in: its session token and CSRF token.
async fn agent_session(s: &TestServer) -> (String, String) {
    create_account(
        s,
        json!({"email": "ana@example.org", "password": PASSWORD, "role": "agent", "bots": ["zephyr"]}),
    )
    .await;
    let (status, set_cookie, session) = login(s, "ana@example.org", PASSWORD).await;
    assert_eq!(status, 200, "{session}");
    let csrf = session["csrf_token"].as_str().unwrap().to_string();
    (token(&set_cookie), csrf)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_logs_in_and_every_change_needs_the_csrf_token() {
    let (s, _) = fake_server(Limits::default()).await;
    create_account(
        &s,
        json!({"email": "owner@example.org", "password": PASSWORD, "role": "owner"}),
    )
    .await;
    // A wrong password and an unknown email are the same refusal.
    let (status, cookie, wrong) = login(&s, "owner@example.org", "not the password").await;
    assert_eq!((status, cookie.as_str()), (401, ""));
    let (_, _, unknown) = login(&s, "nobody@example.org", PASSWORD).await;
    assert_eq!(wrong["error"]["code"], "invalid_credentials");
    assert_eq!(wrong["error"]["message"], unknown["error"]["message"]);
    // A name no account can have (a NUL, which PostgreSQL cannot even be asked about) too.
    let (status, _, odd) = login(&s, "own\u{0}er@example.org", PASSWORD).await;
    assert_eq!(status, 401, "{odd}");
    assert_eq!(odd["error"]["message"], unknown["error"]["message"]);
    let (status, set_cookie, session) = login(&s, " Owner@Example.org ", PASSWORD).await;
    assert_eq!(status, 200, "{session}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain http on loopback: {set_cookie}"
    );
    assert_eq!(session["account"]["role"], "owner");
    let cookie = token(&set_cookie);
    let csrf = session["csrf_token"].as_str().unwrap().to_string();
    let (status, current) = as_session(&s, "GET", "/v1/auth/session", &cookie, None, None).await;
    assert_eq!(
        (status, &current["account"]["email"]),
        (200, &json!("owner@example.org"))
    );
    // An owner reads what an admin key reads...
    let (status, keys) = as_session(&s, "GET", "/v1/keys", &cookie, None, None).await;
    assert_eq!(status, 200, "{keys}");
    // ...and changes it only with the CSRF token, as a page of this console would send it.
    let new_key = json!({"bots": ["zephyr"]});
    for bad in [None, Some("wrong"), Some("")] {
        let (status, error) =
            as_session(&s, "POST", "/v1/keys", &cookie, bad, Some(new_key.clone())).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (403, Some("csrf_failed")),
            "{bad:?}"
        );
    }
    let (status, created) =
        as_session(&s, "POST", "/v1/keys", &cookie, Some(&csrf), Some(new_key)).await;
    assert_eq!(status, 201, "{created}");
    // Only the token's hash is stored.
    let db = crate::helpers::stored_bytes(s.data.path());
    assert!(!db.windows(cookie.len()).any(|w| w == cookie.as_bytes()));
    // Logout is a change too; afterwards the cookie is nothing.
    let (status, _) = as_session(&s, "POST", "/v1/auth/logout", &cookie, None, None).await;
    assert_eq!(status, 403);
    let (status, _) = as_session(&s, "POST", "/v1/auth/logout", &cookie, Some(&csrf), None).await;
    assert_eq!(status, 200);
    let (status, error) = as_session(&s, "GET", "/v1/keys", &cookie, None, None).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (401, Some("invalid_session"))
    );
    let (status, _) = as_session(&s, "GET", "/v1/keys", "dss_forged", None, None).await;
    assert_eq!(status, 401);
    // A key caller has no session to show or end.
    assert_eq!(
        s.call("GET", "/v1/auth/session", Some(&s.admin), None)
            .await
            .0,
        400
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_sees_only_its_bots_conversations_and_nothing_of_keys_or_accounts() {
    let (s, _) = fake_server(Limits::default()).await;
    let agent = create_account(
        &s,
        json!({"email": "ana@example.org", "password": PASSWORD, "role": "agent", "bots": ["zephyr"]}),
    )
    .await;
    let (status, set_cookie, session) = login(&s, "ana@example.org", PASSWORD).await;
    assert_eq!(status, 200, "{session}");
    let (cookie, csrf) = (
        token(&set_cookie),
        session["csrf_token"].as_str().unwrap().to_string(),
    );
    let (status, bots) = as_session(&s, "GET", "/v1/bots", &cookie, None, None).await;
    assert_eq!(status, 200, "{bots}");
    let ids: Vec<&str> = bots["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["zephyr"]);
    let (status, _) = as_session(
        &s,
        "GET",
        "/v1/conversations?bot_id=zephyr",
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = as_session(&s, "GET", "/v1/leads?bot_id=zephyr", &cookie, None, None).await;
    assert_eq!(status, 200);
    // Nothing else, its own bot's settings, webhooks and data included, even with the
    // CSRF token.
    let refused = [
        ("GET", "/v1/keys", None),
        ("GET", "/v1/accounts", None),
        ("GET", "/v1/bots/zephyr", None),
        ("GET", "/v1/bots/zephyr/pages", None),
        ("GET", "/v1/webhooks?bot_id=zephyr", None),
        ("POST", "/v1/keys", Some(json!({"admin": true}))),
        (
            "POST",
            "/v1/webhooks",
            Some(json!({"bot_id": "zephyr", "url": "https://hooks.example/x"})),
        ),
        ("PATCH", "/v1/bots/zephyr", Some(json!({"name": "Mine"}))),
        ("DELETE", "/v1/users/visitor-1", None),
        ("DELETE", "/v1/conversations/conv_x", None),
        (
            "POST",
            "/v1/chat",
            Some(json!({"bot_id": "zephyr", "message": "hi"})),
        ),
    ];
    for (method, path, body) in refused {
        let (status, error) = as_session(&s, method, path, &cookie, Some(&csrf), body).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}: {error}"
        );
    }
    // An admin can log it out everywhere; then deleting the account ends what is left.
    let (_, set_cookie, _) = login(&s, "ana@example.org", PASSWORD).await;
    let second = token(&set_cookie);
    let path = format!("/v1/accounts/{}/sessions", agent["id"].as_str().unwrap());
    let (status, _, ended) = s.call("DELETE", &path, Some(&s.admin), None).await;
    assert_eq!((status, &ended["ended"]), (200, &json!(2)), "{ended}");
    for cookie in [&cookie, &second] {
        assert_eq!(
            as_session(&s, "GET", "/v1/bots", cookie, None, None)
                .await
                .0,
            401
        );
    }
    let (_, set_cookie, _) = login(&s, "ana@example.org", PASSWORD).await;
    let cookie = token(&set_cookie);
    // Deleting the account ends its sessions at once.
    let path = format!("/v1/accounts/{}", agent["id"].as_str().unwrap());
    assert_eq!(s.call("DELETE", &path, Some(&s.admin), None).await.0, 200);
    let (status, _) = as_session(&s, "GET", "/v1/bots", &cookie, None, None).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn password_guessing_is_refused_after_five_tries_an_account() {
    let (s, _) = fake_server(Limits::default()).await;
    create_account(
        &s,
        json!({"email": "owner@example.org", "password": PASSWORD, "role": "owner"}),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(login(&s, "owner@example.org", "guess guess guess").await.0);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    // Even the right password waits now: the bucket is the account's, not the guess's.
    let (status, _, refused) = login(&s, "owner@example.org", PASSWORD).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    // Another account is not held up by it.
    create_account(
        &s,
        json!({"email": "other@example.org", "password": PASSWORD, "role": "owner"}),
    )
    .await;
    assert_eq!(login(&s, "other@example.org", PASSWORD).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_ends_the_sessions_open_live_feed() {
    let (s, _) = fake_server(Limits::default()).await;
    let (cookie, csrf) = agent_session(&s).await;
    let (status, _, conversation) = s
        .call(
            "POST",
            "/v1/conversations",
            Some(&s.admin),
            Some(json!({"bot_id": "zephyr"})),
        )
        .await;
    assert_eq!(status, 201, "{conversation}");
    let id = conversation["id"].as_str().unwrap();
    let feed = s
        .http
        .get(s.url(&format!("/v1/conversations/{id}/events")))
        .header("cookie", format!("docent_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    let reader = tokio::spawn(crate::events::read_feed(feed, |events| {
        events.iter().any(|e| e["event"] == "end")
    }));
    let (status, _) = as_session(&s, "POST", "/v1/auth/logout", &cookie, Some(&csrf), None).await;
    assert_eq!(status, 200);
    let events = reader.await.unwrap();
    let end = events.iter().find(|e| e["event"] == "end");
    assert_eq!(
        end.map(|e| &e["reason"]),
        Some(&json!("session_ended")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_an_https_public_url_the_cookie_is_secure_and_host_only() {
    let (s, _) = fake_server(Limits {
        public_url: Some("https://help.example".into()),
        ..Limits::default()
    })
    .await;
    create_account(
        &s,
        json!({"email": "owner@example.org", "password": PASSWORD, "role": "owner"}),
    )
    .await;
    let (status, set_cookie, _) = login(&s, "owner@example.org", PASSWORD).await;
    assert_eq!(status, 200);
    assert!(
        set_cookie.starts_with("__Host-docent_session=dss_"),
        "{set_cookie}"
    );
    assert!(
        set_cookie.contains("; Secure") && !set_cookie.contains("Domain"),
        "{set_cookie}"
    );
    let value = set_cookie.split(';').next().unwrap();
    // A planted cookie of the plain name does not shadow the host-only one.
    let response = s
        .http
        .get(s.url("/v1/auth/session"))
        .header("cookie", format!("docent_session=dss_planted; {value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// What the inbox does over HTTP: an agent gives a handed-off conversation back to the bot
/// or closes it (with the CSRF token; 409 when no person has it; public keys refused),
/// the bot answers again, and the conversation list filters by state and refuses bad
/// filters with their codes.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_hands_back_and_closes_conversations_and_lists_filter_by_state() {
    let (s, _) = fake_server(Limits::default()).await;
    let (cookie, csrf) = agent_session(&s).await;
    let ask = json!({"bot_id": "zephyr", "message": "How long is the warranty?"});
    let (status, _, reply) = s
        .call("POST", "/v1/chat", Some(&s.admin), Some(ask.clone()))
        .await;
    assert_eq!(status, 200, "{reply}");
    let id = reply["conversation_id"].as_str().unwrap().to_string();
    let act = |what: &'static str, csrf: Option<String>| {
        let (s, cookie, id) = (&s, cookie.clone(), id.clone());
        async move {
            let path = format!("/v1/conversations/{id}/{what}");
            as_session(s, "POST", &path, &cookie, csrf.as_deref(), None).await
        }
    };
    let (status, error) = act("resume", Some(csrf.clone())).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (409, Some("not_handed_off"))
    );
    let hand_off = || async {
        let path = format!("/v1/conversations/{id}/handoff");
        let (status, _, body) = s.call("POST", &path, Some(&s.admin), None).await;
        assert_eq!((status, body["state"].as_str()), (200, Some("handed_off")));
    };
    let listed = |filter: &'static str| {
        let s = &s;
        async move {
            let path = format!("/v1/conversations?bot_id=zephyr&{filter}");
            let (status, _, list) = s.call("GET", &path, Some(&s.admin), None).await;
            assert_eq!(status, 200, "{list}");
            list["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };

    hand_off().await;
    assert_eq!(listed("state=handed_off").await, [id.as_str()]);
    let (status, error) = act("resume", None).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (403, Some("csrf_failed"))
    );
    let (status, resumed) = act("resume", Some(csrf.clone())).await;
    assert_eq!(
        (status, resumed["state"].as_str()),
        (200, Some("open")),
        "{resumed}"
    );
    assert!(listed("state=handed_off").await.is_empty());
    let follow_up =
        json!({"bot_id": "zephyr", "conversation_id": id, "message": "And for the lid?"});
    let (_, _, reply) = s
        .call("POST", "/v1/chat", Some(&s.admin), Some(follow_up.clone()))
        .await;
    assert_ne!(
        reply["finish_reason"], "handed_off",
        "the bot answers again: {reply}"
    );

    hand_off().await;
    let public = s.make_key(
        docent::keys::KeyKind::Public,
        docent::keys::KeyEnv::Live,
        docent::keys::KeyScope::Bots(vec![docent::domain::BotId::parse("zephyr").unwrap()]),
        vec!["https://shop.example".into()],
    );
    let path = format!("/v1/conversations/{id}/close");
    let (status, _, _) = s
        .call_from(
            "POST",
            &path,
            Some(&public),
            Some("https://shop.example"),
            None,
        )
        .await;
    assert_eq!(status, 403, "public keys cannot close conversations");
    let (status, closed) = act("close", Some(csrf.clone())).await;
    assert_eq!(
        (status, closed["state"].as_str()),
        (200, Some("closed")),
        "{closed}"
    );
    assert_eq!(listed("state=closed").await, [id.as_str()]);
    let (_, _, reply) = s
        .call("POST", "/v1/chat", Some(&s.admin), Some(follow_up))
        .await;
    assert_ne!(reply["finish_reason"], "handed_off", "{reply}");
    assert_eq!(
        listed("state=closed").await,
        [id.as_str()],
        "a turn keeps it closed"
    );
    assert_eq!(listed("q=LID").await, [id.as_str()]);
    assert!(listed("q=kettle%20descaling%20vinegar").await.is_empty());

    for bad in [
        "state=gone",
        "rating=meh",
        "from=2026-13-01",
        "to=yesterday",
    ] {
        let path = format!("/v1/conversations?{bad}");
        let response = s.call("GET", &path, Some(&s.admin), None).await;
        crate::server::assert_error(&response, 400, "invalid_request");
    }
    let long = "x".repeat(201);
    let response = s
        .call(
            "GET",
            &format!("/v1/conversations?q={long}"),
            Some(&s.admin),
            None,
        )
        .await;
    crate::server::assert_error(&response, 400, "invalid_request");
}

/// Every route of /openapi.json that takes a key, called from an agent's session with its
/// CSRF token: the agent's own routes are the list below, and every other one is 403
/// `forbidden` before it does anything, routes added later included.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_session_is_refused_on_every_route_but_its_own() {
    const AGENT_MAY: &[(&str, &str)] = &[
        ("get", "/v1/bots"),
        ("get", "/v1/conversations"),
        ("get", "/v1/conversations/{id}"),
        ("get", "/v1/conversations/{id}/events"),
        ("post", "/v1/conversations/{id}/messages"),
        ("post", "/v1/conversations/{id}/resume"),
        ("post", "/v1/conversations/{id}/close"),
        ("get", "/v1/leads"),
        ("get", "/v1/auth/session"),
        ("post", "/v1/auth/logout"),
    ];
    let (s, _) = fake_server(Limits::default()).await;
    let (cookie, csrf) = agent_session(&s).await;
    let (_, _, spec) = s.call("GET", "/openapi.json", None, None).await;
    let mut refused = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let keyed = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            // /metrics answers loopback clients without a key by design (README).
            if !keyed || path == "/metrics" || AGENT_MAY.contains(&(method.as_str(), path.as_str()))
            {
                continue;
            }
            let concrete = path
                .replace("{id}", "zephyr")
                .replace("{answer_id}", "ans_x")
                .replace("{user_id}", "u1");
            let (status, body) = as_session(
                &s,
                &method.to_uppercase(),
                &concrete,
                &cookie,
                Some(&csrf),
                Some(json!({})),
            )
            .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (403, Some("forbidden")),
                "{method} {path} as an agent: {body}"
            );
            refused += 1;
        }
    }
    assert!(refused >= 30, "only {refused} routes were tried");
    // And the session still works for what is the agent's.
    let (status, _) = as_session(&s, "GET", "/v1/bots", &cookie, None, None).await;
    assert_eq!(status, 200);
}

/// The console in Debian's Chromium against the real small model: the first owner made
/// from the admin key, a bot created and crawled from the forms, a webhook made in the
/// console, a visitor's thumbs down and handoff in the widget, an agent answering from the
/// inbox live, role and CSRF refusals, axe-core on every page, screenshots
/// (tests/browser/console.test.mjs).
#[tokio::test(flavor = "multi_thread")]
async fn the_console_works_in_a_real_browser_against_the_real_model() {
    use crate::events::{receiver, start_delivery};
    use crate::helpers::{fixture, serve};
    use crate::widget::{browser_setup, host_page, run_browser_test, zephyr_key};
    let (chromium, dir, s) = browser_setup().await;
    start_delivery(&s);
    let hook = receiver();
    let site = serve(&fixture("site"));
    // The agent's account is made over the API; the owner's in the browser.
    let (status, _, agent) = s
        .call(
            "POST",
            "/v1/accounts",
            Some(&s.admin),
            Some(json!({"email": "robin@example.com", "password": PASSWORD, "role": "agent", "bots": ["zephyr"]})),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let template = std::fs::read_to_string(dir.join("host.html")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_origin = format!("http://{}", listener.local_addr().unwrap());
    let pk = zephyr_key(&s, &[&host_origin]);
    let html = template
        .replace("{{DOCENT}}", &s.base)
        .replace("{{BOT}}", "zephyr")
        .replace("{{TOKEN}}", &pk);
    let host = host_page(listener, html);
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let config = json!({
        "docent": s.base,
        "admin_key": s.admin,
        "owner_email": "owner@example.com",
        "owner_password": PASSWORD,
        "agent_email": "robin@example.com",
        "agent_password": PASSWORD,
        "host": host.url,
        "site_url": site.url("/"),
        "receiver_url": hook.url,
        "question": "How many days do I have to return a kettle?",
        "gap_question": "Do you offer gift wrapping?",
        "gap_answer": "Yes. Zephyr Kettles gift-wraps any order for free: choose Gift wrap at checkout and add a message for the card.",
        "gap_pattern": "gift",
        "artifacts": artifacts,
    });
    let stdout = run_browser_test(&dir, "console.test.mjs", &config, s.data.path(), chromium).await;
    for metric in ["console_time_to_interactive_ms", "console_gzip_bytes"] {
        assert!(stdout.contains(&format!("metric {metric} ")), "{stdout}");
    }
    // The webhook the owner made in the console got the visitor's feedback and handoff.
    let got = hook.wait_for(2, 30).await;
    let types: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_string())
        .collect();
    for kind in ["message.feedback", "conversation.handoff"] {
        assert!(types.iter().any(|t| t == kind), "{kind} in {types:?}");
    }
}

/// A deleted bot leaves no grant behind: a key or an agent that had it has not got a new
/// bot made later under the same id, and keeps its other bots.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_bot_takes_it_out_of_every_key_and_agent() {
    const EXTRA_CONVERSATIONS: &str = "/v1/conversations?bot_id=extra";
    const ZEPHYR_CONVERSATIONS: &str = "/v1/conversations?bot_id=zephyr";
    let (s, _) = fake_server(Limits::default()).await;
    let make_bot = || async {
        let body = json!({"id": "extra", "name": "Extra"});
        let (status, _, bot) = s.call("POST", "/v1/bots", Some(&s.admin), Some(body)).await;
        assert_eq!(status, 201, "{bot}");
    };
    make_bot().await;
    let body = json!({"bots": ["zephyr", "extra"]});
    let (status, _, key) = s.call("POST", "/v1/keys", Some(&s.admin), Some(body)).await;
    assert_eq!(status, 201, "{key}");
    let (key_id, secret) = (key["id"].clone(), key["key"].as_str().unwrap().to_string());
    let agent = create_account(
        &s,
        json!({"email": "ana@example.org", "password": PASSWORD, "role": "agent", "bots": ["zephyr", "extra"]}),
    )
    .await;
    let (_, set_cookie, _) = login(&s, "ana@example.org", PASSWORD).await;
    let cookie = token(&set_cookie);
    let (status, _) = as_session(&s, "GET", EXTRA_CONVERSATIONS, &cookie, None, None).await;
    assert_eq!(status, 200, "the agent has the bot before");

    let (status, _, deleted) = s
        .call("DELETE", "/v1/bots/extra", Some(&s.admin), None)
        .await;
    assert_eq!(status, 200, "{deleted}");
    let (_, _, keys) = s.call("GET", "/v1/keys", Some(&s.admin), None).await;
    let listed = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id);
    assert_eq!(listed.unwrap()["bots"], json!(["zephyr"]), "{keys}");
    let (_, _, accounts) = s.call("GET", "/v1/accounts", Some(&s.admin), None).await;
    let listed = accounts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == agent["id"]);
    assert_eq!(listed.unwrap()["bots"], json!(["zephyr"]), "{accounts}");

    // The same id again: a new bot, granted to no one.
    make_bot().await;
    for status in [
        s.call("GET", "/v1/bots/extra", Some(&secret), None).await.0,
        as_session(&s, "GET", EXTRA_CONVERSATIONS, &cookie, None, None)
            .await
            .0,
    ] {
        assert_eq!(status, 404, "the old grant does not reach the new bot");
    }
    assert_eq!(
        s.call("GET", "/v1/bots/zephyr", Some(&secret), None)
            .await
            .0,
        200
    );
    let (status, _) = as_session(&s, "GET", ZEPHYR_CONVERSATIONS, &cookie, None, None).await;
    assert_eq!(status, 200, "the agent keeps its other bot");
}
