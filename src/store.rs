//! The redb adapter of the storage ports (`crate::ports`): one embedded database file,
//! the source of truth for a one-box node.
//!
//! Every durable change is one write transaction, so a crash at any moment leaves the
//! previous committed state. The search indexes (`crate::search`) are derived from this
//! data.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::domain::{
    Bot, BotId, Chunk, Conversation, CrawlJob, Lead, Message, Page, Role, UploadedFile,
};
use crate::ids::now_ms;
use crate::keys::ApiKey;
use crate::ports::{
    Appended, ContentStore, ConversationStore, Erased, Error, IngestCommit, JobStore, KeyStore,
    NewEvent, Result, SecretRing, Storage, TurnExtras,
};

mod accounts;
mod events;
mod export;
mod feedback;
use events::LEADS;

const BOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("bots");
/// Keyed by (bot id, page url).
const PAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("pages");
const CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("chunks");
/// Little-endian f32s, L2-normalised.
const VECTORS: TableDefinition<u64, &[u8]> = TableDefinition::new("vectors");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// API keys by id (`key_…`); records hold hashes, never keys.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const CONVERSATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("conversations");
/// Keyed by (conversation id, position in the conversation).
const MESSAGES: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("messages");
/// Conversation ids by (bot id, conversation id) and by (user id, conversation id), so
/// listing or erasing one bot's or one user's conversations reads only theirs.
const CONVERSATIONS_BY_BOT: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("conversations_by_bot");
const CONVERSATIONS_BY_USER: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("conversations_by_user");
/// Crawl jobs started over the API, by id (`job_…`), so their state outlives a restart.
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// (job id, file name) → the bytes of a document uploaded for that job, until it finishes.
const UPLOADS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("uploads");
/// Secrets the node signs with, by name (`KeyStore::shared_secrets`).
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
/// Set in `META` once the conversation indexes cover every conversation (databases made
/// before the indexes existed get them built when first opened).
const CONVERSATION_INDEX_BUILT: &str = "conversation_index_built";

/// What was erased, and when (ms): `conv\0<conversation id>` for a deleted conversation,
/// `user\0<bot>\0<user id>` for an erased user, `bot\0<bot>` for a deleted bot. A turn that
/// was being answered meanwhile is dropped instead of bringing the conversation back
/// (`append_turn`). Kept a day.
const ERASED: TableDefinition<&str, u64> = TableDefinition::new("erased");

/// Chunks an ingest has written but not yet committed, by (the ingest's id, chunk id). No page
/// lists them until the commit, so nothing reads them; a failed run's are removed at once
/// (`discard_staged`) and any a crash left behind when the database is next opened.
const STAGED: TableDefinition<(&str, u64), ()> = TableDefinition::new("staged_chunks");

const NEXT_CHUNK_ID: &str = "next_chunk_id";
pub const DB_FILE: &str = "docent.redb";
/// redb's page cache, reads and a write transaction's dirty pages together (half of it at
/// most for the dirty ones: beyond, they go to the file before the commit). Its default,
/// 1 GiB, would let one large ingest commit hold half a gigabyte; every hot read (a bot's
/// vectors and chunks, once per process; a conversation's messages) fits in this.
const DB_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    /// Woken after a commit that wrote events or made deliveries due (the delivery worker
    /// waits on it).
    outbox: Arc<tokio::sync::Notify>,
    /// Whether the unfinished jobs found when it was opened were handed out (`adopt_jobs`).
    adopted: Arc<std::sync::atomic::AtomicBool>,
}

/// The database in `data_dir` (opened, or created) behind the storage ports, as a node
/// and the CLI's commands share it.
pub fn open(data_dir: &Path) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(Store::open(data_dir)?))
}

impl Store {
    /// Opens (or creates) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        create_private_file(&path)?;
        let db = match Database::builder()
            .set_cache_size(DB_CACHE_BYTES)
            .create(&path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::Locked(data_dir.to_path_buf()));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("failed to open database {}", path.display()))
                    .into());
            }
        };
        let txn = db.begin_write().context("failed to begin transaction")?;
        {
            // Create every table up front so readers never meet a missing one.
            txn.open_table(BOTS).context("bots table")?;
            txn.open_table(PAGES).context("pages table")?;
            txn.open_table(CHUNKS).context("chunks table")?;
            txn.open_table(VECTORS).context("vectors table")?;
            txn.open_table(META).context("meta table")?;
            txn.open_table(KEYS).context("keys table")?;
            txn.open_table(CONVERSATIONS)
                .context("conversations table")?;
            txn.open_table(MESSAGES).context("messages table")?;
            txn.open_table(JOBS).context("jobs table")?;
            txn.open_table(UPLOADS).context("uploads table")?;
            txn.open_table(SECRETS).context("secrets table")?;
            txn.open_table(STAGED).context("staged_chunks table")?;
            txn.open_table(ERASED).context("erased table")?;
            events::create_tables(&txn)?;
            accounts::create_tables(&txn)?;
            feedback::create_tables(&txn)?;
            // No ingest runs yet in this process: whatever is staged, a crash left.
            let swept = discard_staged_in(&txn, None)?;
            if swept > 0 {
                tracing::info!("removed {swept} chunks staged by an ingest that did not finish");
            }
            let mut by_bot = txn
                .open_table(CONVERSATIONS_BY_BOT)
                .context("conversations_by_bot table")?;
            let mut by_user = txn
                .open_table(CONVERSATIONS_BY_USER)
                .context("conversations_by_user table")?;
            let mut meta = txn.open_table(META).context("meta table")?;
            if meta
                .get(CONVERSATION_INDEX_BUILT)
                .context("read meta")?
                .is_none()
            {
                let conversations = txn
                    .open_table(CONVERSATIONS)
                    .context("conversations table")?;
                for entry in conversations.iter().context("scan conversations")? {
                    let (_, raw) = entry.context("read conversation")?;
                    let conversation: Conversation = decode(raw.value())?;
                    index_conversation(&mut by_bot, &mut by_user, &conversation)?;
                }
                meta.insert(CONVERSATION_INDEX_BUILT, 1)
                    .context("write meta")?;
            }
        }
        txn.commit().context("failed to commit schema")?;
        Ok(Store {
            db: Arc::new(db),
            outbox: Arc::default(),
            adopted: Arc::default(),
        })
    }

    /// Wakes the delivery worker: the outbox changed.
    fn outbox_written(&self) {
        self.outbox.notify_one();
    }
}

impl ContentStore for Store {
    fn get_bot(&self, id: &BotId) -> Result<Bot> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(BOTS).context("open bots")?;
        let raw = table.get(id.as_str()).context("read bot")?;
        match raw {
            Some(raw) => Ok(decode(raw.value())?),
            None => Err(Error::BotNotFound(id.clone())),
        }
    }

    fn list_bots(&self) -> Result<Vec<Bot>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(BOTS).context("open bots")?;
        let mut bots = Vec::new();
        for entry in table.iter().context("iterate bots")? {
            let (_, raw) = entry.context("read bot")?;
            bots.push(decode(raw.value())?);
        }
        Ok(bots)
    }

    fn create_bot(&self, bot: &Bot) -> Result<()> {
        let txn = self.db.begin_write().context("begin write")?;
        {
            let mut bots = txn.open_table(BOTS).context("open bots")?;
            if bots.get(bot.id.as_str()).context("read bot")?.is_some() {
                return Err(Error::BotExists(bot.id.clone()));
            }
            bots.insert(bot.id.as_str(), encode(bot)?.as_slice())
                .context("write bot")?;
        }
        txn.commit().context("failed to commit bot")?;
        Ok(())
    }

    fn update_bot(&self, id: &BotId, change: &mut dyn FnMut(&mut Bot)) -> Result<Bot> {
        let txn = self.db.begin_write().context("begin write")?;
        let bot = {
            let mut bots = txn.open_table(BOTS).context("open bots")?;
            let raw = bots
                .get(id.as_str())
                .context("read bot")?
                .map(|r| r.value().to_vec());
            let Some(raw) = raw else {
                return Err(Error::BotNotFound(id.clone()));
            };
            let mut bot: Bot = decode(&raw)?;
            change(&mut bot);
            bots.insert(id.as_str(), encode(&bot)?.as_slice())
                .context("write bot")?;
            bot
        };
        txn.commit().context("failed to commit bot")?;
        Ok(bot)
    }

    fn delete_bot(&self, id: &BotId) -> Result<Vec<String>> {
        let txn = self.db.begin_write().context("begin write")?;
        if txn
            .open_table(BOTS)
            .context("open bots")?
            .get(id.as_str())
            .context("read bot")?
            .is_none()
        {
            return Err(Error::BotNotFound(id.clone()));
        }
        let conversations: Vec<String> = {
            let by_bot = txn
                .open_table(CONVERSATIONS_BY_BOT)
                .context("open conversations_by_bot")?;
            let mut ids = Vec::new();
            for entry in by_bot
                .range((id.as_str(), "")..)
                .context("range conversations_by_bot")?
            {
                let (key, _) = entry.context("read conversations_by_bot")?;
                let (bot, conversation) = key.value();
                if bot != id.as_str() {
                    break;
                }
                ids.push(conversation.to_string());
            }
            ids
        };
        delete_conversations_in(&txn, &conversations)?;
        events::delete_bot_in(&txn, id)?;
        // A bot made later under the same id starts with no key or agent granted it.
        rewrite_in(&txn, KEYS, |key: &mut ApiKey| match &mut key.scope {
            crate::keys::KeyScope::Bots(bots) => without(bots, id),
            crate::keys::KeyScope::Admin => false,
        })?;
        accounts::forget_bot_in(&txn, id)?;
        txn.open_table(ERASED)
            .context("open erased")?
            .insert(bot_erasure(id.as_str()).as_str(), now_ms())
            .context("write erasure")?;
        {
            let mut bots = txn.open_table(BOTS).context("open bots")?;
            let mut pages = txn.open_table(PAGES).context("open pages")?;
            let mut chunks = txn.open_table(CHUNKS).context("open chunks")?;
            let mut vectors = txn.open_table(VECTORS).context("open vectors")?;
            let mut existing: Vec<Page> = Vec::new();
            for entry in pages.range((id.as_str(), "")..).context("range pages")? {
                let (key, raw) = entry.context("read page")?;
                if key.value().0 != id.as_str() {
                    break;
                }
                existing.push(decode(raw.value())?);
            }
            for page in existing {
                pages
                    .remove((id.as_str(), page.url.as_str()))
                    .context("remove page")?;
                for chunk_id in page.chunk_ids {
                    chunks.remove(chunk_id).context("remove chunk")?;
                    vectors.remove(chunk_id).context("remove vector")?;
                }
            }
            bots.remove(id.as_str()).context("remove bot")?;
        }
        txn.commit().context("failed to commit delete")?;
        Ok(conversations)
    }

    fn pages(&self, bot: &BotId) -> Result<Vec<Page>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(PAGES).context("open pages")?;
        let mut pages = Vec::new();
        let range = table.range((bot.as_str(), "")..).context("range pages")?;
        for entry in range {
            let (key, raw) = entry.context("read page")?;
            if key.value().0 != bot.as_str() {
                break;
            }
            pages.push(decode(raw.value())?);
        }
        Ok(pages)
    }

    fn vectors(&self, bot: &BotId) -> Result<Vec<(u64, Vec<f32>)>> {
        let pages = self.pages(bot)?;
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(VECTORS).context("open vectors")?;
        let mut out = Vec::new();
        for chunk_id in pages.iter().flat_map(|p| p.chunk_ids.iter()) {
            let raw = table
                .get(*chunk_id)
                .context("read vector")?
                .with_context(|| format!("chunk {chunk_id} has no vector"))?;
            out.push((*chunk_id, bytes_to_vector(raw.value())));
        }
        Ok(out)
    }

    fn vectors_of(&self, ids: &[u64]) -> Result<Vec<Vec<f32>>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(VECTORS).context("open vectors")?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let raw = table
                .get(*id)
                .context("read vector")?
                .with_context(|| format!("chunk {id} has no vector"))?;
            out.push(bytes_to_vector(raw.value()));
        }
        Ok(out)
    }

    fn bot_chunks(&self, bot: &BotId) -> Result<Vec<(u64, Chunk)>> {
        let ids: Vec<u64> = self
            .pages(bot)?
            .iter()
            .flat_map(|p| p.chunk_ids.iter().copied())
            .collect();
        let chunks = self.chunks(&ids)?;
        Ok(ids.into_iter().zip(chunks).collect())
    }

    fn chunks(&self, ids: &[u64]) -> Result<Vec<Chunk>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(CHUNKS).context("open chunks")?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let raw = table
                .get(*id)
                .context("read chunk")?
                .with_context(|| format!("chunk {id} is missing"))?;
            out.push(decode(raw.value())?);
        }
        Ok(out)
    }

    fn stage_chunks(&self, ingest: &str, batch: &[(Chunk, Vec<f32>)]) -> Result<Vec<u64>> {
        let txn = self.db.begin_write().context("begin write")?;
        let ids = {
            let mut chunks = txn.open_table(CHUNKS).context("open chunks")?;
            let mut vectors = txn.open_table(VECTORS).context("open vectors")?;
            let mut staged = txn.open_table(STAGED).context("open staged_chunks")?;
            let mut meta = txn.open_table(META).context("open meta")?;
            let first = meta
                .get(NEXT_CHUNK_ID)
                .context("read chunk counter")?
                .map(|v| v.value())
                .unwrap_or(1);
            let ids: Vec<u64> = (first..first + batch.len() as u64).collect();
            for ((chunk, vector), id) in batch.iter().zip(&ids) {
                chunks
                    .insert(*id, encode(chunk)?.as_slice())
                    .context("insert chunk")?;
                vectors
                    .insert(*id, vector_to_bytes(vector).as_slice())
                    .context("insert vector")?;
                staged
                    .insert((ingest, *id), ())
                    .context("insert staged chunk")?;
            }
            meta.insert(NEXT_CHUNK_ID, first + batch.len() as u64)
                .context("write chunk counter")?;
            ids
        };
        txn.commit().context("failed to commit staged chunks")?;
        Ok(ids)
    }

    fn discard_staged(&self, ingest: Option<&str>) -> Result<usize> {
        let txn = self.db.begin_write().context("begin write")?;
        let removed = discard_staged_in(&txn, ingest)?;
        txn.commit().context("failed to commit discarded chunks")?;
        Ok(removed)
    }

    fn staged_chunks(&self) -> Result<u64> {
        let txn = self.db.begin_read().context("begin read")?;
        let staged = txn.open_table(STAGED).context("open staged_chunks")?;
        Ok(redb::ReadableTableMetadata::len(&staged).context("count staged chunks")?)
    }

    fn commit_ingest(&self, commit: IngestCommit) -> Result<()> {
        let bot = commit.bot.id.as_str();
        let txn = self.db.begin_write().context("begin write")?;
        {
            let mut bots = txn.open_table(BOTS).context("open bots")?;
            let mut pages = txn.open_table(PAGES).context("open pages")?;
            let mut chunks = txn.open_table(CHUNKS).context("open chunks")?;
            let mut vectors = txn.open_table(VECTORS).context("open vectors")?;
            let mut staged = txn.open_table(STAGED).context("open staged_chunks")?;
            let ingest = commit.ingest.as_str();

            let replaced = commit
                .upserts
                .iter()
                .map(|page| page.url.clone())
                .chain(commit.removed_urls.iter().cloned());
            for url in replaced {
                let old = pages.remove((bot, url.as_str())).context("remove page")?;
                if let Some(old) = old {
                    let old: Page = decode(old.value())?;
                    for id in old.chunk_ids {
                        chunks.remove(id).context("remove chunk")?;
                        vectors.remove(id).context("remove vector")?;
                    }
                }
            }
            for page in commit.upserts.iter().chain(&commit.touched) {
                pages
                    .insert((bot, page.url.as_str()), encode(page)?.as_slice())
                    .context("write page")?;
            }
            // The staged chunks are the pages' now.
            for id in commit.upserts.iter().flat_map(|p| &p.chunk_ids) {
                staged
                    .remove((ingest, *id))
                    .context("remove staged chunk")?;
            }
            // Settings changed while the ingest ran (over the API) win over its snapshot,
            // and the counts are the pages' as they stand after this commit (a curated
            // answer written during a crawl counts once).
            let mut record = commit.bot.clone();
            let (n_pages, n_chunks) = count_pages(&pages, bot)?;
            record.pages = n_pages;
            record.chunks = n_chunks;
            if n_chunks == 0 {
                record.embedder = None;
            }
            let current = bots
                .get(bot)
                .context("read bot")?
                .map(|raw| raw.value().to_vec());
            match current {
                Some(current) => {
                    let current: Bot = decode(&current)?;
                    record.settings = current.settings;
                    record.test = current.test;
                }
                // Deleted while the run went on: it stays deleted (the run's staged
                // chunks are discarded by its caller).
                None if commit.bot_existed => {
                    return Err(Error::BotNotFound(commit.bot.id.clone()));
                }
                None => {}
            }
            bots.insert(bot, encode(&record)?.as_slice())
                .context("write bot")?;
        }
        // Anything else the run staged (nothing, unless a page was dropped) goes.
        discard_staged_in(&txn, Some(&commit.ingest))?;
        crate::telemetry::failpoint("commit");
        txn.commit().context("failed to commit ingest")?;
        Ok(())
    }
}

/// A bot's pages and their chunks, as `pages` holds them now.
fn count_pages(pages: &redb::Table<(&str, &str), &[u8]>, bot: &str) -> Result<(u64, u64)> {
    let (mut n_pages, mut n_chunks) = (0u64, 0u64);
    for entry in pages.range((bot, "")..).context("range pages")? {
        let (key, raw) = entry.context("read page")?;
        if key.value().0 != bot {
            break;
        }
        let page: Page = decode(raw.value())?;
        n_pages += 1;
        n_chunks += page.chunk_ids.len() as u64;
    }
    Ok((n_pages, n_chunks))
}

/// One process holds the database: nothing to tell other nodes.
impl Storage for Store {
    fn export(&self) -> Option<&dyn crate::ports::Export> {
        Some(self)
    }
}

impl KeyStore for Store {
    fn put_key(&self, key: &ApiKey) -> Result<()> {
        let txn = self.db.begin_write().context("begin write")?;
        {
            let mut keys = txn.open_table(KEYS).context("open keys")?;
            keys.insert(key.id.as_str(), encode(key)?.as_slice())
                .context("write key")?;
        }
        txn.commit().context("failed to commit key")?;
        Ok(())
    }

    fn shared_secrets(&self, name: &str, fresh: &[u8]) -> Result<SecretRing> {
        {
            let txn = self.db.begin_read().context("begin read")?;
            let secrets = txn.open_table(SECRETS).context("open secrets")?;
            if let Some(ring) = read_ring(&secrets, name)? {
                return Ok(ring);
            }
        }
        let txn = self.db.begin_write().context("begin write")?;
        let ring = {
            let mut secrets = txn.open_table(SECRETS).context("open secrets")?;
            match read_ring(&secrets, name)? {
                Some(ring) => ring,
                None => {
                    secrets.insert(name, fresh).context("write secret")?;
                    SecretRing {
                        current: fresh.to_vec(),
                        previous: None,
                    }
                }
            }
        };
        txn.commit().context("failed to commit secret")?;
        Ok(ring)
    }

    fn rotate_secret(&self, name: &str, fresh: &[u8], previous_until: u64) -> Result<SecretRing> {
        let txn = self.db.begin_write().context("begin write")?;
        let previous_name = SecretRing::previous_name(name);
        let ring = {
            let mut secrets = txn.open_table(SECRETS).context("open secrets")?;
            let current = secrets
                .get(name)
                .context("read secret")?
                .map(|v| v.value().to_vec());
            let previous = current.map(|secret| (secret, previous_until));
            match &previous {
                Some((secret, until)) => {
                    let value = SecretRing::encode_previous(secret, *until);
                    secrets
                        .insert(previous_name.as_str(), value.as_slice())
                        .context("write previous secret")?;
                }
                None => {
                    secrets
                        .remove(previous_name.as_str())
                        .context("drop previous secret")?;
                }
            }
            secrets.insert(name, fresh).context("write secret")?;
            SecretRing {
                current: fresh.to_vec(),
                previous,
            }
        };
        txn.commit()
            .context("failed to commit the rotated secret")?;
        Ok(ring)
    }

    fn put_first_key(&self, key: &ApiKey) -> Result<bool> {
        let txn = self.db.begin_write().context("begin write")?;
        {
            let mut keys = txn.open_table(KEYS).context("open keys")?;
            if !keys.is_empty().context("read keys")? {
                return Ok(false);
            }
            keys.insert(key.id.as_str(), encode(key)?.as_slice())
                .context("write key")?;
        }
        txn.commit().context("failed to commit key")?;
        Ok(true)
    }

    fn put_keys(&self, records: &[&ApiKey]) -> Result<()> {
        let txn = self.db.begin_write().context("begin write")?;
        {
            let mut keys = txn.open_table(KEYS).context("open keys")?;
            for key in records {
                keys.insert(key.id.as_str(), encode(key)?.as_slice())
                    .context("write key")?;
            }
        }
        txn.commit().context("failed to commit keys")?;
        Ok(())
    }

    fn get_key(&self, id: &str) -> Result<ApiKey> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(KEYS).context("open keys")?;
        let raw = table.get(id).context("read key")?;
        match raw {
            Some(raw) => decode(raw.value()),
            None => Err(Error::KeyNotFound(id.to_string())),
        }
    }

    fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(KEYS).context("open keys")?;
        let mut out = Vec::new();
        for entry in table.iter().context("iterate keys")? {
            let (_, raw) = entry.context("read key")?;
            out.push(decode(raw.value())?);
        }
        Ok(out)
    }
}

impl ConversationStore for Store {
    fn get_conversation(&self, id: &str) -> Result<Conversation> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn
            .open_table(CONVERSATIONS)
            .context("open conversations")?;
        let raw = table.get(id).context("read conversation")?;
        match raw {
            Some(raw) => decode(raw.value()),
            None => Err(Error::ConversationNotFound(id.to_string())),
        }
    }

    fn list_conversations(
        &self,
        bot: Option<&BotId>,
        user: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Conversation>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn
            .open_table(CONVERSATIONS)
            .context("open conversations")?;
        let mut out = Vec::new();
        let mut keep = |conversation: Conversation| {
            if bot.is_some_and(|b| &conversation.bot_id != b)
                || user.is_some_and(|u| conversation.user_id.as_deref() != Some(u))
            {
                return false;
            }
            out.push(conversation);
            out.len() == limit
        };
        let index = match (user, bot) {
            (Some(user), _) => Some((CONVERSATIONS_BY_USER, user)),
            (None, Some(bot)) => Some((CONVERSATIONS_BY_BOT, bot.as_str())),
            (None, None) => None,
        };
        if let Some((definition, owner)) = index {
            let index = txn
                .open_table(definition)
                .context("open conversation index")?;
            let from = match after {
                Some(after) => std::ops::Bound::Excluded((owner, after)),
                None => std::ops::Bound::Included((owner, "")),
            };
            for entry in index
                .range::<(&str, &str)>((from, std::ops::Bound::Unbounded))
                .context("range conversation index")?
            {
                let (key, _) = entry.context("read conversation index")?;
                let (entry_owner, id) = key.value();
                if entry_owner != owner {
                    break;
                }
                let Some(raw) = table.get(id).context("read conversation")? else {
                    continue;
                };
                if keep(decode(raw.value())?) {
                    break;
                }
            }
            return Ok(out);
        }
        let range = match after {
            Some(after) => {
                table.range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            }
            None => table.range::<&str>(..),
        }
        .context("range conversations")?;
        for entry in range {
            let (_, raw) = entry.context("read conversation")?;
            if keep(decode(raw.value())?) {
                break;
            }
        }
        Ok(out)
    }

    fn messages(&self, conversation: &str) -> Result<Vec<Message>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(MESSAGES).context("open messages")?;
        let mut out = Vec::new();
        for entry in table
            .range((conversation, 0u32)..=(conversation, u32::MAX))
            .context("range messages")?
        {
            let (_, raw) = entry.context("read message")?;
            out.push(decode(raw.value())?);
        }
        Ok(out)
    }

    fn append_messages(&self, conversation: &Conversation, messages: &[Message]) -> Result<()> {
        self.append_turn(conversation, messages, TurnExtras::default())?;
        Ok(())
    }

    fn append_turn(
        &self,
        conversation: &Conversation,
        messages: &[Message],
        mut extras: TurnExtras,
    ) -> Result<Appended> {
        let id = conversation.id.as_str();
        let txn = self.db.begin_write().context("begin write")?;
        if was_erased(&txn, conversation, extras.started_ms)? {
            return Err(Error::ConversationNotFound(id.to_string()));
        }
        let mut wrote_events = false;
        let settled;
        let first_position;
        {
            let mut conversations = txn
                .open_table(CONVERSATIONS)
                .context("open conversations")?;
            let previous: Option<Conversation> = conversations
                .get(id)
                .context("read conversation")?
                .map(|raw| decode(raw.value()))
                .transpose()?;
            let mut table = txn.open_table(MESSAGES).context("open messages")?;
            let next = table
                .range((id, 0u32)..=(id, u32::MAX))
                .context("range messages")?
                .next_back()
                .transpose()
                .context("read last message")?
                .map_or(0, |(key, _)| key.value().1 + 1);
            first_position = next;
            // The rules are the domain's; this writes what they decide.
            let mut lookup_failed = None;
            settled = conversation.clone().settle_turn(
                previous.as_ref(),
                messages.to_vec(),
                extras.lead.take(),
                next,
                || match last_question(&table, id, next) {
                    Ok(found) => found,
                    Err(e) => {
                        lookup_failed = Some(e);
                        None
                    }
                },
            );
            if let Some(e) = lookup_failed {
                return Err(e);
            }
            let record = &settled.record;
            for (i, message) in settled.messages.iter().enumerate() {
                table
                    .insert((id, next + i as u32), encode(message)?.as_slice())
                    .context("write message")?;
            }
            feedback::index_messages(&txn, id, next, &settled.messages)?;
            if let Some(lead) = &settled.lead {
                events::put_lead_in(&txn, lead)?;
            }
            for event in NewEvent::of_turn(&settled, extras.events) {
                events::emit(&txn, &record.bot_id, event)?;
                wrote_events = true;
            }
            conversations
                .insert(id, encode(record)?.as_slice())
                .context("write conversation")?;
            let mut by_bot = txn
                .open_table(CONVERSATIONS_BY_BOT)
                .context("open conversations_by_bot")?;
            let mut by_user = txn
                .open_table(CONVERSATIONS_BY_USER)
                .context("open conversations_by_user")?;
            index_conversation(&mut by_bot, &mut by_user, record)?;
        }
        crate::telemetry::failpoint("turn_commit");
        txn.commit().context("failed to commit messages")?;
        if wrote_events {
            self.outbox_written();
        }
        Ok(Appended {
            conversation: settled.record,
            first_position,
            messages: settled.messages,
            reply_dropped: settled.reply_dropped,
        })
    }

    fn put_lead(&self, lead: &Lead, started_ms: u64) -> Result<()> {
        let txn = self.db.begin_write().context("begin write")?;
        let bot_exists = txn
            .open_table(BOTS)
            .context("open bots")?
            .get(lead.bot_id.as_str())
            .context("read bot")?
            .is_some();
        if !bot_exists {
            return Err(Error::BotNotFound(lead.bot_id.clone()));
        }
        if let Some(user) = &lead.user_id {
            let erased = txn.open_table(ERASED).context("open erased")?;
            let at = erased
                .get(user_erasure(lead.bot_id.as_str(), user).as_str())
                .context("read erasure")?
                .map(|v| v.value());
            if at.is_some_and(|at| at >= started_ms) {
                return Err(Error::ConversationNotFound(format!("user {user}")));
            }
        }
        events::put_lead_in(&txn, lead)?;
        events::emit(&txn, &lead.bot_id, NewEvent::lead_captured(lead))?;
        txn.commit().context("failed to commit lead")?;
        self.outbox_written();
        Ok(())
    }

    fn release_conversation(
        &self,
        id: &str,
        to: crate::domain::ConversationState,
        now: u64,
    ) -> Result<(Conversation, bool)> {
        let txn = self.db.begin_write().context("begin write")?;
        let (record, changed) = {
            let mut conversations = txn
                .open_table(CONVERSATIONS)
                .context("open conversations")?;
            let mut record: Conversation =
                match conversations.get(id).context("read conversation")? {
                    Some(raw) => decode(raw.value())?,
                    None => return Err(Error::ConversationNotFound(id.to_string())),
                };
            let changed = record.release(to, now);
            if changed {
                conversations
                    .insert(id, encode(&record)?.as_slice())
                    .context("write conversation")?;
            }
            (record, changed)
        };
        txn.commit().context("failed to commit release")?;
        Ok((record, changed))
    }

    fn message_conversation(&self, message: &str) -> Result<Option<String>> {
        self.find_message(message)
    }

    fn rate_message(
        &self,
        message: &str,
        feedback: &crate::domain::Feedback,
    ) -> Result<crate::ports::Rated> {
        self.rate(message, feedback)
    }

    fn delete_conversations(&self, ids: &[String]) -> Result<usize> {
        let txn = self.db.begin_write().context("begin write")?;
        let deleted = delete_conversations_in(&txn, ids)?;
        txn.commit().context("failed to commit delete")?;
        Ok(deleted)
    }

    fn erase_user(&self, user: &str, bots: &[BotId]) -> Result<Erased> {
        let txn = self.db.begin_write().context("begin write")?;
        let conversations = {
            let by_user = txn
                .open_table(CONVERSATIONS_BY_USER)
                .context("open conversations_by_user")?;
            let records = txn
                .open_table(CONVERSATIONS)
                .context("open conversations")?;
            let mut ids = Vec::new();
            for entry in by_user
                .range((user, "")..)
                .context("range conversations_by_user")?
            {
                let (key, _) = entry.context("read conversations_by_user")?;
                let (owner, id) = key.value();
                if owner != user {
                    break;
                }
                let Some(raw) = records.get(id).context("read conversation")? else {
                    continue;
                };
                let conversation: Conversation = decode(raw.value())?;
                if bots.contains(&conversation.bot_id) {
                    ids.push(id.to_string());
                }
            }
            ids
        };
        delete_conversations_in(&txn, &conversations)?;
        let leads = events::delete_user_leads_in(&txn, user, bots)?;
        {
            let mut erased = txn.open_table(ERASED).context("open erased")?;
            let now = now_ms();
            for bot in bots {
                erased
                    .insert(user_erasure(bot.as_str(), user).as_str(), now)
                    .context("write erasure")?;
            }
        }
        txn.commit().context("failed to commit erasure")?;
        Ok(Erased {
            conversations,
            leads,
        })
    }

    fn leads(&self, bot: &BotId, after: Option<&str>, limit: usize) -> Result<Vec<Lead>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(LEADS).context("open leads")?;
        let from = match after {
            Some(after) => std::ops::Bound::Excluded((bot.as_str(), after)),
            None => std::ops::Bound::Included((bot.as_str(), "")),
        };
        let mut out = Vec::new();
        for entry in table
            .range::<(&str, &str)>((from, std::ops::Bound::Unbounded))
            .context("range leads")?
        {
            let (key, raw) = entry.context("read lead")?;
            if key.value().0 != bot.as_str() || out.len() == limit {
                break;
            }
            out.push(decode(raw.value())?);
        }
        Ok(out)
    }
}

impl JobStore for Store {
    fn put_job(&self, job: &CrawlJob) -> Result<()> {
        let txn = self.db.begin_write().context("begin write")?;
        {
            let mut table = txn.open_table(JOBS).context("open jobs")?;
            table
                .insert(job.id.as_str(), encode(job)?.as_slice())
                .context("write job")?;
            if !job.state.unfinished() {
                let mut uploads = txn.open_table(UPLOADS).context("open uploads")?;
                let id = job.id.as_str();
                uploads
                    .retain_in((id, "")..=(id, "\u{10ffff}"), |_, _| false)
                    .context("drop uploaded documents")?;
            }
        }
        txn.commit().context("failed to commit job")?;
        Ok(())
    }

    fn put_upload(&self, job: &CrawlJob, files: &[UploadedFile]) -> Result<()> {
        let txn = self.db.begin_write().context("begin write")?;
        {
            let mut table = txn.open_table(JOBS).context("open jobs")?;
            table
                .insert(job.id.as_str(), encode(job)?.as_slice())
                .context("write job")?;
            let mut uploads = txn.open_table(UPLOADS).context("open uploads")?;
            for file in files {
                uploads
                    .insert((job.id.as_str(), file.name.as_str()), file.bytes.as_slice())
                    .context("write uploaded document")?;
            }
        }
        txn.commit().context("failed to commit upload")?;
        Ok(())
    }

    fn upload_files(&self, job: &str) -> Result<Vec<UploadedFile>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(UPLOADS).context("open uploads")?;
        let mut out = Vec::new();
        for entry in table
            .range((job, "")..=(job, "\u{10ffff}"))
            .context("range uploads")?
        {
            let (key, bytes) = entry.context("read uploaded document")?;
            out.push(UploadedFile {
                name: key.value().1.to_string(),
                bytes: bytes.value().to_vec(),
            });
        }
        Ok(out)
    }

    fn get_job(&self, id: &str) -> Result<Option<CrawlJob>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(JOBS).context("open jobs")?;
        let raw = table.get(id).context("read job")?;
        raw.map(|raw| decode(raw.value())).transpose()
    }

    fn jobs(&self) -> Result<Vec<CrawlJob>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(JOBS).context("open jobs")?;
        let mut out = Vec::new();
        for entry in table.iter().context("scan jobs")? {
            let (_, raw) = entry.context("read job")?;
            out.push(decode(raw.value())?);
        }
        Ok(out)
    }

    fn adopt_jobs(&self) -> Result<Vec<CrawlJob>> {
        // This process holds the database: what is unfinished when it first asks is a
        // stopped process's; later, only its own jobs are unfinished.
        if self.adopted.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        let mut unfinished: Vec<CrawlJob> = self
            .jobs()?
            .into_iter()
            .filter(|j| j.state.unfinished())
            .collect();
        unfinished.sort_by_key(|j| j.created);
        Ok(unfinished)
    }
}

fn user_erasure(bot: &str, user: &str) -> String {
    format!("user\0{bot}\0{user}")
}

fn conversation_erasure(id: &str) -> String {
    format!("conv\0{id}")
}

/// Takes `bot` out of `bots`; whether it was there.
fn without(bots: &mut Vec<BotId>, bot: &BotId) -> bool {
    let before = bots.len();
    bots.retain(|b| b != bot);
    bots.len() != before
}

/// Rewrites, in `txn`, each record of `table` that `change` changes (returns true for);
/// how many.
fn rewrite_in<T: serde::Serialize + serde::de::DeserializeOwned>(
    txn: &redb::WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    change: impl Fn(&mut T) -> bool,
) -> Result<usize> {
    let mut table = txn.open_table(table).context("open table")?;
    let mut changed: Vec<(String, T)> = Vec::new();
    for entry in table.iter().context("iterate table")? {
        let (key, raw) = entry.context("read record")?;
        let mut record: T = decode(raw.value())?;
        if change(&mut record) {
            changed.push((key.value().to_string(), record));
        }
    }
    for (key, record) in &changed {
        table
            .insert(key.as_str(), encode(record)?.as_slice())
            .context("rewrite record")?;
    }
    Ok(changed.len())
}

fn bot_erasure(bot: &str) -> String {
    format!("bot\0{bot}")
}

/// Whether a turn of `conversation` (begun at `started_ms`) comes after its erasure, or
/// after its bot's deletion.
fn was_erased(
    txn: &redb::WriteTransaction,
    conversation: &Conversation,
    started_ms: Option<u64>,
) -> Result<bool> {
    let erased = txn.open_table(ERASED).context("open erased")?;
    let at = |key: String| -> Result<Option<u64>> {
        Ok(erased
            .get(key.as_str())
            .context("read erasure")?
            .map(|v| v.value()))
    };
    if at(conversation_erasure(&conversation.id))?.is_some() {
        return Ok(true);
    }
    let Some(started) = started_ms else {
        return Ok(false);
    };
    let since = |erased: Option<u64>| erased.is_some_and(|at| at >= started);
    let bot = conversation.bot_id.as_str();
    Ok(since(at(bot_erasure(bot))?)
        || match &conversation.user_id {
            Some(user) => since(at(user_erasure(bot, user))?),
            None => false,
        })
}

/// Creates the data dir (and any missing parents) readable only by its owner: it holds
/// webhook secrets and visitors' messages. An existing one is left as the operator made it.
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("failed to create data dir {}", dir.display()))?;
    Ok(())
}

/// Creates the database file with mode 0600 before redb opens it, and tightens an older
/// one's mode to that.
fn create_private_file(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options
            .open(path)
            .with_context(|| format!("failed to create database {}", path.display()))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("failed to restrict {}", path.display()))?;
    }
    #[cfg(not(unix))]
    options
        .open(path)
        .with_context(|| format!("failed to create database {}", path.display()))?;
    Ok(())
}

/// Removes staged chunks (one ingest's, or all) with their vectors, within `txn`.
fn discard_staged_in(txn: &redb::WriteTransaction, ingest: Option<&str>) -> Result<usize> {
    let mut staged = txn.open_table(STAGED).context("open staged_chunks")?;
    let entries = match ingest {
        Some(ingest) => staged.range((ingest, 0)..=(ingest, u64::MAX)),
        None => staged.range::<(&str, u64)>(..),
    }
    .context("range staged_chunks")?;
    let mut gone: Vec<(String, u64)> = Vec::new();
    for entry in entries {
        let (key, _) = entry.context("read staged chunk")?;
        let (owner, id) = key.value();
        gone.push((owner.to_string(), id));
    }
    let mut chunks = txn.open_table(CHUNKS).context("open chunks")?;
    let mut vectors = txn.open_table(VECTORS).context("open vectors")?;
    for (owner, id) in &gone {
        chunks.remove(*id).context("remove chunk")?;
        vectors.remove(*id).context("remove vector")?;
        staged
            .remove((owner.as_str(), *id))
            .context("remove staged chunk")?;
    }
    Ok(gone.len())
}

type Index<'t> = redb::Table<'t, (&'static str, &'static str), ()>;

/// Adds a conversation to the by-bot and by-user indexes.
fn index_conversation(
    by_bot: &mut Index<'_>,
    by_user: &mut Index<'_>,
    conversation: &Conversation,
) -> Result<()> {
    let id = conversation.id.as_str();
    by_bot
        .insert((conversation.bot_id.as_str(), id), ())
        .context("write conversations_by_bot")?;
    if let Some(user) = &conversation.user_id {
        by_user
            .insert((user.as_str(), id), ())
            .context("write conversations_by_user")?;
    }
    Ok(())
}

/// Removes conversations, their messages, their index entries and their events within
/// `txn` (events carry what visitors wrote), and remembers that they were erased (for a
/// day; older memories go now).
fn delete_conversations_in(txn: &redb::WriteTransaction, ids: &[String]) -> Result<usize> {
    {
        let mut erased = txn.open_table(ERASED).context("open erased")?;
        let now = now_ms();
        erased
            .retain(|_, at| at + crate::ports::ERASURES_KEPT_MS > now)
            .context("prune erasures")?;
        for id in ids {
            erased
                .insert(conversation_erasure(id).as_str(), now)
                .context("write erasure")?;
        }
    }
    if !ids.is_empty() {
        let erased: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        events::erase_events_in(txn, |_, data| {
            data.get("conversation_id")
                .and_then(|c| c.as_str())
                .is_some_and(|c| erased.contains(c))
        })?;
    }
    let mut deleted = 0;
    let mut conversations = txn
        .open_table(CONVERSATIONS)
        .context("open conversations")?;
    let mut by_bot = txn
        .open_table(CONVERSATIONS_BY_BOT)
        .context("open conversations_by_bot")?;
    let mut by_user = txn
        .open_table(CONVERSATIONS_BY_USER)
        .context("open conversations_by_user")?;
    for id in ids {
        let removed = conversations
            .remove(id.as_str())
            .context("remove conversation")?
            .map(|raw| decode::<Conversation>(raw.value()))
            .transpose()?;
        if let Some(conversation) = removed {
            deleted += 1;
            by_bot
                .remove((conversation.bot_id.as_str(), id.as_str()))
                .context("remove conversations_by_bot")?;
            if let Some(user) = &conversation.user_id {
                by_user
                    .remove((user.as_str(), id.as_str()))
                    .context("remove conversations_by_user")?;
            }
        }
        feedback::remove_messages(txn, id)?;
    }
    Ok(deleted)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(value).context("failed to encode record")?)
}

fn decode<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T> {
    Ok(serde_json::from_slice(raw).context("failed to decode record")?)
}

fn vector_to_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_to_vector(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The content of the last visitor message stored before position `before`.
fn last_question(
    table: &redb::Table<(&str, u32), &[u8]>,
    id: &str,
    before: u32,
) -> Result<Option<String>> {
    for entry in table
        .range((id, 0u32)..(id, before))
        .context("range messages")?
        .rev()
    {
        let (_, raw) = entry.context("read message")?;
        let stored: Message = decode(raw.value())?;
        if stored.role == Role::User {
            return Ok(Some(stored.content));
        }
    }
    Ok(None)
}

/// The secret `name` and its previous one from the secrets table, if it exists.
fn read_ring(
    secrets: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<SecretRing>> {
    let Some(current) = secrets.get(name).context("read secret")? else {
        return Ok(None);
    };
    let previous = secrets
        .get(SecretRing::previous_name(name).as_str())
        .context("read previous secret")?
        .and_then(|v| SecretRing::decode_previous(v.value()));
    Ok(Some(SecretRing {
        current: current.value().to_vec(),
        previous,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::conversation;

    fn ids(list: Vec<Conversation>) -> Vec<String> {
        list.into_iter().map(|c| c.id).collect()
    }

    #[test]
    fn an_ingest_of_a_bot_deleted_while_it_ran_does_not_bring_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = BotId::parse("docs").unwrap();
        let bot = crate::domain::fixtures::bot("docs");
        store.create_bot(&bot).unwrap();
        let chunk = Chunk {
            bot: id.clone(),
            url: "https://docs.example/a".into(),
            title: "A".into(),
            heading_path: Vec::new(),
            text: "text".into(),
        };
        let ids = store
            .stage_chunks("ing_1", &[(chunk, vec![0.0; 4])])
            .unwrap();
        store.delete_bot(&id).unwrap();
        let page = Page {
            url: "https://docs.example/a".into(),
            title: "A".into(),
            content_hash: "h".into(),
            body_hash: "b".into(),
            etag: None,
            last_modified: None,
            links: Vec::new(),
            chunk_ids: ids,
            crawled: None,
            source: None,
        };
        let commit = IngestCommit {
            ingest: "ing_1".into(),
            bot,
            bot_existed: true,
            upserts: vec![page],
            touched: Vec::new(),
            removed_urls: Vec::new(),
        };
        assert!(matches!(
            store.commit_ingest(commit),
            Err(Error::BotNotFound(_))
        ));
        assert!(matches!(store.get_bot(&id), Err(Error::BotNotFound(_))));
        assert!(store.pages(&id).unwrap().is_empty());
        assert_eq!(store.discard_staged(Some("ing_1")).unwrap(), 1);
        assert_eq!(store.staged_chunks().unwrap(), 0);
    }

    #[test]
    fn conversations_are_listed_by_user_and_bot_from_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (id, bot, user) in [
            ("conv_a", "docs", Some("u1")),
            ("conv_b", "shop", Some("u1")),
            ("conv_c", "docs", Some("u2")),
            ("conv_d", "docs", None),
        ] {
            store
                .append_messages(&conversation(id, bot, user), &[])
                .unwrap();
        }
        let docs = BotId::parse("docs").unwrap();
        assert_eq!(
            ids(store
                .list_conversations(None, Some("u1"), None, 10)
                .unwrap()),
            ["conv_a", "conv_b"]
        );
        assert_eq!(
            ids(store
                .list_conversations(Some(&docs), Some("u1"), None, 10)
                .unwrap()),
            ["conv_a"]
        );
        assert_eq!(
            ids(store
                .list_conversations(Some(&docs), None, None, 2)
                .unwrap()),
            ["conv_a", "conv_c"]
        );
        assert_eq!(
            ids(store
                .list_conversations(Some(&docs), None, Some("conv_c"), 10)
                .unwrap()),
            ["conv_d"]
        );
        // A user named like a prefix of another sees only their own.
        assert!(
            store
                .list_conversations(None, Some("u"), None, 10)
                .unwrap()
                .is_empty()
        );
        store.delete_conversations(&["conv_a".into()]).unwrap();
        assert_eq!(
            ids(store
                .list_conversations(None, Some("u1"), None, 10)
                .unwrap()),
            ["conv_b"]
        );
    }

    #[test]
    fn a_database_from_before_the_indexes_gets_them_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .append_messages(&conversation("conv_old", "docs", Some("u1")), &[])
                .unwrap();
            // Undo what the indexes know, as a database made before them would be.
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(CONVERSATIONS_BY_BOT).unwrap();
            txn.delete_table(CONVERSATIONS_BY_USER).unwrap();
            txn.open_table(META)
                .unwrap()
                .remove(CONVERSATION_INDEX_BUILT)
                .unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            ids(store
                .list_conversations(None, Some("u1"), None, 10)
                .unwrap()),
            ["conv_old"]
        );
        let docs = BotId::parse("docs").unwrap();
        store.delete_bot(&docs).ok();
        assert_eq!(
            ids(store
                .list_conversations(Some(&docs), None, None, 10)
                .unwrap()),
            ["conv_old"],
            "deleting a bot that does not exist touches nothing"
        );
    }
}
