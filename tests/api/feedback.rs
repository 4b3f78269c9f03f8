//! Visitors' feedback over HTTP: `POST /v1/messages/{id}/feedback` rates an answer (the last
//! rating stands), public callers only in their own conversations, with a signed
//! `message.feedback` webhook event, the counts on the conversation and in analytics, and
//! the rated-down question among the gaps.

use docent::domain::BotId;
use docent::keys::{KeyEnv, KeyKind, KeyScope};
use docent::server::Limits;
use serde_json::{Value, json};

use crate::events::{receiver, start_delivery};
use crate::server::{assert_error, fake_server};

const ORIGIN: &str = "https://shop.example";

/// A conversation with its messages, as an admin reads it.
async fn read_transcript(s: &crate::server::TestServer, id: &str) -> Value {
    let (status, _, body) = s
        .call(
            "GET",
            &format!("/v1/conversations/{id}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn visitors_rate_answers_and_operators_see_it_in_events_transcripts_and_analytics() {
    let (s, _) = fake_server(Limits {
        allow_private_targets: true,
        ..Limits::default()
    })
    .await;
    start_delivery(&s);
    let hook = receiver();
    let admin = s.admin.clone();
    let (status, _, webhook) = s
        .call(
            "POST",
            "/v1/webhooks",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "url": hook.url, "events": ["message.feedback"]})),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let public = s.make_key(
        KeyKind::Public,
        KeyEnv::Live,
        KeyScope::Bots(vec![BotId::parse("zephyr").unwrap()]),
        vec![ORIGIN.into()],
    );
    let ask = |key: String, question: &'static str| {
        let s = &s;
        async move {
            let (status, _, reply) = s
                .call_from(
                    "POST",
                    "/v1/chat",
                    Some(&key),
                    Some(ORIGIN),
                    Some(json!({"bot_id": "zephyr", "message": question})),
                )
                .await;
            assert_eq!(status, 200, "{reply}");
            reply
        }
    };
    let mine = ask(public.clone(), "How long does standard shipping take?").await;
    let answer = mine["message_id"].as_str().unwrap().to_string();
    let rate = |key: String, id: String, body: Value| {
        let s = &s;
        async move {
            s.call_from(
                "POST",
                &format!("/v1/messages/{id}/feedback"),
                Some(&key),
                Some(ORIGIN),
                Some(body),
            )
            .await
        }
    };

    // Bad ratings, unknown messages and visitors' own messages are refused with their codes.
    let response = rate(public.clone(), answer.clone(), json!({"rating": "meh"})).await;
    assert_error(&response, 400, "invalid_rating");
    let response = rate(public.clone(), answer.clone(), json!({})).await;
    assert_error(&response, 400, "missing_field");
    let long = "x".repeat(docent::server::feedback::MAX_COMMENT_CHARS + 1);
    let response = rate(
        public.clone(),
        answer.clone(),
        json!({"rating": "down", "comment": long}),
    )
    .await;
    assert_error(&response, 400, "comment_too_long");
    let response = rate(public.clone(), "msg_nope".into(), json!({"rating": "up"})).await;
    assert_error(&response, 404, "message_not_found");
    let conversation = mine["conversation_id"].as_str().unwrap().to_string();
    let transcript = read_transcript(&s, &conversation).await;
    let question_id = transcript["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(transcript["messages"][0]["role"], "user");
    let response = rate(public.clone(), question_id, json!({"rating": "up"})).await;
    assert_error(&response, 400, "not_an_answer");

    // Another public key of the same bot cannot rate this visitor's answers, nor learn
    // that the message exists.
    let other = s.make_key(
        KeyKind::Public,
        KeyEnv::Live,
        KeyScope::Bots(vec![BotId::parse("zephyr").unwrap()]),
        vec![ORIGIN.into()],
    );
    let response = rate(other, answer.clone(), json!({"rating": "down"})).await;
    assert_error(&response, 404, "message_not_found");

    // Up (twice), then down with a comment: the last rating stands, and each change is an
    // event.
    for _ in 0..2 {
        // The second is the same rating again: no event.
        let (status, _, rated) =
            rate(public.clone(), answer.clone(), json!({"rating": "up"})).await;
        assert_eq!(status, 200, "{rated}");
        assert_eq!(rated["feedback"]["rating"], "up");
    }
    let (status, _, rated) = rate(
        public.clone(),
        answer.clone(),
        json!({"rating": "down", "comment": "  That is not what the page says.  "}),
    )
    .await;
    assert_eq!(status, 200, "{rated}");
    assert_eq!(rated["id"], answer.as_str());
    assert_eq!(rated["feedback"]["rating"], "down");
    assert_eq!(
        rated["feedback"]["comment"],
        "That is not what the page says."
    );

    let got = hook.wait_for(2, 30).await;
    // Deliveries run side by side; event ids sort by when the event was written.
    let mut events: Vec<Value> = got.iter().map(|r| r.json()).collect();
    events.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let ratings: Vec<&str> = events
        .iter()
        .map(|e| e["data"]["rating"].as_str().unwrap())
        .collect();
    assert_eq!(ratings, ["up", "down"], "{events:?}");
    for event in &events {
        assert_eq!(event["type"], "message.feedback");
        assert_eq!(event["data"]["message_id"], answer.as_str());
        assert_eq!(event["data"]["conversation_id"], conversation.as_str());
        assert_eq!(
            event["data"]["question"],
            "How long does standard shipping take?"
        );
        assert_eq!(event["data"]["answer"], mine["message"]["content"]);
    }
    assert_eq!(
        events[1]["data"]["comment"],
        "That is not what the page says."
    );

    // The transcript and the conversation count the last rating only.
    let transcript = read_transcript(&s, &conversation).await;
    assert_eq!(transcript["ratings"], json!({"up": 0, "down": 1}));
    assert_eq!(transcript["messages"][1]["feedback"]["rating"], "down");
    assert_eq!(transcript["messages"][1]["answered"], true);

    // A second conversation rated up; analytics count both and list the rated-down question.
    let theirs = ask(public.clone(), "How long is the warranty?").await;
    let id = theirs["message_id"].as_str().unwrap().to_string();
    let (status, _, _) = rate(public.clone(), id, json!({"rating": "up"})).await;
    assert_eq!(status, 200);
    let (status, _, report) = s
        .call("GET", "/v1/bots/zephyr/analytics", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["totals"]["feedback_up"], 1, "{report}");
    assert_eq!(report["totals"]["feedback_down"], 1, "{report}");
    let down = report["rated_down_questions"].as_array().unwrap();
    assert_eq!(down.len(), 1, "{report}");
    assert_eq!(down[0]["question"], "How long does standard shipping take?");

    // Erasing the conversation takes its answers' ratings with it.
    let (status, _, _) = s
        .call(
            "DELETE",
            &format!("/v1/conversations/{conversation}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let response = rate(public, answer, json!({"rating": "up"})).await;
    assert_error(&response, 404, "message_not_found");
}
