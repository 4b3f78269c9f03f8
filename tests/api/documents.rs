//! Documents beside web pages: real DOCX files from Debian packages (fetched by `make test`
//! into target/documents, pinned by version and sha256) read as python-docx reads them
//! (headings, paragraphs, table rows, title), and documents ingested from links a crawl
//! finds, a broken one recorded as skipped with its reason, never fatal.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use docent::domain::BotId;
use docent::embed::{Embedding, FakeEmbedder};
use docent::ingest::documents::{self, Kind};
use docent::ingest::extract::Extracted;
use docent::ingest::{self, IngestRequest, Source, chunk::ChunkSpec, crawl::CrawlOptions};
use indicatif::ProgressBar;
use serde_json::Value;

use crate::helpers::{open_store, repo_root, run_with_deadline, serve};

fn documents_dir() -> PathBuf {
    let dir = repo_root().join("target/documents");
    assert!(
        dir.join(".fetched").exists(),
        "no {}: `make test` fetches the real documents first",
        dir.display()
    );
    dir
}

/// python-docx's reading of `path`: title, headings, texts (paragraphs and cells), rows.
fn python_docx(path: &Path) -> Value {
    let python = std::env::var("DOCENT_TEST_PYTHON")
        .expect("DOCENT_TEST_PYTHON: the test venv's python (`make test` sets it)");
    let mut command = std::process::Command::new(python);
    command
        .arg(repo_root().join("tests/documents/docx_text.py"))
        .arg(path);
    let out = run_with_deadline(&mut command, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Everything a reader of the extracted document sees: title, headings and text, each
/// line's whitespace collapsed.
fn seen_text(extracted: &Extracted) -> String {
    let mut lines = vec![extracted.title.clone()];
    for section in &extracted.sections {
        lines.extend(section.heading_path.iter().cloned());
        lines.extend(section.text.lines().map(str::to_string));
    }
    let collapse = |line: &String| line.split_whitespace().collect::<Vec<_>>().join(" ");
    lines.iter().map(collapse).collect::<Vec<_>>().join("\n")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn real_docx_files_read_as_python_docx_reads_them() {
    for name in ["officer-example.docx", "previsat-manual.docx"] {
        let path = documents_dir().join(name);
        let bytes = std::fs::read(&path).unwrap();
        let extracted = documents::extract(Kind::Docx, &bytes).unwrap();
        let oracle = python_docx(&path);
        let text = seen_text(&extracted);

        // Every heading is a section heading, under its parents.
        let headings: HashSet<&str> = extracted
            .sections
            .iter()
            .flat_map(|s| s.heading_path.iter().map(String::as_str))
            .collect();
        let expected = strings(&oracle["headings"]);
        let missing: Vec<&String> = expected
            .iter()
            .filter(|h| !headings.contains(h.as_str()))
            .collect();
        assert!(
            !expected.is_empty() && missing.is_empty(),
            "{name}: {missing:?}"
        );
        let title = oracle["title"].as_str().unwrap();
        if !title.is_empty() {
            assert_eq!(extracted.title, title, "{name}");
        }

        // The text of every paragraph and cell, in the document's order, and every table
        // row as one line.
        let texts = strings(&oracle["texts"]);
        let mut cursor = 0;
        let mut found = 0;
        for t in &texts {
            if let Some(at) = text[cursor..].find(t.as_str()) {
                cursor += at + t.len();
                found += 1;
            }
        }
        let rows: Vec<String> = oracle["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| strings(row).join(" | "))
            .collect();
        let rows_found = rows.iter().filter(|r| text.contains(r.as_str())).count();
        eprintln!(
            "{name}: {found}/{} paragraphs and cells, {rows_found}/{} table rows, {}/{} \
             headings, {} sections",
            texts.len(),
            rows.len(),
            expected.len() - missing.len(),
            expected.len(),
            extracted.sections.len()
        );
        let lost: Vec<&String> = texts
            .iter()
            .filter(|t| !text.contains(t.as_str()))
            .collect();
        let rows_lost: Vec<&String> = rows.iter().filter(|r| !text.contains(r.as_str())).collect();
        // Pinned files: all of it, exactly.
        assert!(
            lost.is_empty() && rows_lost.is_empty(),
            "{name}: {lost:?} {rows_lost:?}"
        );
        assert_eq!(found, texts.len());
    }
}

#[test]
fn a_folder_scan_reads_its_documents_as_pages() {
    let report = docent::ingest::local::scan(&documents_dir(), None, 100).unwrap();
    let mut titles: Vec<(String, String)> = report
        .pages
        .iter()
        .map(|p| {
            let file = p.url.rsplit('/').next().unwrap().to_string();
            (file, p.extracted.title.clone())
        })
        .collect();
    titles.sort();
    assert_eq!(
        titles,
        [
            ("officer-example.docx".into(), "document title".into()),
            // No title in its properties: the first top heading.
            ("previsat-manual.docx".into(), "Overview".into()),
        ],
        "{:?}",
        report.skipped
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crawl_ingests_the_documents_its_pages_link_and_records_a_broken_one() {
    let site = tempfile::tempdir().unwrap();
    let manual = documents_dir().join("officer-example.docx");
    std::fs::copy(&manual, site.path().join("guide.docx")).unwrap();
    std::fs::write(
        site.path().join("broken.docx"),
        b"PK\x03\x04 not really a zip",
    )
    .unwrap();
    std::fs::write(
        site.path().join("index.html"),
        "<html><head><title>Files</title></head><body><main><h1>Files</h1>\
         <p>The guide explains petals and sepals.</p>\
         <a href=\"guide.docx\">Guide</a> <a href=\"broken.docx\">Old guide</a>\
         </main></body></html>",
    )
    .unwrap();
    let server = serve(site.path());
    let data = tempfile::tempdir().unwrap();
    let store = open_store(data.path());
    let request = IngestRequest {
        bot: BotId::parse("files").unwrap(),
        name: None,
        source: Source::parse(&server.url("index.html"), None).unwrap(),
        crawl: CrawlOptions {
            delay: Duration::ZERO,
            ..CrawlOptions::default()
        },
        chunk: ChunkSpec::default(),
        test: false,
    };
    let embedding = Embedding::from(Arc::new(FakeEmbedder::default()));
    let summary = ingest::run(store.clone(), embedding, request, &ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(
        (summary.pages_indexed, summary.pages_skipped),
        (2, 1),
        "{summary:?}"
    );
    let pages = store.pages(&BotId::parse("files").unwrap()).unwrap();
    let guide = pages
        .iter()
        .find(|p| p.url == server.url("guide.docx"))
        .unwrap_or_else(|| panic!("{pages:?}"));
    let oracle = python_docx(&manual);
    assert_eq!(guide.title, oracle["title"].as_str().unwrap());
    let chunks = store.chunks(&guide.chunk_ids).unwrap();
    // Its sections (short ones share a chunk) and its table, a merged cell repeated.
    let headed = chunks.iter().any(|c| c.heading_path == ["Title 1"]);
    let all: String = chunks.iter().map(|c| c.text.as_str()).collect();
    assert!(headed && all.contains("\n\nSub title 1\n"), "{chunks:?}");
    assert!(
        all.contains("Petals | Internode | Sepal | Bract\n"),
        "{all}"
    );
    assert!(
        all.contains("5,645575295 | Merged cell | 2,278691288"),
        "{all}"
    );
}
