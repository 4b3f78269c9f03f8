//! Documents beside web pages: real DOCX and PDF files from Debian packages (fetched by
//! `make test` into target/documents, pinned by version and sha256) read as python-docx
//! and pypdf read them (headings, paragraphs, table rows, pages, outlines, titles),
//! documents ingested from folders and from links a crawl finds, each PDF page cited as
//! `file.pdf#page=N`, and broken, scanned, crashing, hanging or memory-eating files
//! recorded as skipped with their reason, never fatal.

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

use crate::helpers::{fixture, open_store, repo_root, run_with_deadline, serve};

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
    oracle("docx_text.py", path)
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

/// A tool's reading of `path` as JSON (tests/documents/*.py in the test venv).
fn oracle(script: &str, path: &Path) -> Value {
    let mut command = std::process::Command::new(crate::helpers::test_python());
    command
        .arg(repo_root().join("tests/documents").join(script))
        .arg(path);
    let out = run_with_deadline(&mut command, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs of six ASCII letters and digits, lowercased, spacing and punctuation ignored (the
/// two readers space words and math differently), with their counts.
fn grams(text: &str) -> std::collections::HashMap<String, usize> {
    let letters: Vec<char> = text
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut counts = std::collections::HashMap::new();
    for gram in letters.windows(6) {
        *counts.entry(gram.iter().collect()).or_insert(0) += 1;
    }
    counts
}

/// The share of `reference`'s grams (with their counts) that `text` holds too.
fn recall(reference: &str, text: &str) -> f64 {
    let (want, got) = (grams(reference), grams(text));
    let total: usize = want.values().sum();
    let common: usize = want
        .iter()
        .map(|(w, n)| (*n).min(got.get(w).copied().unwrap_or(0)))
        .sum();
    common as f64 / total.max(1) as f64
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
fn real_pdf_files_read_as_pypdf_reads_them() {
    for name in ["cvxopt.pdf", "debian-history.pdf"] {
        let path = documents_dir().join(name);
        let bytes = std::fs::read(&path).unwrap();
        let extracted = documents::extract(Kind::Pdf, &bytes).unwrap();
        let oracle = oracle("pdf_text.py", &path);
        assert_eq!(extracted.title, oracle["title"].as_str().unwrap(), "{name}");

        // Each page's text is cited as that page: its words are those pypdf finds there.
        let oracle_pages = strings(&oracle["pages"]);
        let mut page_text = vec![String::new(); oracle_pages.len()];
        for section in &extracted.sections {
            let anchor = section
                .anchor
                .as_deref()
                .expect("every PDF section has a page");
            let page: usize = anchor.strip_prefix("page=").unwrap().parse().unwrap();
            // A printed heading is the section's heading, not its text.
            page_text[page - 1].push_str(section.heading_path.last().map_or("", |h| h));
            page_text[page - 1].push_str(&section.text);
            page_text[page - 1].push('\n');
        }
        let mut low = Vec::new();
        for (number, (want, got)) in oracle_pages.iter().zip(&page_text).enumerate() {
            // Pages of matrices and tables of contents differ most (0.74 on cvxopt's
            // worst); a page shifted by one would share almost nothing.
            let r = recall(want, got);
            if grams(want).values().sum::<usize>() >= 100 && r < 0.7 {
                low.push((number + 1, r));
            }
        }
        let whole = recall(&oracle_pages.join("\n"), &page_text.join("\n"));
        // Every outline entry heads text on its page (itself, or its first subsection).
        let entries = oracle["outline"].as_array().unwrap();
        let heads: HashSet<(String, String)> = extracted
            .sections
            .iter()
            .flat_map(|s| {
                let anchor = s.anchor.clone().unwrap_or_default();
                s.heading_path
                    .iter()
                    .map(move |h| (h.clone(), anchor.clone()))
            })
            .collect();
        let collapse = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
        let missing: Vec<&Value> = entries
            .iter()
            .filter(|e| {
                let title = collapse(e["title"].as_str().unwrap());
                let anchor = format!("page={}", e["page"]);
                !heads.contains(&(title, anchor))
            })
            .collect();
        eprintln!(
            "{name}: {} pages, recall {whole:.4} of pypdf's text, {} of {} outline entries \
             heading their page, {} sections",
            oracle_pages.len(),
            entries.len() - missing.len(),
            entries.len(),
            extracted.sections.len()
        );
        assert!(whole >= 0.95, "{name}: {whole}");
        assert!(
            low.is_empty(),
            "{name}: pages with little of pypdf's text: {low:?}"
        );
        assert!(
            entries.len() >= 40 && missing.is_empty(),
            "{name}: {missing:?}"
        );
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
            ("cvxopt.pdf".into(), "CVXOPT Documentation".into()),
            (
                "debian-history.pdf".into(),
                "A Brief History of Debian".into()
            ),
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
    for pdf in ["refund-policy.pdf", "scan.pdf"] {
        std::fs::copy(fixture("documents").join(pdf), site.path().join(pdf)).unwrap();
    }
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
         <a href=\"refund-policy.pdf\">Refunds</a> <a href=\"scan.pdf\">Signed form</a>\
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
        (3, 2),
        "{summary:?}"
    );
    let reasons: Vec<(&str, &str)> = summary
        .skipped
        .iter()
        .map(|s| (s.url.rsplit('/').next().unwrap(), s.reason.as_str()))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|(f, r)| *f == "scan.pdf" && r.starts_with("no text layer"))
            && reasons
                .iter()
                .any(|(f, r)| *f == "broken.docx" && r.contains("not a DOCX file")),
        "{reasons:?}"
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

    // The PDF's chunks cite their pages, under the outline's headings; `Returns` starts
    // halfway down page 2, after `Refunds`.
    let policy = pages
        .iter()
        .find(|p| p.url == server.url("refund-policy.pdf"))
        .unwrap_or_else(|| panic!("{pages:?}"));
    assert_eq!(policy.title, "Acme Refunds \u{2013} Policy");
    let chunks = store.chunks(&policy.chunk_ids).unwrap();
    let cited: Vec<(String, Vec<String>, bool)> = chunks
        .iter()
        .map(|c| {
            let page = c.url.rsplit('/').next().unwrap().to_string();
            (page, c.heading_path.clone(), c.text.contains("30 days"))
        })
        .collect();
    let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let pdf = |page: u32| format!("refund-policy.pdf#page={page}");
    assert_eq!(
        cited,
        [
            (pdf(1), path(&["Acme Refund Policy"]), false),
            (pdf(2), path(&["Acme Refund Policy", "Refunds"]), true),
            (pdf(3), path(&["Acme Refund Policy", "Contact"]), false),
        ],
        "{chunks:?}"
    );
    // Short sections on one page share a chunk, the later heading kept in its text.
    assert!(
        chunks[1].text.contains("\n\nReturns\nSend the parcel back"),
        "{chunks:?}"
    );
}

/// Runs the docent binary on `data` and returns its stdout as JSON, failing on an error.
fn docent_json(data: &Path, env: &[(&str, &str)], args: &[&str]) -> Value {
    let mut command = crate::crash::docent(data);
    command.args(args).envs(env.iter().copied());
    let out = run_with_deadline(&mut command, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_docent_binary_reads_pdfs_apart_and_cites_their_pages() {
    let folder = tempfile::tempdir().unwrap();
    for pdf in ["refund-policy.pdf", "scan.pdf"] {
        std::fs::copy(fixture("documents").join(pdf), folder.path().join(pdf)).unwrap();
    }
    std::fs::write(folder.path().join("broken.pdf"), b"%PDF-1.7\n1 0 obj <<").unwrap();
    let data = tempfile::tempdir().unwrap();
    let ingest = [
        "ingest",
        folder.path().to_str().unwrap(),
        "--bot",
        "policy",
        "--json",
    ];
    let summary = docent_json(data.path(), &[], &ingest);
    assert_eq!(
        (&summary["pages_indexed"], &summary["pages_skipped"]),
        (&Value::from(1), &Value::from(2)),
        "{summary}"
    );
    let reasons = summary["skipped"].to_string();
    assert!(
        reasons.contains("scan.pdf") && reasons.contains("no text layer"),
        "{reasons}"
    );
    assert!(reasons.contains("not a readable PDF file"), "{reasons}");

    let question = "How many days until a refund reaches my payment card?";
    let ask = [
        "--model", "small", "ask", "--bot", "policy", "--json", question,
    ];
    let answer = docent_json(data.path(), &[], &ask);
    let urls: Vec<&str> = answer["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap())
        .collect();
    assert!(
        urls.first()
            .is_some_and(|u| u.ends_with("/refund-policy.pdf#page=2")),
        "{answer}"
    );

    // A reader that crashes, eats its memory or hangs costs its file, nothing more.
    std::fs::write(folder.path().join("notes.txt"), "Opening hours: 9 to 5.").unwrap();
    // One out of time may do next time: the indexed PDF keeps its pages meanwhile.
    let env = [
        ("DOCENT_FAILPOINT", "read-document"),
        ("DOCENT_DOCUMENT_TIMEOUT", "2"),
    ];
    let again = docent_json(data.path(), &env, &ingest);
    assert_eq!(
        (&again["pages_indexed"], &again["pages_removed"]),
        (&Value::from(1), &Value::from(0)),
        "{again}"
    );
    let answer = docent_json(data.path(), &[], &ask);
    assert!(
        answer["sources"]
            .to_string()
            .contains("refund-policy.pdf#page=2"),
        "{answer}"
    );
    for (fault, reason) in [
        ("read-document-abort", "crashed"),
        ("read-document-oom", "ran out of memory"),
        ("read-document", "took longer than 2 s"),
    ] {
        let data = tempfile::tempdir().unwrap();
        // Only the hang waits for the limit (eating 2 GiB can take seconds too).
        let limit = if fault == "read-document" { "2" } else { "60" };
        let env = [
            ("DOCENT_FAILPOINT", fault),
            ("DOCENT_DOCUMENT_TIMEOUT", limit),
        ];
        let summary = docent_json(data.path(), &env, &ingest);
        assert_eq!(summary["pages_indexed"], 1, "{fault}: {summary}");
        let skipped = summary["skipped"].as_array().unwrap();
        assert_eq!(skipped.len(), 3, "{fault}: {summary}");
        assert!(
            skipped
                .iter()
                .all(|s| s["reason"].as_str().unwrap().contains(reason)),
            "{fault}: {summary}"
        );
    }
}
