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
mod outbox;
mod search;

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, anyhow};
use postgres::types::{Json, ToSql};
use postgres::{GenericClient, NoTls};
use r2d2_postgres::PostgresConnectionManager;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::CrawlJob;
use crate::keys::ApiKey;
use crate::ports::{Error, JobStore, KeyStore, Result};

type Manager = PostgresConnectionManager<NoTls>;
type Conn = r2d2::PooledConnection<Manager>;

mod embedded {
    refinery::embed_migrations!("src/pg/migrations");
}

/// The advisory lock migrations run under: one node migrates, the others wait for it.
const MIGRATION_LOCK: i64 = 0x0064_6f63_656e_7401;

/// Per-connection limits: a statement, a wait for a lock (a bot's, while another node
/// commits to it), a transaction left idle.
const SESSION_LIMITS: &str = "-c statement_timeout=60000 -c lock_timeout=120000 \
                              -c idle_in_transaction_session_timeout=60000";

/// Most connections one node holds.
const POOL_SIZE: u32 = 16;

/// A docent store in a PostgreSQL database.
pub struct PgStore {
    /// Always `Some` until dropped (then dropped where the client may block).
    pool: Option<r2d2::Pool<Manager>>,
    /// Woken after this node wrote events or made deliveries due.
    outbox: std::sync::Arc<tokio::sync::Notify>,
    /// Where it is, without credentials: for messages.
    target: String,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`; a password in the
    /// URL or in `password`) and brings its schema up to date.
    pub fn open(url: &str, password: Option<&str>) -> anyhow::Result<PgStore> {
        let store = PgStore::connect(url, password)?;
        store.migrate()?;
        Ok(store)
    }

    /// Connects to the database at `url`, leaving its schema as it is.
    pub fn connect(url: &str, password: Option<&str>) -> anyhow::Result<PgStore> {
        // Never echoed: a malformed URL may still hold a password.
        let mut config = postgres::Config::from_str(url).map_err(|_| {
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
        let pool = off_runtime(|| {
            r2d2::Pool::builder()
                .max_size(POOL_SIZE)
                .min_idle(Some(1))
                .connection_timeout(Duration::from_secs(10))
                .build(Manager::new(config, NoTls))
        })
        .with_context(|| format!("cannot connect to PostgreSQL at {target}"))?;
        Ok(PgStore {
            pool: Some(pool),
            outbox: Default::default(),
            target,
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

    fn conn(&self) -> anyhow::Result<Conn> {
        self.pool
            .as_ref()
            .expect("the pool lives as long as the store")
            .get()
            .with_context(|| format!("PostgreSQL at {} is unavailable", self.target))
    }

    /// Runs `work` with a pooled connection.
    fn client<T: Send>(
        &self,
        work: impl FnOnce(&mut postgres::Client) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| work(&mut *self.conn()?))
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
            Err(e) => Err(anyhow::Error::from(e).context(what.to_string()).into()),
        }
    }

    /// Runs `work` in one transaction: committed when it returns `Ok`, rolled back else.
    fn in_transaction<T: Send>(
        &self,
        work: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            let mut txn = conn.transaction().context("begin")?;
            let out = work(&mut txn)?;
            txn.commit().context("commit")?;
            Ok(out)
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

/// The database password given apart from the URL: the file's first line, else the
/// `DOCENT_STORE_PASSWORD` environment variable, else none.
pub fn store_password(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
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
pub fn is_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
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
        .execute(&sql, &[&id, &Json(record)])
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
    Ok(rows
        .into_iter()
        .map(|row| row.get::<_, Json<T>>(0).0)
        .collect())
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
}

impl JobStore for PgStore {
    fn put_job(&self, job: &CrawlJob) -> Result<()> {
        self.client(|c| put(c, "jobs", &job.id, job))
    }

    fn get_job(&self, id: &str) -> Result<Option<CrawlJob>> {
        self.client(|c| get(c, "jobs", id))
    }

    fn jobs(&self) -> Result<Vec<CrawlJob>> {
        self.client(|c| all(c, "jobs", "true", &[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
