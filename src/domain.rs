//! Domain newtypes that validate on construction: bot ids and the data records the store keeps.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A bot's id: the slug it was created with, `[a-z0-9-]+`, at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BotId(String);

impl BotId {
    pub fn parse(raw: &str) -> Result<BotId, String> {
        let valid_chars = raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if raw.is_empty() || raw.len() > 64 || !valid_chars {
            return Err(format!(
                "invalid bot id {raw:?}: use 1 to 64 characters from [a-z0-9-]"
            ));
        }
        Ok(BotId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BotId {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        BotId::parse(&raw)
    }
}

impl From<BotId> for String {
    fn from(id: BotId) -> String {
        id.0
    }
}

impl fmt::Display for BotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bot as stored: its identity and where its content comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bot {
    pub id: BotId,
    pub name: String,
    /// The URL or folder the bot was last ingested from.
    pub source: String,
    pub created_unix: u64,
    pub updated_unix: u64,
    pub pages: u64,
    pub chunks: u64,
    /// A test-mode bot: reachable only with `sk_test_`/`pk_test_` keys.
    #[serde(default)]
    pub test: bool,
    #[serde(default)]
    pub settings: BotSettings,
    /// The embedder that made the bot's vectors (None: none yet, or made before embedders
    /// were recorded, which was always MiniLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<EmbedderId>,
}

/// Which model made a set of vectors, and their length: vectors are only comparable with
/// vectors of the same id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EmbedderId {
    pub model: String,
    pub dim: usize,
}

impl EmbedderId {
    pub fn new(model: impl Into<String>, dim: usize) -> EmbedderId {
        EmbedderId {
            model: model.into(),
            dim,
        }
    }
}

impl fmt::Display for EmbedderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} dimensions)", self.model, self.dim)
    }
}

/// An embedder docent runs in-process, by the name flags and bot settings use: `minilm`
/// (all-MiniLM-L6-v2, 384 dimensions), `nomic` (nomic-embed-text-v1.5, 768), or nomic cut to
/// `nomic-512` or `nomic-256` (its Matryoshka widths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum EmbedderChoice {
    #[default]
    MiniLm,
    Nomic(NomicWidth),
}

/// The widths nomic-embed-text-v1.5 was trained to be cut to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NomicWidth {
    Full,
    D512,
    D256,
}

impl NomicWidth {
    pub fn dim(self) -> usize {
        match self {
            NomicWidth::Full => 768,
            NomicWidth::D512 => 512,
            NomicWidth::D256 => 256,
        }
    }
}

impl EmbedderChoice {
    /// Every choice, by its name.
    pub const NAMES: [&str; 4] = ["minilm", "nomic", "nomic-512", "nomic-256"];

    pub fn name(self) -> &'static str {
        match self {
            EmbedderChoice::MiniLm => "minilm",
            EmbedderChoice::Nomic(NomicWidth::Full) => "nomic",
            EmbedderChoice::Nomic(NomicWidth::D512) => "nomic-512",
            EmbedderChoice::Nomic(NomicWidth::D256) => "nomic-256",
        }
    }

    /// The id the vectors this embedder makes are recorded under.
    pub fn id(self) -> EmbedderId {
        match self {
            EmbedderChoice::MiniLm => EmbedderId::new("all-MiniLM-L6-v2", 384),
            EmbedderChoice::Nomic(width) => EmbedderId::new("nomic-embed-text-v1.5", width.dim()),
        }
    }

    /// The choice that makes vectors recorded as `id`, if docent runs it in-process.
    pub fn from_id(id: &EmbedderId) -> Option<EmbedderChoice> {
        EmbedderChoice::all().into_iter().find(|c| c.id() == *id)
    }

    fn all() -> [EmbedderChoice; 4] {
        [
            EmbedderChoice::MiniLm,
            EmbedderChoice::Nomic(NomicWidth::Full),
            EmbedderChoice::Nomic(NomicWidth::D512),
            EmbedderChoice::Nomic(NomicWidth::D256),
        ]
    }
}

impl std::str::FromStr for EmbedderChoice {
    type Err = String;

    /// A name from `NAMES`, or a model's full name (`all-MiniLM-L6-v2`,
    /// `nomic-embed-text-v1.5`), any case.
    fn from_str(s: &str) -> Result<EmbedderChoice, String> {
        let wanted = s.trim().to_ascii_lowercase();
        let found = match wanted.as_str() {
            "all-minilm-l6-v2" => Some(EmbedderChoice::MiniLm),
            "nomic-embed-text-v1.5" => Some(EmbedderChoice::Nomic(NomicWidth::Full)),
            name => EmbedderChoice::all().into_iter().find(|c| c.name() == name),
        };
        found.ok_or_else(|| {
            let shown: String = s.chars().take(40).collect();
            format!(
                "unknown embedder {shown:?}: use one of {}",
                EmbedderChoice::NAMES.join(", ")
            )
        })
    }
}

impl TryFrom<String> for EmbedderChoice {
    type Error = String;

    fn try_from(s: String) -> Result<EmbedderChoice, String> {
        s.parse()
    }
}

impl From<EmbedderChoice> for String {
    fn from(choice: EmbedderChoice) -> String {
        choice.name().to_string()
    }
}

impl fmt::Display for EmbedderChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A bot whose vectors another embedder made than the one asked to search or extend them:
/// its stored chunks must be re-embedded first (`docent reindex --bot ID`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bot {bot}'s vectors were made by {recorded}, not {current}: run `docent reindex --bot \
     {bot}` to re-embed its stored chunks (with `--embedder NAME` to switch it to an \
     in-process embedder, or `--embed-url` to an engine's), or use the embedder it was built \
     with"
)]
pub struct EmbedderMismatch {
    pub bot: BotId,
    pub recorded: EmbedderId,
    pub current: EmbedderId,
}

/// What an operator can set on a bot over the API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BotSettings {
    /// Extra instructions added to the system prompt (they cannot lift its rules).
    pub system_prompt: Option<String>,
    pub top_k: Option<usize>,
    pub min_score: Option<f32>,
    /// Origins this bot's API crawls may reach even though they are private addresses.
    #[serde(default)]
    pub allowed_targets: Vec<String>,
    /// Sites crawled over the API, with their re-crawl schedule.
    #[serde(default)]
    pub sources: Vec<SourceSchedule>,
    /// When the bot asks visitors for their contact details.
    #[serde(default)]
    pub lead_capture: LeadCapture,
    /// Topics that always go to a person instead of being answered (medical, legal…).
    #[serde(default)]
    pub handoff_topics: Vec<String>,
    /// The contact link or text shown when the bot cannot answer.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Quick replies a client can offer; a chosen one is sent as `intent` on `/v1/chat`.
    #[serde(default)]
    pub intents: Vec<Intent>,
    /// The operator's golden questions, checked after every crawl (`golden`).
    #[serde(default)]
    pub golden: Vec<GoldenQuestion>,
    /// The embedder this bot wants (`None`: the node's `--embedder`). A bot with content
    /// keeps the embedder that made its vectors until `docent reindex` re-embeds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<EmbedderChoice>,
}

/// When a bot collects leads: never, whenever a visitor types an email address or phone
/// number, or also by asking (`actions: ["collect_lead"]`) after N visitor messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum LeadCapture {
    #[default]
    Off,
    OnDetection,
    AfterMessages {
        after_messages: u32,
    },
}

impl LeadCapture {
    pub fn enabled(&self) -> bool {
        *self != LeadCapture::Off
    }
}

/// A quick reply: `id` is what `/v1/chat` takes as `intent`, `label` what the button says,
/// `message` what is asked when it is chosen (the label when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    pub id: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSchedule {
    pub url: String,
    /// Seconds between incremental re-crawls; `None`: crawled once.
    pub recrawl_every: Option<u64>,
    pub last_crawl: Option<u64>,
    /// How far its crawls go from `url`.
    #[serde(default)]
    pub scope: Scope,
    /// Most pages one crawl of it indexes; `None`: the crawler's default (1,000).
    #[serde(default)]
    pub max_pages: Option<usize>,
}

impl SourceSchedule {
    /// A source crawled once, with the crawler's defaults.
    pub fn once(url: String) -> SourceSchedule {
        SourceSchedule {
            url,
            recrawl_every: None,
            last_crawl: None,
            scope: Scope::default(),
            max_pages: None,
        }
    }
}

/// How far a crawl goes from its start URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Same scheme and host, and under the start URL's directory.
    #[default]
    Path,
    /// Same scheme and host.
    Host,
}

/// One indexed page of a bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub url: String,
    pub title: String,
    /// sha256 of the extracted text: equal hashes mean nothing to re-embed.
    pub content_hash: String,
    /// sha256 of the body text alone: two pages with equal bodies are duplicates.
    #[serde(default)]
    pub body_hash: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Absolute in-scope links, followed again when the page answers 304.
    #[serde(default)]
    pub links: Vec<String>,
    pub chunk_ids: Vec<u64>,
    /// When an ingest last fetched it and found it new or changed or the same (unix
    /// seconds; none for pages stored before this was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crawled: Option<u64>,
    /// The source whose ingest last indexed it (`Source::key`: a start URL, a folder):
    /// a later ingest of that source removes it when it is gone, one of another source
    /// leaves it. None for curated answers and pages stored before this was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One retrievable passage: a token window of one page, with the headings above it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub bot: BotId,
    pub url: String,
    pub title: String,
    pub heading_path: Vec<String>,
    pub text: String,
}

impl Chunk {
    /// The text that is embedded: title and heading path give a passage its context.
    pub fn embedding_text(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 64);
        out.push_str(&self.title);
        for heading in &self.heading_path {
            if heading != &self.title {
                out.push_str(" > ");
                out.push_str(heading);
            }
        }
        out.push('\n');
        out.push_str(&self.text);
        out
    }
}

/// Who answers a conversation: the bot (`open`) or a person (`handed_off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    #[default]
    Open,
    HandedOff,
    /// A person finished with it; the bot answers anything the visitor writes next.
    Closed,
}

impl ConversationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationState::Open => "open",
            ConversationState::HandedOff => "handed_off",
            ConversationState::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<ConversationState> {
        [
            ConversationState::Open,
            ConversationState::HandedOff,
            ConversationState::Closed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// Who wrote a stored message: the visitor, the bot, or a person (an agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    User,
    Assistant,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Agent => "agent",
        }
    }
}

/// How a lead's details were given: the lead form (`POST /v1/leads`) or typed in a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeadSource {
    Form,
    Chat,
}

impl LeadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LeadSource::Form => "form",
            LeadSource::Chat => "chat",
        }
    }
}

/// A conversation between one visitor and one bot, remembered by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// `conv_` + base62.
    pub id: String,
    pub bot_id: BotId,
    pub user_id: Option<String>,
    /// Whether the bot (`open`) or a person (`handed_off`) answers.
    pub state: ConversationState,
    /// The key that started it: public keys may read only their own conversations.
    pub key_id: String,
    pub created: u64,
    pub updated: u64,
    /// The intent (quick reply) last chosen in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// When it was handed to a person, and why (`visitor_request`, `topic`, `api`, `agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_off_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_reason: Option<String>,
    /// The lead captured in it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_id: Option<String>,
    /// How its visitor rated the bot's answers (each answer counted once, by its last
    /// rating).
    #[serde(default, skip_serializing_if = "Ratings::is_empty")]
    pub ratings: Ratings,
    /// How many times a person gave it back to the bot or closed it: a turn that read
    /// fewer was answered from a state that no longer holds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub releases: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Thumbs up and down given to a conversation's answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ratings {
    pub up: u32,
    pub down: u32,
}

impl Ratings {
    pub fn is_empty(&self) -> bool {
        self.up == 0 && self.down == 0
    }

    /// Counts `new` in place of `old` (the same answer rated again).
    pub fn rerate(&mut self, old: Option<Rating>, new: Rating) {
        match old {
            Some(Rating::Up) => self.up = self.up.saturating_sub(1),
            Some(Rating::Down) => self.down = self.down.saturating_sub(1),
            None => {}
        }
        match new {
            Rating::Up => self.up += 1,
            Rating::Down => self.down += 1,
        }
    }
}

/// A visitor's verdict on one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Up,
    Down,
}

impl Rating {
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Up => "up",
            Rating::Down => "down",
        }
    }
}

/// The visitor's feedback on a bot answer: the last rating given, with its comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    pub rating: Rating,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Unix seconds.
    pub at: u64,
}

impl Conversation {
    pub fn handed_off(&self) -> bool {
        self.state == ConversationState::HandedOff
    }

    /// Gives the conversation to a person, for `reason` (`visitor_request`, `topic`, `api`,
    /// `agent`), at `now`; false (and nothing changes) when one already has it: the first
    /// handoff stands.
    /// Gives the conversation back from a person: to the bot (`Open`) or finished
    /// (`Closed`); false (and nothing changes) when no person has it.
    pub fn release(&mut self, to: ConversationState, now: u64) -> bool {
        if !self.handed_off() || to == ConversationState::HandedOff {
            return false;
        }
        self.state = to;
        self.updated = now;
        self.releases += 1;
        true
    }

    pub fn hand_off(&mut self, reason: &str, now: u64) -> bool {
        if self.handed_off() {
            return false;
        }
        self.state = ConversationState::HandedOff;
        self.handed_off_at = Some(now);
        self.handoff_reason = Some(reason.to_string());
        self.updated = now;
        true
    }

    /// This record written over `stored`, the conversation as it is stored now (read in
    /// the same transaction): a handoff already stored stands with its time and reason (a
    /// racing one changes nothing), and the lead, intent and creation time already there
    /// are kept. Returns what the turn being written must give up: a bot reply or a second
    /// lead from chat.
    pub fn settle_over(&mut self, stored: &Conversation) -> Settled {
        let settled = Settled {
            // A person took over while the bot was answering: its reply is not kept.
            drop_bot_reply: stored.handed_off() && !self.handed_off(),
            // One lead per conversation: the first one detected in chat stands.
            drop_chat_lead: stored.lead_id.is_some(),
        };
        // The stored state stands over a handoff already stored, and over a person's resume
        // or close written after the turn read the conversation, unless the turn itself
        // hands it off anew.
        let released_since = stored.releases != self.releases;
        let hands_off_now = self.handed_off() && self.handed_off_at != stored.handed_off_at;
        if stored.handed_off() || (released_since && !hands_off_now) {
            self.state = stored.state;
            self.handed_off_at = stored.handed_off_at;
            self.handoff_reason = stored.handoff_reason.clone();
        }
        self.releases = stored.releases;
        self.lead_id = self.lead_id.take().or(stored.lead_id.clone());
        self.intent = self.intent.take().or(stored.intent.clone());
        self.created = stored.created;
        // Ratings change only through feedback, never through a turn.
        self.ratings = stored.ratings;
        settled
    }
}

/// What a stored turn announces, besides the events its caller adds: the rules of which
/// turn starts a conversation, captures a lead or hands it off, decided once for every
/// storage engine (`Conversation::settle_turn`).
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// `conversation.started`: the conversation's first visitor message.
    Started { message: String },
    /// `lead.captured`: contact details typed in the turn.
    LeadCaptured(Lead),
    /// `conversation.handoff`: a person has the conversation now; the visitor's last
    /// message (this turn's, or the last one stored).
    HandedOff {
        reason: Option<String>,
        message: Option<String>,
    },
}

impl TurnEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            TurnEvent::Started { .. } => event_kinds::CONVERSATION_STARTED,
            TurnEvent::LeadCaptured(_) => event_kinds::LEAD_CAPTURED,
            TurnEvent::HandedOff { .. } => event_kinds::CONVERSATION_HANDOFF,
        }
    }
}

/// A turn as it is to be written: the record settled over the stored one, the messages
/// and lead it keeps, and the events it announces.
#[derive(Debug, Clone, PartialEq)]
pub struct SettledTurn {
    pub record: Conversation,
    pub messages: Vec<Message>,
    pub lead: Option<Lead>,
    pub events: Vec<TurnEvent>,
    /// A bot reply was given up: a person took the conversation over meanwhile.
    pub reply_dropped: bool,
    /// The caller's `message.unanswered` event goes with the reply it was about.
    drop_unanswered: bool,
}

impl SettledTurn {
    /// Whether an event the caller added to the turn is still written.
    pub fn keeps_event(&self, kind: &str) -> bool {
        !(self.drop_unanswered && kind == event_kinds::MESSAGE_UNANSWERED)
    }
}

impl Conversation {
    /// This turn's record with its `messages` and typed `lead`, written after `next`
    /// stored messages over `stored` (the conversation as stored now, read in the same
    /// transaction): `settle_over`'s rules, then the events the turn announces.
    /// `last_stored_question` is asked only when a handoff needs the visitor's last
    /// message and this turn has none.
    pub fn settle_turn(
        mut self,
        stored: Option<&Conversation>,
        mut messages: Vec<Message>,
        mut lead: Option<Lead>,
        next: u32,
        last_stored_question: impl FnOnce() -> Option<String>,
    ) -> SettledTurn {
        let mut reply_dropped = false;
        let mut drop_unanswered = false;
        if let Some(stored) = stored {
            let settled = self.settle_over(stored);
            if settled.drop_bot_reply {
                let before = messages.len();
                messages.retain(|m| m.role != Role::Assistant);
                reply_dropped = messages.len() < before;
                drop_unanswered = true;
            }
            if settled.drop_chat_lead
                && lead
                    .as_ref()
                    .is_some_and(|l| l.obtained == LeadSource::Chat)
            {
                lead = None;
            }
        }
        let mut events = Vec::new();
        let first_question = messages.iter().find(|m| m.role == Role::User);
        if let (0, Some(first)) = (next, first_question) {
            events.push(TurnEvent::Started {
                message: first.content.clone(),
            });
        }
        if let Some(lead) = &lead {
            self.lead_id = Some(lead.id.clone());
            events.push(TurnEvent::LeadCaptured(lead.clone()));
        }
        if self.handed_off() && !stored.is_some_and(Conversation::handed_off) {
            let this_turns = messages.iter().rev().find(|m| m.role == Role::User);
            let message = this_turns
                .map(|m| m.content.clone())
                .or_else(last_stored_question);
            events.push(TurnEvent::HandedOff {
                reason: self.handoff_reason.clone(),
                message,
            });
        }
        SettledTurn {
            record: self,
            messages,
            lead,
            events,
            reply_dropped,
            drop_unanswered,
        }
    }
}

/// What a turn written over a stored conversation gives up (`Conversation::settle_over`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub drop_bot_reply: bool,
    pub drop_chat_lead: bool,
}

/// Where a crawl job is: waiting for the worker, crawling, or finished either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

impl JobState {
    /// Not finished: a stopped server's queued or running jobs run again when it starts.
    pub fn unfinished(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }
}

// Golden questions: their rules are `golden`'s.

/// A question as an operator gives it (a file's entry, an API body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewQuestion {
    pub question: String,
    /// Every keyword must be in the answer (case-insensitive); none: the bot should
    /// decline.
    #[serde(default)]
    pub expected_answer_keywords: Vec<String>,
    /// The page the answer must cite, when given.
    #[serde(default)]
    pub source_url: Option<String>,
}

/// A bot's golden question as kept: what was asked for, and how its last check went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenQuestion {
    /// `gq_` + random.
    pub id: String,
    pub question: String,
    pub expected_answer_keywords: Vec<String>,
    pub source_url: Option<String>,
    pub created: u64,
    /// The last check's result; none until the first check after it was added.
    #[serde(default)]
    pub last: Option<Verdict>,
    /// Set when a check failed the question after one passed it, until one passes it again.
    #[serde(default)]
    pub regression: Option<Regression>,
}

/// How one check of a question went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: bool,
    /// `ok`, `declined`, `missing a keyword`, `did not cite the expected page`, ...
    pub reason: String,
    pub answer: String,
    /// The URLs the answer cited.
    pub sources: Vec<String>,
    /// When (unix s), and after which job.
    pub checked: u64,
    pub job_id: Option<String>,
}

/// A question that passed and then failed: both answers, and when it turned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub old_answer: String,
    pub new_answer: String,
    pub reason: String,
    pub since: u64,
    pub job_id: Option<String>,
}

/// How a check of a bot's golden questions went, as a job's record shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldenRun {
    pub total: usize,
    pub passed: usize,
    /// Questions that passed the check before and failed this one.
    pub regressed: usize,
    /// Questions the model could not be asked this time (they keep their last verdict).
    #[serde(default)]
    pub errors: usize,
}

/// What a job does: crawl a source, or index documents uploaded to the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    #[default]
    Crawl,
    Upload,
}

/// A document uploaded to `POST /v1/bots/{id}/documents`, kept in the store until its job
/// has run (so any node, or this one after a restart, can run it).
#[derive(Debug, Clone, PartialEq)]
pub struct UploadedFile {
    /// The file's name as uploaded (no folders): its extension says its kind.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A page or document an ingest left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedPage {
    pub url: String,
    pub reason: String,
}

/// A crawl of one source into a bot, as stored (when queued, started and finished) and as
/// `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrawlJob {
    /// `job_` + random.
    pub id: String,
    pub bot_id: BotId,
    pub url: String,
    pub state: JobState,
    /// While running: what the crawler is doing and how far it got.
    pub phase: String,
    pub progress: u64,
    /// The pages in sight: every URL the crawl has found so far, as far as its page budget
    /// reaches (never less than `progress`, growing as pages link to more, and equal to
    /// `progress` once the job is `done`); null until the crawl starts fetching.
    pub total: Option<u64>,
    pub pages_indexed: Option<usize>,
    pub pages_unchanged: Option<usize>,
    pub pages_skipped: Option<usize>,
    pub pages_removed: Option<usize>,
    /// URLs not fetched because the SSRF guard refused them (e.g. a sitemap listing a
    /// private address).
    #[serde(default)]
    pub urls_refused: Option<usize>,
    pub chunks: Option<usize>,
    /// The first pages and documents the crawl skipped, each with why (a scan without a
    /// text layer, an unreadable file, no text, a duplicate...).
    #[serde(default)]
    pub skipped: Vec<SkippedPage>,
    pub error: Option<String>,
    pub created: u64,
    pub finished: Option<u64>,
    /// How far the crawl goes from `url`.
    #[serde(default)]
    pub scope: Scope,
    /// Most pages it indexes; `None`: the crawler's default (1,000).
    #[serde(default)]
    pub max_pages: Option<usize>,
    /// A crawl, or an upload (whose `url` is the address its documents are cited under).
    #[serde(default)]
    pub kind: JobKind,
    /// How the bot's golden questions did after this job; none when it has none (or the
    /// job failed).
    #[serde(default)]
    pub golden: Option<GoldenRun>,
}

impl CrawlJob {
    /// A job just queued: a crawl of `source` as it is now.
    pub fn queued(id: String, bot_id: BotId, source: &SourceSchedule, created: u64) -> CrawlJob {
        CrawlJob {
            id,
            bot_id,
            url: source.url.clone(),
            scope: source.scope,
            max_pages: source.max_pages,
            state: JobState::Queued,
            phase: String::new(),
            progress: 0,
            total: None,
            pages_indexed: None,
            pages_unchanged: None,
            pages_skipped: None,
            pages_removed: None,
            urls_refused: None,
            chunks: None,
            skipped: Vec::new(),
            error: None,
            created,
            finished: None,
            kind: JobKind::Crawl,
            golden: None,
        }
    }

    /// A job just queued to index uploaded documents, cited under `base`.
    pub fn upload(id: String, bot_id: BotId, base: &str, created: u64) -> CrawlJob {
        CrawlJob {
            kind: JobKind::Upload,
            ..CrawlJob::queued(id, bot_id, &SourceSchedule::once(base.into()), created)
        }
    }
}

/// Contact details a visitor gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    /// `lead_` + creation time + random, so ids sort by time.
    pub id: String,
    pub bot_id: BotId,
    pub conversation_id: Option<String>,
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// What the visitor agreed to on the form; `null` for details typed in a chat message.
    pub consent: Option<bool>,
    /// `form` (`POST /v1/leads`) or `chat` (detected in a visitor's message).
    pub obtained: LeadSource,
    pub created: u64,
}

/// The kinds of event a change emits (in the change's own transaction) and webhooks
/// subscribe to.
pub mod event_kinds {
    pub const CONVERSATION_STARTED: &str = "conversation.started";
    pub const LEAD_CAPTURED: &str = "lead.captured";
    pub const CONVERSATION_HANDOFF: &str = "conversation.handoff";
    pub const MESSAGE_UNANSWERED: &str = "message.unanswered";
    pub const MESSAGE_FEEDBACK: &str = "message.feedback";
    /// A golden question that passed failed after a crawl.
    pub const BOT_REGRESSED: &str = "bot.regressed";
    /// Every event type a webhook can subscribe to (`*` means all of them).
    pub const TYPES: [&str; 6] = [
        CONVERSATION_STARTED,
        LEAD_CAPTURED,
        CONVERSATION_HANDOFF,
        MESSAGE_UNANSWERED,
        MESSAGE_FEEDBACK,
        BOT_REGRESSED,
    ];
}

impl Bot {
    /// Marks a change to what the bot answers with (its content or its settings) at `now`:
    /// `updated_unix` moves to `now`, and at least one past its last value, so what is
    /// keyed by it (every node's answer cache) never takes the changed bot for the old one,
    /// even for two changes in one second.
    pub fn touch(&mut self, now: u64) {
        self.updated_unix = now.max(self.updated_unix.saturating_add(1));
    }

    /// A new live bot named after its id, with no content yet, made at `now` (unix s).
    pub fn new(id: BotId, now: u64) -> Bot {
        Bot {
            name: id.to_string(),
            id,
            source: String::new(),
            created_unix: now,
            updated_unix: now,
            pages: 0,
            chunks: 0,
            test: false,
            settings: BotSettings::default(),
            embedder: None,
        }
    }

    /// Whether `current` may search and extend this bot's vectors: a bot without chunks
    /// takes any embedder; one with chunks only the embedder that made them (`legacy` for
    /// bots stored before embedders were recorded).
    pub fn check_embedder(
        &self,
        current: &EmbedderId,
        legacy: &EmbedderId,
    ) -> Result<(), EmbedderMismatch> {
        if self.chunks == 0 {
            return Ok(());
        }
        let recorded = self.embedder.as_ref().unwrap_or(legacy);
        if recorded == current {
            return Ok(());
        }
        Err(EmbedderMismatch {
            bot: self.id.clone(),
            recorded: recorded.clone(),
            current: current.clone(),
        })
    }

    /// The embedder this bot asks for: its own setting, else the node's `default`.
    pub fn wanted_embedder(&self, default: EmbedderChoice) -> EmbedderChoice {
        self.settings.embedder.unwrap_or(default)
    }

    /// The vectors a query or new content for this bot must be comparable with: those of
    /// the embedder that made its vectors while it has any (MiniLM's when not recorded),
    /// else those of the one it wants.
    pub fn embedder_needed(&self, default: EmbedderChoice) -> EmbedderId {
        if self.chunks > 0 {
            self.embedder
                .clone()
                .unwrap_or_else(|| EmbedderChoice::MiniLm.id())
        } else {
            self.wanted_embedder(default).id()
        }
    }

    /// The origins the SSRF guard lets this bot's crawls reach although they are not
    /// public: its `allowed_targets`, unless it is a test bot (whose crawls stay public).
    pub fn exempt_origins(&self) -> Vec<String> {
        if self.test {
            Vec::new()
        } else {
            self.settings.allowed_targets.clone()
        }
    }
}

/// The fixed reply when no source is good enough; the model is not called.
pub const NOT_IN_SOURCES: &str = "I don't have that in my sources.";

/// A source an answer cites: its number in the answer (`[n]`), page and passage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceRef {
    pub index: usize,
    pub title: String,
    pub url: String,
    pub snippet: String,
    pub score: f32,
}

/// One message of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `msg_` + base62.
    pub id: String,
    /// `user`, `assistant` or `agent`.
    pub role: Role,
    pub content: String,
    /// The sources an assistant message cites.
    #[serde(default)]
    pub sources: Vec<SourceRef>,
    pub created: u64,
    /// Assistant messages: whether the answer came from the sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Assistant messages: time to the first token and to the end, for analytics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u64>,
    /// Agent messages: who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Assistant messages: the visitor's rating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
}

/// What a visitor's rating did to a message (`Message::rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerating {
    /// Not an answer of the bot (the visitor's or an agent's message, a handoff notice):
    /// nothing changed.
    NotAnAnswer,
    /// The same rating and comment as it had: nothing changes, nobody is told.
    Same,
    /// Rated; the rating it had before, if any.
    Changed { previous: Option<Rating> },
}

impl Message {
    /// Records a visitor's rating of this answer (the last one given stands).
    pub fn rate(&mut self, feedback: &Feedback) -> Rerating {
        // A handoff notice is the bot's, but not an answer.
        if self.role != Role::Assistant || self.finish_reason.as_deref() == Some("handed_off") {
            return Rerating::NotAnAnswer;
        }
        let same = |p: &Feedback| p.rating == feedback.rating && p.comment == feedback.comment;
        if self.feedback.as_ref().is_some_and(same) {
            return Rerating::Same;
        }
        let previous = self.feedback.replace(feedback.clone()).map(|f| f.rating);
        Rerating::Changed { previous }
    }
}

/// A setting that is never printed: its `Debug` is `***` (a proxy URL with credentials, a
/// token).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Records the crate's unit tests start from.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// An empty live bot, `Docs` for `docs`, crawled from `https://docs.example/`.
    pub fn bot(id: &str) -> Bot {
        let mut name: Vec<char> = id.chars().collect();
        if let Some(first) = name.first_mut() {
            *first = first.to_ascii_uppercase();
        }
        Bot {
            id: BotId::parse(id).unwrap(),
            name: name.into_iter().collect(),
            source: "https://docs.example/".into(),
            created_unix: 1,
            updated_unix: 1,
            pages: 0,
            chunks: 0,
            test: false,
            settings: BotSettings::default(),
            embedder: None,
        }
    }

    /// A fresh open conversation with `bot`, of `user` when given.
    pub fn conversation(id: &str, bot: &str, user: Option<&str>) -> Conversation {
        Conversation {
            id: id.into(),
            bot_id: BotId::parse(bot).unwrap(),
            user_id: user.map(str::to_string),
            state: ConversationState::Open,
            key_id: "key_x".into(),
            created: 1,
            updated: 1,
            intent: None,
            handed_off_at: None,
            handoff_reason: None,
            lead_id: None,
            ratings: Ratings::default(),
            releases: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touched_bot_has_a_new_version_even_within_one_second() {
        let mut bot = Bot::new(BotId::parse("docs").unwrap(), 1_000);
        bot.touch(2_000);
        assert_eq!(bot.updated_unix, 2_000);
        // Twice in the same second, or with a clock behind the stored time: still newer.
        bot.touch(2_000);
        assert_eq!(bot.updated_unix, 2_001);
        bot.touch(1_500);
        assert_eq!(bot.updated_unix, 2_002);
    }

    #[test]
    fn embedder_choices_parse_by_name_and_model_and_map_to_their_vectors() {
        for name in EmbedderChoice::NAMES {
            let choice: EmbedderChoice = name.parse().unwrap();
            assert_eq!(choice.name(), name);
            assert_eq!(EmbedderChoice::from_id(&choice.id()), Some(choice));
            let json = serde_json::to_string(&choice).unwrap();
            assert_eq!(
                serde_json::from_str::<EmbedderChoice>(&json).unwrap(),
                choice
            );
        }
        assert_eq!(
            " Nomic-Embed-Text-v1.5".parse::<EmbedderChoice>(),
            Ok(EmbedderChoice::Nomic(NomicWidth::Full))
        );
        assert_eq!(
            "all-MiniLM-L6-v2".parse::<EmbedderChoice>(),
            Ok(EmbedderChoice::MiniLm)
        );
        assert_eq!(
            EmbedderChoice::Nomic(NomicWidth::D256).id(),
            EmbedderId::new("nomic-embed-text-v1.5", 256)
        );
        let error = "nomic-128".parse::<EmbedderChoice>().unwrap_err();
        assert!(
            error.contains("minilm, nomic, nomic-512, nomic-256"),
            "{error}"
        );
        assert!(serde_json::from_str::<EmbedderChoice>("\"bge\"").is_err());
        assert_eq!(
            EmbedderChoice::from_id(&EmbedderId::new("minilm-gguf", 384)),
            None
        );
    }

    #[test]
    fn a_bot_with_vectors_needs_their_embedder_and_an_empty_one_what_it_wants() {
        let nomic = EmbedderChoice::Nomic(NomicWidth::D512);
        let mut empty = bot(0, None);
        assert_eq!(
            empty.embedder_needed(EmbedderChoice::MiniLm),
            EmbedderChoice::MiniLm.id()
        );
        assert_eq!(empty.embedder_needed(nomic), nomic.id());
        empty.settings.embedder = Some(nomic);
        assert_eq!(empty.embedder_needed(EmbedderChoice::MiniLm), nomic.id());
        // Vectors win over the wish and the default; unrecorded ones were MiniLM's.
        let mut built = bot(5, None);
        built.settings.embedder = Some(nomic);
        assert_eq!(built.embedder_needed(nomic), EmbedderChoice::MiniLm.id());
        assert_eq!(built.wanted_embedder(EmbedderChoice::MiniLm), nomic);
        let remote = EmbedderId::new("minilm-gguf", 384);
        assert_eq!(bot(5, Some(remote.clone())).embedder_needed(nomic), remote);
    }

    fn bot(chunks: u64, embedder: Option<EmbedderId>) -> Bot {
        Bot {
            pages: 1,
            chunks,
            embedder,
            ..fixtures::bot("docs")
        }
    }

    #[test]
    fn only_the_embedder_that_made_a_bots_vectors_may_search_them() {
        let minilm = EmbedderId::new("all-MiniLM-L6-v2", 384);
        let remote = EmbedderId::new("nomic-embed-text", 768);
        // Nothing stored yet: any embedder may start.
        assert!(bot(0, None).check_embedder(&remote, &minilm).is_ok());
        assert!(
            bot(0, Some(minilm.clone()))
                .check_embedder(&remote, &minilm)
                .is_ok()
        );
        // Recorded: only the same one.
        assert!(
            bot(5, Some(remote.clone()))
                .check_embedder(&remote, &minilm)
                .is_ok()
        );
        let refused = bot(5, Some(remote.clone()))
            .check_embedder(&minilm, &minilm)
            .unwrap_err();
        assert_eq!((&refused.recorded, &refused.current), (&remote, &minilm));
        assert!(
            refused.to_string().contains("docent reindex --bot docs"),
            "{refused}"
        );
        // Unrecorded (stored before embedders were recorded): the legacy embedder's.
        assert!(bot(5, None).check_embedder(&minilm, &minilm).is_ok());
        assert!(bot(5, None).check_embedder(&remote, &minilm).is_err());
        // The same model at another length is another embedder.
        let shorter = EmbedderId::new("nomic-embed-text", 256);
        assert!(
            bot(5, Some(remote))
                .check_embedder(&shorter, &minilm)
                .is_err()
        );
    }

    fn conversation(state: ConversationState) -> Conversation {
        Conversation {
            state,
            key_id: "key_1".into(),
            created: 5,
            updated: 5,
            ..fixtures::conversation("conv_1", "docs", None)
        }
    }

    #[test]
    fn the_first_handoff_stands() {
        let mut c = conversation(ConversationState::Open);
        assert!(c.hand_off("topic", 10));
        assert_eq!(
            (c.state, c.handed_off_at, c.handoff_reason.as_deref()),
            (ConversationState::HandedOff, Some(10), Some("topic"))
        );
        assert!(!c.hand_off("agent", 20));
        assert_eq!(
            (c.handed_off_at, c.handoff_reason.as_deref()),
            (Some(10), Some("topic"))
        );
    }

    #[test]
    fn a_turn_written_over_a_stored_handoff_keeps_it_and_gives_up_the_bots_reply() {
        let mut stored = conversation(ConversationState::Open);
        stored.hand_off("visitor_request", 10);
        stored.lead_id = Some("lead_1".into());
        stored.intent = Some("pricing".into());
        // A bot turn that read the conversation open, before the handoff.
        let mut turn = conversation(ConversationState::Open);
        turn.created = 99;
        let settled = turn.settle_over(&stored);
        assert_eq!(
            settled,
            Settled {
                drop_bot_reply: true,
                drop_chat_lead: true
            }
        );
        assert!(turn.handed_off());
        assert_eq!(turn.handoff_reason.as_deref(), Some("visitor_request"));
        assert_eq!(
            (
                turn.lead_id.as_deref(),
                turn.intent.as_deref(),
                turn.created
            ),
            (Some("lead_1"), Some("pricing"), 5)
        );
        // A second handoff racing the first changes nothing of it.
        let mut racing = conversation(ConversationState::Open);
        racing.hand_off("agent", 11);
        assert!(!racing.settle_over(&stored).drop_bot_reply);
        assert_eq!(
            (racing.handed_off_at, racing.handoff_reason.as_deref()),
            (Some(10), Some("visitor_request"))
        );
        // An open conversation keeps everything the turn brings.
        let open = conversation(ConversationState::Open);
        let mut next = conversation(ConversationState::Open);
        next.intent = Some("returns".into());
        assert_eq!(
            next.settle_over(&open),
            Settled {
                drop_bot_reply: false,
                drop_chat_lead: false
            }
        );
        assert_eq!(next.intent.as_deref(), Some("returns"));
        // A person gave it back (or closed it) while a turn read it as handed off: the
        // release stands; a handoff made by the turn itself still does.
        for released in [ConversationState::Open, ConversationState::Closed] {
            let mut stored = conversation(ConversationState::Open);
            stored.hand_off("visitor_request", 10);
            let mut stale = stored.clone();
            assert!(stored.release(released, 12));
            assert!(
                !stored.release(released, 13),
                "only a handed-off one is released"
            );
            stale.settle_over(&stored);
            assert_eq!(stale.state, released);
            let mut anew = stored.clone();
            anew.hand_off("topic", 14);
            anew.settle_over(&stored);
            assert_eq!(
                (anew.state, anew.handoff_reason.as_deref()),
                (ConversationState::HandedOff, Some("topic"))
            );
            // A turn that read it open before a handoff and a release, and hands it off
            // itself, keeps its own handoff.
            let mut early = conversation(ConversationState::Open);
            early.hand_off("topic", 15);
            early.settle_over(&stored);
            assert_eq!(
                (early.state, early.handed_off_at, early.releases),
                (ConversationState::HandedOff, Some(15), 1)
            );
        }
    }

    #[test]
    fn states_roles_and_lead_sources_are_stored_as_the_strings_they_were() {
        assert_eq!(json(&ConversationState::HandedOff), "\"handed_off\"");
        assert_eq!(json(&ConversationState::Open), "\"open\"");
        for state in [
            ConversationState::Open,
            ConversationState::HandedOff,
            ConversationState::Closed,
        ] {
            assert_eq!(json(&state), format!("\"{}\"", state.as_str()));
            assert_eq!(ConversationState::parse(state.as_str()), Some(state));
        }
        assert_eq!(json(&Role::Assistant), "\"assistant\"");
        assert_eq!(json(&Role::Agent), "\"agent\"");
        assert_eq!(json(&LeadSource::Chat), "\"chat\"");
        let role: Role = serde_json::from_str("\"user\"").unwrap();
        assert_eq!(role.as_str(), "user");
    }

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn bot_id_accepts_slugs_and_rejects_everything_else() {
        assert!(BotId::parse("docs-2").is_ok());
        for bad in ["", "Docs", "a b", "a/b", "ü", &"x".repeat(65)] {
            assert!(BotId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
    fn message(role: Role, content: &str) -> Message {
        Message {
            id: format!("msg_{content}"),
            role,
            content: content.into(),
            ..Message::default()
        }
    }

    fn chat_lead() -> Lead {
        Lead {
            id: "lead_2".into(),
            bot_id: BotId::parse("docs").unwrap(),
            conversation_id: Some("conv_1".into()),
            user_id: None,
            name: None,
            email: Some("ana@example.org".into()),
            phone: None,
            consent: None,
            obtained: LeadSource::Chat,
            created: 1,
        }
    }

    #[test]
    fn a_first_turn_starts_the_conversation_and_records_the_lead_typed_in_it() {
        let turn = vec![message(Role::User, "hi"), message(Role::Assistant, "hello")];
        let settled = conversation(ConversationState::Open).settle_turn(
            None,
            turn,
            Some(chat_lead()),
            0,
            || unreachable!("no handoff"),
        );
        let kinds: Vec<_> = settled.events.iter().map(TurnEvent::kind).collect();
        assert_eq!(
            kinds,
            [
                event_kinds::CONVERSATION_STARTED,
                event_kinds::LEAD_CAPTURED
            ]
        );
        assert_eq!(
            settled.events[0],
            TurnEvent::Started {
                message: "hi".into()
            }
        );
        assert_eq!(settled.record.lead_id.as_deref(), Some("lead_2"));
        assert_eq!(settled.messages.len(), 2);
        assert!(!settled.reply_dropped && settled.keeps_event(event_kinds::MESSAGE_UNANSWERED));
        // A later turn starts nothing.
        let stored = settled.record.clone();
        let later = stored.clone().settle_turn(
            Some(&stored),
            vec![message(Role::User, "and?")],
            None,
            2,
            || unreachable!("no handoff"),
        );
        assert!(later.events.is_empty(), "{:?}", later.events);
    }

    #[test]
    fn a_handoff_is_announced_once_with_the_visitors_last_message() {
        let stored = conversation(ConversationState::Open);
        let mut handed = stored.clone();
        handed.hand_off("agent", 10);
        // An agent's handoff brings no visitor message: the last stored one is asked for.
        let settled = handed
            .clone()
            .settle_turn(Some(&stored), Vec::new(), None, 4, || {
                Some("where is my order?".into())
            });
        assert_eq!(
            settled.events,
            [TurnEvent::HandedOff {
                reason: Some("agent".into()),
                message: Some("where is my order?".into())
            }]
        );
        // Already handed off: no second announcement.
        let again = handed.clone().settle_turn(
            Some(&settled.record),
            vec![message(Role::User, "hello?")],
            None,
            5,
            || unreachable!("not asked"),
        );
        assert!(again.events.is_empty(), "{:?}", again.events);
    }

    #[test]
    fn a_bot_reply_written_after_a_person_took_over_is_given_up_with_its_events() {
        let mut stored = conversation(ConversationState::Open);
        stored.hand_off("visitor_request", 10);
        stored.lead_id = Some("lead_1".into());
        let turn = vec![message(Role::User, "q"), message(Role::Assistant, "a")];
        let settled = conversation(ConversationState::Open).settle_turn(
            Some(&stored),
            turn,
            Some(chat_lead()),
            3,
            || unreachable!("the handoff is stored already"),
        );
        assert!(settled.reply_dropped);
        assert_eq!(settled.messages, [message(Role::User, "q")]);
        assert_eq!(settled.lead, None, "the first lead stands");
        assert!(settled.events.is_empty(), "{:?}", settled.events);
        assert!(!settled.keeps_event(event_kinds::MESSAGE_UNANSWERED));
        assert!(settled.keeps_event(event_kinds::LEAD_CAPTURED));
    }
    #[test]
    fn crawl_job_records_stored_before_typed_states_still_read() {
        // As the server stored them before `urls_refused` existed, state as a string.
        let old = r#"{"id":"job_1","bot_id":"docs","url":"https://a/","state":"running",
            "phase":"","progress":3,"total":null,"pages_indexed":null,"pages_unchanged":null,
            "pages_skipped":null,"pages_removed":null,"chunks":null,"error":null,
            "created":1,"finished":null}"#;
        let job: CrawlJob = serde_json::from_str(old).unwrap();
        assert_eq!((job.state, job.progress), (JobState::Running, 3));
        assert!(job.state.unfinished() && !JobState::Failed.unfinished());
        let written = serde_json::to_value(&job).unwrap();
        assert_eq!(written["state"], "running");
    }
}
