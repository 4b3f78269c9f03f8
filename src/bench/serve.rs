//! `docent bench --only serve`: the API measured from outside, over loopback, against a
//! real `docent serve` process on the bundled demo site.
//!
//! Each number sits beside a reference from the same run: start-up to `/readyz` against
//! loading the same models in-process; `/healthz` against a bare actix handler (no
//! middleware, no auth) and a cached answer against `/healthz`, both driven by wrk when it
//! is installed (`apt install wrk`; otherwise by an in-process reqwest loop); concurrent
//! streams (`--parallel` sequences batched together) against one stream alone; and one
//! streamed answer's time to first token against decoding its prompt alone, in-process.

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
use crate::llm::{Generator, LlamaConfig, LlamaGenerator};

pub(super) const QUESTIONS: &[&str] = &[
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
pub(super) fn demo_site() -> Option<PathBuf> {
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
    let key = prepare_data(&data, &site, embedder.clone()).await?;

    // Reference: loading the models in this process (the generator stays, idle, for the
    // prompt-eval reference at the end).
    let started = Instant::now();
    let (c, dir, threads) = (config.clone(), config.embedder_dir(), config.threads);
    let reference = tokio::task::spawn_blocking(move || -> anyhow::Result<LlamaGenerator> {
        let _embedder = MiniLm::load(&dir)?.with_threads(threads);
        LlamaGenerator::start(LlamaConfig {
            model_path: c.model_path.clone(),
            threads: c.threads,
            context_size: c.context_size,
            parallel: c.parallel,
        })
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
    let bare_load = load(
        &client,
        &format!("{}/", bare.0),
        None,
        None,
        concurrency,
        seconds,
    )
    .await?;
    let _ = bare.1.stop(false).await;
    let health = load(
        &client,
        &server.url("/healthz"),
        None,
        None,
        concurrency,
        seconds,
    )
    .await?;

    let question = json!({"bot_id": "demo", "message": QUESTIONS[0]});
    let warm = client
        .post(server.url("/v1/chat"))
        .bearer_auth(&key)
        .json(&question)
        .send()
        .await?;
    anyhow::ensure!(warm.status().is_success(), "chat failed: {}", warm.status());
    let cached = load(
        &client,
        &server.url("/v1/chat"),
        Some(&key),
        Some(&question),
        concurrency,
        seconds,
    )
    .await?;

    let levels: &[usize] = if quick { &[1, 4] } else { &[1, 4, 16] };
    let mut streams = serde_json::Map::new();
    let mut single_tok_s = 0.0;
    let mut single_ttft_s = 0.0;
    // Each level words its questions its own way, so none is served from the answer cache
    // (the warm-up above cached QUESTIONS[0] as it is).
    let wordings = ["", "Please tell me: ", "Quick question: "];
    for (&n, wording) in levels.iter().zip(wordings) {
        let questions: Vec<String> = (0..n)
            .map(|i| format!("{wording}{}", QUESTIONS[(1 + i) % QUESTIONS.len()]))
            .collect();
        let questions: Vec<&str> = questions.iter().map(String::as_str).collect();
        let result = concurrent_streams(&client, &server, &key, &questions).await?;
        if n == 1 {
            single_tok_s = result["aggregate_tokens_per_s"].as_f64().unwrap_or(0.0);
            single_ttft_s = result["ttft_first_s"].as_f64().unwrap_or(0.0);
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
    // The one-stream question's prompt, rebuilt in-process as the server built it, decoded
    // cold with nothing else running: the time to first token cannot beat this much.
    let prompt_eval_s = prompt_eval_alone(config, &data, embedder, reference, QUESTIONS[1]).await?;
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
        "stream_ttft_s": round1(single_ttft_s),
        "prompt_eval_alone_s": round1(prompt_eval_s),
        "ttft_vs_prompt_eval": ratio(single_ttft_s, prompt_eval_s),
        "server_peak_rss_mib": rss,
        "concurrency": concurrency,
        "parallel": config.parallel,
        "context_size": config.context_size,
        "load_tool": if wrk_available() { "wrk" } else { "reqwest loop" },
    }))
}

/// Ingests the demo site as bot `demo` and makes an admin key; returns the key.
pub(super) async fn prepare_data(
    data: &Path,
    site: &Path,
    embedder: Arc<MiniLm>,
) -> anyhow::Result<String> {
    prepare_store(crate::store::open(data)?, site, embedder).await
}

/// `prepare_data` on any store (the cluster bench's PostgreSQL one).
pub(super) async fn prepare_store(
    store: Arc<dyn crate::ports::Storage>,
    site: &Path,
    embedder: Arc<MiniLm>,
) -> anyhow::Result<String> {
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
    ingest::run(store.clone(), embedder, request, &ProgressBar::hidden()).await?;
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

/// A `docent serve` process over a prepared data dir.
pub(super) struct Server {
    child: std::process::Child,
    base: String,
    started: Instant,
}

impl Server {
    fn spawn(config: &Config, data: &Path) -> anyhow::Result<Server> {
        Server::spawn_with(config, data, &[], &[])
    }

    /// `spawn` with more global flags (before `serve`) and serve flags (after it).
    pub(super) fn spawn_with(
        config: &Config,
        data: &Path,
        global: &[String],
        serve: &[String],
    ) -> anyhow::Result<Server> {
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
            .arg("--ctx-size")
            .arg(config.context_size.to_string())
            .arg("--parallel")
            .arg(config.parallel.to_string())
            .args(global)
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--rate-limit-key",
                "0",
                "--rate-limit-ip",
                "0",
            ])
            .args(serve)
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

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) async fn wait_ready(&self, client: &reqwest::Client) -> anyhow::Result<f64> {
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

    /// `127.0.0.1:PORT`, where the node listens (for a load balancer's backend list).
    pub(super) fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
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

    pub(super) fn stop(mut self) {
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

impl Drop for Server {
    /// A bench that fails half way does not leave its server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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

/// Decodes the prompt the server built for `question` (same retrieval, same settings) in a
/// cold sequence and returns the seconds to the first token.
async fn prompt_eval_alone(
    config: &Config,
    data: &Path,
    embedder: Arc<MiniLm>,
    generator: LlamaGenerator,
    question: &str,
) -> anyhow::Result<f64> {
    let (config, data, question) = (config.clone(), data.to_path_buf(), question.to_string());
    tokio::task::spawn_blocking(move || {
        let store = crate::store::open(&data)?;
        let retriever = crate::app::retriever(store, embedder);
        let recorder = Recorder::new(&generator);
        let mut options = crate::chat::AskOptions::from_config(&config);
        options.generation.max_tokens = 1;
        let bot = BotId::parse("demo").map_err(anyhow::Error::msg)?;
        crate::chat::answer(
            &retriever,
            &recorder,
            &bot,
            &question,
            &options,
            &mut |_| true,
        )?;
        let messages = recorder
            .prompt()
            .context("the question was not sent to the model")?;
        generator.forget_cache()?;
        let stats = generator.generate(&messages, &options.generation, &mut |_| true)?;
        Ok(stats.ttft_ms / 1000.0)
    })
    .await?
}

/// Keeps the prompt it is given instead of generating; counts tokens and sizes the context
/// as the generator it stands in for does.
pub(super) struct Recorder<'a> {
    inner: &'a dyn Generator,
    prompt: std::sync::Mutex<Option<Vec<crate::llm::ChatMessage>>>,
}

impl<'a> Recorder<'a> {
    pub(super) fn new(inner: &'a dyn Generator) -> Recorder<'a> {
        Recorder {
            inner,
            prompt: std::sync::Mutex::new(None),
        }
    }

    /// The messages the last question was answered from.
    pub(super) fn prompt(self) -> Option<Vec<crate::llm::ChatMessage>> {
        self.prompt.into_inner().expect("recorder lock")
    }
}

impl Generator for Recorder<'_> {
    fn generate(
        &self,
        messages: &[crate::llm::ChatMessage],
        _: &crate::llm::GenParams,
        _: &mut dyn FnMut(&str) -> bool,
    ) -> anyhow::Result<crate::llm::GenStats> {
        *self.prompt.lock().expect("recorder lock") = Some(messages.to_vec());
        Ok(crate::llm::GenStats {
            prompt_tokens: 0,
            completion_tokens: 0,
            ttft_ms: 0.0,
            total_ms: 0.0,
            finish: crate::llm::Finish::Stop,
        })
    }

    /// Always "answerable", so the question goes on to `generate` and its prompt is kept.
    fn classify(&self, _: &[crate::llm::ChatMessage], labels: &[&str]) -> anyhow::Result<Vec<f32>> {
        Ok((0..labels.len())
            .map(|i| if i == 0 { 1.0 } else { 0.0 })
            .collect())
    }

    fn count_tokens(&self, text: &str) -> anyhow::Result<usize> {
        self.inner.count_tokens(text)
    }

    fn context_size(&self) -> usize {
        self.inner.context_size()
    }
}

fn wrk_available() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok()
}

/// Load from outside: wrk when installed (2 threads, `concurrency` connections, latency
/// percentiles), else the in-process loop.
pub(super) async fn load(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: Option<&Value>,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<Value> {
    if !wrk_available() {
        return Ok(hammer(client, url, key, body, concurrency, seconds).await);
    }
    let script = std::env::temp_dir().join(format!("docent-wrk-{}.lua", std::process::id()));
    let mut lua = String::new();
    if let Some(body) = body {
        // Lua long brackets need no escaping as long as the body has no "]==]".
        lua.push_str(&format!(
            "wrk.method = \"POST\"\nwrk.body = [==[{body}]==]\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ));
    }
    if let Some(key) = key {
        lua.push_str(&format!(
            "wrk.headers[\"Authorization\"] = \"Bearer {key}\"\n"
        ));
    }
    std::fs::write(&script, lua)?;
    let mut command = std::process::Command::new("wrk");
    command
        .args(["-t2", &format!("-c{concurrency}")])
        .arg(format!("-d{}s", seconds.ceil() as u64))
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(url);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("failed to run wrk")?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    parse_wrk(&text).with_context(|| format!("unexpected wrk output: {text}"))
}

/// Requests/s, p50 and p99 (ms) and the error count from `wrk --latency` output.
fn parse_wrk(text: &str) -> Option<Value> {
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let ms = |raw: &str| -> Option<f64> {
        let split = raw.find(|c: char| c.is_ascii_alphabetic())?;
        let (number, unit) = raw.split_at(split);
        let number: f64 = number.parse().ok()?;
        Some(match unit {
            "us" => number / 1000.0,
            "ms" => number,
            "s" => number * 1000.0,
            "m" => number * 60_000.0,
            _ => return None,
        })
    };
    let rps: f64 = field("Requests/sec:")?.parse().ok()?;
    let p50 = ms(field("50%")?)?;
    let p99 = ms(field("99%")?)?;
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let non_2xx: u64 = field("Non-2xx or 3xx responses:").map_or(Some(0), |v| v.parse().ok())?;
    let socket_errors: u64 = field("Socket errors:").map_or(0, |v| {
        v.split(',')
            .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    });
    Some(json!({
        "requests_per_s": round1(rps),
        "p50_ms": (p50 * 100.0).round() / 100.0,
        "p99_ms": (p99 * 100.0).round() / 100.0,
        "requests": requests,
        "errors": non_2xx + socket_errors,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_latency_output_parses() {
        let text = "Running 2s test @ http://127.0.0.1:1/healthz
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   261.94us  120.19us   3.88ms   82.05%
    Req/Sec    29.30k     1.87k   33.11k    70.00%
  Latency Distribution
     50%  240.00us
     75%  300.00us
     90%  400.00us
     99%    1.20ms
  116631 requests in 2.00s, 11.01MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  58299.69
Transfer/sec:      5.50MB
";
        let v = parse_wrk(text).unwrap();
        assert_eq!(v["requests_per_s"], 58299.7);
        assert_eq!(v["p50_ms"], 0.24);
        assert_eq!(v["p99_ms"], 1.2);
        assert_eq!(v["requests"], 116631);
        assert_eq!(v["errors"], 3);
    }
}
