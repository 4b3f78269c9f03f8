//! The durable outbox: events, the webhooks they go to, each (webhook, event) delivery with
//! its attempts, and leads.
//!
//! An event is written in the same transaction as the change that caused it, together with
//! one pending delivery per subscribed webhook and its row in `deliveries_due` (ordered by
//! when it is next due). The delivery worker (`crate::events`) reads due rows, sends, and
//! records each attempt in a transaction of its own, so a crash at any point leaves every
//! event either delivered or still due: at-least-once.

use std::collections::HashSet;

use anyhow::Context;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Result, Store, decode, encode};
use crate::domain::{BotId, Lead};

const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks");
/// Keyed by (webhook id, event id); event ids sort by time.
const DELIVERIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("deliveries");
/// (next attempt in unix ms, webhook id, event id) for every pending delivery.
const DUE: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("deliveries_due");
/// Keyed by (bot id, lead id); lead ids sort by time.
const LEADS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leads");

/// Creates the outbox tables (called from `Store::open`'s schema transaction).
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(EVENTS).context("events table")?;
    txn.open_table(WEBHOOKS).context("webhooks table")?;
    txn.open_table(DELIVERIES).context("deliveries table")?;
    txn.open_table(DUE).context("deliveries_due table")?;
    txn.open_table(LEADS).context("leads table")?;
    Ok(())
}

/// Something that happened, as stored and as sent (`id`, `type`, `created`, `data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// `evt_` + creation time + random: the same on every delivery attempt.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds.
    pub created: u64,
    #[serde(skip)]
    pub bot_id: Option<BotId>,
    pub data: Value,
}

/// An event to write with a change: its type and data (the store adds id and time).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub data: Value,
}

/// A receiver of one bot's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    /// `whk_` + random.
    pub id: String,
    pub bot_id: BotId,
    pub url: String,
    /// Event types sent to it (`*`: all).
    pub events: Vec<String>,
    /// The signing secret (`whsec_…`). Kept as is: signing needs it.
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_until`.
    #[serde(default)]
    pub previous_secret: Option<String>,
    #[serde(default)]
    pub previous_until: Option<u64>,
    pub created: u64,
}

impl Webhook {
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == kind || e == "*")
    }

    /// The secrets to sign with at `now`: the current one, and the previous one during
    /// its overlap.
    pub fn signing_secrets(&self, now: u64) -> Vec<&str> {
        let mut out = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_until)
            && now < until
        {
            out.push(previous);
        }
        out
    }
}

/// One send of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The receiver's HTTP status; absent when the request failed.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// A pending delivery whose time has come, with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub due_ms: u64,
    pub webhook: Webhook,
    pub event: Event,
    pub attempts: usize,
}

/// What an attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Delivered,
    RetryAt(u64),
    Failed,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `prefix_` + 12 hex digits of unix ms + 12 random base62: unique and time-ordered.
pub fn time_ordered_id(prefix: &str) -> String {
    let random = crate::keys::random_base62(12).unwrap_or_default();
    format!("{prefix}_{:012x}{random}", now_ms())
}

/// Writes `new` for `bot` within `txn`, with a pending delivery to every webhook of the bot
/// that wants it.
pub(super) fn emit(txn: &WriteTransaction, bot: &BotId, new: NewEvent) -> Result<Event> {
    let now = now_ms();
    let event = Event {
        id: time_ordered_id("evt"),
        kind: new.kind.to_string(),
        created: now / 1000,
        bot_id: Some(bot.clone()),
        data: new.data,
    };
    let mut events = txn.open_table(EVENTS).context("open events")?;
    events
        .insert(
            event.id.as_str(),
            encode(&StoredEvent::from(&event))?.as_slice(),
        )
        .context("write event")?;
    let webhooks = txn.open_table(WEBHOOKS).context("open webhooks")?;
    let mut deliveries = txn.open_table(DELIVERIES).context("open deliveries")?;
    let mut due = txn.open_table(DUE).context("open deliveries_due")?;
    for entry in webhooks.iter().context("scan webhooks")? {
        let (_, raw) = entry.context("read webhook")?;
        let webhook: Webhook = decode(raw.value())?;
        if &webhook.bot_id != bot || !webhook.wants(&event.kind) {
            continue;
        }
        let delivery = Delivery {
            webhook_id: webhook.id.clone(),
            event_id: event.id.clone(),
            kind: event.kind.clone(),
            state: "pending".into(),
            attempts: Vec::new(),
            next_attempt_ms: Some(now),
            created: event.created,
        };
        deliveries
            .insert(
                (webhook.id.as_str(), event.id.as_str()),
                encode(&delivery)?.as_slice(),
            )
            .context("write delivery")?;
        due.insert((now, webhook.id.as_str(), event.id.as_str()), ())
            .context("write due delivery")?;
    }
    Ok(event)
}

/// The event as stored: its bot too (which the wire format leaves in `data`).
#[derive(Serialize, Deserialize)]
struct StoredEvent {
    id: String,
    kind: String,
    created: u64,
    bot_id: Option<BotId>,
    data: Value,
}

impl From<&Event> for StoredEvent {
    fn from(e: &Event) -> Self {
        StoredEvent {
            id: e.id.clone(),
            kind: e.kind.clone(),
            created: e.created,
            bot_id: e.bot_id.clone(),
            data: e.data.clone(),
        }
    }
}

impl From<StoredEvent> for Event {
    fn from(e: StoredEvent) -> Self {
        Event {
            id: e.id,
            kind: e.kind,
            created: e.created,
            bot_id: e.bot_id,
            data: e.data,
        }
    }
}

/// Removes a bot's webhooks (with their deliveries) and leads within `txn`.
pub(super) fn delete_bot_in(txn: &WriteTransaction, bot: &BotId) -> Result<()> {
    let ids: Vec<String> = {
        let webhooks = txn.open_table(WEBHOOKS).context("open webhooks")?;
        let mut ids = Vec::new();
        for entry in webhooks.iter().context("scan webhooks")? {
            let (key, raw) = entry.context("read webhook")?;
            let webhook: Webhook = decode(raw.value())?;
            if &webhook.bot_id == bot {
                ids.push(key.value().to_string());
            }
        }
        ids
    };
    for id in &ids {
        delete_webhook_in(txn, id)?;
    }
    let mut leads = txn.open_table(LEADS).context("open leads")?;
    leads
        .retain_in((bot.as_str(), "")..(bot.as_str(), "\u{10ffff}"), |_, _| {
            false
        })
        .context("remove leads")?;
    Ok(())
}

fn delete_webhook_in(txn: &WriteTransaction, id: &str) -> Result<bool> {
    let mut webhooks = txn.open_table(WEBHOOKS).context("open webhooks")?;
    let existed = webhooks.remove(id).context("remove webhook")?.is_some();
    let mut deliveries = txn.open_table(DELIVERIES).context("open deliveries")?;
    deliveries
        .retain_in((id, "")..(id, "\u{10ffff}"), |_, _| false)
        .context("remove deliveries")?;
    let mut due = txn.open_table(DUE).context("open deliveries_due")?;
    due.retain(|(_, webhook, _), _| webhook != id)
        .context("remove due deliveries")?;
    Ok(existed)
}

impl Store {
    pub fn put_webhook(&self, webhook: &Webhook) -> Result<()> {
        let txn = self.db.begin_write().context("begin write")?;
        {
            let mut table = txn.open_table(WEBHOOKS).context("open webhooks")?;
            table
                .insert(webhook.id.as_str(), encode(webhook)?.as_slice())
                .context("write webhook")?;
        }
        txn.commit().context("failed to commit webhook")?;
        Ok(())
    }

    pub fn get_webhook(&self, id: &str) -> Result<Option<Webhook>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(WEBHOOKS).context("open webhooks")?;
        let raw = table.get(id).context("read webhook")?;
        raw.map(|raw| decode(raw.value())).transpose()
    }

    /// Every webhook, or one bot's, in id order.
    pub fn list_webhooks(&self, bot: Option<&BotId>) -> Result<Vec<Webhook>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(WEBHOOKS).context("open webhooks")?;
        let mut out = Vec::new();
        for entry in table.iter().context("scan webhooks")? {
            let (_, raw) = entry.context("read webhook")?;
            let webhook: Webhook = decode(raw.value())?;
            if bot.is_none_or(|b| &webhook.bot_id == b) {
                out.push(webhook);
            }
        }
        Ok(out)
    }

    /// Deletes a webhook with its deliveries; false when it did not exist.
    pub fn delete_webhook(&self, id: &str) -> Result<bool> {
        let txn = self.db.begin_write().context("begin write")?;
        let existed = delete_webhook_in(&txn, id)?;
        txn.commit().context("failed to commit webhook delete")?;
        Ok(existed)
    }

    pub fn get_event(&self, id: &str) -> Result<Option<Event>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(EVENTS).context("open events")?;
        let raw = table.get(id).context("read event")?;
        Ok(raw
            .map(|raw| decode::<StoredEvent>(raw.value()))
            .transpose()?
            .map(Event::from))
    }

    /// Writes one event on its own (for changes that are not a store write of their own).
    pub fn emit(&self, bot: &BotId, new: NewEvent) -> Result<Event> {
        let txn = self.db.begin_write().context("begin write")?;
        let event = emit(&txn, bot, new)?;
        txn.commit().context("failed to commit event")?;
        self.outbox_written();
        Ok(event)
    }

    /// When the earliest pending delivery is due (unix ms).
    pub fn next_due_ms(&self) -> Result<Option<u64>> {
        let txn = self.db.begin_read().context("begin read")?;
        let due = txn.open_table(DUE).context("open deliveries_due")?;
        let first = due.first().context("read due deliveries")?;
        Ok(first.map(|(key, _)| key.value().0))
    }

    /// Up to `limit` deliveries due by `now_ms`, earliest first, leaving out those in
    /// `skip` (being sent).
    pub fn due_deliveries(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &HashSet<(String, String)>,
    ) -> Result<Vec<DueDelivery>> {
        let txn = self.db.begin_read().context("begin read")?;
        let due = txn.open_table(DUE).context("open deliveries_due")?;
        let webhooks = txn.open_table(WEBHOOKS).context("open webhooks")?;
        let events = txn.open_table(EVENTS).context("open events")?;
        let deliveries = txn.open_table(DELIVERIES).context("open deliveries")?;
        let mut out = Vec::new();
        for entry in due
            .range((0u64, "", "")..=(now_ms, "\u{10ffff}", "\u{10ffff}"))
            .context("range due deliveries")?
        {
            let (key, _) = entry.context("read due delivery")?;
            let (due_ms, webhook_id, event_id) = key.value();
            if skip.contains(&(webhook_id.to_string(), event_id.to_string())) {
                continue;
            }
            let (Some(webhook), Some(event), Some(delivery)) = (
                webhooks.get(webhook_id).context("read webhook")?,
                events.get(event_id).context("read event")?,
                deliveries
                    .get((webhook_id, event_id))
                    .context("read delivery")?,
            ) else {
                continue;
            };
            let delivery: Delivery = decode(delivery.value())?;
            out.push(DueDelivery {
                due_ms,
                webhook: decode(webhook.value())?,
                event: decode::<StoredEvent>(event.value())?.into(),
                attempts: delivery.attempts.len(),
            });
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// Records attempts and what follows from each, in one transaction (the delivery
    /// worker batches the attempts that finished together).
    pub fn record_attempts(&self, attempts: &[(DueDelivery, Attempt, Outcome)]) -> Result<()> {
        let txn = self.db.begin_write().context("begin write")?;
        {
            let mut deliveries = txn.open_table(DELIVERIES).context("open deliveries")?;
            let mut due_table = txn.open_table(DUE).context("open deliveries_due")?;
            for (due, attempt, outcome) in attempts {
                let (webhook_id, event_id) = (due.webhook.id.as_str(), due.event.id.as_str());
                let raw = deliveries
                    .get((webhook_id, event_id))
                    .context("read delivery")?
                    .map(|r| r.value().to_vec());
                // Deleted (with its webhook) while it was being sent: nothing to record.
                let Some(raw) = raw else {
                    continue;
                };
                let mut delivery: Delivery = decode(&raw)?;
                due_table
                    .remove((due.due_ms, webhook_id, event_id))
                    .context("remove due delivery")?;
                delivery.attempts.push(attempt.clone());
                match outcome {
                    Outcome::Delivered => {
                        delivery.state = "delivered".into();
                        delivery.next_attempt_ms = None;
                    }
                    Outcome::Failed => {
                        delivery.state = "failed".into();
                        delivery.next_attempt_ms = None;
                    }
                    Outcome::RetryAt(at) => {
                        delivery.state = "pending".into();
                        delivery.next_attempt_ms = Some(*at);
                        due_table
                            .insert((*at, webhook_id, event_id), ())
                            .context("write due delivery")?;
                    }
                }
                deliveries
                    .insert((webhook_id, event_id), encode(&delivery)?.as_slice())
                    .context("write delivery")?;
            }
        }
        txn.commit().context("failed to commit attempts")?;
        Ok(())
    }

    /// A webhook's deliveries, newest first, starting after the event id `before`.
    pub fn deliveries(
        &self,
        webhook_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(DELIVERIES).context("open deliveries")?;
        let end = match before {
            Some(before) => std::ops::Bound::Excluded((webhook_id, before)),
            None => std::ops::Bound::Included((webhook_id, "\u{10ffff}")),
        };
        let mut out = Vec::new();
        for entry in table
            .range::<(&str, &str)>((std::ops::Bound::Included((webhook_id, "")), end))
            .context("range deliveries")?
            .rev()
        {
            let (_, raw) = entry.context("read delivery")?;
            out.push(decode(raw.value())?);
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// Sends an event again: its deliveries to `webhooks` (every webhook of its bot that
    /// wants it when empty) become pending now, keeping their attempt history. Returns the
    /// webhooks it was queued for.
    pub fn redeliver(&self, event: &Event, webhooks: &[Webhook]) -> Result<Vec<String>> {
        let now = now_ms();
        let txn = self.db.begin_write().context("begin write")?;
        let mut queued = Vec::new();
        {
            let mut deliveries = txn.open_table(DELIVERIES).context("open deliveries")?;
            let mut due = txn.open_table(DUE).context("open deliveries_due")?;
            for webhook in webhooks {
                let key = (webhook.id.as_str(), event.id.as_str());
                let existing = deliveries
                    .get(key)
                    .context("read delivery")?
                    .map(|r| decode::<Delivery>(r.value()))
                    .transpose()?;
                let mut delivery = existing.unwrap_or_else(|| Delivery {
                    webhook_id: webhook.id.clone(),
                    event_id: event.id.clone(),
                    kind: event.kind.clone(),
                    state: "pending".into(),
                    attempts: Vec::new(),
                    next_attempt_ms: None,
                    created: event.created,
                });
                if let Some(at) = delivery.next_attempt_ms {
                    due.remove((at, key.0, key.1))
                        .context("remove due delivery")?;
                }
                delivery.state = "pending".into();
                delivery.next_attempt_ms = Some(now);
                deliveries
                    .insert(key, encode(&delivery)?.as_slice())
                    .context("write delivery")?;
                due.insert((now, key.0, key.1), ())
                    .context("write due delivery")?;
                queued.push(webhook.id.clone());
            }
        }
        txn.commit().context("failed to commit redelivery")?;
        self.outbox_written();
        Ok(queued)
    }

    /// A bot's leads in time order, starting after the lead id `after`.
    pub fn leads(&self, bot: &BotId, after: Option<&str>, limit: usize) -> Result<Vec<Lead>> {
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

    /// Erases the leads of one end user (`DELETE /v1/users/{id}`); returns how many.
    pub fn delete_user_leads(&self, user: &str, bots: &[BotId]) -> Result<usize> {
        let txn = self.db.begin_write().context("begin write")?;
        let mut removed = 0;
        {
            let mut table = txn.open_table(LEADS).context("open leads")?;
            table
                .retain(|(bot, _), raw| {
                    let lead: Option<Lead> = serde_json::from_slice(raw).ok();
                    let erase = lead.is_some_and(|l| {
                        l.user_id.as_deref() == Some(user) && bots.iter().any(|b| b.as_str() == bot)
                    });
                    removed += usize::from(erase);
                    !erase
                })
                .context("remove leads")?;
        }
        txn.commit().context("failed to commit lead erasure")?;
        Ok(removed)
    }
}

/// Writes a lead within `txn` (the caller emits `lead.captured`).
pub(super) fn put_lead_in(txn: &WriteTransaction, lead: &Lead) -> Result<()> {
    let mut table = txn.open_table(LEADS).context("open leads")?;
    table
        .insert(
            (lead.bot_id.as_str(), lead.id.as_str()),
            encode(lead)?.as_slice(),
        )
        .context("write lead")?;
    Ok(())
}
