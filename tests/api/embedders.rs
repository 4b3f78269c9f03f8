//! Bots choosing their embedder: one `docent serve` answers a bot made with nomic (cut to
//! 256 dimensions) and one made with MiniLM, each with the embedder that made its vectors
//! (checked against the models themselves); a bot asking for another embedder keeps its
//! own until `docent reindex` re-embeds it, and an ingest never mixes the two.

use std::process::Output;
use std::time::Duration;

use docent::domain::{BotId, EmbedderChoice, EmbedderId, NomicWidth};
use docent::embed::{Embedder, Embedders, LocalModels, Nomic};
use docent::index::dot;
use serde_json::{Value, json};

use crate::events::Served;
use crate::helpers::{dyn_embedder, embedder, fixture, models_dir, open_store};
use crate::remote_embed::{docent, ok, refused};

const QUESTION: &str = "How many days do I have to return a kettle?";

fn ingest(data: &std::path::Path, bot: &str, extra: &[&str]) -> Output {
    let site = fixture("site");
    let args = [
        "ingest",
        site.to_str().unwrap(),
        "--bot",
        bot,
        "--base-url",
        "https://help.example/",
        "--json",
    ];
    docent(data, &[extra, &args[..]].concat())
}

/// The stored vector of the chunk cited at `url`, and its embedded text.
fn stored(data: &std::path::Path, bot: &str, url: &str) -> (String, Vec<f32>) {
    let store = open_store(data);
    let bot = BotId::parse(bot).unwrap();
    let page = store
        .pages(&bot)
        .unwrap()
        .into_iter()
        .find(|p| p.url == url)
        .unwrap_or_else(|| panic!("no page {url}"));
    let id = page.chunk_ids[0];
    let text = store.chunks(&[id]).unwrap().remove(0).embedding_text();
    (text, store.vectors_of(&[id]).unwrap().remove(0))
}

fn recorded(data: &std::path::Path, bot: &str) -> (Option<EmbedderChoice>, Option<EmbedderId>) {
    let record = open_store(data)
        .get_bot(&BotId::parse(bot).unwrap())
        .unwrap();
    (record.settings.embedder, record.embedder)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bot_is_served_by_the_embedder_that_made_its_vectors_until_reindexed() {
    let data = tempfile::tempdir().unwrap();
    let returns = "https://help.example/returns.html";
    // One bot made with nomic at 256 dimensions (recorded as its choice), one with the
    // node's default, MiniLM.
    ok(&ingest(data.path(), "kettle", &["--embedder", "nomic-256"]));
    ok(&ingest(data.path(), "plain", &[]));
    let nomic_256 = EmbedderChoice::Nomic(NomicWidth::D256);
    assert_eq!(
        recorded(data.path(), "kettle"),
        (Some(nomic_256), Some(nomic_256.id()))
    );
    assert_eq!(
        recorded(data.path(), "plain"),
        (None, Some(EmbedderChoice::MiniLm.id()))
    );
    // A node default (DOCENT_EMBEDDER) is not a bot's choice: a bot with vectors is
    // extended with the embedder that made them, and nothing is recorded on it.
    let extended = crate::crash::docent(data.path())
        .args(["--model", "small"])
        .env("DOCENT_EMBEDDER", "nomic")
        .args([
            "ingest",
            fixture("site").to_str().unwrap(),
            "--bot",
            "plain",
        ])
        .args(["--base-url", "https://help.example/", "--json"])
        .output()
        .unwrap();
    let summary: Value = serde_json::from_str(&ok(&extended)).unwrap();
    assert_eq!(summary["chunks"], 0, "{summary}");
    assert_eq!(
        recorded(data.path(), "plain"),
        (None, Some(EmbedderChoice::MiniLm.id()))
    );
    // An in-process choice beside a remote engine is refused, saying why.
    let both = docent(
        data.path(),
        &[
            "--embed-url",
            "http://127.0.0.1:9",
            "--embedder",
            "nomic",
            "bots",
            "list",
        ],
    );
    assert!(refused(&both).contains("--embed-url"));
    // The stored vectors are each model's own: the oracle embeds the same texts.
    let nomic = tokio::task::spawn_blocking(|| {
        let dir = models_dir().join("all-MiniLM-L6-v2");
        Nomic::load(
            &models_dir().join("nomic-embed-text-v1.5.f16.gguf"),
            &dir,
            768,
        )
        .unwrap()
        .at_width(256)
        .unwrap()
    })
    .await
    .unwrap();
    let (kettle_text, kettle_vector) = stored(data.path(), "kettle", returns);
    assert_eq!(kettle_vector.len(), 256);
    let want = nomic.embed(&[kettle_text.as_str()]).unwrap().remove(0);
    assert!(dot(&kettle_vector, &want) > 0.9999);
    let (plain_text, plain_vector) = stored(data.path(), "plain", returns);
    assert_eq!(plain_vector.len(), 384);
    let want = embedder().embed(&[plain_text.as_str()]).unwrap().remove(0);
    assert!(dot(&plain_vector, &want) > 0.9999);

    // One node (default MiniLM) answers both, each from its own vectors: a source's score is
    // the cosine between the question, embedded by that bot's model, and the stored vector.
    let served = Served::start_with(data.path(), &[], &[]);
    served.wait_line("docent ready");
    let admin = std::fs::read_to_string(data.path().join("admin.key")).unwrap();
    docent::ingest::crawl::install_tls_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let call = |method: &str, path: &str, body: Value| {
        let request = http
            .request(method.parse().unwrap(), format!("{}{path}", served.base))
            .bearer_auth(admin.trim())
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let source_score = |reply: &Value| -> f32 {
        let source = reply["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["url"] == returns)
            .unwrap_or_else(|| panic!("returns page not cited: {reply}"));
        source["score"].as_f64().unwrap() as f32
    };
    let question_by = |model: &dyn Embedder| model.embed_queries(&[QUESTION]).unwrap().remove(0);
    for (bot, vector, model) in [
        ("kettle", &kettle_vector, &nomic as &dyn Embedder),
        ("plain", &plain_vector, embedder().as_ref() as &dyn Embedder),
    ] {
        let (status, reply) = call(
            "POST",
            "/v1/chat",
            json!({"bot_id": bot, "message": QUESTION}),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        let expected = dot(&question_by(model), vector);
        let got = source_score(&reply);
        assert!(
            (got - expected).abs() < 2e-3,
            "{bot}: score {got}, {expected} expected"
        );
    }

    // Asking for another embedder records the wish; the bot keeps answering with the
    // vectors it has. An unknown name is refused.
    let (status, view) = call("PATCH", "/v1/bots/plain", json!({"embedder": "nomic"})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["embedder"], "nomic");
    assert_eq!(
        view["embedded_with"],
        json!({"model": "all-MiniLM-L6-v2", "dim": 384})
    );
    let (status, reply) = call(
        "POST",
        "/v1/chat",
        json!({"bot_id": "plain", "message": QUESTION}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let expected = dot(&question_by(embedder().as_ref()), &plain_vector);
    assert!((source_score(&reply) - expected).abs() < 2e-3, "{reply}");
    let (status, error) = call("PATCH", "/v1/bots/plain", json!({"embedder": "bge-large"})).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "invalid_request", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("minilm, nomic, nomic-512, nomic-256"),
        "{error}"
    );
    served.stop();

    // An ingest with another embedder than the one that made the vectors is refused,
    // naming the fix (and records nothing); `docent reindex` makes the switch the bot asked
    // for, and later ingests extend it with the new embedder.
    let why = refused(&ingest(data.path(), "plain", &["--embedder", "nomic-512"]));
    assert!(why.contains("docent reindex --bot plain"), "{why}");
    assert_eq!(
        recorded(data.path(), "plain").0,
        Some(EmbedderChoice::Nomic(NomicWidth::Full))
    );
    let summary: Value = serde_json::from_str(&ok(&docent(
        data.path(),
        &["reindex", "--bot", "plain", "--json"],
    )))
    .unwrap();
    assert_eq!(
        summary["from"], "all-MiniLM-L6-v2 (384 dimensions)",
        "{summary}"
    );
    assert_eq!(
        summary["to"], "nomic-embed-text-v1.5 (768 dimensions)",
        "{summary}"
    );
    let full = EmbedderChoice::Nomic(NomicWidth::Full);
    assert_eq!(
        recorded(data.path(), "plain"),
        (Some(full), Some(full.id()))
    );
    let (_, vector) = stored(data.path(), "plain", returns);
    assert_eq!(vector.len(), 768);
    let summary: Value = serde_json::from_str(&ok(&ingest(data.path(), "plain", &[]))).unwrap();
    assert_eq!(
        summary["chunks"], 0,
        "an unchanged site embeds nothing: {summary}"
    );
    let asked: Value = serde_json::from_str(&ok(&docent(
        data.path(),
        &["ask", "--bot", "plain", "--json", QUESTION],
    )))
    .unwrap();
    assert!(
        asked["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["url"] == returns),
        "{asked}"
    );
}

#[test]
fn a_node_offers_only_the_embedders_it_can_run() {
    // A models folder with MiniLM but without nomic's GGUF.
    let models = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        models_dir().join("all-MiniLM-L6-v2"),
        models.path().join("all-MiniLM-L6-v2"),
    )
    .unwrap();
    let local = LocalModels {
        models_dir: models.path().to_path_buf(),
        threads: 1,
    };
    let embedders = Embedders::local(local.clone(), EmbedderChoice::MiniLm).unwrap();
    assert!(embedders.offers(EmbedderChoice::MiniLm).is_ok());
    let why = embedders
        .offers(EmbedderChoice::Nomic(NomicWidth::D512))
        .unwrap_err();
    assert!(why.contains("make models-nomic"), "{why}");
    // A node whose default cannot load does not start.
    let error = Embedders::local(local, EmbedderChoice::Nomic(NomicWidth::Full))
        .err()
        .expect("nomic is missing");
    assert!(
        format!("{error:#}").contains("make models-nomic"),
        "{error:#}"
    );
    // A node embedding on one engine serves every bot with it: no bot may choose.
    let fixed = Embedders::fixed(dyn_embedder());
    let why = fixed.offers(EmbedderChoice::MiniLm).unwrap_err();
    assert!(why.contains("--embed-url"), "{why}");
}
