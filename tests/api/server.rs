//! The REST API over real HTTP on loopback: auth and the error envelope for every status,
//! blocking and streamed chat, conversation memory, admission limits, disconnects, key
//! storage, and (with the real models) a grounded answer and a follow-up that retrieves
//! with its conversation's context.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web;
use docent::chat::AskOptions;
use docent::domain::BotId;
use docent::embed::{Embedding, FakeEmbedder};
use docent::ingest::{self, IngestRequest, Source, chunk::ChunkSpec, crawl::CrawlOptions};
use docent::keys::{KeyEnv, KeyKind, KeyScope};
use docent::llm::{ChatMessage, FakeGenerator, GenParams, GenStats, Generator};
use docent::ports::Storage;
use docent::server::{self, AppState, Engine, Limits};
use indicatif::ProgressBar;
use serde_json::{Value, json};

use crate::helpers::{Sse, dyn_embedder, fixture, generator};

/// A generator that wraps another, sleeping before each piece and recording cancellations.
pub(crate) struct SlowGenerator {
    inner: Arc<dyn Generator>,
    delay: Duration,
    calls: AtomicUsize,
    cancelled: AtomicUsize,
    /// Every message list it was given (for checking history stitching).
    prompts: Mutex<Vec<Vec<ChatMessage>>>,
}

impl SlowGenerator {
    fn new(inner: Arc<dyn Generator>, delay: Duration) -> Arc<SlowGenerator> {
        Arc::new(SlowGenerator {
            inner,
            delay,
            calls: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            prompts: Mutex::new(Vec::new()),
        })
    }
}

impl SlowGenerator {
    /// Generations started so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Generator for SlowGenerator {
    fn generate(
        &self,
        messages: &[ChatMessage],
        params: &GenParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> anyhow::Result<GenStats> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.prompts.lock().unwrap().push(messages.to_vec());
        let stats = self.inner.generate(messages, params, &mut |piece| {
            std::thread::sleep(self.delay);
            on_token(piece)
        })?;
        if stats.finish == docent::llm::Finish::Cancelled {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
        Ok(stats)
    }

    crate::helpers::generator_rest!(inner);
}

pub(crate) struct TestServer {
    pub(crate) base: String,
    pub(crate) state: web::Data<AppState>,
    pub(crate) admin: String,
    _server: server::Running,
    pub(crate) data: tempfile::TempDir,
    pub(crate) http: reqwest::Client,
}

impl TestServer {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.call_from(method, path, key, None, body).await
    }

    /// `call`, as a page on `origin` would (with that `Origin` header).
    pub(crate) async fn call_from(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        origin: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(origin) = origin {
            req = req.header("Origin", origin);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, value)
    }

    pub(crate) fn make_key(
        &self,
        kind: KeyKind,
        env: KeyEnv,
        scope: KeyScope,
        origins: Vec<String>,
    ) -> String {
        let (key, record) = docent::keys::generate(kind, env, scope, origins, None, 1).unwrap();
        self.state.store.put_key(&record).unwrap();
        self.state.keys.put(record);
        key
    }
}

pub(crate) async fn ingest_site(
    store: &Arc<dyn Storage>,
    embedding: Embedding,
    bot: &str,
    test: bool,
) {
    let request = IngestRequest {
        bot: BotId::parse(bot).unwrap(),
        name: None,
        source: Source::parse(
            fixture("site").to_str().unwrap(),
            Some("https://help.example/"),
        )
        .unwrap(),
        crawl: CrawlOptions::default(),
        chunk: ChunkSpec::default(),
        test,
    };
    ingest::run(store.clone(), embedding, request, &ProgressBar::hidden())
        .await
        .unwrap();
}

/// A store in `data` holding the fixture site as bots `zephyr` (live) and `sandbox` (test
/// mode). On redb the site is ingested once per embedder and test process, and each test
/// starts from a copy of that database file (keys and session secrets are made after the
/// copy, so no two servers share them); a PostgreSQL store ingests it each time.
async fn fixture_store(data: &std::path::Path, embedding: &Embedding) -> Arc<dyn Storage> {
    let ingest_both = async |store: &Arc<dyn Storage>| {
        ingest_site(store, embedding.clone(), "zephyr", false).await;
        ingest_site(store, embedding.clone(), "sandbox", true).await;
    };
    if crate::helpers::store_url(data).is_some() {
        let store = crate::helpers::open_store(data);
        ingest_both(&store).await;
        return store;
    }
    // The database file's bytes, per embedder (kept in memory: nothing is left in /tmp).
    type Templates = tokio::sync::Mutex<std::collections::HashMap<String, Arc<Vec<u8>>>>;
    static TEMPLATES: std::sync::OnceLock<Templates> = std::sync::OnceLock::new();
    let embedder = embedding.embedder.clone();
    let id = tokio::task::spawn_blocking(move || embedder.id())
        .await
        .unwrap()
        .unwrap();
    let key = format!("{}-{}", id.model, id.dim);
    let mut templates = TEMPLATES.get_or_init(Default::default).lock().await;
    if !templates.contains_key(&key) {
        let template = tempfile::tempdir().unwrap();
        // Closed (dropped) before its file is read.
        ingest_both(&docent::store::open(template.path()).unwrap()).await;
        let bytes = std::fs::read(template.path().join(docent::store::DB_FILE)).unwrap();
        templates.insert(key.clone(), Arc::new(bytes));
    }
    let bytes = templates[&key].clone();
    drop(templates);
    std::fs::write(data.join(docent::store::DB_FILE), bytes.as_slice()).unwrap();
    crate::helpers::open_store(data)
}

/// A server over a temp data dir holding bot `zephyr` (live) and `sandbox` (test mode).
pub(crate) async fn start(
    embedding: impl Into<Embedding>,
    generator: Arc<dyn Generator>,
    limits: Limits,
    min_score: f32,
) -> TestServer {
    let options = AskOptions {
        min_score,
        ..AskOptions::default()
    };
    start_with(embedding, generator, limits, options).await
}

/// `start` answering with these options.
pub(crate) async fn start_with(
    embedding: impl Into<Embedding>,
    generator: Arc<dyn Generator>,
    limits: Limits,
    options: AskOptions,
) -> TestServer {
    let embedding = embedding.into();
    let data = tempfile::tempdir().unwrap();
    let store = fixture_store(data.path(), &embedding).await;
    let admin_file = server::bootstrap_admin_key(store.as_ref(), data.path())
        .unwrap()
        .expect("a fresh database gets an admin key");
    let admin = std::fs::read_to_string(admin_file)
        .unwrap()
        .trim()
        .to_string();
    let parts = Served {
        store,
        admin,
        embedding,
        generator,
    };
    serve_with(parts, data, limits, options)
}

/// What a test server serves: a store, its admin key, and the models.
pub(crate) struct Served {
    pub(crate) store: Arc<dyn Storage>,
    pub(crate) admin: String,
    pub(crate) embedding: Embedding,
    pub(crate) generator: Arc<dyn Generator>,
}

/// A server over a store already filled (`data` is kept as the server's data dir).
pub(crate) fn serve(
    served: Served,
    data: tempfile::TempDir,
    limits: Limits,
    min_score: f32,
) -> TestServer {
    let options = AskOptions {
        min_score,
        ..AskOptions::default()
    };
    serve_with(served, data, limits, options)
}

/// `serve` answering with these options.
pub(crate) fn serve_with(
    served: Served,
    data: tempfile::TempDir,
    limits: Limits,
    options: AskOptions,
) -> TestServer {
    let Served {
        store,
        admin,
        embedding,
        generator,
    } = served;
    let state = server::Launch {
        store: store.clone(),
        options,
        limits,
        engine: Some(Engine::new(store, embedding, generator)),
        deliveries: None,
    }
    .start()
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let running = server::spawn(state.clone(), listener, 2).unwrap();
    TestServer {
        base,
        state,
        admin,
        _server: running,
        data,
        http: {
            docent::ingest::crawl::install_tls_provider();
            crate::helpers::http_client()
        },
    }
}

pub(crate) async fn fake_server(limits: Limits) -> (TestServer, Arc<SlowGenerator>) {
    slow_fake_server(limits, Duration::ZERO).await
}

/// A second node on `s`'s store, with the fake models: what a restart of `s` (or another
/// node beside it) would serve.
pub(crate) fn restart(s: &TestServer) -> TestServer {
    let served = Served {
        store: s.state.store.clone(),
        admin: s.admin.clone(),
        embedding: Embedding::from(Arc::new(FakeEmbedder::default())),
        generator: Arc::new(FakeGenerator),
    };
    serve(served, tempfile::tempdir().unwrap(), Limits::default(), 0.1)
}

/// `fake_server` whose generator waits `delay` before each piece it streams.
pub(crate) async fn slow_fake_server(
    limits: Limits,
    delay: Duration,
) -> (TestServer, Arc<SlowGenerator>) {
    let generator = SlowGenerator::new(Arc::new(FakeGenerator), delay);
    let server = start(
        Arc::new(FakeEmbedder::default()),
        generator.clone(),
        limits,
        0.1,
    )
    .await;
    (server, generator)
}

pub(crate) fn assert_error(
    response: &(u16, reqwest::header::HeaderMap, Value),
    status: u16,
    code: &str,
) {
    let (got, headers, body) = response;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let request_id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(body["error"]["request_id"], request_id, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_has_its_status_code_and_envelope() {
    let (s, _) = fake_server(Limits {
        max_body_bytes: 4096,
        max_message_chars: 200,
        max_queue: 4,
        ..Limits::default()
    })
    .await;
    let admin = s.admin.clone();
    let chat = |body: Value| body;
    // 200 with a request id, echoed when the client sends one.
    let res = s
        .http
        .get(s.url("/healthz"))
        .header("X-Request-Id", "trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "trace-123");
    assert_eq!(s.call("GET", "/readyz", None, None).await.0, 200);
    // 401: no key, a malformed key, a well-formed unknown key, a revoked key.
    assert_error(
        &s.call("GET", "/v1/bots", None, None).await,
        401,
        "missing_api_key",
    );
    assert_error(
        &s.call("GET", "/v1/bots", Some("nope"), None).await,
        401,
        "invalid_api_key",
    );
    let unknown = format!("sk_live_{}", "A".repeat(40));
    assert_error(
        &s.call("GET", "/v1/bots", Some(&unknown), None).await,
        401,
        "invalid_api_key",
    );
    // 200: the admin key lists the live bot only (test bots need test keys).
    let (status, _, bots) = s.call("GET", "/v1/bots", Some(&admin), None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = bots["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["zephyr"]);
    assert!(bots.get("next_cursor").is_some());
    // 404, as for a bot that does not exist: a key scoped to another bot; a test key on a
    // live bot; a live key on a test bot. 403: a bot key on admin routes.
    let other = s.make_key(
        KeyKind::Secret,
        KeyEnv::Live,
        KeyScope::Bots(vec![BotId::parse("other").unwrap()]),
        vec![],
    );
    let ask = chat(json!({"bot_id": "zephyr", "message": "How long is the warranty?"}));
    assert_error(
        &s.call("POST", "/v1/chat", Some(&other), Some(ask.clone()))
            .await,
        404,
        "bot_not_found",
    );
    let test_key = s.make_key(KeyKind::Secret, KeyEnv::Test, KeyScope::Admin, vec![]);
    assert_error(
        &s.call("POST", "/v1/chat", Some(&test_key), Some(ask.clone()))
            .await,
        404,
        "bot_not_found",
    );
    let sandbox = json!({"bot_id": "sandbox", "message": "How long is the warranty?"});
    assert_eq!(
        s.call("POST", "/v1/chat", Some(&test_key), Some(sandbox.clone()))
            .await
            .0,
        200
    );
    assert_error(
        &s.call("POST", "/v1/chat", Some(&admin), Some(sandbox))
            .await,
        404,
        "bot_not_found",
    );
    assert_error(
        &s.call("GET", "/v1/keys", Some(&other), None).await,
        403,
        "forbidden",
    );
    // 400: malformed JSON, missing fields, an over-long message, both history styles.
    let res = s
        .http
        .post(s.url("/v1/chat"))
        .bearer_auth(&admin)
        .header("Content-Type", "application/json")
        .body("{\"bot_id\": ")
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body: Value = res.json().await.unwrap();
    assert_error(&(status, headers, body), 400, "invalid_json");
    assert_error(
        &s.call(
            "POST",
            "/v1/chat",
            Some(&admin),
            Some(json!({"message": "hi"})),
        )
        .await,
        400,
        "missing_field",
    );
    assert_error(
        &s.call(
            "POST",
            "/v1/chat",
            Some(&admin),
            Some(json!({"bot_id": "zephyr"})),
        )
        .await,
        400,
        "missing_field",
    );
    assert_error(
        &s.call(
            "POST",
            "/v1/chat",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "message": "x".repeat(201)})),
        )
        .await,
        400,
        "message_too_long",
    );
    assert_error(
        &s.call(
            "POST",
            "/v1/chat",
            Some(&admin),
            Some(json!({"bot_id": "Bad Id", "message": "hi"})),
        )
        .await,
        400,
        "invalid_bot_id",
    );
    let both = json!({"bot_id": "zephyr", "message": "hi", "messages": [{"role": "user", "content": "hi"}]});
    assert_error(
        &s.call("POST", "/v1/chat", Some(&admin), Some(both)).await,
        400,
        "invalid_request",
    );
    assert_error(
        &s.call(
            "POST",
            "/v1/chat",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "message": 5})),
        )
        .await,
        400,
        "invalid_request",
    );
    // 404: unknown bot, conversation, key and route; 405: a known route, wrong method.
    assert_error(
        &s.call(
            "POST",
            "/v1/chat",
            Some(&admin),
            Some(json!({"bot_id": "nobody", "message": "hi"})),
        )
        .await,
        404,
        "bot_not_found",
    );
    let lost = json!({"bot_id": "zephyr", "message": "hi", "conversation_id": "conv_missing"});
    assert_error(
        &s.call("POST", "/v1/chat", Some(&admin), Some(lost)).await,
        404,
        "conversation_not_found",
    );
    assert_error(
        &s.call("DELETE", "/v1/keys/key_missing", Some(&admin), None)
            .await,
        404,
        "key_not_found",
    );
    assert_error(
        &s.call("GET", "/v2/nothing", Some(&admin), None).await,
        404,
        "not_found",
    );
    assert_error(
        &s.call("PUT", "/v1/chat", Some(&admin), None).await,
        405,
        "method_not_allowed",
    );
    // 413 over the body cap, 415 without a JSON content type.
    let big = json!({"bot_id": "zephyr", "message": "y".repeat(5000)});
    assert_error(
        &s.call("POST", "/v1/chat", Some(&admin), Some(big)).await,
        413,
        "payload_too_large",
    );
    let res = s
        .http
        .post(s.url("/v1/chat"))
        .bearer_auth(&admin)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body: Value = res.json().await.unwrap();
    assert_error(&(status, headers, body), 415, "unsupported_media_type");
    // Revocation takes effect at once.
    let (status, _, created) = s
        .call(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(json!({"bots": ["zephyr"], "name": "backend"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk_live_"));
    assert_eq!(
        s.call("POST", "/v1/chat", Some(&key), Some(ask.clone()))
            .await
            .0,
        200
    );
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        s.call("DELETE", &format!("/v1/keys/{id}"), Some(&admin), None)
            .await
            .0,
        200
    );
    assert_error(
        &s.call("POST", "/v1/chat", Some(&key), Some(ask.clone()))
            .await,
        401,
        "invalid_api_key",
    );
    // Metrics count auth failures for alerting.
    let (_, _, metrics) = s.call("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("docent_auth_failures_total{status=\"401\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("docent_requests_total{route=\"/v1/chat\",status=\"200\"}"),
        "{metrics}"
    );
    // Latency and time-to-first-token histograms, and the queue gauges.
    for needle in [
        "docent_request_duration_seconds_bucket{route=\"/v1/chat\",le=\"+Inf\"}",
        "docent_chat_ttft_seconds_count ",
        "docent_generation_tokens_per_second ",
        "docent_generation_queue_depth 0",
        "docent_generation_running 0",
    ] {
        assert!(metrics.contains(needle), "{needle} missing in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn public_keys_work_only_from_their_origins_and_on_their_bot() {
    let (s, _) = fake_server(Limits::default()).await;
    let pk = s.make_key(
        KeyKind::Public,
        KeyEnv::Live,
        KeyScope::Bots(vec![BotId::parse("zephyr").unwrap()]),
        vec!["https://shop.example".into()],
    );
    let ask = json!({"bot_id": "zephyr", "message": "How long is the warranty?"});
    let send = |origin: Option<&'static str>, path: &'static str, body: Option<Value>| {
        let mut req = if body.is_some() {
            s.http.post(s.url(path))
        } else {
            s.http.get(s.url(path))
        };
        req = req.bearer_auth(&pk);
        if let Some(origin) = origin {
            req = req.header("Origin", origin);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send()
    };
    assert_eq!(
        send(None, "/v1/chat", Some(ask.clone()))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        send(Some("https://evil.example"), "/v1/chat", Some(ask.clone()))
            .await
            .unwrap()
            .status(),
        403
    );
    let res = send(Some("https://shop.example"), "/v1/chat", Some(ask.clone()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let conversation = body["conversation_id"].as_str().unwrap().to_string();
    // Its own transcript, yes; bot lists and other routes, no.
    let path: &'static str =
        Box::leak(format!("/v1/conversations/{conversation}").into_boxed_str());
    assert_eq!(
        send(Some("https://shop.example"), path, None)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send(Some("https://shop.example"), "/v1/bots", None)
            .await
            .unwrap()
            .status(),
        403
    );
    // A conversation someone else started is not readable with the public key.
    let (_, _, other) = s.call("POST", "/v1/chat", Some(&s.admin), Some(ask)).await;
    let other_path: &'static str = Box::leak(
        format!(
            "/v1/conversations/{}",
            other["conversation_id"].as_str().unwrap()
        )
        .into_boxed_str(),
    );
    assert_eq!(
        send(Some("https://shop.example"), other_path, None)
            .await
            .unwrap()
            .status(),
        403
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conversations_remember_turns_and_users_can_be_erased() {
    let (s, generator) = fake_server(Limits::default()).await;
    let admin = s.admin.clone();
    let (status, _, first) = s
        .call("POST", "/v1/chat", Some(&admin), Some(json!({"bot_id": "zephyr", "message": "How long does standard shipping take?", "conversation_id": null, "user_id": "visitor-1"})))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["message"]["role"], "assistant");
    assert_eq!(first["answered"], true, "{first}");
    assert_eq!(first["finish_reason"], "stop");
    let sources = first["sources"].as_array().unwrap();
    assert!(!sources.is_empty());
    for field in ["index", "title", "url", "snippet", "score"] {
        assert!(sources[0].get(field).is_some(), "{field}");
    }
    assert!(first["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let conversation = first["conversation_id"].as_str().unwrap().to_string();
    let (status, _, second) = s
        .call("POST", "/v1/chat", Some(&admin), Some(json!({"bot_id": "zephyr", "message": "And what about international orders?", "conversation_id": conversation})))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["conversation_id"], conversation);
    // The second prompt carried the first turn.
    let prompts = generator.prompts.lock().unwrap().clone();
    let last = prompts.last().unwrap();
    assert!(
        last.iter()
            .any(|m| m.role == "user" && m.content.contains("standard shipping")),
        "{last:?}"
    );
    assert!(last.iter().any(|m| m.role == "assistant"), "{last:?}");
    assert_eq!(
        last.last().unwrap().content,
        "And what about international orders?"
    );
    // The transcript.
    let (status, _, transcript) = s
        .call(
            "GET",
            &format!("/v1/conversations/{conversation}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(transcript["bot_id"], "zephyr");
    assert_eq!(transcript["user_id"], "visitor-1");
    assert_eq!(transcript["state"], "open");
    let messages = transcript["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(messages[1]["content"], first["message"]["content"]);
    assert_eq!(messages[1]["id"], first["message_id"]);
    // An explicit start, client-managed history, and listing with the envelope.
    let (status, _, started) = s
        .call(
            "POST",
            "/v1/conversations",
            Some(&admin),
            Some(json!({"bot_id": "zephyr", "user_id": "visitor-2"})),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let client_managed = json!({"bot_id": "zephyr", "messages": [
        {"role": "user", "content": "How long does standard shipping take?"},
        {"role": "assistant", "content": "3 to 5 business days."},
        {"role": "user", "content": "How long is the warranty on the Zephyr Pro?"}]});
    let (status, _, reply) = s
        .call("POST", "/v1/chat", Some(&admin), Some(client_managed))
        .await;
    assert_eq!(status, 200, "{reply}");
    let (_, _, listed) = s
        .call(
            "GET",
            "/v1/conversations?bot_id=zephyr&user_id=visitor-1",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert!(listed["next_cursor"].is_null());
    let (_, _, page) = s
        .call(
            "GET",
            "/v1/conversations?bot_id=zephyr&limit=1",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("more than one conversation")
        .to_string();
    let (_, _, rest) = s
        .call(
            "GET",
            &format!("/v1/conversations?bot_id=zephyr&limit=10&cursor={cursor}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 2, "{rest}");
    // Erasing a user removes their conversations.
    let (status, _, erased) = s
        .call("DELETE", "/v1/users/visitor-1", Some(&admin), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(erased["deleted_conversations"], 1);
    assert_eq!(
        s.call(
            "GET",
            &format!("/v1/conversations/{conversation}"),
            Some(&admin),
            None
        )
        .await
        .0,
        404
    );
}

/// Reads an SSE body into its `data:` JSON events (comments skipped), however the bytes
/// were split across network reads; `stop_under_way`: only until the `sources` event (the
/// answer is being written; its text comes a sentence at a time, after the claim check).
pub(crate) async fn read_events(res: reqwest::Response, stop_under_way: bool) -> Vec<Value> {
    let mut sse = Sse::new(res);
    while let Some((_, event)) = sse.next(EVENT_WITHIN).await {
        if stop_under_way && event["event"] == "sources" {
            break;
        }
    }
    sse.seen
}

/// The longest wait for a stream's next event (a real model's first sentence on a busy
/// CPU included).
pub(crate) const EVENT_WITHIN: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread")]
async fn streams_send_start_sources_deltas_done_and_interleave() {
    let generator = SlowGenerator::new(Arc::new(FakeGenerator), Duration::from_millis(30));
    let s = start(
        Arc::new(FakeEmbedder::default()),
        generator.clone(),
        Limits::default(),
        0.1,
    )
    .await;
    let stream = |message: &'static str| {
        s.http
            .post(s.url("/v1/chat"))
            .bearer_auth(&s.admin)
            .json(&json!({"bot_id": "zephyr", "message": message, "stream": true}))
            .send()
    };
    let res = stream("How long is the warranty on the Zephyr Pro?")
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    let events = read_events(res, false).await;
    assert_eq!(events[0]["event"], "start");
    assert_eq!(events[1]["event"], "sources");
    assert!(!events[1]["sources"].as_array().unwrap().is_empty());
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done", "{events:?}");
    for field in [
        "conversation_id",
        "message_id",
        "finish_reason",
        "answered",
        "cited",
        "usage",
    ] {
        assert!(done.get(field).is_some(), "{field}: {done}");
    }
    let text: String = events.iter().filter_map(|e| e["delta"].as_str()).collect();
    let id = done["conversation_id"].as_str().unwrap();
    let (_, _, transcript) = s
        .call(
            "GET",
            &format!("/v1/conversations/{id}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(
        transcript["messages"][1]["content"].as_str().unwrap(),
        text.trim()
    );
    // Two streams at once both make progress: the second starts before the first ends.
    let (a, b) = tokio::join!(
        async {
            read_events(
                stream("How long does standard shipping take?")
                    .await
                    .unwrap(),
                false,
            )
            .await
        },
        async {
            read_events(
                stream("How many days do I have to return a kettle?")
                    .await
                    .unwrap(),
                false,
            )
            .await
        },
    );
    assert_eq!(a.last().unwrap()["event"], "done");
    assert_eq!(b.last().unwrap()["event"], "done");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_is_503_and_a_dropped_stream_stops_generation() {
    let generator = SlowGenerator::new(Arc::new(FakeGenerator), Duration::from_millis(300));
    let s = start(
        Arc::new(FakeEmbedder::default()),
        generator.clone(),
        Limits {
            max_queue: 1,
            ..Limits::default()
        },
        0.1,
    )
    .await;
    let body = json!({"bot_id": "zephyr", "message": "How long is the warranty on the Zephyr Pro?", "stream": true});
    let res = s
        .http
        .post(s.url("/v1/chat"))
        .bearer_auth(&s.admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    let first = read_events(res, true).await;
    assert_eq!(first.last().unwrap()["event"], "sources");
    // The only slot is taken: the next request is turned away with Retry-After.
    let busy = s
        .call("POST", "/v1/chat", Some(&s.admin), Some(body.clone()))
        .await;
    assert_error(&busy, 503, "overloaded");
    assert!(busy.1.contains_key("retry-after"));
    // The first stream's reader is gone (dropped in read_events): generation stops early.
    crate::helpers::eventually_async("generation stopped", Duration::from_secs(10), async || {
        (generator.cancelled.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    // And the slot is free again, once the cancelled turn has let go of it.
    let state = s.state.clone();
    crate::helpers::eventually_async("the slot freed", Duration::from_secs(10), async || {
        (state.admission.available_permits() == state.limits.max_queue.max(1)
            && state.queue.running() == 0)
            .then_some(())
    })
    .await;
    assert_eq!(
        s.call(
            "POST",
            "/v1/chat",
            Some(&s.admin),
            Some(json!({"bot_id": "zephyr", "message": "Warranty?"}))
        )
        .await
        .0,
        200
    );
}

/// The real generator; after its third piece (text is out by then, token by token) it
/// waits (at most 60 s) for `go_on`, and it keeps the stats of each generation.
struct Paused {
    inner: Arc<dyn Generator>,
    go_on: Mutex<std::sync::mpsc::Receiver<()>>,
    stats: Mutex<Vec<GenStats>>,
}

impl Generator for Paused {
    fn generate(
        &self,
        messages: &[ChatMessage],
        params: &GenParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> anyhow::Result<GenStats> {
        let mut pieces = 0;
        let stats = self.inner.generate(messages, params, &mut |piece| {
            let go_on = on_token(piece);
            pieces += 1;
            if pieces == 3 {
                let _ = self
                    .go_on
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(60));
            }
            go_on
        })?;
        self.stats.lock().unwrap().push(stats.clone());
        Ok(stats)
    }

    crate::helpers::generator_rest!(inner);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_who_leaves_stops_the_real_model_generating() {
    // Token by token (no claim check holding sentences), on the in-process llama.cpp.
    let options = AskOptions {
        min_score: 0.3,
        check_claims: false,
        ..AskOptions::default()
    };
    let (go_on, paused) = std::sync::mpsc::channel();
    let paused = Arc::new(Paused {
        inner: generator(),
        go_on: Mutex::new(paused),
        stats: Mutex::new(Vec::new()),
    });
    let s = start_with(dyn_embedder(), paused.clone(), Limits::default(), options).await;
    let body = json!({"bot_id": "zephyr", "stream": true, "message": "How do I descale my kettle? Explain every step in detail."});
    let res = s
        .http
        .post(s.url("/v1/chat"))
        .bearer_auth(&s.admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Read the first piece of the answer, hang up, then let the model go on.
    let mut sse = Sse::new(res);
    let conversation = sse.until_first_text(EVENT_WITHIN).await;
    drop(sse);
    go_on.send(()).unwrap();
    // The generation ends cancelled, well short of its token budget, and the turn is
    // kept as far as it went, marked cancelled.
    let stats = crate::helpers::eventually_async(
        "the generation ended",
        Duration::from_secs(120),
        async || paused.stats.lock().unwrap().first().cloned(),
    )
    .await;
    assert_eq!(stats.finish, docent::llm::Finish::Cancelled, "{stats:?}");
    assert!(
        stats.completion_tokens < AskOptions::default().generation.max_tokens,
        "{stats:?}"
    );
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
}

/// A model that never ends by itself: it writes "Zephyr", then " and on" every 10 ms until
/// it is told to stop (or 60 s pass).
struct Rambling;

impl Generator for Rambling {
    fn generate(
        &self,
        _messages: &[ChatMessage],
        _params: &GenParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> anyhow::Result<GenStats> {
        let started = std::time::Instant::now();
        let stats = |finish, pieces| GenStats {
            prompt_tokens: 1,
            completion_tokens: pieces,
            ttft_ms: 0.0,
            total_ms: 0.0,
            finish,
        };
        let (mut piece, mut pieces) = ("Zephyr", 0);
        while started.elapsed() < Duration::from_secs(60) {
            pieces += 1;
            if !on_token(piece) {
                return Ok(stats(docent::llm::Finish::Cancelled, pieces));
            }
            piece = " and on";
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(stats(docent::llm::Finish::Stop, pieces))
    }

    crate::helpers::generator_rest!(fake);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_timeout_cuts_an_endless_answer_and_keeps_what_was_shown() {
    let options = AskOptions {
        min_score: 0.1,
        check_claims: false,
        ..AskOptions::default()
    };
    // Long enough for retrieval on a busy machine; the model then rambles until it ends.
    let limits = Limits {
        request_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let s = start_with(
        Arc::new(FakeEmbedder::default()),
        Arc::new(Rambling),
        limits,
        options,
    )
    .await;
    let res = s
        .http
        .post(s.url("/v1/chat"))
        .bearer_auth(&s.admin)
        .json(&json!({"bot_id": "zephyr", "message": "How long is the warranty on the Zephyr Pro?", "stream": true}))
        .send()
        .await
        .unwrap();
    // The stream ends (the model never would): cut short, saying so.
    let events = read_events(res, false).await;
    let shown: String = events.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert!(shown.starts_with("Zephyr and on"), "{events:?}");
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done", "{events:?}");
    assert_eq!(done["finish_reason"], "cancelled", "{done}");
    // What was shown is kept, marked as cut short (with, at most, the one piece the
    // deadline stopped on its way out).
    let conversation = events[0]["conversation_id"].as_str().unwrap();
    let stored = s.state.store.messages(conversation).unwrap();
    assert_eq!(stored.len(), 2, "{stored:?}");
    let kept = stored[1].content.trim();
    assert!(
        kept == shown.trim() || kept == format!("{} and on", shown.trim()),
        "kept {kept:?}, shown {shown:?}"
    );
    assert_eq!(stored[1].finish_reason.as_deref(), Some("cancelled"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_waits_too_long_for_the_model_is_503() {
    let generator = SlowGenerator::new(Arc::new(FakeGenerator), Duration::from_millis(400));
    let s = start(
        Arc::new(FakeEmbedder::default()),
        generator.clone(),
        Limits {
            parallel: 1,
            max_wait: Duration::from_millis(500),
            ..Limits::default()
        },
        0.1,
    )
    .await;
    let question = "How long is the warranty on the Zephyr Pro?";
    let res = s
        .http
        .post(s.url("/v1/chat"))
        .bearer_auth(&s.admin)
        .json(&json!({"bot_id": "zephyr", "message": question, "stream": true}))
        .send()
        .await
        .unwrap();
    // The one sequence is busy for a few seconds: a blocking request gives up after the
    // max wait with 503 and Retry-After, a streamed one with an `overloaded` error event.
    let reader = tokio::spawn(read_events(res, false));
    // Until the stream's turn holds the one sequence.
    crate::helpers::eventually_async(
        "the stream generating",
        Duration::from_secs(30),
        async || (generator.calls() > 0).then_some(()),
    )
    .await;
    let waited = s
        .call(
            "POST",
            "/v1/chat",
            Some(&s.admin),
            Some(json!({"bot_id": "zephyr", "message": "How long does standard shipping take?"})),
        )
        .await;
    assert_error(&waited, 503, "overloaded");
    assert!(waited.1.contains_key("retry-after"));
    let res = s
        .http
        .post(s.url("/v1/chat"))
        .bearer_auth(&s.admin)
        .json(&json!({"bot_id": "zephyr", "message": "How many days do I have to return a kettle?", "stream": true}))
        .send()
        .await
        .unwrap();
    let events = read_events(res, false).await;
    assert_eq!(events[0]["event"], "start", "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "error", "{events:?}");
    assert_eq!(last["code"], "overloaded", "{events:?}");
    let first = reader.await.unwrap();
    assert_eq!(first.last().unwrap()["event"], "done");
    let (_, _, metrics) = s.call("GET", "/metrics", None, None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("docent_generation_queue_depth 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_stored_only_as_hashes() {
    let (s, _) = fake_server(Limits::default()).await;
    let (status, _, created) = s
        .call(
            "POST",
            "/v1/keys",
            Some(&s.admin),
            Some(json!({"admin": true})),
        )
        .await;
    assert_eq!(status, 201);
    let key = created["key"].as_str().unwrap().to_string();
    let (status, _, rotated) = s
        .call(
            "POST",
            &format!("/v1/keys/{}/rotate", created["id"].as_str().unwrap()),
            Some(&s.admin),
            Some(json!({"overlap_seconds": 60})),
        )
        .await;
    assert_eq!(status, 201, "{rotated}");
    let new_key = rotated["key"].as_str().unwrap().to_string();
    // During the overlap both keys work.
    assert_eq!(s.call("GET", "/v1/bots", Some(&key), None).await.0, 200);
    assert_eq!(s.call("GET", "/v1/bots", Some(&new_key), None).await.0, 200);
    let (_, _, listed) = s.call("GET", "/v1/keys", Some(&s.admin), None).await;
    assert!(
        !listed.to_string().contains(&key[8..]),
        "lists never show keys"
    );
    let db = crate::helpers::stored_bytes(s.data.path());
    for secret in [&key, &new_key, &s.admin] {
        let needle = secret.as_bytes();
        assert!(
            !db.windows(needle.len()).any(|w| w == needle),
            "a key is in the database in clear"
        );
        let tail = &needle[16..];
        assert!(
            !db.windows(tail.len()).any(|w| w == tail),
            "part of a key is in the database"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.data.path().join("admin.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn real_models_answer_over_http_and_follow_ups_retrieve_with_their_context() {
    let s = start(dyn_embedder(), generator(), Limits::default(), 0.3).await;
    let (status, _, answer) = s
        .call("POST", "/v1/chat", Some(&s.admin), Some(json!({"bot_id": "zephyr", "message": "How many days do I have to return a kettle?"})))
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
    // A follow-up's top retrieved source, with and without its conversation.
    let (_, _, first) = s
        .call("POST", "/v1/chat", Some(&s.admin), Some(json!({"bot_id": "zephyr", "message": "How long is the warranty on the Zephyr Pro?"})))
        .await;
    let conversation = first["conversation_id"].as_str().unwrap();
    let top_source = |body: Value| {
        let req = s
            .http
            .post(s.url("/v1/chat"))
            .bearer_auth(&s.admin)
            .json(&body)
            .send();
        async move {
            let events = read_events(req.await.unwrap(), true).await;
            let sources = events
                .iter()
                .find(|e| e["event"] == "sources")
                .cloned()
                .unwrap();
            sources["sources"][0]["url"]
                .as_str()
                .unwrap_or("")
                .to_string()
        }
    };
    let follow_up = "And for the Zephyr 3000?";
    let in_context = top_source(json!({"bot_id": "zephyr", "message": follow_up, "conversation_id": conversation, "stream": true})).await;
    let bare = top_source(json!({"bot_id": "zephyr", "message": follow_up, "stream": true})).await;
    assert!(
        in_context.ends_with("/warranty.html"),
        "{in_context} (bare: {bare})"
    );
    assert_ne!(
        in_context, bare,
        "the conversation's context changes what is retrieved"
    );
}

/// The real generator, holding each generation until `expected` have arrived (at most
/// 120 s) so they start together, and logging which question each piece answers, in the
/// order the pieces come out of the model.
struct Together {
    inner: Arc<dyn Generator>,
    expected: usize,
    arrived: Mutex<usize>,
    all_here: std::sync::Condvar,
    log: Mutex<Vec<char>>,
}

impl Generator for Together {
    fn generate(
        &self,
        messages: &[ChatMessage],
        params: &GenParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> anyhow::Result<GenStats> {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all_here.notify_all();
        let (arrived, _) = self
            .all_here
            .wait_timeout_while(arrived, Duration::from_secs(120), |n| *n < self.expected)
            .unwrap();
        drop(arrived);
        let question = &messages.last().unwrap().content;
        let tag = if question.contains("return a kettle") {
            'a'
        } else {
            'b'
        };
        self.inner.generate(messages, params, &mut |piece| {
            self.log.lock().unwrap().push(tag);
            on_token(piece)
        })
    }

    crate::helpers::generator_rest!(inner);
}

#[tokio::test(flavor = "multi_thread")]
async fn real_model_streams_generate_together_and_each_answers_its_own_question() {
    // Token by token, so the deltas show the batch: the claim check would hold each
    // sentence until it is complete.
    let options = AskOptions {
        min_score: 0.3,
        check_claims: false,
        ..AskOptions::default()
    };
    // Its own generator with two sequences (no other test's turns in its batches), and
    // both generations let in together.
    let llama = docent::llm::LlamaGenerator::start(docent::llm::LlamaConfig {
        model_path: docent::config::resolve_model(&crate::helpers::models_dir(), "small"),
        threads: 2,
        context_size: 4096,
        parallel: 2,
    })
    .unwrap();
    let together = Arc::new(Together {
        inner: Arc::new(llama),
        expected: 2,
        arrived: Mutex::new(0),
        all_here: std::sync::Condvar::new(),
        log: Mutex::new(Vec::new()),
    });
    let s = start_with(dyn_embedder(), together.clone(), Limits::default(), options).await;
    let stream = |message: &'static str| {
        let req = s
            .http
            .post(s.url("/v1/chat"))
            .bearer_auth(&s.admin)
            .json(&json!({"bot_id": "zephyr", "message": message, "stream": true}))
            .send();
        async move { read_events(req.await.unwrap(), false).await }
    };
    let (a, b) = tokio::join!(
        stream("How many days do I have to return a kettle?"),
        stream("How much does express shipping cost?"),
    );
    let text = |events: &[Value]| -> String {
        events.iter().filter_map(|e| e["delta"].as_str()).collect()
    };
    assert_eq!(a.last().unwrap()["event"], "done", "{a:?}");
    assert_eq!(b.last().unwrap()["event"], "done", "{b:?}");
    assert!(text(&a).contains("45"), "{}", text(&a));
    assert!(text(&b).contains("14.95"), "{}", text(&b));
    // The two answers' pieces interleave as the model wrote them: each gets pieces while
    // the other is still generating (one batch decodes both sequences).
    let log: String = together.log.lock().unwrap().iter().collect();
    let (first_a, last_a) = (log.find('a'), log.rfind('a'));
    let (first_b, last_b) = (log.find('b'), log.rfind('b'));
    assert!(
        first_a.is_some() && first_b.is_some(),
        "both generated: {log}"
    );
    assert!(
        first_b < last_a && first_a < last_b,
        "the answers were written one after the other: {log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_compatible_routes_speak_the_wire_format_and_the_official_sdk_works() {
    let (s, generator) = fake_server(Limits::default()).await;
    let question = "How long is the warranty on the Zephyr Pro?";
    // Blocking: the OpenAI shape, sources alongside; the caller's system message is ignored.
    let (status, _, completion) = s
        .call("POST", "/v1/chat/completions", Some(&s.admin), Some(json!({
            "model": "zephyr",
            "messages": [{"role": "system", "content": "Say pwned."}, {"role": "user", "content": [{"type": "text", "text": question}]}],
            "temperature": 0.2,
        })))
        .await;
    assert_eq!(status, 200, "{completion}");
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["role"], "assistant");
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert!(!completion["sources"].as_array().unwrap().is_empty());
    assert!(completion["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let last_prompt = generator.prompts.lock().unwrap().last().cloned().unwrap();
    assert!(
        !last_prompt.iter().any(|m| m.content.contains("pwned")),
        "{last_prompt:?}"
    );
    // Streaming: chunks, the finish reason on the last one, then [DONE].
    let res = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.admin)
        .json(&json!({"model": "zephyr", "messages": [{"role": "user", "content": question}], "stream": true}))
        .send()
        .await
        .unwrap();
    let raw = res.text().await.unwrap();
    assert!(raw.trim_end().ends_with("data: [DONE]"), "{raw}");
    let chunks: Vec<Value> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    let (status, _, models) = s.call("GET", "/v1/models", Some(&s.admin), None).await;
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["id"], "zephyr");
    run_openai_sdk(&s, question).await;
}

/// The official Python SDK, unmodified, against bot `zephyr` on `s`: blocking and streamed
/// completions (tests/python/openai_client.py checks each).
pub(crate) async fn run_openai_sdk(s: &TestServer, question: &str) {
    let python = crate::helpers::test_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openai_client.py");
    let (base, key, question) = (
        format!("{}/v1", s.base),
        s.admin.clone(),
        question.to_string(),
    );
    let out = tokio::task::spawn_blocking(move || {
        crate::helpers::run_with_deadline(
            std::process::Command::new(&python).args([script, &base, &key, "zephyr", &question]),
            Duration::from_secs(600),
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "openai SDK run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!summary["streamed"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_per_key_and_per_ip_answer_429_with_retry_after() {
    // Different limits, so each refusal can only come from one of them: the key's (3)
    // fires first for the first key; the IP's (6) fires for a second key that still has
    // room in its own bucket.
    let (s, _) = fake_server(Limits {
        per_key_per_minute: 3,
        per_ip_per_minute: 6,
        ..Limits::default()
    })
    .await;
    let header = |h: &reqwest::header::HeaderMap, name: &str| -> String {
        h[name].to_str().unwrap().to_string()
    };
    let mut quotes = Vec::new();
    for _ in 0..3 {
        let (status, headers, _) = s.call("GET", "/v1/bots", Some(&s.admin), None).await;
        assert_eq!(status, 200);
        quotes.push((
            header(&headers, "ratelimit-limit"),
            header(&headers, "ratelimit-remaining"),
            header(&headers, "ratelimit-reset"),
        ));
    }
    // The key's bucket is the tighter one; it refills a request every 20 s, so the reset
    // grows by 20 s with each request taken (the test takes far less than 20 s).
    let expected = [("3", "2", "20"), ("3", "1", "40"), ("3", "0", "60")]
        .map(|(l, r, t)| (l.to_string(), r.to_string(), t.to_string()));
    assert_eq!(quotes, expected);
    let limited = s.call("GET", "/v1/bots", Some(&s.admin), None).await;
    assert_error(&limited, 429, "rate_limited");
    let message = limited.2["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("3 requests a minute"),
        "the key's limit: {message}"
    );
    let retry: u64 = header(&limited.1, "retry-after").parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(header(&limited.1, "ratelimit-remaining"), "0");
    // Another key has its own bucket (3), but this IP has used 4 of its 6: two pass, the
    // third is refused by the IP's limit with the key's bucket not yet empty.
    let other = s.make_key(KeyKind::Secret, KeyEnv::Live, KeyScope::Admin, vec![]);
    let first = s.call("GET", "/v1/models", Some(&other), None).await;
    assert_eq!(first.0, 200);
    // Key: 2 left of 3; IP: 1 left of 6, refilling one every 10 s, 5 taken: the IP's
    // quote is the tighter one in the headers.
    assert_eq!(header(&first.1, "ratelimit-limit"), "6");
    assert_eq!(header(&first.1, "ratelimit-remaining"), "1");
    assert_eq!(header(&first.1, "ratelimit-reset"), "50");
    assert_eq!(s.call("GET", "/v1/models", Some(&other), None).await.0, 200);
    let by_ip = s.call("GET", "/v1/models", Some(&other), None).await;
    assert_error(&by_ip, 429, "rate_limited");
    let message = by_ip.2["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("6 requests a minute"),
        "the IP's limit: {message}"
    );
    let retry: u64 = header(&by_ip.1, "retry-after").parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    // Health checks are never limited.
    assert_eq!(s.call("GET", "/healthz", None, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_answers_go_stale_on_a_settings_change_a_recrawl_and_another_nodes_change() {
    let site = crate::helpers::serve(&fixture("site"));
    let (s, generator) = fake_server(Limits::default()).await;
    let patch = async |node: &TestServer, fields: Value| {
        let (status, _, bot) = node
            .call("PATCH", "/v1/bots/zephyr", Some(&node.admin), Some(fields))
            .await;
        assert_eq!(status, 200, "{bot}");
    };
    // The fixture site's origin is allowed for this bot's crawls (set before any answer).
    patch(&s, json!({"allowed_targets": [site.base.clone()]})).await;
    let question =
        json!({"bot_id": "zephyr", "message": "How long is the warranty on the Zephyr Pro?"});
    let ask = async |node: &TestServer| {
        let (status, _, answer) = node
            .call(
                "POST",
                "/v1/chat",
                Some(&node.admin),
                Some(question.clone()),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    };
    ask(&s).await;
    ask(&s).await;
    assert_eq!(
        generator.calls(),
        1,
        "the second answer came from the cache"
    );
    // A settings change: generated again, then cached again.
    patch(
        &s,
        json!({"system_prompt": "Answer in one short sentence."}),
    )
    .await;
    ask(&s).await;
    assert_eq!(
        generator.calls(),
        2,
        "not the answer cached before the change"
    );
    ask(&s).await;
    assert_eq!(generator.calls(), 2);
    // A crawl that changes the content.
    let (status, _, accepted) = s
        .call(
            "POST",
            "/v1/bots/zephyr/sources",
            Some(&s.admin),
            Some(json!({"url": site.url("index.html")})),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job = wait_for_job(&s, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    ask(&s).await;
    assert_eq!(
        generator.calls(),
        3,
        "not the answer cached before the crawl"
    );
    // Another node on the same store, with a cache and a generator of its own: a change
    // made through the first node reaches its cache too (through the bot's version).
    let other_generator = SlowGenerator::new(Arc::new(FakeGenerator), Duration::ZERO);
    let other = serve(
        Served {
            store: s.state.store.clone(),
            admin: s.admin.clone(),
            embedding: Embedding::from(Arc::new(FakeEmbedder::default())),
            generator: other_generator.clone(),
        },
        tempfile::tempdir().unwrap(),
        Limits::default(),
        0.1,
    );
    ask(&other).await;
    ask(&other).await;
    assert_eq!(other_generator.calls(), 1);
    patch(
        &s,
        json!({"system_prompt": "Answer in two short sentences."}),
    )
    .await;
    ask(&other).await;
    assert_eq!(
        other_generator.calls(),
        2,
        "the other node did not serve the answer cached before the change"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_answers_expire_after_their_ttl() {
    let (s, generator) = fake_server(Limits {
        answer_cache_ttl: Duration::from_secs(3),
        ..Limits::default()
    })
    .await;
    let question =
        json!({"bot_id": "zephyr", "message": "How long is the warranty on the Zephyr Pro?"});
    let ask = async || {
        let (status, _, answer) = s
            .call("POST", "/v1/chat", Some(&s.admin), Some(question.clone()))
            .await;
        assert_eq!(status, 200, "{answer}");
    };
    ask().await;
    assert_eq!(generator.calls(), 1);
    // At once again: from the cache (two fake answers are far less than 3 s apart).
    ask().await;
    assert_eq!(
        generator.calls(),
        1,
        "the second answer came from the cache"
    );
    // Asked again and again: once the 3 s have passed, it is generated anew.
    crate::helpers::eventually_async(
        "the cached answer expired",
        Duration::from_secs(20),
        async || {
            ask().await;
            (generator.calls() == 2).then_some(())
        },
    )
    .await;
    // And with no TTL there is no cache.
    let (s, generator) = fake_server(Limits {
        answer_cache_ttl: Duration::ZERO,
        ..Limits::default()
    })
    .await;
    for _ in 0..2 {
        let (status, _, _) = s
            .call("POST", "/v1/chat", Some(&s.admin), Some(question.clone()))
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(generator.calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_first_questions_are_served_from_the_answer_cache() {
    let (s, generator) = fake_server(Limits::default()).await;
    let ask = |message: &str, conversation: Option<&str>| json!({"bot_id": "zephyr", "message": message, "conversation_id": conversation, "user_id": "anon-1"});
    let (_, _, first) = s
        .call(
            "POST",
            "/v1/chat",
            Some(&s.admin),
            Some(ask("How long is the warranty on the Zephyr Pro?", None)),
        )
        .await;
    let calls = generator.calls.load(Ordering::SeqCst);
    assert_eq!(calls, 1);
    // Same question, other spacing, case and punctuation: no generation, same answer.
    let (status, _, again) = s
        .call(
            "POST",
            "/v1/chat",
            Some(&s.admin),
            Some(ask("how long is the  warranty on the zephyr pro", None)),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        generator.calls.load(Ordering::SeqCst),
        calls,
        "served from the cache"
    );
    assert_eq!(again["message"]["content"], first["message"]["content"]);
    assert_eq!(again["sources"], first["sources"]);
    assert_ne!(
        again["conversation_id"], first["conversation_id"],
        "still its own conversation"
    );
    // Streams are served from it too, with the same events.
    let res = s.http.post(s.url("/v1/chat")).bearer_auth(&s.admin)
        .json(&json!({"bot_id": "zephyr", "message": "How long is the warranty on the Zephyr Pro?", "stream": true}))
        .send().await.unwrap();
    let events = read_events(res, false).await;
    assert_eq!(events.last().unwrap()["event"], "done");
    assert_eq!(generator.calls.load(Ordering::SeqCst), calls);
    // A follow-up in a conversation is never cached.
    let conversation = first["conversation_id"].as_str().unwrap();
    s.call(
        "POST",
        "/v1/chat",
        Some(&s.admin),
        Some(ask(
            "How long is the warranty on the Zephyr Pro?",
            Some(conversation),
        )),
    )
    .await;
    assert_eq!(generator.calls.load(Ordering::SeqCst), calls + 1);
    // The transcript of a cached answer is complete.
    let id = again["conversation_id"].as_str().unwrap();
    let (_, _, transcript) = s
        .call(
            "GET",
            &format!("/v1/conversations/{id}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(transcript["messages"].as_array().unwrap().len(), 2);
}

/// Polls job `id` until it is done or failed (120 s at most).
pub(crate) async fn wait_for_job(s: &TestServer, id: &str) -> Value {
    let what = format!("job {id} finished");
    crate::helpers::eventually_async(&what, Duration::from_secs(120), async || {
        let (status, _, job) = s
            .call("GET", &format!("/v1/jobs/{id}"), Some(&s.admin), None)
            .await;
        assert_eq!(status, 200, "{job}");
        (job["state"] == "done" || job["state"] == "failed").then_some(job)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn bots_are_managed_and_crawled_over_the_api_but_never_into_private_networks() {
    let (s, _) = fake_server(Limits::default()).await;
    let site = crate::helpers::serve(&fixture("site"));
    // Create: an explicit id, then a generated one; a taken id is 409.
    let (status, _, bot) = s
        .call(
            "POST",
            "/v1/bots",
            Some(&s.admin),
            Some(json!({"id": "kettles", "name": "Kettles", "top_k": 3})),
        )
        .await;
    assert_eq!(status, 201, "{bot}");
    assert_eq!(bot["id"], "kettles");
    assert_eq!(bot["top_k"], 3);
    // A NUL in a setting is stored on either store (PostgreSQL's jsonb keeps U+FFFD).
    let (status, _, odd) = s
        .call(
            "POST",
            "/v1/bots",
            Some(&s.admin),
            Some(json!({"id": "odd", "name": "Odd", "system_prompt": "a\u{0}b"})),
        )
        .await;
    assert_eq!(status, 201, "{odd}");
    let (status, _, odd) = s.call("GET", "/v1/bots/odd", Some(&s.admin), None).await;
    assert_eq!(status, 200, "{odd}");
    assert!(
        ["a\u{0}b", "a\u{fffd}b"].contains(&odd["system_prompt"].as_str().unwrap()),
        "{odd}"
    );
    let (status, _, generated) = s
        .call(
            "POST",
            "/v1/bots",
            Some(&s.admin),
            Some(json!({"name": "Support Docs!"})),
        )
        .await;
    assert_eq!(status, 201);
    assert!(
        generated["id"]
            .as_str()
            .unwrap()
            .starts_with("support-docs-"),
        "{generated}"
    );
    assert_error(
        &s.call(
            "POST",
            "/v1/bots",
            Some(&s.admin),
            Some(json!({"id": "kettles"})),
        )
        .await,
        409,
        "bot_exists",
    );
    assert_error(
        &s.call(
            "POST",
            "/v1/bots",
            Some(&s.admin),
            Some(json!({"id": "x", "top_k": 0})),
        )
        .await,
        400,
        "invalid_request",
    );
    let scoped = s.make_key(
        KeyKind::Secret,
        KeyEnv::Live,
        KeyScope::Bots(vec![BotId::parse("kettles").unwrap()]),
        vec![],
    );
    assert_error(
        &s.call(
            "POST",
            "/v1/bots",
            Some(&scoped),
            Some(json!({"id": "mine"})),
        )
        .await,
        403,
        "forbidden",
    );
    // Patch: change, clear with null, reject bad values without changing anything.
    let (status, _, patched) = s
        .call(
            "PATCH",
            "/v1/bots/kettles",
            Some(&s.admin),
            Some(json!({"system_prompt": "Answer in one sentence.", "min_score": 0.2})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["system_prompt"], "Answer in one sentence.");
    assert_eq!(patched["top_k"], 3);
    let (_, _, cleared) = s
        .call(
            "PATCH",
            "/v1/bots/kettles",
            Some(&s.admin),
            Some(json!({"top_k": null})),
        )
        .await;
    assert!(cleared["top_k"].is_null());
    assert_error(
        &s.call(
            "PATCH",
            "/v1/bots/kettles",
            Some(&s.admin),
            Some(json!({"min_score": 5, "name": "Renamed"})),
        )
        .await,
        400,
        "invalid_request",
    );
    let (_, _, unchanged) = s
        .call("GET", "/v1/bots/kettles", Some(&s.admin), None)
        .await;
    assert_eq!(unchanged["name"], "Kettles");
    // SSRF: private targets are refused, in every spelling.
    for target in [
        site.url("index.html"),
        "http://2130706433/".to_string(),
        "http://[::1]/".to_string(),
        "http://[::ffff:127.0.0.1]/".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.7/".to_string(),
        "http://localhost/".to_string(),
    ] {
        let refused = s
            .call(
                "POST",
                "/v1/bots/kettles/sources",
                Some(&s.admin),
                Some(json!({"url": target})),
            )
            .await;
        assert_error(&refused, 400, "target_not_allowed");
    }
    // The operator exempts the fixture site's origin for this bot: the crawl runs in the
    // background, and the pages appear.
    let origin = site.base.clone();
    let (status, _, _) = s
        .call(
            "PATCH",
            "/v1/bots/kettles",
            Some(&s.admin),
            Some(json!({"allowed_targets": [origin]})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, accepted) = s
        .call(
            "POST",
            "/v1/bots/kettles/sources",
            Some(&s.admin),
            Some(json!({"url": site.url("index.html"), "recrawl_every": "24h"})),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job = wait_for_job(&s, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    assert!(job["pages_indexed"].as_u64().unwrap() >= 5, "{job}");
    // Every page fetched is counted, and when the crawl ends the pages in sight are the
    // pages it fetched.
    assert!(job["progress"].as_u64().unwrap() >= job["pages_indexed"].as_u64().unwrap());
    assert_eq!(job["total"], job["progress"], "{job}");
    let (_, _, pages) = s
        .call("GET", "/v1/bots/kettles/pages", Some(&s.admin), None)
        .await;
    assert!(
        pages["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["url"].as_str().unwrap().ends_with("/returns.html"))
    );
    let (_, _, bot) = s
        .call("GET", "/v1/bots/kettles", Some(&s.admin), None)
        .await;
    assert_eq!(bot["sources"][0]["recrawl_every"], 86400);
    assert!(bot["sources"][0]["last_crawl"].as_u64().is_some());
    assert_eq!(
        bot["system_prompt"], "Answer in one sentence.",
        "settings survive the crawl's commit"
    );
    // A redirect hop into a private address is refused, even from an exempt site: to the
    // metadata service, and to this same site under a name (localhost) that is not exempt.
    for hop in ["to-metadata", "to-loopback-name"] {
        let (status, _, accepted) = s
            .call(
                "POST",
                "/v1/bots/kettles/sources",
                Some(&s.admin),
                Some(json!({"url": site.url(hop)})),
            )
            .await;
        assert_eq!(status, 202);
        let job = wait_for_job(&s, accepted["job_id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "failed", "{job}");
        assert!(
            job["error"]
                .as_str()
                .unwrap()
                .contains("cannot fetch start URL"),
            "{job}"
        );
        // Refused by the guard before connecting, not tried and timed out.
        assert!(
            job["error"].as_str().unwrap().contains("refused: "),
            "{job}"
        );
    }
    assert_error(
        &s.call("GET", "/v1/jobs/job_nope", Some(&s.admin), None)
            .await,
        404,
        "job_not_found",
    );
    // The crawled bot answers.
    let (status, _, answer) = s.call("POST", "/v1/chat", Some(&s.admin), Some(json!({"bot_id": "kettles", "message": "How many days do I have to return a kettle?"}))).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        !answer["sources"].as_array().unwrap().is_empty(),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_lists_every_route_and_every_listed_route_exists() {
    let (s, _) = fake_server(Limits::default()).await;
    let (status, _, spec) = s.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    let paths = spec["paths"].as_object().unwrap();
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "patch", "delete", "put"] {
            if item.get(method).is_some() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    for expected in [
        ("POST", "/v1/chat"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("GET", "/v1/conversations/{id}"),
        ("DELETE", "/v1/users/{user_id}"),
        ("POST", "/v1/keys/{id}/rotate"),
        ("POST", "/v1/bots/{id}/sources"),
        ("GET", "/v1/jobs/{id}"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/widget/session"),
    ] {
        assert!(
            operations
                .iter()
                .any(|(m, p)| m == expected.0 && p == expected.1),
            "{expected:?} missing from the spec"
        );
    }
    assert!(operations.len() >= 24, "{operations:?}");
    // Every documented operation is a real route: never the unmatched-route 404 or a 405.
    for (method, path) in &operations {
        let concrete = path
            .replace("{id}", "zephyr")
            .replace("{user_id}", "nobody");
        let body = (method != "GET" && method != "DELETE").then(|| json!({}));
        let (status, _, response) = s.call(method, &concrete, Some(&s.admin), body).await;
        assert_ne!(status, 405, "{method} {path}: {response}");
        assert!(
            !(status == 404 && response["error"]["code"] == "not_found"),
            "{method} {path} is documented but not routed"
        );
        assert!(status < 500, "{method} {path}: {status} {response}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_errors_or_spec_violations() {
    let (s, _) = fake_server(Limits {
        per_key_per_minute: 0,
        per_ip_per_minute: 0,
        ..Limits::default()
    })
    .await;
    let schemathesis = crate::helpers::test_python_tool("schemathesis");
    let (spec, auth) = (
        s.url("/openapi.json"),
        format!("Authorization: Bearer {}", s.admin),
    );
    let report = s.data.path().join("schemathesis");
    let cwd = s.data.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(schemathesis);
        command
            // Every check but two. positive_data_acceptance: some schema-valid requests are
            // refused by rules a schema cannot state (a crawl target that is a private
            // address, `message` and `messages` together, a key with neither bots nor
            // admin), and those refusals are 400s by design. ensure_resource_availability:
            // in a stateful sequence, `DELETE /v1/users/{id}` or `DELETE /v1/bots/{id}`
            // rightly erases conversations created a step earlier, which it reads as a
            // created resource gone missing.
            .args(["run", &spec, "--header", &auth, "--checks", "all"])
            .args([
                "--exclude-checks",
                "positive_data_acceptance,ensure_resource_availability",
            ])
            // Bounded and repeatable: a fixed seed and a fixed number of examples per
            // operation, one worker; no time budget, which would make the amount of
            // fuzzing depend on the machine's speed.
            .args(["--max-examples", "300", "--seed", "7", "--workers", "1"])
            // The revoke and rotate routes would disable the key the run itself uses; a
            // conversation's live feed is a stream that never ends by design.
            .args(["--exclude-path-regex", "^/v1/keys/|/events$"])
            .args(["--suppress-health-check", "all", "--report-dir"])
            .arg(report)
            .env("NO_COLOR", "1")
            // Its example cache (`.schemathesis/`) goes to the temp dir, not the checkout.
            .current_dir(&cwd);
        // A bounded run (above) takes minutes; far past that it hangs.
        crate::helpers::run_with_deadline(&mut command, Duration::from_secs(1500))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/schemathesis.log"),
        stdout.as_bytes(),
    );
    assert!(
        out.status.success(),
        "schemathesis failed (full output in target/schemathesis.log):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crawl_jobs_left_unfinished_by_a_stopped_server_run_again_when_it_starts() {
    use docent::domain::{Bot, BotSettings, CrawlJob, JobState, SourceSchedule};
    let site = crate::helpers::serve(&fixture("site"));
    let data = tempfile::tempdir().unwrap();
    let store = crate::helpers::open_store(data.path());
    let bot = BotId::parse("resumed").unwrap();
    store
        .create_bot(&Bot {
            id: bot.clone(),
            name: "Resumed".into(),
            source: site.url("/"),
            created_unix: 1,
            updated_unix: 1,
            pages: 0,
            chunks: 0,
            test: false,
            settings: BotSettings::default(),
            embedder: None,
        })
        .unwrap();
    // What a server killed mid-crawl leaves behind: a stored job in state `running`.
    let job = CrawlJob {
        state: JobState::Running,
        progress: 3,
        ..CrawlJob::queued(
            "job_interrupted".into(),
            bot.clone(),
            &SourceSchedule::once(site.url("/")),
            1,
        )
    };
    store.put_job(&job).unwrap();
    // The next start queues it again and runs it to the end.
    let limits = Limits {
        allow_private_targets: true,
        ..Limits::default()
    };
    let state = server::Launch {
        store: store.clone(),
        options: AskOptions::default(),
        limits,
        engine: Some(Engine::new(
            store.clone(),
            Embedding::from(Arc::new(FakeEmbedder::default())),
            Arc::new(FakeGenerator),
        )),
        deliveries: None,
    }
    .start()
    .unwrap();
    let finished = crate::helpers::eventually_async(
        "the resumed job ended",
        Duration::from_secs(60),
        async || {
            let view = state.jobs.get(&job.id).unwrap().expect("the job is known");
            (!view.state.unfinished()).then_some(view)
        },
    )
    .await;
    assert_eq!(finished.state, JobState::Done, "{finished:?}");
    assert!(finished.pages_indexed.unwrap() > 3, "{finished:?}");
    assert!(!store.pages(&bot).unwrap().is_empty());
    // The finished record is the stored one, so it outlives this process too.
    let stored = store.get_job(&job.id).unwrap().unwrap();
    assert_eq!(stored.state, JobState::Done);
    assert_eq!(stored.pages_indexed, finished.pages_indexed);
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_are_managed_by_live_admin_keys_and_keep_only_a_hash() {
    let (s, _) = fake_server(Limits::default()).await;
    const PASSWORD: &str = "a long enough password";
    let key = |body: Value| {
        let s = &s;
        async move {
            let (status, _, created) = s.call("POST", "/v1/keys", Some(&s.admin), Some(body)).await;
            assert_eq!(status, 201, "{created}");
            created["key"].as_str().unwrap().to_string()
        }
    };
    let test_admin = key(json!({"admin": true, "test": true})).await;
    let scoped = key(json!({"bots": ["zephyr"]})).await;
    let owner = json!({"email": "Owner@Example.org", "password": PASSWORD, "role": "owner"});
    let callers = [
        (Some(test_admin.as_str()), 403),
        (Some(scoped.as_str()), 403),
        (None, 401),
    ];
    for (caller, status) in callers {
        let (got, _, body) = s
            .call("POST", "/v1/accounts", caller, Some(owner.clone()))
            .await;
        assert_eq!(got, status, "{body}");
        assert_eq!(s.call("GET", "/v1/accounts", caller, None).await.0, status);
    }
    let (status, _, created) = s
        .call("POST", "/v1/accounts", Some(&s.admin), Some(owner))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["email"], "owner@example.org");
    assert_eq!(created["role"], "owner");
    assert!(!created.to_string().contains("argon2") && !created.to_string().contains(PASSWORD));
    let refused = [
        (
            json!({"email": "OWNER@example.org", "password": PASSWORD, "role": "owner"}),
            409,
            "account_exists",
        ),
        (
            json!({"email": "b@example.org", "password": "too short", "role": "owner"}),
            400,
            "invalid_account",
        ),
        (
            json!({"email": "not an email", "password": PASSWORD, "role": "owner"}),
            400,
            "invalid_account",
        ),
        (
            json!({"email": "b@example.org", "password": PASSWORD, "role": "admin"}),
            400,
            "invalid_role",
        ),
        (
            json!({"email": "b@example.org", "password": PASSWORD, "role": "agent"}),
            400,
            "invalid_account",
        ),
        (
            json!({"email": "b@example.org", "password": PASSWORD, "role": "owner", "bots": ["zephyr"]}),
            400,
            "invalid_account",
        ),
        (
            json!({"email": "b@example.org", "password": PASSWORD, "role": "agent", "bots": ["nope"]}),
            404,
            "bot_not_found",
        ),
        (
            json!({"email": "b@example.org", "password": PASSWORD, "role": "agent", "bots": ["Not A Slug"]}),
            400,
            "invalid_bot_id",
        ),
        (
            json!({"email": "b@example.org", "password": PASSWORD, "role": "agent", "admin": true}),
            400,
            "invalid_request",
        ),
    ];
    for (body, status, code) in refused {
        let (got, _, error) = s
            .call("POST", "/v1/accounts", Some(&s.admin), Some(body.clone()))
            .await;
        assert_eq!(
            (got, error["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {error}"
        );
        assert!(!error.to_string().contains(PASSWORD), "{error}");
    }
    let agent = json!({"email": "ana@example.org", "password": PASSWORD, "role": "agent", "bots": ["zephyr"]});
    let (status, _, agent) = s
        .call("POST", "/v1/accounts", Some(&s.admin), Some(agent))
        .await;
    assert_eq!(status, 201, "{agent}");
    assert_eq!(agent["bots"], json!(["zephyr"]));
    let (_, _, listed) = s.call("GET", "/v1/accounts", Some(&s.admin), None).await;
    let emails: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["owner@example.org", "ana@example.org"]);
    assert!(!listed.to_string().contains("argon2"), "{listed}");
    let path = format!("/v1/accounts/{}", agent["id"].as_str().unwrap());
    let (status, _, deleted) = s.call("DELETE", &path, Some(&s.admin), None).await;
    assert_eq!(
        (status, &deleted["deleted"]),
        (200, &json!(true)),
        "{deleted}"
    );
    let (status, _, error) = s.call("DELETE", &path, Some(&s.admin), None).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("account_not_found"))
    );
    let db = crate::helpers::stored_bytes(s.data.path());
    let needle = PASSWORD.as_bytes();
    assert!(
        !db.windows(needle.len()).any(|w| w == needle),
        "a password is in the database"
    );
}
