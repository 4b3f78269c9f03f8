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
