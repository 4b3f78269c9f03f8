//! Embeddings on a real remote engine: llama.cpp's `llama-server --embeddings` serving
//! all-MiniLM-L6-v2 as a GGUF on loopback, reached through docent's OpenAI-compatible
//! embedder; bots remembering which embedder made their vectors; `docent reindex`.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use docent::domain::{BotId, EmbedderId};
use docent::embed::{Embedder, Embedding, Tokenizer, WordPiece};
use docent::remote::{EmbedConfig, PoolConfig, RemoteEmbedder};
use docent::server::Limits;
use serde_json::{Value, json};

use crate::helpers::{embedder, fixture, generator, models_dir};
use crate::remote::Engine;
use crate::server::{Served, assert_error, serve, start};

fn remote_embedder(url: &str, batch: usize) -> Arc<RemoteEmbedder> {
    let tokenizer: Arc<dyn Tokenizer> =
        Arc::new(WordPiece::load(&models_dir().join("all-MiniLM-L6-v2")).unwrap());
    let config = EmbedConfig {
        engines: PoolConfig {
            urls: vec![url.parse().unwrap()],
            model: None,
            api_key: None,
            timeout: Duration::from_secs(30),
            concurrency: 2,
        },
        batch,
    };
    Arc::new(RemoteEmbedder::new(config, tokenizer).unwrap())
}

fn remote_embedding(url: &str) -> Embedding {
    let tokenizer: Arc<dyn Tokenizer> =
        Arc::new(WordPiece::load(&models_dir().join("all-MiniLM-L6-v2")).unwrap());
    Embedding {
        embedder: remote_embedder(url, 16),
        tokenizer,
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `docent` on the command line over `data`, with the small chat model in-process.
pub(crate) fn docent(data: &std::path::Path, args: &[&str]) -> Output {
    crate::crash::docent(data)
        .args(["--model", "small"])
        .args(args)
        .output()
        .unwrap()
}

pub(crate) fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub(crate) fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_embedding_engine_gives_minilms_vectors_in_batches() {
    let engine = tokio::task::spawn_blocking(Engine::embeddings)
        .await
        .unwrap();
    // Seven texts in batches of three: three requests, answers put back in input order.
    let remote = remote_embedder(&engine.url(), 3);
    let long = "Descaling keeps the kettle quiet and fast. ".repeat(80);
    let texts: Vec<String> = [
        "Kettles may be returned within 45 days of delivery.",
        "The Zephyr Pro has a two-year warranty.",
        "How do I descale my kettle?",
        "Ship to Canada",
        "señor café: ünïcode survives",
        "a",
        long.as_str(),
    ]
    .map(String::from)
    .to_vec();
    let n = texts.len();
    let (r, local) = (remote.clone(), embedder());
    let (remote_vectors, local_vectors, id) = tokio::task::spawn_blocking(move || {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        (
            r.embed(&texts).unwrap(),
            local.embed(&texts).unwrap(),
            r.id().unwrap(),
        )
    })
    .await
    .unwrap();
    // The engine learned the model's name from /v1/models and the length from its vectors.
    assert_eq!(id, EmbedderId::new("minilm-gguf", 384));
    assert_eq!(remote_vectors.len(), n);
    for (i, (a, b)) in remote_vectors.iter().zip(&local_vectors).enumerate() {
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "text {i}: norm {norm}");
        // The same model, cut at the same 256 tokens: the same vector, up to float error.
        let similarity = cosine(a, b);
        assert!(similarity > 0.999, "text {i}: cosine {similarity}");
    }
    // Unrelated texts stay apart: the vectors are not all alike.
    assert!(cosine(&remote_vectors[0], &remote_vectors[4]) < 0.5);
    let metrics = remote.counts();
    assert_eq!(
        metrics.0,
        3 + 1,
        "three batches and the id's probe: {metrics:?}"
    );
    assert!(metrics.1.iter().all(|(_, n)| *n == 0), "{metrics:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bots_answer_through_the_embedding_engine_and_refuse_another_embedder_until_reindexed() {
    let mut engine = tokio::task::spawn_blocking(Engine::embeddings)
        .await
        .unwrap();
    // Ingested and asked through the engine: the returns page answers, with its citation.
    let s = start(
        remote_embedding(&engine.url()),
        generator(),
        Limits::default(),
        0.3,
    )
    .await;
    let question =
        json!({"bot_id": "zephyr", "message": "How many days do I have to return a kettle?"});
    let (status, _, answer) = s
        .call("POST", "/v1/chat", Some(&s.admin), Some(question.clone()))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["answered"], true, "{answer}");
    assert!(
        answer["sources"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/returns.html"),
        "{answer}"
    );
    let bot = s
        .state
        .store
        .get_bot(&BotId::parse("zephyr").unwrap())
        .unwrap();
    assert_eq!(bot.embedder, Some(EmbedderId::new("minilm-gguf", 384)));

    // The same store searched with in-process MiniLM: 409 embedder_mismatch naming the
    // command that fixes it, and nothing stored.
    let local = serve(
        Served {
            store: s.state.store.clone(),
            admin: s.admin.clone(),
            embedding: crate::helpers::dyn_embedder(),
            generator: generator(),
        },
        tempfile::tempdir().unwrap(),
        Limits::default(),
        0.3,
    );
    let refused = local
        .call(
            "POST",
            "/v1/chat",
            Some(&local.admin),
            Some(question.clone()),
        )
        .await;
    assert_error(&refused, 409, "embedder_mismatch");
    let message = refused.2["error"]["message"].as_str().unwrap();
    assert!(message.contains("docent reindex --bot zephyr"), "{message}");
    assert!(
        message.contains("minilm-gguf (384 dimensions)"),
        "{message}"
    );
    // A crawl asked of it over the API is refused at once too, not queued to fail.
    let crawl = local
        .call(
            "POST",
            "/v1/bots/zephyr/sources",
            Some(&local.admin),
            Some(json!({"url": "https://help.example/"})),
        )
        .await;
    assert_error(&crawl, 409, "embedder_mismatch");
    let (_, _, listed) = local
        .call(
            "GET",
            "/v1/conversations?bot_id=zephyr",
            Some(&local.admin),
            None,
        )
        .await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1), "{listed}");

    // The engine down: 503 embedder_unavailable with Retry-After, and /readyz says why.
    engine.kill();
    let down = s
        .call(
            "POST",
            "/v1/chat",
            Some(&s.admin),
            Some(json!({"bot_id": "zephyr", "message": "Is there a warranty?"})),
        )
        .await;
    assert_error(&down, 503, "embedder_unavailable");
    assert_eq!(down.1["retry-after"], "5");
    let (status, _, ready) = s.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "embedder_unavailable", "{ready}");
}

#[tokio::test(flavor = "multi_thread")]
async fn docent_reindex_re_embeds_stored_chunks_with_the_configured_embedder() {
    let engine = tokio::task::spawn_blocking(Engine::embeddings)
        .await
        .unwrap();
    let url = engine.url();
    let data = tempfile::tempdir().unwrap();
    let site = fixture("site");
    let site = site.to_str().unwrap();
    let ingest = [
        "ingest",
        site,
        "--bot",
        "zephyr",
        "--base-url",
        "https://help.example/",
    ];
    let question = "How many days do I have to return a kettle?";
    let ask = ["ask", "--bot", "zephyr", "--json", question];

    // Crawled and asked with the engine's embeddings.
    ok(&docent(
        data.path(),
        &[&["--embed-url", &url], &ingest[..]].concat(),
    ));
    let asked: Value = serde_json::from_str(&ok(&docent(
        data.path(),
        &[&["--embed-url", &url], &ask[..]].concat(),
    )))
    .unwrap();
    assert_eq!(asked["answered"], true, "{asked}");

    // In-process MiniLM may neither search nor re-crawl the bot: both name the fix.
    for args in [&ask[..], &ingest[..]] {
        let why = refused(&docent(data.path(), args));
        assert!(why.contains("docent reindex --bot zephyr"), "{why}");
    }
    let before = stored_vectors(data.path());

    // Re-embedded in place: the same chunks (same pages, same texts), new vectors, the new
    // embedder recorded; the old vectors and chunks are gone.
    let summary: Value = serde_json::from_str(&ok(&docent(
        data.path(),
        &["reindex", "--bot", "zephyr", "--json"],
    )))
    .unwrap();
    assert_eq!(summary["from"], "minilm-gguf (384 dimensions)", "{summary}");
    assert_eq!(
        summary["to"], "all-MiniLM-L6-v2 (384 dimensions)",
        "{summary}"
    );
    let after = stored_vectors(data.path());
    assert_eq!(summary["chunks"].as_u64().unwrap() as usize, before.len());
    assert_eq!(after.len(), before.len());
    // Every chunk was written anew (new ids), and the old ones are gone with their vectors.
    let old_ids: Vec<u64> = before.iter().map(|(id, _, _)| *id).collect();
    let new_ids: Vec<u64> = after.iter().map(|(id, _, _)| *id).collect();
    assert!(
        old_ids.iter().all(|id| !new_ids.contains(id)),
        "{old_ids:?} {new_ids:?}"
    );
    let store = crate::helpers::open_store(data.path());
    for id in &old_ids {
        assert!(store.chunks(&[*id]).is_err(), "chunk {id} is still there");
        assert!(
            store.vectors_of(&[*id]).is_err(),
            "vector {id} is still there"
        );
    }
    drop(store);
    let texts =
        |v: &[(u64, String, Vec<f32>)]| v.iter().map(|(_, t, _)| t.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&after), texts(&before));
    let local = embedder();
    for ((_, text, new), (_, _, old)) in after.iter().zip(&before) {
        let expected = local.embed(&[text.as_str()]).unwrap().pop().unwrap();
        assert!(cosine(new, &expected) > 0.99999, "{text:?}");
        assert!(cosine(old, &expected) > 0.999, "{text:?}");
    }
    let store = crate::helpers::open_store(data.path());
    assert_eq!(store.staged_chunks().unwrap(), 0);
    drop(store);

    // Now in-process answers, and the engine is the one refused.
    let asked: Value = serde_json::from_str(&ok(&docent(data.path(), &ask))).unwrap();
    assert_eq!(asked["answered"], true, "{asked}");
    assert!(asked["answer"].as_str().unwrap().contains("45"), "{asked}");
    let why = refused(&docent(
        data.path(),
        &[&["--embed-url", &url], &ask[..]].concat(),
    ));
    assert!(why.contains("docent reindex --bot zephyr"), "{why}");
    // A bot that does not exist is a clear error, not a crash.
    let why = refused(&docent(data.path(), &["reindex", "--bot", "nobody"]));
    assert!(why.contains("nobody"), "{why}");
}

/// Every stored chunk's id, embedded text and vector, in page and chunk order.
fn stored_vectors(data: &std::path::Path) -> Vec<(u64, String, Vec<f32>)> {
    let store = crate::helpers::open_store(data);
    let bot = BotId::parse("zephyr").unwrap();
    let mut pages = store.pages(&bot).unwrap();
    pages.sort_by(|a, b| a.url.cmp(&b.url));
    let ids: Vec<u64> = pages.iter().flat_map(|p| p.chunk_ids.clone()).collect();
    let chunks = store.chunks(&ids).unwrap();
    let vectors = store.vectors_of(&ids).unwrap();
    ids.into_iter()
        .zip(chunks.iter().map(|c| c.embedding_text()))
        .zip(vectors)
        .map(|((id, text), vector)| (id, text, vector))
        .collect()
}
