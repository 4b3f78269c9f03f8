//! Curated answers closing a gap, with the real embedder: a question the sources cannot
//! answer is unanswered and listed among the gaps; an operator writes the answer once; the
//! same question (and one in other words) is then answered from it and cites it as
//! `answer:<id>`, across a re-crawl; editing and removing it take effect at once. And one
//! crawled page removed on its own.

use docent::server::Limits;
use serde_json::{Value, json};

use crate::helpers::{dyn_embedder, fixture, serve};
use crate::server::{TestServer, assert_error, start_with, wait_for_job};

const QUESTION: &str = "Can I pay for my order with Bitcoin?";

async fn ask(s: &TestServer, question: &str) -> Value {
    let (status, _, reply) = s
        .call(
            "POST",
            "/v1/chat",
            Some(&s.admin),
            Some(json!({"bot_id": "zephyr", "message": question})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    reply
}

/// The URL of the source an answer cites first.
fn cited(reply: &Value) -> String {
    reply["sources"][0]["url"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_curated_answer_closes_a_gap_and_survives_a_recrawl() {
    let s = start_with(
        dyn_embedder(),
        std::sync::Arc::new(docent::llm::FakeGenerator),
        Limits {
            allow_private_targets: true,
            ..Limits::default()
        },
        docent::chat::AskOptions {
            min_score: 0.3,
            ..docent::chat::AskOptions::default()
        },
    )
    .await;
    let admin = s.admin.clone();
    let before = ask(&s, QUESTION).await;
    assert_eq!(before["finish_reason"], "unanswered", "{before}");
    let (_, _, report) = s
        .call("GET", "/v1/bots/zephyr/analytics", Some(&admin), None)
        .await;
    assert_eq!(
        report["unanswered_questions"][0]["question"], QUESTION,
        "{report}"
    );

    // Bad bodies are refused with their codes.
    let path = "/v1/bots/zephyr/answers";
    let response = s
        .call(
            "POST",
            path,
            Some(&admin),
            Some(json!({"question": QUESTION})),
        )
        .await;
    assert_error(&response, 400, "missing_field");
    let long = "x".repeat(docent::ingest::answers::MAX_QUESTION_CHARS + 1);
    let response = s
        .call(
            "POST",
            path,
            Some(&admin),
            Some(json!({"question": long, "answer": "a"})),
        )
        .await;
    assert_error(&response, 400, "invalid_request");
    let response = s
        .call(
            "POST",
            "/v1/bots/nope/answers",
            Some(&admin),
            Some(json!({"question": "q", "answer": "a"})),
        )
        .await;
    assert_error(&response, 404, "bot_not_found");

    // Written once, it answers the same question (not the cached decline) and a paraphrase.
    let text =
        "Zephyr accepts Visa, Mastercard and PayPal only, not Bitcoin or other cryptocurrencies.";
    let (status, _, written) = s
        .call(
            "POST",
            path,
            Some(&admin),
            Some(json!({"question": QUESTION, "answer": text})),
        )
        .await;
    assert_eq!(status, 201, "{written}");
    let id = written["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("ans_"), "{written}");
    let url = format!("answer:{id}");
    assert_eq!(written["url"], url.as_str());
    for question in [QUESTION, "Do you take bitcoin payments?"] {
        let reply = ask(&s, question).await;
        assert_eq!(reply["answered"], true, "{question}: {reply}");
        assert_eq!(cited(&reply), url, "{question}: {reply}");
        assert_eq!(reply["sources"][0]["title"], QUESTION);
        assert!(
            reply["message"]["content"]
                .as_str()
                .unwrap()
                .starts_with("Zephyr accepts Visa"),
            "{reply}"
        );
    }
    let (_, _, listed) = s.call("GET", path, Some(&admin), None).await;
    assert_eq!(listed["data"], json!([written]));

    // A re-crawl of the site keeps it.
    let site = serve(&fixture("site"));
    let (status, _, job) = s
        .call(
            "POST",
            "/v1/bots/zephyr/sources",
            Some(&admin),
            Some(json!({"url": site.url("/")})),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job = wait_for_job(&s, job["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    let (_, _, listed) = s.call("GET", path, Some(&admin), None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(cited(&ask(&s, "Do you take bitcoin payments?").await), url);

    // Edited, the next answer says the new text; removed, the question is a gap again.
    let item = format!("{path}/{id}");
    let (status, _, edited) = s
        .call(
            "PATCH",
            &item,
            Some(&admin),
            Some(json!({"answer": "Zephyr now accepts Bitcoin at checkout."})),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["question"], QUESTION);
    let reply = ask(&s, "Do you take bitcoin payments?").await;
    assert!(
        reply["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Zephyr now accepts Bitcoin"),
        "{reply}"
    );
    let response = s
        .call(
            "PATCH",
            &format!("{path}/ans_nope"),
            Some(&admin),
            Some(json!({"answer": "x"})),
        )
        .await;
    assert_error(&response, 404, "answer_not_found");
    let (status, _, _) = s.call("DELETE", &item, Some(&admin), None).await;
    assert_eq!(status, 200);
    let response = s.call("DELETE", &item, Some(&admin), None).await;
    assert_error(&response, 404, "answer_not_found");
    let after = ask(&s, "Do you take bitcoin payments?").await;
    assert_ne!(cited(&after), url, "{after}");
    let (_, _, listed) = s.call("GET", path, Some(&admin), None).await;
    assert_eq!(listed["data"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_page_is_removed_with_its_passages_and_stops_being_cited() {
    let (s, _) = crate::server::fake_server(Limits::default()).await;
    let admin = s.admin.clone();
    let (_, _, pages) = s
        .call("GET", "/v1/bots/zephyr/pages", Some(&admin), None)
        .await;
    let before = pages["data"].as_array().unwrap().len();
    let reply = ask(&s, "How long does standard shipping take?").await;
    let url = cited(&reply);
    assert!(url.contains("shipping"), "{reply}");
    let (_, _, bot) = s.call("GET", "/v1/bots/zephyr", Some(&admin), None).await;

    let path = format!("/v1/bots/zephyr/pages?url={}", urlencode(&url));
    let response = s
        .call("DELETE", "/v1/bots/zephyr/pages", Some(&admin), None)
        .await;
    assert_error(&response, 400, "missing_field");
    let response = s
        .call(
            "DELETE",
            "/v1/bots/zephyr/pages?url=https://nope/",
            Some(&admin),
            None,
        )
        .await;
    assert_error(&response, 404, "page_not_found");
    let (status, _, removed) = s.call("DELETE", &path, Some(&admin), None).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["id"], url.as_str());

    let (_, _, pages) = s
        .call("GET", "/v1/bots/zephyr/pages", Some(&admin), None)
        .await;
    let left: Vec<&str> = pages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["url"].as_str().unwrap())
        .collect();
    assert_eq!(left.len(), before - 1);
    assert!(!left.contains(&url.as_str()));
    let (_, _, after) = s.call("GET", "/v1/bots/zephyr", Some(&admin), None).await;
    assert_eq!(after["pages"], bot["pages"].as_u64().unwrap() - 1);
    assert!(after["chunks"].as_u64() < bot["chunks"].as_u64(), "{after}");
    let reply = ask(&s, "How long does standard shipping take?").await;
    assert_ne!(cited(&reply), url, "{reply}");
    let response = s.call("DELETE", &path, Some(&admin), None).await;
    assert_error(&response, 404, "page_not_found");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
