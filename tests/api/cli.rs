//! CLI smoke tests, and the whole product through the binary: ingest then ask, as JSON.

use serde_json::Value;

use crate::crash::docent;
use crate::helpers::{fixture, serve};

#[test]
fn help_version_and_config_example_work() {
    let data = tempfile::tempdir().unwrap();
    let help = docent(data.path()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for command in ["ingest", "ask", "bots", "bench"] {
        assert!(help.contains(command), "{help}");
    }
    let version = docent(data.path()).arg("--version").output().unwrap();
    assert!(
        String::from_utf8(version.stdout)
            .unwrap()
            .starts_with("docent ")
    );
    let example = docent(data.path())
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8(example.stdout)
            .unwrap()
            .contains("min_score")
    );
}

#[test]
fn unknown_bot_and_bad_bot_ids_are_clear_errors() {
    let data = tempfile::tempdir().unwrap();
    let out = docent(data.path())
        .args(["bots", "show", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bot nope not found"));
    let out = docent(data.path())
        .args(["ingest", "http://127.0.0.1:9/", "--bot", "Bad Id"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid bot id"));
}

#[test]
fn ingest_then_ask_through_the_binary_returns_cited_json() {
    let site = serve(&fixture("site"));
    let data = tempfile::tempdir().unwrap();
    let out = docent(data.path())
        .args([
            "ingest",
            &site.url("index.html"),
            "--bot",
            "zephyr",
            "--name",
            "Zephyr",
            "--json",
            "--delay-ms",
            "0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in [
        "bot",
        "pages_indexed",
        "pages_unchanged",
        "pages_skipped",
        "pages_removed",
        "chunks",
        "seconds",
    ] {
        assert!(summary.get(field).is_some(), "missing {field}: {summary}");
    }
    assert_eq!(summary["bot"], "zephyr");

    let out = docent(data.path())
        .args([
            "--model",
            "small",
            "ask",
            "--bot",
            "zephyr",
            "--json",
            "What does error code E42 mean?",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["answered"], true, "{answer}");
    let text = answer["answer"].as_str().unwrap().to_lowercase();
    assert!(
        text.contains("scale") || text.contains("descal"),
        "{answer}"
    );
    let urls: Vec<&str> = answer["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap())
        .collect();
    assert!(
        urls.iter().any(|u| u.ends_with("/guides/descaling.html")),
        "{answer}"
    );
    for field in [
        "retrieve_ms",
        "ttft_ms",
        "total_ms",
        "prompt_tokens",
        "completion_tokens",
    ] {
        assert!(
            answer["timings"].get(field).is_some(),
            "missing timings.{field}"
        );
    }

    let list = docent(data.path())
        .args(["bots", "list", "--json"])
        .output()
        .unwrap();
    let bots: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(bots[0]["id"], "zephyr");
    assert_eq!(bots[0]["name"], "Zephyr");

    let deleted = docent(data.path())
        .args(["bots", "delete", "zephyr", "--json"])
        .output()
        .unwrap();
    assert!(deleted.status.success());
    let list = docent(data.path())
        .args(["bots", "list", "--json"])
        .output()
        .unwrap();
    let bots: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(bots, serde_json::json!([]));
}
