//! Shared test fixtures: a loopback web server over a fixture folder, shared real models,
//! and a temp data dir.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use docent::embed::{Embedding, MiniLm};
use docent::llm::{LlamaConfig, LlamaGenerator};
use sha2::{Digest, Sha256};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

pub fn models_dir() -> PathBuf {
    std::env::var_os("DOCENT_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models"))
}

/// Whether this run keeps the servers' state in PostgreSQL (`DOCENT_TEST_STORE=postgres`,
/// `make test`'s second pass) instead of redb.
pub fn on_postgres() -> bool {
    match std::env::var("DOCENT_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("redb") | Ok("") | Err(_) => false,
        Ok(other) => panic!("DOCENT_TEST_STORE is redb or postgres, not {other:?}"),
    }
}

/// On PostgreSQL: the URL of the database that stands for the data folder `data` (made
/// when first asked for), which the test and any `docent` it runs share. None on redb.
pub fn store_url(data: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    static MADE: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    let mut made = MADE.get_or_init(Default::default).lock().unwrap();
    let server = crate::pg::shared();
    let url = made.entry(data.to_path_buf()).or_insert_with(|| {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("t{}", NEXT.fetch_add(1, Ordering::SeqCst));
        server.database(&name)
    });
    Some(url.clone())
}

/// The store a server over the data folder `data` uses in this run: its PostgreSQL
/// database, or the redb database in the folder.
pub fn open_store(data: &Path) -> Arc<dyn docent::ports::Storage> {
    match store_url(data) {
        Some(url) => Arc::new(docent::pg::PgStore::open(&url, None).unwrap()),
        None => docent::store::open(data).unwrap(),
    }
}

/// Every byte the store of the data folder `data` keeps: the redb file, or a dump of its
/// PostgreSQL database. For checking that a secret never reaches it.
pub fn stored_bytes(data: &Path) -> Vec<u8> {
    match store_url(data) {
        Some(url) => crate::pg::shared().dump(url.rsplit('/').next().unwrap()),
        None => std::fs::read(data.join(docent::store::DB_FILE)).unwrap(),
    }
}

/// The real MiniLM embedder, loaded once per test process.
pub fn embedder() -> Arc<MiniLm> {
    static EMBEDDER: OnceLock<Arc<MiniLm>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            Arc::new(
                MiniLm::load(&models_dir().join("all-MiniLM-L6-v2")).expect("run `make models`"),
            )
        })
        .clone()
}

/// The real MiniLM as the ingest pipeline and the server take it (embedder and tokenizer).
pub fn dyn_embedder() -> Embedding {
    Embedding::from(embedder())
}

/// The small chat model, loaded once per test process.
pub fn generator() -> Arc<LlamaGenerator> {
    static GENERATOR: OnceLock<Arc<LlamaGenerator>> = OnceLock::new();
    GENERATOR
        .get_or_init(|| {
            let config = LlamaConfig {
                model_path: docent::config::resolve_model(&models_dir(), "small"),
                threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
                context_size: 4096,
                // Tests run at once and share it: their generations batch together.
                parallel: 4,
            };
            Arc::new(LlamaGenerator::start(config).expect("run `make models`"))
        })
        .clone()
}

/// A copy of a fixture folder in a temp dir, so a test can change pages between crawls.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(name), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A static web server on 127.0.0.1 serving `root`, with ETags and 304s, request
/// counting, and a few hostile routes: `/loop/a` (redirect loop), `/big.html` (6 MB),
/// `/bad-utf8.html`, `/moved.html` (301 to `/shipping.html`), `/to-metadata` and
/// `/to-loopback-name` (redirects to 169.254.169.254 and to this site as `localhost`).
pub struct TestSite {
    pub base: String,
    pub hits: Arc<Mutex<HashMap<String, usize>>>,
    pub not_modified: Arc<AtomicUsize>,
    _server: crate::helpers::Running,
}

impl TestSite {
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    pub fn hits(&self, path: &str) -> usize {
        *self.hits.lock().unwrap().get(path).unwrap_or(&0)
    }
}

#[derive(Clone)]
struct SiteState {
    root: PathBuf,
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    not_modified: Arc<AtomicUsize>,
}

/// A server running on a thread of its own; dropping it stops the server.
pub struct Running(actix_web::dev::ServerHandle);

impl Drop for Running {
    fn drop(&mut self) {
        let handle = self.0.clone();
        std::thread::spawn(move || actix_web::rt::System::new().block_on(handle.stop(false)));
    }
}

/// Runs the server `make` builds on a thread of its own, in its own actix system, once it
/// is listening.
pub fn run_in_thread(make: impl FnOnce() -> actix_web::dev::Server + Send + 'static) -> Running {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = make();
            tx.send(server.handle()).unwrap();
            server.await.unwrap();
        })
    });
    Running(rx.recv().unwrap())
}

pub fn serve(root: &Path) -> TestSite {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = SiteState {
        root: root.to_path_buf(),
        base: base.clone(),
        hits: Arc::default(),
        not_modified: Arc::default(),
    };
    let (hits, not_modified) = (state.hits.clone(), state.not_modified.clone());
    let server = run_in_thread(move || {
        HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .default_service(web::to(serve_path))
        })
        .workers(2)
        .listen(listener)
        .unwrap()
        .run()
    });
    TestSite {
        base,
        hits,
        not_modified,
        _server: server,
    }
}

async fn serve_path(req: HttpRequest, state: web::Data<SiteState>) -> HttpResponse {
    let path = req.path().to_string();
    *state.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    match path.as_str() {
        "/loop/a" => return redirect("/loop/b"),
        "/loop/b" => return redirect("/loop/a"),
        "/moved.html" => return redirect("/shipping.html"),
        // Redirects off the site to addresses an API crawl must never reach.
        "/to-metadata" => return redirect("http://169.254.169.254/latest/meta-data/"),
        "/to-loopback-name" => {
            let port = state.base.rsplit(':').next().unwrap_or("80");
            return redirect(&format!("http://localhost:{port}/index.html"));
        }
        "/big.html" => {
            let body = format!(
                "<html><body><main>{}</main></body></html>",
                "<p>big</p>".repeat(600_000)
            );
            return HttpResponse::Ok().content_type("text/html").body(body);
        }
        "/bad-utf8.html" => {
            let mut body = b"<html><head><title>Bad bytes</title></head><body><main><p>Valid start \xff\xfe then the Zephyr Bolt heats in 90 seconds.</p></main></body></html>".to_vec();
            body.push(b'\n');
            return HttpResponse::Ok().content_type("text/html").body(body);
        }
        _ => {}
    }
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() || rel.ends_with('/') {
        format!("{rel}index.html")
    } else {
        rel.to_string()
    };
    if rel.split('/').any(|part| part == "..") {
        return HttpResponse::BadRequest().finish();
    }
    let file = state.root.join(&rel);
    let Ok(mut body) = std::fs::read(&file) else {
        return HttpResponse::NotFound().body("not found");
    };
    if rel.ends_with("sitemap.xml") {
        body = String::from_utf8_lossy(&body)
            .replace("http://HOST", &state.base)
            .into_bytes();
    }
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..8]));
    let matches = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    if matches {
        state.not_modified.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::NotModified()
            .insert_header(("etag", etag))
            .finish();
    }
    let content_type = match file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "xml" => "application/xml",
        "txt" => "text/plain",
        "pdf" => "application/pdf",
        "docx" => docent::ingest::docx::MEDIA_TYPE,
        _ => "application/octet-stream",
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("etag", etag))
        .body(body)
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header(("location", to))
        .finish()
}

/// Runs `command` to its end, its output collected; killed and failed with what it printed
/// so far when it runs past `limit`.
pub fn run_with_deadline(
    command: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::io::Read;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the command starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = String::from_utf8_lossy(&stdout.join().unwrap()).into_owned();
            let err = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("{command:?} ran past {limit:?}:\n{out}\n{err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Polls `check` every 50 ms until it returns something; fails naming `what` after
/// `within`.
pub fn eventually<T>(
    what: &str,
    within: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not after {within:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `eventually` for checks that await.
pub async fn eventually_async<T>(
    what: &str,
    within: std::time::Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // The check itself is bounded too (a request that hangs).
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Some(found)) => return found,
            Ok(None) => {}
            Err(_) => panic!("{what}: not after {within:?} (a check still running)"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not after {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A loopback port held bound but not listening, so a connection to it is refused and
/// nothing else can take it while the socket lives; `listen` turns it into a listener on
/// the same port.
pub struct ClosedPort {
    socket: socket2::Socket,
    pub address: std::net::SocketAddr,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).expect("bind a loopback port");
        let address = socket
            .local_addr()
            .expect("its address")
            .as_socket()
            .expect("an IP address");
        ClosedPort { socket, address }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    pub fn listen(self) -> std::net::TcpListener {
        self.socket.listen(128).expect("listen");
        self.socket.into()
    }
}

/// The Python of the test tools (`make test` builds it: `DOCENT_TEST_PYTHON`, else
/// `target/pyenv/bin/python`).
pub fn test_python() -> PathBuf {
    let python = std::env::var_os("DOCENT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/pyenv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: `make test` builds the test tools' Python (or set DOCENT_TEST_PYTHON)",
        python.display()
    );
    python
}

/// A command-line tool installed beside `test_python()`.
pub fn test_python_tool(name: &str) -> PathBuf {
    let tool = test_python().with_file_name(name);
    assert!(
        tool.exists(),
        "{} is missing: `make test` installs tests/requirements.txt beside the test Python",
        tool.display()
    );
    tool
}

/// An HTTP client for tests (loopback only, so no proxy): connecting and each read are
/// bounded (a read restarts the clock, so a live feed with its keep-alives is not cut), so
/// no request hangs a test.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(300))
        .build()
        .expect("an HTTP client")
}

/// Server-sent events read from a response, each within a deadline.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    buffer: Vec<u8>,
    /// The events read so far, for failure messages.
    pub seen: Vec<serde_json::Value>,
}

impl Sse {
    pub fn new(res: reqwest::Response) -> Sse {
        use futures::StreamExt;
        Sse {
            body: Box::pin(res.bytes_stream().map(|chunk| chunk.map(|b| b.to_vec()))),
            buffer: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// Reads a chat stream up to its first piece of text; returns the conversation its
    /// `start` event named. Fails when the stream ends first or stalls past `within`.
    pub async fn until_first_text(&mut self, within: std::time::Duration) -> String {
        let mut conversation = None;
        loop {
            let (_, event) = self
                .next(within)
                .await
                .unwrap_or_else(|| panic!("the stream ended before any text: {:?}", self.seen));
            if event["event"] == "start" {
                conversation = event["conversation_id"].as_str().map(str::to_string);
            }
            if event.get("delta").is_some() {
                return conversation.expect("the start event names the conversation");
            }
        }
    }

    /// The next `data:` event and when it arrived; None at the end of the stream. Fails
    /// when none comes within `within`. Comments (keep-alives) are skipped.
    pub async fn next(
        &mut self,
        within: std::time::Duration,
    ) -> Option<(std::time::Instant, serde_json::Value)> {
        self.try_next(within)
            .await
            .unwrap_or_else(|why| panic!("{why}; so far: {:?}", self.seen))
    }

    /// `next`, saying why as an error instead of failing: for a caller that retries.
    pub async fn try_next(
        &mut self,
        within: std::time::Duration,
    ) -> Result<Option<(std::time::Instant, serde_json::Value)>, String> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&block);
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue;
                }
                let event: serde_json::Value = serde_json::from_str(&data.join("\n"))
                    .map_err(|e| format!("not JSON ({e}): {block:?}"))?;
                self.seen.push(event.clone());
                return Ok(Some((std::time::Instant::now(), event)));
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Err(format!("no event within {within:?}")),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(format!("the stream broke ({e})")),
                Ok(Some(Ok(chunk))) => self.buffer.extend_from_slice(&chunk),
            }
        }
    }
}

/// A child process's stderr, read line by line on a thread of its own, so a wait for a
/// line has a deadline and the pipe never fills.
pub struct StderrLines(std::sync::mpsc::Receiver<String>);

impl StderrLines {
    /// Takes `child`'s piped stderr.
    pub fn of(child: &mut std::process::Child) -> StderrLines {
        StderrLines::from(child.stderr.take().expect("stderr piped"))
    }

    /// Reads `pipe` (a child's stdout, say) the same way.
    pub fn from(pipe: impl std::io::Read + Send + 'static) -> StderrLines {
        use std::io::{BufRead, BufReader};
        let stderr = pipe;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        StderrLines(lines)
    }

    /// Every line from here up to and including the first that contains `needle`; fails
    /// when none does within `within` (or the process closes its stderr first).
    pub fn until(&self, needle: &str, within: std::time::Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(e) => panic!("no {needle:?} within {within:?} ({e}); before it: {seen:#?}"),
            }
        }
    }
}

/// The `Generator` methods a test's wrapper leaves alone, handed on: to the model in its
/// `inner` field (`inner`), or to the fake model (`fake`; `fake sizes`: only
/// `count_tokens` and `context_size`, for a wrapper with a `classify` of its own).
macro_rules! generator_rest {
    (inner) => {
        fn classify(
            &self,
            messages: &[docent::llm::ChatMessage],
            labels: &[&str],
        ) -> anyhow::Result<Vec<f32>> {
            self.inner.classify(messages, labels)
        }

        fn count_tokens(&self, text: &str) -> anyhow::Result<usize> {
            self.inner.count_tokens(text)
        }

        fn context_size(&self) -> usize {
            self.inner.context_size()
        }
    };
    (fake) => {
        fn classify(
            &self,
            messages: &[docent::llm::ChatMessage],
            labels: &[&str],
        ) -> anyhow::Result<Vec<f32>> {
            docent::llm::Generator::classify(&docent::llm::FakeGenerator, messages, labels)
        }

        $crate::helpers::generator_rest!(fake sizes);
    };
    (fake sizes) => {
        fn count_tokens(&self, text: &str) -> anyhow::Result<usize> {
            docent::llm::Generator::count_tokens(&docent::llm::FakeGenerator, text)
        }

        fn context_size(&self) -> usize {
            docent::llm::Generator::context_size(&docent::llm::FakeGenerator)
        }
    };
}
pub(crate) use generator_rest;
