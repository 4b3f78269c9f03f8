//! Configuration: defaults < TOML file < environment < flags, resolved once into `Config`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::domain::EmbedderChoice;

pub const EXAMPLE: &str = include_str!("../config.example.toml");

pub use crate::domain::Secret;

/// The `answerable_threshold` for the default model (Qwen2.5-Coder 1.5B). The check's
/// probability is the model's own and only means something calibrated against that model:
/// the 0.5B model says "yes" to answerable fixture questions with 0.37 to 0.45, the 1.5B
/// with 0.72 to 0.93. Tuned on a development sample of disflqa (seed 11, 100 questions): the
/// 1.5B model's probability separates answerable from unanswerable questions with an AUC of
/// 0.76, and 0.55 is the knee where declines of unanswerable questions rise (20% -> 40%)
/// while accuracy on answerable ones barely moves (54% -> 52%); above it accuracy falls
/// fast (0.6: 44%, 0.7: 32%). Other models run without the check unless configured, and so
/// do remote engines (`--llm-url`): docent cannot know which model they serve.
pub const DEFAULT_MODEL_ANSWERABLE_THRESHOLD: f32 = 0.55;

/// Most connections to PostgreSQL one process's pool holds, unless `--store-pool` says.
pub const DEFAULT_STORE_POOL: u32 = 16;

/// The resolved configuration: no optional fields left.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// A PostgreSQL store's URL (`--store`), else state is in the redb database in
    /// `data_dir`.
    pub store: Option<Secret>,
    /// The PostgreSQL password given apart from the URL.
    pub store_password: Option<Secret>,
    /// Most connections to PostgreSQL this process's pool holds.
    pub store_pool: u32,
    pub models_dir: PathBuf,
    pub model_path: PathBuf,
    pub threads: usize,
    /// Tokens one conversation turn may use, prompt plus reply (per sequence).
    pub context_size: u32,
    /// Sequences `serve` decodes together in one batch.
    pub parallel: usize,
    pub top_k: usize,
    pub min_score: f32,
    /// Probability of "the sources answer this" below which docent declines unasked.
    pub answerable_threshold: f32,
    /// Whether answers pass the claim check (`chat::gate`) [default: true].
    pub claim_check: bool,
    /// Whether the model verifies each sentence of an answer before it is shown
    /// (`verify_claims`) [default: false].
    pub verify_claims: bool,
    pub max_tokens: usize,
    pub temperature: f32,
    /// API crawls may reach private addresses (`allow_private_targets` in the file).
    pub allow_private_targets: bool,
    /// The proxy API crawls go through (`crawl_proxy` in the file; none by default).
    pub crawl_proxy: Option<Secret>,
    /// Generation on remote OpenAI-compatible engines instead of in-process (`--llm-url`).
    pub llm: Option<RemoteLlm>,
    /// Embeddings on remote OpenAI-compatible engines instead of in-process (`--embed-url`).
    pub embed: Option<RemoteEmbed>,
    /// The in-process embedder bots get when they name none (`--embedder`,
    /// DOCENT_EMBEDDER or the file's `embedder`; MiniLM when none says).
    pub embedder: EmbedderChoice,
    /// `--embedder` as given on the command line: what `ingest` and `reindex` record as
    /// the bot's own choice.
    pub embedder_flag: Option<EmbedderChoice>,
}

/// Where remote embedding runs and how docent talks to it (`[embed]` in the file).
#[derive(Debug, Clone)]
pub struct RemoteEmbed {
    pub urls: Vec<url::Url>,
    pub model: Option<String>,
    /// From `DOCENT_EMBED_API_KEY`, or the file `DOCENT_EMBED_API_KEY_FILE` / `api_key_file`
    /// names.
    pub api_key: Option<Secret>,
    pub timeout: Duration,
    /// Inputs per request.
    pub batch: usize,
    /// Requests in flight to the engines at once.
    pub concurrency: usize,
}

/// Where remote generation runs and how docent talks to it (`[llm]` in the file).
#[derive(Debug, Clone)]
pub struct RemoteLlm {
    pub urls: Vec<url::Url>,
    pub model: Option<String>,
    /// From `DOCENT_LLM_API_KEY`, or the file `DOCENT_LLM_API_KEY_FILE` / `api_key_file` names.
    pub api_key: Option<Secret>,
    pub timeout: Duration,
    /// Requests in flight to the engines; `serve`'s fair queue hands out this many turns.
    pub concurrency: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    store: Option<Secret>,
    store_password_file: Option<PathBuf>,
    store_pool: Option<u32>,
    models_dir: Option<PathBuf>,
    model: Option<String>,
    threads: Option<usize>,
    context_size: Option<u32>,
    parallel: Option<usize>,
    allow_private_targets: Option<bool>,
    crawl_proxy: Option<Secret>,
    embedder: Option<String>,
    #[serde(default)]
    retrieval: FileRetrieval,
    #[serde(default)]
    generation: FileGeneration,
    #[serde(default)]
    llm: FileLlm,
    #[serde(default)]
    embed: FileEmbed,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEmbed {
    /// One engine's URL, or several.
    url: Option<OneOrMany>,
    model: Option<String>,
    timeout: Option<String>,
    batch: Option<usize>,
    concurrency: Option<usize>,
    api_key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLlm {
    /// One engine's URL, or several.
    url: Option<OneOrMany>,
    model: Option<String>,
    timeout: Option<String>,
    concurrency: Option<usize>,
    api_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetrieval {
    top_k: Option<usize>,
    min_score: Option<f32>,
    answerable_threshold: Option<f32>,
    claim_check: Option<bool>,
    verify_claims: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGeneration {
    max_tokens: Option<usize>,
    temperature: Option<f32>,
}

/// What the command line (its flags and their `DOCENT_*` variables) sets: each field, when
/// present, wins over the config file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub store_password_file: Option<PathBuf>,
    pub store_pool: Option<u32>,
    pub models_dir: Option<PathBuf>,
    pub model: Option<String>,
    pub threads: Option<usize>,
    pub ctx_size: Option<u32>,
    pub parallel: Option<usize>,
    /// Remote engines' URLs (each entry may hold several, comma-separated).
    pub llm_url: Vec<String>,
    pub llm_model: Option<String>,
    pub llm_timeout: Option<String>,
    pub llm_concurrency: Option<usize>,
    /// The in-process embedder by name (`minilm`, `nomic`, ...).
    pub embedder: Option<String>,
    /// Remote embedding engines' URLs (each entry may hold several, comma-separated).
    pub embed_url: Vec<String>,
    pub embed_model: Option<String>,
    pub embed_timeout: Option<String>,
    /// The TOML file to read under them.
    pub config: Option<PathBuf>,
}

impl Config {
    /// Merges the config file named by `--config` (if any) under the flags and env values.
    pub fn load(args: &Overrides) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("failed to read config {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let models_dir = args
            .models_dir
            .clone()
            .or(file.models_dir)
            .unwrap_or_else(default_models_dir);
        let model = args
            .model
            .clone()
            .or(file.model)
            .unwrap_or_else(|| "default".into());
        let threads = args
            .threads
            .or(file.threads)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let parallel = args.parallel.or(file.parallel).unwrap_or(4);
        let store = args.store.clone().map(Secret).or(file.store);
        let store_password = match &store {
            Some(url) if !is_postgres_url(&url.0) => bail!(
                "store must be a PostgreSQL URL (postgres://user@host:port/database); the \
                 embedded store is the folder --data-dir names"
            ),
            Some(_) => {
                let file = args
                    .store_password_file
                    .as_deref()
                    .or(file.store_password_file.as_deref());
                store_password(file)?.map(Secret)
            }
            None => None,
        };
        let store_pool = args
            .store_pool
            .or(file.store_pool)
            .unwrap_or(DEFAULT_STORE_POOL);
        if !(1..=1000).contains(&store_pool) {
            bail!("store_pool must be 1 to 1000 connections, not {store_pool}");
        }
        let llm = remote_llm(args, file.llm, parallel)?;
        let embed = remote_embed(args, file.embed)?;
        let (embedder, embedder_flag) = embedders(args, file.embedder, embed.is_some())?;
        let config = Config {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("data")),
            store,
            store_password,
            store_pool,
            model_path: resolve_model(&models_dir, &model),
            models_dir,
            threads,
            context_size: args.ctx_size.or(file.context_size).unwrap_or(4096),
            parallel,
            top_k: file.retrieval.top_k.unwrap_or(5),
            min_score: file.retrieval.min_score.unwrap_or(0.3),
            answerable_threshold: file.retrieval.answerable_threshold.unwrap_or(
                if model == "default" && llm.is_none() {
                    DEFAULT_MODEL_ANSWERABLE_THRESHOLD
                } else {
                    0.0
                },
            ),
            claim_check: file.retrieval.claim_check.unwrap_or(true),
            verify_claims: file.retrieval.verify_claims.unwrap_or(false),
            max_tokens: file.generation.max_tokens.unwrap_or(400),
            temperature: file.generation.temperature.unwrap_or(0.0),
            allow_private_targets: file.allow_private_targets.unwrap_or(false),
            crawl_proxy: file.crawl_proxy,
            llm,
            embed,
            embedder,
            embedder_flag,
        };
        if config.threads == 0 || config.context_size < 512 {
            bail!("threads must be at least 1 and context_size at least 512");
        }
        if !(1..=64).contains(&config.parallel) {
            bail!("parallel must be between 1 and 64");
        }
        Ok(config)
    }

    pub fn embedder_dir(&self) -> PathBuf {
        self.models_dir.join("all-MiniLM-L6-v2")
    }
}

/// The node's default embedder (flag, then DOCENT_EMBEDDER, then the file) and the flag
/// alone; an in-process choice makes no sense beside `--embed-url`.
fn embedders(
    args: &Overrides,
    file: Option<String>,
    remote: bool,
) -> anyhow::Result<(EmbedderChoice, Option<EmbedderChoice>)> {
    let parse = |name: &str| name.parse::<EmbedderChoice>().map_err(anyhow::Error::msg);
    let flag = args.embedder.as_deref().map(parse).transpose()?;
    let env = std::env::var("DOCENT_EMBEDDER")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let named = match (flag, env.as_deref().or(file.as_deref())) {
        (Some(choice), _) => Some(choice),
        (None, Some(name)) => Some(parse(name)?),
        (None, None) => None,
    };
    if remote && named.is_some() {
        bail!(
            "--embedder picks an in-process embedder, but --embed-url embeds every bot on a \
             remote engine: use one or the other"
        );
    }
    Ok((named.unwrap_or_default(), flag))
}

/// The remote engines flags and file name, if any; the API key comes from the environment
/// or a file, never a flag.
fn remote_llm(
    args: &Overrides,
    file: FileLlm,
    parallel: usize,
) -> anyhow::Result<Option<RemoteLlm>> {
    let urls = engine_urls("--llm-url", &args.llm_url, file.url)?;
    if urls.is_empty() {
        return Ok(None);
    }
    let timeout = engine_timeout(
        "--llm-timeout",
        args.llm_timeout.as_deref().or(file.timeout.as_deref()),
        Duration::from_secs(120),
    )?;
    let concurrency = args
        .llm_concurrency
        .or(file.concurrency)
        .unwrap_or(parallel);
    if !(1..=1024).contains(&concurrency) {
        bail!("--llm-concurrency must be between 1 and 1024");
    }
    Ok(Some(RemoteLlm {
        urls,
        model: args.llm_model.clone().or(file.model),
        api_key: api_key("DOCENT_LLM_API_KEY", file.api_key_file)?,
        timeout,
        concurrency,
    }))
}

/// The remote embedding engines the flags and file name, if any; the API key comes from
/// the environment or a file, never a flag.
fn remote_embed(args: &Overrides, file: FileEmbed) -> anyhow::Result<Option<RemoteEmbed>> {
    let urls = engine_urls("--embed-url", &args.embed_url, file.url)?;
    if urls.is_empty() {
        return Ok(None);
    }
    let timeout = engine_timeout(
        "--embed-timeout",
        args.embed_timeout.as_deref().or(file.timeout.as_deref()),
        Duration::from_secs(60),
    )?;
    let batch = file.batch.unwrap_or(64);
    let concurrency = file.concurrency.unwrap_or(4);
    if !(1..=2048).contains(&batch) || !(1..=1024).contains(&concurrency) {
        bail!("[embed] batch must be between 1 and 2048, and concurrency between 1 and 1024");
    }
    Ok(Some(RemoteEmbed {
        urls,
        model: args.embed_model.clone().or(file.model),
        api_key: api_key("DOCENT_EMBED_API_KEY", file.api_key_file)?,
        timeout,
        batch,
        concurrency,
    }))
}

/// The engine URLs a flag (several entries, each perhaps comma-separated) or else the file
/// lists, each checked to be http(s).
fn engine_urls(
    flag: &str,
    given: &[String],
    file: Option<OneOrMany>,
) -> anyhow::Result<Vec<url::Url>> {
    let listed: Vec<String> = if given.is_empty() {
        match file {
            Some(OneOrMany::One(url)) => vec![url],
            Some(OneOrMany::Many(urls)) => urls,
            None => Vec::new(),
        }
    } else {
        given.to_vec()
    };
    listed
        .iter()
        .flat_map(|entry| entry.split(','))
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let url = url::Url::parse(u).with_context(|| format!("invalid {flag} {u:?}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                bail!("{flag} {u:?} is not an http(s) URL");
            }
            Ok(url)
        })
        .collect()
}

fn engine_timeout(flag: &str, text: Option<&str>, default: Duration) -> anyhow::Result<Duration> {
    let timeout = match text {
        Some(text) => {
            crate::telemetry::parse_duration(text).with_context(|| format!("invalid {flag}"))?
        }
        None => default,
    };
    if timeout.is_zero() {
        bail!("{flag} must be at least 1s");
    }
    Ok(timeout)
}

/// The key in the environment variable `var` (`DOCENT_LLM_API_KEY`), else the first line of
/// the file `{var}_FILE` (or the config) names.
fn api_key(var: &str, file: Option<PathBuf>) -> anyhow::Result<Option<Secret>> {
    if let Ok(key) = std::env::var(var)
        && !key.trim().is_empty()
    {
        return Ok(Some(Secret(key.trim().to_string())));
    }
    let Some(path) = std::env::var_os(format!("{var}_FILE"))
        .map(PathBuf::from)
        .or(file)
    else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "failed to read the API key file {} ({var}_FILE)",
            path.display()
        )
    })?;
    let key = text.lines().next().unwrap_or("").trim().to_string();
    if key.is_empty() {
        bail!("the API key file {} is empty", path.display());
    }
    Ok(Some(Secret(key)))
}

/// `default` and `small` name the fetched models; anything else is a path to a GGUF.
pub fn resolve_model(models_dir: &Path, model: &str) -> PathBuf {
    match model {
        "default" => models_dir.join("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
        "small" => models_dir.join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
        path => PathBuf::from(path),
    }
}

/// `./models` when run from the repository; otherwise the repository's `models/` relative
/// to a binary in `target/<profile>/`.
fn default_models_dir() -> PathBuf {
    let local = PathBuf::from("models");
    if local.is_dir() {
        return local;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()?
                .parent()?
                .parent()
                .map(|repo| repo.join("models"))
        })
        .filter(|dir| dir.is_dir())
        .unwrap_or(local)
}

/// The database password given apart from the URL: the file's first line, else the
/// `DOCENT_STORE_PASSWORD` environment variable, else none.
fn store_password(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the password file {}", file.display()))?;
        return Ok(Some(text.lines().next().unwrap_or_default().to_string()));
    }
    Ok(std::env::var("DOCENT_STORE_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty()))
}

/// Whether `store` names a PostgreSQL database rather than a data folder.
pub fn is_postgres_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NomicWidth;

    #[test]
    fn example_config_parses() {
        let parsed: FileConfig = toml::from_str(EXAMPLE).expect("config.example.toml parses");
        assert_eq!(parsed.retrieval.top_k, Some(5));
    }

    #[test]
    fn the_embedder_comes_from_the_flag_or_the_file_and_only_the_flag_is_a_bots_choice() {
        let file = |text: &str| toml::from_str::<FileConfig>(text).unwrap().embedder;
        let args = Overrides::default();
        let parsed = embedders(&args, file("embedder = \"nomic-256\""), false).unwrap();
        assert_eq!(parsed, (EmbedderChoice::Nomic(NomicWidth::D256), None));
        let flagged = Overrides {
            embedder: Some("nomic".into()),
            ..Overrides::default()
        };
        let nomic = EmbedderChoice::Nomic(NomicWidth::Full);
        assert_eq!(
            embedders(&flagged, file("embedder = \"minilm\""), false).unwrap(),
            (nomic, Some(nomic))
        );
        assert!(embedders(&flagged, None, true).is_err());
        assert!(embedders(&args, Some("bge".into()), false).is_err());
    }

    #[test]
    fn the_store_pool_defaults_to_16_and_is_bounded() {
        let with = |pool: Option<u32>| {
            Config::load(&Overrides {
                store: Some("postgres://docent@db.internal/docent".into()),
                store_pool: pool,
                ..Overrides::default()
            })
        };
        assert_eq!(with(None).unwrap().store_pool, DEFAULT_STORE_POOL);
        assert_eq!(with(Some(40)).unwrap().store_pool, 40);
        for bad in [0, 1001] {
            let err = with(Some(bad)).unwrap_err();
            assert!(
                format!("{err}").contains("store_pool must be 1 to 1000"),
                "{err}"
            );
        }
    }
}
