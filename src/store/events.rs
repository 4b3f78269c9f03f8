//! The durable outbox: events, the webhooks they go to, each (webhook, event) delivery with
//! its attempts, and leads.
//!
//! An event is written in the same transaction as the change that caused it, together with
//! one pending delivery per subscribed webhook and its row in `deliveries_due` (ordered by
//! when it is next due). The delivery worker (`crate::events`) reads due rows, sends, and
//! records each attempt in a transaction of its own, so a crash at any point leaves every
//! event either delivered or still due: at-least-once.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Store, decode, encode};
use crate::domain::{BotId, Lead};
use crate::ids::now_ms;
use crate::ports::{
    Attempt, Delivery, DueDelivery, Event, NewEvent, OutboxStore, Outcome, Result, Webhook,
};

pub(super) const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
pub(super) const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks");
/// Keyed by (webhook id, event id); event ids sort by time.
pub(super) const DELIVERIES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("deliveries");
/// (next attempt in unix ms, webhook id, event id) for every pending delivery.
const DUE: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("deliveries_due");
/// Keyed by (bot id, lead id); lead ids sort by time.
pub(super) const LEADS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leads");

/// Creates the outbox tables (called from `Store::open`'s schema transaction).
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(EVENTS).context("events table")?;
    txn.open_table(WEBHOOKS).context("webhooks table")?;
    txn.open_table(DELIVERIES).context("deliveries table")?;
    txn.open_table(DUE).context("deliveries_due table")?;
    txn.open_table(LEADS).context("leads table")?;
    Ok(())
}

/// Writes `new` for `bot` within `txn`, with a pending delivery to every webhook of the bot
/// that wants it.
pub(super) fn emit(txn: &WriteTransaction, bot: &BotId, new: NewEvent) -> Result<Event> {
    let now = now_ms();
    let event = Event {
        id: crate::ids::event(),
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
        let delivery = Delivery::pending(&webhook.id, &event, Some(now));
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
pub(super) struct StoredEvent {
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

/// Removes, within `txn`, the events `erase` picks, with their deliveries and due rows
/// (erasing a user, a conversation or a bot erases what its events carry).
pub(super) fn erase_events_in(
    txn: &WriteTransaction,
    erase: impl Fn(Option<&BotId>, &Value) -> bool,
) -> Result<usize> {
    let mut events = txn.open_table(EVENTS).context("open events")?;
    let mut ids = HashSet::new();
    events
        .retain(|id, raw| {
            let gone = serde_json::from_slice::<StoredEvent>(raw)
                .is_ok_and(|e| erase(e.bot_id.as_ref(), &e.data));
            if gone {
                ids.insert(id.to_string());
            }
            !gone
        })
        .context("remove events")?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut deliveries = txn.open_table(DELIVERIES).context("open deliveries")?;
    deliveries
        .retain(|(_, event), _| !ids.contains(event))
        .context("remove deliveries")?;
    let mut due = txn.open_table(DUE).context("open deliveries_due")?;
    due.retain(|(_, _, event), _| !ids.contains(event))
        .context("remove due deliveries")?;
    Ok(ids.len())
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
    erase_events_in(txn, |owner, _| owner == Some(bot))?;
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

impl OutboxStore for Store {
    fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox.clone()
    }

    fn put_webhook(&self, webhook: &Webhook) -> Result<()> {
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

    fn update_webhook(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Webhook),
    ) -> Result<Option<Webhook>> {
        let txn = self.db.begin_write().context("begin write")?;
        let webhook = {
            let mut table = txn.open_table(WEBHOOKS).context("open webhooks")?;
            let raw = table
                .get(id)
                .context("read webhook")?
                .map(|r| r.value().to_vec());
            let Some(raw) = raw else { return Ok(None) };
            let mut webhook: Webhook = decode(&raw)?;
            change(&mut webhook);
            table
                .insert(id, encode(&webhook)?.as_slice())
                .context("write webhook")?;
            webhook
        };
        txn.commit().context("failed to commit webhook")?;
        Ok(Some(webhook))
    }

    fn get_webhook(&self, id: &str) -> Result<Option<Webhook>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(WEBHOOKS).context("open webhooks")?;
        let raw = table.get(id).context("read webhook")?;
        raw.map(|raw| decode(raw.value())).transpose()
    }

    fn list_webhooks(&self, bot: Option<&BotId>) -> Result<Vec<Webhook>> {
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

    fn delete_webhook(&self, id: &str) -> Result<bool> {
        let txn = self.db.begin_write().context("begin write")?;
        let existed = delete_webhook_in(&txn, id)?;
        txn.commit().context("failed to commit webhook delete")?;
        Ok(existed)
    }

    fn get_event(&self, id: &str) -> Result<Option<Event>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(EVENTS).context("open events")?;
        let raw = table.get(id).context("read event")?;
        Ok(raw
            .map(|raw| decode::<StoredEvent>(raw.value()))
            .transpose()?
            .map(Event::from))
    }

    fn emit(&self, bot: &BotId, new: NewEvent) -> Result<Event> {
        let txn = self.db.begin_write().context("begin write")?;
        let event = emit(&txn, bot, new)?;
        txn.commit().context("failed to commit event")?;
        self.outbox_written();
        Ok(event)
    }

    fn due_deliveries(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &HashSet<(String, String)>,
        // One process holds the database: `skip` is all the claim it needs.
        _claim_ms: u64,
    ) -> Result<Vec<DueDelivery>> {
        let mut out = Vec::new();
        let mut orphans: Vec<(u64, String, String)> = Vec::new();
        {
            let txn = self.db.begin_read().context("begin read")?;
            let due = txn.open_table(DUE).context("open deliveries_due")?;
            let webhooks = txn.open_table(WEBHOOKS).context("open webhooks")?;
            let events = txn.open_table(EVENTS).context("open events")?;
            let deliveries = txn.open_table(DELIVERIES).context("open deliveries")?;
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
                    orphans.push((due_ms, webhook_id.to_string(), event_id.to_string()));
                    continue;
                };
                let delivery: Delivery = decode(delivery.value())?;
                // Only the delivery's current row is live; another is left from a race.
                if delivery.next_attempt_ms != Some(due_ms) {
                    orphans.push((due_ms, webhook_id.to_string(), event_id.to_string()));
                    continue;
                }
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
        }
        if !orphans.is_empty() {
            let txn = self.db.begin_write().context("begin write")?;
            {
                let mut due = txn.open_table(DUE).context("open deliveries_due")?;
                for (at, webhook, event) in &orphans {
                    due.remove((*at, webhook.as_str(), event.as_str()))
                        .context("remove due delivery")?;
                }
            }
            txn.commit().context("failed to commit due cleanup")?;
        }
        Ok(out)
    }

    fn prune_events(&self, before_ms: u64, limit: usize) -> Result<usize> {
        let cutoff = format!("evt_{before_ms:012x}");
        let txn = self.db.begin_write().context("begin write")?;
        let mut pruned = 0;
        {
            let mut events = txn.open_table(EVENTS).context("open events")?;
            let mut deliveries = txn.open_table(DELIVERIES).context("open deliveries")?;
            let webhooks: Vec<String> = {
                let table = txn.open_table(WEBHOOKS).context("open webhooks")?;
                let mut ids = Vec::new();
                for entry in table.iter().context("scan webhooks")? {
                    ids.push(entry.context("read webhook")?.0.value().to_string());
                }
                ids
            };
            let old: Vec<String> = events
                .range::<&str>(.."evt_\u{10ffff}")
                .context("range events")?
                .map_while(|entry| {
                    entry
                        .ok()
                        .map(|(key, _)| key.value().to_string())
                        .filter(|id| id.as_str() < cutoff.as_str())
                })
                .take(limit)
                .collect();
            for id in old {
                let mut settled = true;
                let mut keys = Vec::new();
                for webhook in &webhooks {
                    if let Some(raw) = deliveries
                        .get((webhook.as_str(), id.as_str()))
                        .context("read delivery")?
                    {
                        let delivery: Delivery = decode(raw.value())?;
                        settled &= delivery.state != "pending";
                        keys.push(webhook.clone());
                    }
                }
                if !settled {
                    continue;
                }
                for webhook in keys {
                    deliveries
                        .remove((webhook.as_str(), id.as_str()))
                        .context("remove delivery")?;
                }
                events.remove(id.as_str()).context("remove event")?;
                pruned += 1;
            }
        }
        txn.commit().context("failed to commit event pruning")?;
        Ok(pruned)
    }

    fn pending_deliveries(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read().context("begin read")?;
        let due = txn.open_table(DUE).context("open deliveries_due")?;
        Ok(due.len().context("count due deliveries")?)
    }

    fn next_due_ms_except(&self, skip: &HashSet<(String, String)>) -> Result<Option<u64>> {
        let txn = self.db.begin_read().context("begin read")?;
        let due = txn.open_table(DUE).context("open deliveries_due")?;
        for entry in due.iter().context("scan due deliveries")? {
            let (key, _) = entry.context("read due delivery")?;
            let (at, webhook, event) = key.value();
            if !skip.contains(&(webhook.to_string(), event.to_string())) {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    fn record_attempts(&self, attempts: &[(DueDelivery, Attempt, Outcome)]) -> Result<()> {
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
                delivery.attempts.push(attempt.clone());
                // Redelivered while this attempt was in flight: the newer schedule stands,
                // and this attempt is only history.
                if delivery.next_attempt_ms != Some(due.due_ms) {
                    deliveries
                        .insert((webhook_id, event_id), encode(&delivery)?.as_slice())
                        .context("write delivery")?;
                    continue;
                }
                due_table
                    .remove((due.due_ms, webhook_id, event_id))
                    .context("remove due delivery")?;
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

    fn deliveries(
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

    fn redeliver(&self, event: &Event, webhooks: &[Webhook]) -> Result<Vec<String>> {
        let now = now_ms();
        let txn = self.db.begin_write().context("begin write")?;
        let mut queued = Vec::new();
        {
            let mut deliveries = txn.open_table(DELIVERIES).context("open deliveries")?;
            let mut due = txn.open_table(DUE).context("open deliveries_due")?;
            let existing_webhooks = txn.open_table(WEBHOOKS).context("open webhooks")?;
            for webhook in webhooks {
                // Deleted since the caller listed it.
                if existing_webhooks
                    .get(webhook.id.as_str())
                    .context("read webhook")?
                    .is_none()
                {
                    continue;
                }
                let key = (webhook.id.as_str(), event.id.as_str());
                let existing = deliveries
                    .get(key)
                    .context("read delivery")?
                    .map(|r| decode::<Delivery>(r.value()))
                    .transpose()?;
                let mut delivery =
                    existing.unwrap_or_else(|| Delivery::pending(&webhook.id, event, None));
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
}

/// Erases the leads of one end user on the given bots within `txn`; returns how many.
pub(super) fn delete_user_leads_in(
    txn: &WriteTransaction,
    user: &str,
    bots: &[BotId],
) -> Result<usize> {
    let mut removed = 0;
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
    Ok(removed)
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

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;
    use crate::domain::Message;
    use crate::ports::{ConversationStore, TurnExtras};

    fn webhook(id: &str) -> Webhook {
        Webhook {
            id: id.into(),
            bot_id: BotId::parse("shop").unwrap(),
            url: "http://127.0.0.1:9/hook".into(),
            events: vec!["*".into()],
            secret: "whsec_x".into(),
            previous_secret: None,
            previous_until: None,
            created: 1,
        }
    }

    fn due_rows(store: &Store) -> Vec<(u64, String, String)> {
        let txn = store.db.begin_read().unwrap();
        let due = txn.open_table(DUE).unwrap();
        due.iter()
            .unwrap()
            .map(|e| {
                let (k, _) = e.unwrap();
                let (at, w, ev) = k.value();
                (at, w.to_string(), ev.to_string())
            })
            .collect()
    }

    fn attempt(status: u16) -> Attempt {
        Attempt {
            at_ms: now_ms(),
            status: Some(status),
            error: None,
            latency_ms: 1,
        }
    }

    #[test]
    fn a_redelivery_during_a_send_keeps_one_schedule_and_the_attempt_as_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bot = BotId::parse("shop").unwrap();
        store.put_webhook(&webhook("whk_a")).unwrap();
        let event = store
            .emit(
                &bot,
                NewEvent {
                    kind: crate::domain::event_kinds::LEAD_CAPTURED,
                    data: serde_json::json!({}),
                },
            )
            .unwrap();
        let due = store
            .due_deliveries(u64::MAX, 10, &HashSet::new(), 0)
            .unwrap();
        assert_eq!(due.len(), 1);
        // While the first send is in flight, the operator asks for a replay...
        std::thread::sleep(std::time::Duration::from_millis(2));
        store.redeliver(&event, &[webhook("whk_a")]).unwrap();
        // ...and the first send then fails with a retry: it must not add a second schedule.
        let retry_at = now_ms() + 60_000;
        store
            .record_attempts(&[(due[0].clone(), attempt(503), Outcome::RetryAt(retry_at))])
            .unwrap();
        let rows = due_rows(&store);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_ne!(rows[0].0, retry_at, "the replay's schedule stands");
        let delivery = &store.deliveries("whk_a", None, 10).unwrap()[0];
        assert_eq!(delivery.state, "pending");
        assert_eq!(delivery.attempts.len(), 1);
        assert_eq!(delivery.next_attempt_ms, Some(rows[0].0));
        // The replay is then sent and delivered: nothing is left due.
        let due = store
            .due_deliveries(u64::MAX, 10, &HashSet::new(), 0)
            .unwrap();
        assert_eq!(due.len(), 1);
        store
            .record_attempts(&[(due[0].clone(), attempt(200), Outcome::Delivered)])
            .unwrap();
        assert!(due_rows(&store).is_empty());
        assert_eq!(
            store.deliveries("whk_a", None, 10).unwrap()[0].state,
            "delivered"
        );
        // A replay to a webhook deleted meanwhile queues nothing.
        store.delete_webhook("whk_a").unwrap();
        assert!(
            store
                .redeliver(&event, &[webhook("whk_a")])
                .unwrap()
                .is_empty()
        );
        assert!(due_rows(&store).is_empty());
    }

    #[test]
    fn old_settled_events_are_pruned_and_pending_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bot = BotId::parse("shop").unwrap();
        store.put_webhook(&webhook("whk_a")).unwrap();
        let new = |n: u64| NewEvent {
            kind: crate::domain::event_kinds::LEAD_CAPTURED,
            data: serde_json::json!({"n": n}),
        };
        let settled = store.emit(&bot, new(1)).unwrap();
        let pending = store.emit(&bot, new(2)).unwrap();
        let due = store
            .due_deliveries(u64::MAX, 10, &HashSet::new(), 0)
            .unwrap();
        let first = due.iter().find(|d| d.event.id == settled.id).unwrap();
        store
            .record_attempts(&[(first.clone(), attempt(200), Outcome::Delivered)])
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let cutoff = now_ms();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let recent = store.emit(&bot, new(3)).unwrap();
        assert_eq!(store.prune_events(cutoff, 100).unwrap(), 1);
        assert!(store.get_event(&settled.id).unwrap().is_none());
        assert!(
            store.get_event(&pending.id).unwrap().is_some(),
            "still to deliver"
        );
        assert!(
            store.get_event(&recent.id).unwrap().is_some(),
            "newer than the cutoff"
        );
        let left: Vec<String> = store
            .deliveries("whk_a", None, 10)
            .unwrap()
            .into_iter()
            .map(|d| d.event_id)
            .collect();
        assert_eq!(left, [recent.id.clone(), pending.id.clone()]);
    }

    #[test]
    fn two_handoffs_from_one_snapshot_keep_the_first_and_announce_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_webhook(&webhook("whk_a")).unwrap();
        let open = crate::domain::fixtures::conversation("conv_1", "shop", Some("u1"));
        store
            .append_turn(&open, &[], TurnExtras::default())
            .unwrap();
        // Both requests read the conversation open, then write their handoff.
        let handed = |reason: &str, at: u64| {
            let mut c = open.clone();
            c.state = crate::domain::ConversationState::HandedOff;
            c.handoff_reason = Some(reason.into());
            c.handed_off_at = Some(at);
            c
        };
        let first = store
            .append_turn(&handed("first", 10), &[], TurnExtras::default())
            .unwrap();
        let second = store
            .append_turn(&handed("second", 11), &[], TurnExtras::default())
            .unwrap();
        for stood in [&first.conversation, &second.conversation] {
            assert_eq!(stood.handoff_reason.as_deref(), Some("first"));
            assert_eq!(stood.handed_off_at, Some(10));
        }
        let handoffs = store
            .deliveries("whk_a", None, 10)
            .unwrap()
            .iter()
            .filter(|d| {
                store.get_event(&d.event_id).unwrap().unwrap().kind
                    == crate::domain::event_kinds::CONVERSATION_HANDOFF
            })
            .count();
        assert_eq!(handoffs, 1);
    }

    #[test]
    fn erasing_a_conversation_erases_its_events_and_their_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_webhook(&webhook("whk_a")).unwrap();
        let conversation = crate::domain::fixtures::conversation("conv_1", "shop", Some("u1"));
        let question = Message {
            id: "msg_1".into(),
            role: crate::domain::Role::User,
            content: "my email is jane@example.com".into(),
            ..Message::default()
        };
        store
            .append_turn(
                &conversation,
                std::slice::from_ref(&question),
                TurnExtras::default(),
            )
            .unwrap();
        assert_eq!(due_rows(&store).len(), 1, "conversation.started is due");
        // A person takes over; a bot reply written meanwhile is left out.
        let mut handed = conversation.clone();
        handed.state = crate::domain::ConversationState::HandedOff;
        store
            .append_turn(&handed, &[], TurnExtras::default())
            .unwrap();
        let reply = Message {
            id: "msg_2".into(),
            role: crate::domain::Role::Assistant,
            content: "late answer".into(),
            ..Message::default()
        };
        let appended = store
            .append_turn(&conversation, &[question, reply], TurnExtras::default())
            .unwrap();
        assert!(appended.reply_dropped);
        assert!(appended.conversation.handed_off());
        assert!(
            store
                .messages("conv_1")
                .unwrap()
                .iter()
                .all(|m| m.role == crate::domain::Role::User)
        );
        let handoff = due_rows(&store);
        assert_eq!(handoff.len(), 2, "started and handoff are due: {handoff:?}");
        store.delete_conversations(&["conv_1".into()]).unwrap();
        assert!(due_rows(&store).is_empty());
        let txn = store.db.begin_read().unwrap();
        assert_eq!(txn.open_table(EVENTS).unwrap().len().unwrap(), 0);
        assert_eq!(txn.open_table(DELIVERIES).unwrap().len().unwrap(), 0);
    }
}
