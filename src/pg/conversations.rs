//! Conversations, their messages and leads in PostgreSQL, with the erasures that keep a
//! turn answered meanwhile from bringing back what was erased (`erasures`, kept a day).
//!
//! Writers take advisory locks until their transaction ends, always in this order so that
//! no two wait on each other in a cycle: the bot's conversations' (`docent-talk`: shared;
//! exclusive for deleting the bot), the user's on that bot (shared; exclusive for erasing
//! the user), then the conversation's (exclusive). A turn, a release, a rating or a
//! deletion of one conversation therefore applies after, or before, the erasure of its
//! bot or user, never in between, whichever nodes they run on; an ingest's commit takes
//! only the bot's content lock, so turns never wait for one.

use anyhow::Context;
use postgres::types::{Json, ToSql};
use postgres::{GenericClient, Transaction};

use super::outbox::emit_in;
use super::{PgStore, get, lock, records, sql_limit, storable};
use crate::domain::{BotId, Conversation, ConversationState, Feedback, Lead, Message, Rerating};
use crate::ids::now_ms;
use crate::ports::{
    Appended, ConversationStore, ERASURES_KEPT_MS, Erased, Error, NewEvent, Rated, Result,
    TurnExtras,
};

impl ConversationStore for PgStore {
    fn get_conversation(&self, id: &str) -> Result<Conversation> {
        self.client(|c| get(c, "conversations", id))?
            .ok_or_else(|| Error::ConversationNotFound(id.to_string()))
    }

    fn list_conversations(
        &self,
        bot: Option<&BotId>,
        user: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Conversation>> {
        let bot = bot.map(BotId::as_str);
        self.client(|c| {
            let rows = c
                .query(
                    "SELECT record FROM conversations WHERE ($1::text IS NULL OR bot = $1) \
                     AND ($2::text IS NULL OR usr = $2) AND ($3::text IS NULL OR id > $3) \
                     ORDER BY id LIMIT $4",
                    &[&bot, &user, &after, &sql_limit(limit)],
                )
                .context("read conversations")?;
            Ok(records(rows))
        })
    }

    fn messages(&self, conversation: &str) -> Result<Vec<Message>> {
        self.client(|c| {
            let rows = c
                .query(
                    "SELECT record FROM messages WHERE conversation = $1 ORDER BY position",
                    &[&conversation],
                )
                .context("read messages")?;
            Ok(records(rows))
        })
    }

    fn append_messages(&self, conversation: &Conversation, messages: &[Message]) -> Result<()> {
        self.append_turn(conversation, messages, TurnExtras::default())?;
        Ok(())
    }

    fn append_turn(
        &self,
        conversation: &Conversation,
        messages: &[Message],
        extras: TurnExtras,
    ) -> Result<Appended> {
        let (appended, wrote_events) =
            self.in_transaction(|txn| append_in(txn, conversation, messages, extras))?;
        if wrote_events {
            self.outbox.notify_one();
        }
        Ok(appended)
    }

    fn put_lead(&self, lead: &Lead, started_ms: u64) -> Result<()> {
        self.in_transaction(|txn| {
            let bot = lead.bot_id.as_str();
            lock_talk(txn, bot, true)?;
            if let Some(user) = &lead.user_id {
                lock_user(txn, bot, user, true)?;
            }
            let exists = txn
                .query_opt("SELECT 1 FROM bots WHERE id = $1", &[&bot])
                .context("read bot")?
                .is_some();
            if !exists {
                return Err(Error::BotNotFound(lead.bot_id.clone()));
            }
            if let Some(user) = &lead.user_id
                && erased_at(txn, &user_erasure(bot, user))?.is_some_and(|at| at >= started_ms)
            {
                return Err(Error::ConversationNotFound(format!("user {user}")));
            }
            put_lead_in(txn, lead)?;
            emit_in(txn, &lead.bot_id, NewEvent::lead_captured(lead))?;
            Ok(())
        })?;
        self.outbox.notify_one();
        Ok(())
    }

    fn release_conversation(
        &self,
        id: &str,
        to: ConversationState,
        now: u64,
    ) -> Result<(Conversation, bool)> {
        self.in_transaction(|txn| {
            let mut record = locked_conversation(txn, id)?
                .ok_or_else(|| Error::ConversationNotFound(id.to_string()))?;
            let changed = record.release(to, now);
            if changed {
                write_conversation(txn, &record)?;
            }
            Ok((record, changed))
        })
    }

    fn message_conversation(&self, message: &str) -> Result<Option<String>> {
        self.client(|c| {
            let row = c
                .query_opt(
                    "SELECT conversation FROM messages WHERE id = $1 LIMIT 1",
                    &[&message],
                )
                .context("read message")?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn rate_message(&self, message: &str, feedback: &Feedback) -> Result<Rated> {
        let rated = self.in_transaction(|txn| rate_in(txn, message, feedback))?;
        if rated.event_id.is_some() {
            self.outbox.notify_one();
        }
        Ok(rated)
    }

    fn leads(&self, bot: &BotId, after: Option<&str>, limit: usize) -> Result<Vec<Lead>> {
        self.client(|c| {
            let rows = c
                .query(
                    "SELECT record FROM leads WHERE bot = $1 \
                     AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3",
                    &[&bot.as_str(), &after, &sql_limit(limit)],
                )
                .context("read leads")?;
            Ok(records(rows))
        })
    }

    fn delete_conversations(&self, ids: &[String]) -> Result<usize> {
        self.in_transaction(|txn| {
            let mut stored = Vec::new();
            for id in ids {
                stored.extend(get::<Conversation>(txn, "conversations", id)?);
            }
            lock_all(txn, &stored)?;
            delete_conversations_in(txn, ids)
        })
    }

    fn erase_user(&self, user: &str, bots: &[BotId]) -> Result<Erased> {
        let mut bots: Vec<&str> = bots.iter().map(BotId::as_str).collect();
        bots.sort_unstable();
        bots.dedup();
        self.in_transaction(|txn| {
            for bot in &bots {
                lock_talk(txn, bot, true)?;
            }
            for bot in &bots {
                lock_user(txn, bot, user, false)?;
            }
            let conversations: Vec<String> = txn
                .query(
                    "SELECT id FROM conversations WHERE usr = $1 AND bot = ANY($2) ORDER BY id",
                    &[&user, &bots],
                )
                .context("read the user's conversations")?
                .iter()
                .map(|row| row.get(0))
                .collect();
            delete_conversations_in(txn, &conversations)?;
            let leads = txn
                .execute(
                    "DELETE FROM leads WHERE usr = $1 AND bot = ANY($2)",
                    &[&user, &bots],
                )
                .context("remove the user's leads")?;
            for bot in &bots {
                remember_erasure(txn, &user_erasure(bot, user))?;
            }
            Ok(Erased {
                conversations,
                leads: leads as usize,
            })
        })
    }
}

/// `append_turn` within `txn`: what it wrote, and whether that included events.
fn append_in(
    txn: &mut Transaction<'_>,
    conversation: &Conversation,
    messages: &[Message],
    extras: TurnExtras,
) -> Result<(Appended, bool)> {
    let id = conversation.id.as_str();
    lock_all(txn, std::slice::from_ref(conversation))?;
    if was_erased(txn, conversation, extras.started_ms)? {
        return Err(Error::ConversationNotFound(id.to_string()));
    }
    let previous: Option<Conversation> = get(txn, "conversations", id)?;
    let next: i32 = txn
        .query_one(
            "SELECT coalesce(max(position) + 1, 0) FROM messages WHERE conversation = $1",
            &[&id],
        )
        .context("read the last message")?
        .get(0);
    let next = next as u32;
    // The rules are the domain's; this writes what they decide.
    let mut lookup_failed = None;
    let settled = conversation.clone().settle_turn(
        previous.as_ref(),
        messages.to_vec(),
        extras.lead,
        next,
        || {
            last_question(txn, id, next).unwrap_or_else(|e| {
                lookup_failed = Some(e);
                None
            })
        },
    );
    if let Some(e) = lookup_failed {
        return Err(e);
    }
    for (i, message) in settled.messages.iter().enumerate() {
        let position = (next as usize + i) as i32;
        txn.execute(
            "INSERT INTO messages (conversation, position, id, record) VALUES ($1, $2, $3, $4)",
            &[
                &id,
                &position,
                &message.id.as_str(),
                &storable(message)? as &(dyn ToSql + Sync),
            ],
        )
        .context("write message")?;
    }
    if let Some(lead) = &settled.lead {
        put_lead_in(txn, lead)?;
    }
    let mut wrote_events = false;
    for event in NewEvent::of_turn(&settled, extras.events) {
        emit_in(txn, &settled.record.bot_id, event)?;
        wrote_events = true;
    }
    write_conversation(txn, &settled.record)?;
    crate::telemetry::failpoint("turn_commit");
    let appended = Appended {
        conversation: settled.record,
        first_position: next,
        messages: settled.messages,
        reply_dropped: settled.reply_dropped,
    };
    Ok((appended, wrote_events))
}

/// `rate_message` within `txn`.
fn rate_in(txn: &mut Transaction<'_>, message: &str, feedback: &Feedback) -> Result<Rated> {
    let not_found = || Error::MessageNotFound(message.to_string());
    let conversation: String = txn
        .query_opt(
            "SELECT conversation FROM messages WHERE id = $1 LIMIT 1",
            &[&message],
        )
        .context("read message")?
        .ok_or_else(not_found)?
        .get(0);
    let mut record = locked_conversation(txn, &conversation)?.ok_or_else(not_found)?;
    // Read again under the conversation's lock.
    let row = txn
        .query_opt(
            "SELECT position, record FROM messages WHERE conversation = $1 AND id = $2",
            &[&conversation, &message],
        )
        .context("read message")?
        .ok_or_else(not_found)?;
    let position: i32 = row.get(0);
    let mut answer: Message = row.get::<_, Json<Message>>(1).0;
    let previous = match answer.rate(feedback) {
        Rerating::NotAnAnswer => return Err(Error::NotAnAnswer(message.to_string())),
        Rerating::Same => {
            return Ok(Rated {
                conversation: record,
                message: answer,
                event_id: None,
            });
        }
        Rerating::Changed { previous } => previous,
    };
    txn.execute(
        "UPDATE messages SET record = $3 WHERE conversation = $1 AND position = $2",
        &[
            &conversation,
            &position,
            &storable(&answer)? as &(dyn ToSql + Sync),
        ],
    )
    .context("write message")?;
    let question = last_question(txn, &conversation, position as u32)?;
    record.ratings.rerate(previous, feedback.rating);
    write_conversation(txn, &record)?;
    let event = NewEvent::feedback(&record, &answer, feedback, question);
    let event = emit_in(txn, &record.bot_id, event)?;
    Ok(Rated {
        conversation: record,
        message: answer,
        event_id: Some(event.id),
    })
}

/// Removes, within `txn`, conversations with their messages and the events about them
/// (events carry what visitors wrote), and remembers that they were erased (for a day;
/// older memories go now); how many conversations existed. The caller holds the locks
/// that keep turns off them.
pub(super) fn delete_conversations_in(txn: &mut Transaction<'_>, ids: &[String]) -> Result<usize> {
    let now = now_ms();
    txn.execute(
        "DELETE FROM erasures WHERE at_ms <= $1",
        &[&(now.saturating_sub(ERASURES_KEPT_MS) as i64)],
    )
    .context("prune erasures")?;
    if ids.is_empty() {
        return Ok(0);
    }
    let subjects: Vec<String> = ids.iter().map(|id| conversation_erasure(id)).collect();
    txn.execute(
        "INSERT INTO erasures (subject, at_ms) SELECT s, $2 FROM unnest($1::text[]) AS s \
         ON CONFLICT (subject) DO UPDATE SET at_ms = EXCLUDED.at_ms",
        &[&subjects, &(now as i64)],
    )
    .context("write erasures")?;
    txn.execute(
        "DELETE FROM deliveries WHERE event IN \
         (SELECT id FROM events WHERE data->>'conversation_id' = ANY($1))",
        &[&ids],
    )
    .context("remove deliveries")?;
    txn.execute(
        "DELETE FROM events WHERE data->>'conversation_id' = ANY($1)",
        &[&ids],
    )
    .context("remove events")?;
    txn.execute("DELETE FROM messages WHERE conversation = ANY($1)", &[&ids])
        .context("remove messages")?;
    let deleted = txn
        .execute("DELETE FROM conversations WHERE id = ANY($1)", &[&ids])
        .context("remove conversations")?;
    Ok(deleted as usize)
}

/// Within `txn`, removes a deleted bot's conversations (returning their ids) and leads, and
/// remembers the deletion so a turn begun before it writes nothing.
/// The caller holds the bot's conversations' lock exclusively (`lock_talk`).
pub(super) fn delete_bot_in(txn: &mut Transaction<'_>, bot: &str) -> Result<Vec<String>> {
    let ids: Vec<String> = txn
        .query(
            "SELECT id FROM conversations WHERE bot = $1 ORDER BY id",
            &[&bot],
        )
        .context("read the bot's conversations")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    delete_conversations_in(txn, &ids)?;
    txn.execute("DELETE FROM leads WHERE bot = $1", &[&bot])
        .context("remove leads")?;
    remember_erasure(txn, &bot_erasure(bot))?;
    Ok(ids)
}

/// Takes the locks that writing `conversations` needs, in the order every writer takes
/// them: their bots' (shared), their users' (shared), then their own.
fn lock_all(txn: &mut Transaction<'_>, conversations: &[Conversation]) -> Result<()> {
    let mut bots: Vec<&str> = conversations.iter().map(|c| c.bot_id.as_str()).collect();
    let mut users: Vec<(&str, &str)> = conversations
        .iter()
        .filter_map(|c| Some((c.bot_id.as_str(), c.user_id.as_deref()?)))
        .collect();
    let mut ids: Vec<&str> = conversations.iter().map(|c| c.id.as_str()).collect();
    for list in [&mut bots, &mut ids] {
        list.sort_unstable();
        list.dedup();
    }
    users.sort_unstable();
    users.dedup();
    for bot in bots {
        lock_talk(txn, bot, true)?;
    }
    for (bot, user) in users {
        lock_user(txn, bot, user, true)?;
    }
    for id in ids {
        lock(txn, &format!("docent-conv:{id}"), false)?;
    }
    Ok(())
}

/// The conversation's record, read after taking the locks that writing it needs.
fn locked_conversation(txn: &mut Transaction<'_>, id: &str) -> Result<Option<Conversation>> {
    let Some(seen) = get::<Conversation>(txn, "conversations", id)? else {
        return Ok(None);
    };
    lock_all(txn, std::slice::from_ref(&seen))?;
    // Its bot and user never change; whatever else did meanwhile is read now.
    get(txn, "conversations", id)
}

/// Takes the lock on a bot's conversations: shared by every writer of one, exclusive for
/// deleting the bot (an ingest's commit takes the bot's other lock, so turns never wait
/// for one).
pub(super) fn lock_talk(txn: &mut Transaction<'_>, bot: &str, shared: bool) -> Result<()> {
    lock(txn, &format!("docent-talk:{bot}"), shared)
}

fn lock_user(txn: &mut Transaction<'_>, bot: &str, user: &str, shared: bool) -> Result<()> {
    lock(txn, &format!("docent-user:{bot}/{user}"), shared)
}

pub(super) fn write_conversation(txn: &mut Transaction<'_>, record: &Conversation) -> Result<()> {
    txn.execute(
        "INSERT INTO conversations (id, bot, usr, record) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
        &[
            &record.id.as_str(),
            &record.bot_id.as_str(),
            &record.user_id,
            &storable(record)? as &(dyn ToSql + Sync),
        ],
    )
    .context("write conversation")?;
    Ok(())
}

pub(super) fn put_lead_in(txn: &mut Transaction<'_>, lead: &Lead) -> Result<()> {
    txn.execute(
        "INSERT INTO leads (bot, id, usr, record) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (bot, id) DO UPDATE SET usr = EXCLUDED.usr, record = EXCLUDED.record",
        &[
            &lead.bot_id.as_str(),
            &lead.id.as_str(),
            &lead.user_id,
            &storable(lead)? as &(dyn ToSql + Sync),
        ],
    )
    .context("write lead")?;
    Ok(())
}

/// The content of the last visitor message of `conversation` stored before `before`.
fn last_question(
    client: &mut impl GenericClient,
    conversation: &str,
    before: u32,
) -> Result<Option<String>> {
    let row = client
        .query_opt(
            "SELECT record->>'content' FROM messages WHERE conversation = $1 \
             AND position < $2 AND record->>'role' = 'user' ORDER BY position DESC LIMIT 1",
            &[&conversation, &(before as i32)],
        )
        .context("read the last question")?;
    Ok(row.map(|row| row.get(0)))
}

/// Whether a turn of `conversation` (begun at `started_ms`) comes after its erasure, or
/// after the erasure of its bot or user since it began.
fn was_erased(
    txn: &mut Transaction<'_>,
    conversation: &Conversation,
    started_ms: Option<u64>,
) -> Result<bool> {
    if erased_at(txn, &conversation_erasure(&conversation.id))?.is_some() {
        return Ok(true);
    }
    let Some(started) = started_ms else {
        return Ok(false);
    };
    let bot = conversation.bot_id.as_str();
    let mut subjects = vec![bot_erasure(bot)];
    subjects.extend(
        conversation
            .user_id
            .as_deref()
            .map(|u| user_erasure(bot, u)),
    );
    for subject in subjects {
        if erased_at(txn, &subject)?.is_some_and(|at| at >= started) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn erased_at(txn: &mut Transaction<'_>, subject: &str) -> Result<Option<u64>> {
    let row = txn
        .query_opt("SELECT at_ms FROM erasures WHERE subject = $1", &[&subject])
        .context("read erasure")?;
    Ok(row.map(|row| row.get::<_, i64>(0) as u64))
}

fn remember_erasure(txn: &mut Transaction<'_>, subject: &str) -> Result<()> {
    txn.execute(
        "INSERT INTO erasures (subject, at_ms) VALUES ($1, $2) \
         ON CONFLICT (subject) DO UPDATE SET at_ms = EXCLUDED.at_ms",
        &[&subject, &(now_ms() as i64)],
    )
    .context("write erasure")?;
    Ok(())
}

pub(super) fn conversation_erasure(id: &str) -> String {
    format!("conv/{id}")
}

pub(super) fn bot_erasure(bot: &str) -> String {
    format!("bot/{bot}")
}

pub(super) fn user_erasure(bot: &str, user: &str) -> String {
    format!("user/{bot}/{user}")
}
