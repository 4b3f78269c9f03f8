//! `docent bench --only webhooks`: how many events a second the delivery worker sends to a
//! receiver on loopback (against a plain HTTP client posting the same bodies), and whether
//! answers slow down while events are being written and delivered.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::{ratio, round1};
use crate::config::Config;
use crate::domain::BotId;
use crate::embed::MiniLm;
use crate::events::{self, DeliveryConfig};
use crate::llm::{LlamaConfig, LlamaGenerator};
use crate::ports::{NewEvent, OutboxStore, Webhook};
use crate::server::{self, Engine, Limits};

/// A receiver on loopback that answers 200 and counts what it got.
fn receiver() -> anyhow::Result<(String, Arc<AtomicUsize>, actix_web::dev::ServerHandle)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(move || {
                let counted = counted.clone();
                actix_web::App::new().default_service(actix_web::web::to(
                    move |_body: actix_web::web::Bytes| {
                        counted.fetch_add(1, Ordering::Relaxed);
                        async { actix_web::HttpResponse::Ok().finish() }
                    },
                ))
            })
            .workers(2)
            .listen(listener)
            .expect("listen")
            .run();
            let _ = tx.send(server.handle());
            let _ = server.await;
        })
    });
    Ok((url, count, rx.recv()?))
}

async fn wait_for(count: &AtomicUsize, n: usize, limit: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    while count.load(Ordering::Relaxed) < n {
        anyhow::ensure!(
            started.elapsed() < limit,
            "only {} of {n} deliveries arrived in {limit:?}",
            count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The reference: `n` POSTs of a delivery-sized body, 16 at a time, from one client.
async fn plain_posts(url: &str, n: usize, concurrency: usize) -> anyhow::Result<f64> {
    use futures::StreamExt;
    let client = reqwest::Client::new();
    let body = serde_json::to_vec(&json!({
        "id": "evt_0000000000000000000000000",
        "type": "lead.captured",
        "created": 1,
        "data": {"bot_id": "demo", "bench": 0},
    }))?;
    let started = Instant::now();
    let results: Vec<bool> = futures::stream::iter(0..n)
        .map(|_| {
            let request = client
                .post(url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    anyhow::ensure!(results.iter().all(|ok| *ok), "reference posts failed");
    Ok(started.elapsed().as_secs_f64())
}

fn emit(store: &dyn OutboxStore, bot: &BotId, i: usize) -> anyhow::Result<()> {
    store.emit(
        bot,
        NewEvent {
            kind: events::LEAD_CAPTURED,
            data: json!({"bot_id": bot, "bench": i}),
        },
    )?;
    Ok(())
}

/// Answers `questions` one after another over HTTP; milliseconds each.
async fn chat_latencies(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    questions: &[String],
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for question in questions {
        let started = Instant::now();
        let response = client
            .post(format!("{base}/v1/chat"))
            .bearer_auth(key)
            .json(&json!({"bot_id": "demo", "message": question}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "chat failed: {}",
            response.status()
        );
        response.bytes().await?;
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

pub async fn bench_webhooks(
    config: &Config,
    embedder: Arc<MiniLm>,
    quick: bool,
) -> anyhow::Result<Value> {
    let site = super::serve::demo_site()
        .context("the bundled demo site (tests/fixtures/site) is missing")?;
    let data = std::env::temp_dir().join(format!("docent-bench-hooks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let key = super::serve::prepare_data(&data, &site, embedder.clone()).await?;
    let result = run(config, &data, &key, embedder, quick).await;
    let _ = std::fs::remove_dir_all(&data);
    result
}

async fn run(
    config: &Config,
    data: &Path,
    key: &str,
    embedder: Arc<MiniLm>,
    quick: bool,
) -> anyhow::Result<Value> {
    crate::ingest::crawl::install_tls_provider();
    let store = crate::store::open(data)?;
    let bot = BotId::parse("demo").map_err(anyhow::Error::msg)?;
    let (url, received, handle) = receiver()?;
    store.put_webhook(&bench_webhook(bot.clone(), url.clone()))?;
    let delivery = DeliveryConfig {
        allow_private_targets: true,
        ..DeliveryConfig::default()
    };

    // 1. Throughput: a backlog of n events, written one transaction each, then drained.
    let n = if quick { 500 } else { 3000 };
    let written = Instant::now();
    {
        let (store, bot) = (store.clone(), bot.clone());
        tokio::task::spawn_blocking(move || (0..n).try_for_each(|i| emit(store.as_ref(), &bot, i)))
            .await??;
    }
    let write_s = written.elapsed().as_secs_f64();
    events::start_worker(store.clone(), delivery.clone(), Default::default());
    let drain_s = wait_for(&received, n, Duration::from_secs(300)).await?;
    let reference_s = plain_posts(&url, n, delivery.concurrency).await?;
    let events_per_s = n as f64 / drain_s;
    let reference_per_s = n as f64 / reference_s;

    // 2. Answer latency with the outbox idle, then with events written and delivered at
    // 20 a second (a chat causes one to three events; two cores answer well under one chat
    // a second).
    let generator = {
        let c = config.clone();
        tokio::task::spawn_blocking(move || {
            LlamaGenerator::start(LlamaConfig {
                model_path: c.model_path.clone(),
                threads: c.threads,
                context_size: c.context_size,
                parallel: 1,
            })
        })
        .await??
    };
    let limits = Limits {
        answer_cache_ttl: Duration::ZERO,
        parallel: 1,
        ..Limits::default()
    };
    let state = server::Launch {
        store: store.clone(),
        options: crate::chat::AskOptions::from_config(config),
        limits,
        engine: Some(Engine::new(
            store.clone(),
            crate::embed::Embedding::from(embedder),
            Arc::new(generator),
        )),
        deliveries: None,
    }
    .start()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = server::spawn(state, listener, 2)?;
    let client = reqwest::Client::new();
    let k = if quick { 3 } else { 6 };
    let questions = |wording: &str| -> Vec<String> {
        (0..k)
            .map(|i| {
                format!(
                    "{wording}{}",
                    super::serve::QUESTIONS[i % super::serve::QUESTIONS.len()]
                )
            })
            .collect()
    };
    // Warm-up: the rules' prefix is cached for both conditions alike.
    chat_latencies(&client, &base, key, &questions("Hi! ")[..1]).await?;
    // Each question is asked twice, once with events flowing and once without, in
    // alternating order (the second ask of a pair reuses the first one's cached prompt), with
    // wordings of equal length.
    let flowing = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let emitter = {
        let (store, bot, stop, flowing) =
            (store.clone(), bot.clone(), stop.clone(), flowing.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if flowing.load(Ordering::Relaxed) {
                    let _ = emit(store.as_ref(), &bot, i);
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            i
        })
    };
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    let mut busy_s = 0.0;
    let before = received.load(Ordering::Relaxed);
    for (i, question) in questions("").iter().enumerate() {
        let order = if i % 2 == 0 {
            [(true, "Please answer: "), (false, "Kindly answer: ")]
        } else {
            [(false, "Please answer: "), (true, "Kindly answer: ")]
        };
        for (with_events, wording) in order {
            flowing.store(with_events, Ordering::Relaxed);
            let started = Instant::now();
            let ms = chat_latencies(&client, &base, key, &[format!("{wording}{question}")]).await?;
            if with_events {
                busy.extend(ms);
                busy_s += started.elapsed().as_secs_f64();
            } else {
                idle.extend(ms);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let emitted = emitter
        .join()
        .map_err(|_| anyhow::anyhow!("emitter panicked"))?;
    // Every event written while chatting (and the chats' own) arrives.
    let _ = wait_for(&received, before + emitted, Duration::from_secs(120)).await?;
    let delivered_during = received.load(Ordering::Relaxed) - before;
    drop(server);
    handle.stop(false).await;
    let (idle_ms, busy_ms) = (median(&idle), median(&busy));
    Ok(json!({
        "events": n,
        "outbox_writes_per_s": round1(n as f64 / write_s),
        "delivered_events_per_s": round1(events_per_s),
        "reference_plain_posts_per_s": round1(reference_per_s),
        "delivery_vs_plain_posts": ratio(events_per_s, reference_per_s),
        "chat_ms_idle_outbox": idle.iter().map(|v| round1(*v)).collect::<Vec<_>>(),
        "chat_ms_while_delivering": busy.iter().map(|v| round1(*v)).collect::<Vec<_>>(),
        "events_written_per_s_while_chatting": round1(emitted as f64 / busy_s),
        "events_delivered_while_chatting": delivered_during,
        "chat_p50_busy_vs_idle": ratio(busy_ms, idle_ms),
        "concurrency": delivery.concurrency,
    }))
}

/// The bench's webhook: every event of `bot` to `url`.
pub(super) fn bench_webhook(bot: BotId, url: String) -> Webhook {
    Webhook {
        id: "whk_bench".into(),
        bot_id: bot,
        url,
        events: vec!["*".into()],
        secret: "whsec_bench".into(),
        previous_secret: None,
        previous_until: None,
        created: crate::telemetry::unix_now(),
    }
}
