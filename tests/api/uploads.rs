//! Documents uploaded over the API (`POST /v1/bots/{id}/documents`, multipart): real PDF and
//! DOCX files indexed by a job with the real embedder and cited by page under the upload's
//! `base_url`; an upload adds and replaces by name and never removes; bad forms, kinds and
//! sizes refused with their codes; a queued upload's files outlive a restart in the store.

use std::sync::Arc;
use std::time::Duration;

use docent::domain::{BotId, CrawlJob, JobState, UploadedFile};
use docent::keys::{KeyEnv, KeyKind, KeyScope};
use docent::server::Limits;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{dyn_embedder, fixture, repo_root};
use crate::server::{TestServer, assert_error, fake_server, start_with, wait_for_job};

const BOUNDARY: &str = "docent-test-7MA4YWxkTrZu0gW";

/// A part of a form: its field name, its file name (a file part) and its bytes.
type Part<'a> = (&'a str, Option<&'a str>, Vec<u8>);

/// A multipart/form-data body of `parts`, as a browser's FormData or `curl -F` sends it.
fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, file, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let disposition = match file {
            Some(name) => format!(
                "Content-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            ),
            None => format!("Content-Disposition: form-data; name=\"{field}\"\r\n\r\n"),
        };
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Posts `body` to the bot's documents route as multipart/form-data.
async fn upload(
    s: &TestServer,
    bot: &str,
    key: &str,
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let res = s
        .http
        .post(s.url(&format!("/v1/bots/{bot}/documents")))
        .bearer_auth(key)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn file(name: &str) -> Vec<u8> {
    std::fs::read(fixture("documents").join(name)).unwrap()
}

fn real_docx() -> Vec<u8> {
    let path = repo_root().join("target/documents/officer-example.docx");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (`make test` fetches the real documents first)",
            path.display()
        )
    })
}

/// The bot's pages: url → chunks.
async fn pages(s: &TestServer, bot: &str) -> Vec<(String, u64)> {
    let (status, _, listed) = s
        .call(
            "GET",
            &format!("/v1/bots/{bot}/pages"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let mut out: Vec<(String, u64)> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["url"].as_str().unwrap().to_string(),
                p["chunks"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn uploaded_documents_are_indexed_by_a_job_and_cited_by_page_and_never_remove_others() {
    let s = start_with(
        dyn_embedder(),
        Arc::new(docent::llm::FakeGenerator),
        Limits::default(),
        docent::chat::AskOptions::default(),
    )
    .await;
    let admin = s.admin.clone();
    let (status, _, _) = s
        .call(
            "POST",
            "/v1/bots",
            Some(&admin),
            Some(json!({"id": "files", "name": "Files"})),
        )
        .await;
    assert_eq!(status, 201);
    // A golden question citing the PDF (as the pages list shows it, without `#page=`) is
    // checked after the upload's job.
    let (status, _, _) = s
        .call(
            "POST",
            "/v1/bots/files/questions",
            Some(&admin),
            Some(json!({
                "question": "How many days do I have to return a parcel for a refund?",
                "expected_answer_keywords": ["30 days"],
                "source_url": "https://acme.example/files/refund-policy.pdf",
            })),
        )
        .await;
    assert_eq!(status, 201);
    let notes = b"# Opening hours\n\nThe Acme shop opens at nine and closes at six.\n".to_vec();
    let body = form(&[
        ("file", Some("refund-policy.pdf"), file("refund-policy.pdf")),
        ("file", Some("guide.docx"), real_docx()),
        ("file", Some("hours.md"), notes.clone()),
        ("base_url", None, b"https://acme.example/files/".to_vec()),
    ]);
    let (status, _, accepted) = upload(&s, "files", &admin, body).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["job"]["kind"], "upload", "{accepted}");
    assert_eq!(accepted["job"]["url"], "https://acme.example/files/");
    let job = wait_for_job(&s, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        (job["pages_indexed"].as_u64(), job["pages_removed"].as_u64()),
        (Some(3), Some(0)),
        "{job}"
    );
    let base = "https://acme.example/files/";
    let urls: Vec<String> = pages(&s, "files")
        .await
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(
        urls,
        [
            format!("{base}guide.docx"),
            format!("{base}hours.md"),
            format!("{base}refund-policy.pdf")
        ]
    );

    // The real embedder finds the refund page; the answer cites the PDF's second page.
    let (status, _, reply) = s
        .call(
            "POST",
            "/v1/chat",
            Some(&admin),
            Some(json!({"bot_id": "files", "message": "How many days do I have to return a parcel for a refund?"})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["sources"][0]["url"],
        format!("{base}refund-policy.pdf#page=2"),
        "{reply}"
    );
    assert_eq!(job["golden"]["passed"], 1, "{job}");

    // A second upload replaces the document of the same name and adds the others; the
    // first upload's other documents stay. A scan is skipped with its reason.
    let changed = b"# Opening hours\n\nThe Acme shop now opens at ten on Saturdays.\n".to_vec();
    let body = form(&[
        ("file", Some("hours.md"), changed),
        ("file", Some("scan.pdf"), file("scan.pdf")),
        (
            "file",
            Some("faq.txt"),
            b"Parcels ship within two working days.".to_vec(),
        ),
    ]);
    let (status, _, accepted) = upload(&s, "files", &admin, body).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(
        accepted["job"]["url"], "upload:///",
        "no base_url: the default"
    );
    let job = wait_for_job(&s, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        (
            job["pages_indexed"].as_u64(),
            job["pages_skipped"].as_u64(),
            job["pages_removed"].as_u64()
        ),
        (Some(2), Some(1), Some(0)),
        "{job}"
    );
    assert_eq!(job["skipped"][0]["url"], "upload:///scan.pdf", "{job}");
    assert!(
        job["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no text layer"),
        "{job}"
    );
    let urls: Vec<String> = pages(&s, "files")
        .await
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(urls.len(), 5, "{urls:?}");
    assert!(
        urls.contains(&"upload:///faq.txt".to_string())
            && urls.contains(&"upload:///hours.md".to_string()),
        "{urls:?}"
    );
    assert!(
        urls.contains(&format!("{base}refund-policy.pdf")),
        "{urls:?}"
    );
    let bot = &s.call("GET", "/v1/bots/files", Some(&admin), None).await.2;
    assert_eq!(bot["pages"], 5, "{bot}");

    // Into a crawled bot, an upload only adds: every crawled page stays.
    let crawled = pages(&s, "zephyr").await;
    let before = s.call("GET", "/v1/bots/zephyr", Some(&admin), None).await.2;
    let body = form(&[("file", Some("hours.md"), notes)]);
    let (status, _, accepted) = upload(&s, "zephyr", &admin, body).await;
    assert_eq!(status, 202, "{accepted}");
    let job = wait_for_job(&s, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    let after = pages(&s, "zephyr").await;
    assert_eq!(after.len(), crawled.len() + 1, "{after:?}");
    assert!(crawled.iter().all(|p| after.contains(p)), "{after:?}");
    let bot = &s.call("GET", "/v1/bots/zephyr", Some(&admin), None).await.2;
    assert_eq!(
        bot["source"], before["source"],
        "an upload keeps the bot's source: {bot}"
    );

    // Every upload job's files left the store with its end.
    let jobs = s.state.store.jobs().unwrap();
    let uploads: Vec<&CrawlJob> = jobs
        .iter()
        .filter(|j| j.kind == docent::domain::JobKind::Upload)
        .collect();
    assert_eq!(uploads.len(), 3);
    for job in uploads {
        assert!(
            s.state.store.upload_files(&job.id).unwrap().is_empty(),
            "{job:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_upload_is_refused_with_its_code_before_any_job() {
    let (s, _) = fake_server(Limits::default()).await;
    let admin = s.admin.clone();
    let txt = |name: &'static str| ("file", Some(name), b"Some text.".to_vec());
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            form(&[("file", Some("setup.exe"), b"MZ".to_vec())]),
            400,
            "unsupported_document",
        ),
        (
            form(&[("file", Some(".."), b"x".to_vec())]),
            400,
            "invalid_document_name",
        ),
        (
            form(&[txt("a.txt"), txt("a.txt")]),
            400,
            "duplicate_document",
        ),
        (
            form(&[("file", Some("empty.pdf"), Vec::new())]),
            400,
            "empty_document",
        ),
        (
            form(&[("base_url", None, b"https://acme.example/".to_vec())]),
            400,
            "missing_field",
        ),
        (
            form(&[txt("a.txt"), ("note", None, b"hi".to_vec())]),
            400,
            "invalid_request",
        ),
        (
            form(&[txt("a.txt"), ("base_url", None, b"file:///etc/".to_vec())]),
            400,
            "invalid_request",
        ),
        (
            form(&[
                txt("a.txt"),
                ("base_url", None, b"https://ana:pw@acme.example/".to_vec()),
            ]),
            400,
            "invalid_request",
        ),
        (b"--nope\r\nnot a form".to_vec(), 400, "invalid_multipart"),
        // A file part cut off before its end.
        (
            form(&[txt("a.txt")])[..90].to_vec(),
            400,
            "invalid_multipart",
        ),
        // A text file past its 5 MiB, read to its end first so the client sees the answer.
        (
            form(&[("file", Some("big.txt"), vec![b'a'; 5 * 1024 * 1024 + 1])]),
            413,
            "document_too_large",
        ),
    ];
    let too_many: Vec<Part<'_>> = (0..21).map(|i| ("file", None, vec![i as u8])).collect();
    let names: Vec<String> = (0..21).map(|i| format!("{i}.txt")).collect();
    let too_many: Vec<Part<'_>> = too_many
        .into_iter()
        .zip(&names)
        .map(|((field, _, _), name)| (field, Some(name.as_str()), b"text".to_vec()))
        .collect();
    let mut cases = cases;
    cases.push((form(&too_many), 400, "too_many_documents"));
    // 64 MiB in all at most: three PDFs under their own 32 MiB each are too much together.
    let big: Vec<Part<'_>> = ["a.pdf", "b.pdf", "c.pdf"]
        .into_iter()
        .map(|n| ("file", Some(n), vec![b'%'; 22 * 1024 * 1024]))
        .collect();
    cases.push((form(&big), 413, "payload_too_large"));
    for (body, status, code) in cases {
        let response = upload(&s, "zephyr", &admin, body).await;
        assert_error(&response, status, code);
    }
    // Multipart without a boundary or a body (what schemathesis sent): refused, and the
    // parser is not read past its error.
    for bot in ["nobody", "zephyr"] {
        let res = s
            .http
            .post(s.url(&format!("/v1/bots/{bot}/documents")))
            .bearer_auth(&admin)
            .header("Content-Type", "multipart/form-data")
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        let expected = if bot == "nobody" {
            (404, "bot_not_found")
        } else {
            (400, "invalid_multipart")
        };
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap()),
            expected,
            "{body}"
        );
    }
    // A chunked body (no Content-Length) past 64 MiB is refused as it streams in.
    let parts: Vec<Part<'_>> = ["a.pdf", "b.pdf", "c.pdf"]
        .into_iter()
        .map(|n| ("file", Some(n), vec![b'%'; 22 * 1024 * 1024]))
        .collect();
    let body = form(&parts);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let res = s
        .http
        .post(s.url("/v1/bots/zephyr/documents"))
        .bearer_auth(&admin)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    // Not multipart at all.
    let response = s
        .call(
            "POST",
            "/v1/bots/zephyr/documents",
            Some(&admin),
            Some(json!({"file": "x"})),
        )
        .await;
    assert_error(&response, 415, "unsupported_media_type");
    // Keys: none, a bot's chat key (not an admin), an unknown bot.
    let body = || form(&[txt("a.txt")]);
    let chat_key = s.make_key(
        KeyKind::Secret,
        KeyEnv::Live,
        KeyScope::Bots(vec![BotId::parse("zephyr").unwrap()]),
        vec![],
    );
    assert_error(
        &upload(&s, "zephyr", &chat_key, body()).await,
        403,
        "forbidden",
    );
    assert_error(
        &upload(&s, "nobody", &admin, body()).await,
        404,
        "bot_not_found",
    );
    let res = s
        .http
        .post(s.url("/v1/bots/zephyr/documents"))
        .body(body())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        s.state.store.jobs().unwrap().is_empty(),
        "no job was queued"
    );

    // 16 uploads waiting for the bot already: the next one waits its turn (429).
    for i in 0..docent::server::documents::MAX_PENDING_UPLOADS {
        let waiting = CrawlJob::upload(
            format!("job_waiting{i}"),
            BotId::parse("zephyr").unwrap(),
            "upload:///",
            1,
        );
        s.state.store.put_upload(&waiting, &[]).unwrap();
    }
    let response = upload(&s, "zephyr", &admin, body()).await;
    assert_error(&response, 429, "uploads_pending");
    assert!(response.1.get("retry-after").is_some());

    // A body announced past the cap is refused before a byte of it is read.
    let address = s
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/bots/zephyr/documents HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 100000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut answer))
        .await
        .expect("an answer before the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 413") && answer.contains("payload_too_large"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_upload_runs_from_the_store_after_a_restart() {
    use docent::embed::{Embedding, FakeEmbedder};
    use docent::server::{self, Engine};
    let data = tempfile::tempdir().unwrap();
    let store = crate::helpers::open_store(data.path());
    let bot = BotId::parse("files").unwrap();
    store
        .create_bot(&docent::domain::Bot {
            id: bot.clone(),
            name: "Files".into(),
            source: "uploads".into(),
            created_unix: 1,
            updated_unix: 1,
            pages: 0,
            chunks: 0,
            test: false,
            settings: Default::default(),
            embedder: None,
        })
        .unwrap();
    // What a server stopped while its upload waited leaves: the job and its files, stored
    // together.
    let job = CrawlJob {
        state: JobState::Running,
        ..CrawlJob::upload(
            "job_uploaded".into(),
            bot.clone(),
            "https://acme.example/docs/",
            1,
        )
    };
    let files = [
        UploadedFile {
            name: "refund-policy.pdf".into(),
            bytes: file("refund-policy.pdf"),
        },
        UploadedFile {
            name: "hours.txt".into(),
            bytes: b"The shop opens at nine.".to_vec(),
        },
    ];
    store.put_upload(&job, &files).unwrap();
    let stored = store.upload_files(&job.id).unwrap();
    let names: Vec<&str> = stored.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["hours.txt", "refund-policy.pdf"]);
    assert_eq!(stored[1].bytes, files[0].bytes);
    // The next start runs it from the stored files.
    let state = server::Launch {
        store: store.clone(),
        options: docent::chat::AskOptions::default(),
        limits: Limits::default(),
        engine: Some(Engine::new(
            store.clone(),
            Embedding::from(Arc::new(FakeEmbedder::default())),
            Arc::new(docent::llm::FakeGenerator),
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
    assert_eq!(finished.pages_indexed, Some(2), "{finished:?}");
    // Its files left the store with the record of its end.
    assert!(store.upload_files(&job.id).unwrap().is_empty());
    assert_eq!(
        store.get_job(&job.id).unwrap().unwrap().state,
        JobState::Done
    );
    let urls: Vec<String> = store
        .pages(&bot)
        .unwrap()
        .into_iter()
        .map(|p| p.url)
        .collect();
    assert!(
        urls.contains(&"https://acme.example/docs/refund-policy.pdf".to_string()),
        "{urls:?}"
    );
}
