//! `docent eval` through the binary, with the real models: a small BEIR folder made here
//! (retrieval metrics, and an exact code only the keyword index can match), and golden
//! questions against a bot (pass, fail, decline, `--min-score`).

use std::path::Path;

use serde_json::{Value, json};

use crate::crash::docent;
use crate::helpers::{fixture, serve};

/// A small BEIR folder: eight passages on unrelated topics, one holding a made-up part
/// number no embedder has seen, and a query for each of five of them.
fn write_beir(dir: &Path) {
    let passages = [
        (
            "d1",
            "Kettles",
            "An electric kettle boils a litre of water in about three minutes.",
        ),
        (
            "d2",
            "Owls",
            "Owls hunt at night and can turn their heads through 270 degrees.",
        ),
        (
            "d3",
            "Trains",
            "The first public steam railway opened in 1825 between Stockton and Darlington.",
        ),
        (
            "d4",
            "Glaciers",
            "Glaciers form where snow accumulates faster than it melts, year after year.",
        ),
        (
            "d5",
            "Spare parts",
            "Replacement lid hinge, part number ZX-9931, fits every model sold since 2019.",
        ),
        (
            "d6",
            "Bread",
            "Sourdough bread rises with wild yeast and lactic acid bacteria instead of baker's yeast.",
        ),
        (
            "d7",
            "Violins",
            "A violin has four strings tuned in perfect fifths: G, D, A and E.",
        ),
        (
            "d8",
            "Comets",
            "A comet's tail always points away from the Sun, pushed by the solar wind.",
        ),
    ];
    let corpus: String = passages
        .iter()
        .map(|(id, title, text)| format!("{}\n", json!({"_id": id, "title": title, "text": text})))
        .collect();
    let queries = [
        ("q1", "how long does a kettle take to boil water"),
        ("q2", "which way does a comet tail point"),
        ("q3", "ZX-9931"),
        ("q4", "when did the first steam railway open"),
        ("q5", "what makes sourdough rise"),
    ];
    let relevant = ["d1", "d8", "d5", "d3", "d6"];
    let queries_text: String = queries
        .iter()
        .map(|(id, text)| format!("{}\n", json!({"_id": id, "text": text})))
        .collect();
    let qrels: String = std::iter::once("query-id\tcorpus-id\tscore\n".to_string())
        .chain(
            queries
                .iter()
                .zip(relevant)
                .map(|((q, _), d)| format!("{q}\t{d}\t1\n")),
        )
        .collect();
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(dir.join("queries.jsonl"), queries_text).unwrap();
    std::fs::write(dir.join("qrels/test.tsv"), qrels).unwrap();
}

fn run_json(data: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let out = docent(data).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "not JSON: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), value)
}

#[test]
fn eval_retrieval_scores_a_beir_folder_and_keywords_find_exact_codes() {
    let corpus = tempfile::tempdir().unwrap();
    write_beir(corpus.path());
    let data = tempfile::tempdir().unwrap();
    let dir = corpus.path().to_str().unwrap();
    let (code, hybrid) = run_json(
        data.path(),
        &["eval", "retrieval", "--corpus", dir, "--json"],
    );
    assert_eq!(code, Some(0), "{hybrid}");
    for field in [
        "n_queries",
        "recall@1",
        "recall@5",
        "recall@10",
        "mrr@10",
        "ndcg@10",
        "seconds",
    ] {
        assert!(hybrid.get(field).is_some(), "missing {field}: {hybrid}");
    }
    assert_eq!(hybrid["n_queries"], 5);
    // Every query's passage is found, and first.
    assert_eq!(hybrid["recall@10"], 1.0, "{hybrid}");
    assert_eq!(hybrid["recall@1"], 1.0, "{hybrid}");
    assert_eq!(hybrid["ndcg@10"], 1.0, "{hybrid}");
    // The part number alone: BM25 puts its passage first.
    let (_, keyword) = run_json(
        data.path(),
        &[
            "eval",
            "retrieval",
            "--corpus",
            dir,
            "--mode",
            "keyword",
            "--json",
        ],
    );
    assert_eq!(keyword["mode"], "keyword");
    assert!(keyword["recall@1"].as_f64().unwrap() >= 0.8, "{keyword}");
    // The exact-code query by itself (same corpus, judged only on "ZX-9931"): BM25 puts
    // its passage first, which the mean over five could hide.
    let codes = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(codes.path().join("qrels")).unwrap();
    for file in ["corpus.jsonl", "queries.jsonl"] {
        std::fs::copy(corpus.path().join(file), codes.path().join(file)).unwrap();
    }
    std::fs::write(
        codes.path().join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq3\td5\t1\n",
    )
    .unwrap();
    let (_, code_only) = run_json(
        data.path(),
        &[
            "eval",
            "retrieval",
            "--corpus",
            codes.path().to_str().unwrap(),
            "--mode",
            "keyword",
            "--json",
        ],
    );
    assert_eq!(code_only["n_queries"], 1, "{code_only}");
    assert_eq!(code_only["recall@1"], 1.0, "{code_only}");
    // A seeded sample, from the same scratch index (nothing embedded again).
    let (_, sampled) = run_json(
        data.path(),
        &[
            "eval",
            "retrieval",
            "--corpus",
            dir,
            "--sample",
            "2",
            "--seed",
            "3",
            "--json",
        ],
    );
    assert_eq!(sampled["n_queries"], 2);
    // Not a BEIR folder: a clear error, not a panic.
    let out = docent(data.path())
        .args([
            "eval",
            "retrieval",
            "--corpus",
            data.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("corpus.jsonl"));
}

#[test]
fn eval_questions_reports_each_golden_question_and_fails_under_min_score() {
    let site = serve(&fixture("site"));
    let data = tempfile::tempdir().unwrap();
    let out = docent(data.path())
        .args([
            "ingest",
            &site.url("index.html"),
            "--bot",
            "zephyr",
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
    let golden = json!([
        {"question": "How many days do I have to return a kettle?",
         "expected_answer_keywords": ["45"], "source_url": site.url("returns.html")},
        {"question": "What is the capital of Mongolia?", "expected_answer_keywords": []},
        {"question": "How many days do I have to return a kettle?",
         "expected_answer_keywords": ["purple"]},
    ]);
    let file = data.path().join("golden.json");
    std::fs::write(&file, golden.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let args = |min: &'static str| {
        vec![
            "--model",
            "small",
            "eval",
            "questions",
            "--bot",
            "zephyr",
            "--json",
            "--min-score",
            min,
            file,
        ]
    };
    let (code, report) = run_json(data.path(), &args("0.6"));
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["total"], 3);
    assert_eq!(report["passed"], 2, "{report}");
    let results = report["results"].as_array().unwrap();
    assert_eq!(results[0]["passed"], true, "{report}");
    assert_eq!(
        results[1]["passed"], true,
        "declining the off-topic question passes"
    );
    assert_eq!(results[2]["passed"], false);
    assert_eq!(results[2]["reason"], "missing a keyword");
    // Each answer says which of its specifics no cited passage states, and the report
    // counts the answers with any among those answered.
    let answered = results.iter().filter(|r| r["answered"] == true).count();
    let invented = results
        .iter()
        .filter(|r| !r["unsupported"].as_array().is_none_or(Vec::is_empty))
        .count();
    assert_eq!(report["invented"]["answered"], answered, "{report}");
    assert_eq!(report["invented"]["answers"], invented, "{report}");
    // The two answers about returns state the 45 days their page does.
    for r in [&results[0], &results[2]] {
        let unsupported = r["unsupported"].as_array().cloned().unwrap_or_default();
        assert!(!unsupported.contains(&json!("45")), "{r}");
    }
    // The same run under a stricter bar exits non-zero; `--save` keeps the questions as
    // the bot's golden questions, and a run without a file asks those.
    let mut saving = args("0.9");
    saving.insert(saving.len() - 1, "--save");
    let (code, report) = run_json(data.path(), &saving);
    assert_eq!(
        (code, report["passed"].as_u64()),
        (Some(1), Some(2)),
        "{report}"
    );
    let mut stored = args("0.6");
    stored.pop();
    let (code, report) = run_json(data.path(), &stored);
    assert_eq!(code, Some(0), "{report}");
    let asked: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["question"].as_str().unwrap())
        .collect();
    assert_eq!(asked.len(), 3, "{report}");
    assert_eq!(asked[1], "What is the capital of Mongolia?");
    assert_eq!(report["passed"], 2, "{report}");
}
