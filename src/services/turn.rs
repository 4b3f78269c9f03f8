//! One turn of a conversation, decided and stored without HTTP: a conversation a person
//! has gets no bot answer, a visitor asking for a person (or about a handoff topic) is
//! handed off, otherwise the bot answers (from the answer cache or the model), adds its
//! fallback when it could not, asks for a lead when the bot's settings say so, and the
//! whole turn is written in one transaction with its events.
//!
//! The chat routes (docent's own and the OpenAI-compatible one) parse, authorise and admit
//! a request, then call [`TurnService::answer`]; what streams to the client goes through
//! its two callbacks.

use std::time::{Duration, Instant};

use serde_json::json;

use super::cache::AnswerCache;
use crate::chat::{self, Answer, AskOptions, SourceRef};
use crate::domain::{BotId, BotSettings, Conversation, Lead, LeadCapture, Message, Role};
use crate::llm::{ChatMessage, Finish, Generator};
use crate::ports::{Appended, NewEvent, Storage, TurnExtras};
use crate::retrieval::Retriever;
use crate::telemetry::unix_now;

/// What the bot says when it hands a conversation to a person.
pub const HANDOFF_NOTICE: &str =
    "I've passed your question to our team, and a person will reply here.";

/// A validated turn, ready to answer.
#[derive(Debug, Clone)]
pub struct Turn {
    pub bot: BotId,
    /// The bot's content version (its last ingest), for the answer cache.
    pub bot_version: u64,
    pub settings: BotSettings,
    pub conversation: Conversation,
    pub history: Vec<ChatMessage>,
    pub question: String,
    /// Whose turn this is in the generation queue.
    pub tenant: String,
    /// When the request came in (ms): an erasure of its user after this drops the turn.
    pub started_ms: u64,
}

/// What a turn came to.
#[derive(Debug)]
pub struct TurnOutcome {
    pub answer: Answer,
    /// The bot's message; none when a person has the conversation.
    pub reply: Option<Message>,
    /// What the client should do next (`collect_lead`).
    pub actions: Vec<&'static str>,
    /// The bot's contact text, when it could not answer or handed off.
    pub fallback: Option<String>,
    /// A person has the conversation now.
    pub handed_off: bool,
    /// The answer came from the answer cache.
    pub cached: bool,
}

impl TurnOutcome {
    /// Why the turn ended: `handed_off`, `cancelled`, `unanswered`, `length` or `stop`.
    pub fn finish_reason(&self) -> &'static str {
        if self.handed_off {
            return "handed_off";
        }
        answer_finish_reason(&self.answer)
    }
}

/// Who hears about a stored turn as it happens (the live feeds of conversations).
pub trait TurnListener: Sync {
    /// The messages a turn just stored.
    fn appended(&self, appended: &Appended);
    /// The conversation's state changed (a handoff).
    fn state_changed(&self, conversation: &Conversation);
}

/// Nobody listens.
impl TurnListener for () {
    fn appended(&self, _: &Appended) {}
    fn state_changed(&self, _: &Conversation) {}
}

/// What answering a turn uses: the store, search, the generator (already behind the fair
/// queue when there is one), the answer cache, and the listener of stored turns.
pub struct TurnService<'a> {
    pub store: &'a dyn Storage,
    pub retriever: &'a Retriever,
    pub generator: &'a dyn Generator,
    pub answers: Option<&'a AnswerCache>,
    pub listener: &'a dyn TurnListener,
    /// How long generation may go on: past it the answer stops where it is (`cancelled`).
    pub timeout: Duration,
}

/// The stream of a turn as it is answered: the retrieved sources, then text pieces (`false`
/// from `on_token` stops generation: the client left).
pub struct Sink<'a> {
    pub on_retrieved: &'a mut dyn FnMut(&[SourceRef]),
    pub on_token: &'a mut dyn FnMut(&str) -> bool,
}

impl TurnService<'_> {
    /// Answers the turn (blocking) and stores the question, the answer, any lead the
    /// visitor typed and the turn's events in one transaction.
    pub fn answer(
        &self,
        turn: &Turn,
        options: &AskOptions,
        sink: Sink<'_>,
    ) -> anyhow::Result<TurnOutcome> {
        tracing::debug!(
            target: "docent::chat",
            bot = %turn.bot,
            conversation = %turn.conversation.id,
            message = %crate::telemetry::redact(&turn.question),
            "question"
        );
        let question = Message {
            id: new_message_id(),
            role: Role::User,
            content: turn.question.clone(),
            created: unix_now(),
            ..Message::default()
        };
        let mut conversation = turn.conversation.clone();
        conversation.updated = unix_now();
        let lead = detected_lead(turn, &conversation);
        if conversation.handed_off() {
            return self.keep_for_person(turn, &conversation, question, lead);
        }
        if let Some(reason) = handoff_reason(turn) {
            return self.hand_off(turn, conversation, question, lead, reason, sink);
        }
        self.answer_with_bot(turn, options, conversation, question, lead, sink)
    }

    /// A person has this conversation: keep the message for them, say nothing.
    fn keep_for_person(
        &self,
        turn: &Turn,
        conversation: &Conversation,
        question: Message,
        lead: Option<Lead>,
    ) -> anyhow::Result<TurnOutcome> {
        let extras = TurnExtras {
            lead,
            started_ms: Some(turn.started_ms),
            ..TurnExtras::default()
        };
        let appended = self.store.append_turn(conversation, &[question], extras)?;
        self.listener.appended(&appended);
        Ok(TurnOutcome {
            answer: empty_answer(String::new()),
            reply: None,
            actions: Vec::new(),
            fallback: None,
            handed_off: true,
            cached: false,
        })
    }

    /// The visitor wants a person: the notice (with the bot's fallback), and the
    /// conversation handed off in the same transaction.
    fn hand_off(
        &self,
        turn: &Turn,
        mut conversation: Conversation,
        question: Message,
        lead: Option<Lead>,
        reason: &str,
        sink: Sink<'_>,
    ) -> anyhow::Result<TurnOutcome> {
        let has_lead = conversation.lead_id.is_some() || lead.is_some();
        let fallback = turn.settings.fallback.clone();
        let mut text = HANDOFF_NOTICE.to_string();
        if let Some(fallback) = &fallback {
            text.push_str("\n\n");
            text.push_str(fallback);
        }
        (sink.on_retrieved)(&[]);
        (sink.on_token)(&text);
        conversation.hand_off(reason, unix_now());
        let reply = Message {
            id: new_message_id(),
            role: Role::Assistant,
            content: text.clone(),
            created: unix_now(),
            answered: Some(false),
            finish_reason: Some("handed_off".into()),
            ..Message::default()
        };
        let extras = TurnExtras {
            lead,
            started_ms: Some(turn.started_ms),
            ..TurnExtras::default()
        };
        let appended = self
            .store
            .append_turn(&conversation, &[question, reply.clone()], extras)?;
        self.listener.appended(&appended);
        self.listener.state_changed(&appended.conversation);
        Ok(TurnOutcome {
            answer: empty_answer(text),
            reply: Some(reply),
            actions: if has_lead {
                vec![]
            } else {
                vec!["collect_lead"]
            },
            fallback,
            handed_off: true,
            cached: false,
        })
    }

    /// The bot answers; an answer it could not give carries the fallback and a
    /// `message.unanswered` event, and the lead-capture setting decides `collect_lead`.
    fn answer_with_bot(
        &self,
        turn: &Turn,
        options: &AskOptions,
        conversation: Conversation,
        question: Message,
        lead: Option<Lead>,
        mut sink: Sink<'_>,
    ) -> anyhow::Result<TurnOutcome> {
        let has_lead = conversation.lead_id.is_some() || lead.is_some();
        let fallback = turn.settings.fallback.clone();
        let (mut answer, cached) = self.answer_text(turn, options, &mut sink)?;
        let unanswered = !answer.answered && answer.finish != Some(Finish::Cancelled);
        if unanswered && let Some(fallback) = &fallback {
            let piece = format!("\n\n{fallback}");
            (sink.on_token)(&piece);
            answer.answer.push_str(&piece);
        }
        let reply = reply_message(&answer);
        let mut events = Vec::new();
        if unanswered {
            events.push(NewEvent {
                kind: crate::events::MESSAGE_UNANSWERED,
                data: json!({
                    "message_id": reply.id,
                    "question": turn.question,
                    "answer": reply.content,
                }),
            });
        }
        let wants_lead = !has_lead && wants_lead(turn, unanswered);
        let appended = self.store.append_turn(
            &conversation,
            &[question, reply.clone()],
            TurnExtras {
                events,
                lead,
                started_ms: Some(turn.started_ms),
            },
        )?;
        self.listener.appended(&appended);
        if appended.reply_dropped {
            // A person took the conversation over while this answer was being written.
            return Ok(TurnOutcome {
                answer,
                reply: None,
                actions: Vec::new(),
                fallback: None,
                handed_off: true,
                cached,
            });
        }
        Ok(TurnOutcome {
            answer,
            reply: Some(reply),
            actions: if wants_lead {
                vec!["collect_lead"]
            } else {
                vec![]
            },
            fallback: if unanswered { fallback } else { None },
            handed_off: false,
            cached,
        })
    }

    /// The answer's text: a first turn may come from the answer cache, everything else is
    /// answered afresh (and a first turn that finished is cached). `true`: from the cache.
    fn answer_text(
        &self,
        turn: &Turn,
        options: &AskOptions,
        sink: &mut Sink<'_>,
    ) -> anyhow::Result<(Answer, bool)> {
        // The bot's own settings refine the server's defaults.
        let options = &options.clone().for_bot(&turn.settings);
        let cache = self.answers.filter(|_| turn.history.is_empty());
        let started = Instant::now();
        if let Some(mut answer) =
            cache.and_then(|c| c.get(&turn.bot, turn.bot_version, &turn.question))
        {
            (sink.on_retrieved)(&answer.retrieved);
            (sink.on_token)(&answer.answer);
            // This answer's own timings, not those of the turn that generated it.
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            answer.timings.ttft_ms = elapsed;
            answer.timings.total_ms = elapsed;
            return Ok((answer, true));
        }
        let deadline = started + self.timeout;
        let on_token = &mut *sink.on_token;
        // Which of the two stopped the answer: the deadline, or the reader leaving.
        let (mut timed_out, mut left) = (false, false);
        let mut answer = chat::answer_turn(
            self.retriever,
            self.generator,
            &turn.bot,
            &turn.history,
            &turn.question,
            options,
            sink.on_retrieved,
            &mut |piece| {
                if Instant::now() >= deadline {
                    timed_out = true;
                    return false;
                }
                let open = on_token(piece);
                left |= !open;
                open
            },
        )?;
        let finished = !matches!(answer.finish, Some(Finish::Cancelled | Finish::Length));
        if let (Some(cache), true) = (cache, finished) {
            cache.put(&turn.bot, turn.bot_version, &turn.question, &answer);
        }
        // Time ran out before a sentence could be shown (the claim check holds them back
        // until one is supported) while the reader is still there (an empty piece asks):
        // they are owed a reply, and what can honestly be said is the decline, with its
        // fallback and event. A reader who left gets nothing stored for them.
        let cut_before_any_text = answer.finish == Some(Finish::Cancelled)
            && answer.answer.is_empty()
            && timed_out
            && !left;
        if cut_before_any_text && on_token("") {
            answer.answer = chat::NOT_IN_SOURCES.to_string();
            answer.finish = Some(Finish::Stop);
            on_token(&answer.answer);
        }
        Ok((answer, false))
    }
}

/// Why a turn goes to a person before the bot answers: the visitor asked for one
/// (`visitor_request`), or asked about one of the bot's `handoff_topics` (`topic`).
fn handoff_reason(turn: &Turn) -> Option<&'static str> {
    if crate::engage::wants_human(&turn.question) {
        Some("visitor_request")
    } else if turn
        .settings
        .handoff_topics
        .iter()
        .any(|topic| crate::engage::mentions_topic(&turn.question, topic))
    {
        Some("topic")
    } else {
        None
    }
}

/// Whether the bot's lead capture asks for contact details after this turn (the
/// conversation has none yet).
fn wants_lead(turn: &Turn, unanswered: bool) -> bool {
    let visitor_messages = 1 + turn.history.iter().filter(|m| m.role == "user").count();
    match turn.settings.lead_capture {
        LeadCapture::Off => false,
        LeadCapture::OnDetection => unanswered,
        LeadCapture::AfterMessages { after_messages } => {
            unanswered || visitor_messages >= after_messages as usize
        }
    }
}

fn reply_message(answer: &Answer) -> Message {
    Message {
        id: new_message_id(),
        role: Role::Assistant,
        content: answer.answer.clone(),
        sources: answer.sources.clone(),
        created: unix_now(),
        answered: Some(answer.answered),
        finish_reason: Some(answer_finish_reason(answer).into()),
        ttft_ms: Some(answer.timings.ttft_ms as u64),
        total_ms: Some(answer.timings.total_ms as u64),
        ..Message::default()
    }
}

fn answer_finish_reason(answer: &Answer) -> &'static str {
    match answer.finish {
        Some(Finish::Cancelled) => "cancelled",
        _ if !answer.answered => "unanswered",
        Some(Finish::Length) => "length",
        _ => "stop",
    }
}

/// An answer the model did not write (a handoff notice, or nothing).
fn empty_answer(text: String) -> Answer {
    Answer {
        answer: text,
        answered: false,
        sources: Vec::new(),
        timings: Default::default(),
        retrieved: Vec::new(),
        answerable: None,
        finish: Some(Finish::Stop),
        unsupported: Vec::new(),
        removed: Vec::new(),
    }
}

/// A lead from contact details the visitor typed, when the bot captures leads and the
/// conversation has none yet.
fn detected_lead(turn: &Turn, conversation: &Conversation) -> Option<Lead> {
    if !turn.settings.lead_capture.enabled() || conversation.lead_id.is_some() {
        return None;
    }
    let contact = crate::engage::find_contact(&turn.question)?;
    Some(Lead {
        id: crate::ids::lead(),
        bot_id: turn.bot.clone(),
        conversation_id: Some(conversation.id.clone()),
        user_id: conversation.user_id.clone(),
        name: None,
        email: contact.email,
        phone: contact.phone,
        consent: None,
        obtained: crate::domain::LeadSource::Chat,
        created: unix_now(),
    })
}

fn new_message_id() -> String {
    crate::ids::message()
}

/// Earlier answers go back to the model without their `[n]` marks: the numbers referred to
/// that turn's sources, not this one's.
pub fn strip_citations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        match tail.find(']') {
            Some(close)
                if tail[1..close]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
                    && close > 1 =>
            {
                rest = &tail[close + 1..];
            }
            _ => {
                out.push('[');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::domain::{Bot, ConversationState, NOT_IN_SOURCES};
    use crate::embed::FakeEmbedder;
    use crate::ingest::{Document, IngestRequest, Source};
    use crate::llm::FakeGenerator;
    use crate::ports::{ContentStore, ConversationStore, OutboxStore, Webhook};
    use crate::store::Store;

    const FACT: &str = "The espresso machine must be descaled every month with citric acid.";

    /// A store with bot `docs` (one page holding `FACT`, fallback text, and a webhook
    /// that takes every event, so the outbox shows what a turn emitted).
    fn fixture(settings: BotSettings) -> (tempfile::TempDir, Store, Arc<FakeEmbedder>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let embedder = Arc::new(FakeEmbedder::default());
        let bot = BotId::parse("docs").unwrap();
        let request = IngestRequest {
            bot: bot.clone(),
            name: Some("Docs".into()),
            source: Source::Documents {
                name: "docs".into(),
                documents: Arc::new(vec![Document {
                    url: "https://docs.example/care".into(),
                    title: "Care".into(),
                    text: FACT.into(),
                }]),
            },
            crawl: Default::default(),
            chunk: Default::default(),
            test: false,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(crate::ingest::run(
                Arc::new(store.clone()),
                embedder.clone(),
                request,
                &(),
            ))
            .unwrap();
        store
            .update_bot(&bot, &mut |b: &mut Bot| b.settings = settings.clone())
            .unwrap();
        store
            .put_webhook(&Webhook {
                id: "whk_all".into(),
                bot_id: bot,
                url: "http://127.0.0.1:9/hook".into(),
                events: vec!["*".into()],
                secret: "whsec_x".into(),
                previous_secret: None,
                previous_until: None,
                created: 1,
            })
            .unwrap();
        (dir, store, embedder)
    }

    /// Records what the live feed would have been told.
    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    impl TurnListener for Heard {
        fn appended(&self, appended: &Appended) {
            let mut heard = self.0.lock().unwrap();
            for m in &appended.messages {
                heard.push(format!("{}:{}", m.role.as_str(), m.content));
            }
        }
        fn state_changed(&self, conversation: &Conversation) {
            let state = serde_json::to_value(conversation.state).unwrap();
            self.0
                .lock()
                .unwrap()
                .push(format!("state:{}", state.as_str().unwrap()));
        }
    }

    fn turn(store: &Store, question: &str, conversation: Conversation) -> Turn {
        let bot = store.get_bot(&conversation.bot_id).unwrap();
        Turn {
            bot: bot.id.clone(),
            bot_version: bot.updated_unix,
            settings: bot.settings,
            conversation,
            history: Vec::new(),
            question: question.into(),
            tenant: "key_x".into(),
            started_ms: crate::ids::now_ms(),
        }
    }

    fn new_conversation(id: &str) -> Conversation {
        crate::domain::fixtures::conversation(id, "docs", None)
    }

    /// Answers `turn` with the fakes, collecting what was streamed.
    fn ask(
        store: &Store,
        embedder: &Arc<FakeEmbedder>,
        cache: Option<&AnswerCache>,
        listener: &dyn TurnListener,
        turn: &Turn,
    ) -> (TurnOutcome, String) {
        ask_with(&FakeGenerator, store, embedder, cache, listener, turn)
    }

    /// `ask`, with `generator` writing the answer.
    fn ask_with(
        generator: &dyn Generator,
        store: &Store,
        embedder: &Arc<FakeEmbedder>,
        cache: Option<&AnswerCache>,
        listener: &dyn TurnListener,
        turn: &Turn,
    ) -> (TurnOutcome, String) {
        let within = (Duration::from_secs(60), true);
        ask_within(within, generator, store, embedder, cache, listener, turn)
    }

    /// `ask_with`, the answer's generation capped at `within.0`, the reader staying
    /// (`within.1`) or gone from the start.
    fn ask_within(
        (timeout, stays): (Duration, bool),
        generator: &dyn Generator,
        store: &Store,
        embedder: &Arc<FakeEmbedder>,
        cache: Option<&AnswerCache>,
        listener: &dyn TurnListener,
        turn: &Turn,
    ) -> (TurnOutcome, String) {
        let retriever = crate::app::retriever(Arc::new(store.clone()), embedder.clone());
        let service = TurnService {
            store,
            retriever: &retriever,
            generator,
            answers: cache,
            listener,
            timeout,
        };
        let mut streamed = String::new();
        let options = AskOptions {
            min_score: 0.3,
            ..AskOptions::default()
        };
        let sink = Sink {
            on_retrieved: &mut |_| {},
            on_token: &mut |piece| {
                if stays {
                    streamed.push_str(piece);
                }
                stays
            },
        };
        let outcome = service.answer(turn, &options, sink).unwrap();
        (outcome, streamed)
    }

    fn emitted(store: &Store) -> Vec<String> {
        let due = store
            .due_deliveries(u64::MAX, 100, &HashSet::new(), 0)
            .unwrap();
        due.into_iter().map(|d| d.event.kind).collect()
    }

    fn with_fallback() -> BotSettings {
        BotSettings {
            fallback: Some("Write to help@docs.example.".into()),
            ..BotSettings::default()
        }
    }

    #[test]
    fn a_visitor_asking_for_a_person_is_handed_off_with_the_notice_and_the_fallback() {
        let (_dir, store, embedder) = fixture(with_fallback());
        let heard = Heard::default();
        let asked = turn(
            &store,
            "Can I talk to a human please?",
            new_conversation("c_1"),
        );
        let (outcome, streamed) = ask(&store, &embedder, None, &heard, &asked);
        let notice = format!("{HANDOFF_NOTICE}\n\nWrite to help@docs.example.");
        assert_eq!(streamed, notice);
        assert!(outcome.handed_off);
        assert_eq!(outcome.finish_reason(), "handed_off");
        assert_eq!(outcome.actions, ["collect_lead"]);
        let stored = store.get_conversation("c_1").unwrap();
        assert_eq!(stored.state, ConversationState::HandedOff);
        assert_eq!(stored.handoff_reason.as_deref(), Some("visitor_request"));
        let messages = store.messages("c_1").unwrap();
        let texts: Vec<_> = messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["Can I talk to a human please?", notice.as_str()]);
        let heard = heard.0.lock().unwrap().clone();
        assert_eq!(heard.last().unwrap(), "state:handed_off");
        assert!(emitted(&store).contains(&"conversation.handoff".to_string()));
    }

    #[test]
    fn a_conversation_a_person_has_keeps_the_question_and_the_bot_says_nothing() {
        let (_dir, store, embedder) = fixture(BotSettings::default());
        let mut conversation = new_conversation("c_2");
        conversation.hand_off("visitor_request", 2);
        let asked = turn(&store, "How often do I descale it?", conversation);
        let (outcome, streamed) = ask(&store, &embedder, None, &(), &asked);
        assert!(outcome.handed_off && outcome.reply.is_none());
        assert_eq!(streamed, "");
        let messages = store.messages("c_2").unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].role, Role::User);
    }

    #[test]
    fn an_answer_from_the_sources_is_stored_cited_and_cached_for_the_next_first_turn() {
        let (_dir, store, embedder) = fixture(BotSettings::default());
        let cache = AnswerCache::new(Duration::from_secs(60)).unwrap();
        let question = "How often must the espresso machine be descaled?";
        let first = turn(&store, question, new_conversation("c_3"));
        let (outcome, streamed) = ask(&store, &embedder, Some(&cache), &(), &first);
        assert!(outcome.answer.answered && !outcome.cached, "{outcome:?}");
        assert_eq!(streamed, format!("{FACT} [1]"));
        assert_eq!(outcome.finish_reason(), "stop");
        let reply = outcome.reply.unwrap();
        assert_eq!(reply.sources[0].url, "https://docs.example/care");
        let second = turn(&store, question, new_conversation("c_4"));
        let (again, streamed_again) = ask(&store, &embedder, Some(&cache), &(), &second);
        assert!(again.cached);
        assert_eq!(streamed_again, streamed);
        assert_eq!(store.messages("c_4").unwrap()[1].content, streamed);
        assert!(!emitted(&store).contains(&"message.unanswered".to_string()));
    }

    #[test]
    fn a_question_outside_the_sources_gets_the_fallback_an_event_and_a_lead_request() {
        let settings = BotSettings {
            lead_capture: LeadCapture::OnDetection,
            ..with_fallback()
        };
        let (_dir, store, embedder) = fixture(settings);
        let asked = turn(
            &store,
            "Who won the 1998 football world cup?",
            new_conversation("c_5"),
        );
        let (outcome, streamed) = ask(&store, &embedder, None, &(), &asked);
        assert!(!outcome.answer.answered);
        assert_eq!(outcome.finish_reason(), "unanswered");
        assert!(
            streamed.ends_with("\n\nWrite to help@docs.example."),
            "{streamed}"
        );
        assert_eq!(outcome.actions, ["collect_lead"]);
        assert_eq!(
            outcome.fallback.as_deref(),
            Some("Write to help@docs.example.")
        );
        assert!(emitted(&store).contains(&"message.unanswered".to_string()));
    }

    /// Writes an answer through `on_token`; says how it finished.
    type Script = fn(&mut dyn FnMut(&str) -> bool) -> anyhow::Result<Finish>;

    /// A model whose answer its script writes, over FakeGenerator.
    struct Writing(Script);

    impl Generator for Writing {
        fn generate(
            &self,
            messages: &[ChatMessage],
            params: &crate::llm::GenParams,
            on_token: &mut dyn FnMut(&str) -> bool,
        ) -> anyhow::Result<crate::llm::GenStats> {
            let mut stats = FakeGenerator.generate(messages, params, &mut |_| true)?;
            stats.completion_tokens = 2;
            stats.finish = (self.0)(on_token)?;
            Ok(stats)
        }

        fn classify(&self, messages: &[ChatMessage], labels: &[&str]) -> anyhow::Result<Vec<f32>> {
            FakeGenerator.classify(messages, labels)
        }

        fn count_tokens(&self, text: &str) -> anyhow::Result<usize> {
            FakeGenerator.count_tokens(text)
        }

        fn context_size(&self) -> usize {
            FakeGenerator.context_size()
        }
    }

    /// A model that answers with a fact of its own, in two pieces.
    const INVENTING: Writing = Writing(|on_token| {
        for piece in [
            "The espresso machine must be descaled ",
            "every 14 days [1].",
        ] {
            if !on_token(piece) {
                return Ok(Finish::Cancelled);
            }
        }
        Ok(Finish::Stop)
    });

    /// A model that writes a sentence no passage supports, then thinks until told to stop
    /// (by the deadline; an error after a few seconds if none comes).
    const PONDERING: Writing = Writing(|on_token| {
        if on_token("Good question, let me think. ") {
            let thinking = Instant::now();
            while on_token("") {
                anyhow::ensure!(thinking.elapsed() < Duration::from_secs(5), "no deadline");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(Finish::Cancelled)
    });

    #[test]
    fn an_answer_the_claim_check_empties_is_the_decline_with_its_event() {
        let (_dir, store, embedder) = fixture(with_fallback());
        let asked = turn(
            &store,
            "How often must the espresso machine be descaled?",
            new_conversation("c_9"),
        );
        let (outcome, streamed) = ask_with(&INVENTING, &store, &embedder, None, &(), &asked);
        assert!(!outcome.answer.answered, "{outcome:?}");
        assert_eq!(outcome.finish_reason(), "unanswered");
        assert_eq!(
            outcome.answer.removed,
            ["The espresso machine must be descaled every 14 days."]
        );
        // The visitor never saw the invented interval: only the decline and the fallback.
        assert_eq!(
            streamed,
            format!("{NOT_IN_SOURCES}\n\nWrite to help@docs.example.")
        );
        assert_eq!(store.messages("c_9").unwrap()[1].content, streamed);
        assert!(emitted(&store).contains(&"message.unanswered".to_string()));
    }

    #[test]
    fn time_running_out_while_the_claim_check_holds_text_is_the_decline() {
        let (_dir, store, embedder) = fixture(with_fallback());
        let question = "How often must the espresso machine be descaled?";
        // The gate holds the unsupported opening until the deadline passes.
        let asked = turn(&store, question, new_conversation("c_10"));
        let within = (Duration::from_millis(200), true);
        let (outcome, streamed) =
            ask_within(within, &PONDERING, &store, &embedder, None, &(), &asked);
        assert!(!outcome.answer.answered, "{outcome:?}");
        assert_eq!(outcome.finish_reason(), "unanswered");
        assert_eq!(
            streamed,
            format!("{NOT_IN_SOURCES}\n\nWrite to help@docs.example.")
        );
        assert_eq!(store.messages("c_10").unwrap()[1].content, streamed);
        assert!(emitted(&store).contains(&"message.unanswered".to_string()));
        // A reader gone before the deadline gets no decline, and no event says otherwise.
        let (_dir, store, embedder) = fixture(with_fallback());
        let asked = turn(&store, question, new_conversation("c_11"));
        let within = (Duration::ZERO, false);
        let (outcome, _) = ask_within(within, &INVENTING, &store, &embedder, None, &(), &asked);
        assert_eq!(outcome.finish_reason(), "cancelled");
        assert_eq!(store.messages("c_11").unwrap()[1].content, "");
        assert!(!emitted(&store).contains(&"message.unanswered".to_string()));
    }

    #[test]
    fn contact_details_typed_in_a_turn_become_the_conversations_lead() {
        let settings = BotSettings {
            lead_capture: LeadCapture::OnDetection,
            ..BotSettings::default()
        };
        let (_dir, store, embedder) = fixture(settings);
        let question = "Who won the 1998 world cup? Mail me at ana@example.org";
        let asked = turn(&store, question, new_conversation("c_6"));
        let (outcome, _) = ask(&store, &embedder, None, &(), &asked);
        assert!(outcome.actions.is_empty(), "a lead is there already");
        let leads = store
            .leads(&BotId::parse("docs").unwrap(), None, 10)
            .unwrap();
        assert_eq!(leads.len(), 1);
        assert_eq!(leads[0].email.as_deref(), Some("ana@example.org"));
        assert_eq!(leads[0].conversation_id.as_deref(), Some("c_6"));
        assert!(emitted(&store).contains(&"lead.captured".to_string()));
    }

    /// The fake model, but a person takes the conversation over (through the store, as the
    /// handoff route does) while it writes.
    struct TakenOverMidAnswer<'a> {
        store: &'a Store,
        conversation: Conversation,
    }

    impl Generator for TakenOverMidAnswer<'_> {
        fn generate(
            &self,
            messages: &[ChatMessage],
            params: &crate::llm::GenParams,
            on_token: &mut dyn FnMut(&str) -> bool,
        ) -> anyhow::Result<crate::llm::GenStats> {
            let mut taken = self.conversation.clone();
            taken.hand_off("agent", 5);
            self.store
                .append_turn(&taken, &[], TurnExtras::default())
                .unwrap();
            FakeGenerator.generate(messages, params, on_token)
        }

        fn classify(&self, messages: &[ChatMessage], labels: &[&str]) -> anyhow::Result<Vec<f32>> {
            FakeGenerator.classify(messages, labels)
        }

        fn count_tokens(&self, text: &str) -> anyhow::Result<usize> {
            FakeGenerator.count_tokens(text)
        }

        fn context_size(&self) -> usize {
            FakeGenerator.context_size()
        }
    }

    #[test]
    fn a_reply_finished_after_a_person_took_over_is_not_stored_or_returned() {
        let (_dir, store, embedder) = fixture(BotSettings::default());
        let conversation = new_conversation("c_7");
        store
            .append_turn(&conversation, &[], TurnExtras::default())
            .unwrap();
        let retriever = crate::app::retriever(Arc::new(store.clone()), embedder.clone());
        let generator = TakenOverMidAnswer {
            store: &store,
            conversation: conversation.clone(),
        };
        let service = TurnService {
            store: &store,
            retriever: &retriever,
            generator: &generator,
            answers: None,
            listener: &(),
            timeout: Duration::from_secs(60),
        };
        let options = AskOptions {
            min_score: 0.3,
            ..AskOptions::default()
        };
        let asked = turn(
            &store,
            "How often must the espresso machine be descaled?",
            conversation,
        );
        let sink = Sink {
            on_retrieved: &mut |_| {},
            on_token: &mut |_| true,
        };
        let outcome = service.answer(&asked, &options, sink).unwrap();
        assert!(outcome.handed_off && outcome.reply.is_none(), "{outcome:?}");
        assert_eq!(outcome.finish_reason(), "handed_off");
        let messages = store.messages("c_7").unwrap();
        let roles: Vec<_> = messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::User],
            "the question stays, the reply does not"
        );
        let stored = store.get_conversation("c_7").unwrap();
        assert_eq!(stored.handoff_reason.as_deref(), Some("agent"));
        assert!(!emitted(&store).contains(&"message.unanswered".to_string()));
    }

    #[test]
    fn earlier_answers_lose_their_citation_marks_only() {
        assert_eq!(
            strip_citations("Descale monthly [1][2]. See vec![3] and [a]."),
            "Descale monthly . See vec! and [a]."
        );
        assert_eq!(strip_citations("no marks"), "no marks");
        assert_eq!(strip_citations("open [ bracket"), "open [ bracket");
    }
}
