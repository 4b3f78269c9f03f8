//! `docent bench --only remote`: answers generated on a remote engine (llama.cpp's own
//! `llama-server`, started here on loopback with the configured GGUF), measured through
//! `docent serve --llm-url` and sent straight to the engine, in the same run.
//!
//! The straight requests carry exactly the messages docent sends (recorded in-process over
//! the same data, the same retrieval and fit), with the same sampling settings, so the
//! difference is docent: its HTTP, retrieval, prompt building, grounding and SSE. The
//! engine runs without prompt caching, so neither side finds the other's prompt already
//! read. It also reports what docent's own CPU spends per answered chat with generation
//! remote, the figure that says how many chats one docent core can front.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};

use super::serve::{QUESTIONS, Recorder, Server, demo_site, prepare_data};
use super::{ratio, round1};
use crate::config::Config;
use crate::domain::BotId;
use crate::embed::MiniLm;
use crate::llm::{ChatMessage, GenParams, Generator};
use crate::remote::{PoolConfig, RemoteConfig, RemoteGenerator};

/// Slots the engine runs, and streams sent at once in the concurrent part.
const STREAMS: usize = 16;

/// One streamed answer, timed from the request.
#[derive(Debug, Clone, Copy)]
struct Timed {
    ttft: Duration,
    total: Duration,
    tokens: u64,
    /// The prompt's tokens, as the engine counted them: equal on both sides when the same
    /// request was measured.
    prompt_tokens: u64,
}

impl Timed {
    /// Generation speed after the first token.
    fn tokens_per_s(&self) -> f64 {
        let decoding = (self.total - self.ttft).as_secs_f64();
        if self.tokens > 1 && decoding > 0.0 {
            (self.tokens - 1) as f64 / decoding
        } else {
            0.0
        }
    }
}

pub async fn bench_remote(
    config: &Config,
    embedder: Arc<MiniLm>,
    engine_bin: &Path,
    quick: bool,
) -> anyhow::Result<Value> {
    anyhow::ensure!(
        engine_bin.is_file(),
        "no llama-server at {} (`make test` builds one; or pass --engine-bin)",
        engine_bin.display()
    );
    let site = demo_site().context("the bundled demo site (tests/fixtures/site) is missing")?;
    let data = std::env::temp_dir().join(format!("docent-bench-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let key = prepare_data(&data, &site, embedder.clone()).await?;
    let max_tokens = if quick { 24 } else { 64 };
    let engine = EngineProcess::spawn(engine_bin, config)?;
    let result = run(config, &data, &key, embedder, &engine, max_tokens, quick).await;
    drop(engine);
    let _ = std::fs::remove_dir_all(&data);
    result
}

async fn run(
    config: &Config,
    data: &Path,
    key: &str,
    embedder: Arc<MiniLm>,
    engine: &EngineProcess,
    max_tokens: usize,
    quick: bool,
) -> anyhow::Result<Value> {
    crate::ingest::crawl::install_tls_provider();
    // llama.cpp's server may close a connection after a streamed answer without saying
    // so: the bench opens a fresh one per request rather than race that close (a loopback
    // connect costs microseconds; docent's own client retries such a failure instead).
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    engine.wait_ready(&client).await?;
    let sequential = if quick { 4 } else { 8 };
    // Twice the questions needed, worded apart from the other benches' (and each other).
    let questions: Vec<String> = (0..2 * STREAMS)
        .map(|i| {
            let wording = ["Please tell me: ", "I wonder: "][i / QUESTIONS.len() % 2];
            format!("{wording}{}", QUESTIONS[i % QUESTIONS.len()])
        })
        .collect();
    // Only questions that reach the model are measured (a decline generates nothing).
    let recorded = record_prompts(config, data, embedder, engine, &questions, max_tokens).await?;
    let (questions, prompts): (Vec<String>, Vec<Vec<ChatMessage>>) = questions
        .into_iter()
        .zip(recorded)
        .filter_map(|(q, p)| Some((q, p?)))
        .unzip();
    anyhow::ensure!(
        prompts.len() >= sequential,
        "only {} of the demo questions reach the model",
        prompts.len()
    );
    let settings = data.join("bench.toml");
    std::fs::write(
        &settings,
        format!("[generation]\nmax_tokens = {max_tokens}\ntemperature = 0.0\n"),
    )?;
    let global = [
        "--config".to_string(),
        settings.display().to_string(),
        "--llm-url".to_string(),
        engine.url(),
        "--llm-concurrency".to_string(),
        STREAMS.to_string(),
        // STREAMS prompts read at once on a small CPU take minutes: no timeout may cut
        // docent's side short where the straight requests wait.
        "--llm-timeout".to_string(),
        "30m".to_string(),
    ];
    let serve = [
        "--answer-cache-ttl",
        "0",
        "--max-queue",
        "64",
        "--max-wait",
        "1800",
        "--request-timeout",
        "1800",
    ]
    .map(String::from);
    let server = Server::spawn_with(config, data, &global, &serve)?;
    server.wait_ready(&client).await?;

    // One at a time: docent and straight alternate, question by question. Each first-token
    // time less the engine's own time reading that prompt (its /metrics) is what lies
    // around the engine: HTTP, and on docent's side retrieval, prompt building and SSE.
    let (mut through, mut straight) = (Vec::new(), Vec::new());
    let (mut around_docent, mut around_straight) = (Vec::new(), Vec::new());
    let cpu_before = cpu_seconds(server.pid());
    let engine_before = cpu_seconds(engine.pid());
    let started = Instant::now();
    for (i, (question, messages)) in questions.iter().zip(&prompts).take(sequential).enumerate() {
        for docent_turn in [i % 2 == 1, i % 2 == 0] {
            let before = engine.prompt_seconds(&client).await?;
            let timed = if docent_turn {
                via_docent(&client, &server.url("/v1/chat"), key, question).await?
            } else {
                direct(&client, engine, messages, max_tokens).await?
            };
            let reading = engine.prompt_seconds(&client).await? - before;
            let around = timed.ttft.as_secs_f64() - reading;
            if docent_turn {
                through.push(timed);
                around_docent.push(around * 1000.0);
            } else {
                straight.push(timed);
                around_straight.push(around * 1000.0);
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let docent_cpu = cpu_seconds(server.pid()) - cpu_before;
    let engine_cpu = cpu_seconds(engine.pid()) - engine_before;

    // STREAMS at once: docent's queue and the engine's slots, against the engine alone.
    let concurrent_docent = at_once(questions.iter().take(STREAMS).map(|q| {
        let (client, url, key, q) = (
            client.clone(),
            server.url("/v1/chat"),
            key.to_string(),
            q.clone(),
        );
        async move { via_docent(&client, &url, &key, &q).await }
    }))
    .await?;
    let concurrent_direct = at_once(prompts.iter().take(STREAMS).map(|messages| {
        let (client, messages) = (client.clone(), messages.clone());
        async move { direct(&client, engine, &messages, max_tokens).await }
    }))
    .await?;
    server.stop();

    let median = |runs: &[Timed], f: fn(&Timed) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let ttft = |t: &Timed| t.ttft.as_secs_f64() * 1000.0;
    let (ttft_docent, ttft_direct) = (median(&through, ttft), median(&straight, ttft));
    let (speed_docent, speed_direct) = (
        median(&through, Timed::tokens_per_s),
        median(&straight, Timed::tokens_per_s),
    );
    let per_chat_ms = docent_cpu * 1000.0 / sequential as f64;
    let middle = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (around_docent, around_straight) = (middle(around_docent), middle(around_straight));
    let chat_s = through.iter().map(|t| t.total.as_secs_f64()).sum::<f64>() / through.len() as f64;
    Ok(json!({
        "model": config.model_path.file_name().map(|n| n.to_string_lossy().to_string()),
        "engine_threads": config.threads,
        "max_tokens": max_tokens,
        "one_at_a_time": {
            "questions": sequential,
            "ttft_docent_ms": round1(ttft_docent),
            "ttft_straight_ms": round1(ttft_direct),
            "ttft_added_ms": round1(ttft_docent - ttft_direct),
            "ttft_outside_engine_docent_ms": round1(around_docent),
            "ttft_outside_engine_straight_ms": round1(around_straight),
            "ttft_added_by_docent_ms": round1(around_docent - around_straight),
            "ttft_each_docent_ms": through.iter().map(|t| round1(t.ttft.as_secs_f64() * 1000.0)).collect::<Vec<_>>(),
            "ttft_each_straight_ms": straight.iter().map(|t| round1(t.ttft.as_secs_f64() * 1000.0)).collect::<Vec<_>>(),
            "ttft_docent_vs_straight": ratio(ttft_docent, ttft_direct),
            "tokens_per_s_docent": round1(speed_docent),
            "tokens_per_s_straight": round1(speed_direct),
            "tokens_per_s_docent_vs_straight": ratio(speed_docent, speed_direct),
            "prompt_tokens_docent": through.iter().map(|t| t.prompt_tokens).sum::<u64>(),
            "prompt_tokens_straight": straight.iter().map(|t| t.prompt_tokens).sum::<u64>(),
        },
        "docent_cpu": {
            "cpu_ms_per_chat": round1(per_chat_ms),
            "engine_cpu_ms_per_chat": round1(engine_cpu * 1000.0 / (2 * sequential) as f64),
            "wall_s": round1(wall),
            "chat_wall_s": round1(chat_s),
            "chats_per_core_second": round1(1000.0 / per_chat_ms.max(0.001)),
            "concurrent_chats_per_core": round1(chat_s * 1000.0 / per_chat_ms.max(0.001)),
        },
        "concurrent": {
            "streams": concurrent_docent.0.len(),
            "docent": summary(&concurrent_docent),
            "straight": summary(&concurrent_direct),
            "aggregate_tokens_per_s_docent_vs_straight": ratio(
                concurrent_docent.1, concurrent_direct.1),
        },
    }))
}

/// Per-stream first-token times (p50, p95) and the aggregate rate of a concurrent run.
fn summary((runs, aggregate, wall): &(Vec<Timed>, f64, f64)) -> Value {
    let mut ttfts: Vec<f64> = runs.iter().map(|t| t.ttft.as_secs_f64()).collect();
    ttfts.sort_by(f64::total_cmp);
    let at = |p: f64| ttfts[((ttfts.len() as f64 - 1.0) * p).round() as usize];
    json!({
        "ttft_p50_s": round1(at(0.5)),
        "ttft_p95_s": round1(at(0.95)),
        "aggregate_tokens_per_s": round1(*aggregate),
        "completion_tokens": runs.iter().map(|t| t.tokens).sum::<u64>(),
        "wall_s": round1(*wall),
    })
}

/// Runs `streams` together; returns each one's timing, the aggregate tokens per second and
/// the wall time.
async fn at_once<F>(streams: impl Iterator<Item = F>) -> anyhow::Result<(Vec<Timed>, f64, f64)>
where
    F: std::future::Future<Output = anyhow::Result<Timed>>,
{
    let started = Instant::now();
    let runs = futures::future::try_join_all(streams).await?;
    let wall = started.elapsed().as_secs_f64();
    let tokens: u64 = runs.iter().map(|t| t.tokens).sum();
    Ok((runs, tokens as f64 / wall, wall))
}

/// The messages docent sends the engine for each question: the same retrieval and prompt
/// fit as `serve`, with the engine's own token counts, recorded instead of generated.
async fn record_prompts(
    config: &Config,
    data: &Path,
    embedder: Arc<MiniLm>,
    engine: &EngineProcess,
    questions: &[String],
    max_tokens: usize,
) -> anyhow::Result<Vec<Option<Vec<ChatMessage>>>> {
    let remote = RemoteGenerator::new(RemoteConfig {
        engines: PoolConfig {
            urls: vec![engine.url().parse()?],
            model: None,
            api_key: None,
            timeout: Duration::from_secs(60),
            concurrency: 1,
        },
        context_size: config.context_size as usize,
    })?;
    let (config, data, questions) = (config.clone(), data.to_path_buf(), questions.to_vec());
    tokio::task::spawn_blocking(move || {
        remote.health().map_err(anyhow::Error::msg)?;
        let store = crate::store::open(&data)?;
        let retriever = crate::app::retriever(store, embedder);
        let mut options = crate::chat::AskOptions::from_config(&config);
        options.generation.max_tokens = max_tokens;
        let bot = BotId::parse("demo").map_err(anyhow::Error::msg)?;
        questions
            .iter()
            .map(|question| {
                let recorder = Recorder::new(&remote);
                crate::chat::answer(&retriever, &recorder, &bot, question, &options, &mut |_| {
                    true
                })?;
                Ok(recorder.prompt())
            })
            .collect()
    })
    .await?
}

/// One streamed answer through docent's `/v1/chat`.
async fn via_docent(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    question: &str,
) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let body = json!({"bot_id": "demo", "message": question, "stream": true});
    let response = client.post(url).bearer_auth(key).json(&body).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "docent answered {}",
        response.status()
    );
    let mut ttft = None;
    let (mut tokens, mut prompt_tokens) = (0, 0);
    read_sse(response, |event| {
        if event.get("delta").is_some() && ttft.is_none() {
            ttft = Some(started.elapsed());
        }
        if event["event"] == "done" {
            tokens = event["usage"]["completion_tokens"].as_u64().unwrap_or(0);
            prompt_tokens = event["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        }
        anyhow::ensure!(event["event"] != "error", "docent's stream failed: {event}");
        Ok(())
    })
    .await?;
    Ok(Timed {
        ttft: ttft.unwrap_or_else(|| started.elapsed()),
        total: started.elapsed(),
        tokens,
        prompt_tokens,
    })
}

/// The same answer asked of the engine straight: the recorded messages, docent's sampling.
async fn direct(
    client: &reqwest::Client,
    engine: &EngineProcess,
    messages: &[ChatMessage],
    max_tokens: usize,
) -> anyhow::Result<Timed> {
    let params = GenParams {
        max_tokens,
        ..GenParams::default()
    };
    let body = json!({
        "model": "docent-bench",
        "messages": crate::remote::chat::wire_messages(messages),
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": params.max_tokens,
        "temperature": 0.0,
        "seed": params.seed,
    });
    let started = Instant::now();
    let url = format!("{}/v1/chat/completions", engine.url());
    let response = client.post(url).json(&body).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "the engine answered {}",
        response.status()
    );
    let mut ttft = None;
    let (mut tokens, mut prompt_tokens) = (0, 0);
    read_sse(response, |event| {
        let text = event["choices"][0]["delta"]["content"]
            .as_str()
            .unwrap_or("");
        if !text.is_empty() && ttft.is_none() {
            ttft = Some(started.elapsed());
        }
        if let Some(n) = event["usage"]["completion_tokens"].as_u64() {
            tokens = n;
        }
        if let Some(n) = event["usage"]["prompt_tokens"].as_u64() {
            prompt_tokens = n;
        }
        Ok(())
    })
    .await?;
    Ok(Timed {
        ttft: ttft.unwrap_or_else(|| started.elapsed()),
        total: started.elapsed(),
        tokens,
        prompt_tokens,
    })
}

/// Calls `on_event` with each JSON `data:` payload of an SSE response (`[DONE]` aside).
async fn read_sse(
    response: reqwest::Response,
    mut on_event: impl FnMut(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut lines = crate::remote::chat::SseLines::default();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        for data in lines.push(&chunk?) {
            if data == "[DONE]" {
                continue;
            }
            on_event(&serde_json::from_str(&data).context("unreadable stream event")?)?;
        }
    }
    Ok(())
}

/// Seconds of CPU a process has used (user and system, all its threads, living or not).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 after the name),
    // in USER_HZ, which Linux fixes at 100 for user space.
    (ticks(11) + ticks(12)) / 100.0
}

/// `llama-server` on a loopback port with the configured model: `STREAMS` slots of the
/// configured context each, no prompt cache, killed when stopped.
struct EngineProcess {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl EngineProcess {
    fn spawn(binary: &Path, config: &Config) -> anyhow::Result<EngineProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::env::temp_dir().join(format!("docent-bench-engine-{port}.log"));
        let context = config.context_size as usize * STREAMS;
        let child = std::process::Command::new(binary)
            .arg("-m")
            .arg(&config.model_path)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "-t",
                &config.threads.to_string(),
                "-c",
                &context.to_string(),
            ])
            .args([
                "-np",
                &STREAMS.to_string(),
                "--alias",
                "docent-bench",
                "--no-webui",
            ])
            .args(["--no-cache-prompt", "--cache-ram", "0", "--metrics"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        Ok(EngineProcess { child, port, log })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Seconds the engine has spent reading prompts (`llamacpp:prompt_seconds_total`).
    async fn prompt_seconds(&self, client: &reqwest::Client) -> anyhow::Result<f64> {
        let text = client
            .get(format!("{}/metrics", self.url()))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix("llamacpp:prompt_seconds_total "))
            .and_then(|v| v.trim().parse().ok())
            .context("the engine's /metrics has no llamacpp:prompt_seconds_total")
    }

    async fn wait_ready(&self, client: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(res) = client.get(format!("{}/health", self.url())).send().await
                && res.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                anyhow::bail!("llama-server never became ready:\n{log:.2000}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
