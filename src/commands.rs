//! What each CLI command does: open what it needs, call the domain, print the result.

mod users;
pub use users::users;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::analytics::analytics_range;
use crate::app::load_generator;
use crate::chat;
use crate::cli::{AskArgs, BotsCommand, IngestArgs, KeysCommand};
use crate::config::Config;
use crate::domain::BotId;
use crate::ingest::{self, IngestRequest, Source, chunk::ChunkSpec, crawl::CrawlOptions};
use crate::telemetry::parse_duration;

pub async fn ingest(config: &Config, args: IngestArgs) -> anyhow::Result<()> {
    let bot = BotId::parse(&args.bot).map_err(anyhow::Error::msg)?;
    let source = Source::parse(&args.source, args.base_url.as_deref())?;
    let store = crate::app::open_store(config)?;
    let embedding = embedding_for(config, &store, &bot, None).await?;
    let progress = progress_bar(args.json);
    let target = bot.clone();
    let request = IngestRequest {
        bot,
        name: args.name,
        source,
        crawl: CrawlOptions {
            scope: args.scope.into(),
            max_pages: args.max_pages.max(1),
            max_depth: args.max_depth,
            concurrency: args.concurrency.max(1),
            delay: Duration::from_millis(args.delay_ms),
            timeout: Duration::from_secs(args.timeout_secs.max(1)),
            max_page_bytes: args.max_page_mb.max(1) * 1024 * 1024,
            ..CrawlOptions::default()
        },
        chunk: ChunkSpec::default(),
        test: args.test,
    };
    let result = ingest::run(store.clone(), embedding, request, &progress).await;
    progress.finish_and_clear();
    let result = result?;
    record_embedder(config, &store, &target)?;
    print_summary(args.json, &result, |s| {
        let mut out = format!(
            "bot {}: {} pages indexed, {} unchanged, {} skipped, {} removed; {} chunks embedded in {:.1}s",
            s.bot,
            s.pages_indexed,
            s.pages_unchanged,
            s.pages_skipped,
            s.pages_removed,
            s.chunks,
            s.seconds
        );
        for skipped in &s.skipped {
            out.push_str(&format!("\n  skipped {}: {}", skipped.url, skipped.reason));
        }
        out
    })
}

/// What `docent ingest` extends a bot with (`reindex`: re-embeds it with): the embedder
/// `--embedder` names, else the one that serves the bot (`reindex`: the one it wants).
async fn embedding_for(
    config: &Config,
    store: &Arc<dyn crate::ports::Storage>,
    bot: &BotId,
    reindexing: Option<crate::domain::Bot>,
) -> anyhow::Result<crate::embed::Embedding> {
    let embedders = crate::app::load_embedders(config)?;
    let (store, bot, named) = (store.clone(), bot.clone(), config.embedder_flag);
    tokio::task::spawn_blocking(move || match (named, reindexing) {
        (Some(choice), _) => embedders.get(choice),
        (None, Some(record)) => embedders.for_reindex(&record),
        (None, None) => match store.get_bot(&bot) {
            Ok(record) => embedders.for_bot(Some(&record)),
            Err(crate::ports::Error::BotNotFound(_)) => embedders.for_bot(None),
            Err(e) => Err(e.into()),
        },
    })
    .await
    .context("embedder task failed")?
}

/// Records `--embedder`, when given, as the bot's own choice once its vectors are made.
fn record_embedder(
    config: &Config,
    store: &Arc<dyn crate::ports::Storage>,
    bot: &BotId,
) -> anyhow::Result<()> {
    if let Some(choice) = config.embedder_flag {
        store.update_bot(bot, &mut |b| b.settings.embedder = Some(choice))?;
    }
    Ok(())
}

/// `docent reindex`: the bot's stored chunks re-embedded with the embedder it wants
/// (`--embedder` switches it).
pub async fn reindex(config: &Config, args: crate::cli::ReindexArgs) -> anyhow::Result<()> {
    let bot = BotId::parse(&args.bot).map_err(anyhow::Error::msg)?;
    let store = crate::app::open_store(config)?;
    let record = store.get_bot(&bot)?;
    let embedding = embedding_for(config, &store, &bot, Some(record)).await?;
    let progress = progress_bar(args.json);
    let result = ingest::reindex(store.clone(), embedding, &bot, &progress).await;
    progress.finish_and_clear();
    let result = result?;
    record_embedder(config, &store, &bot)?;
    print_summary(args.json, &result, |s| {
        format!(
            "bot {}: {} chunks of {} pages re-embedded with {} (were {}) in {:.1}s",
            s.bot,
            s.chunks,
            s.pages,
            s.to,
            s.from.as_deref().unwrap_or("all-MiniLM-L6-v2"),
            s.seconds
        )
    })
}

/// What a command did: one JSON object with `--json`, else one line for a person.
fn print_summary<T: serde::Serialize>(
    json: bool,
    summary: &T,
    line: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
    } else {
        println!("{}", line(summary));
    }
    Ok(())
}

/// The CLI's ingest progress: a spinner with a bar on a terminal, nothing otherwise.
fn progress_bar(hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} {wide_msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// indicatif's bar as the ingest pipeline's progress port.
impl ingest::Progress for ProgressBar {
    fn set_message(&self, message: &str) {
        ProgressBar::set_message(self, message.to_string());
    }

    fn inc(&self, n: u64) {
        ProgressBar::inc(self, n);
    }

    fn set_total(&self, total: u64) {
        ProgressBar::set_length(self, total);
    }
}

pub fn ask(config: &Config, args: AskArgs) -> anyhow::Result<()> {
    let bot = BotId::parse(&args.bot).map_err(anyhow::Error::msg)?;
    let store = crate::app::open_store(config)?;
    store.get_bot(&bot)?;
    let retriever = crate::app::retriever(store, crate::app::load_embedders(config)?);
    let generator = load_generator(config, 1)?;
    // Flags win over the bot's own settings, which win over the config.
    let settings = retriever.store().get_bot(&bot)?.settings;
    let mut options = crate::chat::AskOptions::from_config(config).for_bot(&settings);
    if let Some(top_k) = args.top_k {
        options.top_k = top_k.max(1);
    }
    if let Some(min_score) = args.min_score {
        options.min_score = min_score;
    }
    if let Some(max_tokens) = args.max_tokens {
        options.generation.max_tokens = max_tokens.max(1);
    }
    if let Some(temperature) = args.temperature {
        options.generation.temperature = temperature;
    }
    if let Some(threshold) = args.answerable_threshold {
        options.answerable_threshold = threshold;
    }
    let mut stdout = std::io::stdout().lock();
    let stream = !args.json;
    let answer = chat::answer(
        &retriever,
        generator.as_ref(),
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
        if let Some(p) = answer.answerable {
            out["answerable"] = json!(p);
        }
        if !answer.removed.is_empty() {
            out["removed"] = json!(answer.removed);
        }
        if !answer.unsupported.is_empty() {
            out["unsupported"] = json!(answer.unsupported);
        }
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
    let store = crate::app::open_store(config)?;
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

pub fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    use crate::server::views::{CreatedKey, KeyView};
    let store = crate::app::open_store(config)?;
    let print = |json: bool, value: serde_json::Value, text: String| {
        if json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    };
    match command {
        KeysCommand::Create {
            admin,
            bots,
            public,
            origins,
            test,
            name,
            json,
        } => {
            let (key, record) =
                crate::server::api::make_key(admin, &bots, public, &origins, test, name)
                    .map_err(anyhow::Error::msg)?;
            store.put_key(&record)?;
            let value = serde_json::to_value(CreatedKey {
                key: key.clone(),
                record: KeyView::from(&record),
                replaces: None,
            })?;
            print(
                json,
                value,
                format!(
                    "{key}\n(key id {}; shown once, stored only as a hash)",
                    record.id
                ),
            );
        }
        KeysCommand::List { json } => {
            let keys = store.list_keys()?;
            if json {
                let data: Vec<_> = keys.iter().map(KeyView::from).collect();
                println!("{}", json!({"data": data}));
            } else if keys.is_empty() {
                println!("no keys yet: `docent keys create --admin` makes one");
            } else {
                let now = crate::telemetry::unix_now();
                for key in keys {
                    let scope = match &key.scope {
                        crate::keys::KeyScope::Admin => "admin".to_string(),
                        crate::keys::KeyScope::Bots(b) => {
                            b.iter().map(|b| b.as_str()).collect::<Vec<_>>().join(",")
                        }
                    };
                    let status = if key.revoked.is_some() {
                        "revoked"
                    } else if !key.is_active(now) {
                        "expired"
                    } else if key.expires.is_some() {
                        "expiring"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<14} {:<22} {:<9} {:<20} {}",
                        key.id,
                        key.display_prefix(),
                        status,
                        scope,
                        key.name.unwrap_or_default()
                    );
                }
            }
        }
        KeysCommand::Revoke { id, json } => {
            let mut record = store.get_key(&id)?;
            if record.revoked.is_none() {
                record.revoked = Some(crate::telemetry::unix_now());
                store.put_key(&record)?;
            }
            print(
                json,
                serde_json::to_value(KeyView::from(&record))?,
                format!("revoked {id}"),
            );
        }
        KeysCommand::Rotate { id, overlap, json } => {
            let overlap = parse_duration(&overlap)?;
            let old = store.get_key(&id)?;
            let (key, old, new) =
                crate::keys::rotate(old, overlap.as_secs(), crate::telemetry::unix_now())
                    .map_err(anyhow::Error::msg)?;
            store.put_keys(&[&old, &new])?;
            let value = serde_json::to_value(CreatedKey {
                key: key.clone(),
                record: KeyView::from(&new),
                replaces: Some(KeyView::from(&old)),
            })?;
            print(
                json,
                value,
                format!(
                    "{key}\n(key id {}; {id} stays valid for {}s more)",
                    new.id,
                    old.expires
                        .unwrap_or_default()
                        .saturating_sub(crate::telemetry::unix_now())
                ),
            );
        }
        KeysCommand::RotateSessionSecret { overlap, json } => {
            rotate_session_secret(store.as_ref(), overlap.as_deref(), json)?;
        }
    }
    Ok(())
}

/// `docent keys rotate-session-secret`: a fresh widget session secret, the old one
/// verifying for `overlap` more.
fn rotate_session_secret(
    store: &dyn crate::ports::KeyStore,
    overlap: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let overlap = match overlap {
        Some(overlap) => parse_duration(overlap)?,
        // The session lifetime `serve` is given, within the bound.
        None => {
            let ttl = std::env::var("DOCENT_WIDGET_SESSION_TTL").unwrap_or("1h".into());
            let max = Duration::from_secs(crate::server::widget::MAX_SECRET_OVERLAP_SECS);
            parse_duration(&ttl)
                .context("DOCENT_WIDGET_SESSION_TTL")?
                .min(max)
        }
    };
    let now = crate::telemetry::unix_now();
    let (_, rotation) = crate::server::widget::rotate_secret(store, overlap.as_secs(), now)?;
    if json {
        println!("{}", serde_json::to_value(&rotation)?);
    } else if let Some(until) = rotation.previous_valid_until {
        println!(
            "rotated the widget session secret; sessions made before verify for {}s more",
            until.saturating_sub(now)
        );
    } else {
        println!("made the widget session secret (there was none)");
    }
    Ok(())
}

/// `docent serve`: bind, make the first admin key if there is none, load the models in the
/// background, serve until SIGINT/SIGTERM.
pub fn serve(config: &Config, args: crate::cli::ServeArgs) -> anyhow::Result<()> {
    use crate::server::{self, Engine, Limits};
    let store = crate::app::open_store(config)?;
    // With PostgreSQL the folder still holds this node's files (the first admin key).
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
    let marker = config.data_dir.join(server::SERVE_MARKER);
    std::fs::write(&marker, format!("{}\n", std::process::id()))
        .with_context(|| format!("failed to write {}", marker.display()))?;
    let _remove_marker = RemoveOnDrop(marker);
    if let Some(path) = server::bootstrap_admin_key(store.as_ref(), &config.data_dir)? {
        eprintln!(
            "created the first admin key; it is in {} (readable only by this user)",
            path.display()
        );
    }
    let parallel = config.parallel;
    let slots = crate::app::generation_slots(config);
    let listener = std::net::TcpListener::bind(&args.bind)
        .with_context(|| format!("failed to listen on {}", args.bind))?;
    let address = listener.local_addr()?;
    let metrics_listener = args
        .metrics_bind
        .as_deref()
        .map(|bind| {
            std::net::TcpListener::bind(bind)
                .with_context(|| format!("failed to listen for metrics on {bind}"))
        })
        .transpose()?;
    let options = crate::chat::AskOptions::from_config(config);
    let limits = Limits {
        max_body_bytes: args.max_body_bytes.max(1024),
        max_message_chars: args.max_message_chars.max(1),
        max_queue: args.max_queue.max(1),
        parallel: slots,
        max_wait: Duration::from_secs(args.max_wait),
        per_key_per_minute: args.rate_limit_key,
        per_ip_per_minute: args.rate_limit_ip,
        trusted_proxies: args.trusted_proxies.clone(),
        public_url: args.public_url.clone(),
        ipv6_prefix: args.ipv6_prefix,
        answer_cache_ttl: Duration::from_secs(args.answer_cache_ttl),
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        allow_private_targets: args.allow_private_targets || config.allow_private_targets,
        crawl_proxy: args
            .crawl_proxy
            .clone()
            .map(crate::domain::Secret)
            .or_else(|| config.crawl_proxy.clone()),
        widget_session_ttl: parse_duration(&args.widget_session_ttl)
            .context("--widget-session-ttl")?,
        visitor_messages_per_hour: args.visitor_messages_per_hour,
        bot_public_messages_per_hour: args.bot_public_messages_per_hour,
        bot_budget_share_percent: args.bot_budget_share,
        max_feeds_per_visitor: args.max_feeds_per_visitor.max(1),
        max_feeds_per_address: args.max_feeds_per_address.max(1),
        metrics_token: args
            .metrics_token
            .clone()
            .filter(|t| !t.is_empty())
            .map(crate::domain::Secret),
        schedule_every: crate::services::jobs::LOOK_EVERY,
    };
    if let Some(proxy) = &limits.crawl_proxy {
        reqwest::Proxy::all(proxy.0.as_str()).map_err(|_| {
            anyhow::anyhow!(
                "invalid --crawl-proxy {:?}",
                crate::ingest::fetch::redact_userinfo(&proxy.0)
            )
        })?;
    }
    let deliveries = crate::events::DeliveryConfig {
        timeout: Duration::from_secs(args.webhook_timeout.max(1)),
        horizon: parse_duration(&args.webhook_retry_horizon).context("--webhook-retry-horizon")?,
        allow_private_targets: limits.allow_private_targets,
        base_delay: Duration::from_millis(args.webhook_retry_base_ms.max(1)),
        retention: parse_duration(&args.event_retention).context("--event-retention")?,
        ..Default::default()
    };
    let state = server::Launch {
        store: store.clone(),
        options,
        limits,
        engine: None,
        deliveries: Some(deliveries),
    }
    .start()?;
    let config = config.clone();
    actix_web::rt::System::new().block_on(async move {
        let server = server::server(state.clone(), listener, args.workers)?;
        eprintln!("docent listening on http://{address} (loading models…)");
        let mut servers = vec![server.handle()];
        if let Some(metrics) = metrics_listener {
            let at = metrics.local_addr()?;
            let metrics = server::metrics_server(state.clone(), metrics)?;
            servers.push(metrics.handle());
            actix_web::rt::spawn(metrics);
            eprintln!("metrics on http://{at}/metrics");
        }
        actix_web::rt::spawn(server::stop_on_signals(state.clone(), servers));
        let handle = server.handle();
        let failure = Arc::new(std::sync::Mutex::new(None::<anyhow::Error>));
        let failed = failure.clone();
        actix_web::rt::task::spawn_blocking(move || {
            let loaded = (|| -> anyhow::Result<Engine> {
                let embedders = crate::app::load_embedders(&config)?;
                let generator = load_generator(&config, parallel)?;
                Ok(Engine::new(store, embedders, generator))
            })();
            match loaded {
                Ok(engine) => {
                    if let Err(why) = engine.generator.health() {
                        eprintln!("generation engine not reachable yet: {why}");
                    }
                    let _ = state.engine.set(engine);
                    eprintln!("docent ready on http://{address}");
                }
                Err(e) => {
                    *failed.lock().expect("failure lock") = Some(e);
                    futures::executor::block_on(handle.stop(false));
                }
            }
        });
        server.await.context("server failed")?;
        match failure.lock().expect("failure lock").take() {
            Some(e) => Err(e.context("failed to load the models")),
            None => Ok(()),
        }
    })
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `docent migrate`: applies a PostgreSQL store's pending migrations and says which.
pub fn migrate(config: &Config) -> anyhow::Result<()> {
    let Some(url) = &config.store else {
        anyhow::bail!(
            "--store: only a PostgreSQL store (postgres://…) has migrations; redb makes its \
             tables when it opens"
        );
    };
    let password = config.store_password.as_ref().map(|p| p.0.as_str());
    let store = crate::pg::PgStore::connect(&url.0, password)?;
    let applied = store.migrate()?;
    if applied.is_empty() {
        println!("{}: the schema is up to date", store.target());
    } else {
        println!("{}: applied {}", store.target(), applied.join(", "));
    }
    Ok(())
}

/// `docent migrate-store`: the redb data dir's whole content into an empty PostgreSQL
/// store (checked table by table inside the copy's transaction), then each table's rows
/// as copied and as the store holds them now.
pub fn migrate_store(config: &Config, args: crate::cli::MigrateStoreArgs) -> anyhow::Result<()> {
    use crate::ports::Import;
    if !crate::config::is_postgres_url(&args.to) {
        anyhow::bail!("--to: a PostgreSQL URL, postgres://user@host:port/db");
    }
    let from = args.from.unwrap_or_else(|| config.data_dir.clone());
    if !from.join(crate::store::DB_FILE).is_file() {
        anyhow::bail!(
            "--from {}: no docent database there ({} missing)",
            from.display(),
            crate::store::DB_FILE
        );
    }
    let source = crate::store::Store::open(&from)?;
    let password = config.store_password.as_ref().map(|p| p.0.as_str());
    let target = crate::pg::PgStore::open(&args.to, password)?;
    let started = std::time::Instant::now();
    let copied = target.import(&source)?;
    let held = target.count_rows()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<14} {:>10} {:>10}", "table", "copied", "in store")?;
    for (table, n) in &held {
        let sent = copied.get(table).copied().unwrap_or(0);
        writeln!(out, "{table:<14} {sent:>10} {n:>10}")?;
    }
    writeln!(
        out,
        "copied {} rows from {} to {} in {:.1} s; serve from it with --store",
        copied.values().sum::<u64>(),
        from.display(),
        target.target(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

pub fn analytics(config: &Config, args: crate::cli::AnalyticsArgs) -> anyhow::Result<()> {
    let bot = BotId::parse(&args.bot).map_err(anyhow::Error::msg)?;
    let (from, to) =
        analytics_range(args.from.as_deref(), args.to.as_deref()).map_err(anyhow::Error::msg)?;
    let store = crate::app::open_store(config)?;
    store.get_bot(&bot)?;
    // MiniLM whatever the bot's embedder: the grouping threshold was measured on it.
    let embedder = crate::app::load_embedders(config)?
        .get(crate::domain::EmbedderChoice::MiniLm)?
        .embedder;
    let report = crate::analytics::report(store.as_ref(), Some(embedder.as_ref()), &bot, from, to)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let rate = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{:.0}%", r * 100.0));
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    println!("{} from {} to {}\n", report.bot_id, report.from, report.to);
    println!(
        "{:<10} {:>6} {:>6} {:>9} {:>11} {:>8} {:>5} {:>9} {:>9}",
        "day",
        "convs",
        "msgs",
        "answered",
        "unanswered",
        "handoff",
        "leads",
        "ttft p50",
        "total p95"
    );
    for day in report.days.iter().chain(std::iter::once(&report.totals)) {
        if day.date.is_some() && day.messages == 0 && day.leads == 0 {
            continue;
        }
        println!(
            "{:<10} {:>6} {:>6} {:>9} {:>11} {:>8} {:>5} {:>9} {:>9}",
            day.date.as_deref().unwrap_or("total"),
            day.conversations,
            day.messages,
            rate(day.answered_rate),
            rate(day.unanswered_rate),
            rate(day.handoff_rate),
            day.leads,
            ms(day.ttft_ms.p50),
            ms(day.latency_ms.p95),
        );
    }
    if !report.intents.is_empty() {
        println!("\nintents:");
        for (intent, n) in &report.intents {
            println!("  {intent}: {n}");
        }
    }
    if report.totals.feedback_up + report.totals.feedback_down > 0 {
        println!(
            "\nfeedback: {} up, {} down",
            report.totals.feedback_up, report.totals.feedback_down
        );
    }
    print_gaps(
        "unanswered questions, grouped (the content to add next)",
        &report.unanswered_questions,
    );
    print_gaps(
        "questions whose answers were rated down, grouped",
        &report.rated_down_questions,
    );
    Ok(())
}

fn print_gaps(title: &str, gaps: &[crate::analytics::Gap]) {
    if gaps.is_empty() {
        return;
    }
    println!("\n{title}:");
    for gap in gaps {
        println!("  {:>4} x {}", gap.count, gap.question);
        for example in gap.examples.iter().filter(|e| **e != gap.question) {
            println!("         also: {example}");
        }
    }
}
