//! `docent bench --only serve`: the API measured from outside, over loopback, against a
//! real `docent serve` process on the bundled demo site.
//!
//! Each number sits beside a reference from the same run: start-up to `/readyz` against
//! loading the same models in-process; `/healthz` against a bare actix handler (no
//! middleware, no auth); a cached answer against `/healthz`; concurrent streams against one
//! stream alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use indicatif::ProgressBar;
use serde_json::{Value, json};

use super::{ratio, round1};
use crate::config::Config;
use crate::domain::BotId;
use crate::embed::MiniLm;
use crate::ingest::{self, IngestRequest, Source, chunk::ChunkSpec, crawl::CrawlOptions};
use crate::keys::{self, KeyEnv, KeyKind, KeyScope};
use crate::llm::{LlamaConfig, LlamaGenerator};
use crate::store::Store;

const QUESTIONS: &[&str] = &[
    "How many days do I have to return a kettle?",
    "How long does standard shipping take?",
    "How long is the warranty on the Zephyr Pro?",
    "How do I descale my kettle?",
    "What does error code E42 mean?",
    "Do you ship internationally?",
    "What is the capacity of the Zephyr 3000?",
    "How do I contact support?",
    "Is the kettle safe to leave on?",
    "Who pays for return shipping?",
    "What does the warranty not cover?",
    "How should I clean the outside of my kettle?",
    "What power does the Zephyr Pro use?",
    "Can I get a refund without the box?",
    "How do I track my order?",
    "What is the Zephyr 3000 warranty?",
];

/// The bundled demo site, found from the working directory or the binary's repository.
fn demo_site() -> Option<PathBuf> {
    let local = PathBuf::from("tests/fixtures/site");
    if local.is_dir() {
        return Some(local);
    }
    let exe = std::env::current_exe().ok()?;
    let repo = exe.parent()?.parent()?.parent()?;
    Some(repo.join("tests/fixtures/site")).filter(|p| p.is_dir())
}

pub async fn bench_serve(
    config: &Config,
    embedder: Arc<MiniLm>,
    quick: bool,
) -> anyhow::Result<Value> {
    let site = demo_site().context("the bundled demo site (tests/fixtures/site) is missing")?;
    let data = std::env::temp_dir().join(format!("docent-bench-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let key = prepare_data(&data, &site, embedder).await?;

    // Reference: loading the models in this process.
    let started = Instant::now();
    let (c, dir, threads) = (config.clone(), config.embedder_dir(), config.threads);
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let _embedder = MiniLm::load(&dir)?.with_threads(threads);
        let _generator = LlamaGenerator::start(LlamaConfig {
            model_path: c.model_path.clone(),
            threads: c.threads,
            context_size: c.context_size,
        })?;
        Ok(())
    })
    .await??;
    let load_s = started.elapsed().as_secs_f64();

    let server = Server::spawn(config, &data)?;
    let client = {
        crate::ingest::crawl::install_tls_provider();
        reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?
    };
    let startup_s = server.wait_ready(&client).await?;
    let seconds = if quick { 2.0 } else { 5.0 };
    let concurrency = 16;

    let bare = bare_server()?;
    let bare_load = hammer(
        &client,
        &format!("{}/", bare.0),
        None,
        None,
        concurrency,
        seconds,
    )
    .await;
    let _ = bare.1.stop(false).await;
    let health = hammer(
        &client,
        &server.url("/healthz"),
        None,
        None,
        concurrency,
        seconds,
    )
    .await;

    let question = json!({"bot_id": "demo", "message": QUESTIONS[0]});
    let warm = client
        .post(server.url("/v1/chat"))
        .bearer_auth(&key)
        .json(&question)
        .send()
        .await?;
    anyhow::ensure!(warm.status().is_success(), "chat failed: {}", warm.status());
    let cached = hammer(
        &client,
        &server.url("/v1/chat"),
        Some(&key),
        Some(&question),
        concurrency,
        seconds,
    )
    .await;

    let levels: &[usize] = if quick { &[1, 4] } else { &[1, 4, 16] };
    let mut streams = serde_json::Map::new();
    let mut single_tok_s = 0.0;
    let mut offset = 1;
    for &n in levels {
        let questions: Vec<&str> = (0..n)
            .map(|i| QUESTIONS[(offset + i) % QUESTIONS.len()])
            .collect();
        offset += n;
        let result = concurrent_streams(&client, &server, &key, &questions).await?;
        if n == 1 {
            single_tok_s = result["aggregate_tokens_per_s"].as_f64().unwrap_or(0.0);
        }
        let mut result = result;
        result["aggregate_vs_one_stream"] = json!(ratio(
            result["aggregate_tokens_per_s"].as_f64().unwrap_or(0.0),
            single_tok_s
        ));
        streams.insert(n.to_string(), result);
    }
    let rss = server.peak_rss_mib();
    server.stop();
    let _ = std::fs::remove_dir_all(&data);
    Ok(json!({
        "startup_to_ready_s": round1(startup_s),
        "reference_model_load_in_process_s": round1(load_s),
        "startup_vs_reference": ratio(startup_s, load_s),
        "healthz": health,
        "reference_bare_actix": bare_load,
        "healthz_vs_bare": ratio(health["requests_per_s"].as_f64().unwrap_or(0.0), bare_load["requests_per_s"].as_f64().unwrap_or(0.0)),
        "cached_answer": cached,
        "cached_vs_healthz": ratio(cached["requests_per_s"].as_f64().unwrap_or(0.0), health["requests_per_s"].as_f64().unwrap_or(0.0)),
        "streams": streams,
        "server_peak_rss_mib": rss,
        "concurrency": concurrency,
        "note": "one model context: concurrent streams queue for it (no --parallel batching yet)",
    }))
}

/// Ingests the demo site as bot `demo` and makes an admin key; returns the key.
async fn prepare_data(data: &Path, site: &Path, embedder: Arc<MiniLm>) -> anyhow::Result<String> {
    let store = Store::open(data)?;
    let request = IngestRequest {
        bot: BotId::parse("demo").map_err(anyhow::Error::msg)?,
        name: None,
        source: Source::Folder {
            root: site.to_path_buf(),
            base_url: Some(url::Url::parse("https://help.example/")?),
        },
        crawl: CrawlOptions::default(),
        chunk: ChunkSpec::default(),
        test: false,
    };
    ingest::run(&store, embedder, request, &ProgressBar::hidden()).await?;
    let (key, record) = keys::generate(
        KeyKind::Secret,
        KeyEnv::Live,
        KeyScope::Admin,
        Vec::new(),
        Some("bench".into()),
        crate::telemetry::unix_now(),
    )?;
    store.put_key(&record)?;
    Ok(key)
}

struct Server {
    child: std::process::Child,
    base: String,
    started: Instant,
}

impl Server {
    fn spawn(config: &Config, data: &Path) -> anyhow::Result<Server> {
        use std::io::{BufRead, BufReader};
        let started = Instant::now();
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg("--data-dir")
            .arg(data)
            .arg("--models-dir")
            .arg(&config.models_dir)
            .arg("--model")
            .arg(&config.model_path)
            .arg("--threads")
            .arg(config.threads.to_string())
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--rate-limit-key",
                "0",
                "--rate-limit-ip",
                "0",
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("failed to start docent serve")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let base = loop {
            let line = lines
                .next()
                .context("docent serve exited before listening")??;
            if let Some(rest) = line.strip_prefix("docent listening on ") {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            base,
            started,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn wait_ready(&self, client: &reqwest::Client) -> anyhow::Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(res) = client.get(self.url("/readyz")).send().await
                && res.status().is_success()
            {
                return Ok(self.started.elapsed().as_secs_f64());
            }
            anyhow::ensure!(Instant::now() < deadline, "docent serve never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn peak_rss_mib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / 1024)
    }

    fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

/// A bare actix server answering `ok` at `/`, on its own thread.
fn bare_server() -> anyhow::Result<(String, actix_web::dev::ServerHandle)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(|| {
                actix_web::App::new().route(
                    "/",
                    actix_web::web::get().to(|| async {
                        actix_web::HttpResponse::Ok().json(json!({"status": "ok"}))
                    }),
                )
            })
            .workers(2)
            .listen(listener)
            .expect("listen")
            .run();
            let _ = tx.send(server.handle());
            let _ = server.await;
        })
    });
    Ok((base, rx.recv()?))
}

/// `concurrency` loops sending one request after another for `seconds`.
async fn hammer(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: Option<&Value>,
    concurrency: usize,
    seconds: f64,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            let (key, body) = (key.map(str::to_string), body.cloned());
            tokio::spawn(async move {
                let mut times = Vec::new();
                let mut errors = 0usize;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let mut req = match &body {
                        Some(b) => client.post(&url).json(b),
                        None => client.get(&url),
                    };
                    if let Some(key) = &key {
                        req = req.bearer_auth(key);
                    }
                    match req.send().await {
                        Ok(res) if res.status().is_success() => {
                            let _ = res.bytes().await;
                            times.push(t.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (times, errors)
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((t, e)) = task.await {
            times.extend(t);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (p50, p99) = if times.is_empty() {
        (0.0, 0.0)
    } else {
        super::percentiles(&mut times)
    };
    json!({
        "requests_per_s": round1(times.len() as f64 / elapsed),
        "p50_ms": (p50 * 100.0).round() / 100.0,
        "p99_ms": (p99 * 100.0).round() / 100.0,
        "requests": times.len(),
        "errors": errors,
    })
}

/// Streams `questions` at once; per stream the time to the first token and the tokens
/// generated, then the aggregate rate.
async fn concurrent_streams(
    client: &reqwest::Client,
    server: &Server,
    key: &str,
    questions: &[&str],
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let tasks: Vec<_> = questions
        .iter()
        .map(|q| {
            let (client, url, key) = (client.clone(), server.url("/v1/chat"), key.to_string());
            let body = json!({"bot_id": "demo", "message": q, "stream": true});
            tokio::spawn(async move {
                let t = Instant::now();
                let res = client.post(url).bearer_auth(key).json(&body).send().await?;
                anyhow::ensure!(
                    res.status().is_success(),
                    "stream refused: {}",
                    res.status()
                );
                let mut stream = res.bytes_stream();
                let mut buffer = String::new();
                let (mut ttft, mut tokens) = (None, 0u64);
                while let Some(chunk) = stream.next().await {
                    buffer.push_str(&String::from_utf8_lossy(&chunk?));
                    while let Some(end) = buffer.find("\n\n") {
                        let event: String = buffer.drain(..end + 2).collect();
                        let Some(data) = event.trim().strip_prefix("data: ") else {
                            continue;
                        };
                        let value: Value = serde_json::from_str(data).unwrap_or_default();
                        if value.get("delta").is_some() && ttft.is_none() {
                            ttft = Some(t.elapsed());
                        }
                        if value["event"] == "done" {
                            tokens = value["usage"]["completion_tokens"].as_u64().unwrap_or(0);
                        }
                    }
                }
                Ok::<_, anyhow::Error>((ttft.unwrap_or_else(|| t.elapsed()), tokens))
            })
        })
        .collect();
    let mut ttfts = Vec::new();
    let mut tokens = 0;
    for task in tasks {
        let (ttft, n) = task.await??;
        ttfts.push(ttft);
        tokens += n;
    }
    let wall = started.elapsed().as_secs_f64();
    ttfts.sort();
    let p95 = ttfts[((ttfts.len() as f64 - 1.0) * 0.95).round() as usize].as_secs_f64();
    Ok(json!({
        "streams": questions.len(),
        "aggregate_tokens_per_s": round1(tokens as f64 / wall),
        "ttft_p95_s": round1(p95),
        "ttft_first_s": round1(ttfts[0].as_secs_f64()),
        "completion_tokens": tokens,
        "wall_s": round1(wall),
    }))
}
