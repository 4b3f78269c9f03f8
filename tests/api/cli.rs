//! CLI smoke tests, and the whole product through the binary: ingest then ask, as JSON.

use std::time::Duration;

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
        "urls_refused",
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

/// One HTTP/1.0 GET on loopback; returns the status code and the body.
fn http_get(address: &str, path: &str, key: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\n{auth}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn serve_makes_an_admin_key_owns_the_data_dir_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let served = crate::events::Served::spawn(
        docent(data.path()),
        &["--bind", "127.0.0.1:0", "--model", "small"],
        &[],
    );
    for line in &served.startup {
        assert!(
            !line.contains("sk_live_"),
            "the key itself is never printed: {line}"
        );
    }
    assert!(
        served.startup.iter().any(|l| l.contains("admin.key")),
        "{:#?}",
        served.startup
    );
    let address = served.base.trim_start_matches("http://").to_string();
    let key_file = data.path().join("admin.key");
    let admin = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(admin.starts_with("sk_live_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(http_get(&address, "/healthz", None).0, 200);
    let out = docent(data.path()).args(["keys", "list"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if crate::helpers::on_postgres() {
        // PostgreSQL is shared: the CLI works beside the server.
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stdout.contains("bootstrap admin"), "{stdout}");
    } else {
        // The CLI says plainly that the server owns the database.
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr.contains("docent serve is running on") && stderr.contains("use the API"),
            "{stderr}"
        );
    }
    // Ready once the models are loaded; the admin key works.
    served.wait_line("docent ready");
    assert_eq!(http_get(&address, "/readyz", None).0, 200);
    let (status, body) = http_get(&address, "/v1/bots", Some(&admin));
    assert_eq!(status, 200, "{body}");
    // SIGTERM: a clean exit that releases the database.
    let status = served.stop();
    assert!(status.success(), "{status:?}");
    assert!(!data.path().join("serve.pid").exists());
    let out = docent(data.path())
        .args(["keys", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&admin));
}

#[test]
fn keys_cli_creates_scoped_public_and_test_keys_and_rejects_nonsense() {
    let data = tempfile::tempdir().unwrap();
    let create = |args: &[&str]| {
        let out = docent(data.path())
            .args(["keys", "create", "--json"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, _) = create(&["--admin"]);
    assert_eq!(code, Some(0));
    let admin: Value = serde_json::from_str(&stdout).unwrap();
    assert!(admin["key"].as_str().unwrap().starts_with("sk_live_"));
    assert_eq!(admin["admin"], true);
    let (_, stdout, _) = create(&["--bot", "docs", "--test"]);
    let scoped: Value = serde_json::from_str(&stdout).unwrap();
    assert!(scoped["key"].as_str().unwrap().starts_with("sk_test_"));
    assert_eq!(scoped["bots"], serde_json::json!(["docs"]));
    let (_, stdout, _) = create(&[
        "--public",
        "--bot",
        "docs",
        "--origin",
        "https://site.example",
    ]);
    let public: Value = serde_json::from_str(&stdout).unwrap();
    assert!(public["key"].as_str().unwrap().starts_with("pk_live_"));
    for bad in [
        &["--public", "--bot", "docs"][..],
        &["--admin", "--bot", "docs"],
        &[],
        &[
            "--public",
            "--bot",
            "docs",
            "--origin",
            "https://site.example/path",
        ],
        &["--bot", "Not A Slug"],
    ] {
        let (code, _, stderr) = create(bad);
        assert_eq!(code, Some(1), "{bad:?}");
        assert!(stderr.starts_with("error: "), "{bad:?}: {stderr}");
    }
    let id = admin["id"].as_str().unwrap();
    let out = docent(data.path())
        .args(["keys", "rotate", id, "--overlap", "1h", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rotated["replaces"]["expires"].as_u64().is_some());
    let out = docent(data.path())
        .args(["keys", "revoke", id])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = docent(data.path())
        .args(["keys", "rotate", id])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a revoked key cannot be rotated"
    );
}

#[test]
fn analytics_cli_reports_a_bots_days_and_groups_its_unanswered_questions() {
    use docent::domain::{Bot, BotId, BotSettings, Conversation, Message};
    let data = tempfile::tempdir().unwrap();
    let now = docent::telemetry::unix_now();
    {
        let store = crate::helpers::open_store(data.path());
        let bot = BotId::parse("shop").unwrap();
        store
            .create_bot(&Bot {
                id: bot.clone(),
                name: "Shop".into(),
                source: String::new(),
                created_unix: now,
                updated_unix: now,
                pages: 0,
                chunks: 0,
                test: false,
                settings: BotSettings::default(),
                embedder: None,
            })
            .unwrap();
        // Two unanswered questions that mean the same with no content word in common
        // (MiniLM cosine 0.69), and one that shares their words but not their meaning
        // (0.52 to the first): a grouping by words would get both wrong.
        let turns = [
            ("Do you ship to Canada?", false),
            ("Can I get my order sent to Toronto?", false),
            ("Do you sell kettles in Canada?", false),
            ("How do I descale the kettle?", true),
        ];
        for (i, (question, answered)) in turns.iter().enumerate() {
            let conversation = Conversation {
                id: format!("conv_{i}"),
                bot_id: bot.clone(),
                user_id: None,
                state: docent::domain::ConversationState::Open,
                key_id: "key_x".into(),
                created: now,
                updated: now,
                intent: None,
                handed_off_at: None,
                handoff_reason: None,
                lead_id: None,
                ratings: Default::default(),
                releases: 0,
            };
            let messages = [
                Message {
                    id: format!("msg_q{i}"),
                    role: docent::domain::Role::User,
                    content: question.to_string(),
                    created: now,
                    ..Message::default()
                },
                Message {
                    id: format!("msg_a{i}"),
                    role: docent::domain::Role::Assistant,
                    content: "…".into(),
                    created: now,
                    answered: Some(*answered),
                    finish_reason: Some(if *answered { "stop" } else { "unanswered" }.into()),
                    ttft_ms: Some(100 * (i as u64 + 1)),
                    total_ms: Some(1000 * (i as u64 + 1)),
                    ..Message::default()
                },
            ];
            store.append_messages(&conversation, &messages).unwrap();
        }
    }
    let out = docent(data.path())
        .args(["analytics", "--bot", "shop", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let totals = &report["totals"];
    assert_eq!(totals["conversations"], 4, "{report}");
    assert_eq!(totals["replies"], 4);
    assert_eq!(totals["unanswered"], 3);
    assert!((totals["answered_rate"].as_f64().unwrap() - 0.25).abs() < 1e-9);
    assert_eq!(totals["ttft_ms"]["p50"], 200.0);
    assert_eq!(totals["latency_ms"]["p95"], 4000.0);
    // The two shipping questions are one gap, grouped by meaning (the real embedder);
    // the one about selling is its own.
    let gaps = report["unanswered_questions"].as_array().unwrap();
    assert_eq!(gaps.len(), 2, "{report}");
    assert_eq!(gaps[0]["count"], 2, "{report}");
    let mut shipping: Vec<&str> = gaps[0]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap())
        .collect();
    shipping.sort();
    assert_eq!(
        shipping,
        [
            "Can I get my order sent to Toronto?",
            "Do you ship to Canada?"
        ],
        "{report}"
    );
    assert_eq!(gaps[1]["count"], 1, "{report}");
    assert_eq!(gaps[1]["question"], "Do you sell kettles in Canada?");
    // The table form, and a clear error for a bad date.
    let out = docent(data.path())
        .args(["analytics", "--bot", "shop"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("total") && text.contains("2 x ") && text.contains("1 x Do you sell"),
        "{text}"
    );
    let out = docent(data.path())
        .args(["analytics", "--bot", "shop", "--from", "2026-02-30"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a date"));
}

#[test]
fn users_cli_creates_owners_and_agents_stores_only_a_hash_and_rejects_nonsense() {
    use docent::domain::{Bot, BotId, BotSettings};
    let data = tempfile::tempdir().unwrap();
    {
        let store = crate::helpers::open_store(data.path());
        store
            .create_bot(&Bot {
                id: BotId::parse("docs").unwrap(),
                name: "Docs".into(),
                source: String::new(),
                created_unix: 0,
                updated_unix: 0,
                pages: 0,
                chunks: 0,
                test: false,
                settings: BotSettings::default(),
                embedder: None,
            })
            .unwrap();
    }
    const PASSWORD: &str = "a long enough password";
    let users = |args: &[&str], password: &str| {
        let mut child = docent(data.path())
            .arg("users")
            .args(args)
            .env_remove("DOCENT_PASSWORD")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // A command refused before it reads the password may have exited already.
        if let Err(e) = writeln!(stdin, "{password}") {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = users(
        &[
            "create",
            "--email",
            "Owner@Example.org",
            "--role",
            "owner",
            "--json",
        ],
        PASSWORD,
    );
    assert_eq!(code, Some(0), "{stderr}");
    let owner: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(owner["email"], "owner@example.org");
    assert_eq!(owner["role"], "owner");
    assert!(owner["id"].as_str().unwrap().starts_with("acct_"));
    // The password from the environment works too.
    let out = docent(data.path())
        .args(["users", "create", "--email", "agent@example.org"])
        .args(["--role", "agent", "--bot", "docs", "--json"])
        .env("DOCENT_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agent["bots"], serde_json::json!(["docs"]));
    for (bad, password) in [
        (
            &["--email", "owner@example.org", "--role", "owner"][..],
            PASSWORD,
        ),
        (&["--email", "new@example.org", "--role", "owner"], "short"),
        (&["--email", "new@example.org", "--role", "agent"], PASSWORD),
        (
            &[
                "--email",
                "new@example.org",
                "--role",
                "agent",
                "--bot",
                "nope",
            ],
            PASSWORD,
        ),
        (
            &[
                "--email",
                "new@example.org",
                "--role",
                "owner",
                "--bot",
                "docs",
            ],
            PASSWORD,
        ),
        (&["--email", "not an email", "--role", "owner"], PASSWORD),
        (&["--email", "new@example.org", "--role", "admin"], PASSWORD),
        (&["--email", "new@example.org", "--role", "owner"], ""),
    ] {
        let mut args = vec!["create"];
        args.extend_from_slice(bad);
        let (code, _, stderr) = users(&args, password);
        assert_ne!(code, Some(0), "{bad:?}");
        assert!(stderr.starts_with("error"), "{bad:?}: {stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
    }
    let (code, stdout, _) = users(&["list", "--json"], "");
    assert_eq!(code, Some(0));
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");
    // Only the argon2id hash is kept, and never shown.
    assert!(
        !stdout.contains("argon2") && !stdout.contains(PASSWORD),
        "{stdout}"
    );
    let raw = crate::helpers::stored_bytes(data.path());
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("$argon2id$v=19$"));
    assert!(!raw.contains(PASSWORD));
    let (code, _, stderr) = users(&["delete", "AGENT@example.org"], "");
    assert_eq!(code, Some(0), "{stderr}");
    let (_, stdout, _) = users(&["list", "--json"], "");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["data"][0]["email"], "owner@example.org");
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    let (code, _, _) = users(&["delete", "agent@example.org"], "");
    assert_eq!(code, Some(1), "deleting twice is an error");
}

#[test]
fn rotating_the_session_secret_keeps_the_old_one_for_the_overlap_and_refuses_a_long_one() {
    let data = tempfile::tempdir().unwrap();
    let rotate = |overlap: &str| {
        let out = docent(data.path())
            .args([
                "keys",
                "rotate-session-secret",
                "--json",
                "--overlap",
                overlap,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.success(), stdout, stderr)
    };
    // A store no node has served yet has no secret: the rotation makes the first one.
    let (ok, first, stderr) = rotate("1h");
    assert!(ok, "{stderr}");
    let first: Value = serde_json::from_str(first.trim()).unwrap();
    assert_eq!(first["previous_valid_until"], Value::Null, "{first}");
    let (ok, second, stderr) = rotate("90s");
    assert!(ok, "{stderr}");
    let second: Value = serde_json::from_str(second.trim()).unwrap();
    let at = second["rotated_at"].as_u64().unwrap();
    assert_eq!(second["previous_valid_until"].as_u64(), Some(at + 90));
    let (ok, _, stderr) = rotate("31d");
    assert!(
        !ok && stderr.contains("at most 2592000 seconds"),
        "{stderr}"
    );
    let (ok, _, stderr) = rotate("soon");
    assert!(!ok && !stderr.is_empty());
}

/// `make run`'s script (`tests/demo.sh`), on the bundled site (a `rustup` that fails hides
/// the Rust Book) and the small model: it ingests, answers with its sources, prints a
/// working key, and serves until SIGTERM.
#[test]
fn the_make_run_demo_ingests_answers_prints_a_working_key_and_serves() {
    use std::process::{Command, Stdio};
    let data = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let rustup = bin.path().join("rustup");
    std::fs::write(&rustup, "#!/bin/sh\nexit 1\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rustup, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .arg(crate::helpers::repo_root().join("tests/demo.sh"))
        .arg(env!("CARGO_BIN_EXE_docent"))
        .current_dir(crate::helpers::repo_root())
        .env("PATH", path)
        .env("DOCENT_DATA_DIR", data.path())
        .env("DOCENT_BIND", "127.0.0.1:0")
        .env("DOCENT_MODEL", "small")
        .env("DOCENT_MODELS_DIR", crate::helpers::models_dir())
        .env_remove("DOCENT_STORE")
        .env_remove("DOCENT_FAILPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    // Killed if the test fails midway (bash exec'd into serve: the same process).
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let printed = crate::helpers::StderrLines::from(child.stdout.take().unwrap());
    let lines = crate::helpers::StderrLines::of(&mut child);
    let mut child = Kill(child);
    // What it printed before serving: the ingest, the answer with its sources, the links
    // and the curl line with a key.
    let said = printed
        .until("Authorization: Bearer ", Duration::from_secs(600))
        .join("\n");
    assert!(said.contains("ingesting the bundled demo site"), "{said}");
    assert!(said.contains("Sources:"), "the answer cites: {said}");
    assert!(said.contains("help.zephyr-kettles.example"), "{said}");
    let key = said
        .split("Authorization: Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a curl line with a key")
        .to_string();
    assert!(key.starts_with("sk_live_"), "{key}");
    let token = said
        .split("&token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a demo link with the widget's key")
        .to_string();
    assert!(token.starts_with("pk_live_"), "{token}");
    let listening = lines.until("docent listening on http://", Duration::from_secs(120));
    let address = listening
        .last()
        .unwrap()
        .trim_start_matches("docent listening on http://")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    lines.until("docent ready", Duration::from_secs(120));
    assert_eq!(http_get(&address, "/healthz", None).0, 200);
    // The printed key lists the bots; the demo page and the console answer.
    let (status, bots) = http_get(&address, "/v1/bots", Some(&key));
    assert_eq!(status, 200, "{bots}");
    assert!(bots.contains("zephyr"), "{bots}");
    let (status, page) = http_get(&address, &format!("/demo?bot=zephyr&token={token}"), None);
    assert_eq!(status, 200);
    assert!(
        page.contains(&token),
        "the page embeds the widget with the key: {page}"
    );
    assert_eq!(http_get(&address, "/admin", None).0, 200);
    // SIGTERM: a clean exit, the serve marker removed.
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status =
        crate::helpers::eventually("the demo's serve stopped", Duration::from_secs(30), || {
            child.0.try_wait().unwrap()
        });
    assert!(status.success(), "{status:?}");
    assert!(!data.path().join("serve.pid").exists());
}
