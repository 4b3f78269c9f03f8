//! End to end with the real embedder and the small chat model: a fixture site served on
//! loopback, ingested, then asked.

use std::sync::Arc;
use std::time::Duration;

use docent::chat::{self, AskOptions, NOT_IN_SOURCES};
use docent::domain::BotId;
use docent::ingest::{self, IngestRequest, Source, chunk::ChunkSpec, crawl::CrawlOptions};
use docent::retrieval::Retriever;
use docent::store::Store;
use indicatif::ProgressBar;

use crate::helpers::{dyn_embedder, fixture, generator, serve};

struct Bot {
    retriever: Arc<Retriever>,
    id: BotId,
    _data: tempfile::TempDir,
}

async fn ingest_fixture_site() -> Bot {
    let site = serve(&fixture("site"));
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path()).unwrap();
    let id = BotId::parse("zephyr").unwrap();
    let request = IngestRequest {
        bot: id.clone(),
        name: None,
        source: Source::parse(&site.url("index.html"), None).unwrap(),
        crawl: CrawlOptions {
            delay: Duration::ZERO,
            ..CrawlOptions::default()
        },
        chunk: ChunkSpec::default(),
        test: false,
    };
    ingest::run(&store, dyn_embedder(), request, &ProgressBar::hidden())
        .await
        .unwrap();
    Bot {
        retriever: Arc::new(Retriever::new(store, dyn_embedder())),
        id,
        _data: data,
    }
}

async fn ask(bot: &Bot, question: &str) -> chat::Answer {
    let (retriever, id, question) = (bot.retriever.clone(), bot.id.clone(), question.to_string());
    tokio::task::spawn_blocking(move || {
        let generator = generator();
        let mut streamed = String::new();
        let answer = chat::answer(
            &retriever,
            &*generator,
            &id,
            &question,
            &AskOptions::default(),
            &mut |piece| {
                streamed.push_str(piece);
                true
            },
        )
        .unwrap();
        assert_eq!(streamed.trim(), answer.answer, "the stream is the answer");
        answer
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_cite_the_page_that_holds_the_fact_and_off_topic_questions_are_declined() {
    let bot = ingest_fixture_site().await;

    let answer = ask(&bot, "How many days do I have to return a kettle?").await;
    assert!(answer.answered, "{answer:?}");
    assert!(answer.answer.contains("45"), "{answer:?}");
    assert!(
        answer
            .sources
            .iter()
            .any(|s| s.url.ends_with("/returns.html")),
        "{answer:?}"
    );
    assert!(answer.timings.completion_tokens > 0);

    let answer = ask(&bot, "Who won the football world cup in 1998?").await;
    assert!(!answer.answered, "{answer:?}");
    assert_eq!(answer.answer, NOT_IN_SOURCES);
    assert!(answer.sources.is_empty());
    assert_eq!(
        answer.timings.completion_tokens, 0,
        "the model is not called"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn instructions_inside_crawled_pages_do_not_change_the_rules() {
    let bot = ingest_fixture_site().await;
    let answer = ask(&bot, "How should I clean the outside of my kettle?").await;
    let text = answer.answer.to_lowercase();
    assert!(!text.contains("free today"), "{answer:?}");
    assert!(!text.contains("system prompt"), "{answer:?}");
    assert!(
        text.contains("damp cloth") || text.contains("abrasive"),
        "{answer:?}"
    );
}

/// A prompt that starts with what the context holds decodes only the rest; its reply must
/// be the one a cold decode gives (small float differences aside: compared on its start).
#[test]
fn kv_cache_reuse_answers_like_a_cold_decode() {
    use docent::llm::{ChatMessage, GenParams, Generator};
    let g = generator();
    let params = GenParams {
        max_tokens: 24,
        temperature: 0.0,
        seed: 1,
    };
    let run = |messages: &[ChatMessage]| {
        let mut text = String::new();
        let stats = g
            .generate(messages, &params, &mut |piece| {
                text.push_str(piece);
                true
            })
            .unwrap();
        (text, stats)
    };
    let mut messages = vec![
        ChatMessage::new(
            "system",
            "You answer briefly about kettles. The Zephyr Pro boils 1.7 litres in four minutes.",
        ),
        ChatMessage::new("user", "How long does the Zephyr Pro take to boil?"),
    ];
    g.forget_cache().unwrap();
    let (first, _) = run(&messages);
    assert!(!first.trim().is_empty());
    messages.push(ChatMessage::new("assistant", first.clone()));
    messages.push(ChatMessage::new("user", "And how much water does it hold?"));
    let (warm, warm_stats) = run(&messages);
    g.forget_cache().unwrap();
    let (cold, cold_stats) = run(&messages);
    assert_eq!(warm_stats.prompt_tokens, cold_stats.prompt_tokens);
    let n = 12.min(warm.len()).min(cold.len());
    assert!(
        n > 0 && warm[..n] == cold[..n],
        "with reuse {warm:?}, cold {cold:?}"
    );
    assert!(
        cold.contains("1.7") || cold.to_lowercase().contains("litre"),
        "{cold:?}"
    );
}
