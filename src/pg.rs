//! The PostgreSQL adapter of the storage ports, for many docent nodes sharing one state
//! (`--store postgres://…`); redb (`store`) stays the embedded default.
//!
//! Each table keeps the record the redb store keeps (its serde JSON, as `jsonb`), with the
//! columns that lookups, uniqueness and ordering need beside it, so both engines store the
//! same records and make the same decisions (the domain's). The schema is versioned
//! migrations (refinery, `src/pg/migrations`), applied when a store is opened or by
//! `docent migrate`, by one node at a time under an advisory lock.
//!
//! Transactions run at PostgreSQL's default isolation, READ COMMITTED: a write that reads
//! what it changes either does it in one statement (`touch_session`) or locks the rows it
//! read first (`SELECT … FOR UPDATE`), so two nodes never both act on what they read.
//!
//! The client is the synchronous `postgres` crate behind an r2d2 pool: the storage ports
//! are synchronous and are called off the async threads, like redb's.

mod accounts;
mod content;
mod conversations;
mod import;
pub mod local;
mod notices;
mod outbox;
mod search;
pub mod tls;

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, anyhow};
use postgres::GenericClient;
use postgres::types::{Json, ToSql};
use r2d2_postgres::PostgresConnectionManager;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::domain::{CrawlJob, UploadedFile};
use crate::keys::ApiKey;
use crate::ports::{Error, JobStore, KeyStore, Result, SecretRing};

type Manager = PostgresConnectionManager<MakeRustlsConnect>;
type Conn = r2d2::PooledConnection<Manager>;

mod embedded {
    refinery::embed_migrations!("src/pg/migrations");
}

/// The advisory lock migrations run under: one node migrates, the others wait for it.
const MIGRATION_LOCK: i64 = 0x0064_6f63_656e_7401;

/// Per-connection limits: a statement, a wait for a lock (a bot's, while another node
/// commits to it), a transaction left idle.
/// TCP keepalives find a node whose machine vanished within about a minute, so its locks
/// (its presence) go.
const SESSION_LIMITS: &str = "-c statement_timeout=60000 -c lock_timeout=120000 \
                              -c idle_in_transaction_session_timeout=60000 \
                              -c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 \
                              -c tcp_keepalives_count=3";

/// Most connections one node's pool holds unless `--store-pool` says otherwise.
const DEFAULT_POOL_SIZE: u32 = crate::config::DEFAULT_STORE_POOL;

/// A docent store in a PostgreSQL database. Clones share one connection pool.
#[derive(Clone)]
pub struct PgStore {
    /// Always `Some` until dropped (then dropped where the client may block).
    pool: Option<r2d2::Pool<Manager>>,
    /// Woken after this node wrote events or made deliveries due.
    outbox: std::sync::Arc<tokio::sync::Notify>,
    /// Where it is, without credentials: for messages.
    target: String,
    /// How to open a connection of its own (`presence`, the notice listener).
    config: postgres::Config,
    /// TLS as the URL's `sslmode` asks (`pg/tls.rs`), for every connection.
    tls: MakeRustlsConnect,
    /// This process's presence, once it staged chunks.
    presence: std::sync::Arc<std::sync::Mutex<Option<Presence>>>,
    /// This process's id on the notice channel (`pg/notices.rs`).
    origin: std::sync::Arc<str>,
    /// Whether `adopt_jobs` ran: the first time, this process's own unfinished jobs (put
    /// before its worker started) are handed out too.
    adopted: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Each bot's chunk count and mean distinct words per chunk, for BM25 (`pg/search.rs`).
    keyword_stats: search::StatsCache,
}

/// A process's presence in the database: a session of its own holding the advisory lock
/// `docent-node:<node>` for as long as the process lives (PostgreSQL releases it when the
/// connection goes), so other nodes can tell a running ingest's staged chunks from a dead
/// one's.
struct Presence {
    node: String,
    /// Always `Some` until dropped.
    client: Option<postgres::Client>,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let client = self.client.take();
        off_runtime(move || drop(client));
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`; a password in the
    /// URL or in `password`), brings its schema up to date, removes what crashed ingests
    /// staged and gives back the deliveries that gone nodes claimed.
    pub fn open(url: &str, password: Option<&str>) -> anyhow::Result<PgStore> {
        PgStore::open_with(url, password, DEFAULT_POOL_SIZE)
    }

    /// `open` with at most `pool` connections in the pool.
    pub fn open_with(url: &str, password: Option<&str>, pool: u32) -> anyhow::Result<PgStore> {
        let store = PgStore::connect_with(url, password, pool)?;
        store.migrate()?;
        let swept = crate::ports::ContentStore::discard_staged(&store, None)?;
        if swept > 0 {
            tracing::info!("removed {swept} chunks staged by ingests whose process is gone");
        }
        let released = store.release_gone_claims()?;
        if released > 0 {
            tracing::info!("{released} webhook deliveries claimed by a gone node are due again");
        }
        Ok(store)
    }

    /// Connects to the database at `url`, leaving its schema as it is.
    pub fn connect(url: &str, password: Option<&str>) -> anyhow::Result<PgStore> {
        PgStore::connect_with(url, password, DEFAULT_POOL_SIZE)
    }

    /// `connect` with at most `pool` connections in the pool.
    pub fn connect_with(url: &str, password: Option<&str>, pool: u32) -> anyhow::Result<PgStore> {
        // Never echoed: a malformed URL may still hold a password.
        let (url, tls) = tls::split_url(url)?;
        let tls = tls::connector(&tls)?;
        let mut config = postgres::Config::from_str(&url).map_err(|_| {
            anyhow!("the store is not a PostgreSQL URL (postgres://user@host:port/database)")
        })?;
        if let Some(password) = password {
            config.password(password);
        }
        let target = describe(&config);
        config.application_name("docent");
        config.connect_timeout(Duration::from_secs(10));
        // A node that stalls must not hold the others up for ever.
        config.options(SESSION_LIMITS);
        let last_error = LastError::default();
        let pool = off_runtime(|| {
            r2d2::Pool::builder()
                .max_size(pool)
                .min_idle(Some(1))
                .idle_timeout(Some(Duration::from_secs(60)))
                // While the database is down a request waits this long, then is 503.
                .connection_timeout(Duration::from_secs(5))
                .error_handler(Box::new(last_error.clone()))
                .build(Manager::new(config.clone(), tls.clone()))
                // The pool reports only the last error's summary ("error performing TLS
                // handshake"); the handler kept its causes.
                .map_err(|pooled| match last_error.take() {
                    Some(why) => anyhow!("{why}"),
                    None => anyhow::Error::new(pooled),
                })
        })
        .with_context(|| format!("cannot connect to PostgreSQL at {target}"))?;
        Ok(PgStore {
            pool: Some(pool),
            outbox: Default::default(),
            target,
            config,
            tls,
            presence: Default::default(),
            origin: crate::ids::random_base62(16)?.into(),
            adopted: Default::default(),
            keyword_stats: Default::default(),
        })
    }

    /// Runs `work` in a transaction for each node that `owners` (a query of one nullable
    /// text column) names and that is gone (its presence lock is free: taken until the
    /// transaction ends, so no process of that id comes back meanwhile); the caller's
    /// own node counts as gone when `mine` is true. Returns what `work` returned, in turn.
    fn for_gone_nodes<T: Send>(
        &self,
        owners: &str,
        mine: bool,
        mut work: impl FnMut(&mut postgres::Transaction<'_>, Option<&str>) -> Result<T> + Send,
    ) -> Result<Vec<T>> {
        let me = self.presence_id();
        let nodes: Vec<Option<String>> = self.client(|c| {
            let rows = c.query(owners, &[]).context("read nodes")?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })?;
        let mut out = Vec::new();
        for node in nodes {
            let ours = me.is_some() && node == me;
            if ours && !mine {
                continue;
            }
            let done = self.in_transaction(|txn| {
                if !ours && !try_lock(txn, &presence_lock(node.as_deref().unwrap_or("")))? {
                    return Ok(None);
                }
                work(txn, node.as_deref()).map(Some)
            })?;
            out.extend(done);
        }
        Ok(out)
    }

    /// This process's node id, if it has taken one.
    fn presence_id(&self) -> Option<String> {
        let presence = self
            .presence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        presence.as_ref().map(|p| p.node.clone())
    }

    /// This process's node id, while its presence lock is held (taken again on a new
    /// session if the old one was lost).
    fn node(&self) -> Result<String> {
        off_runtime(|| {
            let mut presence = self
                .presence
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // An idle client does not notice a lost connection by itself: ask.
            let alive = |p: &mut Presence| {
                p.client
                    .as_mut()
                    .is_some_and(|c| c.is_valid(Duration::from_secs(5)).is_ok())
            };
            if let Some(held) = presence.as_mut()
                && alive(held)
            {
                return Ok(held.node.clone());
            }
            let mut client = self
                .config
                .connect(self.tls.clone())
                .with_context(|| format!("PostgreSQL at {} is unavailable", self.target))?;
            // The same id again after a lost connection: what it staged stays its own
            // (unless another node swept it meanwhile: then its commit fails).
            let node = match presence.as_ref() {
                Some(held) => held.node.clone(),
                None => crate::ids::random_base62(16)?,
            };
            client
                .execute(
                    "SELECT pg_advisory_lock(hashtextextended($1, 0))",
                    &[&presence_lock(&node)],
                )
                .context("take the node's presence lock")?;
            *presence = Some(Presence {
                node: node.clone(),
                client: Some(client),
            });
            Ok(node)
        })
    }

    /// Applies the migrations this database lacks, one node at a time; returns their names.
    pub fn migrate(&self) -> anyhow::Result<Vec<String>> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            // A migration may build indexes for a while, and wait for another node's.
            conn.batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
                .context("configure the migration")?;
            conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .context("waiting for the migration lock")?;
            // The pending migrations and their history rows in one transaction (a crash
            // leaves all or none); a node older than the schema keeps running (migrations
            // only add), so upgrades can roll.
            let result = embedded::migrations::runner()
                .set_grouped(true)
                .set_abort_missing(false)
                .run(&mut *conn);
            let unlocked = conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
            let _ = conn.batch_execute("RESET statement_timeout; RESET lock_timeout");
            let report = result.with_context(|| format!("cannot migrate {}", self.target))?;
            unlocked.context("releasing the migration lock")?;
            Ok(report
                .applied_migrations()
                .iter()
                .map(|m| m.to_string())
                .collect())
        })
    }

    /// The database, without credentials (`host:port/db as user`).
    pub fn target(&self) -> &str {
        &self.target
    }

    fn conn(&self) -> Result<Conn> {
        let pool = self
            .pool
            .as_ref()
            .expect("the pool lives as long as the store");
        pool.get()
            .map_err(|e| Error::Unavailable(format!("PostgreSQL at {}: {e}", self.target)))
    }

    /// Runs `work` with a pooled connection.
    fn client<T: Send>(
        &self,
        work: impl FnOnce(&mut postgres::Client) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| work(&mut *self.conn()?).map_err(|e| self.unavailable_if_lost(e)))
    }

    /// `e` as `Error::Unavailable` when the database went away under it (the connection
    /// broke, the server is shutting down or starting), so callers say retry, not fail.
    fn unavailable_if_lost(&self, e: Error) -> Error {
        let Error::Other(error) = &e else {
            return e;
        };
        let lost = error.chain().any(|cause| {
            cause.downcast_ref::<std::io::Error>().is_some()
                || cause.downcast_ref::<postgres::Error>().is_some_and(|pg| {
                    pg.is_closed() || pg.code().is_some_and(|code| code.code().starts_with("57P"))
                })
        });
        if lost {
            Error::Unavailable(format!("PostgreSQL at {}: {error:#}", self.target))
        } else {
            e
        }
    }

    /// Runs one statement; how many rows it touched.
    fn execute(&self, what: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.client(|c| Ok(c.execute(sql, params).context(what.to_string())?))
    }

    /// Inserts one row; a row already holding its unique key is `exists()`.
    fn insert_new(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        exists: impl FnOnce() -> Error,
    ) -> Result<()> {
        let inserted = self.client(|c| Ok(c.execute(sql, params)))?;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Err(exists())
            }
            Err(e) => {
                let e = anyhow::Error::from(e).context(what.to_string()).into();
                Err(self.unavailable_if_lost(e))
            }
        }
    }

    /// Runs `work` in one transaction: committed when it returns `Ok`, rolled back else.
    fn in_transaction<T: Send>(
        &self,
        work: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            let run = || {
                let mut txn = conn.transaction().context("begin")?;
                let out = work(&mut txn)?;
                txn.commit().context("commit")?;
                Ok(out)
            };
            run().map_err(|e| self.unavailable_if_lost(e))
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Closing a connection blocks on the client's own runtime.
        let pool = self.pool.take();
        off_runtime(move || drop(pool));
    }
}

/// Stores `fresh` as the secret `name` unless a node did first; the one stored.
fn make_secret(c: &mut postgres::Client, name: &str, fresh: &[u8]) -> Result<Vec<u8>> {
    // A node making it at the same moment commits after this statement's snapshot: then
    // the next statement sees it.
    for _ in 0..3 {
        let row = c
            .query_opt(
                "WITH made AS (INSERT INTO secrets (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING RETURNING value) \
                 SELECT value FROM made UNION ALL \
                 SELECT value FROM secrets WHERE name = $1 LIMIT 1",
                &[&name, &fresh],
            )
            .context("read secret")?;
        if let Some(row) = row {
            return Ok(row.get(0));
        }
    }
    Err(anyhow!("the secret {name} is neither stored nor storable").into())
}

/// Writes the secret `name`, replacing any value it had.
fn upsert_secret(txn: &mut postgres::Transaction<'_>, name: &str, value: &[u8]) -> Result<()> {
    txn.execute(
        "INSERT INTO secrets (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        &[&name, &value],
    )
    .context("write secret")?;
    Ok(())
}

/// Runs `work` where the synchronous client may block: here, or on a thread of its own when
/// this thread drives async tasks (the client runs a runtime of its own, which tokio does
/// not allow inside another). The ports are meant to be called off the async threads;
/// this keeps a call that is not from failing.
fn off_runtime<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return work();
    }
    std::thread::scope(|scope| match scope.spawn(work).join() {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// `host:port/db as user`, from a parsed URL: never its password.
/// The pool's connection errors: the last one kept with its causes, for the message when
/// a store cannot be opened; each logged at debug level.
#[derive(Debug, Default, Clone)]
struct LastError(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl LastError {
    fn take(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl r2d2::HandleError<postgres::Error> for LastError {
    fn handle_error(&self, error: postgres::Error) {
        let why = format!("{:#}", anyhow::Error::new(error));
        tracing::debug!("a PostgreSQL connection failed: {why}");
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
    }
}

fn describe(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    format!(
        "{}/{} as {}",
        hosts.join(","),
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default)")
    )
}

/// Takes the advisory lock `name` until `txn` ends: exclusive, or `shared` with any other
/// shared holder. Waits for a conflicting holder (at most the session's lock timeout).
fn lock(txn: &mut postgres::Transaction<'_>, name: &str, shared: bool) -> Result<()> {
    let sql = if shared {
        "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))"
    } else {
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
    };
    txn.execute(sql, &[&name])
        .with_context(|| format!("lock {name}"))?;
    Ok(())
}

/// Takes the advisory lock `name` until `txn` ends if no one holds it; whether it did.
fn try_lock(txn: &mut postgres::Transaction<'_>, name: &str) -> Result<bool> {
    let row = txn
        .query_one(
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))",
            &[&name],
        )
        .with_context(|| format!("try lock {name}"))?;
    Ok(row.get(0))
}

/// The advisory lock a live node holds (`PgStore::node`).
fn presence_lock(node: &str) -> String {
    format!("docent-node:{node}")
}

/// `value` as a `jsonb` column keeps it. jsonb cannot hold the NUL character, which
/// visitors' text may carry: each becomes U+FFFD, the replacement character.
fn storable<T: Serialize>(value: &T) -> Result<Json<serde_json::Value>> {
    let mut value = serde_json::to_value(value).context("encode record")?;
    without_nul(&mut value);
    Ok(Json(value))
}

fn without_nul(value: &mut serde_json::Value) {
    use serde_json::Value;
    const NUL: char = '\0';
    let clean = |text: &str| text.replace(NUL, "\u{fffd}");
    match value {
        Value::String(text) if text.contains(NUL) => *text = clean(text),
        Value::Array(items) => items.iter_mut().for_each(without_nul),
        Value::Object(fields) => {
            if fields.keys().any(|k| k.contains(NUL)) {
                *fields = std::mem::take(fields)
                    .into_iter()
                    .map(|(k, v)| (clean(&k), v))
                    .collect();
            }
            fields.values_mut().for_each(without_nul);
        }
        _ => {}
    }
}

/// A row limit as SQL takes it.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A time in Unix ms as SQL takes it (the far future stays the far future).
fn sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Writes `record` as the row `id` of `table` (new or replacing).
fn put<T: Serialize + Sync + std::fmt::Debug>(
    client: &mut impl GenericClient,
    table: &str,
    id: &str,
    record: &T,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO {table} (id, record) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record"
    );
    client
        .execute(&sql, &[&id, &storable(record)?])
        .with_context(|| format!("write {table}"))?;
    Ok(())
}

/// The record in row `id` of `table`, if there is one.
fn get<T: DeserializeOwned>(
    client: &mut impl GenericClient,
    table: &str,
    id: &str,
) -> Result<Option<T>> {
    let sql = format!("SELECT record FROM {table} WHERE id = $1");
    let row = client
        .query_opt(&sql, &[&id])
        .with_context(|| format!("read {table}"))?;
    Ok(row.map(|row| row.get::<_, Json<T>>(0).0))
}

/// The records of `table` that `filter` (an SQL condition on `params`) picks, in id order.
fn all<T: DeserializeOwned>(
    client: &mut impl GenericClient,
    table: &str,
    filter: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<T>> {
    let sql = format!("SELECT record FROM {table} WHERE {filter} ORDER BY id");
    let rows = client
        .query(&sql, params)
        .with_context(|| format!("read {table}"))?;
    Ok(records(rows))
}

/// The records in the first column of `rows`.
fn records<T: DeserializeOwned>(rows: Vec<postgres::Row>) -> Vec<T> {
    rows.into_iter()
        .map(|row| row.get::<_, Json<T>>(0).0)
        .collect()
}

impl crate::ports::Storage for PgStore {
    fn notices(&self) -> Option<std::sync::Arc<dyn crate::ports::Notices>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

impl KeyStore for PgStore {
    fn put_key(&self, key: &ApiKey) -> Result<()> {
        self.client(|c| put(c, "keys", &key.id, key))
    }

    fn put_keys(&self, records: &[&ApiKey]) -> Result<()> {
        self.in_transaction(|txn| {
            records
                .iter()
                .try_for_each(|key| put(txn, "keys", &key.id, key))
        })
    }

    fn get_key(&self, id: &str) -> Result<ApiKey> {
        self.client(|c| get(c, "keys", id))?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))
    }

    fn list_keys(&self) -> Result<Vec<ApiKey>> {
        self.client(|c| all(c, "keys", "true", &[]))
    }

    fn shared_secrets(&self, name: &str, fresh: &[u8]) -> Result<SecretRing> {
        let previous_name = SecretRing::previous_name(name);
        self.client(|c| {
            // One statement, one snapshot: the secret and its previous one agree.
            let rows = c
                .query(
                    "SELECT name, value FROM secrets WHERE name = $1 OR name = $2",
                    &[&name, &previous_name],
                )
                .context("read secrets")?;
            let value = |wanted: &str| {
                rows.iter()
                    .find(|row| row.get::<_, &str>(0) == wanted)
                    .map(|row| row.get::<_, Vec<u8>>(1))
            };
            let current = match value(name) {
                Some(current) => current,
                None => make_secret(c, name, fresh)?,
            };
            Ok(SecretRing {
                current,
                previous: value(&previous_name).and_then(|v| SecretRing::decode_previous(&v)),
            })
        })
    }

    fn rotate_secret(&self, name: &str, fresh: &[u8], previous_until: u64) -> Result<SecretRing> {
        let previous_name = SecretRing::previous_name(name);
        self.in_transaction(|txn| {
            // A secret no node made yet is made here: nothing to keep. (Made meanwhile by a
            // node starting, this waits for its commit and does nothing.)
            let made = txn
                .query_opt(
                    "INSERT INTO secrets (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING RETURNING 1",
                    &[&name, &fresh],
                )
                .context("make secret")?;
            if made.is_some() {
                txn.execute("DELETE FROM secrets WHERE name = $1", &[&previous_name])
                    .context("drop previous secret")?;
                return Ok(SecretRing {
                    current: fresh.to_vec(),
                    previous: None,
                });
            }
            // Rotations on two nodes at once take turns here; this statement sees what
            // the one before committed (read committed).
            let current: Vec<u8> = txn
                .query_one(
                    "SELECT value FROM secrets WHERE name = $1 FOR UPDATE",
                    &[&name],
                )
                .context("read secret")?
                .get(0);
            let value = SecretRing::encode_previous(&current, previous_until);
            upsert_secret(txn, &previous_name, &value)?;
            upsert_secret(txn, name, fresh)?;
            Ok(SecretRing {
                current: fresh.to_vec(),
                previous: Some((current, previous_until)),
            })
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn put_first_key(&self, key: &ApiKey) -> Result<bool> {
        self.in_transaction(|txn| {
            // Nodes starting together: one writes it, the others find it.
            lock(txn, "docent-first-key", false)?;
            let any = txn
                .query_opt("SELECT 1 FROM keys LIMIT 1", &[])
                .context("read keys")?;
            if any.is_some() {
                return Ok(false);
            }
            put(txn, "keys", &key.id, key)?;
            Ok(true)
        })
    }
}

impl JobStore for PgStore {
    fn put_job(&self, job: &CrawlJob) -> Result<()> {
        // An unfinished job is this node's until it finishes (or the node is gone).
        let node = if job.state.unfinished() {
            Some(self.node()?)
        } else {
            None
        };
        self.in_transaction(|txn| {
            write_job(txn, job, node.as_deref())?;
            if !job.state.unfinished() {
                txn.execute("DELETE FROM uploads WHERE job = $1", &[&job.id.as_str()])
                    .context("drop uploaded documents")?;
            }
            Ok(())
        })
    }

    fn put_upload(&self, job: &CrawlJob, files: &[UploadedFile]) -> Result<()> {
        let node = self.node()?;
        self.in_transaction(|txn| {
            write_job(txn, job, Some(&node))?;
            for file in files {
                txn.execute(
                    "INSERT INTO uploads (job, name, bytes) VALUES ($1, $2, $3)",
                    &[
                        &job.id.as_str(),
                        &file.name.as_str(),
                        &file.bytes.as_slice(),
                    ],
                )
                .context("write uploaded document")?;
            }
            Ok(())
        })
    }

    fn upload_files(&self, job: &str) -> Result<Vec<UploadedFile>> {
        self.client(|c| {
            let rows = c
                .query(
                    "SELECT name, bytes FROM uploads WHERE job = $1 ORDER BY name",
                    &[&job],
                )
                .context("read uploaded documents")?;
            Ok(rows
                .into_iter()
                .map(|row| UploadedFile {
                    name: row.get(0),
                    bytes: row.get(1),
                })
                .collect())
        })
    }

    fn get_job(&self, id: &str) -> Result<Option<CrawlJob>> {
        self.client(|c| get(c, "jobs", id))
    }

    fn jobs(&self) -> Result<Vec<CrawlJob>> {
        self.client(|c| all(c, "jobs", "true", &[]))
    }

    fn adopt_jobs(&self) -> Result<Vec<CrawlJob>> {
        let me = self.node()?;
        let first = !self.adopted.swap(true, std::sync::atomic::Ordering::SeqCst);
        let owners = "SELECT DISTINCT node FROM jobs \
                      WHERE record->>'state' IN ('queued', 'running')";
        let adopted = self.for_gone_nodes(owners, first, |txn, owner| {
            let rows = txn
                .query(
                    "UPDATE jobs SET node = $1 WHERE node IS NOT DISTINCT FROM $2 \
                     AND record->>'state' IN ('queued', 'running') RETURNING record",
                    &[&me, &owner],
                )
                .context("adopt jobs")?;
            Ok(records::<CrawlJob>(rows))
        })?;
        let mut adopted: Vec<CrawlJob> = adopted.into_iter().flatten().collect();
        adopted.sort_by_key(|j| j.created);
        Ok(adopted)
    }
}

/// Writes a job's record, owned by `node` while it is unfinished.
fn write_job(
    txn: &mut postgres::Transaction<'_>,
    job: &CrawlJob,
    node: Option<&str>,
) -> Result<()> {
    txn.execute(
        "INSERT INTO jobs (id, record, node) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, node = EXCLUDED.node",
        &[&job.id.as_str(), &Json(job) as &(dyn ToSql + Sync), &node],
    )
    .context("write job")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_become_replacement_characters_wherever_they_are() {
        let record = serde_json::json!({"a\0": ["x\0y", {"k": "\0"}], "n": 1, "ok": "plain"});
        let stored = storable(&record).unwrap().0;
        assert_eq!(
            stored,
            serde_json::json!({"a\u{fffd}": ["x\u{fffd}y", {"k": "\u{fffd}"}], "n": 1, "ok": "plain"})
        );
    }

    #[test]
    fn a_target_is_described_without_its_password() {
        let config =
            postgres::Config::from_str("postgres://ana:s3cret@db.example:6543/docent").unwrap();
        let shown = describe(&config);
        assert_eq!(shown, "db.example:6543/docent as ana");
        for url in [
            "postgres://ana:s3cret@db.example:notaport/x",
            "host=db password=s3cret port=x",
        ] {
            let error = PgStore::open(url, None).err().unwrap();
            assert!(!format!("{error:#}").contains("s3cret"), "{error:#}");
        }
    }
}
