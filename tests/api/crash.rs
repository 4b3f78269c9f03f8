//! `kill -9` during the crawl, the embedding, the staging of chunks and the commit: each
//! time the bot still answers from its previous complete state, nothing staged is left,
//! and a re-run completes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use docent::domain::BotId;

use crate::helpers::{copy_fixture, dyn_embedder, models_dir, open_store, serve, store_url};

pub fn docent(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_docent"));
    cmd.arg("--data-dir")
        .arg(data)
        .env("DOCENT_MODELS_DIR", models_dir())
        .env_remove("DOCENT_FAILPOINT")
        .env_remove("DOCENT_STORE");
    if let Some(url) = store_url(data) {
        cmd.arg("--store").arg(url);
    }
    cmd
}

pub(crate) fn ingest(data: &Path, url: &str) {
    let out = docent(data)
        .args(["ingest", url, "--bot", "shop", "--json", "--delay-ms", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts an ingest that hangs at `point`, waits for it to get there, and kills it.
fn kill_ingest_at(data: &Path, url: &str, point: &str) {
    let mut child = docent(data)
        .args(["ingest", url, "--bot", "shop", "--json", "--delay-ms", "0"])
        .env("DOCENT_FAILPOINT", point)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = crate::helpers::StderrLines::of(&mut child);
    lines.until(
        &format!("failpoint {point} reached"),
        Duration::from_secs(120),
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// The text of the best chunk for the returns question.
fn returns_passage(data: &Path) -> String {
    let retriever = docent::app::retriever(open_store(data), dyn_embedder());
    let hits = retriever
        .retrieve(
            &BotId::parse("shop").unwrap(),
            "How many days do I have to return a kettle?",
            3,
        )
        .unwrap();
    let hit = hits
        .iter()
        .find(|h| h.chunk.url.ends_with("/returns.html"))
        .expect("returns page retrieved");
    hit.chunk.text.clone()
}

#[test]
fn kill_9_at_any_ingest_stage_keeps_the_previous_state_and_a_rerun_completes() {
    let root = copy_fixture("site");
    let site = serve(root.path());
    let data = tempfile::tempdir().unwrap();
    let url = site.url("index.html");
    ingest(data.path(), &url);
    assert!(returns_passage(data.path()).contains("45 days"));

    let returns = root.path().join("returns.html");
    let html = std::fs::read_to_string(&returns).unwrap();
    std::fs::write(&returns, html.replace("45 days", "60 days")).unwrap();
    for point in ["crawl", "embed", "stage", "commit"] {
        kill_ingest_at(data.path(), &url, point);
        let passage = returns_passage(data.path());
        assert!(
            passage.contains("45 days"),
            "after kill at {point}: {passage}"
        );
        // What the killed run staged is gone once the database is opened again (on
        // PostgreSQL, once the server has seen the killed process's connection close).
        let what = format!("after kill at {point}: no chunks staged");
        crate::helpers::eventually(&what, Duration::from_secs(30), || {
            (open_store(data.path()).staged_chunks().unwrap() == 0).then_some(())
        });
    }

    ingest(data.path(), &url);
    assert!(returns_passage(data.path()).contains("60 days"));
}
