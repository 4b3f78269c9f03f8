//! Visitors' ratings of answers in the redb store: the message index (`message_ids`: a
//! message's conversation and position, so `POST /v1/messages/{id}/feedback` finds it) and
//! `rate_message`, which writes a rating, its conversation's counts and its
//! `message.feedback` event in one transaction.

use anyhow::Context;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Deserialize;

use super::{CONVERSATIONS, MESSAGES, META, Store, decode, encode, events};
use crate::domain::{Conversation, Feedback, Message, Rerating, Role};
use crate::ports::{Error, NewEvent, Rated, Result};

/// (conversation id, position) of every stored message, by message id.
const MESSAGE_IDS: TableDefinition<&str, (&str, u32)> = TableDefinition::new("message_ids");
/// Set in `META` once `message_ids` covers every message (databases made before it existed
/// get it built when first opened).
const MESSAGE_INDEX_BUILT: &str = "message_index_built";

/// A stored message read for its id only.
#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// Creates the index (called from `Store::open`'s schema transaction), building it over
/// the messages already stored the first time.
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    let mut index = txn.open_table(MESSAGE_IDS).context("message_ids table")?;
    let mut meta = txn.open_table(META).context("meta table")?;
    if meta
        .get(MESSAGE_INDEX_BUILT)
        .context("read meta")?
        .is_none()
    {
        let messages = txn.open_table(MESSAGES).context("messages table")?;
        for entry in messages.iter().context("scan messages")? {
            let (key, raw) = entry.context("read message")?;
            let (conversation, position) = key.value();
            let message: IdOnly = decode(raw.value())?;
            index
                .insert(message.id.as_str(), (conversation, position))
                .context("write message_ids")?;
        }
        meta.insert(MESSAGE_INDEX_BUILT, 1).context("write meta")?;
    }
    Ok(())
}

/// Indexes messages written at `first..` of `conversation` within `txn`.
pub(super) fn index_messages(
    txn: &WriteTransaction,
    conversation: &str,
    first: u32,
    messages: &[Message],
) -> Result<()> {
    let mut index = txn.open_table(MESSAGE_IDS).context("open message_ids")?;
    for (i, message) in messages.iter().enumerate() {
        index
            .insert(message.id.as_str(), (conversation, first + i as u32))
            .context("write message_ids")?;
    }
    Ok(())
}

/// Removes a conversation's messages and their index entries within `txn`.
pub(super) fn remove_messages(txn: &WriteTransaction, conversation: &str) -> Result<()> {
    let mut messages = txn.open_table(MESSAGES).context("open messages")?;
    let mut ids = Vec::new();
    messages
        .retain_in(
            (conversation, 0u32)..=(conversation, u32::MAX),
            |key, raw| {
                // A record that does not decode still goes; its index entry, if any, stays
                // behind and finds no message.
                match decode::<IdOnly>(raw) {
                    Ok(m) => ids.push(m.id),
                    Err(e) => tracing::warn!(
                        conversation,
                        position = key.1,
                        "a message without an id: {e:#}"
                    ),
                }
                false
            },
        )
        .context("remove messages")?;
    let mut index = txn.open_table(MESSAGE_IDS).context("open message_ids")?;
    for id in ids {
        index.remove(id.as_str()).context("remove message_ids")?;
    }
    Ok(())
}

/// The stored record of a conversation (`MessageNotFound` for `message` when it is gone).
fn conversation_record(
    txn: &WriteTransaction,
    conversation: &str,
    message: &str,
) -> Result<Conversation> {
    let conversations = txn
        .open_table(CONVERSATIONS)
        .context("open conversations")?;
    let raw = conversations
        .get(conversation)
        .context("read conversation")?;
    match raw {
        Some(raw) => Ok(decode(raw.value())?),
        None => Err(Error::MessageNotFound(message.to_string())),
    }
}

impl Store {
    pub(super) fn find_message(&self, message: &str) -> Result<Option<String>> {
        let txn = self.db.begin_read().context("begin read")?;
        let index = txn.open_table(MESSAGE_IDS).context("open message_ids")?;
        Ok(index
            .get(message)
            .context("read message_ids")?
            .map(|found| found.value().0.to_string()))
    }

    pub(super) fn rate(&self, message: &str, feedback: &Feedback) -> Result<Rated> {
        let txn = self.db.begin_write().context("begin write")?;
        let not_found = || Error::MessageNotFound(message.to_string());
        let (conversation_id, position) = {
            let index = txn.open_table(MESSAGE_IDS).context("open message_ids")?;
            let found = index.get(message).context("read message_ids")?;
            let found = found.ok_or_else(not_found)?;
            let (conversation, position) = found.value();
            (conversation.to_string(), position)
        };
        let key = (conversation_id.as_str(), position);
        let rated;
        {
            let mut messages = txn.open_table(MESSAGES).context("open messages")?;
            let mut answer: Message = match messages.get(key).context("read message")? {
                Some(raw) => decode(raw.value())?,
                None => return Err(not_found()),
            };
            let previous = match answer.rate(feedback) {
                Rerating::NotAnAnswer => return Err(Error::NotAnAnswer(message.to_string())),
                Rerating::Same => {
                    drop(messages);
                    let record = conversation_record(&txn, &conversation_id, message)?;
                    return Ok(Rated {
                        conversation: record,
                        message: answer,
                        event_id: None,
                    });
                }
                Rerating::Changed { previous } => previous,
            };
            messages
                .insert(key, encode(&answer)?.as_slice())
                .context("write message")?;
            let question = (0..position).rev().find_map(|p| {
                let raw = messages.get((conversation_id.as_str(), p)).ok()??;
                let m: Message = decode(raw.value()).ok()?;
                (m.role == Role::User).then_some(m.content)
            });
            let mut conversations = txn
                .open_table(CONVERSATIONS)
                .context("open conversations")?;
            let mut record: Conversation = match conversations
                .get(conversation_id.as_str())
                .context("read conversation")?
            {
                Some(raw) => decode(raw.value())?,
                None => return Err(not_found()),
            };
            record.ratings.rerate(previous, feedback.rating);
            conversations
                .insert(conversation_id.as_str(), encode(&record)?.as_slice())
                .context("write conversation")?;
            let event = events::emit(
                &txn,
                &record.bot_id,
                NewEvent::feedback(&record, &answer, feedback, question),
            )?;
            rated = Rated {
                conversation: record,
                message: answer,
                event_id: Some(event.id),
            };
        }
        txn.commit().context("failed to commit feedback")?;
        self.outbox_written();
        Ok(rated)
    }
}
