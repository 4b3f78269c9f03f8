//! What each CLI command does: open what it needs, call the domain, print the result.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::chat::{self, AskOptions};
use crate::cli::{AskArgs, BotsCommand, IngestArgs};
use crate::config::Config;
use crate::domain::BotId;
use crate::embed::{Embedder, MiniLm};
use crate::ingest::{self, IngestRequest, Source, chunk::ChunkSpec, crawl::CrawlOptions};
use crate::llm::{GenParams, LlamaConfig, LlamaGenerator};
use crate::retrieval::Retriever;
use crate::store::Store;

pub fn load_embedder(config: &Config) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(Arc::new(
        MiniLm::load(&config.embedder_dir())?.with_threads(config.threads),
    ))
}

pub fn load_generator(config: &Config) -> anyhow::Result<LlamaGenerator> {
    LlamaGenerator::start(LlamaConfig {
        model_path: config.model_path.clone(),
        threads: config.threads,
        context_size: config.context_size,
    })
}

pub async fn ingest(config: &Config, args: IngestArgs) -> anyhow::Result<()> {
    let bot = BotId::parse(&args.bot).map_err(anyhow::Error::msg)?;
    let source = Source::parse(&args.source, args.base_url.as_deref())?;
    let store = Store::open(&config.data_dir)?;
    let embedder = load_embedder(config)?;
    let progress = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} {wide_msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    };
    let request = IngestRequest {
        bot,
        name: args.name,
        source,
        crawl: CrawlOptions {
            scope: args.scope,
            max_pages: args.max_pages.max(1),
            max_depth: args.max_depth,
            concurrency: args.concurrency.max(1),
            delay: Duration::from_millis(args.delay_ms),
            timeout: Duration::from_secs(args.timeout_secs.max(1)),
            max_page_bytes: args.max_page_mb.max(1) * 1024 * 1024,
            ..CrawlOptions::default()
        },
        chunk: ChunkSpec::default(),
    };
    let result = ingest::run(&store, embedder, request, &progress).await;
    progress.finish_and_clear();
    let summary = result?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "bot {}: {} pages indexed, {} unchanged, {} skipped, {} removed; {} chunks embedded in {:.1}s",
            summary.bot,
            summary.pages_indexed,
            summary.pages_unchanged,
            summary.pages_skipped,
            summary.pages_removed,
            summary.chunks,
            summary.seconds
        );
    }
    Ok(())
}

pub fn ask(config: &Config, args: AskArgs) -> anyhow::Result<()> {
    let bot = BotId::parse(&args.bot).map_err(anyhow::Error::msg)?;
    let store = Store::open(&config.data_dir)?;
    store.get_bot(&bot)?;
    let retriever = Retriever::new(store, load_embedder(config)?);
    let generator = load_generator(config)?;
    let options = AskOptions {
        top_k: args.top_k.unwrap_or(config.top_k).max(1),
        min_score: args.min_score.unwrap_or(config.min_score),
        generation: GenParams {
            max_tokens: args.max_tokens.unwrap_or(config.max_tokens).max(1),
            temperature: args.temperature.unwrap_or(config.temperature),
            ..GenParams::default()
        },
    };
    let mut stdout = std::io::stdout().lock();
    let stream = !args.json;
    let answer = chat::answer(
        &retriever,
        &generator,
        &bot,
        &args.question,
        &options,
        &mut |piece| {
            if stream {
                // A closed stdout (e.g. `| head`) stops generation instead of failing later.
                return write!(stdout, "{piece}")
                    .and_then(|_| stdout.flush())
                    .is_ok();
            }
            true
        },
    )?;
    if args.json {
        let sources: Vec<_> = answer
            .sources
            .iter()
            .map(|s| json!({"index": s.index, "title": s.title, "url": s.url, "score": s.score}))
            .collect();
        let mut out = json!({
            "answer": answer.answer,
            "answered": answer.answered,
            "sources": sources,
            "timings": answer.timings,
        });
        if args.explain {
            out["retrieved"] = serde_json::to_value(&answer.retrieved)?;
        }
        writeln!(stdout, "{out}")?;
    } else {
        writeln!(stdout)?;
        if !answer.answered && answer.answer != chat::NOT_IN_SOURCES {
            writeln!(
                stdout,
                "\n(docent could not match this answer to its sources: treat it with care)"
            )?;
        }
        if !answer.sources.is_empty() {
            writeln!(stdout, "\nSources:")?;
            // Several cited passages may come from one page: list each page once.
            let mut pages: Vec<(String, &str, &str)> = Vec::new();
            for source in &answer.sources {
                match pages.iter_mut().find(|(_, _, url)| *url == source.url) {
                    Some((marks, _, _)) => marks.push_str(&format!("[{}]", source.index)),
                    None => pages.push((format!("[{}]", source.index), &source.title, &source.url)),
                }
            }
            for (marks, title, url) in pages {
                writeln!(stdout, "{marks} {title} — {url}")?;
            }
        }
    }
    Ok(())
}

pub fn bots(config: &Config, command: BotsCommand) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir)?;
    match command {
        BotsCommand::List { json } => {
            let bots = store.list_bots()?;
            if json {
                println!("{}", serde_json::to_string(&bots)?);
            } else if bots.is_empty() {
                println!("no bots yet: create one with `docent ingest URL --bot ID`");
            } else {
                for bot in bots {
                    println!(
                        "{:<20} {:>6} pages {:>7} chunks  {}",
                        bot.id, bot.pages, bot.chunks, bot.source
                    );
                }
            }
        }
        BotsCommand::Show { id, json } => {
            let id = BotId::parse(&id).map_err(anyhow::Error::msg)?;
            let bot = store.get_bot(&id)?;
            let pages = store.pages(&id)?;
            if json {
                let pages: Vec<_> = pages
                    .iter()
                    .map(|p| json!({"url": p.url, "title": p.title, "chunks": p.chunk_ids.len()}))
                    .collect();
                println!("{}", json!({"bot": bot, "pages": pages}));
            } else {
                println!(
                    "{} ({}): {} pages, {} chunks, from {}",
                    bot.id, bot.name, bot.pages, bot.chunks, bot.source
                );
                for page in pages {
                    println!(
                        "  {:>4} chunks  {}  {}",
                        page.chunk_ids.len(),
                        page.url,
                        page.title
                    );
                }
            }
        }
        BotsCommand::Delete { id, json } => {
            let id = BotId::parse(&id).map_err(anyhow::Error::msg)?;
            store.delete_bot(&id).context("delete failed")?;
            if json {
                println!("{}", json!({"deleted": id}));
            } else {
                println!("deleted bot {id}");
            }
        }
    }
    Ok(())
}
