//! Events, webhooks, leads, handoff and analytics over real HTTP on loopback: a receiver
//! that verifies signatures and fails on purpose, retries with the same event id, secret
//! rotation, SSRF refusals, handoff with agent replies on the live feed, leads typed in
//! chat and posted by form, and the numbers analytics reports for them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use docent::keys::{KeyEnv, KeyKind, KeyScope};
use docent::server::Limits;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::eventually_async;
use crate::server::{assert_error, fake_server};

/// Scripted answers: (status, Retry-After).
pub type Script = Arc<Mutex<VecDeque<(u16, Option<&'static str>)>>>;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub signature: String,
    pub event_id_header: String,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver on loopback: answers each request with the next scripted
/// (status, Retry-After), then 200.
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    pub script: Script,
    _server: crate::helpers::Running,
}

#[derive(Clone)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Received>>>,
    script: Script,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    state.got.lock().unwrap().push(Received {
        signature: header("docent-signature"),
        event_id_header: header("docent-event-id"),
        body: body.to_vec(),
        at: Instant::now(),
    });
    let next = state.script.lock().unwrap().pop_front();
    match next {
        Some((status, retry_after)) => {
            let mut response =
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            if let Some(wait) = retry_after {
                response.insert_header(("Retry-After", wait));
            }
            response.body("scripted")
        }
        None => HttpResponse::Ok().body("ok"),
    }
}

/// Starts a receiver on `listener` (port 0 for any).
pub fn receiver_on(listener: std::net::TcpListener) -> Receiver {
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let state = ReceiverState {
        got: Arc::default(),
        script: Arc::default(),
    };
    let (got, script) = (state.got.clone(), state.script.clone());
    let server = crate::helpers::run_in_thread(move || {
        HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .default_service(web::to(receive))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run()
    });
    Receiver {
        url,
        got,
        script,
        _server: server,
    }
}

pub fn receiver() -> Receiver {
    receiver_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
}

impl Receiver {
    /// Waits until `n` requests arrived (at most `secs`), and returns them all.
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let what = format!("the receiver got {n} deliveries");
        eventually_async(&what, Duration::from_secs(secs), async || {
            let got = self.got.lock().unwrap().clone();
            (got.len() >= n).then_some(got)
        })
        .await
    }

    /// The received events of one type.
    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(Received::json)
            .filter(|e| e["type"] == kind)
            .collect()
    }
}

fn verifies(received: &Received, secret: &str) -> bool {
    docent::events::verify(
        &received.signature,
        secret,
        &received.body,
        docent::telemetry::unix_now(),
        docent::events::REPLAY_TOLERANCE_SECS,
    )
}

fn private_ok() -> Limits {
    Limits {
        allow_private_targets: true,
        ..Limits::default()
    }
}

pub(crate) fn start_delivery(s: &crate::server::TestServer) {
    docent::events::start_worker(
        s.state.store.clone(),
        docent::events::DeliveryConfig {
            allow_private_targets: true,
            base_delay: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            ..Default::default()
        },
        s.state.deliveries.clone(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_signed_retried_with_the_same_event_id_rotated_and_replayed() {
    let (s, _) = fake_server(private_ok()).await;
    start_delivery(&s);
    let hook = receiver();
    let admin = s.admin.clone();

    // Bad requests are refused with their codes.
    for (body, code) in [
        (
            json!({"url": hook.url, "events": ["lead.captured"]}),
            "missing_field",
        ),
        (
            json!({"bot_id": "zephyr", "url": "ftp://x/", "events": ["*"]}),
            "invalid_request",
        ),
        (
            json!({"bot_id": "zephyr", "url": hook.url, "events": []}),
            "invalid_request",
        ),
        (
            json!({"bot_id": "zephyr", "url": hook.url, "events": ["lead.lost"]}),
            "invalid_request",
        ),
        (
            json!({"bot_id": "nope", "url": hook.url, "events": ["*"]}),
            "bot_not_found",
        ),
    ] {
        let response = s
            .call("POST", "/v1/webhooks", Some(&admin), Some(body))
            .await;
        let status = if code == "bot_not_found" { 404 } else { 400 };
        assert_error(&response, status, code);
    }
    let public = s.make_key(
        KeyKind::Public,
        KeyEnv::Live,
        KeyScope::Bots(vec![docent::domain::BotId::parse("zephyr").unwrap()]),
        vec!["https://shop.example".into()],
    );
    let response = s
        .http
        .post(s.url("/v1/webhooks"))
        .bearer_auth(&public)
        .header("Origin", "https://shop.example")
        .json(&json!({"bot_id": "zephyr", "url": hook.url, "events": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "public keys cannot add webhooks");

    let (status, _, created) = s
        .call(
            "POST",
            "/v1/webhooks",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "url": hook.url, "events": ["lead.captured"]})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_") && secret.len() > 30);
    let webhook_id = created["id"].as_str().unwrap().to_string();
    let (_, _, shown) = s
        .call(
            "GET",
            &format!("/v1/webhooks/{webhook_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert!(
        shown.get("secret").is_none(),
        "the secret is shown once: {shown}"
    );
    assert_eq!(shown["events"], json!(["lead.captured"]));

    // The receiver fails twice: 500, then 429 asking for a second's wait.
    hook.script
        .lock()
        .unwrap()
        .extend([(500, None), (429, Some("1"))]);
    let (status, _, lead) = s
        .call(
            "POST",
            "/v1/leads",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "name": "Jane", "email": "jane@example.com", "consent": true})),
        )
        .await;
    assert_eq!(status, 201, "{lead}");
    let got = hook.wait_for(3, 30).await;
    assert_eq!(got.len(), 3, "delivered once the receiver said 200");
    let ids: Vec<Value> = got.iter().map(|r| r.json()["id"].clone()).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one event id on every attempt: {ids:?}"
    );
    assert!(ids[0].as_str().unwrap().starts_with("evt_"));
    assert!(
        got.iter()
            .all(|r| r.event_id_header == ids[0].as_str().unwrap())
    );
    assert!(
        got.iter().all(|r| verifies(r, &secret)),
        "every attempt is signed"
    );
    assert!(!verifies(&got[0], "whsec_wrong"));
    let event = got[0].json();
    assert_eq!(event["type"], "lead.captured");
    assert_eq!(event["data"]["lead"]["email"], "jane@example.com");
    assert_eq!(event["data"]["bot_id"], "zephyr");
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(900),
        "Retry-After: 1 was honoured ({:?})",
        got[2].at - got[1].at
    );

    // The deliveries list shows each attempt.
    let delivery = eventually_async(
        "the delivery delivered",
        Duration::from_secs(10),
        async || {
            let (status, _, list) = s
                .call(
                    "GET",
                    &format!("/v1/webhooks/{webhook_id}/deliveries"),
                    Some(&admin),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{list}");
            let delivery = list["data"][0].clone();
            (delivery["state"] == "delivered").then_some(delivery)
        },
    )
    .await;
    assert_eq!(delivery["event_id"], ids[0]);
    let statuses: Vec<Value> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(statuses, [json!(500), json!(429), json!(200)]);
    assert!(delivery["attempts"][0]["latency_ms"].is_u64());
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("docent_webhook_attempts_total{outcome=\"delivered\"} 1")
            && metrics.contains("docent_webhook_attempts_total{outcome=\"retried\"} 2")
            && metrics.contains("docent_webhook_pending 0"),
        "{metrics}"
    );

    // A replay sends the same event again.
    let event_id = ids[0].as_str().unwrap();
    let (status, _, replay) = s
        .call(
            "POST",
            &format!("/v1/events/{event_id}/redeliver"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(replay["webhooks"], json!([webhook_id]));
    let got = hook.wait_for(4, 20).await;
    assert_eq!(got[3].json()["id"], ids[0]);
    assert_error(
        &s.call("POST", "/v1/events/evt_nope/redeliver", Some(&admin), None)
            .await,
        404,
        "event_not_found",
    );

    // After a rotation both secrets verify the next delivery, which carries two v1 values.
    let (status, _, rotated) = s
        .call(
            "POST",
            &format!("/v1/webhooks/{webhook_id}/rotate"),
            Some(&admin),
            Some(json!({"overlap_seconds": 600})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    s.call(
        "POST",
        "/v1/leads",
        Some(&admin),
        Some(json!({"bot_id": "zephyr", "phone": "+44 20 7946 0958", "consent": false})),
    )
    .await;
    let got = hook.wait_for(5, 20).await;
    let last = &got[4];
    assert_eq!(
        last.signature.matches("v1=").count(),
        2,
        "{}",
        last.signature
    );
    assert!(verifies(last, &secret) && verifies(last, &new_secret));

    // Rotated again with no overlap: only the newest secret signs, and neither earlier
    // one verifies the next delivery.
    let (status, _, rotated) = s
        .call(
            "POST",
            &format!("/v1/webhooks/{webhook_id}/rotate"),
            Some(&admin),
            Some(json!({"overlap_seconds": 0})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let newest = rotated["secret"].as_str().unwrap().to_string();
    s.call(
        "POST",
        "/v1/leads",
        Some(&admin),
        Some(json!({"bot_id": "zephyr", "phone": "+44 20 7946 0959", "consent": false})),
    )
    .await;
    let got = hook.wait_for(6, 20).await;
    let last = &got[5];
    assert_eq!(
        last.signature.matches("v1=").count(),
        1,
        "{}",
        last.signature
    );
    assert!(verifies(last, &newest), "{}", last.signature);
    assert!(!verifies(last, &new_secret) && !verifies(last, &secret));

    // Lists, then deletion: nothing more is sent to it.
    let (_, _, list) = s
        .call("GET", "/v1/webhooks?bot_id=zephyr", Some(&admin), None)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (status, _, _) = s
        .call(
            "DELETE",
            &format!("/v1/webhooks/{webhook_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_error(
        &s.call(
            "GET",
            &format!("/v1/webhooks/{webhook_id}"),
            Some(&admin),
            None,
        )
        .await,
        404,
        "webhook_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_urls_on_private_networks_are_refused_unless_allowed() {
    let (s, _) = fake_server(Limits::default()).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://10.0.0.5/hook",
    ] {
        let response = s
            .call(
                "POST",
                "/v1/webhooks",
                Some(&s.admin),
                Some(json!({"bot_id": "zephyr", "url": url, "events": ["*"]})),
            )
            .await;
        assert_error(&response, 400, "target_not_allowed");
    }
}

/// Reads SSE `data:` events from a live feed until `stop` says so or the feed ends; fails
/// when that takes more than 20 s.
pub(crate) async fn read_feed(
    res: reqwest::Response,
    stop: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut sse = crate::helpers::Sse::new(res);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !stop(&sse.seen) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if sse.next(left).await.is_none() {
            break;
        }
    }
    sse.seen
}

#[tokio::test(flavor = "multi_thread")]
async fn handoff_leads_intents_and_analytics_work_end_to_end() {
    let (s, _) = fake_server(private_ok()).await;
    start_delivery(&s);
    let hook = receiver();
    let admin = s.admin.clone();
    let (status, _, _) = s
        .call(
            "POST",
            "/v1/webhooks",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "url": hook.url, "events": ["*"]})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _, bot) = s
        .call(
            "PATCH",
            "/v1/bots/zephyr",
            Some(&admin),
            Some(json!({
                "lead_capture": {"mode": "on_detection"},
                "handoff_topics": ["medical advice"],
                "fallback": "Write to help@zephyr.example",
                "intents": [{"id": "pricing", "label": "Pricing", "message": "How much is the kettle?"}],
            })),
        )
        .await;
    assert_eq!(status, 200, "{bot}");
    assert_eq!(bot["lead_capture"], json!({"mode": "on_detection"}));
    for bad in [
        json!({"lead_capture": {"mode": "sometimes"}}),
        json!({"lead_capture": {"mode": "after_messages", "after_messages": 0}}),
        json!({"intents": [{"id": "Bad Id", "label": "x"}]}),
        json!({"handoff_topics": [""]}),
    ] {
        let response = s
            .call("PATCH", "/v1/bots/zephyr", Some(&admin), Some(bad.clone()))
            .await;
        assert_eq!(response.0, 400, "{bad}: {}", response.2);
    }

    // A chosen intent is asked and stored; an unknown one is refused.
    let (status, _, reply) = s
        .call(
            "POST",
            "/v1/chat",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "intent": "pricing"})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let priced = reply["conversation_id"].as_str().unwrap().to_string();
    let (_, _, conversation) = s
        .call(
            "GET",
            &format!("/v1/conversations/{priced}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(conversation["intent"], "pricing");
    assert_eq!(
        conversation["messages"][0]["content"],
        "How much is the kettle?"
    );
    assert_error(
        &s.call(
            "POST",
            "/v1/chat",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "intent": "refunds"})),
        )
        .await,
        400,
        "unknown_intent",
    );

    // Contact details typed in chat become a lead.
    let (_, _, reply) = s
        .call(
            "POST",
            "/v1/chat",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "message": "Call me on +1 (555) 123-4567 about descaling", "user_id": "u-9"})),
        )
        .await;
    let with_lead = reply["conversation_id"].as_str().unwrap().to_string();
    let (_, _, leads) = s
        .call("GET", "/v1/leads?bot_id=zephyr", Some(&admin), None)
        .await;
    let lead = &leads["data"][0];
    assert_eq!(lead["phone"], "+1 (555) 123-4567", "{leads}");
    assert_eq!(lead["obtained"], "chat");
    assert_eq!(lead["consent"], Value::Null);
    assert_eq!(lead["conversation_id"], with_lead);

    // A regulated topic goes to a person, with the fallback and a lead request.
    let (_, _, reply) = s
        .call(
            "POST",
            "/v1/chat",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "message": "Can you give me medical advice about a burn from the kettle?"})),
        )
        .await;
    assert_eq!(reply["finish_reason"], "handed_off", "{reply}");
    assert_eq!(reply["answered"], false);
    assert_eq!(reply["actions"], json!(["collect_lead"]));
    assert_eq!(reply["fallback"], "Write to help@zephyr.example");
    assert!(
        reply["message"]["content"]
            .as_str()
            .unwrap()
            .contains("a person will reply")
    );

    // A visitor asking for a person, with the widget's public key, then an agent's reply on
    // the live feed (the key as a query parameter, as EventSource must send it).
    let public = s.make_key(
        KeyKind::Public,
        KeyEnv::Live,
        KeyScope::Bots(vec![docent::domain::BotId::parse("zephyr").unwrap()]),
        vec!["https://shop.example".into()],
    );
    let visitor = |path: &str| {
        s.http
            .post(s.url(path))
            .bearer_auth(&public)
            .header("Origin", "https://shop.example")
    };
    let reply: Value = visitor("/v1/chat")
        .json(&json!({"bot_id": "zephyr", "message": "I want to talk to a human"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["finish_reason"], "handed_off", "{reply}");
    let conversation = reply["conversation_id"].as_str().unwrap().to_string();
    let feed = s
        .http
        .get(s.url(&format!(
            "/v1/conversations/{conversation}/events?access_token={public}"
        )))
        .header("Origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    let reader = tokio::spawn(read_feed(feed, |events| {
        events
            .iter()
            .any(|e| e["event"] == "message" && e["message"]["role"] == "agent")
    }));
    // While handed off, the visitor's messages are kept for the person; the bot is silent.
    let reply: Value = visitor("/v1/chat")
        .json(&json!({"bot_id": "zephyr", "message": "Hello? Anyone there?", "conversation_id": conversation}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["finish_reason"], "handed_off", "{reply}");
    assert_eq!(reply["message"], Value::Null);
    // Only secret keys post agent replies.
    let response = visitor(&format!("/v1/conversations/{conversation}/messages"))
        .json(&json!({"role": "agent", "content": "forged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let (status, _, agent) = s
        .call(
            "POST",
            &format!("/v1/conversations/{conversation}/messages"),
            Some(&admin),
            Some(json!({"role": "agent", "content": "Hi, Sam here. How can I help?", "author": "Sam"})),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let events = reader.await.unwrap();
    let agent_event = events
        .iter()
        .find(|e| e["event"] == "message" && e["message"]["role"] == "agent")
        .unwrap_or_else(|| panic!("no agent reply on the feed: {events:?}"));
    assert_eq!(
        agent_event["message"]["content"],
        "Hi, Sam here. How can I help?"
    );
    assert_eq!(agent_event["message"]["author"], "Sam");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "message" && e["message"]["content"] == "Hello? Anyone there?")
    );
    // A reconnecting client replays what it missed from the store.
    let replay = s
        .http
        .get(s.url(&format!("/v1/conversations/{conversation}/events")))
        .bearer_auth(&admin)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    let replayed = read_feed(replay, |events| {
        events.iter().any(|e| e["message"]["role"] == "agent")
    })
    .await;
    assert_eq!(
        replayed.iter().filter(|e| e["event"] == "message").count(),
        3,
        "messages 1 to 3 after position 0: {replayed:?}"
    );
    // Secret keys do not go in URLs: the query parameter takes public keys only.
    let response = s
        .http
        .get(s.url(&format!(
            "/v1/conversations/{conversation}/events?access_token={admin}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Another visitor's page cannot open this conversation's feed.
    let response = s
        .http
        .get(s.url(&format!(
            "/v1/conversations/{conversation}/events?access_token={public}"
        )))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // Explicit handoff over the API (idempotent).
    for _ in 0..2 {
        let (status, _, handed) = s
            .call(
                "POST",
                &format!("/v1/conversations/{priced}/handoff"),
                Some(&admin),
                Some(json!({"reason": "billing"})),
            )
            .await;
        assert_eq!(status, 200, "{handed}");
        assert_eq!(handed["state"], "handed_off");
        assert_eq!(handed["handoff_reason"], "billing");
    }

    // A lead by form, validated.
    for (body, code) in [
        (
            json!({"bot_id": "zephyr", "name": "No contact", "consent": true}),
            "missing_field",
        ),
        (
            json!({"bot_id": "zephyr", "email": "not-an-email", "consent": true}),
            "invalid_email",
        ),
        (
            json!({"bot_id": "zephyr", "phone": "12", "consent": true}),
            "invalid_phone",
        ),
        (
            json!({"bot_id": "zephyr", "email": "a@b.io"}),
            "missing_field",
        ),
        (
            json!({"bot_id": "zephyr", "email": "a@b.io", "consent": true, "conversation_id": "conv_nope"}),
            "conversation_not_found",
        ),
    ] {
        let response = s
            .call("POST", "/v1/leads", Some(&admin), Some(body.clone()))
            .await;
        let status = if code == "conversation_not_found" {
            404
        } else {
            400
        };
        assert_error(&response, status, code);
    }
    let response = visitor("/v1/leads")
        .json(&json!({"bot_id": "zephyr", "conversation_id": conversation, "name": "=cmd()", "email": "vis@example.org", "consent": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let csv = s
        .http
        .get(s.url("/v1/leads?bot_id=zephyr&format=csv"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = csv.text().await.unwrap();
    assert_eq!(csv.lines().count(), 3, "a header and two leads: {csv}");
    assert!(
        csv.contains("'=cmd()") && csv.contains("vis@example.org,"),
        "{csv}"
    );

    // Every event reached the receiver, signed, with the conversation it came from.
    let handoffs = eventually_async(
        "three handoffs and two leads",
        Duration::from_secs(60),
        async || {
            let handoffs = hook.of_type("conversation.handoff");
            (handoffs.len() >= 3 && hook.of_type("lead.captured").len() >= 2).then_some(handoffs)
        },
    )
    .await;
    let reasons: Vec<&str> = handoffs
        .iter()
        .map(|e| e["data"]["reason"].as_str().unwrap())
        .collect();
    for reason in ["topic", "visitor_request", "billing"] {
        assert!(reasons.contains(&reason), "{reasons:?}");
    }
    let started = hook.of_type("conversation.started");
    assert!(
        started
            .iter()
            .any(|e| e["data"]["intent"] == "pricing"
                && e["data"]["conversation_id"] == priced.as_str()),
        "{started:?}"
    );

    // Analytics count what happened today.
    let (status, _, report) = s
        .call("GET", "/v1/bots/zephyr/analytics", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{report}");
    let totals = &report["totals"];
    assert_eq!(totals["conversations"], 4, "{report}");
    assert_eq!(totals["handoffs"], 3, "{report}");
    assert_eq!(totals["leads"], 2, "{report}");
    assert_eq!(report["intents"]["pricing"], 1);
    assert_eq!(report["days"].as_array().unwrap().len(), 30);
    assert_error(
        &s.call(
            "GET",
            "/v1/bots/zephyr/analytics?from=2026-02-30",
            Some(&admin),
            None,
        )
        .await,
        400,
        "invalid_request",
    );
    // Erasing the user erases their lead too.
    let (_, _, erased) = s.call("DELETE", "/v1/users/u-9", Some(&admin), None).await;
    assert_eq!(erased["deleted_leads"], 1, "{erased}");
}

/// A `docent serve` process on a data dir, with its stderr lines on a channel.
pub(crate) struct Served {
    child: std::process::Child,
    pub(crate) base: String,
    lines: crate::helpers::StderrLines,
    /// What it printed up to and including its "listening" line.
    pub(crate) startup: Vec<String>,
}

impl Served {
    fn start(data: &std::path::Path, failpoint: Option<&str>) -> Served {
        let mut env = vec![("DOCENT_ALLOW_PRIVATE_TARGETS", "true")];
        if let Some(point) = failpoint {
            env.push(("DOCENT_FAILPOINT", point));
        }
        Served::start_with(data, &["--webhook-retry-base-ms", "200"], &env)
    }

    /// `docent serve` (small model, one sequence) with more flags and environment.
    pub(crate) fn start_with(
        data: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Served {
        let fixed = [
            "--bind",
            "127.0.0.1:0",
            "--model",
            "small",
            "--parallel",
            "1",
        ];
        Served::spawn(
            crate::crash::docent(data),
            &[&fixed[..], args].concat(),
            env,
        )
    }

    /// `command serve` with these flags and environment, once it listens.
    pub(crate) fn spawn(
        mut command: std::process::Command,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Served {
        command
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        let mut child = command.spawn().unwrap();
        let lines = crate::helpers::StderrLines::of(&mut child);
        let mut served = Served {
            child,
            base: String::new(),
            lines,
            startup: Vec::new(),
        };
        served.startup = served.lines_until("docent listening on http://");
        let address = served.startup.last().unwrap();
        let address = address
            .trim_start_matches("docent listening on http://")
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        served.base = format!("http://{address}");
        served
    }

    pub(crate) fn wait_line(&self, prefix: &str) -> String {
        self.lines_until(prefix).pop().expect("the line found")
    }

    /// Every line printed from here up to and including the first that contains `prefix`
    /// (within 60 s).
    pub(crate) fn lines_until(&self, prefix: &str) -> Vec<String> {
        self.lines.until(prefix, Duration::from_secs(60))
    }

    pub(crate) fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    /// SIGTERM, then its exit status (within 45 s: answers in flight get 30).
    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait(Duration::from_secs(45))
    }

    /// Sends it a signal (`TERM`, `INT`, …).
    pub(crate) fn signal(&self, name: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    }

    /// Its exit status, once it has exited (within `within`).
    pub(crate) fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        crate::helpers::eventually("docent serve exited", within, || {
            self.child.try_wait().unwrap()
        })
    }
}

/// A test that fails midway leaves no `serve` behind.
impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_outlive_a_receiver_down_across_a_restart_and_a_kill_9_before_delivery() {
    let data = tempfile::tempdir().unwrap();
    docent::ingest::crawl::install_tls_provider();
    let http = crate::helpers::http_client();
    let served = Served::start(data.path(), None);
    let admin = std::fs::read_to_string(data.path().join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let call = |base: &str, method: &str, path: &str, body: Option<Value>| {
        let mut request = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(&admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, bot) = call(
        &served.base,
        "POST",
        "/v1/bots",
        Some(json!({"id": "outbox", "name": "Outbox"})),
    )
    .await;
    assert_eq!(status, 201, "{bot}");
    // The receiver's port, closed for now: deliveries fail to connect.
    let closed = crate::helpers::ClosedPort::new();
    let address = closed.address;
    let (status, webhook) = call(
        &served.base,
        "POST",
        "/v1/webhooks",
        Some(json!({"bot_id": "outbox", "url": format!("http://{address}/hook"), "events": ["lead.captured"]})),
    )
    .await;
    assert_eq!(status, 201, "{webhook}");
    let secret = webhook["secret"].as_str().unwrap().to_string();
    let webhook_id = webhook["id"].as_str().unwrap().to_string();
    let (status, _) = call(
        &served.base,
        "POST",
        "/v1/leads",
        Some(json!({"bot_id": "outbox", "email": "first@example.com", "consent": true})),
    )
    .await;
    assert_eq!(status, 201);
    // Wait for a failed attempt, then stop docent while the receiver is still down.
    let list = eventually_async("an attempt recorded", Duration::from_secs(30), async || {
        let (_, list) = call(
            &served.base,
            "GET",
            &format!("/v1/webhooks/{webhook_id}/deliveries"),
            None,
        )
        .await;
        let attempts = list["data"][0]["attempts"].as_array().map_or(0, Vec::len);
        (attempts > 0).then_some(list)
    })
    .await;
    assert_eq!(list["data"][0]["state"], "pending", "{list}");
    assert!(
        list["data"][0]["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{list}"
    );
    served.stop();
    // The receiver comes up, then docent: the event arrives.
    let hook = receiver_on(closed.listen());
    let served = Served::start(data.path(), None);
    let got = hook.wait_for(1, 60).await;
    let first = got[0].json();
    assert_eq!(first["data"]["lead"]["email"], "first@example.com");
    assert!(verifies(&got[0], &secret));
    served.stop();

    // kill -9 after the lead's commit, before its delivery is sent.
    let served = Served::start(data.path(), Some("webhook_send"));
    let (status, _) = call(
        &served.base,
        "POST",
        "/v1/leads",
        Some(json!({"bot_id": "outbox", "email": "second@example.com", "consent": true})),
    )
    .await;
    assert_eq!(status, 201, "the lead and its event are committed");
    served.wait_line("failpoint webhook_send reached");
    served.kill9();
    assert_eq!(
        hook.got.lock().unwrap().len(),
        1,
        "nothing was sent before the kill"
    );
    let served = Served::start(data.path(), None);
    let got = hook.wait_for(2, 60).await;
    let second = got[1].json();
    assert_eq!(second["data"]["lead"]["email"], "second@example.com");
    assert_ne!(second["id"], first["id"]);
    assert!(verifies(&got[1], &secret));
    let list = eventually_async("both delivered", Duration::from_secs(10), async || {
        let (_, list) = call(
            &served.base,
            "GET",
            &format!("/v1/webhooks/{webhook_id}/deliveries"),
            None,
        )
        .await;
        (list["data"][0]["state"] == "delivered").then_some(list)
    })
    .await;
    assert_eq!(list["data"][1]["state"], "delivered", "{list}");
    served.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn real_models_hand_off_regulated_topics_capture_leads_and_count_unanswered_questions() {
    use crate::helpers::{dyn_embedder, generator};
    let s = crate::server::start(dyn_embedder(), generator(), private_ok(), 0.3).await;
    start_delivery(&s);
    let hook = receiver();
    let admin = s.admin.clone();
    let (status, _, _) = s
        .call(
            "POST",
            "/v1/webhooks",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "url": hook.url, "events": ["*"]})),
        )
        .await;
    assert_eq!(status, 201);
    let fallback = "Email help@zephyr.example and we will answer within a day.";
    let (status, _, bot) = s
        .call(
            "PATCH",
            "/v1/bots/zephyr",
            Some(&admin),
            Some(json!({
                "lead_capture": {"mode": "after_messages", "after_messages": 2},
                "handoff_topics": ["medical advice: burn, burned, injury, dose, doctor"],
                "fallback": fallback,
            })),
        )
        .await;
    assert_eq!(status, 200, "{bot}");
    let ask = |message: &str, conversation: Option<&str>| {
        let mut body = json!({"bot_id": "zephyr", "message": message, "user_id": "visitor-1"});
        if let Some(id) = conversation {
            body["conversation_id"] = json!(id);
        }
        s.call("POST", "/v1/chat", Some(&admin), Some(body))
    };

    // Answered from the pages; one visitor message, so no lead request yet.
    let (_, _, first) = ask("How many days do I have to return a kettle?", None).await;
    assert_eq!(first["answered"], true, "{first}");
    assert_eq!(first["actions"], json!([]), "{first}");
    assert_eq!(first["fallback"], Value::Null);
    let conversation = first["conversation_id"].as_str().unwrap().to_string();

    // Not in the pages: declined honestly, with the bot's contact text, and a lead request.
    let (_, _, second) = ask("What is the capital of Australia?", Some(&conversation)).await;
    assert_eq!(second["answered"], false, "{second}");
    assert_eq!(second["finish_reason"], "unanswered");
    assert_eq!(second["fallback"], fallback);
    assert!(
        second["message"]["content"]
            .as_str()
            .unwrap()
            .ends_with(fallback),
        "{second}"
    );
    assert_eq!(second["actions"], json!(["collect_lead"]));

    // Contact details typed in the chat become the conversation's lead.
    let (_, _, third) = ask(
        "You can reach me at sam.lee@example.com",
        Some(&conversation),
    )
    .await;
    assert_eq!(
        third["actions"],
        json!([]),
        "the lead is known now: {third}"
    );
    let (_, _, leads) = s
        .call("GET", "/v1/leads?bot_id=zephyr", Some(&admin), None)
        .await;
    assert_eq!(leads["data"][0]["email"], "sam.lee@example.com", "{leads}");
    assert_eq!(leads["data"][0]["conversation_id"], conversation.as_str());

    // A regulated topic goes to a person with a clear message, never an improvised answer.
    let (_, _, medical) = ask(
        "I burned my hand on the kettle, what should I put on it?",
        None,
    )
    .await;
    assert_eq!(medical["finish_reason"], "handed_off", "{medical}");
    assert_eq!(
        medical["message"]["content"],
        format!("{}\n\n{fallback}", docent::services::turn::HANDOFF_NOTICE)
    );
    assert_eq!(medical["sources"], json!([]));
    // The handoff asks for a lead; the visitor fills in the form.
    assert_eq!(medical["actions"], json!(["collect_lead"]));
    let (status, _, lead) = s
        .call(
            "POST",
            "/v1/leads",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "conversation_id": medical["conversation_id"], "name": "Ana", "phone": "+34 600 123 456", "consent": true})),
        )
        .await;
    assert_eq!(status, 201, "{lead}");
    // And a visitor can ask for a person in their own words.
    let (_, _, person) = ask("Can I speak with someone from your support team?", None).await;
    assert_eq!(person["finish_reason"], "handed_off", "{person}");

    // The receiver saw each kind of event.
    let kinds = [
        "conversation.started",
        "message.unanswered",
        "lead.captured",
        "conversation.handoff",
    ];
    eventually_async(
        "each kind of event received",
        Duration::from_secs(30),
        async || {
            (kinds.iter().all(|k| !hook.of_type(k).is_empty())
                && hook.of_type("conversation.handoff").len() == 2)
                .then_some(())
        },
    )
    .await;
    let unanswered = hook.of_type("message.unanswered");
    assert!(
        unanswered
            .iter()
            .any(|e| e["data"]["question"] == "What is the capital of Australia?"),
        "{unanswered:?}"
    );

    // Analytics add up to what happened.
    let (status, _, report) = s
        .call("GET", "/v1/bots/zephyr/analytics", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{report}");
    let totals = &report["totals"];
    assert_eq!(totals["conversations"], 3, "{report}");
    assert_eq!(totals["handoffs"], 2, "{report}");
    assert_eq!(totals["leads"], 2, "{report}");
    assert_eq!(
        totals["replies"], 3,
        "the handoff notices are not replies: {report}"
    );
    let (answered, unanswered_n) = (
        totals["answered"].as_u64().unwrap(),
        totals["unanswered"].as_u64().unwrap(),
    );
    assert!(
        answered >= 1 && unanswered_n >= 1 && answered + unanswered_n <= 3,
        "{report}"
    );
    assert!(totals["ttft_ms"]["p50"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        totals["latency_ms"]["p95"].as_f64().unwrap() >= totals["ttft_ms"]["p50"].as_f64().unwrap()
    );
    let gaps = report["unanswered_questions"].as_array().unwrap();
    assert!(
        gaps.iter()
            .any(|g| g["question"] == "What is the capital of Australia?" && g["count"] == 1),
        "{report}"
    );
}

/// `path` with `query` added to its query string.
fn with_query(path: &str, query: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{query}")
}

/// Every item of a cursor-paged list, following `next_cursor` with pages of `limit`;
/// fails on a page over the limit or a cursor that does not move on.
async fn every_page(s: &crate::server::TestServer, path: &str, limit: usize) -> Vec<Value> {
    let mut items: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => with_query(path, &format!("limit={limit}&cursor={c}")),
            None => with_query(path, &format!("limit={limit}")),
        };
        let (status, _, page) = s.call("GET", &url, Some(&s.admin), None).await;
        assert_eq!(status, 200, "{url}: {page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit, "{url}: {page}");
        items.extend(data.iter().cloned());
        match page["next_cursor"].as_str() {
            None => return items,
            Some(next) => {
                assert_ne!(cursor.as_deref(), Some(next), "the cursor moved on: {page}");
                cursor = Some(next.to_string());
            }
        }
    }
    panic!("{path}: more than 100 pages");
}

#[tokio::test(flavor = "multi_thread")]
async fn leads_and_deliveries_page_by_cursor_without_gaps_or_repeats() {
    // No delivery worker: every delivery stays listed, pending.
    let (s, _) = fake_server(private_ok()).await;
    let hook = receiver();
    let (status, _, webhook) = s
        .call(
            "POST",
            "/v1/webhooks",
            Some(&s.admin),
            Some(json!({"bot_id": "zephyr", "url": hook.url, "events": ["lead.captured"]})),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let webhook_id = webhook["id"].as_str().unwrap();
    for i in 0..5 {
        let phone = format!("+44 20 7946 09{i:02}");
        let (status, _, lead) = s
            .call(
                "POST",
                "/v1/leads",
                Some(&s.admin),
                Some(json!({"bot_id": "zephyr", "phone": phone, "consent": false})),
            )
            .await;
        assert_eq!(status, 201, "{lead}");
    }
    for path in [
        "/v1/leads?bot_id=zephyr".to_string(),
        format!("/v1/webhooks/{webhook_id}/deliveries"),
    ] {
        let get = async |url: String| s.call("GET", &url, Some(&s.admin), None).await;
        let (_, _, whole) = get(with_query(&path, "limit=200")).await;
        let whole = whole["data"].as_array().unwrap().clone();
        assert_eq!(whole.len(), 5, "{path}: {whole:?}");
        for limit in [1, 2, 5] {
            let paged = every_page(&s, &path, limit).await;
            assert_eq!(paged, whole, "{path} in pages of {limit}");
        }
        assert_error(
            &get(with_query(&path, "limit=0")).await,
            400,
            "invalid_request",
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_delivery_worker_prunes_settled_events_past_retention_and_keeps_unsettled_ones() {
    let (s, _) = fake_server(private_ok()).await;
    start_delivery(&s);
    let hook = receiver();
    let webhook = async |url: &str| {
        let body = json!({"bot_id": "zephyr", "url": url, "events": ["lead.captured"]});
        let (status, _, made) = s
            .call("POST", "/v1/webhooks", Some(&s.admin), Some(body))
            .await;
        assert_eq!(status, 201, "{made}");
        made["id"].as_str().unwrap().to_string()
    };
    let lead = async |phone: &str| {
        let body = json!({"bot_id": "zephyr", "phone": phone, "consent": false});
        let (status, _, made) = s
            .call("POST", "/v1/leads", Some(&s.admin), Some(body))
            .await;
        assert_eq!(status, 201, "{made}");
    };
    // A settled event: its one delivery delivered.
    let delivered_to = webhook(&hook.url).await;
    lead("+44 20 7946 0100").await;
    let settled = hook.wait_for(1, 20).await[0].json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // An unsettled one: delivered to the receiver, still being retried to a closed port.
    let closed = crate::helpers::ClosedPort::new();
    let failing_to = webhook(&closed.url()).await;
    lead("+44 20 7946 0101").await;
    let unsettled = hook.wait_for(2, 20).await[1].json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = async |webhook: &str| -> Vec<String> {
        let path = format!("/v1/webhooks/{webhook}/deliveries");
        let (status, _, page) = s.call("GET", &path, Some(&s.admin), None).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        data.iter()
            .map(|d| d["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        listed(&delivered_to).await,
        [unsettled.clone(), settled.clone()]
    );
    // A worker that keeps events for no time prunes once as it starts: the settled event
    // goes, with its deliveries; the unsettled one stays for its retries.
    docent::events::start_worker(
        s.state.store.clone(),
        docent::events::DeliveryConfig {
            allow_private_targets: true,
            base_delay: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            retention: Duration::ZERO,
            ..Default::default()
        },
        s.state.deliveries.clone(),
    );
    crate::helpers::eventually_async(
        "the settled event pruned",
        Duration::from_secs(20),
        async || (listed(&delivered_to).await == [unsettled.clone()]).then_some(()),
    )
    .await;
    assert_error(
        &s.call(
            "POST",
            &format!("/v1/events/{settled}/redeliver"),
            Some(&s.admin),
            None,
        )
        .await,
        404,
        "event_not_found",
    );
    assert_eq!(listed(&failing_to).await, std::slice::from_ref(&unsettled));
    let (status, _, _) = s
        .call(
            "POST",
            &format!("/v1/events/{unsettled}/redeliver"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 202);
}

/// An OpenAI-compatible engine whose streamed answers send their first words, then wait
/// until `gate` has a permit for them; other requests (yes/no checks) answer "Yes." at
/// once. Counts the streamed requests it has begun.
fn gated_engine(
    gate: Arc<tokio::sync::Semaphore>,
) -> (crate::helpers::Running, String, Arc<AtomicUsize>) {
    let begun = Arc::new(AtomicUsize::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counted = begun.clone();
    let running = crate::helpers::run_in_thread(move || {
        HttpServer::new(move || {
            let (gate, counted) = (gate.clone(), counted.clone());
            App::new()
                .route(
                    "/v1/models",
                    web::get().to(|| async {
                        HttpResponse::Ok().json(json!({"data": [{"id": "gated-model"}]}))
                    }),
                )
                .route(
                    "/v1/chat/completions",
                    web::post().to(move |body: web::Json<Value>| {
                        let (gate, counted) = (gate.clone(), counted.clone());
                        async move {
                            if body.0["stream"] != json!(true) {
                                let message = json!({"role": "assistant", "content": "Yes."});
                                return HttpResponse::Ok()
                                    .json(json!({"choices": [{"message": message}]}));
                            }
                            counted.fetch_add(1, Ordering::SeqCst);
                            let chunk = |delta: Value, finish: Value| {
                                let data =
                                    json!({"choices": [{"delta": delta, "finish_reason": finish}]});
                                web::Bytes::from(format!("data: {data}\n\n"))
                            };
                            let first = vec![
                                chunk(json!({"role": "assistant"}), Value::Null),
                                chunk(json!({"content": "Every Zephyr kettle "}), Value::Null),
                            ];
                            let rest = vec![
                                chunk(
                                    json!({"content": "comes with a two-year warranty. [1]"}),
                                    Value::Null,
                                ),
                                chunk(json!({}), json!("stop")),
                                web::Bytes::from_static(b"data: [DONE]\n\n"),
                            ];
                            let opened = futures::stream::once(async move {
                                // Held until the test lets this answer go on.
                                gate.acquire().await.unwrap().forget();
                                futures::stream::iter(rest)
                            })
                            .flatten();
                            let stream = futures::stream::iter(first)
                                .chain(opened)
                                .map(Ok::<_, actix_web::Error>);
                            HttpResponse::Ok()
                                .content_type("text/event-stream")
                                .streaming(stream)
                        }
                    }),
                )
        })
        .listen(listener)
        .unwrap()
        .workers(1)
        .run()
    });
    (running, url, begun)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_live_feeds_and_lets_the_answer_in_flight_finish() {
    let site = crate::helpers::serve(&crate::helpers::fixture("site"));
    let data = tempfile::tempdir().unwrap();
    crate::crash::ingest(data.path(), &site.url("index.html"));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (_engine, engine_url, begun) = gated_engine(gate.clone());
    let mut served = Served::spawn(
        crate::crash::docent(data.path()),
        &["--bind", "127.0.0.1:0", "--llm-url", &engine_url],
        &[("DOCENT_ALLOW_PRIVATE_TARGETS", "true")],
    );
    served.wait_line("docent ready");
    let admin = std::fs::read_to_string(data.path().join("admin.key")).unwrap();
    let http = crate::helpers::http_client();
    let created: Value = http
        .post(format!("{}/v1/conversations", served.base))
        .bearer_auth(admin.trim())
        .json(&json!({"bot_id": "shop"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversation = created["id"].as_str().unwrap().to_string();
    // An answer under way: its engine request has begun and is held.
    let chat = http
        .post(format!("{}/v1/chat", served.base))
        .bearer_auth(admin.trim())
        .json(&json!({"bot_id": "shop", "conversation_id": conversation, "message": "How long is the warranty?", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let mut answer = crate::helpers::Sse::new(chat);
    crate::helpers::eventually_async(
        "the engine answering",
        Duration::from_secs(60),
        async || (begun.load(Ordering::SeqCst) == 1).then_some(()),
    )
    .await;
    // A live feed of that conversation, open.
    let feed = http
        .get(format!(
            "{}/v1/conversations/{conversation}/events",
            served.base
        ))
        .bearer_auth(admin.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    let mut feed = crate::helpers::Sse::new(feed);
    let (_, state) = feed.next(Duration::from_secs(30)).await.unwrap();
    assert_eq!(state["event"], "state", "{state}");
    // SIGTERM: the feed ends at once, saying why, and closes.
    served.signal("TERM");
    let (_, end) = feed
        .next(Duration::from_secs(30))
        .await
        .expect("an end event");
    assert_eq!(end, json!({"event": "end", "reason": "server_stopping"}));
    assert!(
        feed.next(Duration::from_secs(30)).await.is_none(),
        "closed after end"
    );
    // The answer in flight finishes once the engine goes on.
    gate.add_permits(1);
    let mut last = None;
    while let Some((_, event)) = answer.next(Duration::from_secs(30)).await {
        last = Some(event);
    }
    let last = last.unwrap();
    assert_eq!(last["event"], "done", "{:?}", answer.seen);
    let shown: String = answer
        .seen
        .iter()
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert!(shown.contains("two-year warranty"), "{shown}");
    // Then the node exits cleanly, the turn kept whole.
    let status = served.wait(Duration::from_secs(45));
    assert!(status.success(), "{status:?}");
    let stored = crate::helpers::open_store(data.path())
        .messages(&conversation)
        .unwrap();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored[1].content.contains("two-year warranty"),
        "{stored:?}"
    );
}
