//! The redb store's whole content as rows (`ports::Export`), for `docent migrate-store`:
//! one read transaction, so the rows are one moment's.

use anyhow::Context;
use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

use super::accounts::{ACCOUNTS, SESSIONS};
use super::events::{DELIVERIES, EVENTS, StoredEvent, WEBHOOKS};
use super::{
    BOTS, CHUNKS, CONVERSATIONS, ERASED, JOBS, KEYS, LEADS, MESSAGES, PAGES, SECRETS, Store,
    VECTORS, bytes_to_vector, decode,
};
use crate::domain::BotId;
use crate::ports::{Erasure, Export, Result, Row, RowCounts};

impl Export for Store {
    fn export(&self, each: &mut dyn FnMut(Row) -> Result<()>) -> Result<RowCounts> {
        let txn = self.db.begin_read().context("begin read")?;
        let mut counts = RowCounts::new();
        let mut give = |row: Row| {
            *counts.entry(row.table()).or_default() += 1;
            each(row)
        };
        export_content(&txn, &mut give)?;
        for_each(&txn, KEYS, |_, raw| give(Row::Key(decode(raw)?)))?;
        for_each(&txn, JOBS, |_, raw| give(Row::Job(decode(raw)?)))?;
        for_each(&txn, SECRETS, |name, raw| {
            give(Row::Secret {
                name: name.to_string(),
                value: raw.to_vec(),
            })
        })?;
        export_conversations(&txn, &mut give)?;
        export_outbox(&txn, &mut give)?;
        for_each(&txn, ACCOUNTS, |_, raw| give(Row::Account(decode(raw)?)))?;
        for_each(&txn, SESSIONS, |_, raw| give(Row::Session(decode(raw)?)))?;
        Ok(counts)
    }
}

/// Bots, their pages, and the chunks the pages name (with their vectors): chunks no page
/// names (an ingest that never committed) stay behind.
fn export_content(txn: &ReadTransaction, give: &mut dyn FnMut(Row) -> Result<()>) -> Result<()> {
    for_each(txn, BOTS, |_, raw| give(Row::Bot(decode(raw)?)))?;
    let pages = txn.open_table(PAGES).context("open pages")?;
    let chunks = txn.open_table(CHUNKS).context("open chunks")?;
    let vectors = txn.open_table(VECTORS).context("open vectors")?;
    for entry in pages.iter().context("read pages")? {
        let (key, raw) = entry.context("read page")?;
        let bot = BotId::parse(key.value().0).map_err(anyhow::Error::msg)?;
        let page: crate::domain::Page = decode(raw.value())?;
        let ids = page.chunk_ids.clone();
        give(Row::Page { bot, page })?;
        for id in ids {
            let chunk = chunks
                .get(id)
                .context("read chunk")?
                .with_context(|| format!("chunk {id} is missing"))?;
            let vector = vectors
                .get(id)
                .context("read vector")?
                .with_context(|| format!("chunk {id} has no vector"))?;
            give(Row::Chunk {
                id,
                chunk: decode(chunk.value())?,
                vector: bytes_to_vector(vector.value()),
            })?;
        }
    }
    Ok(())
}

/// Conversations with their messages, leads, and erasures.
fn export_conversations(
    txn: &ReadTransaction,
    give: &mut dyn FnMut(Row) -> Result<()>,
) -> Result<()> {
    let messages = txn.open_table(MESSAGES).context("open messages")?;
    for_each(txn, CONVERSATIONS, |id, raw| {
        give(Row::Conversation(decode(raw)?))?;
        let range = messages
            .range((id, 0u32)..=(id, u32::MAX))
            .context("range messages")?;
        for entry in range {
            let (key, raw) = entry.context("read message")?;
            give(Row::Message {
                conversation: id.to_string(),
                position: key.value().1,
                message: decode(raw.value())?,
            })?;
        }
        Ok(())
    })?;
    let leads = txn.open_table(LEADS).context("open leads")?;
    for entry in leads.iter().context("read leads")? {
        let (_, raw) = entry.context("read lead")?;
        give(Row::Lead(decode(raw.value())?))?;
    }
    let erased = txn.open_table(ERASED).context("open erased")?;
    for entry in erased.iter().context("read erased")? {
        let (key, at) = entry.context("read erasure")?;
        match erasure(key.value()) {
            Some(subject) => give(Row::Erasure {
                subject,
                at_ms: at.value(),
            })?,
            None => tracing::warn!("left out an erasure record of unknown form"),
        }
    }
    Ok(())
}

/// Events, webhooks and their deliveries.
fn export_outbox(txn: &ReadTransaction, give: &mut dyn FnMut(Row) -> Result<()>) -> Result<()> {
    for_each(txn, EVENTS, |_, raw| {
        let event: StoredEvent = decode(raw)?;
        give(Row::Event(event.into()))
    })?;
    for_each(txn, WEBHOOKS, |_, raw| give(Row::Webhook(decode(raw)?)))?;
    let deliveries = txn.open_table(DELIVERIES).context("open deliveries")?;
    for entry in deliveries.iter().context("read deliveries")? {
        let (_, raw) = entry.context("read delivery")?;
        give(Row::Delivery(decode(raw.value())?))?;
    }
    Ok(())
}

/// Calls `each` with every (key, value) of a table keyed by a string.
fn for_each(
    txn: &ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    mut each: impl FnMut(&str, &[u8]) -> Result<()>,
) -> Result<()> {
    let table = txn
        .open_table(table)
        .with_context(|| format!("open {table}"))?;
    for entry in table.iter().context("read table")? {
        let (key, raw) = entry.context("read row")?;
        each(key.value(), raw.value())?;
    }
    Ok(())
}

/// An `ERASED` key as what it is about (see `ERASED`).
fn erasure(key: &str) -> Option<Erasure> {
    let mut parts = key.split('\0');
    match (parts.next()?, parts.next(), parts.next()) {
        ("conv", Some(id), None) => Some(Erasure::Conversation(id.to_string())),
        ("bot", Some(bot), None) => Some(Erasure::Bot(bot.to_string())),
        ("user", Some(bot), Some(user)) => Some(Erasure::User {
            bot: bot.to_string(),
            user: user.to_string(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erasure_keys_read_back_as_what_they_erase() {
        assert_eq!(
            erasure(&super::super::conversation_erasure("c_1")),
            Some(Erasure::Conversation("c_1".into()))
        );
        assert_eq!(
            erasure(&super::super::bot_erasure("docs")),
            Some(Erasure::Bot("docs".into()))
        );
        assert_eq!(
            erasure(&super::super::user_erasure("docs", "u/1")),
            Some(Erasure::User {
                bot: "docs".into(),
                user: "u/1".into()
            })
        );
        assert_eq!(erasure("nonsense"), None);
    }
}
