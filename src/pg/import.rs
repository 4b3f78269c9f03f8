//! Another store's whole content written into an empty PostgreSQL store in one transaction
//! (`ports::Import`, for `docent migrate-store`), and the row counts that check it.

use anyhow::{Context, anyhow};
use pgvector::Vector;
use postgres::Transaction;
use postgres::types::{Json, ToSql};

use super::conversations::{
    bot_erasure, conversation_erasure, put_lead_in, user_erasure, write_conversation,
};
use super::outbox::write_delivery;
use super::{PgStore, lock, put, storable};
use crate::ports::{Erasure, Export, Import, Result, Row, RowCounts};

/// Every table a store's rows go to, as `Row::table` names them.
const TABLES: [&str; 15] = [
    "bots",
    "pages",
    "chunks",
    "keys",
    "jobs",
    "secrets",
    "conversations",
    "messages",
    "leads",
    "erasures",
    "events",
    "webhooks",
    "deliveries",
    "accounts",
    "sessions",
];

impl Import for PgStore {
    fn import(&self, source: &dyn Export) -> Result<RowCounts> {
        self.in_transaction(|txn| {
            // One import at a time (a node serving from the database meanwhile is not
            // stopped: the rows it adds make the check below fail, and nothing lands).
            lock(txn, "docent-import", false)?;
            let held = counts_in(txn)?;
            let nonempty: Vec<String> = held
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(table, n)| format!("{n} {table}"))
                .collect();
            if !nonempty.is_empty() {
                return Err(anyhow!(
                    "the PostgreSQL store already holds data ({}): migrate-store copies into \
                     an empty database only (create a new one, run `docent migrate` on it, \
                     and copy before any node serves from it)",
                    nonempty.join(", ")
                )
                .into());
            }
            let counts = source.export(&mut |row| write_row(txn, row))?;
            txn.execute(
                "SELECT setval('chunk_ids', (SELECT coalesce(max(id), 0) + 1 FROM chunks), false)",
                &[],
            )
            .context("move the chunk id sequence past the copied chunks")?;
            // Every row the source gave is in, and nothing else: else nothing lands.
            let held = counts_in(txn)?;
            let differ: Vec<String> = held
                .iter()
                .filter(|(table, n)| counts.get(*table).copied().unwrap_or(0) != **n)
                .map(|(table, n)| {
                    let sent = counts.get(table).copied().unwrap_or(0);
                    format!("{table}: {sent} copied, {n} in the database")
                })
                .collect();
            if !differ.is_empty() {
                return Err(
                    anyhow!("the copy does not match its source ({})", differ.join("; ")).into(),
                );
            }
            Ok(counts)
        })
    }

    fn count_rows(&self) -> Result<RowCounts> {
        self.in_transaction(counts_in)
    }
}

fn counts_in(txn: &mut Transaction<'_>) -> Result<RowCounts> {
    let mut counts = RowCounts::new();
    for table in TABLES {
        let row = txn
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .with_context(|| format!("count {table}"))?;
        counts.insert(table, row.get::<_, i64>(0) as u64);
    }
    Ok(counts)
}

/// Writes one row as the PostgreSQL store's own writes would have.
fn write_row(txn: &mut Transaction<'_>, row: Row) -> Result<()> {
    match row {
        Row::Bot(bot) => put(txn, "bots", bot.id.as_str(), &bot),
        Row::Key(key) => put(txn, "keys", &key.id, &key),
        Row::Job(job) => put(txn, "jobs", &job.id, &job),
        Row::Page { bot, page } => sql(
            txn,
            "INSERT INTO pages (bot, url, record) VALUES ($1, $2, $3)",
            &[&bot.as_str(), &page.url.as_str(), &storable(&page)?],
        ),
        Row::Chunk { id, chunk, vector } => sql(
            txn,
            "INSERT INTO chunks (id, bot, record, embedding) VALUES ($1, $2, $3, $4)",
            &[
                &(id as i64),
                &chunk.bot.as_str(),
                &storable(&chunk)?,
                &Vector::from(vector),
            ],
        ),
        Row::Secret { name, value } => sql(
            txn,
            "INSERT INTO secrets (name, value) VALUES ($1, $2)",
            &[&name, &value],
        ),
        Row::Conversation(conversation) => write_conversation(txn, &conversation),
        Row::Message {
            conversation,
            position,
            message,
        } => sql(
            txn,
            "INSERT INTO messages (conversation, position, id, record) VALUES ($1, $2, $3, $4)",
            &[
                &conversation,
                &(position as i32),
                &message.id.as_str(),
                &storable(&message)?,
            ],
        ),
        Row::Lead(lead) => put_lead_in(txn, &lead),
        Row::Erasure { subject, at_ms } => {
            let subject = match subject {
                Erasure::Conversation(id) => conversation_erasure(&id),
                Erasure::Bot(bot) => bot_erasure(&bot),
                Erasure::User { bot, user } => user_erasure(&bot, &user),
            };
            sql(
                txn,
                "INSERT INTO erasures (subject, at_ms) VALUES ($1, $2)",
                &[&subject, &(at_ms as i64)],
            )
        }
        Row::Event(event) => sql(
            txn,
            "INSERT INTO events (id, bot, kind, created, data) VALUES ($1, $2, $3, $4, $5)",
            &[
                &event.id.as_str(),
                &event.bot_id.as_ref().map(|b| b.as_str()),
                &event.kind.as_str(),
                &(event.created as i64),
                &storable(&event.data)?,
            ],
        ),
        Row::Webhook(webhook) => sql(
            txn,
            "INSERT INTO webhooks (id, bot, record) VALUES ($1, $2, $3)",
            &[
                &webhook.id.as_str(),
                &webhook.bot_id.as_str(),
                &storable(&webhook)?,
            ],
        ),
        Row::Delivery(delivery) => write_delivery(txn, &delivery),
        Row::Account(account) => sql(
            txn,
            "INSERT INTO accounts (id, email, record) VALUES ($1, $2, $3)",
            &[
                &account.id.as_str(),
                &account.email.as_str(),
                &Json(&account),
            ],
        ),
        Row::Session(session) => sql(
            txn,
            "INSERT INTO sessions (id, account, record) VALUES ($1, $2, $3)",
            &[
                &session.id.as_str(),
                &session.account.as_str(),
                &Json(&session),
            ],
        ),
    }
}

fn sql(txn: &mut Transaction<'_>, statement: &str, params: &[&(dyn ToSql + Sync)]) -> Result<()> {
    txn.execute(statement, params)
        .with_context(|| format!("copy a row: {statement}"))?;
    Ok(())
}
