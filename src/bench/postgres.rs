//! `docent bench --only postgres`: the PostgreSQL store beside redb on this machine, in
//! one run, on a throwaway server (`pg::local`, fsync on): chat-turn commits and the
//! webhook outbox (written, then drained) on both stores; vector search at 100k chunks,
//! pgvector's HNSW against the in-process HNSW, both against exact search; and hybrid
//! retrieval quality on nq_conflicts with the very same chunks and vectors in both stores
//! (copied with `Import`, as `docent migrate-store` copies them).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::{fifty_token_sentences, percentiles, ratio, round1, round3, synthetic_vectors};
use crate::config::Config;
use crate::domain::{Bot, BotId, Chunk, Message, Page, Role};
use crate::embed::{Embedder, MiniLm};
use crate::index::{VectorIndex, exact_search, recall_at_k};
use crate::pg::PgStore;
use crate::pg::local::{LocalServer, Settings};
use crate::ports::{
    Attempt, ContentStore, Import, IngestCommit, NewEvent, Outcome, Search, Storage, TurnExtras,
};
use crate::retrieval::Mode;

/// Concurrent writers in the second commit measurement (a node's chat turns land at once).
const WRITERS: usize = 8;

pub async fn bench_postgres(
    config: &Config,
    embedder: Arc<MiniLm>,
    pg_bin: &Path,
    nq: Option<&Path>,
    quick: bool,
) -> anyhow::Result<Value> {
    let settings = Settings {
        max_connections: 100,
        fsync: true,
    };
    let server = Arc::new(LocalServer::start(pg_bin, settings)?);
    let mut out = serde_json::Map::new();
    let (s, e) = (server.clone(), embedder.clone());
    let measured = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(&str, Value)>> {
        Ok(vec![
            ("turn_commits", commits(&s, quick)?),
            ("outbox", outbox(&s, quick)?),
            ("search", search(&s, &e, quick)?),
        ])
    })
    .await??;
    for (name, value) in measured {
        out.insert(name.into(), value);
    }
    match nq {
        Some(corpus) => {
            let value = hybrid_quality(config, &server, corpus, quick).await?;
            out.insert("nq_conflicts_hybrid".into(), value);
        }
        None => eprintln!("skipping nq_conflicts: no ../shared/eval/nq_conflicts/beir"),
    }
    Ok(Value::Object(out))
}

/// A redb store (and the temp dir it lives in), and a PostgreSQL one.
type BothStores = (tempfile::TempDir, Arc<dyn Storage>, Arc<dyn Storage>);

/// A redb store in a temp dir, and a PostgreSQL one in a new database named `name`.
fn both_stores(server: &LocalServer, name: &str) -> anyhow::Result<BothStores> {
    let dir = tempfile::tempdir()?;
    let redb = crate::store::open(dir.path())?;
    let pg: Arc<dyn Storage> = Arc::new(PgStore::open(&server.database(name)?, None)?);
    Ok((dir, redb, pg))
}

fn bench_bot(id: &str) -> anyhow::Result<Bot> {
    Ok(Bot::new(BotId::parse(id).map_err(anyhow::Error::msg)?, 0))
}

/// Chat turns (a question and its answer in a new conversation, with the events the
/// store adds) committed one after another, then by `WRITERS` threads at once.
fn commits(server: &LocalServer, quick: bool) -> anyhow::Result<Value> {
    let n = if quick { 200 } else { 1000 };
    let (_dir, redb, pg) = both_stores(server, "bench_turns")?;
    let mut out = serde_json::Map::new();
    for (store, name) in [(&redb, "redb"), (&pg, "postgres")] {
        store.create_bot(&bench_bot("bench")?)?;
        let one = turns_per_s(store, n, 1)?;
        let many = turns_per_s(store, n, WRITERS)?;
        out.insert(
            name.into(),
            json!({"turns_per_s": round1(one), "turns_per_s_8_writers": round1(many)}),
        );
    }
    let per_s = |store: &str, key: &str| out[store][key].as_f64().unwrap_or(0.0);
    out.insert(
        "postgres_vs_redb".into(),
        json!({
            "one_writer": ratio(per_s("postgres", "turns_per_s"), per_s("redb", "turns_per_s")),
            "8_writers": ratio(
                per_s("postgres", "turns_per_s_8_writers"),
                per_s("redb", "turns_per_s_8_writers")
            ),
        }),
    );
    out.insert("turns".into(), json!(n));
    Ok(Value::Object(out))
}

/// `n` turns split over `writers` threads: turns a second.
fn turns_per_s(store: &Arc<dyn Storage>, n: usize, writers: usize) -> anyhow::Result<f64> {
    let bot = BotId::parse("bench").map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (store, bot) = (store.clone(), bot.clone());
                scope.spawn(move || -> anyhow::Result<()> {
                    for i in (w..n).step_by(writers) {
                        one_turn(store.as_ref(), &bot, i)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok(())
    })?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn one_turn(store: &dyn Storage, bot: &BotId, i: usize) -> anyhow::Result<()> {
    let conversation = crate::server::api::new_conversation(bot, None, "key_bench");
    let now = crate::telemetry::unix_now();
    let question = Message {
        id: crate::ids::message(),
        role: Role::User,
        content: format!("How long is the warranty on kettle number {i}?"),
        created: now,
        ..Message::default()
    };
    let answer = Message {
        id: crate::ids::message(),
        role: Role::Assistant,
        content: "Every Zephyr kettle comes with a two-year warranty. [1]".into(),
        created: now,
        answered: Some(true),
        finish_reason: Some("stop".into()),
        ..Message::default()
    };
    let extras = TurnExtras {
        started_ms: Some(crate::ids::now_ms()),
        ..TurnExtras::default()
    };
    store.append_turn(&conversation, &[question, answer], extras)?;
    Ok(())
}

/// `n` events written (one transaction each, each with a delivery to one webhook), then
/// every delivery claimed in batches of 64 and recorded delivered, as the delivery
/// worker does (without the HTTP in between).
fn outbox(server: &LocalServer, quick: bool) -> anyhow::Result<Value> {
    let n = if quick { 500 } else { 3000 };
    let (_dir, redb, pg) = both_stores(server, "bench_outbox")?;
    let mut out = serde_json::Map::new();
    for (store, name) in [(&redb, "redb"), (&pg, "postgres")] {
        let bot = bench_bot("bench")?;
        store.create_bot(&bot)?;
        let hook = super::webhooks::bench_webhook(bot.id.clone(), "http://127.0.0.1:9/hook".into());
        store.put_webhook(&hook)?;
        let started = Instant::now();
        for i in 0..n {
            let data = json!({"n": i, "question": "How long is the warranty?"});
            let event = NewEvent {
                kind: crate::events::LEAD_CAPTURED,
                data,
            };
            store.emit(&bot.id, event)?;
        }
        let write_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let drained = drain(store.as_ref())?;
        let drain_s = started.elapsed().as_secs_f64();
        anyhow::ensure!(drained == n, "{name}: drained {drained} of {n} deliveries");
        out.insert(
            name.into(),
            json!({
                "events_written_per_s": round1(n as f64 / write_s),
                "deliveries_recorded_per_s": round1(n as f64 / drain_s),
            }),
        );
    }
    let per_s = |store: &str, key: &str| out[store][key].as_f64().unwrap_or(0.0);
    let writes = ratio(
        per_s("postgres", "events_written_per_s"),
        per_s("redb", "events_written_per_s"),
    );
    let drains = ratio(
        per_s("postgres", "deliveries_recorded_per_s"),
        per_s("redb", "deliveries_recorded_per_s"),
    );
    out.insert(
        "postgres_vs_redb".into(),
        json!({"writes": writes, "deliveries": drains}),
    );
    out.insert("events".into(), json!(n));
    Ok(Value::Object(out))
}

/// Claims and records every due delivery; how many.
fn drain(store: &dyn Storage) -> anyhow::Result<usize> {
    let mut done = 0;
    loop {
        let now = crate::ids::now_ms();
        let due = store.due_deliveries(now, 64, &HashSet::new(), 70_000)?;
        if due.is_empty() {
            return Ok(done);
        }
        let attempts: Vec<_> = due
            .into_iter()
            .map(|d| {
                let attempt = Attempt {
                    at_ms: now,
                    status: Some(200),
                    error: None,
                    latency_ms: 1,
                };
                (d, attempt, Outcome::Delivered)
            })
            .collect();
        done += attempts.len();
        store.record_attempts(&attempts)?;
    }
}

/// Nearest neighbours among 100k chunk vectors (20k with `--quick`): pgvector's HNSW
/// index in PostgreSQL against docent's in-process HNSW, each against exact search.
fn search(server: &LocalServer, embedder: &MiniLm, quick: bool) -> anyhow::Result<Value> {
    let n = if quick { 20_000 } else { 100_000 };
    let base_sentences = fifty_token_sentences(if quick { 200 } else { 1000 });
    let refs: Vec<&str> = base_sentences.iter().map(String::as_str).collect();
    let base = embedder.embed(&refs)?;
    let vectors = synthetic_vectors(embedder, n, &base, n as u64);
    let queries = synthetic_vectors(embedder, if quick { 100 } else { 300 }, &base, 7);

    let pg = PgStore::open(&server.database("bench_search")?, None)?;
    let started = Instant::now();
    let ids = load_chunks(&pg, &vectors)?;
    let load_s = started.elapsed().as_secs_f64();
    let entries: Vec<(u64, Vec<f32>)> = ids.into_iter().zip(vectors).collect();
    let started = Instant::now();
    let index = VectorIndex::build(&entries);
    let build_s = started.elapsed().as_secs_f64();

    let bot = BotId::parse("bench").map_err(anyhow::Error::msg)?;
    let (mut in_process, mut in_pg) = (Vec::new(), Vec::new());
    let (mut recall_in_process, mut recall_pg) = (0.0, 0.0);
    for query in &queries {
        let exact = exact_search(&entries, query, 10);
        let t = Instant::now();
        let approx = index.search(query, 10);
        in_process.push(t.elapsed());
        recall_in_process += recall_at_k(&exact, &approx);
        let t = Instant::now();
        let found = pg.dense(&bot, query, 10)?;
        in_pg.push(t.elapsed());
        let found: Vec<crate::index::Hit> = found
            .into_iter()
            .map(|(chunk_id, score)| crate::index::Hit { chunk_id, score })
            .collect();
        recall_pg += recall_at_k(&exact, &found);
    }
    let q = queries.len() as f64;
    let (ip50, ip99) = percentiles(&mut in_process);
    let (pp50, pp99) = percentiles(&mut in_pg);
    Ok(json!({
        "chunks": n,
        "in_process": {"build_s": round1(build_s), "p50_ms": round3(ip50), "p99_ms": round3(ip99),
            "recall_at_10": round3(recall_in_process / q)},
        "postgres": {"load_s": round1(load_s), "p50_ms": round3(pp50), "p99_ms": round3(pp99),
            "recall_at_10": round3(recall_pg / q)},
        "postgres_p50_vs_in_process": ratio(pp50, ip50),
    }))
}

/// `vectors` as one bot's chunks, staged in batches and committed as one ingest (as a
/// crawl writes them; PostgreSQL maintains its HNSW index row by row): their ids.
fn load_chunks(pg: &PgStore, vectors: &[Vec<f32>]) -> anyhow::Result<Vec<u64>> {
    let bot = bench_bot("bench")?;
    pg.create_bot(&bot)?;
    let mut pages = Vec::new();
    let mut ids = Vec::with_capacity(vectors.len());
    for (p, batch) in vectors.chunks(500).enumerate() {
        let url = format!("https://bench.example/{p}");
        let staged: Vec<(Chunk, Vec<f32>)> = batch
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let chunk = Chunk {
                    bot: bot.id.clone(),
                    url: url.clone(),
                    title: format!("Page {p}"),
                    heading_path: Vec::new(),
                    text: format!("Passage {i} of page {p}."),
                };
                (chunk, v.clone())
            })
            .collect();
        let chunk_ids = pg.stage_chunks("bench-load", &staged)?;
        ids.extend(&chunk_ids);
        pages.push(Page {
            url: url.clone(),
            title: format!("Page {p}"),
            content_hash: format!("{p}"),
            body_hash: format!("{p}"),
            etag: None,
            last_modified: None,
            links: Vec::new(),
            chunk_ids,
            crawled: None,
            source: None,
        });
    }
    pg.commit_ingest(IngestCommit {
        ingest: "bench-load".into(),
        bot,
        bot_existed: true,
        upserts: pages,
        touched: Vec::new(),
        removed_urls: Vec::new(),
    })?;
    Ok(ids)
}

/// nq_conflicts: its corpus indexed in process (the eval's scratch bot, reused across
/// runs), copied into PostgreSQL whole, and the same queries searched hybrid on both.
async fn hybrid_quality(
    config: &Config,
    server: &LocalServer,
    corpus: &Path,
    quick: bool,
) -> anyhow::Result<Value> {
    let set = crate::eval::beir(config, corpus, true).await?;
    let queries = crate::eval::sample(set.queries, Some(if quick { 200 } else { 1000 }), 17);
    let url = server.database("bench_nq")?;
    let (source, bot) = (set.store.clone(), set.bot.clone());
    let embedding = set.embedding.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        let pg = PgStore::open(&url, None)?;
        let started = Instant::now();
        let export = source
            .export()
            .ok_or_else(|| anyhow::anyhow!("the scratch store cannot be read out"))?;
        let copied = pg.import(export)?;
        let copy_s = started.elapsed().as_secs_f64();
        let pg: Arc<dyn Storage> = Arc::new(pg);
        let bar = indicatif::ProgressBar::hidden();
        let mut scored = serde_json::Map::new();
        for (name, store) in [("in_process", set.store.clone()), ("postgres", pg)] {
            let mut modes = serde_json::Map::new();
            for mode in [Mode::Hybrid, Mode::Dense, Mode::Keyword] {
                let retriever =
                    crate::app::retriever(store.clone(), embedding.clone()).with_mode(mode);
                let started = Instant::now();
                let per_query = crate::eval::score_queries(&retriever, &bot, &queries, &bar)?;
                let ms = started.elapsed().as_secs_f64() * 1000.0 / queries.len() as f64;
                let mean =
                    |i: usize| per_query.iter().map(|m| m[i]).sum::<f64>() / queries.len() as f64;
                let value = json!({"ndcg_at_10": round3(mean(4)), "recall_at_10": round3(mean(2)),
                    "ms_per_query": round1(ms)});
                if mode == Mode::Hybrid {
                    modes.extend(value.as_object().cloned().unwrap_or_default());
                } else {
                    modes.insert(format!("{mode:?}").to_lowercase(), value);
                }
            }
            scored.insert(name.into(), Value::Object(modes));
        }
        let ndcg = |name: &str| scored[name]["ndcg_at_10"].as_f64().unwrap_or(0.0);
        let gap = round3(ndcg("postgres") - ndcg("in_process"));
        scored.insert("queries".into(), json!(queries.len()));
        scored.insert("postgres_minus_in_process_ndcg".into(), json!(gap));
        scored.insert("within_0_01".into(), json!(gap.abs() <= 0.01));
        scored.insert(
            "copied".into(),
            json!({"chunks": copied.get("chunks"), "seconds": round1(copy_s)}),
        );
        Ok(Value::Object(scored))
    })
    .await?
}
