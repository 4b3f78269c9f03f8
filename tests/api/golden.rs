//! Golden questions kept per bot over the API, checked after every crawl with the real
//! embedder: a re-crawl of a site whose page changed turns a passing question into a
//! failing one, which a webhook receives as `bot.regressed` (old and new answer) and the
//! bot's analytics list; a crawl that fixes it clears the regression.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::events::{receiver, start_delivery};
use crate::helpers::{dyn_embedder, serve};
use crate::server::{TestServer, assert_error, start_with, wait_for_job};

fn shipping_page(days: u32) -> String {
    format!(
        "<html><head><title>Shipping</title></head><body><main><h1>Shipping</h1>\
         <p>Standard shipping takes {days} days to any address in Europe. Express parcels \
         arrive the next working day.</p></main></body></html>"
    )
}

/// Crawls the site into `shop` and waits for the job (with its golden check) to end.
async fn crawl(s: &TestServer, url: &str) -> Value {
    let (status, _, accepted) = s
        .call(
            "POST",
            "/v1/bots/shop/sources",
            Some(&s.admin),
            Some(json!({"url": url})),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job = wait_for_job(s, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    job
}

async fn questions(s: &TestServer) -> Vec<Value> {
    let (status, _, listed) = s
        .call("GET", "/v1/bots/shop/questions", Some(&s.admin), None)
        .await;
    assert_eq!(status, 200, "{listed}");
    listed["data"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recrawl_that_breaks_a_golden_question_is_a_regression_sent_and_shown() {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("shipping.html"), shipping_page(3)).unwrap();
    let web = serve(site.path());
    let s = start_with(
        dyn_embedder(),
        Arc::new(docent::llm::FakeGenerator),
        docent::server::Limits {
            allow_private_targets: true,
            ..docent::server::Limits::default()
        },
        docent::chat::AskOptions {
            min_score: 0.3,
            ..docent::chat::AskOptions::default()
        },
    )
    .await;
    start_delivery(&s);
    let hook = receiver();
    let admin = s.admin.clone();
    let (status, _, _) = s
        .call(
            "POST",
            "/v1/bots",
            Some(&admin),
            Some(json!({"id": "shop"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _, webhook) = s
        .call(
            "POST",
            "/v1/webhooks",
            Some(&admin),
            Some(json!({"bot_id": "shop", "url": hook.url, "events": ["bot.regressed"]})),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");

    // Questions are checked as they are given; bad ones are refused.
    let path = "/v1/bots/shop/questions";
    for (body, code) in [
        (json!({"question": "  "}), "invalid_request"),
        (
            json!({"question": "Q?", "expected_answer_keywords": [""]}),
            "invalid_request",
        ),
        (json!({"question": "Q?", "answer": "x"}), "invalid_request"),
        (
            json!({"expected_answer_keywords": ["x"]}),
            "invalid_request",
        ),
        // What schemathesis sent the PostgreSQL store (jsonb holds no NUL).
        (
            json!({"question": "Q?", "expected_answer_keywords": ["a\u{0}b"]}),
            "invalid_request",
        ),
    ] {
        let response = s.call("POST", path, Some(&admin), Some(body.clone())).await;
        assert_error(&response, 400, code);
    }
    let shipping = web.url("shipping.html");
    let question = json!({
        "question": "How long does standard shipping take?",
        "expected_answer_keywords": ["3 days"],
        "source_url": shipping,
    });
    let (status, _, added) = s.call("POST", path, Some(&admin), Some(question)).await;
    assert_eq!(status, 201, "{added}");
    let id = added["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("gq_") && added["last"].is_null(), "{added}");
    let (status, _, other) = s
        .call(
            "POST",
            path,
            Some(&admin),
            Some(json!({"question": "Who founded the shop?", "expected_answer_keywords": ["Ada"]})),
        )
        .await;
    assert_eq!(status, 201, "{other}");
    let gone = other["id"].as_str().unwrap();
    let (status, _, _) = s
        .call("DELETE", &format!("{path}/{gone}"), Some(&admin), None)
        .await;
    assert_eq!(status, 200);
    let response = s
        .call("DELETE", &format!("{path}/{gone}"), Some(&admin), None)
        .await;
    assert_error(&response, 404, "question_not_found");

    // The first crawl passes it: answered, with "3 days", citing the shipping page.
    let job = crawl(&s, &shipping).await;
    assert_eq!(
        job["golden"],
        json!({"total": 1, "passed": 1, "regressed": 0, "errors": 0}),
        "{job}"
    );
    let listed = questions(&s).await;
    assert_eq!(listed.len(), 1);
    let last = &listed[0]["last"];
    assert_eq!(
        (last["passed"].as_bool(), last["reason"].as_str()),
        (Some(true), Some("ok")),
        "{last}"
    );
    assert!(
        last["answer"].as_str().unwrap().contains("3 days"),
        "{last}"
    );
    assert_eq!(last["job_id"], job["id"]);

    // The site changes; the re-crawl fails it: a regression, sent and shown.
    std::fs::write(site.path().join("shipping.html"), shipping_page(5)).unwrap();
    let job = crawl(&s, &shipping).await;
    assert_eq!(
        job["golden"],
        json!({"total": 1, "passed": 0, "regressed": 1, "errors": 0}),
        "{job}"
    );
    let delivered = hook.wait_for(1, 30).await;
    let event = delivered[0].json();
    assert_eq!(event["type"], "bot.regressed", "{event}");
    let data = &event["data"];
    assert_eq!(
        (data["bot_id"].as_str(), data["question_id"].as_str()),
        (Some("shop"), Some(id.as_str())),
        "{data}"
    );
    assert_eq!(data["question"], "How long does standard shipping take?");
    assert_eq!(data["reason"], "missing a keyword", "{data}");
    assert!(
        data["old_answer"].as_str().unwrap().contains("3 days"),
        "{data}"
    );
    assert!(
        data["new_answer"].as_str().unwrap().contains("5 days"),
        "{data}"
    );
    assert_eq!(data["job_id"], job["id"]);
    let (status, _, report) = s
        .call("GET", "/v1/bots/shop/analytics", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{report}");
    let golden = &report["golden_questions"];
    assert_eq!(
        (
            golden["total"].as_u64(),
            golden["passing"].as_u64(),
            golden["failing"].as_u64()
        ),
        (Some(1), Some(0), Some(1)),
        "{golden}"
    );
    assert_eq!(
        golden["regressed"][0]["question_id"],
        id.as_str(),
        "{golden}"
    );
    assert!(
        golden["regressed"][0]["new_answer"]
            .as_str()
            .unwrap()
            .contains("5 days")
    );

    // A re-crawl that changes nothing asks nothing again; a fix clears the regression.
    let job = crawl(&s, &shipping).await;
    assert_eq!(job["pages_indexed"], 0, "{job}");
    assert!(job["golden"].is_null(), "{job}");
    std::fs::write(site.path().join("shipping.html"), shipping_page(3)).unwrap();
    let job = crawl(&s, &shipping).await;
    assert_eq!(job["golden"]["passed"], 1, "{job}");
    let listed = questions(&s).await;
    assert!(listed[0]["regression"].is_null(), "{listed:?}");
    let report = s
        .call("GET", "/v1/bots/shop/analytics", Some(&admin), None)
        .await
        .2;
    assert_eq!(
        report["golden_questions"]["regressed"],
        json!([]),
        "{report}"
    );
    // Every event written has been delivered before counting them.
    crate::helpers::eventually_async(
        "no deliveries pending",
        std::time::Duration::from_secs(30),
        async || (s.state.store.pending_deliveries().unwrap() == 0).then_some(()),
    )
    .await;
    assert_eq!(
        hook.of_type("bot.regressed").len(),
        1,
        "one regression, one event"
    );

    // Only admins manage golden questions; a bot keeps at most 50.
    let chat_key = s.make_key(
        docent::keys::KeyKind::Secret,
        docent::keys::KeyEnv::Live,
        docent::keys::KeyScope::Bots(vec![docent::domain::BotId::parse("shop").unwrap()]),
        vec![],
    );
    let response = s.call("GET", path, Some(&chat_key), None).await;
    assert_error(&response, 403, "forbidden");
    let one = json!({"question": "Q?", "expected_answer_keywords": ["x"]});
    let response = s
        .call("POST", path, Some(&chat_key), Some(one.clone()))
        .await;
    assert_error(&response, 403, "forbidden");
    for _ in 1..docent::golden::MAX_QUESTIONS {
        let (status, _, _) = s.call("POST", path, Some(&admin), Some(one.clone())).await;
        assert_eq!(status, 201);
    }
    let response = s.call("POST", path, Some(&admin), Some(one)).await;
    assert_error(&response, 400, "too_many_questions");
    assert_eq!(questions(&s).await.len(), docent::golden::MAX_QUESTIONS);
}
