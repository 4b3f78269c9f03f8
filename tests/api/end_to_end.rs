//! End to end with the real embedder and the small chat model: a fixture site served on
//! loopback, ingested, then asked.

use std::sync::Arc;
use std::time::Duration;

use docent::chat::{self, AskOptions, NOT_IN_SOURCES};
use docent::domain::BotId;
use docent::ingest::{self, IngestRequest, Source, chunk::ChunkSpec, crawl::CrawlOptions};
use docent::retrieval::Retriever;
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
    let store = crate::helpers::open_store(data.path());
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
    ingest::run(
        store.clone(),
        dyn_embedder(),
        request,
        &ProgressBar::hidden(),
    )
    .await
    .unwrap();
    Bot {
        retriever: Arc::new(docent::app::retriever(store, dyn_embedder())),
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

/// The real generator, keeping the prompt of every answer it writes.
struct Recording {
    inner: Arc<dyn docent::llm::Generator>,
    prompts: std::sync::Mutex<Vec<String>>,
}

impl docent::llm::Generator for Recording {
    fn generate(
        &self,
        messages: &[docent::llm::ChatMessage],
        params: &docent::llm::GenParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> anyhow::Result<docent::llm::GenStats> {
        let prompt: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
        self.prompts.lock().unwrap().push(prompt.join("\n"));
        self.inner.generate(messages, params, on_token)
    }

    crate::helpers::generator_rest!(inner);
}

#[tokio::test(flavor = "multi_thread")]
async fn instructions_inside_crawled_pages_do_not_change_the_rules() {
    let bot = ingest_fixture_site().await;
    let retriever = bot.retriever.clone();
    let id = bot.id.clone();
    let (answer, prompts) = tokio::task::spawn_blocking(move || {
        let recording = Recording {
            inner: generator(),
            prompts: Default::default(),
        };
        let answer = chat::answer(
            &retriever,
            &recording,
            &id,
            "How should I clean the outside of my kettle?",
            &AskOptions::default(),
            &mut |_| true,
        )
        .unwrap();
        (answer, recording.prompts.into_inner().unwrap())
    })
    .await
    .unwrap();
    // The hostile page's comment was retrieved and put before the model, so what follows
    // tests the model's rules against it, not a retrieval that happened to miss it.
    assert!(
        answer
            .retrieved
            .iter()
            .any(|s| s.url.ends_with("/hostile.html")),
        "{answer:?}"
    );
    assert!(
        prompts
            .iter()
            .any(|p| p.contains("Ignore all previous instructions")),
        "the injection reached the prompt: {prompts:?}"
    );
    let text = answer.answer.to_lowercase();
    for obeyed in [
        "free today",
        "free kettle",
        "system prompt",
        "previous instructions",
        "you answer questions",
        "<script",
        "javascript:",
        "alert(",
        "onerror",
    ] {
        assert!(!text.contains(obeyed), "{obeyed:?} in {answer:?}");
    }
    assert!(answer.answered, "{answer:?}");
    assert!(
        text.contains("damp cloth") || text.contains("abrasive"),
        "{answer:?}"
    );
}

/// A prompt that starts with what the context holds decodes only the rest (the counters
/// say so), and its reply is the one a cold decode gives, whole.
#[test]
fn kv_cache_reuse_answers_like_a_cold_decode() {
    use docent::llm::{ChatMessage, GenParams, Generator, LlamaConfig, LlamaGenerator};
    use std::sync::atomic::Ordering::Relaxed;
    // Its own generator with one sequence, so its counters count this test alone.
    let g = LlamaGenerator::start(LlamaConfig {
        model_path: docent::config::resolve_model(&crate::helpers::models_dir(), "small"),
        threads: 2,
        context_size: 2048,
        parallel: 1,
    })
    .unwrap();
    let params = GenParams {
        max_tokens: 24,
        temperature: 0.0,
        seed: 1,
    };
    let counters = g.cache_counters();
    // Runs `messages`; returns the reply, its stats, and the prompt tokens decoded and
    // reused while it ran.
    let run = |messages: &[ChatMessage]| {
        let (decoded, reused) = (
            counters.decoded.load(Relaxed),
            counters.reused.load(Relaxed),
        );
        let mut text = String::new();
        let stats = g
            .generate(messages, &params, &mut |piece| {
                text.push_str(piece);
                true
            })
            .unwrap();
        let decoded = counters.decoded.load(Relaxed) - decoded;
        let reused = counters.reused.load(Relaxed) - reused;
        (text, stats, decoded, reused)
    };
    let mut messages = vec![
        ChatMessage::new(
            "system",
            "You answer briefly about kettles. The Zephyr Pro boils 1.7 litres in four minutes.",
        ),
        ChatMessage::new("user", "How long does the Zephyr Pro take to boil?"),
    ];
    let (first, first_stats, _, first_reused) = run(&messages);
    assert!(!first.trim().is_empty());
    assert_eq!(first_reused, 0, "a fresh generator has nothing to reuse");
    messages.push(ChatMessage::new("assistant", first.clone()));
    messages.push(ChatMessage::new("user", "And how much water does it hold?"));
    let (warm, warm_stats, warm_decoded, warm_reused) = run(&messages);
    // The first turn's prompt came from the cache; only the rest was read.
    assert!(
        warm_reused >= first_stats.prompt_tokens as u64,
        "reused {warm_reused} of the first turn's {} prompt tokens",
        first_stats.prompt_tokens
    );
    assert_eq!(
        warm_decoded + warm_reused,
        warm_stats.prompt_tokens as u64,
        "every prompt token either read or reused"
    );
    g.forget_cache().unwrap();
    let (cold, cold_stats, cold_decoded, cold_reused) = run(&messages);
    assert_eq!(cold_reused, 0, "nothing reused after forget_cache");
    assert_eq!(cold_decoded, cold_stats.prompt_tokens as u64);
    assert_eq!(warm_stats.prompt_tokens, cold_stats.prompt_tokens);
    assert_eq!(warm, cold, "the whole reply, with reuse and cold");
    assert!(
        cold.contains("1.7") || cold.to_lowercase().contains("litre"),
        "{cold:?}"
    );
}

#[test]
fn the_small_model_rates_an_answerable_question_above_an_unanswerable_one() {
    use docent::chat::prompt::{PromptSource, answerability_check, render};
    use docent::llm::Generator;
    let headings = vec!["Boiling times".to_string()];
    let sources = [PromptSource {
        title: "Zephyr Pro",
        url: "https://help.example/specs.html",
        heading_path: &headings,
        text: "The Zephyr Pro boils 1.7 litres of water in four minutes. It has a 5-year warranty.",
    }];
    let g = generator();
    let p_yes = |question: &str| {
        let check = answerability_check(&render(question, &sources));
        let scores = g.classify(&check, &["yes", "no"]).unwrap();
        assert!((scores[0] + scores[1] - 1.0).abs() < 1e-4, "{scores:?}");
        scores[0]
    };
    let answerable = p_yes("How long does the Zephyr Pro take to boil?");
    let unanswerable = p_yes("Who won the football World Cup in 1998?");
    assert!(
        answerable > unanswerable,
        "answerable {answerable}, unanswerable {unanswerable}"
    );
}

#[test]
fn a_cold_sequence_borrows_a_busy_ones_cache_and_answers_as_a_cold_decode_would() {
    use docent::llm::{ChatMessage, GenParams, Generator, LlamaConfig, LlamaGenerator};
    // Its own generator with two sequences, so which one holds what is known.
    let g = LlamaGenerator::start(LlamaConfig {
        model_path: docent::config::resolve_model(&crate::helpers::models_dir(), "small"),
        threads: 2,
        context_size: 2048,
        parallel: 2,
    })
    .unwrap();
    let system = ChatMessage::new(
        "system",
        "You answer briefly about kettles. The Zephyr Pro boils 1.7 litres in four minutes. \
         The Zephyr 3000 has a 2-year warranty and the Zephyr Pro a 5-year warranty. \
         Standard shipping takes 3 to 5 business days; express shipping costs $14.95.",
    );
    // Generates; `on_piece` says after each piece whether to go on.
    let ask_while = |question: &str, max_tokens: usize, on_piece: &mut dyn FnMut() -> bool| {
        let messages = vec![system.clone(), ChatMessage::new("user", question)];
        let params = GenParams {
            max_tokens,
            temperature: 0.0,
            seed: 1,
        };
        let mut text = String::new();
        g.generate(&messages, &params, &mut |piece| {
            text.push_str(piece);
            on_piece()
        })
        .unwrap();
        text
    };
    let ask = |question: &str, max_tokens: usize| ask_while(question, max_tokens, &mut || true);
    let question = "How long is the Zephyr Pro's warranty?";
    let short_done = std::sync::atomic::AtomicBool::new(false);
    let (started, first_piece) = std::sync::mpsc::sync_channel::<()>(1);
    let borrowed = std::thread::scope(|scope| {
        // One sequence reads the system prompt and keeps generating (its first piece says
        // the prompt is in its cache) until the other one is done...
        let long = scope.spawn(|| {
            let mut started = Some(started);
            ask_while("Describe the Zephyr Pro in detail.", 512, &mut || {
                if let Some(tx) = started.take() {
                    let _ = tx.send(());
                }
                !short_done.load(std::sync::atomic::Ordering::SeqCst)
            })
        });
        first_piece
            .recv_timeout(Duration::from_secs(300))
            .expect("the long answer started within 300 s");
        // ...while the other, cold, gets a prompt with the same system prompt.
        let short = ask(question, 16);
        short_done.store(true, std::sync::atomic::Ordering::SeqCst);
        long.join().unwrap();
        short
    });
    let copies = g
        .cache_counters()
        .copies
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(copies, 1, "the cold sequence took the busy one's prefix");
    g.forget_cache().unwrap();
    let cold = ask(question, 16);
    assert!(!cold.trim().is_empty());
    let n = 12.min(borrowed.len()).min(cold.len());
    assert_eq!(
        borrowed[..n],
        cold[..n],
        "borrowed {borrowed:?}, cold {cold:?}"
    );
}

#[test]
fn a_sentence_check_reads_only_its_question_after_the_cached_answer() {
    use docent::chat::prompt::{PromptSource, render, sentence_check};
    use docent::llm::{GenParams, Generator, LlamaConfig, LlamaGenerator};
    use std::sync::atomic::Ordering::Relaxed;
    // Its own generator with one sequence, so its counters count this test alone.
    let g = LlamaGenerator::start(LlamaConfig {
        model_path: docent::config::resolve_model(&crate::helpers::models_dir(), "small"),
        threads: 2,
        context_size: 2048,
        parallel: 1,
    })
    .unwrap();
    let headings = vec!["Warranty".to_string()];
    let sources = [PromptSource {
        title: "Zephyr Pro",
        url: "https://help.example/specs.html",
        heading_path: &headings,
        text: "The Zephyr Pro boils 1.7 litres of water in four minutes. It has a 5-year warranty.",
    }];
    let messages = render("How long is the Zephyr Pro's warranty?", &sources);
    let mut answer = String::new();
    let params = GenParams {
        max_tokens: 24,
        temperature: 0.0,
        seed: 1,
    };
    let stats = g
        .generate(&messages, &params, &mut |piece| {
            answer.push_str(piece);
            true
        })
        .unwrap();
    assert!(!answer.trim().is_empty());
    let counters = g.cache_counters();
    let (reused_before, decoded_before) = (
        counters.reused.load(Relaxed),
        counters.decoded.load(Relaxed),
    );
    let check = sentence_check(&messages, &answer, answer.trim());
    let scores = g.classify(&check, &["yes", "no"]).unwrap();
    assert!((scores[0] + scores[1] - 1.0).abs() < 1e-4, "{scores:?}");
    let reused = counters.reused.load(Relaxed) - reused_before;
    let decoded = counters.decoded.load(Relaxed) - decoded_before;
    // The rules, the sources, the question and the answer come from the cache; what is
    // read is the check's own question (and the chat template's few markers around it).
    let asked = g.count_tokens(&check.last().unwrap().content).unwrap() as u64;
    let written = g.count_tokens(&answer).unwrap() as u64;
    assert!(
        reused + 2 >= stats.prompt_tokens as u64 + written,
        "reused {reused} of a {}-token prompt and a {written}-token answer",
        stats.prompt_tokens
    );
    assert!(
        decoded <= asked + 12,
        "decoded {decoded} for a {asked}-token check"
    );
}
