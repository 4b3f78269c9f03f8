//! The answer path's decisions with the fake models: fast checks of the wiring between
//! retrieval, the threshold, the stream and the verified citations.

use std::sync::Arc;

use docent::chat::{self, AskOptions, NOT_IN_SOURCES};
use docent::domain::BotId;
use docent::embed::FakeEmbedder;
use docent::ingest::{self, IngestRequest, Source, chunk::ChunkSpec, crawl::CrawlOptions};
use docent::llm::FakeGenerator;
use docent::retrieval::Retriever;
use docent::store::Store;
use indicatif::ProgressBar;

use crate::helpers::fixture;

async fn fake_bot() -> (Retriever, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path()).unwrap();
    let embedder = Arc::new(FakeEmbedder::default());
    let request = IngestRequest {
        bot: BotId::parse("zephyr").unwrap(),
        name: None,
        source: Source::parse(
            fixture("site").to_str().unwrap(),
            Some("https://help.example/"),
        )
        .unwrap(),
        crawl: CrawlOptions::default(),
        chunk: ChunkSpec::default(),
        test: false,
    };
    ingest::run(&store, embedder.clone(), request, &ProgressBar::hidden())
        .await
        .unwrap();
    (Retriever::new(store, embedder), data)
}

#[tokio::test]
async fn streamed_text_equals_the_answer_and_citations_are_verified() {
    let (retriever, _data) = fake_bot().await;
    let bot = BotId::parse("zephyr").unwrap();
    let mut streamed = String::new();
    let answer = chat::answer(
        &retriever,
        &FakeGenerator,
        &bot,
        "Which error code means the kettle needs descaling?",
        &AskOptions {
            min_score: 0.1,
            ..AskOptions::default()
        },
        &mut |piece| {
            streamed.push_str(piece);
            true
        },
    )
    .unwrap();
    assert_eq!(streamed.trim(), answer.answer);
    assert!(answer.answered, "{answer:?}");
    assert_eq!(answer.sources.len(), 1, "{answer:?}");
    assert!(
        answer
            .answer
            .ends_with(&format!("[{}]", answer.sources[0].index))
    );
    assert!(answer.retrieved.len() >= answer.sources.len());
}

#[tokio::test]
async fn nothing_above_the_threshold_gives_the_fixed_fallback_without_the_model() {
    let (retriever, _data) = fake_bot().await;
    let bot = BotId::parse("zephyr").unwrap();
    let answer = chat::answer(
        &retriever,
        &FakeGenerator,
        &bot,
        "quantum chromodynamics lattice gauge",
        &AskOptions::default(),
        &mut |_| true,
    )
    .unwrap();
    assert_eq!(answer.answer, NOT_IN_SOURCES);
    assert!(!answer.answered && answer.sources.is_empty());
    assert_eq!(answer.timings.completion_tokens, 0);
}

#[test]
fn an_empty_question_is_an_error_not_a_panic() {
    let data = tempfile::tempdir().unwrap();
    let retriever = Retriever::new(
        Store::open(data.path()).unwrap(),
        Arc::new(FakeEmbedder::default()),
    );
    let bot = BotId::parse("none").unwrap();
    assert!(
        chat::answer(
            &retriever,
            &FakeGenerator,
            &bot,
            "   ",
            &AskOptions::default(),
            &mut |_| true
        )
        .is_err()
    );
}
