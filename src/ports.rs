//! The ports docent's state lives behind: storage cut by aggregate (a bot's content, its
//! conversations and leads, API keys, the webhook outbox, crawl jobs, operator accounts) and search over a
//! bot's chunks, with the records they carry. The core (services, ingest, retrieval, the
//! delivery worker, analytics) names these traits, never an engine; `store` (redb) and
//! `search` (HNSW and BM25 in process) are the adapters a node is built with.
//!
//! Every method that writes is one transaction of the engine: all of it is visible
//! afterwards, or none. The rules of what a write keeps and announces (a turn's handoff,
//! lead and events) are the domain's (`Conversation::settle_turn`), so every engine writes
//! the same decisions.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::accounts::{Account, Session};
use crate::domain::{
    Bot, BotId, Chunk, Conversation, CrawlJob, Feedback, Lead, Message, Page, UploadedFile,
};
use crate::keys::ApiKey;

mod records;
pub use records::{
    Appended, Attempt, Delivery, DueDelivery, ERASURES_KEPT_MS, Erased, Event, IngestCommit,
    NewEvent, Outcome, Rated, TurnExtras, Webhook,
};

/// What a storage port fails with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bot {0} not found")]
    BotNotFound(BotId),
    #[error(
        "the database in {0} is in use by another docent process (is `docent serve` running on it?)"
    )]
    Locked(PathBuf),
    #[error("bot {0} already exists")]
    BotExists(BotId),
    #[error("conversation {0} not found")]
    ConversationNotFound(String),
    #[error("key {0} not found")]
    KeyNotFound(String),
    #[error("an account with the email {0} already exists")]
    AccountExists(String),
    #[error("message {0} not found")]
    MessageNotFound(String),
    #[error("message {0} is not an answer of the bot")]
    NotAnAnswer(String),
    /// The store cannot be reached now (a database restarting, a network down): worth
    /// retrying shortly.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Bots and their content: settings, pages, chunks and vectors, and an ingest's staging
/// and commit.
pub trait ContentStore: Send + Sync {
    /// A bot (`Error::BotNotFound` when there is none).
    fn get_bot(&self, id: &BotId) -> Result<Bot>;

    /// Every bot, in id order.
    fn list_bots(&self) -> Result<Vec<Bot>>;

    /// Creates a bot with no content; fails if the id is taken.
    fn create_bot(&self, bot: &Bot) -> Result<()>;

    /// Reads, changes and writes a bot in one transaction.
    fn update_bot(&self, id: &BotId, change: &mut dyn FnMut(&mut Bot)) -> Result<Bot>;

    /// Deletes a bot with all its pages, chunks, vectors and conversations, and takes it
    /// out of every key's and agent's bots, in one transaction; returns the ids of the
    /// conversations it erased.
    fn delete_bot(&self, id: &BotId) -> Result<Vec<String>>;

    /// The bot's pages, keyed by URL.
    fn pages(&self, bot: &BotId) -> Result<Vec<Page>>;

    /// All (chunk id, vector) pairs of a bot, for building its index.
    fn vectors(&self, bot: &BotId) -> Result<Vec<(u64, Vec<f32>)>>;

    /// The vectors of the given chunks, in order.
    fn vectors_of(&self, ids: &[u64]) -> Result<Vec<Vec<f32>>>;

    /// All (chunk id, chunk) pairs of a bot, for building its keyword index.
    fn bot_chunks(&self, bot: &BotId) -> Result<Vec<(u64, Chunk)>>;

    /// The given chunks, in order.
    fn chunks(&self, ids: &[u64]) -> Result<Vec<Chunk>>;

    /// Writes an ingest's new chunks and vectors before its commit, in one transaction, and
    /// returns their ids. They stay invisible (no page lists them) until `commit_ingest`
    /// names them; `discard_staged` removes them if the run fails.
    fn stage_chunks(&self, ingest: &str, batch: &[(Chunk, Vec<f32>)]) -> Result<Vec<u64>>;

    /// Removes the chunks an ingest staged; with `None`, those of every ingest whose
    /// process is gone (a crash's leftovers: for redb, which one process holds, every
    /// ingest's). Returns how many.
    fn discard_staged(&self, ingest: Option<&str>) -> Result<usize>;

    /// Chunks staged and not yet committed or discarded.
    fn staged_chunks(&self) -> Result<u64>;

    /// Applies one ingest run atomically: either all of it is visible afterwards, or none.
    fn commit_ingest(&self, commit: IngestCommit) -> Result<()>;

    /// The search this store runs over its own content (a database with vector and text
    /// indexes), if it has one; a node searches in process otherwise.
    fn own_search(&self) -> Option<Arc<dyn Search>> {
        None
    }
}

/// A signing secret and the one it replaced, which still verifies until its deadline.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRing {
    pub current: Vec<u8>,
    /// The replaced secret and the unix time it stops verifying.
    pub previous: Option<(Vec<u8>, u64)>,
}

/// Never the secrets themselves: only their lengths and the deadline.
impl std::fmt::Debug for SecretRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRing")
            .field("current_len", &self.current.len())
            .field(
                "previous",
                &self.previous.as_ref().map(|(s, until)| (s.len(), until)),
            )
            .finish()
    }
}

impl SecretRing {
    /// The shortest secret a node signs with: a shorter one (a damaged store) is refused.
    pub const MIN_LEN: usize = 32;

    /// Whether the current secret is long enough to sign with.
    pub fn is_usable(&self) -> bool {
        self.current.len() >= Self::MIN_LEN
    }

    /// The store's name for the previous secret of `name`, kept as its own row (so a copy
    /// between stores carries it like any secret).
    pub fn previous_name(name: &str) -> String {
        format!("{name}.previous")
    }

    /// The previous secret's stored value: its deadline (8 bytes, big-endian), the secret.
    pub fn encode_previous(secret: &[u8], until: u64) -> Vec<u8> {
        let mut value = until.to_be_bytes().to_vec();
        value.extend_from_slice(secret);
        value
    }

    /// The previous secret and its deadline from a stored value (None if malformed or
    /// too short to have been a secret).
    pub fn decode_previous(value: &[u8]) -> Option<(Vec<u8>, u64)> {
        let (until, secret) = value.split_first_chunk::<8>()?;
        (secret.len() >= Self::MIN_LEN).then(|| (secret.to_vec(), u64::from_be_bytes(*until)))
    }
}

/// API key records (hashes, never keys).
pub trait KeyStore: Send + Sync {
    /// Writes a key's record (new or changed).
    fn put_key(&self, key: &ApiKey) -> Result<()>;

    /// Writes several keys at once (a rotation: the new key and the old one's deadline).
    fn put_keys(&self, records: &[&ApiKey]) -> Result<()>;

    /// A key's record (`Error::KeyNotFound` when there is none).
    fn get_key(&self, id: &str) -> Result<ApiKey>;

    /// Every key record.
    fn list_keys(&self) -> Result<Vec<ApiKey>>;

    /// Writes `key` only if the store holds no key at all (the first admin key, made by
    /// whichever node starts first); whether it was written.
    fn put_first_key(&self, key: &ApiKey) -> Result<bool>;

    /// The secret named `name` that every node sharing the store signs with (widget
    /// session tokens), `fresh` the first time anyone asks for it, with the one it replaced
    /// while that still verifies. Only reads once the secret exists.
    fn shared_secrets(&self, name: &str, fresh: &[u8]) -> Result<SecretRing>;

    /// Makes `fresh` the secret named `name` in one transaction, the current one becoming
    /// the previous (verifying until `previous_until`, unix seconds); an earlier previous
    /// one is dropped.
    fn rotate_secret(&self, name: &str, fresh: &[u8], previous_until: u64) -> Result<SecretRing>;

    /// Whether other processes write this store meanwhile (nodes sharing PostgreSQL): what
    /// a node keeps of it in memory must then be read again, not only updated by itself.
    fn is_shared(&self) -> bool {
        false
    }
}

/// Conversations with their messages, and leads.
pub trait ConversationStore: Send + Sync {
    /// A conversation's record (`Error::ConversationNotFound` when there is none).
    fn get_conversation(&self, id: &str) -> Result<Conversation>;

    /// Conversations matching the filters in id order, starting after the id `after`.
    /// A user or bot filter reads that user's or bot's index, not every conversation.
    fn list_conversations(
        &self,
        bot: Option<&BotId>,
        user: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Conversation>>;

    /// A conversation's messages in order.
    fn messages(&self, conversation: &str) -> Result<Vec<Message>>;

    /// Writes the conversation record and appends `messages` to it, in one transaction.
    fn append_messages(&self, conversation: &Conversation, messages: &[Message]) -> Result<()>;

    /// Appends `messages` to a conversation and writes its record, the turn's lead and its
    /// events, in one transaction; returns the record as stored and the position of the
    /// first message appended.
    ///
    /// The stored record keeps what earlier writes settled: a handed-off conversation stays
    /// handed off, and its lead and intent stay unless this turn brings new ones. The store
    /// adds `conversation.started` (the first user message), `conversation.handoff` (the
    /// state becomes `handed_off`) and `lead.captured` (a lead) to the turn's events.
    ///
    /// A bot reply to a conversation that a person took over while it was being written is
    /// left out (the visitor's message is kept), and so is a lead typed in chat when the
    /// conversation got one meanwhile.
    ///
    /// A turn on a conversation erased meanwhile (or, with `started_ms`, whose user or bot
    /// was erased since it began) writes nothing: `Error::ConversationNotFound`.
    fn append_turn(
        &self,
        conversation: &Conversation,
        messages: &[Message],
        extras: TurnExtras,
    ) -> Result<Appended>;

    /// Writes a lead given outside a chat turn, with its `lead.captured` event. A lead for a
    /// bot that is gone, or for a user erased since `started_ms`, is not written
    /// (`Error::BotNotFound`, `Error::ConversationNotFound`).
    fn put_lead(&self, lead: &Lead, started_ms: u64) -> Result<()>;

    /// Gives a handed-off conversation back to the bot (`Open`) or closes it, in one
    /// transaction: the record as stored and whether it changed (false when no person
    /// had it). `Error::ConversationNotFound` when there is none.
    fn release_conversation(
        &self,
        id: &str,
        to: crate::domain::ConversationState,
        now: u64,
    ) -> Result<(Conversation, bool)>;

    /// The id of the conversation holding `message`, if there is such a message.
    fn message_conversation(&self, message: &str) -> Result<Option<String>>;

    /// Records a visitor's rating of a bot answer (the last one given stands), counts it
    /// in its conversation's ratings and writes its `message.feedback` event, in one
    /// transaction; the same rating and comment again write nothing
    /// (`Error::MessageNotFound`, `Error::NotAnAnswer`: not the bot's, or a handoff notice).
    fn rate_message(&self, message: &str, feedback: &Feedback) -> Result<Rated>;

    /// A bot's leads in time order, starting after the lead id `after`.
    fn leads(&self, bot: &BotId, after: Option<&str>, limit: usize) -> Result<Vec<Lead>>;

    /// Deletes conversations and their messages; returns how many existed.
    fn delete_conversations(&self, ids: &[String]) -> Result<usize>;

    /// Erases everything stored about one end user on the given bots (their conversations
    /// with messages and events, and their leads) in one transaction, and remembers the
    /// erasure so a turn answered meanwhile is dropped.
    fn erase_user(&self, user: &str, bots: &[BotId]) -> Result<Erased>;
}

/// The webhook outbox: webhooks, events, and each event's deliveries with their attempts.
/// An event is written in the transaction of the change that caused it, with one pending
/// delivery per webhook of its bot that wants it.
pub trait OutboxStore: Send + Sync {
    /// Woken after a commit that wrote events or made deliveries due: what the delivery
    /// worker waits on between rounds (it also wakes when the next delivery is due, and
    /// every 5 s, so an engine that other nodes write to may leave this unsignalled).
    fn outbox_signal(&self) -> Arc<tokio::sync::Notify>;

    /// Writes a webhook (new or replaced).
    fn put_webhook(&self, webhook: &Webhook) -> Result<()>;

    /// Reads, changes and writes a webhook in one transaction; `None` when it is gone.
    fn update_webhook(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Webhook),
    ) -> Result<Option<Webhook>>;

    /// A webhook, if it exists.
    fn get_webhook(&self, id: &str) -> Result<Option<Webhook>>;

    /// Every webhook, or one bot's, in id order.
    fn list_webhooks(&self, bot: Option<&BotId>) -> Result<Vec<Webhook>>;

    /// Deletes a webhook with its deliveries; false when it did not exist.
    fn delete_webhook(&self, id: &str) -> Result<bool>;

    /// An event, if it is still kept.
    fn get_event(&self, id: &str) -> Result<Option<Event>>;

    /// Writes one event on its own (for changes that are not a store write of their own).
    fn emit(&self, bot: &BotId, new: NewEvent) -> Result<Event>;

    /// Up to `limit` deliveries due by `now_ms`, earliest first, leaving out those in
    /// `skip` (being sent). Rows whose webhook, event or delivery is gone are removed.
    ///
    /// They are the caller's to send for `claim_ms`: a store that several nodes share
    /// gives them to no other caller until then (or until their attempt is recorded), so
    /// each delivery is attempted by one node at a time, and by another if the first died.
    fn due_deliveries(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &HashSet<(String, String)>,
        claim_ms: u64,
    ) -> Result<Vec<DueDelivery>>;

    /// Deletes events created before `before_ms` whose deliveries are all settled
    /// (delivered or failed), with those deliveries; returns how many went. Event ids
    /// start with their creation time, so only the old end of the table is read.
    fn prune_events(&self, before_ms: u64, limit: usize) -> Result<usize>;

    /// How many deliveries are pending (for `/metrics`).
    fn pending_deliveries(&self) -> Result<u64>;

    /// When the earliest pending delivery not in `skip` is due (unix ms).
    fn next_due_ms_except(&self, skip: &HashSet<(String, String)>) -> Result<Option<u64>>;

    /// Records attempts and what follows from each, in one transaction (the delivery
    /// worker batches the attempts that finished together).
    fn record_attempts(&self, attempts: &[(DueDelivery, Attempt, Outcome)]) -> Result<()>;

    /// A webhook's deliveries, newest first, starting after the event id `before`.
    fn deliveries(
        &self,
        webhook_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>>;

    /// Sends an event again: its deliveries to `webhooks` (every webhook of its bot that
    /// wants it when empty) become pending now, keeping their attempt history. Returns the
    /// webhooks it was queued for.
    fn redeliver(&self, event: &Event, webhooks: &[Webhook]) -> Result<Vec<String>>;
}

/// Crawl job records, so a job's state outlives the process that ran it.
pub trait JobStore: Send + Sync {
    /// Writes a crawl job's record. A finished upload job's documents are dropped in the
    /// same transaction (they were kept only for the job to run).
    fn put_job(&self, job: &CrawlJob) -> Result<()>;

    /// Writes a queued upload job's record and its documents, in one transaction.
    fn put_upload(&self, job: &CrawlJob, files: &[UploadedFile]) -> Result<()>;

    /// The documents an unfinished upload job indexes, by name (none once it finished).
    fn upload_files(&self, job: &str) -> Result<Vec<UploadedFile>>;

    /// A job's record, if it exists.
    fn get_job(&self, id: &str) -> Result<Option<CrawlJob>>;

    /// Every job record, in id order.
    fn jobs(&self) -> Result<Vec<CrawlJob>>;

    /// The unfinished jobs whose process is gone (it stopped or crashed), made this
    /// process's, oldest first: each such job goes to exactly one caller, whichever node
    /// asks. A store one process holds has such jobs only when it is opened (redb).
    fn adopt_jobs(&self) -> Result<Vec<CrawlJob>>;
}

/// Every storage port: what a node's state is kept in.
/// Operator accounts (`accounts`): people at the console, apart from API keys.
pub trait AccountStore: Send + Sync {
    /// Adds `account`; `AccountExists` when its email is taken.
    fn create_account(&self, account: &Account) -> Result<()>;

    fn get_account(&self, id: &str) -> Result<Option<Account>>;

    /// The account whose (normalised) email this is.
    fn account_by_email(&self, email: &str) -> Result<Option<Account>>;

    /// Every account, oldest first.
    fn list_accounts(&self) -> Result<Vec<Account>>;

    /// Removes the account and its sessions; false when there was none.
    fn delete_account(&self, id: &str) -> Result<bool>;

    /// Writes a session (a login, or one seen again).
    fn put_session(&self, session: &Session) -> Result<()>;

    /// The session whose token hashes to `id`.
    fn get_session(&self, id: &str) -> Result<Option<Session>>;

    /// Ends one session (logout); false when there was none.
    fn delete_session(&self, id: &str) -> Result<bool>;

    /// Ends every session of an account; how many there were.
    fn delete_sessions(&self, account: &str) -> Result<usize>;

    /// Records a session's use at `now`, if it still exists (false when not: a logout
    /// that came first stays one).
    fn touch_session(&self, id: &str, now: u64) -> Result<bool>;

    /// Removes the sessions that have ended by `now`; how many.
    fn delete_expired_sessions(&self, now: u64) -> Result<usize>;
}

pub trait Storage:
    ContentStore + ConversationStore + KeyStore + OutboxStore + JobStore + AccountStore
{
    /// How the nodes sharing this store tell each other of live changes, if others can
    /// share it (PostgreSQL); none for a store one process holds.
    fn notices(&self) -> Option<Arc<dyn Notices>> {
        None
    }

    /// Its whole content as rows, if this store can read itself out (`Export`).
    fn export(&self) -> Option<&dyn Export> {
        None
    }
}

/// A change of a conversation that the nodes holding its live feeds must pass on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// `count` messages were stored from position `first` on (read them from the store).
    Appended {
        conversation: String,
        first: u32,
        count: u32,
    },
    /// Its state changed (handed off, given back, closed).
    State {
        conversation: String,
        state: crate::domain::ConversationState,
        handoff_reason: Option<String>,
    },
    /// The feeds of these conversations end (`conversation_erased`).
    Ended {
        conversations: Vec<String>,
        reason: String,
    },
}

/// Notices between the nodes sharing a store: each reaches every other node's listener
/// (not the sender's own), best effort (a node that was cut off hears nothing of the
/// meantime).
pub trait Notices: Send + Sync {
    fn send(&self, notice: &Notice) -> Result<()>;

    /// Hands the other nodes' notices to `deliver`, on a thread of its own, until
    /// `deliver` returns false; it is also called with `None` about once a second
    /// without a notice, so that it can stop.
    fn listen(&self, deliver: Box<dyn FnMut(Option<Notice>) -> bool + Send>) -> Result<()>;

    /// How many nodes listen now (this one included once it listens): the nodes serving,
    /// among which limits and budgets are shared.
    fn nodes(&self) -> Result<u32>;
}

/// Candidate chunks for a query from a bot's indexes, each side best first; the caller
/// fuses them (`retrieval`). Chunk ids are the content store's.
pub trait Search: Send + Sync {
    /// The `k` chunks whose vectors are nearest `query` (a unit vector), with their cosine
    /// similarity.
    fn dense(&self, bot: &BotId, query: &[f32], k: usize) -> anyhow::Result<Vec<(u64, f32)>>;

    /// The `k` chunks that best match `query`'s words, with a relevance score (higher is
    /// better, on the index's own scale).
    fn keyword(&self, bot: &BotId, query: &str, k: usize) -> anyhow::Result<Vec<(u64, f32)>>;

    /// Forgets whatever the search derived from the bot's content, after the content
    /// changed (an ingest, a deletion).
    fn invalidate(&self, bot: &BotId);
}

/// One stored record, as one store hands its content to another (`docent migrate-store`):
/// every table's rows, typed, without what the store derives from them (indexes, due
/// lists, staged chunks of an ingest that never committed).
#[derive(Debug, Clone)]
pub enum Row {
    Bot(Bot),
    Page {
        bot: BotId,
        page: Page,
    },
    /// A chunk under its id (pages name chunks by id), with its unit vector.
    Chunk {
        id: u64,
        chunk: Chunk,
        vector: Vec<f32>,
    },
    Key(ApiKey),
    Job(CrawlJob),
    Secret {
        name: String,
        value: Vec<u8>,
    },
    /// A conversation's record (its messages come as `Message` rows).
    Conversation(Conversation),
    Message {
        conversation: String,
        position: u32,
        message: Message,
    },
    Lead(Lead),
    Erasure {
        subject: Erasure,
        at_ms: u64,
    },
    Event(Event),
    Webhook(Webhook),
    Delivery(Delivery),
    Account(Account),
    Session(Session),
}

/// What an erasure record is about (each store spells its key its own way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erasure {
    Conversation(String),
    User { bot: String, user: String },
    Bot(String),
}

impl Row {
    /// The table the row belongs to, as `migrate-store` reports counts.
    pub fn table(&self) -> &'static str {
        match self {
            Row::Bot(_) => "bots",
            Row::Page { .. } => "pages",
            Row::Chunk { .. } => "chunks",
            Row::Key(_) => "keys",
            Row::Job(_) => "jobs",
            Row::Secret { .. } => "secrets",
            Row::Conversation(_) => "conversations",
            Row::Message { .. } => "messages",
            Row::Lead(_) => "leads",
            Row::Erasure { .. } => "erasures",
            Row::Event(_) => "events",
            Row::Webhook(_) => "webhooks",
            Row::Delivery(_) => "deliveries",
            Row::Account(_) => "accounts",
            Row::Session(_) => "sessions",
        }
    }
}

/// Rows counted by table.
pub type RowCounts = std::collections::BTreeMap<&'static str, u64>;

/// A store whose whole content can be read out, row by row, as of one moment.
pub trait Export: Send + Sync {
    /// Hands every row to `each` (a bot before its pages and chunks, a conversation
    /// before its messages, an event before its deliveries), from one consistent
    /// snapshot; stops at `each`'s first error.
    fn export(&self, each: &mut dyn FnMut(Row) -> Result<()>) -> Result<RowCounts>;
}

/// A store that can take another's whole content.
pub trait Import: Send + Sync {
    /// Writes every row `source` exports, in one transaction: all of it or, on any error,
    /// nothing. Refused unless this store is empty; before it commits, each table's rows
    /// are counted against what was exported, and a difference rolls it all back.
    fn import(&self, source: &dyn Export) -> Result<RowCounts>;

    /// How many rows each table holds now (the check after an import).
    fn count_rows(&self) -> Result<RowCounts>;
}
