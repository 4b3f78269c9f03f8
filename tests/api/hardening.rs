//! What an outside security review found, each over real HTTP on loopback: test and live
//! keys as separate worlds (every admin route), bounded key rotation, the crawler's one
//! guarded way out (nested sitemaps, other ports of an exempt name, proxies, body caps,
//! credentials in URLs), budgets and feeds that public callers cannot exhaust or keep
//! forever, erasure that a turn in flight cannot undo, private files, and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use docent::domain::BotId;
use docent::keys::{KeyEnv, KeyKind, KeyScope};
use docent::server::Limits;
use serde_json::{Value, json};

use crate::helpers::{copy_fixture, run_in_thread, serve};
use crate::server::{TestServer, assert_error, fake_server, wait_for_job};

const SHOP: &str = "https://shop.example";

fn zephyr_public_key(s: &TestServer) -> String {
    s.make_key(
        KeyKind::Public,
        KeyEnv::Live,
        KeyScope::Bots(vec![BotId::parse("zephyr").unwrap()]),
        vec![SHOP.into()],
    )
}

/// A widget session token for a visitor key (any 16+ characters).
async fn session_token(s: &TestServer, pk: &str, visitor: &str) -> String {
    let body = json!({"token": pk, "bot_id": "zephyr", "visitor_key": visitor});
    let (status, _, session) = s
        .call_from("POST", "/v1/widget/session", None, Some(SHOP), Some(body))
        .await;
    assert_eq!(status, 200, "{session}");
    session["session_token"].as_str().unwrap().to_string()
}

/// A loopback server that counts the requests it gets and answers each with a small page.
struct Counter {
    base: String,
    hits: Arc<AtomicUsize>,
    _server: crate::helpers::Running,
}

fn counter() -> Counter {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let server = run_in_thread(move || {
        HttpServer::new(move || {
            let counted = counted.clone();
            App::new().default_service(web::to(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    HttpResponse::Ok().content_type("text/html").body(
                        "<html><head><title>Proxied</title></head><body><main><p>The Zephyr \
                         Bolt kettle boils a litre in ninety seconds flat.</p></main></body></html>",
                    )
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run()
    });
    Counter {
        base,
        hits,
        _server: server,
    }
}

/// Waits (at most 30 s) until the generator has started more generations than `before`.
async fn generation_started(generator: &crate::server::SlowGenerator, before: usize) {
    crate::helpers::eventually_async("generation started", Duration::from_secs(30), async || {
        (generator.calls() != before).then_some(())
    })
    .await;
}

/// Asks `n` times with the public key, each answered, then once more: 429.
async fn spend_budget(s: &TestServer, pk: &str, ask: &Value, n: usize) {
    for i in 0..n {
        let answered = s
            .call_from("POST", "/v1/chat", Some(pk), Some(SHOP), Some(ask.clone()))
            .await;
        assert_eq!(answered.0, 200, "{i}: {}", answered.2);
    }
    assert_error(
        &s.call_from("POST", "/v1/chat", Some(pk), Some(SHOP), Some(ask.clone()))
            .await,
        429,
        "budget_exhausted",
    );
}

// ---- 1, 2: keys ----

#[tokio::test(flavor = "multi_thread")]
async fn test_keys_never_see_or_change_live_keys_and_rotation_overlap_is_bounded() {
    let (s, _) = fake_server(Limits::default()).await;
    let admin = s.admin.clone();
    let (status, _, created) = s
        .call(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(json!({"admin": true, "test": true, "name": "sandbox admin"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let test_admin = created["key"].as_str().unwrap().to_string();
    assert!(test_admin.starts_with("sk_test_"));
    let (_, _, live_keys) = s.call("GET", "/v1/keys", Some(&admin), None).await;
    let live_admin_id = live_keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["env"] == "live")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The reported attack: a test key rotating the live admin key away.
    assert_error(
        &s.call(
            "POST",
            &format!("/v1/keys/{live_admin_id}/rotate"),
            Some(&test_admin),
            Some(json!({"overlap_seconds": 0})),
        )
        .await,
        404,
        "key_not_found",
    );
    assert_error(
        &s.call(
            "DELETE",
            &format!("/v1/keys/{live_admin_id}"),
            Some(&test_admin),
            None,
        )
        .await,
        404,
        "key_not_found",
    );
    assert_eq!(s.call("GET", "/v1/bots", Some(&admin), None).await.0, 200);
    // Each world lists only its own keys.
    let (_, _, seen) = s.call("GET", "/v1/keys", Some(&test_admin), None).await;
    let envs: Vec<&str> = seen["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["env"].as_str().unwrap())
        .collect();
    assert_eq!(envs, ["test"], "{seen}");
    let (_, _, seen) = s.call("GET", "/v1/keys", Some(&admin), None).await;
    assert!(
        seen["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["env"] == "live"),
        "{seen}"
    );
    assert_error(
        &s.call(
            "DELETE",
            &format!("/v1/keys/{}", created["id"].as_str().unwrap()),
            Some(&admin),
            None,
        )
        .await,
        404,
        "key_not_found",
    );
    // A test key mints test keys only, whatever it asks for.
    let (status, _, minted) = s
        .call(
            "POST",
            "/v1/keys",
            Some(&test_admin),
            Some(json!({"admin": true, "test": false})),
        )
        .await;
    assert_eq!(status, 201);
    assert!(
        minted["key"].as_str().unwrap().starts_with("sk_test_"),
        "{minted}"
    );

    // 2: the overlap is at most 30 days; a huge one is refused, not wrapped around.
    for overlap in [json!(30 * 86_400 + 1), json!(u64::MAX)] {
        assert_error(
            &s.call(
                "POST",
                &format!("/v1/keys/{live_admin_id}/rotate"),
                Some(&admin),
                Some(json!({"overlap_seconds": overlap})),
            )
            .await,
            400,
            "invalid_request",
        );
    }
    assert_eq!(s.call("GET", "/v1/bots", Some(&admin), None).await.0, 200);
    let (status, _, rotated) = s
        .call(
            "POST",
            &format!("/v1/keys/{live_admin_id}/rotate"),
            Some(&admin),
            Some(json!({"overlap_seconds": 30 * 86_400})),
        )
        .await;
    assert_eq!(status, 201, "{rotated}");
    let expires = rotated["replaces"]["expires"].as_u64().unwrap();
    let now = docent::telemetry::unix_now();
    assert!((now + 30 * 86_400 - 5..=now + 30 * 86_400 + 5).contains(&expires));
    // Rotating the expiring key again cannot push its end back out: a shorter overlap
    // brings it forward, a longer one leaves it.
    for (overlap, end) in [(3_600, now + 3_600), (30 * 86_400, now + 3_600)] {
        let (status, _, again) = s
            .call(
                "POST",
                &format!("/v1/keys/{live_admin_id}/rotate"),
                Some(&admin),
                Some(json!({"overlap_seconds": overlap})),
            )
            .await;
        assert_eq!(status, 201, "{again}");
        let expires = again["replaces"]["expires"].as_u64().unwrap();
        assert!((end - 5..=end + 5).contains(&expires), "{again}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_live_admin_keys_exempt_origins_from_the_ssrf_guard() {
    let (s, _) = fake_server(Limits::default()).await;
    let test_admin = s.make_key(KeyKind::Secret, KeyEnv::Test, KeyScope::Admin, vec![]);
    let metadata = json!({"allowed_targets": ["http://169.254.169.254"]});
    let refused = s
        .call(
            "PATCH",
            "/v1/bots/sandbox",
            Some(&test_admin),
            Some(metadata.clone()),
        )
        .await;
    assert_error(&refused, 403, "forbidden");
    let mut new_bot = metadata.clone();
    new_bot["name"] = json!("Probe");
    let refused = s
        .call("POST", "/v1/bots", Some(&test_admin), Some(new_bot))
        .await;
    assert_error(&refused, 403, "forbidden");
    let (_, _, bot) = s
        .call("GET", "/v1/bots/sandbox", Some(&test_admin), None)
        .await;
    assert_eq!(bot["allowed_targets"], json!([]), "{bot}");
    // Clearing the list, and every other setting, stay the test key's to change.
    let (status, _, bot) = s
        .call(
            "PATCH",
            "/v1/bots/sandbox",
            Some(&test_admin),
            Some(json!({"allowed_targets": [], "name": "Sandbox two"})),
        )
        .await;
    assert_eq!(status, 200, "{bot}");
    assert_eq!(bot["name"], "Sandbox two");
    // The live admin key may exempt an origin.
    let (status, _, bot) = s
        .call("PATCH", "/v1/bots/zephyr", Some(&s.admin), Some(metadata))
        .await;
    assert_eq!(status, 200, "{bot}");
    // A test bot that holds an exemption from before is crawled as if it held none.
    let sandbox = BotId::parse("sandbox").unwrap();
    let site = serve(&crate::helpers::fixture("site"));
    s.state
        .store
        .update_bot(&sandbox, &mut |bot| {
            bot.settings.allowed_targets = vec![site.base.clone()];
        })
        .unwrap();
    let refused = s
        .call(
            "POST",
            "/v1/bots/sandbox/sources",
            Some(&test_admin),
            Some(json!({"url": site.url("/index.html")})),
        )
        .await;
    assert_error(&refused, 400, "target_not_allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_admin_key_finds_nothing_of_the_live_world_on_any_route() {
    let (s, _) = fake_server(Limits::default()).await;
    let admin = s.admin.clone();
    let test_admin = s.make_key(KeyKind::Secret, KeyEnv::Test, KeyScope::Admin, vec![]);
    // Live things: a webhook (pending deliveries, as no worker runs), a conversation with
    // its events and a lead, and a crawl job.
    let (status, _, webhook) = s
        .call(
            "POST",
            "/v1/webhooks",
            Some(&admin),
            Some(
                json!({"bot_id": "zephyr", "url": "https://hooks.example/docent", "events": ["*"]}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let webhook = webhook["id"].as_str().unwrap().to_string();
    let (status, _, answer) = s
        .call(
            "POST",
            "/v1/chat",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "user_id": "u-live", "message": "How long is the warranty? ann@example.com"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let conversation = answer["conversation_id"].as_str().unwrap().to_string();
    let (status, _, lead) = s
        .call(
            "POST",
            "/v1/leads",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "conversation_id": conversation, "email": "ann@example.com", "consent": true})),
        )
        .await;
    assert_eq!(status, 201, "{lead}");
    let (_, _, deliveries) = s
        .call(
            "GET",
            &format!("/v1/webhooks/{webhook}/deliveries"),
            Some(&admin),
            None,
        )
        .await;
    let event = deliveries["data"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, job) = s
        .call(
            "POST",
            "/v1/bots/zephyr/sources",
            Some(&admin),
            Some(json!({"url": "https://docs.example/"})),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job = job["job_id"].as_str().unwrap().to_string();

    // Each answers as if it did not exist: the same 404 as for an id nobody has.
    let routes: Vec<(&str, String, Option<Value>, &str)> = vec![
        ("GET", "/v1/bots/zephyr".into(), None, "bot_not_found"),
        (
            "PATCH",
            "/v1/bots/zephyr".into(),
            Some(json!({"name": "Mine"})),
            "bot_not_found",
        ),
        ("DELETE", "/v1/bots/zephyr".into(), None, "bot_not_found"),
        ("GET", "/v1/bots/zephyr/pages".into(), None, "bot_not_found"),
        (
            "GET",
            "/v1/bots/zephyr/analytics".into(),
            None,
            "bot_not_found",
        ),
        (
            "POST",
            "/v1/bots/zephyr/sources".into(),
            Some(json!({"url": "https://docs.example/"})),
            "bot_not_found",
        ),
        ("GET", format!("/v1/jobs/{job}"), None, "job_not_found"),
        (
            "GET",
            "/v1/leads?bot_id=zephyr".into(),
            None,
            "bot_not_found",
        ),
        (
            "POST",
            "/v1/leads".into(),
            Some(json!({"bot_id": "zephyr", "email": "x@example.com", "consent": true})),
            "bot_not_found",
        ),
        (
            "GET",
            format!("/v1/webhooks/{webhook}"),
            None,
            "webhook_not_found",
        ),
        (
            "DELETE",
            format!("/v1/webhooks/{webhook}"),
            None,
            "webhook_not_found",
        ),
        (
            "POST",
            format!("/v1/webhooks/{webhook}/rotate"),
            None,
            "webhook_not_found",
        ),
        (
            "GET",
            format!("/v1/webhooks/{webhook}/deliveries"),
            None,
            "webhook_not_found",
        ),
        (
            "GET",
            "/v1/webhooks?bot_id=zephyr".into(),
            None,
            "bot_not_found",
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            Some(json!({"bot_id": "zephyr", "url": "https://hooks.example/x", "events": ["*"]})),
            "bot_not_found",
        ),
        (
            "POST",
            format!("/v1/events/{event}/redeliver"),
            None,
            "event_not_found",
        ),
        (
            "GET",
            format!("/v1/conversations/{conversation}"),
            None,
            "conversation_not_found",
        ),
        (
            "DELETE",
            format!("/v1/conversations/{conversation}"),
            None,
            "conversation_not_found",
        ),
        (
            "POST",
            format!("/v1/conversations/{conversation}/handoff"),
            None,
            "conversation_not_found",
        ),
        (
            "POST",
            format!("/v1/conversations/{conversation}/messages"),
            Some(json!({"role": "agent", "content": "hi"})),
            "conversation_not_found",
        ),
        (
            "GET",
            "/v1/conversations?bot_id=zephyr".into(),
            None,
            "bot_not_found",
        ),
        (
            "POST",
            "/v1/conversations".into(),
            Some(json!({"bot_id": "zephyr"})),
            "bot_not_found",
        ),
        (
            "POST",
            "/v1/chat".into(),
            Some(json!({"bot_id": "zephyr", "message": "hi"})),
            "bot_not_found",
        ),
        (
            "POST",
            "/v1/chat/completions".into(),
            Some(json!({"model": "zephyr", "messages": [{"role": "user", "content": "hi"}]})),
            "bot_not_found",
        ),
        (
            "GET",
            format!("/v1/conversations/{conversation}/events"),
            None,
            "conversation_not_found",
        ),
    ];
    for (method, path, body, code) in routes {
        let response = s.call(method, &path, Some(&test_admin), body).await;
        assert_eq!(response.0, 404, "{method} {path}: {}", response.2);
        assert_error(&response, 404, code);
    }
    // Lists leave the live world out; erasure erases nothing of it.
    let (_, _, hooks) = s.call("GET", "/v1/webhooks", Some(&test_admin), None).await;
    assert_eq!(hooks["data"], json!([]), "{hooks}");
    let (_, _, listed) = s
        .call("GET", "/v1/conversations", Some(&test_admin), None)
        .await;
    assert_eq!(listed["data"], json!([]), "{listed}");
    let (_, _, bots) = s.call("GET", "/v1/bots", Some(&test_admin), None).await;
    assert_eq!(bots["data"].as_array().unwrap().len(), 1, "{bots}");
    assert_eq!(bots["data"][0]["id"], "sandbox");
    let (_, _, models) = s.call("GET", "/v1/models", Some(&test_admin), None).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sandbox"], "{models}");
    // A test public key cannot open a widget session on a live bot.
    let test_pk = s.make_key(
        KeyKind::Public,
        KeyEnv::Test,
        KeyScope::Bots(vec![BotId::parse("zephyr").unwrap()]),
        vec![SHOP.into()],
    );
    assert_error(
        &s.call_from(
            "POST",
            "/v1/widget/session",
            None,
            Some(SHOP),
            Some(json!({"token": test_pk, "bot_id": "zephyr"})),
        )
        .await,
        404,
        "bot_not_found",
    );
    let (status, _, erased) = s
        .call("DELETE", "/v1/users/u-live", Some(&test_admin), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(erased["deleted_conversations"], 0, "{erased}");
    assert_eq!(erased["deleted_leads"], 0, "{erased}");
    // And the live world is intact.
    for path in [
        format!("/v1/conversations/{conversation}"),
        format!("/v1/webhooks/{webhook}"),
        format!("/v1/jobs/{job}"),
        "/v1/bots/zephyr".to_string(),
    ] {
        assert_eq!(
            s.call("GET", &path, Some(&admin), None).await.0,
            200,
            "{path}"
        );
    }
    let (_, _, leads) = s
        .call("GET", "/v1/leads?bot_id=zephyr", Some(&admin), None)
        .await;
    assert_eq!(leads["data"].as_array().unwrap().len(), 1, "{leads}");
}

// ---- 14: bot ids and /metrics ----

#[tokio::test(flavor = "multi_thread")]
async fn a_bot_the_caller_may_not_see_answers_like_one_that_does_not_exist() {
    let (s, _) = fake_server(Limits::default()).await;
    let scoped = s.make_key(
        KeyKind::Secret,
        KeyEnv::Live,
        KeyScope::Bots(vec![BotId::parse("zephyr").unwrap()]),
        vec![],
    );
    let mut answers = Vec::new();
    for (key, bot) in [
        (&scoped, "sandbox"),  // exists, not in scope (and a test bot)
        (&scoped, "nope"),     // does not exist
        (&s.admin, "sandbox"), // exists, other environment
        (&s.admin, "nope"),    // does not exist
    ] {
        let response = s
            .call("GET", &format!("/v1/bots/{bot}"), Some(key), None)
            .await;
        assert_error(&response, 404, "bot_not_found");
        let message = response.2["error"]["message"].as_str().unwrap().to_string();
        answers.push(message.replace(bot, "BOT"));
    }
    answers.dedup();
    assert_eq!(answers.len(), 1, "{answers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_for_loopback_scrapes_the_token_or_the_metrics_listener() {
    let token = "metrics-token-0123456789";
    let (s, _) = fake_server(Limits {
        metrics_token: Some(docent::config::Secret(token.into())),
        ..Limits::default()
    })
    .await;
    let get = |forwarded: Option<&str>, bearer: Option<&str>| {
        let mut request = s.http.get(s.url("/metrics"));
        if let Some(from) = forwarded {
            request = request.header("X-Forwarded-For", from);
        }
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // A scrape on this host.
    assert_eq!(get(None, None).await, 200);
    // Through a proxy (from anywhere): the token, or nothing.
    assert_eq!(get(Some("203.0.113.7"), None).await, 403);
    assert_eq!(get(Some("203.0.113.7"), Some("wrong-token")).await, 403);
    assert_eq!(get(Some("203.0.113.7"), Some(token)).await, 200);
    assert_eq!(get(Some("203.0.113.7"), Some(&s.admin)).await, 403);

    // The metrics listener: the token when one is set.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let state = s.state.clone();
    let _metrics = run_in_thread(move || docent::server::metrics_server(state, listener).unwrap());
    let status = |bearer: Option<&'static str>| {
        let mut request = s
            .http
            .get(&metrics_url)
            .header("X-Forwarded-For", "203.0.113.7");
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        async move { request.send().await.unwrap() }
    };
    assert_eq!(status(None).await.status(), 401);
    let scraped = status(Some(token)).await;
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped
            .text()
            .await
            .unwrap()
            .contains("docent_requests_total")
    );
    let other = s
        .http
        .get(metrics_url.replace("/metrics", "/v1/bots"))
        .send()
        .await
        .unwrap();
    // A reverse proxy on this host that forwards nothing about its clients: once the
    // operator names it a trusted proxy, its requests are not local scrapes.
    let (behind, _) = fake_server(Limits {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..Limits::default()
    })
    .await;
    let proxied = behind
        .http
        .get(behind.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 403);

    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves metrics only"
    );
}

// ---- 3, 6: the crawler's guarded way out ----

/// A name for this machine that resolves to loopback addresses only: its host name when
/// it does (Debian maps it to 127.0.1.1; this kind of machine to 127.0.0.1), else
/// `localhost`. Unlike `localhost`, the guard knows nothing of it: only the resolver can
/// tell that it is private.
fn loopback_name() -> String {
    use std::net::ToSocketAddrs;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim().to_string();
    let loopback = (host.as_str(), 80)
        .to_socket_addrs()
        .map(|mut addrs| addrs.all(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    if loopback && !host.is_empty() {
        host
    } else {
        eprintln!("the host name does not resolve to loopback; testing with localhost only");
        "localhost".to_string()
    }
}

/// A copy of the fixture site on loopback, whose robots.txt names a sitemap index that
/// lists `nested` sitemaps.
fn site_with_sitemaps(
    name: &str,
    nested: &[String],
) -> (tempfile::TempDir, crate::helpers::TestSite) {
    let root = copy_fixture("site");
    let site = serve(root.path());
    let port = site.base.rsplit(':').next().unwrap().to_string();
    let own = format!("http://{name}:{port}");
    std::fs::write(
        root.path().join("robots.txt"),
        format!("User-agent: *\nAllow: /\nSitemap: {own}/sitemap-index.xml\n"),
    )
    .unwrap();
    let entries: String = nested
        .iter()
        .map(|url| format!("<sitemap><loc>{url}</loc></sitemap>"))
        .collect();
    std::fs::write(
        root.path().join("sitemap-index.xml"),
        format!("<?xml version=\"1.0\"?><sitemapindex>{entries}</sitemapindex>"),
    )
    .unwrap();
    (root, site)
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_sitemaps_and_other_ports_of_an_exempt_name_go_through_the_guard() {
    let (s, _) = fake_server(Limits::default()).await;
    let elsewhere = counter();
    let other_port = elsewhere.base.rsplit(':').next().unwrap().to_string();
    let name = loopback_name();
    let (_root, site) = site_with_sitemaps(
        &name,
        &[
            format!("{}/inner-sitemap.xml", elsewhere.base),
            format!("http://{name}:{other_port}/inner-sitemap.xml"),
            format!("http://localhost:{other_port}/inner-sitemap.xml"),
            "http://169.254.169.254/latest/sitemap.xml".into(),
            "http://[::ffff:169.254.169.254]/sitemap.xml".into(),
        ],
    );
    let port = site.base.rsplit(':').next().unwrap();
    let exempt = format!("http://{name}:{port}");
    let (status, _, _) = s
        .call(
            "PATCH",
            "/v1/bots/zephyr",
            Some(&s.admin),
            Some(json!({"allowed_targets": [exempt]})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, accepted) = s
        .call(
            "POST",
            "/v1/bots/zephyr/sources",
            Some(&s.admin),
            Some(json!({"url": format!("{exempt}/index.html")})),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job = wait_for_job(&s, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    assert!(site.hits("/sitemap-index.xml") >= 1, "the index was read");
    // The exempt origin is the name on that port only: the same name on another port, and
    // a loopback or metadata address listed in the index, are never fetched.
    assert_eq!(elsewhere.hits.load(Ordering::SeqCst), 0);
    // Each literal address (127.0.0.1, localhost, both spellings of the metadata service) is
    // refused before connecting, not tried and timed out; the name on the other port is
    // refused by the resolver where it is not `localhost` itself (and then the same URL).
    assert_eq!(job["urls_refused"], 4, "{job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fetches_refuse_metadata_and_private_addresses_before_connecting() {
    use docent::ingest::crawl::CrawlOptions;
    use docent::ingest::fetch::{FetchError, Fetcher};
    use docent::ingest::ssrf::TargetGuard;
    let config = CrawlOptions {
        timeout: Duration::from_secs(5),
        guard: Some(Arc::new(TargetGuard::default())),
        env_proxy: false,
        ..CrawlOptions::default()
    };
    let start = url::Url::parse("https://docs.example/").unwrap();
    let (fetcher, _) = Fetcher::new(&config, &start).unwrap();
    for url in [
        "http://169.254.169.254/latest/sitemap.xml",
        "http://127.0.0.1:9/sitemap.xml",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::]/",
        "file:///etc/passwd",
    ] {
        let result = fetcher
            .get(&url::Url::parse(url).unwrap(), &Default::default())
            .await;
        // Refused is the guard's answer before connecting (a try would time out or fail
        // to connect instead).
        assert!(matches!(result, Err(FetchError::Refused(_))), "{url}");
    }
    assert_eq!(fetcher.refused(), 5);
}

// ---- 4: no proxy for API crawls unless configured ----

#[tokio::test(flavor = "multi_thread")]
async fn api_crawls_ignore_proxy_variables_and_use_the_configured_crawl_proxy() {
    // A proxy named by the operator carries the crawl: the name only it can resolve works.
    let configured = counter();
    let (s, _) = fake_server(Limits {
        crawl_proxy: Some(docent::config::Secret(configured.base.clone())),
        ..Limits::default()
    })
    .await;
    let (status, _, accepted) = s
        .call(
            "POST",
            "/v1/bots/zephyr/sources",
            Some(&s.admin),
            Some(json!({"url": "http://docs.docent-proxy-test.invalid/"})),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job = wait_for_job(&s, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    assert!(configured.hits.load(Ordering::SeqCst) >= 1);

    // HTTP(S)_PROXY in the server's environment is not used (a server process of its own,
    // for its environment), not even with private targets allowed (the guard off): the
    // name does not resolve, and the proxy sees nothing.
    let env_proxy = counter();
    let data = tempfile::tempdir().unwrap();
    let served = crate::events::Served::start_with(
        data.path(),
        &[],
        &[
            ("HTTP_PROXY", env_proxy.base.as_str()),
            ("http_proxy", env_proxy.base.as_str()),
            ("HTTPS_PROXY", env_proxy.base.as_str()),
            ("ALL_PROXY", env_proxy.base.as_str()),
            ("DOCENT_ALLOW_PRIVATE_TARGETS", "true"),
            ("RUST_LOG", "debug"),
        ],
    );
    served.wait_line("docent ready");
    let admin = std::fs::read_to_string(data.path().join("admin.key")).unwrap();
    let http = crate::helpers::http_client();
    let call = |method: &str, path: &str, body: Option<Value>| {
        let mut request = http
            .request(method.parse().unwrap(), format!("{}{path}", served.base))
            .bearer_auth(admin.trim());
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, _) = call("POST", "/v1/bots", Some(json!({"id": "proxied"}))).await;
    assert_eq!(status, 201);
    // 7, in the logs: the URL's credentials never reach them, even at debug level.
    let (status, accepted) = call(
        "POST",
        "/v1/bots/proxied/sources",
        Some(json!({"url": "http://alice:s3cret-pw@docs.docent-proxy-test.invalid/"})),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job_id"].as_str().unwrap().to_string();
    let job =
        crate::helpers::eventually_async("the job ended", Duration::from_secs(60), async || {
            let (_, job) = call("GET", &format!("/v1/jobs/{id}"), None).await;
            (job["state"] == "done" || job["state"] == "failed").then_some(job)
        })
        .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(env_proxy.hits.load(Ordering::SeqCst), 0);
    assert!(!job.to_string().contains("s3cret-pw"), "{job}");
    let logged = served.lines_until("crawl failed");
    assert!(
        logged
            .last()
            .unwrap()
            .contains("docs.docent-proxy-test.invalid"),
        "{logged:?}"
    );
    let leaks: Vec<&String> = logged.iter().filter(|l| l.contains("s3cret-pw")).collect();
    assert!(leaks.is_empty(), "{leaks:?}");
    served.stop();
}

// ---- 5: bounded robots.txt and sitemaps ----

/// A site whose robots.txt and sitemap never end (until `limit` bytes), counting what it
/// sent; other paths serve the fixture page.
struct Endless {
    base: String,
    sent: Arc<AtomicUsize>,
    _server: crate::helpers::Running,
}

fn endless(limit: usize) -> Endless {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    let server = run_in_thread(move || {
        HttpServer::new(move || {
            let counted = counted.clone();
            App::new().default_service(web::to(move |req: HttpRequest| {
                let counted = counted.clone();
                async move {
                    let filler: &'static [u8] = match req.path() {
                        "/robots.txt" => b"# a comment that goes on and on and on and on\n",
                        "/sitemap.xml" => b"<!-- a comment that goes on and on and on -->\n",
                        _ => {
                            return HttpResponse::Ok().content_type("text/html").body(
                                "<html><head><title>Home</title></head><body><main><p>The \
                                 Zephyr Bolt kettle boils a litre in ninety seconds.</p>\
                                 </main></body></html>",
                            );
                        }
                    };
                    let chunk = web::Bytes::from(filler.repeat(1024));
                    let stream = futures::stream::unfold(0usize, move |n| {
                        let (chunk, counted) = (chunk.clone(), counted.clone());
                        async move {
                            (n < limit).then(|| {
                                counted.fetch_add(chunk.len(), Ordering::SeqCst);
                                (
                                    Ok::<_, std::convert::Infallible>(chunk.clone()),
                                    n + chunk.len(),
                                )
                            })
                        }
                    });
                    HttpResponse::Ok()
                        .content_type("text/plain")
                        .streaming(stream)
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run()
    });
    Endless {
        base,
        sent,
        _server: server,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn robots_txt_and_sitemaps_are_read_only_up_to_their_caps() {
    let (s, _) = fake_server(Limits::default()).await;
    // 200 MB each, if the crawler read them whole (robots: 1 MB cap; sitemaps: 50 MB).
    let limit = 200 * 1024 * 1024;
    let site = endless(limit);
    let (status, _, _) = s
        .call(
            "PATCH",
            "/v1/bots/zephyr",
            Some(&s.admin),
            Some(json!({"allowed_targets": [site.base]})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, accepted) = s
        .call(
            "POST",
            "/v1/bots/zephyr/sources",
            Some(&s.admin),
            Some(json!({"url": format!("{}/index.html", site.base)})),
        )
        .await;
    assert_eq!(status, 202);
    let job = wait_for_job(&s, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    // What was sent beyond the caps sits in socket buffers at most (a few MB).
    let sent = site.sent.load(Ordering::SeqCst);
    assert!(sent < 80 * 1024 * 1024, "{sent} bytes were read");
}

// ---- 7: credentials in crawl URLs ----

#[tokio::test(flavor = "multi_thread")]
async fn credentials_in_a_crawl_url_are_used_but_never_shown() {
    let (s, _) = fake_server(Limits::default()).await;
    let site = serve(&crate::helpers::fixture("site"));
    let (status, _, _) = s
        .call(
            "PATCH",
            "/v1/bots/zephyr",
            Some(&s.admin),
            Some(json!({"allowed_targets": [site.base]})),
        )
        .await;
    assert_eq!(status, 200);
    let with_secret = |path: &str| {
        site.url(path)
            .replacen("http://", "http://ann:s3cr3t-pw@", 1)
    };
    for (path, state) in [("index.html", "done"), ("missing.html", "failed")] {
        let (status, _, accepted) = s
            .call(
                "POST",
                "/v1/bots/zephyr/sources",
                Some(&s.admin),
                Some(json!({"url": with_secret(path)})),
            )
            .await;
        assert_eq!(status, 202, "{accepted}");
        assert!(!accepted.to_string().contains("s3cr3t"), "{accepted}");
        let job = wait_for_job(&s, accepted["job_id"].as_str().unwrap()).await;
        assert_eq!(job["state"], state, "{job}");
        assert!(!job.to_string().contains("s3cr3t"), "{job}");
        assert!(job["url"].as_str().unwrap().contains("***@"), "{job}");
    }
    let (_, _, bot) = s.call("GET", "/v1/bots/zephyr", Some(&s.admin), None).await;
    assert!(!bot.to_string().contains("s3cr3t"), "{bot}");
    let (_, _, pages) = s
        .call("GET", "/v1/bots/zephyr/pages", Some(&s.admin), None)
        .await;
    let urls: Vec<&str> = pages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["url"].as_str().unwrap())
        .collect();
    assert!(
        urls.iter().any(|u| u.ends_with("/returns.html")),
        "{urls:?}"
    );
    assert!(urls.iter().all(|u| !u.contains('@')), "{urls:?}");
}

// ---- 8, 9: budgets by address and network, charged when admitted ----

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_clients_are_limited_by_network_not_by_address() {
    let (s, _) = fake_server(Limits {
        per_ip_per_minute: 3,
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..Limits::default()
    })
    .await;
    let from = |client: String| {
        let request = s
            .http
            .get(s.url("/v1/bots"))
            .bearer_auth(&s.admin)
            .header("X-Forwarded-For", client);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // Four addresses of one /64: one client, three requests a minute.
    let mut statuses = Vec::new();
    for n in 1..=4 {
        statuses.push(from(format!("2001:db8:1:2::{n:x}")).await);
    }
    assert_eq!(
        statuses.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [200, 200, 200, 429]
    );
    assert_eq!(statuses[3].1["error"]["code"], "rate_limited");
    assert!(
        statuses[3].1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 requests a minute")
    );
    // Another /64 is another client; an IPv4 address counts alone.
    assert_eq!(from("2001:db8:1:3::1".into()).await.0, 200);
    assert_eq!(from("203.0.113.1".into()).await.0, 200);
    assert_eq!(from("203.0.113.2".into()).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_refused_for_a_full_queue_spend_no_budget() {
    // One request at a time; a slow answer holds the slot.
    let (s, generator) = crate::server::slow_fake_server(
        Limits {
            max_queue: 1,
            bot_public_messages_per_hour: 3,
            bot_budget_share_percent: 100,
            ..Limits::default()
        },
        Duration::from_millis(400),
    )
    .await;
    let pk = zephyr_public_key(&s);
    let ask = json!({"bot_id": "zephyr", "message": "How long is the warranty?"});
    let calls = generator.calls();
    let held = s.call("POST", "/v1/chat", Some(&s.admin), Some(ask.clone()));
    let refused = async {
        generation_started(&generator, calls).await;
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let refused = s
                .call_from("POST", "/v1/chat", Some(&pk), Some(SHOP), Some(ask.clone()))
                .await;
            statuses.push((refused.0, refused.2["error"]["code"].clone()));
        }
        statuses
    };
    let (held, refused) = tokio::join!(held, refused);
    assert_eq!(held.0, 200, "{}", held.2);
    assert!(
        refused
            .iter()
            .all(|(status, code)| *status == 503 && code == "overloaded"),
        "{refused:?}"
    );
    // Those five cost nothing: the bot's three messages an hour are all still there.
    spend_budget(&s, &pk, &ask, 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_spends_at_most_its_share_of_a_bots_budget() {
    let (s, _) = fake_server(Limits {
        bot_public_messages_per_hour: 10,
        bot_budget_share_percent: 20,
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..Limits::default()
    })
    .await;
    let pk = zephyr_public_key(&s);
    let assert_error_code = |(status, body): &(u16, Value), want: u16, code: &str| {
        assert_eq!(*status, want, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    };
    let chat = |client: &'static str| {
        let request = s
            .http
            .post(s.url("/v1/chat"))
            .bearer_auth(&pk)
            .header("Origin", SHOP)
            .header("X-Forwarded-For", client)
            .json(&json!({"bot_id": "zephyr", "message": "How long is the warranty?"}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    // One client: three addresses of one IPv6 /64 (8).
    assert_eq!(chat("2001:db8:5:6::1").await.0, 200);
    assert_eq!(chat("2001:db8:5:6::2").await.0, 200);
    let (status, refused) = chat("2001:db8:5:6::3").await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["code"], "budget_exhausted");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("share"),
        "{refused}"
    );
    // Everyone else still gets the rest of the bot's hour: another /64, and IPv4
    // addresses, each counted alone.
    assert_eq!(chat("2001:db8:5:7::1").await.0, 200);
    assert_eq!(chat("198.51.100.2").await.0, 200);
    assert_eq!(chat("198.51.100.2").await.0, 200);
    assert_error_code(&chat("198.51.100.2").await, 429, "budget_exhausted");
    assert_eq!(chat("198.51.100.3").await.0, 200);
}

// ---- 10: live feeds: capped, and ended ----

/// Opens a conversation's live feed; returns the response (status 200 streams).
async fn open_feed(
    s: &TestServer,
    conversation: &str,
    key: &str,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut request = s
        .http
        .get(s.url(&format!("/v1/conversations/{conversation}/events")))
        .bearer_auth(key);
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    request.send().await.unwrap()
}

/// Reads a feed until its `end` event (at most 30 s); returns that event.
async fn end_of(feed: reqwest::Response) -> Value {
    let mut sse = crate::helpers::Sse::new(feed);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some((_, event)) = sse.next(left).await else {
            panic!("the feed closed without an end event: {:?}", sse.seen);
        };
        if event["event"] == "end" {
            // Nothing follows it: the stream closes.
            assert!(
                sse.next(Duration::from_secs(30)).await.is_none(),
                "the feed closes after end: {:?}",
                sse.seen
            );
            return event;
        }
    }
}

async fn new_conversation(s: &TestServer, key: &str, origin: Option<&str>) -> String {
    let (status, _, conversation) = s
        .call_from(
            "POST",
            "/v1/conversations",
            Some(key),
            origin,
            Some(json!({"bot_id": "zephyr"})),
        )
        .await;
    assert_eq!(status, 201, "{conversation}");
    conversation["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn live_feeds_are_capped_per_visitor_and_per_address() {
    let (s, _) = fake_server(Limits {
        max_feeds_per_visitor: 2,
        max_feeds_per_address: 3,
        ..Limits::default()
    })
    .await;
    let pk = zephyr_public_key(&s);
    let one = session_token(&s, &pk, "visitor-one-key-0001").await;
    let conversation = new_conversation(&s, &one, Some(SHOP)).await;
    let first = open_feed(&s, &conversation, &one, Some(SHOP)).await;
    let second = open_feed(&s, &conversation, &one, Some(SHOP)).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open_feed(&s, &conversation, &one, Some(SHOP)).await;
    assert_eq!(third.status(), 429);
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_feeds", "{body}");
    // Another visitor from the same address: one more, then the address is full.
    let two = session_token(&s, &pk, "visitor-two-key-0002").await;
    let theirs = new_conversation(&s, &two, Some(SHOP)).await;
    let fourth = open_feed(&s, &theirs, &two, Some(SHOP)).await;
    assert_eq!(fourth.status(), 200);
    let fifth = open_feed(&s, &theirs, &two, Some(SHOP)).await;
    assert_eq!(fifth.status(), 429);
    // An agent's console (a secret key) is not a public caller: no cap.
    for _ in 0..3 {
        assert_eq!(open_feed(&s, &theirs, &s.admin, None).await.status(), 200);
    }
    // Closing a feed gives its place back (once the server sees the client gone).
    drop(first);
    crate::helpers::eventually_async(
        "the closed feed's place came back",
        Duration::from_secs(40),
        async || {
            let again = open_feed(&s, &conversation, &one, Some(SHOP)).await;
            (again.status() == 200).then_some(())
        },
    )
    .await;
    drop((second, fourth, fifth));
}

#[tokio::test(flavor = "multi_thread")]
async fn live_feeds_end_when_the_key_is_revoked_the_session_expires_or_the_conversation_is_erased()
{
    let (s, _) = fake_server(Limits {
        widget_session_ttl: Duration::from_secs(3),
        ..Limits::default()
    })
    .await;
    // The key is revoked.
    let pk = zephyr_public_key(&s);
    let conversation = new_conversation(&s, &pk, Some(SHOP)).await;
    let feed = open_feed(&s, &conversation, &pk, Some(SHOP)).await;
    assert_eq!(feed.status(), 200);
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
    assert_eq!(end_of(feed).await["reason"], "key_revoked");

    // A rotated key's overlap ends.
    let pk = zephyr_public_key(&s);
    let conversation = new_conversation(&s, &pk, Some(SHOP)).await;
    let feed = open_feed(&s, &conversation, &pk, Some(SHOP)).await;
    assert_eq!(feed.status(), 200);
    let key_id = format!("key_{}", &pk[8..16]);
    let (status, _, _) = s
        .call(
            "POST",
            &format!("/v1/keys/{key_id}/rotate"),
            Some(&s.admin),
            Some(json!({"overlap_seconds": 2})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(end_of(feed).await["reason"], "key_revoked");

    // The widget session expires.
    let pk = zephyr_public_key(&s);
    let token = session_token(&s, &pk, "visitor-expiring-0001").await;
    let conversation = new_conversation(&s, &token, Some(SHOP)).await;
    let feed = open_feed(&s, &conversation, &token, Some(SHOP)).await;
    assert_eq!(feed.status(), 200);
    assert_eq!(end_of(feed).await["reason"], "session_expired");

    // The conversation is erased: by id, and with its user.
    let conversation = new_conversation(&s, &s.admin, None).await;
    let feed = open_feed(&s, &conversation, &s.admin, None).await;
    let (status, _, _) = s
        .call(
            "DELETE",
            &format!("/v1/conversations/{conversation}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(end_of(feed).await["reason"], "conversation_erased");
    let (_, _, created) = s
        .call(
            "POST",
            "/v1/conversations",
            Some(&s.admin),
            Some(json!({"bot_id": "zephyr", "user_id": "u-feed"})),
        )
        .await;
    let conversation = created["id"].as_str().unwrap();
    let feed = open_feed(&s, conversation, &s.admin, None).await;
    let (_, _, erased) = s
        .call("DELETE", "/v1/users/u-feed", Some(&s.admin), None)
        .await;
    assert_eq!(erased["deleted_conversations"], 1);
    assert_eq!(end_of(feed).await["reason"], "conversation_erased");
}

// ---- 11: public callers' conversations, handoffs and leads ----

#[tokio::test(flavor = "multi_thread")]
async fn public_conversations_handoffs_and_leads_come_out_of_the_budget() {
    let (s, _) = fake_server(Limits {
        visitor_messages_per_hour: 3,
        ..Limits::default()
    })
    .await;
    let pk = zephyr_public_key(&s);
    let token = session_token(&s, &pk, "visitor-budget-0001").await;
    // A webhook with no worker running: each event leaves one pending delivery to count.
    let (_, _, webhook) = s
        .call(
            "POST",
            "/v1/webhooks",
            Some(&s.admin),
            Some(json!({"bot_id": "zephyr", "url": "https://hooks.example/x", "events": ["conversation.handoff", "lead.captured"]})),
        )
        .await;
    let webhook = webhook["id"].as_str().unwrap().to_string();
    let conversation = new_conversation(&s, &token, Some(SHOP)).await; // 1
    let handoff =
        |conversation: String, key: String, origin: Option<&'static str>, reason: &'static str| {
            let path = format!("/v1/conversations/{conversation}/handoff");
            let s = &s;
            async move {
                s.call_from(
                    "POST",
                    &path,
                    Some(&key),
                    origin,
                    Some(json!({"reason": reason})),
                )
                .await
            }
        };
    let first = handoff(conversation.clone(), token.clone(), Some(SHOP), "first").await; // 2
    assert_eq!(first.0, 200, "{}", first.2);
    // Asking again changes nothing and costs nothing.
    let again = handoff(conversation.clone(), token.clone(), Some(SHOP), "again").await;
    assert_eq!(again.0, 200, "{}", again.2);
    assert_eq!(again.2["handoff_reason"], "first");
    assert_eq!(again.2["handed_off_at"], first.2["handed_off_at"]);
    let lead = json!({"bot_id": "zephyr", "conversation_id": conversation, "email": "ann@example.com", "consent": true});
    let (status, _, _) = s
        .call_from(
            "POST",
            "/v1/leads",
            Some(&token),
            Some(SHOP),
            Some(lead.clone()),
        )
        .await;
    assert_eq!(status, 201); // 3: the conversation, its handoff, this lead
    assert_error(
        &s.call_from("POST", "/v1/leads", Some(&token), Some(SHOP), Some(lead))
            .await,
        429,
        "budget_exhausted",
    );
    assert_error(
        &s.call_from(
            "POST",
            "/v1/conversations",
            Some(&token),
            Some(SHOP),
            Some(json!({"bot_id": "zephyr"})),
        )
        .await,
        429,
        "budget_exhausted",
    );
    // Two handoffs of one conversation at once: the first stands, both answer with it.
    let other = new_conversation(&s, &s.admin, None).await;
    let (a, b) = tokio::join!(
        handoff(other.clone(), s.admin.clone(), None, "one"),
        handoff(other.clone(), s.admin.clone(), None, "two")
    );
    assert_eq!((a.0, b.0), (200, 200), "{} {}", a.2, b.2);
    assert_eq!(a.2["handed_off_at"], b.2["handed_off_at"]);
    assert_eq!(a.2["handoff_reason"], b.2["handoff_reason"]);
    // One event per conversation handed off, one per lead.
    let (_, _, deliveries) = s
        .call(
            "GET",
            &format!("/v1/webhooks/{webhook}/deliveries"),
            Some(&s.admin),
            None,
        )
        .await;
    let events: Vec<(String, Value)> = deliveries["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let event = s
                .state
                .store
                .get_event(d["event_id"].as_str().unwrap())
                .unwrap()
                .unwrap();
            (event.kind, event.data["conversation_id"].clone())
        })
        .collect();
    for id in [&conversation, &other] {
        let handoffs = events
            .iter()
            .filter(|(kind, c)| kind == "conversation.handoff" && c == id.as_str())
            .count();
        assert_eq!(handoffs, 1, "{id}: {events:?}");
    }
    assert_eq!(
        events.iter().filter(|(k, _)| k == "lead.captured").count(),
        1,
        "{events:?}"
    );
    // Secret keys have no such budget.
    for _ in 0..4 {
        new_conversation(&s, &s.admin, None).await;
    }
}

// ---- 12: private files ----

#[test]
fn the_data_dir_and_database_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    // The usual umask (this process's may differ); docent's own modes must not depend on it.
    // SAFETY: umask only sets the process's file-mode mask.
    unsafe {
        libc::umask(0o022);
    }
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("fresh").join("data");
    let store = docent::store::Store::open(&data).unwrap();
    drop(store);
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join(docent::store::DB_FILE)), 0o600);
    // A database made before (with a looser mode) is tightened when opened.
    let db = data.join(docent::store::DB_FILE);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(docent::store::Store::open(&data).unwrap());
    assert_eq!(mode(&db), 0o600);
}

// ---- 13: erasure and a turn in flight ----

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_answered_while_its_user_is_erased_is_dropped_not_stored() {
    let (s, generator) = crate::server::slow_fake_server(
        Limits {
            answer_cache_ttl: Duration::ZERO,
            ..Limits::default()
        },
        Duration::from_millis(150),
    )
    .await;
    for continuing in [false, true] {
        let user = format!("u-erased-{continuing}");
        let mut ask =
            json!({"bot_id": "zephyr", "user_id": user, "message": "How long is the warranty?"});
        if continuing {
            let (_, _, created) = s
                .call(
                    "POST",
                    "/v1/conversations",
                    Some(&s.admin),
                    Some(json!({"bot_id": "zephyr", "user_id": user})),
                )
                .await;
            ask["conversation_id"] = created["id"].clone();
        }
        let calls = generator.calls();
        let turn = s.call("POST", "/v1/chat", Some(&s.admin), Some(ask));
        let erase = async {
            // Erase while the answer is being generated.
            generation_started(&generator, calls).await;
            s.call("DELETE", &format!("/v1/users/{user}"), Some(&s.admin), None)
                .await
        };
        let (answered, erased) = tokio::join!(turn, erase);
        assert_eq!(erased.0, 200);
        assert_eq!(
            erased.2["deleted_conversations"],
            u64::from(continuing),
            "{}",
            erased.2
        );
        assert_error(&answered, 404, "conversation_not_found");
        let (_, _, left) = s
            .call(
                "GET",
                &format!("/v1/conversations?user_id={user}"),
                Some(&s.admin),
                None,
            )
            .await;
        assert_eq!(left["data"], json!([]), "{left}");
        // The user may come back: a new turn after the erasure is stored.
        let (status, _, again) = s
            .call(
                "POST",
                "/v1/chat",
                Some(&s.admin),
                Some(json!({"bot_id": "zephyr", "user_id": user, "message": "Hello again"})),
            )
            .await;
        assert_eq!(status, 200, "{again}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_turn_answered_while_its_bot_is_deleted_leaves_no_conversation_behind() {
    let (s, generator) = crate::server::slow_fake_server(
        Limits {
            answer_cache_ttl: Duration::ZERO,
            ..Limits::default()
        },
        Duration::from_millis(150),
    )
    .await;
    let test_admin = s.make_key(KeyKind::Secret, KeyEnv::Test, KeyScope::Admin, vec![]);
    let calls = generator.calls();
    let ask = json!({"bot_id": "sandbox", "message": "How long is the warranty?"});
    let turn = s.call("POST", "/v1/chat", Some(&test_admin), Some(ask));
    let delete = async {
        generation_started(&generator, calls).await;
        s.call("DELETE", "/v1/bots/sandbox", Some(&test_admin), None)
            .await
    };
    let (answered, deleted) = tokio::join!(turn, delete);
    assert_eq!(deleted.0, 200, "{}", deleted.2);
    assert_error(&answered, 404, "conversation_not_found");
    let sandbox = BotId::parse("sandbox").unwrap();
    let left = s
        .state
        .store
        .list_conversations(Some(&sandbox), None, None, 10)
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_never_gets_a_turn_at_the_model_gets_its_budget_back() {
    // One sequence, a one-second wait at most, and a slow answer holding the sequence.
    let (s, generator) = crate::server::slow_fake_server(
        Limits {
            parallel: 1,
            max_wait: Duration::from_secs(1),
            bot_public_messages_per_hour: 2,
            bot_budget_share_percent: 100,
            answer_cache_ttl: Duration::ZERO,
            ..Limits::default()
        },
        Duration::from_millis(400),
    )
    .await;
    let pk = zephyr_public_key(&s);
    let ask = json!({"bot_id": "zephyr", "message": "How long is the warranty?"});
    let calls = generator.calls();
    let held = s.call("POST", "/v1/chat", Some(&s.admin), Some(ask.clone()));
    let waited = async {
        generation_started(&generator, calls).await;
        s.call_from("POST", "/v1/chat", Some(&pk), Some(SHOP), Some(ask.clone()))
            .await
    };
    let (held, waited) = tokio::join!(held, waited);
    assert_eq!(held.0, 200, "{}", held.2);
    assert_error(&waited, 503, "overloaded");
    // It was admitted and charged, then refused: the bot's two messages are both there.
    spend_budget(&s, &pk, &ask, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_visitors_lead_given_before_any_conversation_is_erased_with_the_visitor() {
    let (s, _) = fake_server(Limits::default()).await;
    let pk = zephyr_public_key(&s);
    let body = json!({"token": pk, "bot_id": "zephyr", "visitor_key": "visitor-lead-key-0001"});
    let (_, _, session) = s
        .call_from("POST", "/v1/widget/session", None, Some(SHOP), Some(body))
        .await;
    let token = session["session_token"].as_str().unwrap().to_string();
    let visitor = session["visitor_id"].as_str().unwrap().to_string();
    let lead = json!({"bot_id": "zephyr", "email": "ann@example.com", "consent": true});
    let (status, _, stored) = s
        .call_from("POST", "/v1/leads", Some(&token), Some(SHOP), Some(lead))
        .await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["user_id"], visitor.as_str(), "{stored}");
    let (_, _, erased) = s
        .call(
            "DELETE",
            &format!("/v1/users/{visitor}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(erased["deleted_leads"], 1, "{erased}");
    let (_, _, leads) = s
        .call("GET", "/v1/leads?bot_id=zephyr", Some(&s.admin), None)
        .await;
    assert_eq!(leads["data"], json!([]), "{leads}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_is_refused_once_its_overlap_ends() {
    let (s, _) = fake_server(Limits::default()).await;
    let first = s.make_key(KeyKind::Secret, KeyEnv::Live, KeyScope::Admin, vec![]);
    let status_with = async |key: &str| s.call("GET", "/v1/bots", Some(key), None).await;
    let rotate = async |key: &str, overlap: u64| -> String {
        let path = format!("/v1/keys/key_{}/rotate", &key[8..16]);
        let body = json!({ "overlap_seconds": overlap });
        let (status, _, rotated) = s.call("POST", &path, Some(&s.admin), Some(body)).await;
        assert_eq!(status, 201, "{rotated}");
        rotated["key"].as_str().unwrap().to_string()
    };
    // An hour's overlap: both work.
    let second = rotate(&first, 3_600).await;
    assert_eq!(status_with(&first).await.0, 200);
    assert_eq!(status_with(&second).await.0, 200);
    // None: the replaced key is refused at once, its successor works, and the first key
    // keeps its own hour.
    let third = rotate(&second, 0).await;
    assert_error(&status_with(&second).await, 401, "invalid_api_key");
    assert_eq!(status_with(&third).await.0, 200);
    assert_eq!(status_with(&first).await.0, 200);
    // A second's overlap: refused once it has passed.
    let fourth = rotate(&third, 1).await;
    crate::helpers::eventually_async(
        "the replaced key refused after its overlap",
        Duration::from_secs(10),
        async || (status_with(&third).await.0 == 401).then_some(()),
    )
    .await;
    assert_error(&status_with(&third).await, 401, "invalid_api_key");
    assert_eq!(status_with(&fourth).await.0, 200);
}
