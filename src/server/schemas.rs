//! The API's schemas of the core's types (domain, store, analytics) that responses and
//! requests carry as they are: the core names no HTTP framework, so their OpenAPI schemas
//! live here, each spelling its type's serde form field for field. A test below checks
//! each against its type's serialised fields, and schemathesis checks every response
//! against the document.

#![allow(dead_code)] // Schema types: only their `ToSchema` is used.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

/// When a bot collects leads: never, whenever a visitor types an email address or phone
/// number, or also by asking (`actions: ["collect_lead"]`) after N visitor messages.
#[derive(Serialize, ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum LeadCapture {
    Off,
    OnDetection,
    AfterMessages { after_messages: u32 },
}

/// An in-process embedder a bot can choose.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub enum EmbedderName {
    /// all-MiniLM-L6-v2, 384 dimensions: fast.
    #[serde(rename = "minilm")]
    MiniLm,
    /// nomic-embed-text-v1.5, 768 dimensions.
    #[serde(rename = "nomic")]
    Nomic,
    /// nomic-embed-text-v1.5 cut to 512 dimensions.
    #[serde(rename = "nomic-512")]
    Nomic512,
    /// nomic-embed-text-v1.5 cut to 256 dimensions.
    #[serde(rename = "nomic-256")]
    Nomic256,
}

/// Which model made a bot's vectors, and their length.
#[derive(Serialize, ToSchema)]
pub struct EmbedderIdView {
    /// `all-MiniLM-L6-v2`, `nomic-embed-text-v1.5`, or a remote engine's model.
    pub model: String,
    pub dim: usize,
}

/// A quick reply: `id` is what `/v1/chat` takes as `intent`, `label` what the button says,
/// `message` what is asked when it is chosen (the label when absent).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub id: String,
    #[schema(min_length = 1, max_length = 100)]
    pub label: String,
    #[schema(min_length = 1, max_length = 1000)]
    pub message: Option<String>,
}

/// How a lead's details were given: the lead form (`POST /v1/leads`) or typed in a chat.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LeadSource {
    Form,
    Chat,
}

/// Contact details a visitor gave.
#[derive(Serialize, ToSchema)]
pub struct Lead {
    /// `lead_` + creation time + random, so ids sort by time.
    pub id: String,
    pub bot_id: String,
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

/// A source an answer cites: its number in the answer (`[n]`), page and passage.
#[derive(Serialize, ToSchema)]
pub struct SourceRef {
    pub index: usize,
    pub title: String,
    pub url: String,
    pub snippet: String,
    pub score: f32,
}

/// Something that happened, as stored and as sent (`id`, `type`, `created`, `data`).
#[derive(Serialize, ToSchema)]
pub struct Event {
    /// `evt_` + creation time + random: the same on every delivery attempt.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds.
    pub created: u64,
    pub data: serde_json::Value,
}

/// One send of a delivery.
#[derive(Serialize, ToSchema)]
pub struct Attempt {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The receiver's HTTP status; absent when the request failed.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// One event's delivery to one webhook.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    pub webhook_id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending`, `delivered` or `failed` (the retry horizon passed).
    pub state: String,
    pub attempts: Vec<Attempt>,
    /// Unix milliseconds of the next attempt, while pending.
    pub next_attempt_ms: Option<u64>,
    /// Unix seconds the event was created.
    pub created: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

/// One day's numbers (or the whole range's, in `totals`).
#[derive(Serialize, ToSchema)]
pub struct Day {
    /// `YYYY-MM-DD` (UTC); absent in totals.
    pub date: Option<String>,
    /// Conversations started.
    pub conversations: u64,
    /// Every message: visitors', the bot's and agents'.
    pub messages: u64,
    /// Replies the bot wrote (not counting handoff notices).
    pub replies: u64,
    pub answered: u64,
    pub unanswered: u64,
    /// Of the conversations started that day, those handed to a person.
    pub handoffs: u64,
    pub leads: u64,
    /// Visitors' ratings given that day (each answer counted by its last rating).
    pub feedback_up: u64,
    pub feedback_down: u64,
    /// Shares of `replies`; of `conversations` for handoffs. Null when there were none.
    pub answered_rate: Option<f64>,
    pub unanswered_rate: Option<f64>,
    pub handoff_rate: Option<f64>,
    /// Time to first token and to the whole answer, in milliseconds.
    pub ttft_ms: Percentiles,
    pub latency_ms: Percentiles,
}

/// Unanswered questions that ask the same thing.
#[derive(Serialize, ToSchema)]
pub struct Gap {
    pub count: u64,
    /// The question closest to the group's centre.
    pub question: String,
    /// Up to five distinct questions of the group.
    pub examples: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Report {
    pub bot_id: String,
    pub from: String,
    pub to: String,
    pub totals: Day,
    pub days: Vec<Day>,
    /// Conversations per chosen intent.
    pub intents: BTreeMap<String, u64>,
    /// The content gaps: unanswered questions grouped by meaning, largest first.
    pub unanswered_questions: Vec<Gap>,
    /// Questions whose answers visitors rated down, grouped the same way.
    pub rated_down_questions: Vec<Gap>,
    /// The golden questions at their last check (after the last crawl or upload), and
    /// those that passed before and fail now.
    pub golden_questions: GoldenSummary,
}

/// The golden questions at their last check.
#[derive(Serialize, ToSchema)]
pub struct GoldenSummary {
    pub total: usize,
    pub passing: usize,
    pub failing: usize,
    /// Added since the last check.
    pub unchecked: usize,
    /// Regressed questions, most recent first.
    pub regressed: Vec<Regressed>,
}

/// A golden question that passed and fails since a later check.
#[derive(Serialize, ToSchema)]
pub struct Regressed {
    pub question_id: String,
    pub question: String,
    /// The answer of the last check that passed it.
    pub old_answer: String,
    /// The answer of the check that failed it.
    pub new_answer: String,
    /// Why it failed: `missing a keyword`, `declined`, `did not cite the expected page`...
    pub reason: String,
    /// When it turned (unix s).
    pub since: u64,
    /// The crawl or upload job after which it turned.
    pub job_id: Option<String>,
}

/// Where a crawl job is.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

/// What a job does: `crawl` a source, or index `upload`ed documents.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Crawl,
    Upload,
}

/// A crawl job: its state, live progress while it runs, and its counts once done.
#[derive(Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub bot_id: String,
    pub url: String,
    pub state: JobState,
    /// While running: what the crawler is doing and how far it got.
    pub phase: String,
    /// Pages fetched so far (each URL once, whatever came of it).
    pub progress: u64,
    /// The pages in sight: every URL found so far, as far as the page budget reaches
    /// (never less than `progress`, growing as pages link to more, equal to `progress`
    /// once the job is `done`).
    pub total: Option<u64>,
    pub pages_indexed: Option<usize>,
    pub pages_unchanged: Option<usize>,
    pub pages_skipped: Option<usize>,
    pub pages_removed: Option<usize>,
    /// URLs not fetched because the SSRF guard refused them (e.g. a sitemap listing a
    /// private address).
    pub urls_refused: Option<usize>,
    pub chunks: Option<usize>,
    /// The first 100 pages and documents the crawl skipped, each with why (`no text layer
    /// ...` for a scanned PDF, `the document could not be read ...`, `no text`, ...).
    pub skipped: Vec<SkippedPage>,
    pub error: Option<String>,
    pub created: u64,
    pub finished: Option<u64>,
    pub scope: Scope,
    /// Most pages the crawl indexes; null: the crawler's default (1,000).
    pub max_pages: Option<usize>,
    /// `crawl` (a source added to the bot) or `upload` (documents sent to
    /// `POST /v1/bots/{id}/documents`, cited under `url`).
    pub kind: JobKind,
    /// After the job: how the bot's golden questions did (`total`, `passed`, `regressed`,
    /// those that passed before and failed now, and `errors`); null when it has none, or
    /// when the job changed nothing and every question already had its verdict.
    pub golden: Option<GoldenRun>,
}

/// A golden-question check's counts.
#[derive(Serialize, ToSchema)]
pub struct GoldenRun {
    pub total: usize,
    pub passed: usize,
    /// Passed at the last check, failed at this one.
    pub regressed: usize,
    /// Could not be asked this time (they keep their last verdict).
    pub errors: usize,
}

/// A page or document a crawl left out.
#[derive(Serialize, ToSchema)]
pub struct SkippedPage {
    pub url: String,
    pub reason: String,
}

/// How far a crawl goes from its start URL: `path`, pages under the start URL's
/// directory; `host`, the start URL's whole host (same scheme and port).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Path,
    Host,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Value, json};
    use utoipa::PartialSchema;

    use super::*;
    use crate::domain::BotId;

    /// The property names a schema lists.
    fn properties<T: PartialSchema>() -> BTreeSet<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no properties: {schema}"))
            .keys()
            .cloned()
            .collect()
    }

    /// The field names a value serialises with (all optional ones present).
    fn fields(value: impl serde::Serialize) -> BTreeSet<String> {
        let value = serde_json::to_value(value).unwrap();
        value.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn each_schema_names_the_fields_its_type_serialises() {
        let bot = BotId::parse("docs").unwrap();
        let lead = crate::domain::Lead {
            id: "lead_1".into(),
            bot_id: bot.clone(),
            conversation_id: None,
            user_id: None,
            name: None,
            email: None,
            phone: None,
            consent: None,
            obtained: crate::domain::LeadSource::Chat,
            created: 1,
        };
        assert_eq!(properties::<Lead>(), fields(&lead));
        let intent = crate::domain::Intent {
            id: "a".into(),
            label: "A".into(),
            message: Some("a?".into()),
        };
        assert_eq!(properties::<Intent>(), fields(&intent));
        let source = crate::domain::SourceRef {
            index: 1,
            title: String::new(),
            url: String::new(),
            snippet: String::new(),
            score: 0.5,
        };
        assert_eq!(properties::<SourceRef>(), fields(&source));
        let event = crate::ports::Event {
            id: "evt_1".into(),
            kind: "lead.captured".into(),
            created: 1,
            bot_id: Some(bot.clone()),
            data: json!({}),
        };
        assert_eq!(properties::<Event>(), fields(&event));
        let attempt = crate::ports::Attempt {
            at_ms: 1,
            status: Some(200),
            error: None,
            latency_ms: 1,
        };
        assert_eq!(properties::<Attempt>(), fields(&attempt));
        let delivery = crate::ports::Delivery {
            webhook_id: "whk_1".into(),
            event_id: "evt_1".into(),
            kind: "lead.captured".into(),
            state: "pending".into(),
            attempts: vec![attempt],
            next_attempt_ms: None,
            created: 1,
        };
        assert_eq!(properties::<Delivery>(), fields(&delivery));
        let day = crate::analytics::Day {
            date: Some("2026-12-02".into()),
            ..Default::default()
        };
        assert_eq!(properties::<Day>(), fields(&day));
        assert_eq!(properties::<Percentiles>(), fields(day.ttft_ms));
        let gap = crate::analytics::Gap {
            count: 1,
            question: "q".into(),
            examples: Vec::new(),
        };
        assert_eq!(properties::<Gap>(), fields(&gap));
        let report = crate::analytics::Report {
            bot_id: bot.clone(),
            from: String::new(),
            to: String::new(),
            totals: day.clone(),
            days: Vec::new(),
            intents: Default::default(),
            unanswered_questions: Vec::new(),
            rated_down_questions: Vec::new(),
            golden_questions: Default::default(),
        };
        assert_eq!(properties::<Report>(), fields(&report));
        assert_eq!(
            properties::<GoldenSummary>(),
            fields(&report.golden_questions)
        );
        let regressed = crate::analytics::Regressed {
            question_id: "gq_1".into(),
            question: "q".into(),
            old_answer: "a".into(),
            new_answer: "b".into(),
            reason: "declined".into(),
            since: 1,
            job_id: None,
        };
        assert_eq!(properties::<Regressed>(), fields(&regressed));
        let source = crate::domain::SourceSchedule::once("https://a/".into());
        let job = crate::domain::CrawlJob::queued("job_1".into(), bot, &source, 1);
        assert_eq!(properties::<JobView>(), fields(&job));
    }

    #[test]
    fn the_enums_spell_their_values_as_serde_does() {
        let modes: Vec<Value> = [
            crate::domain::LeadCapture::Off,
            crate::domain::LeadCapture::OnDetection,
            crate::domain::LeadCapture::AfterMessages { after_messages: 2 },
        ]
        .iter()
        .map(|m| serde_json::to_value(m).unwrap()["mode"].clone())
        .collect();
        let schema = serde_json::to_value(LeadCapture::schema())
            .unwrap()
            .to_string();
        for mode in &modes {
            assert!(schema.contains(&mode.to_string()), "{mode} not in {schema}");
        }
        let sources = serde_json::to_value(LeadSource::schema()).unwrap()["enum"].clone();
        assert_eq!(sources, json!(["form", "chat"]));
        let chat = serde_json::to_value(crate::domain::LeadSource::Chat).unwrap();
        assert_eq!(chat, json!("chat"));
        let states = serde_json::to_value(JobState::schema()).unwrap()["enum"].clone();
        use crate::domain::JobState as S;
        let stored = [S::Queued, S::Running, S::Done, S::Failed].map(|s| json!(s));
        assert_eq!(states, json!(stored));
        let scopes = serde_json::to_value(Scope::schema()).unwrap()["enum"].clone();
        use crate::domain::Scope as C;
        assert_eq!(scopes, json!([C::Path, C::Host]));
        let kinds = serde_json::to_value(JobKind::schema()).unwrap()["enum"].clone();
        use crate::domain::JobKind as K;
        assert_eq!(kinds, json!([K::Crawl, K::Upload]));
    }
}
