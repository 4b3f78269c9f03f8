//! The webhook outbox in PostgreSQL: `webhooks`, `events`, and `deliveries` by (webhook,
//! event) with their attempts and, while pending, when they are next due (`due_ms`, one
//! column instead of redb's separate due index, so no stale due row can exist).
//!
//! An event is written in the transaction of the change that caused it (`emit_in`), with
//! one pending delivery per webhook of its bot that wants it. This node's writes wake its
//! delivery worker at once; other nodes' writes are found by the worker's periodic look.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use postgres::types::{Json, ToSql};
use postgres::{GenericClient, Row, Transaction};

use super::{PgStore, all, get, sql_limit, sql_ms, storable};
use crate::domain::BotId;
use crate::ids::now_ms;
use crate::ports::{
    Attempt, Delivery, DueDelivery, Event, NewEvent, OutboxStore, Outcome, Result, Webhook,
};

const EVENT_COLUMNS: &str = "id, kind, created, bot, data";

impl OutboxStore for PgStore {
    fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox.clone()
    }

    fn put_webhook(&self, webhook: &Webhook) -> Result<()> {
        self.client(|c| write_webhook(c, webhook))
    }

    fn update_webhook(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Webhook),
    ) -> Result<Option<Webhook>> {
        // As `update_bot`: `change` runs here, the write only over the record it changed.
        let Some(mut current) = self.get_webhook(id)? else {
            return Ok(None);
        };
        loop {
            let mut webhook = current.clone();
            change(&mut webhook);
            let written = self.in_transaction(|txn| {
                let row = txn
                    .query_opt(
                        "SELECT record FROM webhooks WHERE id = $1 FOR UPDATE",
                        &[&id],
                    )
                    .context("read webhook")?;
                let Some(stored) = row.map(|r| r.get::<_, Json<Webhook>>(0).0) else {
                    return Ok(Some(None));
                };
                if stored != current {
                    return Ok(Some(Some(stored)));
                }
                write_webhook(txn, &webhook)?;
                Ok(None)
            })?;
            match written {
                None => return Ok(Some(webhook)),
                Some(None) => return Ok(None),
                Some(Some(stored)) => current = stored,
            }
        }
    }

    fn get_webhook(&self, id: &str) -> Result<Option<Webhook>> {
        self.client(|c| get(c, "webhooks", id))
    }

    fn list_webhooks(&self, bot: Option<&BotId>) -> Result<Vec<Webhook>> {
        match bot {
            Some(bot) => self.client(|c| all(c, "webhooks", "bot = $1", &[&bot.as_str()])),
            None => self.client(|c| all(c, "webhooks", "true", &[])),
        }
    }

    fn delete_webhook(&self, id: &str) -> Result<bool> {
        self.in_transaction(|txn| {
            txn.execute("DELETE FROM deliveries WHERE webhook = $1", &[&id])
                .context("remove deliveries")?;
            let removed = txn
                .execute("DELETE FROM webhooks WHERE id = $1", &[&id])
                .context("remove webhook")?;
            Ok(removed > 0)
        })
    }

    fn get_event(&self, id: &str) -> Result<Option<Event>> {
        self.client(|c| {
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
            let row = c.query_opt(&sql, &[&id]).context("read event")?;
            Ok(row.as_ref().map(|row| event_at(row, 0)))
        })
    }

    fn emit(&self, bot: &BotId, new: NewEvent) -> Result<Event> {
        let event = self.in_transaction(|txn| emit_in(txn, bot, new))?;
        self.outbox.notify_one();
        Ok(event)
    }

    fn due_deliveries(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &HashSet<(String, String)>,
        claim_ms: u64,
    ) -> Result<Vec<DueDelivery>> {
        // Rows another node is claiming right now are skipped, not waited for.
        let sql = "SELECT d.webhook, d.event, \
                   coalesce((d.record->>'next_attempt_ms')::bigint, d.due_ms), \
                   w.record, jsonb_array_length(d.record->'attempts'), \
                   e.id, e.kind, e.created, e.bot, e.data \
                   FROM deliveries d JOIN webhooks w ON w.id = d.webhook \
                   JOIN events e ON e.id = d.event \
                   WHERE d.due_ms <= $1 ORDER BY d.due_ms, d.webhook, d.event LIMIT $2 \
                   FOR UPDATE OF d SKIP LOCKED";
        let wanted = sql_limit(limit.saturating_add(skip.len()));
        let until = sql_ms(now_ms.saturating_add(claim_ms));
        let node = self.node()?;
        self.in_transaction(|txn| {
            let rows = txn
                .query(sql, &[&sql_ms(now_ms), &wanted])
                .context("read due deliveries")?;
            let mut out = Vec::new();
            for row in &rows {
                let key: (String, String) = (row.get(0), row.get(1));
                if skip.contains(&key) {
                    continue;
                }
                out.push(DueDelivery {
                    due_ms: row.get::<_, i64>(2) as u64,
                    webhook: row.get::<_, Json<Webhook>>(3).0,
                    attempts: row.get::<_, i32>(4) as usize,
                    event: event_at(row, 5),
                });
                if out.len() == limit {
                    break;
                }
            }
            // Claimed: due again, for whoever looks, only once the claim runs out.
            let webhooks: Vec<&str> = out.iter().map(|d| d.webhook.id.as_str()).collect();
            let events: Vec<&str> = out.iter().map(|d| d.event.id.as_str()).collect();
            txn.execute(
                "UPDATE deliveries SET due_ms = $3, claimed_by = $4 \
                 FROM unnest($1::text[], $2::text[]) AS c(w, e) \
                 WHERE webhook = c.w AND event = c.e",
                &[&webhooks, &events, &until, &node],
            )
            .context("claim deliveries")?;
            Ok(out)
        })
    }

    fn prune_events(&self, before_ms: u64, limit: usize) -> Result<usize> {
        let cutoff = format!("evt_{before_ms:012x}");
        self.in_transaction(|txn| {
            let old: Vec<String> = txn
                .query(
                    "SELECT id FROM events WHERE id >= 'evt_' AND id < $1 \
                     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                    &[&cutoff, &(limit as i64)],
                )
                .context("read old events")?
                .iter()
                .map(|row| row.get(0))
                .collect();
            // Only events whose deliveries are all settled go.
            let settled: Vec<String> = txn
                .query(
                    "SELECT id FROM unnest($1::text[]) AS id WHERE NOT EXISTS \
                     (SELECT 1 FROM deliveries d WHERE d.event = id AND d.due_ms IS NOT NULL)",
                    &[&old],
                )
                .context("read pending deliveries")?
                .iter()
                .map(|row| row.get(0))
                .collect();
            txn.execute("DELETE FROM deliveries WHERE event = ANY($1)", &[&settled])
                .context("remove deliveries")?;
            txn.execute("DELETE FROM events WHERE id = ANY($1)", &[&settled])
                .context("remove events")?;
            Ok(settled.len())
        })
    }

    fn pending_deliveries(&self) -> Result<u64> {
        self.client(|c| {
            let row = c
                .query_one(
                    "SELECT count(*) FROM deliveries WHERE due_ms IS NOT NULL",
                    &[],
                )
                .context("count due deliveries")?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn next_due_ms_except(&self, skip: &HashSet<(String, String)>) -> Result<Option<u64>> {
        let rows = self.client(|c| {
            Ok(c.query(
                "SELECT due_ms, webhook, event FROM deliveries WHERE due_ms IS NOT NULL \
                 ORDER BY due_ms, webhook, event LIMIT $1",
                &[&(skip.len() as i64 + 1)],
            )
            .context("read due deliveries")?)
        })?;
        Ok(rows
            .iter()
            .find(|row| !skip.contains(&(row.get(1), row.get(2))))
            .map(|row| row.get::<_, i64>(0) as u64))
    }

    fn record_attempts(&self, attempts: &[(DueDelivery, Attempt, Outcome)]) -> Result<()> {
        self.in_transaction(|txn| {
            for (due, attempt, outcome) in attempts {
                record_attempt(txn, due, attempt, *outcome)?;
            }
            Ok(())
        })
    }

    fn deliveries(
        &self,
        webhook_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        self.client(|c| {
            let rows = c
                .query(
                    "SELECT record FROM deliveries WHERE webhook = $1 \
                     AND ($2::text IS NULL OR event < $2) ORDER BY event DESC LIMIT $3",
                    &[&webhook_id, &before, &(limit as i64)],
                )
                .context("read deliveries")?;
            Ok(rows
                .iter()
                .map(|row| row.get::<_, Json<Delivery>>(0).0)
                .collect())
        })
    }

    fn redeliver(&self, event: &Event, webhooks: &[Webhook]) -> Result<Vec<String>> {
        let now = now_ms();
        let queued = self.in_transaction(|txn| {
            let mut queued = Vec::new();
            for webhook in webhooks {
                // Deleted since the caller listed it.
                let exists = txn
                    .query_opt(
                        "SELECT 1 FROM webhooks WHERE id = $1 FOR SHARE",
                        &[&webhook.id.as_str()],
                    )
                    .context("read webhook")?
                    .is_some();
                if !exists {
                    continue;
                }
                let existing = txn
                    .query_opt(
                        "SELECT record FROM deliveries \
                         WHERE webhook = $1 AND event = $2 FOR UPDATE",
                        &[&webhook.id.as_str(), &event.id.as_str()],
                    )
                    .context("read delivery")?
                    .map(|row| row.get::<_, Json<Delivery>>(0).0);
                let mut delivery =
                    existing.unwrap_or_else(|| Delivery::pending(&webhook.id, event, None));
                delivery.state = "pending".into();
                delivery.next_attempt_ms = Some(now);
                write_delivery(txn, &delivery)?;
                queued.push(webhook.id.clone());
            }
            Ok(queued)
        })?;
        self.outbox.notify_one();
        Ok(queued)
    }
}

impl PgStore {
    /// Gives the deliveries that gone nodes claimed back, due when their records say (a
    /// node killed while sending: the next to open the store sends them again).
    pub(super) fn release_gone_claims(&self) -> Result<usize> {
        let owners = "SELECT DISTINCT claimed_by FROM deliveries WHERE claimed_by IS NOT NULL";
        let released = self.for_gone_nodes(owners, false, |txn, node| {
            let released = txn
                .execute(
                    "UPDATE deliveries SET claimed_by = NULL, \
                     due_ms = coalesce((record->>'next_attempt_ms')::bigint, due_ms) \
                     WHERE claimed_by = $1 AND due_ms IS NOT NULL",
                    &[&node],
                )
                .context("release claims")?;
            Ok(released as usize)
        })?;
        Ok(released.into_iter().sum())
    }
}

/// Writes `new` for `bot` within `txn`, with a pending delivery to every webhook of the bot
/// that wants it.
pub(super) fn emit_in(txn: &mut Transaction<'_>, bot: &BotId, new: NewEvent) -> Result<Event> {
    let now = now_ms();
    let event = Event {
        id: crate::ids::event(),
        kind: new.kind.to_string(),
        created: now / 1000,
        bot_id: Some(bot.clone()),
        data: new.data,
    };
    txn.execute(
        "INSERT INTO events (id, bot, kind, created, data) VALUES ($1, $2, $3, $4, $5)",
        &[
            &event.id.as_str(),
            &bot.as_str(),
            &event.kind.as_str(),
            &(event.created as i64),
            &storable(&event.data)? as &(dyn ToSql + Sync),
        ],
    )
    .context("write event")?;
    let webhooks: Vec<Webhook> = all(txn, "webhooks", "bot = $1", &[&bot.as_str()])?;
    for webhook in webhooks.iter().filter(|w| w.wants(&event.kind)) {
        let delivery = Delivery::pending(&webhook.id, &event, Some(now));
        write_delivery(txn, &delivery)?;
    }
    Ok(event)
}

/// Removes, within `txn`, a bot's webhooks and events with their deliveries.
pub(super) fn delete_bot_in(txn: &mut Transaction<'_>, bot: &str) -> Result<()> {
    txn.execute(
        "DELETE FROM deliveries WHERE webhook IN (SELECT id FROM webhooks WHERE bot = $1) \
         OR event IN (SELECT id FROM events WHERE bot = $1)",
        &[&bot],
    )
    .context("remove deliveries")?;
    txn.execute("DELETE FROM webhooks WHERE bot = $1", &[&bot])
        .context("remove webhooks")?;
    txn.execute("DELETE FROM events WHERE bot = $1", &[&bot])
        .context("remove events")?;
    Ok(())
}

/// Records one attempt on its delivery (locked), and what follows from it.
fn record_attempt(
    txn: &mut Transaction<'_>,
    due: &DueDelivery,
    attempt: &Attempt,
    outcome: Outcome,
) -> Result<()> {
    let row = txn
        .query_opt(
            "SELECT record FROM deliveries WHERE webhook = $1 AND event = $2 FOR UPDATE",
            &[&due.webhook.id.as_str(), &due.event.id.as_str()],
        )
        .context("read delivery")?;
    // Deleted (with its webhook) while it was being sent: nothing to record.
    let Some(mut delivery) = row.map(|r| r.get::<_, Json<Delivery>>(0).0) else {
        return Ok(());
    };
    delivery.attempts.push(attempt.clone());
    // Redelivered while this attempt was in flight: the newer schedule stands, and this
    // attempt is only history.
    if delivery.next_attempt_ms == Some(due.due_ms) {
        let (state, next) = match outcome {
            Outcome::Delivered => ("delivered", None),
            Outcome::Failed => ("failed", None),
            Outcome::RetryAt(at) => ("pending", Some(at)),
        };
        delivery.state = state.into();
        delivery.next_attempt_ms = next;
    }
    write_delivery(txn, &delivery)
}

/// Writes a delivery (new or replacing), due when its record says.
pub(super) fn write_delivery(client: &mut impl GenericClient, delivery: &Delivery) -> Result<()> {
    let due = delivery.next_attempt_ms.map(|at| at as i64);
    client
        .execute(
            "INSERT INTO deliveries (webhook, event, record, due_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (webhook, event) DO UPDATE SET record = EXCLUDED.record, \
             due_ms = EXCLUDED.due_ms, claimed_by = NULL",
            &[
                &delivery.webhook_id.as_str(),
                &delivery.event_id.as_str(),
                &Json(delivery) as &(dyn ToSql + Sync),
                &due,
            ],
        )
        .context("write delivery")?;
    Ok(())
}

fn write_webhook(client: &mut impl GenericClient, webhook: &Webhook) -> Result<()> {
    client
        .execute(
            "INSERT INTO webhooks (id, bot, record) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET bot = EXCLUDED.bot, record = EXCLUDED.record",
            &[
                &webhook.id.as_str(),
                &webhook.bot_id.as_str(),
                &Json(webhook) as &(dyn ToSql + Sync),
            ],
        )
        .context("write webhook")?;
    Ok(())
}

/// An event from a row holding `EVENT_COLUMNS` from column `first` on.
fn event_at(row: &Row, first: usize) -> Event {
    Event {
        id: row.get(first),
        kind: row.get(first + 1),
        created: row.get::<_, i64>(first + 2) as u64,
        bot_id: row
            .get::<_, Option<String>>(first + 3)
            .and_then(|b| BotId::parse(&b).ok()),
        data: row.get::<_, Json<serde_json::Value>>(first + 4).0,
    }
}
