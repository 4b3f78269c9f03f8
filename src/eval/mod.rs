//! `docent eval`: answer quality made measurable.
//!
//! - `retrieval`: a BEIR folder indexed into a scratch bot through the normal ingest path,
//!   its queries run through the normal retrieval path, ranking metrics.
//! - `qa`: a SQuAD v2 file's paragraphs indexed into one bot, its questions answered by the
//!   real generation path; accuracy on answerable questions, declines on unanswerable ones.
//! - `conflicts`: NQ questions whose passages had their answer swapped; how often the
//!   answer follows the passage rather than the model's memory.
//! - `questions`: an operator's golden questions against one of their bots.
//!
//! Every kind also counts invented facts: answered questions whose answer states a
//! specific no cited passage contains (`chat::claims`).
//!
//! Scratch bots live in their own database under `DATA_DIR/eval/`, one per data set, so a
//! second run re-embeds nothing (ingest is incremental) and `serve` is never disturbed.

pub mod data;
pub mod metrics;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::chat;
use crate::cli::{EvalConflictsArgs, EvalQaArgs, EvalQuestionsArgs, EvalRetrievalArgs};
use crate::config::Config;
use crate::domain::BotId;
use crate::embed::Embedding;
use crate::golden::NewQuestion;
use crate::ingest::{self, Document, IngestRequest, Source, chunk::ChunkSpec, crawl::CrawlOptions};
use crate::ports::Storage;
use metrics::{Qrels, contains_gold, percentile, wilson_interval};

/// Chunks retrieved per query before collapsing them to documents; enough that 10
/// distinct documents remain when a long document contributes several chunks.
const RETRIEVE_CHUNKS: usize = 30;

/// A BEIR folder indexed into its scratch bot, and its judged queries sorted by id.
pub(crate) struct Beir {
    pub store: Arc<dyn Storage>,
    pub bot: BotId,
    pub embedding: Embedding,
    pub queries: Vec<(String, String, Qrels)>,
    pub documents: usize,
}

/// Indexes `corpus` into its scratch bot (nothing again if it already was).
pub(crate) async fn beir(config: &Config, corpus: &Path, quiet: bool) -> anyhow::Result<Beir> {
    let set = data::load_beir(corpus)?;
    let embedding = cut_from_full(config, corpus, crate::app::load_embedding(config)?).await?;
    let (store, bot) = scratch_bot(
        config,
        corpus,
        "beir",
        set.documents(),
        embedding.clone(),
        quiet,
    )
    .await?;
    let mut queries: Vec<(String, String, Qrels)> = set
        .queries
        .iter()
        .filter_map(|(id, text)| {
            let qrels = set.qrels.get(id)?;
            Some((id.clone(), text.clone(), qrels.clone()))
        })
        .collect();
    queries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Beir {
        store,
        bot,
        embedding,
        queries,
        documents: set.corpus.len(),
    })
}

/// nomic at a Matryoshka width, with the passages a full-width run already embedded cut
/// from their stored vectors instead of embedded again (the cut of the full vector is the
/// narrower model's vector, to cosine 0.9999: `tests/api/nomic.rs`); queries and any other
/// text go through the model. `embedding` unchanged for any other embedder, or when no
/// full-width run is stored.
async fn cut_from_full(
    config: &Config,
    corpus: &Path,
    embedding: Embedding,
) -> anyhow::Result<Embedding> {
    let embedder = embedding.embedder.clone();
    let id = tokio::task::spawn_blocking(move || embedder.id())
        .await
        .context("embedder task failed")??;
    let full = crate::domain::EmbedderId::new(crate::embed::NOMIC_MODEL, 768);
    if id.model != full.model || id.dim == full.dim {
        return Ok(embedding);
    }
    let dir = scratch_dir(config, corpus, "beir", &full)?;
    if !dir.join("docent.redb").is_file() {
        return Ok(embedding);
    }
    let store = crate::store::open(&dir)?;
    let bot = BotId::parse("eval").map_err(anyhow::Error::msg)?;
    if store.get_bot(&bot).map(|b| b.chunks).unwrap_or(0) == 0 {
        return Ok(embedding);
    }
    let vectors: HashMap<u64, Vec<f32>> = store.vectors(&bot)?.into_iter().collect();
    let mut stored = HashMap::new();
    for (id, chunk) in store.bot_chunks(&bot)? {
        if let Some(vector) = vectors.get(&id) {
            stored.insert(chunk.embedding_text(), vector.clone());
        }
    }
    Ok(Embedding {
        embedder: Arc::new(CutFromFull {
            stored,
            model: embedding.embedder,
            dim: id.dim,
        }),
        tokenizer: embedding.tokenizer,
    })
}

/// See `cut_from_full`.
struct CutFromFull {
    stored: HashMap<String, Vec<f32>>,
    model: Arc<dyn crate::embed::Embedder>,
    dim: usize,
}

impl crate::embed::Embedder for CutFromFull {
    fn id(&self) -> anyhow::Result<crate::domain::EmbedderId> {
        self.model.id()
    }

    fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let found: Option<Vec<Vec<f32>>> = texts
            .iter()
            .map(|t| {
                self.stored
                    .get(*t)
                    .map(|v| crate::embed::matryoshka(v.clone(), self.dim))
            })
            .collect();
        match found {
            Some(vectors) => Ok(vectors),
            None => self.model.embed(texts),
        }
    }

    fn embed_queries(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        self.model.embed_queries(texts)
    }
}

/// Each query's recall@1, @5, @10, MRR@10 and nDCG@10, ranking documents by their best
/// chunk among what `retriever` finds.
pub(crate) fn score_queries(
    retriever: &crate::retrieval::Retriever,
    bot: &BotId,
    queries: &[(String, String, Qrels)],
    bar: &ProgressBar,
) -> anyhow::Result<Vec<[f64; 5]>> {
    parallel_map(queries, 2, bar, |(_, text, qrels)| {
        let hits = retriever.retrieve(bot, text, RETRIEVE_CHUNKS)?;
        let mut ranked: Vec<String> = Vec::new();
        for hit in hits {
            let id = data::document_id(&hit.chunk.url).to_string();
            if !ranked.contains(&id) {
                ranked.push(id);
            }
        }
        ranked.truncate(10);
        Ok([
            metrics::recall_at(&ranked, qrels, 1),
            metrics::recall_at(&ranked, qrels, 5),
            metrics::recall_at(&ranked, qrels, 10),
            metrics::reciprocal_rank_at(&ranked, qrels, 10),
            metrics::ndcg_at(&ranked, qrels, 10),
        ])
    })
}

pub async fn retrieval(config: &Config, args: EvalRetrievalArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let set = beir(config, &args.corpus, args.json).await?;
    let mode = crate::retrieval::Mode::from(args.mode);
    let retriever = crate::app::retriever(set.store, set.embedding).with_mode(mode);
    let queries = sample(set.queries, args.sample, args.seed);
    anyhow::ensure!(!queries.is_empty(), "no query has relevance judgements");
    let bar = progress(queries.len(), "queries", args.json);
    let search_started = Instant::now();
    let per_query = score_queries(&retriever, &set.bot, &queries, &bar)?;
    bar.finish_and_clear();
    let n = per_query.len() as f64;
    let mean = |i: usize| round4(per_query.iter().map(|m| m[i]).sum::<f64>() / n);
    let out = json!({
        "n_queries": per_query.len(),
        "recall@1": mean(0),
        "recall@5": mean(1),
        "recall@10": mean(2),
        "mrr@10": mean(3),
        "ndcg@10": mean(4),
        "seconds": round1(started.elapsed().as_secs_f64()),
        "search_ms_per_query": round1(search_started.elapsed().as_secs_f64() * 1000.0 / n),
        "mode": mode,
        "documents": set.documents,
    });
    print_result(args.json, &out, || {
        format!(
            "{} queries ({:?}): recall@1 {} recall@5 {} recall@10 {} MRR@10 {} nDCG@10 {} in {}s",
            out["n_queries"],
            mode,
            out["recall@1"],
            out["recall@5"],
            out["recall@10"],
            out["mrr@10"],
            out["ndcg@10"],
            out["seconds"]
        )
    });
    Ok(())
}

pub async fn qa(config: &Config, args: EvalQaArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let set = data::load_squad(&args.squad)?;
    let embedding = crate::app::load_embedding(config)?;
    let (store, bot) = scratch_bot(
        config,
        &args.squad,
        "squad",
        set.documents(),
        embedding.clone(),
        args.json,
    )
    .await?;
    let retriever = crate::app::retriever(store, embedding);
    let generator = crate::app::load_generator(config, args.concurrency.max(1))?;
    let mut options = crate::chat::AskOptions::from_config(config);
    if let Some(threshold) = args.answerable_threshold {
        options.answerable_threshold = threshold;
    }
    // Stratified: half answerable, half not (as far as each side has questions).
    let (answerable, unanswerable): (Vec<_>, Vec<_>) =
        set.questions.iter().cloned().partition(|q| !q.impossible);
    let half = args.sample.map(|n| n.div_ceil(2));
    let mut questions = sample(answerable, half, args.seed);
    questions.extend(sample(unanswerable, args.sample.map(|n| n / 2), args.seed));
    let bar = progress(questions.len(), "questions", args.json);
    let results = parallel_map(&questions, args.concurrency.max(1), &bar, |q| {
        let asked = Instant::now();
        let answer = chat::answer(
            &retriever,
            generator.as_ref(),
            &bot,
            &q.question,
            &options,
            &mut |_| true,
        )?;
        let latency_ms = asked.elapsed().as_secs_f64() * 1000.0;
        let correct = !q.impossible
            && answer.answered
            && contains_gold(&answer.answer, &q.answers)
            && metrics::word_count(&answer.answer) <= 60;
        Ok(json!({
            "id": q.id,
            "question": q.question,
            "impossible": q.impossible,
            "gold": q.answers,
            "answer": answer.answer,
            "answered": answer.answered,
            "correct": correct,
            "top_score": answer.retrieved.first().map(|s| s.score),
            "answerable": answer.answerable,
            "unsupported": answer.unsupported,
            "invented": invented(&answer),
            "removed": answer.removed,
            "latency_ms": round1(latency_ms),
            "ttft_ms": round1(answer.timings.ttft_ms),
        }))
    })?;
    bar.finish_and_clear();
    write_details(args.details.as_deref(), &results)?;
    let count = |f: &dyn Fn(&Value) -> bool| results.iter().filter(|r| f(r)).count();
    // Time to the first text the reader sees, over the answers given (with the claim
    // check, the first sentence a passage supports).
    let ttfts: Vec<f64> = results
        .iter()
        .filter(|r| r["answered"] == true)
        .filter_map(|r| r["ttft_ms"].as_f64())
        .collect();
    let n_answerable = count(&|r| r["impossible"] == false);
    let n_unanswerable = results.len() - n_answerable;
    let correct = count(&|r| r["correct"] == true);
    let declined = count(&|r| r["impossible"] == true && r["answered"] == false);
    let wrongly_declined = count(&|r| r["impossible"] == false && r["answered"] == false);
    let latencies: Vec<f64> = results
        .iter()
        .filter_map(|r| r["latency_ms"].as_f64())
        .collect();
    let rate = |k: usize, n: usize| {
        if n == 0 {
            0.0
        } else {
            round4(k as f64 / n as f64)
        }
    };
    let interval = |k: usize, n: usize| {
        let (low, high) = wilson_interval(k, n);
        json!([round4(low), round4(high)])
    };
    let out = json!({
        "answerable": {
            "n": n_answerable,
            "accuracy": rate(correct, n_answerable),
            "ci95": interval(correct, n_answerable),
            "declined": rate(wrongly_declined, n_answerable),
        },
        "unanswerable": {
            "n": n_unanswerable,
            "declined": rate(declined, n_unanswerable),
            "ci95": interval(declined, n_unanswerable),
        },
        "invented": invented_summary(&results),
        "latency_ms": {"p50": round1(percentile(&latencies, 0.5)), "p95": round1(percentile(&latencies, 0.95))},
        "ttft_ms": if ttfts.is_empty() { Value::Null } else { json!({"p50": round1(percentile(&ttfts, 0.5)), "p95": round1(percentile(&ttfts, 0.95))}) },
        "seconds": round1(started.elapsed().as_secs_f64()),
        "model": config.model_path.file_name().map(|n| n.to_string_lossy().into_owned()),
    });
    print_result(args.json, &out, || {
        format!(
            "answerable: {}/{} correct ({:.1}%, 95% CI {}); unanswerable: {}/{} declined ({:.1}%, 95% CI {}); latency p50 {} ms, p95 {} ms",
            correct,
            n_answerable,
            100.0 * rate(correct, n_answerable),
            out["answerable"]["ci95"],
            declined,
            n_unanswerable,
            100.0 * rate(declined, n_unanswerable),
            out["unanswerable"]["ci95"],
            out["latency_ms"]["p50"],
            out["latency_ms"]["p95"]
        )
    });
    Ok(())
}

pub async fn conflicts(config: &Config, args: EvalConflictsArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let set = data::load_beir(&args.corpus)?;
    let answers = data::load_conflict_answers(&args.answers)?;
    let embedding = crate::app::load_embedding(config)?;
    let (store, bot) = scratch_bot(
        config,
        &args.corpus,
        "beir",
        set.documents(),
        embedding.clone(),
        args.json,
    )
    .await?;
    let retriever = crate::app::retriever(store, embedding);
    let generator = crate::app::load_generator(config, args.concurrency.max(1))?;
    let options = crate::chat::AskOptions::from_config(config);
    let mut questions: Vec<(String, String, data::ConflictAnswer)> = set
        .queries
        .iter()
        .filter_map(|(id, text)| Some((id.clone(), text.clone(), answers.get(id)?.clone())))
        .collect();
    questions.sort_by(|a, b| a.0.cmp(&b.0));
    let questions = sample(questions, args.sample, args.seed);
    let bar = progress(questions.len(), "questions", args.json);
    let results = parallel_map(
        &questions,
        args.concurrency.max(1),
        &bar,
        |(id, text, gold)| {
            let answer = chat::answer(
                &retriever,
                generator.as_ref(),
                &bot,
                text,
                &options,
                &mut |_| true,
            )?;
            let in_context = contains_gold(&answer.answer, std::slice::from_ref(&gold.in_context));
            let real_world = contains_gold(&answer.answer, std::slice::from_ref(&gold.real_world));
            Ok(json!({
                "id": id, "question": text, "answer": answer.answer, "answered": answer.answered,
                "answer_in_context": gold.in_context, "real_world_answer": gold.real_world,
                "follows_context": in_context, "follows_memory": real_world && !in_context,
                "unsupported": answer.unsupported, "invented": invented(&answer),
                "removed": answer.removed,
            }))
        },
    )?;
    bar.finish_and_clear();
    write_details(args.details.as_deref(), &results)?;
    let n = results.len();
    let count = |key: &str| results.iter().filter(|r| r[key] == true).count();
    let (context, memory, answered) = (
        count("follows_context"),
        count("follows_memory"),
        count("answered"),
    );
    let rate = |k: usize| {
        if n == 0 {
            0.0
        } else {
            round4(k as f64 / n as f64)
        }
    };
    let (low, high) = wilson_interval(context, n);
    let out = json!({
        "n": n,
        "answer_in_context": rate(context),
        "ci95": [round4(low), round4(high)],
        "real_world_answer": rate(memory),
        "answered": rate(answered),
        "invented": invented_summary(&results),
        "seconds": round1(started.elapsed().as_secs_f64()),
    });
    print_result(args.json, &out, || {
        format!(
            "{n} questions: the answer follows the passage in {context} ({:.1}%), the model's memory in {memory} ({:.1}%); {answered} answered",
            100.0 * rate(context),
            100.0 * rate(memory)
        )
    });
    Ok(())
}

/// An answer that states a specific (a number, a name, a command, a flag, a file) that
/// none of its cited passages contains: an invented fact behind a citation.
fn invented(answer: &chat::Answer) -> bool {
    answer.answered && !answer.unsupported.is_empty()
}

/// How many answered questions had invented specifics, out of those answered, and how
/// many answers had sentences removed by the claim check.
fn invented_summary(results: &[Value]) -> Value {
    let answered = results.iter().filter(|r| r["answered"] == true).count();
    let invented = results.iter().filter(|r| r["invented"] == true).count();
    let removed = results
        .iter()
        .filter(|r| r["removed"].as_array().is_some_and(|a| !a.is_empty()))
        .count();
    let (low, high) = wilson_interval(invented, answered);
    json!({
        "answers": invented,
        "answered": answered,
        "removed": removed,
        "rate": if answered == 0 { 0.0 } else { round4(invented as f64 / answered as f64) },
        "ci95": [round4(low), round4(high)],
    })
}

/// The questions to ask: the file's (stored as the bot's first, with `--save`), or the
/// bot's stored golden questions.
fn golden_cases(
    store: &dyn crate::ports::Storage,
    bot: &BotId,
    args: &EvalQuestionsArgs,
) -> anyhow::Result<Vec<NewQuestion>> {
    let Some(file) = &args.file else {
        let stored = store.get_bot(bot)?.settings.golden;
        anyhow::ensure!(
            !stored.is_empty(),
            "bot {bot} has no golden questions: give a file (and --save to keep them)"
        );
        return Ok(stored.iter().map(|q| q.case()).collect());
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("failed to read {}", file.display()))?;
    let golden: Vec<NewQuestion> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a list of {{\"question\", \"expected_answer_keywords\", \"source_url\"?}}",
            file.display()
        )
    })?;
    anyhow::ensure!(!golden.is_empty(), "{} has no questions", file.display());
    if args.save {
        let saved = crate::services::golden::replace(store, bot, golden.clone())?;
        if !args.json {
            println!("saved {} golden questions for bot {bot}", saved.len());
        }
    }
    Ok(golden)
}

/// Exits non-zero (through the error) when the share passed is under `--min-score`.
pub fn questions(config: &Config, args: EvalQuestionsArgs) -> anyhow::Result<bool> {
    let bot = BotId::parse(&args.bot).map_err(anyhow::Error::msg)?;
    let store = crate::app::open_store(config)?;
    let golden = golden_cases(store.as_ref(), &bot, &args)?;
    let settings = store.get_bot(&bot)?.settings;
    let retriever = crate::app::retriever(store, crate::app::load_embedders(config)?);
    let generator = crate::app::load_generator(config, 1)?;
    let options = crate::chat::AskOptions::from_config(config).for_bot(&settings);
    let mut results = Vec::new();
    for (i, case) in golden.iter().enumerate() {
        let answer = chat::answer(
            &retriever,
            generator.as_ref(),
            &bot,
            &case.question,
            &options,
            &mut |_| true,
        )?;
        let (passed, why) = crate::golden::judge(case, &answer);
        if !args.json {
            println!(
                "{} {:>3}. {}\n      {}: {}",
                if passed { "PASS" } else { "FAIL" },
                i + 1,
                case.question,
                why,
                answer.answer.replace('\n', " ")
            );
            if invented(&answer) {
                println!(
                    "      not in its sources: {}",
                    answer.unsupported.join(", ")
                );
            }
            for sentence in &answer.removed {
                println!("      removed: {}", sentence.replace('\n', " "));
            }
        }
        results.push(json!({
            "question": case.question, "passed": passed, "reason": why,
            "answer": answer.answer, "answered": answer.answered,
            "sources": answer.sources.iter().map(|s| &s.url).collect::<Vec<_>>(),
            "unsupported": answer.unsupported, "invented": invented(&answer),
            "removed": answer.removed,
        }));
    }
    let passed = results.iter().filter(|r| r["passed"] == true).count();
    let score = passed as f64 / results.len() as f64;
    let ok = args.min_score.is_none_or(|min| score >= min);
    if args.json {
        println!(
            "{}",
            json!({"passed": passed, "total": results.len(), "score": round4(score),
                "invented": invented_summary(&results), "results": results})
        );
    } else {
        let summary = invented_summary(&results);
        println!(
            "\n{passed}/{} passed (score {:.3}); {} of {} answers stated specifics their sources do not; {} had sentences removed",
            results.len(),
            score,
            summary["answers"],
            summary["answered"],
            summary["removed"]
        );
    }
    Ok(ok)
}

/// The scratch database folder for a data set and embedder (under `DATA_DIR/eval/`):
/// switching embedders gets a store of its own rather than a bot it may not search.
fn scratch_dir(
    config: &Config,
    source: &Path,
    kind: &str,
    id: &crate::domain::EmbedderId,
) -> anyhow::Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let canonical = source
        .canonicalize()
        .with_context(|| format!("cannot find {}", source.display()))?;
    let keyed = format!("{}\n{}\n{}", canonical.to_string_lossy(), id.model, id.dim);
    let digest = hex::encode(&Sha256::digest(keyed.as_bytes())[..6]);
    Ok(config
        .data_dir
        .join("eval")
        .join(format!("{kind}-{digest}")))
}

/// Opens the scratch database for a data set (under `DATA_DIR/eval/`) and ingests its
/// documents as bot `eval` through the normal pipeline; unchanged documents from an
/// earlier run are not embedded again.
async fn scratch_bot(
    config: &Config,
    source: &Path,
    kind: &str,
    documents: Vec<Document>,
    embedding: Embedding,
    quiet: bool,
) -> anyhow::Result<(Arc<dyn Storage>, BotId)> {
    let canonical = source
        .canonicalize()
        .with_context(|| format!("cannot find {}", source.display()))?;
    let embedder = embedding.embedder.clone();
    let id = tokio::task::spawn_blocking(move || embedder.id())
        .await
        .context("embedder task failed")??;
    let dir = scratch_dir(config, source, kind, &id)?;
    let store = crate::store::open(&dir)?;
    let bot = BotId::parse("eval").map_err(anyhow::Error::msg)?;
    let bar = if quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("indexing {elapsed:>4} [{bar:30}] {pos}/{len} {wide_msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar
    };
    let request = IngestRequest {
        bot: bot.clone(),
        name: Some(format!("eval: {}", source.display())),
        source: Source::Documents {
            name: canonical.display().to_string(),
            documents: Arc::new(documents),
        },
        crawl: CrawlOptions {
            max_pages: usize::MAX,
            ..CrawlOptions::default()
        },
        chunk: ChunkSpec::default(),
        test: false,
    };
    let summary = ingest::run(store.clone(), embedding, request, &bar).await?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "indexed {} documents into {} ({} embedded now, {} unchanged)",
            summary.pages_indexed + summary.pages_unchanged,
            dir.display(),
            summary.pages_indexed,
            summary.pages_unchanged
        );
    }
    Ok((store, bot))
}

/// `n` items chosen by a seeded shuffle (all of them, in order, without `n`).
pub(crate) fn sample<T>(mut items: Vec<T>, n: Option<usize>, seed: u64) -> Vec<T> {
    let Some(n) = n else {
        return items;
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    rng.shuffle(&mut items);
    items.truncate(n);
    items
}

/// Runs `f` over `items` on `threads` threads, in order of the items.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    bar: &ProgressBar,
    f: impl Fn(&T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<anyhow::Result<R>>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() {
                        return;
                    }
                    let result = f(&items[i]);
                    let failed = result.is_err();
                    *results[i].lock().expect("result lock") = Some(result);
                    bar.inc(1);
                    if failed {
                        // Stop handing out work; the first error is reported.
                        next.store(items.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .filter_map(|slot| slot.into_inner().expect("result lock"))
        .collect()
}

fn progress(n: usize, what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{elapsed:>4}} [{{bar:30}}] {{pos}}/{{len}} eta {{eta}}"
        ))
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

fn write_details(path: Option<&Path>, results: &[Value]) -> anyhow::Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let lines: String = results.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, lines).with_context(|| format!("failed to write {}", path.display()))
}

fn print_result(json: bool, value: &Value, text: impl FnOnce() -> String) {
    if json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
