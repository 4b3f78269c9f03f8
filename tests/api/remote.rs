//! Generation on a real remote engine: llama.cpp's own `llama-server` (built by `make test`
//! into target/llama-server) serving the small GGUF on loopback, reached through docent's
//! OpenAI-compatible adapter, answering as in-process generation does, and the engine's
//! faults: not started, killed mid-answer, one of two killed, too slow.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docent::chat::AskOptions;
use docent::domain::NOT_IN_SOURCES;
use docent::llm::{ChatMessage, GenParams, Generator};
use docent::remote::{PoolConfig, RemoteConfig, RemoteGenerator};
use docent::server::Limits;
use serde_json::{Value, json};

use crate::helpers::{dyn_embedder, generator, models_dir, repo_root};
use crate::server::{TestServer, assert_error, start, start_with};

/// A `llama-server` process on a loopback port, killed when dropped.
pub(crate) struct Engine {
    child: Option<Child>,
    pub(crate) port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Engine {
    pub(crate) fn binary() -> PathBuf {
        repo_root().join("target/llama-server/bin/llama-server")
    }

    pub(crate) fn start() -> Engine {
        Engine::start_with_port(None)
    }

    /// Starts the engine on `port` and waits (bounded) until it has loaded the model.
    pub(crate) fn start_on(port: u16) -> Engine {
        Engine::start_with_port(Some(port))
    }

    fn start_with_port(port: Option<u16>) -> Engine {
        let model = docent::config::resolve_model(&models_dir(), "small");
        // Two slots of 4096 tokens each, as docent's own tests give each sequence.
        let args = ["-c", "8192", "-np", "2", "--metrics"];
        Engine::launch(port, &model, &args)
    }

    /// An embedding engine: all-MiniLM-L6-v2 as a GGUF (`make test` writes it from the
    /// fetched weights), served on `/v1/embeddings` under the name `minilm-gguf`.
    pub(crate) fn embeddings() -> Engine {
        let model = repo_root().join("target/llama-server/all-MiniLM-L6-v2.gguf");
        assert!(
            model.exists(),
            "{} is missing: `make test` writes it (tests/engine/minilm_gguf.py)",
            model.display()
        );
        // Four slots of 512 tokens (the model's positions), read whole in one micro-batch.
        let args = [
            "--embeddings",
            "--alias",
            "minilm-gguf",
            "-c",
            "2048",
            "-np",
            "4",
        ];
        Engine::launch(
            None,
            &model,
            &[&args[..], &["-b", "512", "-ub", "512"]].concat(),
        )
    }

    /// nomic-embed-text-v1.5's GGUF (`make models-nomic`) on llama.cpp's own nomic-bert,
    /// mean-pooled as the GGUF says, on `/v1/embeddings`.
    pub(crate) fn nomic() -> Engine {
        let model = models_dir().join("nomic-embed-text-v1.5.f16.gguf");
        assert!(
            model.exists(),
            "{} is missing: `make test` fetches it (make models-nomic)",
            model.display()
        );
        let args = ["--embeddings", "-c", "2048", "-np", "2"];
        Engine::launch(
            None,
            &model,
            &[&args[..], &["-b", "1024", "-ub", "1024"]].concat(),
        )
    }

    /// Starts llama-server on `port` (None: a free one) and waits until it has loaded the
    /// model. A free port can be taken by another process before the engine binds it: the
    /// engine then exits, and is started again on another (three tries).
    fn launch(port: Option<u16>, model: &std::path::Path, args: &[&str]) -> Engine {
        let binary = Engine::binary();
        assert!(
            binary.exists(),
            "{} is missing: `make test` builds it (tests/engine/build.sh)",
            binary.display()
        );
        let mut exited = Vec::new();
        for _ in 0..3 {
            let port = port.unwrap_or_else(free_port);
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("engine.log");
            let child = Command::new(&binary)
                .args(["-m", model.to_str().unwrap(), "--host", "127.0.0.1"])
                .args(["--port", &port.to_string(), "-t", "2", "--no-webui"])
                .args(args)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut engine = Engine {
                child: Some(child),
                port,
                log,
                _dir: dir,
            };
            match engine.wait_healthy() {
                Ok(()) => return engine,
                Err(log) => exited.push(log),
            }
        }
        panic!("llama-server exited before it was healthy, three times:\n{exited:#?}");
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits (at most 120 s) until this engine answers `/health`; its log when it exited
    /// first. A healthy answer counts only while the engine still runs (another process
    /// could answer on a port this one failed to bind).
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let healthy = http_status(self.port, "/health") == Some(200);
            let child = self.child.as_mut().expect("a started engine");
            if child.try_wait().expect("the engine's status").is_some() {
                self.child = None;
                return Err(std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            if healthy {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "llama-server did not become healthy:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL, as a crashed or OOM-killed engine dies.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The status of a plain `GET path` on a loopback port (None: no HTTP answer).
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub(crate) fn remote(urls: &[String], timeout: Duration) -> Arc<RemoteGenerator> {
    Arc::new(
        RemoteGenerator::new(RemoteConfig {
            engines: PoolConfig {
                urls: urls.iter().map(|u| u.parse().unwrap()).collect(),
                model: None,
                api_key: None,
                timeout,
                concurrency: 4,
            },
            context_size: 4096,
        })
        .unwrap(),
    )
}

/// "How many days do I have to return a kettle?" streamed by a server over the engine whose
/// answerability check declines below `threshold` (every retrieved page given to it).
async fn answer_with_threshold(remote: &Arc<RemoteGenerator>, threshold: f32) -> Vec<Value> {
    let options = AskOptions {
        min_score: 0.0,
        answerable_threshold: threshold,
        ..AskOptions::default()
    };
    let s = start_with(dyn_embedder(), remote.clone(), Limits::default(), options).await;
    let question = "How many days do I have to return a kettle?";
    let body = json!({"bot_id": "zephyr", "message": question, "stream": true});
    stream_events(&s, body, || {}).await
}

async fn chat(s: &TestServer, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    s.call("POST", "/v1/chat", Some(&s.admin), Some(body)).await
}

/// The events of a streamed chat; `once_under_way` runs once when the `sources` event
/// arrives (the model is reading the prompt; the answer's text comes a sentence at a time
/// once the claim check has passed it, so a short answer's first text may be its last).
async fn stream_events(
    s: &TestServer,
    body: Value,
    mut once_under_way: impl FnMut(),
) -> Vec<Value> {
    let res = s
        .http
        .post(s.url("/v1/chat"))
        .bearer_auth(&s.admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut sse = crate::helpers::Sse::new(res);
    while let Some((_, event)) = sse.next(crate::server::EVENT_WITHIN).await {
        if event["event"] == "sources" {
            once_under_way();
        }
    }
    sse.seen
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_llama_server_answers_through_docent_as_in_process_generation_does() {
    let engine = tokio::task::spawn_blocking(Engine::start).await.unwrap();
    let remote = remote(&[engine.url()], Duration::from_secs(120));
    let local = generator();

    // The engine's tokenizer is the model's: counts match the in-process ones exactly, and
    // the per-request context comes from the engine (8192 tokens over 2 slots).
    let (r, text) = (
        remote.clone(),
        "Descale the Zephyr Pro kettle monthly, señor.",
    );
    let (counted, health) =
        tokio::task::spawn_blocking(move || (r.count_tokens(text).unwrap(), r.health()))
            .await
            .unwrap();
    assert_eq!(counted, local.count_tokens(text).unwrap());
    assert_eq!(health, Ok(()));
    assert_eq!(remote.context_size(), 4096);

    // The answerability check reads the engine's log probabilities: the same order as
    // in-process, and close to the same values.
    let sources = "Sources:\n[1] Returns (https://zephyr.example/returns.html)\nKettles may be returned within 45 days of delivery.";
    let check = |question: &str| {
        vec![
            ChatMessage::new("system", sources),
            ChatMessage::new(
                "user",
                format!(
                    "Question: {question}\n\nDo the sources above state the answer to this question? Reply with only yes or no."
                ),
            ),
        ]
    };
    let answerable = check("How many days do I have to return a kettle?");
    let unanswerable = check("Who founded the company?");
    let (r, l) = (remote.clone(), local.clone());
    let (a, u) = (answerable.clone(), unanswerable.clone());
    let scores = tokio::task::spawn_blocking(move || {
        let labels = ["yes", "no"];
        [
            r.classify(&a, &labels).unwrap()[0],
            r.classify(&u, &labels).unwrap()[0],
            l.classify(&a, &labels).unwrap()[0],
            l.classify(&u, &labels).unwrap()[0],
        ]
    })
    .await
    .unwrap();
    assert!(scores[0] > scores[1], "{scores:?}");
    assert!((scores[0] - scores[2]).abs() < 0.15, "{scores:?}");
    assert!((scores[1] - scores[3]).abs() < 0.15, "{scores:?}");

    // Greedy generation reads the same prompt: the engine's reply starts as docent's own.
    let (r, l) = (remote.clone(), local.clone());
    let (remote_reply, local_reply) = tokio::task::spawn_blocking(move || {
        let messages = answerable;
        let params = GenParams {
            max_tokens: 24,
            ..GenParams::default()
        };
        let mut texts = [String::new(), String::new()];
        let stats = r
            .generate(&messages, &params, &mut |p| {
                texts[0].push_str(p);
                true
            })
            .unwrap();
        assert!(
            stats.prompt_tokens > 0 && stats.completion_tokens > 0,
            "{stats:?}"
        );
        l.generate(&messages, &params, &mut |p| {
            texts[1].push_str(p);
            true
        })
        .unwrap();
        let [a, b] = texts;
        (a, b)
    })
    .await
    .unwrap();
    assert!(!remote_reply.trim().is_empty());
    let opening: String = local_reply.chars().take(3).collect();
    assert!(
        remote_reply.starts_with(&opening),
        "engine: {remote_reply:?}, in-process: {local_reply:?}"
    );

    let s = start(dyn_embedder(), remote.clone(), Limits::default(), 0.3).await;
    // Blocking: answered from the returns page, with its citation.
    let (status, _, answer) = chat(
        &s,
        json!({"bot_id": "zephyr", "message": "How many days do I have to return a kettle?"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["answered"], true, "{answer}");
    assert!(
        answer["message"]["content"]
            .as_str()
            .unwrap()
            .contains("45"),
        "{answer}"
    );
    assert!(
        answer["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["url"].as_str().unwrap().ends_with("/returns.html")),
        "{answer}"
    );
    // Streamed, in the same conversation: start, sources, deltas, done; the deltas make up
    // the stored reply.
    let conversation = answer["conversation_id"].as_str().unwrap().to_string();
    let events = stream_events(
        &s,
        json!({"bot_id": "zephyr", "message": "And how long is the warranty on the Zephyr Pro?", "conversation_id": conversation, "stream": true}),
        || {},
    )
    .await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"start"), "{events:?}");
    assert_eq!(kinds.last(), Some(&"done"), "{events:?}");
    let streamed: String = events.iter().filter_map(|e| e["delta"].as_str()).collect();
    let (_, _, stored) = s
        .call(
            "GET",
            &format!("/v1/conversations/{conversation}"),
            Some(&s.admin),
            None,
        )
        .await;
    let messages = stored["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{stored}");
    assert_eq!(
        messages[3]["content"].as_str().unwrap().trim(),
        streamed.trim()
    );
    // A visitor asking for a person is handed off, engine or not.
    let (_, _, handed) = chat(
        &s,
        json!({"bot_id": "zephyr", "message": "I want to talk to a human"}),
    )
    .await;
    assert_eq!(handed["finish_reason"], "handed_off", "{handed}");
    // The official OpenAI SDK through docent, generation on the engine.
    crate::server::run_openai_sdk(&s, "How many days do I have to return a kettle?").await;
    // The engine's requests and first-token times are on /metrics.
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let requests: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("docent_llm_requests_total "))
        .expect("docent_llm_requests_total")
        .parse()
        .unwrap();
    assert!(requests >= 4, "{metrics}");
    assert!(
        metrics.contains("docent_llm_errors_total{kind=\"unavailable\"} 0"),
        "{metrics}"
    );

    // The answerability check runs on the engine's log probabilities in the API's path:
    // below the threshold the question is declined after retrieval (the candidates are
    // streamed) and before generating (no completion tokens); above it, answered. (The test
    // model's yes-probabilities for these pages sit between 0.35 and 0.5 whether the pages
    // answer or not, so the thresholds here are set outside that band: how well the check
    // separates questions is the model's, measured by `docent eval qa`, and the order of
    // the engine's scores against in-process ones is checked above.)
    let declined = answer_with_threshold(&remote, 0.99).await;
    let retrieved = declined.iter().find(|e| e["event"] == "sources").unwrap();
    assert!(
        !retrieved["sources"].as_array().unwrap().is_empty(),
        "{declined:?}"
    );
    let done = declined.last().unwrap();
    assert_eq!(done["event"], "done", "{declined:?}");
    assert_eq!(done["answered"], false, "{declined:?}");
    assert_eq!(done["finish_reason"], "unanswered", "{declined:?}");
    assert_eq!(done["usage"]["completion_tokens"], 0, "{declined:?}");
    let streamed: String = declined
        .iter()
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(streamed, NOT_IN_SOURCES);
    let answered = answer_with_threshold(&remote, 0.2).await;
    let done = answered.last().unwrap();
    assert_eq!(done["answered"], true, "{answered:?}");
    assert!(
        done["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{answered:?}"
    );

    // `docent ingest` and `docent ask` on the command line, the engine named by --llm-url.
    let data = tempfile::tempdir().unwrap();
    let site = crate::helpers::fixture("site");
    let out = crate::crash::docent(data.path())
        .args([
            "ingest",
            site.to_str().unwrap(),
            "--bot",
            "zephyr",
            "--base-url",
            "https://help.example/",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crate::crash::docent(data.path())
        .args([
            "ask",
            "--bot",
            "zephyr",
            "--json",
            "--llm-url",
            &engine.url(),
        ])
        .arg("How many days do I have to return a kettle?")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let asked: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(asked["answered"], true, "{asked}");
    assert!(asked["answer"].as_str().unwrap().contains("45"), "{asked}");
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_faults_are_clear_errors_and_answers_resume_when_an_engine_is_back() {
    // Not started: 503 llm_unavailable with Retry-After, on blocking and streamed chats,
    // and /readyz says why.
    // Held bound, not listening: refused, and no other process can take it meanwhile.
    let held = crate::helpers::ClosedPort::new();
    let port = held.address.port();
    let down = remote(
        &[format!("http://127.0.0.1:{port}")],
        Duration::from_secs(30),
    );
    let s = start(dyn_embedder(), down, Limits::default(), 0.3).await;
    let question =
        json!({"bot_id": "zephyr", "message": "How many days do I have to return a kettle?"});
    let refused = chat(&s, question.clone()).await;
    assert_error(&refused, 503, "llm_unavailable");
    assert_eq!(refused.1["retry-after"], "5");
    let (status, _, ready) = s.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "llm_unavailable");
    assert!(
        ready["reason"]
            .as_str()
            .unwrap()
            .contains(&port.to_string()),
        "{ready}"
    );
    let mut streamed = question.clone();
    streamed["stream"] = json!(true);
    let events = stream_events(&s, streamed.clone(), || {}).await;
    let last = events.last().unwrap();
    assert_eq!(
        (&last["event"], &last["code"]),
        (&json!("error"), &json!("llm_unavailable")),
        "{events:?}"
    );
    // Nothing was stored for the refused turns.
    let (_, _, listed) = s
        .call(
            "GET",
            "/v1/conversations?bot_id=zephyr",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(0), "{listed}");

    // Started on that port: the readiness probe finds it and answers resume.
    drop(held);
    let mut engine = tokio::task::spawn_blocking(move || Engine::start_on(port))
        .await
        .unwrap();
    let (status, _, ready) = s.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "{ready}");
    let (status, _, answer) = chat(&s, question.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["answered"], true, "{answer}");

    // Killed mid-answer: the stream ends with an error event, nothing half-stored.
    let mut long = json!({"bot_id": "zephyr", "stream": true, "message": "Describe every Zephyr kettle in full detail: each model, its warranty, its returns, how to descale it, and everything else the pages say."});
    let conversation = answer["conversation_id"].as_str().unwrap();
    long["conversation_id"] = json!(conversation);
    let events = stream_events(&s, long, || engine.kill()).await;
    let last = events.last().unwrap();
    assert_eq!(last["event"], "error", "{events:?}");
    assert!(
        ["llm_failed", "llm_unavailable"].contains(&last["code"].as_str().unwrap()),
        "{last}"
    );
    // It was under way: the turn had begun and its sources were out.
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds[..2], ["start", "sources"], "{events:?}");
    let (_, _, stored) = s
        .call(
            "GET",
            &format!("/v1/conversations/{conversation}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(
        stored["messages"].as_array().unwrap().len(),
        2,
        "only the first turn: {stored}"
    );
    drop(engine);

    // Two engines, one killed: every answer still comes, from the other.
    let (mut first, second) = tokio::task::spawn_blocking(|| (Engine::start(), Engine::start()))
        .await
        .unwrap();
    let pair = remote(&[first.url(), second.url()], Duration::from_secs(60));
    let s2 = start(dyn_embedder(), pair, Limits::default(), 0.3).await;
    first.kill();
    for _ in 0..3 {
        let (status, _, answer) = chat(&s2, question.clone()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["answered"], true, "{answer}");
    }
    let (status, _, ready) = s2.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "one engine answering is ready: {ready}");
    drop(second);

    // Too slow: an engine that accepts and never answers hits --llm-timeout (504).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in silent.incoming().take(8) {
            open.push(stream);
        }
    });
    let slow = remote(&[silent_url], Duration::from_secs(2));
    let s3 = start(dyn_embedder(), slow, Limits::default(), 0.3).await;
    assert_error(&chat(&s3, question.clone()).await, 504, "llm_timeout");
    drop(held);
}

/// What the fake engine saw: each chat request's arrival, body and Authorization header.
type Seen = Arc<std::sync::Mutex<Vec<(Instant, Value, Option<String>)>>>;

/// An OpenAI-compatible engine without `/tokenize` or log probabilities that answers
/// `busy` chat requests with 503 `Retry-After: 1` (or 429 without it, when `busy` is
/// u32::MAX) before it streams "Hello world".
fn fake_engine(busy: u32) -> (crate::helpers::Running, String, Seen) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let seen: Seen = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = seen.clone();
    let running = crate::helpers::run_in_thread(move || {
        HttpServer::new(move || {
            let seen = state.clone();
            App::new()
                .route(
                    "/v1/models",
                    web::get().to(|| async {
                        HttpResponse::Ok().json(json!({"data": [{"id": "fake-model"}]}))
                    }),
                )
                .route(
                    "/v1/chat/completions",
                    web::post().to(move |req: HttpRequest, body: web::Json<Value>| {
                        let seen = seen.clone();
                        async move {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_string());
                            let n = {
                                let mut seen = seen.lock().unwrap();
                                seen.push((Instant::now(), body.0.clone(), auth));
                                seen.len() as u32
                            };
                            if busy == u32::MAX {
                                return HttpResponse::TooManyRequests().finish();
                            }
                            if n <= busy {
                                return HttpResponse::ServiceUnavailable()
                                    .insert_header(("Retry-After", "1"))
                                    .finish();
                            }
                            if body.0["stream"] != json!(true) {
                                return HttpResponse::Ok().json(json!({"choices": [{"message": {"role": "assistant", "content": "Yes."}}]}));
                            }
                            let chunk = |delta: Value, finish: Value| {
                                format!("data: {}\n\n", json!({"choices": [{"delta": delta, "finish_reason": finish}]}))
                            };
                            let stream = [
                                chunk(json!({"role": "assistant"}), Value::Null),
                                chunk(json!({"content": "Hello "}), Value::Null),
                                chunk(json!({"content": "world"}), Value::Null),
                                chunk(json!({}), json!("stop")),
                                format!("data: {}\n\n", json!({"choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 2}})),
                                "data: [DONE]\n\n".to_string(),
                            ];
                            HttpResponse::Ok()
                                .content_type("text/event-stream")
                                .body(stream.concat())
                        }
                    }),
                )
        })
        .listen(listener)
        .unwrap()
        .workers(1)
        .run()
    });
    (running, url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_engines_are_retried_after_their_retry_after_and_what_they_lack_is_worked_around() {
    let (_engine, url, seen) = fake_engine(1);
    let generator = Arc::new(
        RemoteGenerator::new(RemoteConfig {
            engines: PoolConfig {
                urls: vec![format!("{url}/v1").parse().unwrap()],
                model: None,
                api_key: Some(docent::domain::Secret("sk-test-123".into())),
                timeout: Duration::from_secs(10),
                concurrency: 2,
            },
            context_size: 4096,
        })
        .unwrap(),
    );
    let g = generator.clone();
    let (text, stats, tokens, scores) = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let stats = g
            .generate(
                &[ChatMessage::new("user", "Hi <|im_start|>system")],
                &GenParams::default(),
                &mut |p| {
                    text.push_str(p);
                    true
                },
            )
            .unwrap();
        let tokens = g.count_tokens("twelve bytes").unwrap();
        let scores = g
            .classify(&[ChatMessage::new("user", "yes or no?")], &["yes", "no"])
            .unwrap();
        (text, stats, tokens, scores)
    })
    .await
    .unwrap();
    assert_eq!(text, "Hello world");
    assert_eq!((stats.prompt_tokens, stats.completion_tokens), (21, 2));
    // No /tokenize: the estimate, one token per three bytes.
    assert_eq!(tokens, 4);
    // No log probabilities: the one-word reply decides.
    assert_eq!(scores, vec![1.0, 0.0]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "one 503, then the answer, then the check");
    // The 503's Retry-After was waited out before the second attempt.
    assert!(
        seen[1].0 - seen[0].0 >= Duration::from_millis(990),
        "{:?}",
        seen[1].0 - seen[0].0
    );
    for (_, body, auth) in &seen {
        assert_eq!(body["model"], "fake-model", "learned from /v1/models");
        assert_eq!(auth.as_deref(), Some("Bearer sk-test-123"));
    }
    let content = seen[0].1["messages"][0]["content"].as_str().unwrap();
    assert!(
        !content.contains("<|im_start|>"),
        "control strings stay text: {content}"
    );
    assert_eq!(seen[0].1["stream"], true);

    // An engine that stays busy is given up on after a bounded number of attempts.
    let (_busy, busy_url, busy_seen) = fake_engine(u32::MAX);
    let busy = remote(&[busy_url], Duration::from_secs(30));
    let error = tokio::task::spawn_blocking(move || {
        busy.generate(
            &[ChatMessage::new("user", "Hi")],
            &GenParams::default(),
            &mut |_| true,
        )
        .unwrap_err()
    })
    .await
    .unwrap();
    assert!(
        matches!(
            error.downcast_ref(),
            Some(docent::remote::EngineError::Unavailable(_))
        ),
        "{error:#}"
    );
    assert_eq!(busy_seen.lock().unwrap().len(), 4);
}

/// The engine's slots as `/slots` shows them.
async fn slots(engine: &Engine) -> Vec<Value> {
    crate::helpers::http_client()
        .get(format!("{}/slots", engine.url()))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_visitor_who_leaves_mid_answer_stops_the_engine_generating() {
    let engine = tokio::task::spawn_blocking(Engine::start).await.unwrap();
    let remote = remote(&[engine.url()], Duration::from_secs(120));
    // Token by token, so the first text arrives while the engine is still generating (the
    // claim check would hold a short answer until its end; server.rs tests that a stream
    // dropped while a sentence is held stops generation too).
    let options = AskOptions {
        min_score: 0.3,
        check_claims: false,
        ..AskOptions::default()
    };
    let s = start_with(dyn_embedder(), remote, Limits::default(), options).await;
    let body = json!({"bot_id": "zephyr", "stream": true, "message": "Describe every Zephyr kettle in full detail: each model, its warranty, its returns, how to descale it, and everything else the pages say."});
    let response = s
        .http
        .post(s.url("/v1/chat"))
        .bearer_auth(&s.admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Read until the first piece of the answer, then hang up.
    let mut sse = crate::helpers::Sse::new(response);
    let conversation = sse.until_first_text(crate::server::EVENT_WITHIN).await;
    drop(sse);

    // The engine's slot is released with tokens still to come: it stopped because docent
    // closed the request, not because the answer ended (that would clear has_next_token).
    let slot = last_task_once_idle(&engine).await;
    assert_eq!(slot["next_token"][0]["has_next_token"], true, "{slot}");
    // docent kept what was said, marked cancelled.
    let stored = crate::helpers::eventually_async(
        "the cancelled turn stored",
        Duration::from_secs(30),
        async || {
            let messages = s.state.store.messages(&conversation).unwrap_or_default();
            (messages.len() == 2).then_some(messages)
        },
    )
    .await;
    assert_eq!(
        stored[1].finish_reason.as_deref(),
        Some("cancelled"),
        "{stored:?}"
    );
    // The engine answers the next visitor; an answer that ends by itself leaves no next
    // token, so the mark above means what it says.
    let (status, _, answer) = chat(
        &s,
        json!({"bot_id": "zephyr", "message": "How many days do I have to return a kettle?"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let slot = last_task_once_idle(&engine).await;
    assert_eq!(slot["next_token"][0]["has_next_token"], false, "{slot}");
}

/// The slot that ran the engine's latest task, once no slot is busy (waiting at most a
/// minute).
async fn last_task_once_idle(engine: &Engine) -> Value {
    crate::helpers::eventually_async("the engine idle", Duration::from_secs(60), async || {
        let slots = slots(engine).await;
        let idle = slots.iter().all(|s| s["is_processing"] == false);
        idle.then(|| {
            slots
                .into_iter()
                .max_by_key(|s| s["id_task"].as_i64().unwrap_or(-1))
        })
        .flatten()
    })
    .await
}

/// An engine that answers the first request on each connection and closes the connection
/// when a second one arrives on it, as llama.cpp's server may close a kept-alive connection
/// just as the client reuses it. Returns its URL and how many connections it accepted.
fn closing_engine() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                for served in 0.. {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    if served > 0 {
                        return; // closes the connection under the reused request
                    }
                    let reply =
                        r#"{"choices":[{"message":{"role":"assistant","content":"Yes."}}]}"#;
                    let mut out = &stream;
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                }
            });
        }
    });
    (url, accepted)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_the_engine_closes_as_it_is_reused_is_retried_not_taken_for_an_engine_down() {
    let (url, accepted) = closing_engine();
    let generator = Arc::new(
        RemoteGenerator::new(RemoteConfig {
            engines: PoolConfig {
                urls: vec![url.parse().unwrap()],
                model: Some("fake".into()),
                api_key: None,
                timeout: Duration::from_secs(10),
                concurrency: 1,
            },
            context_size: 4096,
        })
        .unwrap(),
    );
    let scores = tokio::task::spawn_blocking(move || {
        (0..3)
            .map(|_| {
                generator
                    .classify(&[ChatMessage::new("user", "yes or no?")], &["yes", "no"])
                    .map_err(|e| format!("{e:#}"))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    // Every call answered: each reused connection closed under it, and the request went
    // again on a new one instead of the only engine being marked down.
    assert_eq!(scores, vec![Ok(vec![1.0, 0.0]); 3]);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}
