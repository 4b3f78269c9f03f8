//! The answer path's decisions with the fake models: fast checks of the wiring between
//! retrieval, the threshold, the stream and the verified citations.

use std::sync::Arc;

use docent::chat::{self, AskOptions, NOT_IN_SOURCES};
use docent::domain::BotId;
use docent::embed::FakeEmbedder;
use docent::ingest::{self, IngestRequest, Source, chunk::ChunkSpec, crawl::CrawlOptions};
use docent::llm::FakeGenerator;
use docent::retrieval::Retriever;
use indicatif::ProgressBar;

use crate::helpers::fixture;

async fn fake_bot() -> (Retriever, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let store = crate::helpers::open_store(data.path());
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
    ingest::run(
        store.clone(),
        embedder.clone(),
        request,
        &ProgressBar::hidden(),
    )
    .await
    .unwrap();
    (docent::app::retriever(store, embedder), data)
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
    // Everything it states is in the passage it cites.
    assert!(answer.unsupported.is_empty(), "{answer:?}");
}

/// The fake generator's faithful sentence, then `extra` (or only `extra`, `alone`).
struct Scripted {
    extra: &'static str,
    alone: bool,
}

impl docent::llm::Generator for Scripted {
    fn generate(
        &self,
        messages: &[docent::llm::ChatMessage],
        params: &docent::llm::GenParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> anyhow::Result<docent::llm::GenStats> {
        let stats = if self.alone {
            FakeGenerator.generate(messages, params, &mut |_| true)?
        } else {
            FakeGenerator.generate(messages, params, on_token)?
        };
        for word in self.extra.split_inclusive(' ') {
            on_token(word);
        }
        Ok(stats)
    }

    crate::helpers::generator_rest!(fake);
}

const DESCALING: &str = "Which error code means the kettle needs descaling?";

/// Asks DESCALING with `generator`; returns the answer and what was streamed.
async fn ask_descaling(
    generator: &dyn docent::llm::Generator,
    check_claims: bool,
) -> (chat::Answer, String) {
    let (retriever, _data) = fake_bot().await;
    let bot = BotId::parse("zephyr").unwrap();
    let options = AskOptions {
        min_score: 0.1,
        check_claims,
        ..AskOptions::default()
    };
    let mut streamed = String::new();
    let answer = chat::answer(&retriever, generator, &bot, DESCALING, &options, &mut |p| {
        streamed.push_str(p);
        true
    })
    .unwrap();
    (answer, streamed)
}

const INVENTED: &str = " The kettle was designed in 1987 by Hans Gruber of Nakatomi.";

#[tokio::test]
async fn a_sentence_stating_what_no_passage_does_is_removed_before_it_is_shown() {
    let embellishing = Scripted {
        extra: INVENTED,
        alone: false,
    };
    let (answer, streamed) = ask_descaling(&embellishing, true).await;
    assert!(answer.answered, "{answer:?}");
    assert!(!streamed.contains("1987"), "{streamed}");
    assert_eq!(streamed.trim(), answer.answer);
    assert_eq!(
        answer.removed,
        ["The kettle was designed in 1987 by Hans Gruber of Nakatomi."]
    );
    assert!(answer.unsupported.is_empty(), "{answer:?}");
    // The faithful sentence stays, with its verified citation.
    assert!(answer.answer.ends_with("[1]"), "{answer:?}");
}

#[tokio::test]
async fn without_the_claim_check_invented_specifics_are_only_counted() {
    let embellishing = Scripted {
        extra: INVENTED,
        alone: false,
    };
    let (answer, _) = ask_descaling(&embellishing, false).await;
    // The faithful sentence is cited, so it counts as answered; the invented year and
    // names are what no cited passage contains.
    assert!(answer.answered, "{answer:?}");
    assert!(answer.answer.contains("1987"), "{answer:?}");
    assert_eq!(answer.unsupported, ["1987", "Hans", "Gruber", "Nakatomi"]);
    assert!(answer.removed.is_empty());
}

#[tokio::test]
async fn an_answer_with_nothing_supported_left_is_the_decline() {
    let inventing = Scripted {
        extra: "Descaling error E7 was added in 2019 [1].",
        alone: true,
    };
    let (answer, streamed) = ask_descaling(&inventing, true).await;
    assert!(!answer.answered, "{answer:?}");
    assert_eq!(answer.answer, NOT_IN_SOURCES);
    assert_eq!(streamed, NOT_IN_SOURCES, "nothing invented was shown");
    assert!(answer.sources.is_empty());
    assert_eq!(answer.removed, ["Descaling error E7 was added in 2019."]);
}

#[tokio::test]
async fn an_answer_no_passage_supports_is_unanswered_and_cites_nothing() {
    // The claim check off: only the citation verification stands between a fluent,
    // confidently cited answer about something else and a counted answer.
    let unrelated = Scripted {
        extra: "Emperor penguins migrate across Antarctica every winter [1].",
        alone: true,
    };
    let (answer, streamed) = ask_descaling(&unrelated, false).await;
    assert!(!answer.answered, "{answer:?}");
    assert!(answer.sources.is_empty(), "{answer:?}");
    assert!(!answer.retrieved.is_empty(), "passages were there to cite");
    // Its own marker is not passed on as a citation, and no verified one is added.
    assert_eq!(
        answer.answer,
        "Emperor penguins migrate across Antarctica every winter."
    );
    assert_eq!(streamed.trim(), answer.answer);
    assert!(
        answer.unsupported.is_empty(),
        "only answered text is checked"
    );
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
    let retriever = docent::app::retriever(
        crate::helpers::open_store(data.path()),
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

/// The fake generator, but its answerability check says what the test wants and it
/// counts generations.
struct Doubtful {
    yes: f32,
    generations: std::sync::atomic::AtomicUsize,
}

impl docent::llm::Generator for Doubtful {
    fn generate(
        &self,
        messages: &[docent::llm::ChatMessage],
        params: &docent::llm::GenParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> anyhow::Result<docent::llm::GenStats> {
        self.generations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        FakeGenerator.generate(messages, params, on_token)
    }

    fn classify(
        &self,
        messages: &[docent::llm::ChatMessage],
        labels: &[&str],
    ) -> anyhow::Result<Vec<f32>> {
        assert_eq!(labels, ["yes", "no"]);
        let check = &messages.last().unwrap().content;
        assert!(check.contains("Which error code"), "{check}");
        assert!(check.contains("yes or no"), "{check}");
        Ok(vec![self.yes, 1.0 - self.yes])
    }

    crate::helpers::generator_rest!(fake sizes);
}

#[tokio::test]
async fn the_answerability_check_declines_before_generating_when_the_model_says_no() {
    use std::sync::atomic::Ordering;
    let (retriever, _data) = fake_bot().await;
    let bot = BotId::parse("zephyr").unwrap();
    let options = AskOptions {
        min_score: 0.1,
        answerable_threshold: 0.5,
        ..AskOptions::default()
    };
    let question = "Which error code means the kettle needs descaling?";
    let doubtful = Doubtful {
        yes: 0.2,
        generations: Default::default(),
    };
    let answer = chat::answer(&retriever, &doubtful, &bot, question, &options, &mut |_| {
        true
    })
    .unwrap();
    assert_eq!(answer.answer, NOT_IN_SOURCES);
    assert!(!answer.answered);
    assert_eq!(answer.answerable, Some(0.2));
    assert!(!answer.retrieved.is_empty(), "the candidates stay visible");
    assert_eq!(doubtful.generations.load(Ordering::SeqCst), 0);
    // Above the threshold the question is answered as usual.
    let sure = Doubtful {
        yes: 0.9,
        generations: Default::default(),
    };
    let answer = chat::answer(&retriever, &sure, &bot, question, &options, &mut |_| true).unwrap();
    assert!(answer.answered, "{answer:?}");
    assert_eq!(sure.generations.load(Ordering::SeqCst), 1);
}

/// The fake generator's faithful sentence and DOUBTED after it; asked about a sentence of
/// its answer (`verify_claims`), it says no to DOUBTED, or to everything (`doubt_all`), or
/// fails (`broken`). Records when generation ended and what it was asked.
struct Verifying {
    doubt_all: bool,
    broken: bool,
    generated: std::sync::atomic::AtomicBool,
    asked: std::sync::Mutex<Vec<String>>,
}

const DOUBTED: &str = " Descaling also makes the tea taste better.";

impl Verifying {
    fn new(doubt_all: bool, broken: bool) -> Verifying {
        Verifying {
            doubt_all,
            broken,
            generated: Default::default(),
            asked: Default::default(),
        }
    }
}

impl docent::llm::Generator for Verifying {
    fn generate(
        &self,
        messages: &[docent::llm::ChatMessage],
        params: &docent::llm::GenParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> anyhow::Result<docent::llm::GenStats> {
        let scripted = Scripted {
            extra: DOUBTED,
            alone: false,
        };
        let stats = scripted.generate(messages, params, on_token)?;
        self.generated
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(stats)
    }

    fn classify(
        &self,
        messages: &[docent::llm::ChatMessage],
        labels: &[&str],
    ) -> anyhow::Result<Vec<f32>> {
        let [.., answer, check] = messages else {
            panic!("a sentence check has the answer and the question");
        };
        assert_eq!(answer.role, "assistant");
        assert!(answer.content.contains("taste better"), "{answer:?}");
        assert!(check.content.contains("yes or no"), "{check:?}");
        anyhow::ensure!(!self.broken, "the engine went away");
        self.asked.lock().unwrap().push(check.content.clone());
        let yes = !self.doubt_all && !check.content.contains("taste");
        assert_eq!(labels, ["yes", "no"]);
        Ok(if yes { vec![1.0, 0.0] } else { vec![0.0, 1.0] })
    }

    crate::helpers::generator_rest!(fake sizes);
}

/// Asks DESCALING with verification on, the reader leaving after generation when `leave`;
/// returns the answer (or the error) and each piece shown.
async fn ask_verified(
    generator: &Verifying,
    leave: bool,
) -> (anyhow::Result<chat::Answer>, Vec<String>) {
    let (retriever, _data) = fake_bot().await;
    let bot = BotId::parse("zephyr").unwrap();
    let options = AskOptions {
        min_score: 0.1,
        verify_claims: true,
        ..AskOptions::default()
    };
    let mut pieces = Vec::new();
    let answer = chat::answer(&retriever, generator, &bot, DESCALING, &options, &mut |p| {
        let generated = generator
            .generated
            .load(std::sync::atomic::Ordering::SeqCst);
        if !p.is_empty() {
            // Both sentences were checked before anything was shown.
            let asked = generator.asked.lock().unwrap().len();
            assert!(generated && asked == 2, "{p:?} shown after {asked} checks");
            pieces.push(p.to_string());
        }
        !(leave && generated)
    });
    (answer, pieces)
}

#[tokio::test]
async fn with_verification_a_sentence_the_model_doubts_is_never_shown() {
    let verifying = Verifying::new(false, false);
    let (answer, pieces) = ask_verified(&verifying, false).await;
    let answer = answer.unwrap();
    assert!(answer.answered, "{answer:?}");
    assert!(!pieces.concat().contains("taste"), "{pieces:?}");
    assert_eq!(pieces.concat().trim(), answer.answer);
    assert_eq!(answer.removed, [DOUBTED.trim()]);
    assert!(answer.answer.ends_with("[1]"), "{answer:?}");
    // Both sentences were put to the model, each by its own words.
    let asked = verifying.asked.lock().unwrap();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(asked[1].contains(DOUBTED.trim()), "{asked:?}");
}

#[tokio::test]
async fn with_verification_an_answer_the_model_doubts_whole_is_the_decline() {
    let (answer, pieces) = ask_verified(&Verifying::new(true, false), false).await;
    let answer = answer.unwrap();
    assert!(!answer.answered, "{answer:?}");
    assert_eq!(answer.answer, NOT_IN_SOURCES);
    assert_eq!(pieces, [NOT_IN_SOURCES], "nothing doubted was shown");
    assert_eq!(answer.removed.len(), 2, "{answer:?}");
}

#[tokio::test]
async fn a_verification_that_fails_fails_the_turn_without_showing_anything() {
    let (answer, pieces) = ask_verified(&Verifying::new(false, true), false).await;
    let error = answer.expect_err("a failed check is an error, not an unverified answer");
    assert!(
        format!("{error:#}").contains("the engine went away"),
        "{error:#}"
    );
    assert!(pieces.is_empty(), "{pieces:?}");
}

#[tokio::test]
async fn a_reader_who_leaves_before_verification_stops_it_and_sees_nothing() {
    let verifying = Verifying::new(false, false);
    let (answer, pieces) = ask_verified(&verifying, true).await;
    let answer = answer.unwrap();
    assert_eq!(answer.finish, Some(docent::llm::Finish::Cancelled));
    assert!(pieces.is_empty(), "{pieces:?}");
    assert!(
        verifying.asked.lock().unwrap().is_empty(),
        "no check was asked"
    );
}
