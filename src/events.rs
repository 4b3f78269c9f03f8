//! Webhook delivery: event types, the `Docent-Signature` header, the retry policy and the
//! delivery worker that drains the store's outbox.
//!
//! Events are written by the storage engine in the transaction of the change that caused
//! them (the `OutboxStore` port). The worker sends each due delivery as
//! `{"id", "type", "created", "data"}`, signed `t=<unix>,v1=<hex hmac-sha256(secret,
//! "<t>.<body>")>` (a second `v1=` with the previous secret during a rotation's overlap),
//! and records the attempt: delivered on 2xx; retried with exponential backoff and jitter
//! on network errors, 408, 429 (honouring `Retry-After`) and 5xx until the retry horizon;
//! failed otherwise. The event id is the same on every attempt, so receivers dedupe on it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::ids::now_ms;
use crate::ingest::ssrf::{PublicResolver, TargetGuard};
use crate::ports::{Attempt, DueDelivery, OutboxStore, Outcome};

pub use crate::domain::event_kinds::{
    CONVERSATION_HANDOFF, CONVERSATION_STARTED, LEAD_CAPTURED, MESSAGE_UNANSWERED, TYPES,
};

/// The header receivers verify.
pub const SIGNATURE_HEADER: &str = "Docent-Signature";
/// How old a signature's `t` may be before a receiver should refuse it (replay window).
pub const REPLAY_TOLERANCE_SECS: u64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// Hex HMAC-SHA256 of `"<t>.<body>"` under `secret`.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `t=<t>,v1=<sig>[,v1=<sig>]`: one signature per secret.
pub fn signature_header(secrets: &[&str], t: u64, body: &[u8]) -> String {
    let mut out = format!("t={t}");
    for secret in secrets {
        out.push_str(",v1=");
        out.push_str(&sign(secret, t, body));
    }
    out
}

/// What a receiver does: true when some `v1` matches `secret` (compared in constant time)
/// and `t` is within `tolerance` seconds of `now`.
pub fn verify(header: &str, secret: &str, body: &[u8], now: u64, tolerance: u64) -> bool {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if t.abs_diff(now) > tolerance {
        return false;
    }
    signatures.iter().any(|signature| {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(signature).is_ok()
    })
}

/// How the worker sends.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Per-request timeout.
    pub timeout: Duration,
    /// How long after an event was created it is still retried; then it is failed.
    pub horizon: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Let webhook URLs reach private, loopback and link-local addresses.
    pub allow_private_targets: bool,
    /// The first retry's delay; each later one doubles it (up to an hour), with jitter.
    pub base_delay: Duration,
    /// How long settled events (every delivery delivered or failed) are kept.
    pub retention: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(10),
            horizon: Duration::from_secs(3 * 24 * 3600),
            concurrency: 16,
            allow_private_targets: false,
            base_delay: Duration::from_secs(1),
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The delay before retry number `attempts` (1 after the first failure): `base · 2^(n-1)`
/// capped at an hour, with jitter; a receiver's `Retry-After` wins when given (up to an
/// hour).
pub fn backoff(base: Duration, attempts: usize, retry_after: Option<Duration>) -> Duration {
    crate::retry::backoff(base, attempts, retry_after, Duration::from_secs(3600))
}

/// The JSON body of a delivery.
pub fn payload(event: &crate::ports::Event) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": event.id,
        "type": event.kind,
        "created": event.created,
        "data": event.data,
    }))
    .unwrap_or_default()
}

/// Counts of recorded delivery attempts by outcome, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
}

impl DeliveryStats {
    fn count(&self, attempts: &[(DueDelivery, Attempt, Outcome)]) {
        for (_, _, outcome) in attempts {
            let counter = match outcome {
                Outcome::Delivered => &self.delivered,
                Outcome::RetryAt(_) => &self.retried,
                Outcome::Failed => &self.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the delivery worker on a thread of its own; it runs as long as the process.
pub fn start_worker(
    store: Arc<dyn OutboxStore>,
    config: DeliveryConfig,
    stats: Arc<DeliveryStats>,
) {
    crate::telemetry::spawn_worker("docent-webhooks", move |runtime| {
        runtime.block_on(run(store, config, stats))
    });
}

fn client(config: &DeliveryConfig) -> anyhow::Result<reqwest::Client> {
    crate::ingest::crawl::install_tls_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("docent-webhooks/", env!("CARGO_PKG_VERSION")))
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(10)))
        // A redirect could point anywhere; receivers answer where they were asked.
        .redirect(reqwest::redirect::Policy::none());
    if !config.allow_private_targets {
        // A proxy would resolve names itself, past the resolver's check.
        builder = builder
            .no_proxy()
            .dns_resolver(Arc::new(PublicResolver(Arc::new(TargetGuard::default()))));
    }
    Ok(builder.build()?)
}

async fn run(store: Arc<dyn OutboxStore>, config: DeliveryConfig, stats: Arc<DeliveryStats>) {
    let client = match client(&config) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("webhook worker cannot build its HTTP client: {e:#}");
            return;
        }
    };
    let signal = store.outbox_signal();
    // A send takes at most the timeout; its attempt is recorded as soon as it ends.
    let claim_ms = (config.timeout + Duration::from_secs(60)).as_millis() as u64;
    // Deliveries being sent or waiting for their attempt to be recorded: not read again.
    let mut in_flight: HashSet<(String, String)> = HashSet::new();
    let mut running: HashMap<tokio::task::Id, (String, String)> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_prune = std::time::Instant::now();
    loop {
        if std::time::Instant::now() >= next_prune {
            next_prune = std::time::Instant::now() + Duration::from_secs(3600);
            let cutoff = now_ms().saturating_sub(config.retention.as_millis() as u64);
            let pruner = store.clone();
            // In slices, so a large backlog never holds the write lock for long.
            let pruned = tokio::task::spawn_blocking(move || {
                let mut total = 0;
                loop {
                    match pruner.prune_events(cutoff, 1000) {
                        Ok(0) => return Ok(total),
                        Ok(n) => total += n,
                        Err(e) => return Err(e),
                    }
                    if total >= 100_000 {
                        return Ok(total);
                    }
                }
            })
            .await;
            match pruned {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    tracing::info!(target: "docent::webhooks", pruned = n, "old events pruned")
                }
                Ok(Err(e)) => tracing::error!("cannot prune old events: {e:#}"),
                Err(e) => tracing::error!("cannot prune old events: {e}"),
            }
        }
        let free = config.concurrency.max(1).saturating_sub(tasks.len());
        if free > 0 {
            match store.due_deliveries(now_ms(), free, &in_flight, claim_ms) {
                Ok(due) => {
                    for delivery in due {
                        let key = (delivery.webhook.id.clone(), delivery.event.id.clone());
                        in_flight.insert(key.clone());
                        let (client, config) = (client.clone(), config.clone());
                        let handle =
                            tasks.spawn(async move { send(&client, &config, delivery).await });
                        running.insert(handle.id(), key);
                    }
                }
                Err(e) => tracing::error!("cannot read the webhook outbox: {e:#}"),
            }
        }
        // Wake for a finished send, a new event, or the next delivery's time.
        let wait = match store.next_due_ms_except(&in_flight) {
            Ok(Some(at)) => {
                Duration::from_millis(at.saturating_sub(now_ms())).min(Duration::from_secs(5))
            }
            _ => Duration::from_secs(5),
        };
        let wait = if tasks.len() >= config.concurrency.max(1) {
            Duration::from_secs(5)
        } else {
            wait.max(Duration::from_millis(20))
        };
        let mut joined = Vec::new();
        tokio::select! {
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => joined.push(done),
            _ = signal.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        // Every send that has finished by now is recorded in one transaction.
        while let Some(done) = tasks.try_join_next_with_id() {
            joined.push(done);
        }
        let mut finished = Vec::new();
        let mut keys = Vec::new();
        for done in joined {
            match done {
                Ok((id, result)) => {
                    keys.extend(running.remove(&id));
                    finished.push(result);
                }
                // A send that panicked is tried again at its next round.
                Err(e) => {
                    tracing::error!("a webhook send failed: {e}");
                    if let Some(key) = running.remove(&e.id()) {
                        in_flight.remove(&key);
                    }
                }
            }
        }
        if finished.is_empty() {
            continue;
        }
        let writer = store.clone();
        let counted = stats.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            writer.record_attempts(&finished)?;
            counted.count(&finished);
            Ok::<_, crate::ports::Error>(())
        });
        match recorded.await {
            Ok(Ok(())) => {}
            // Unrecorded attempts are sent again later: at least once.
            Ok(Err(e)) => tracing::error!("cannot record webhook attempts: {e:#}"),
            Err(e) => tracing::error!("cannot record webhook attempts: {e}"),
        }
        for key in keys {
            in_flight.remove(&key);
        }
    }
}

/// Sends one delivery; returns the attempt and what follows from it.
async fn send(
    client: &reqwest::Client,
    config: &DeliveryConfig,
    due: DueDelivery,
) -> (DueDelivery, Attempt, Outcome) {
    crate::telemetry::failpoint("webhook_send");
    let body = payload(&due.event);
    let now = crate::telemetry::unix_now();
    let secrets = due.webhook.signing_secrets(now);
    let header = signature_header(&secrets, now, &body);
    let started = Instant::now();
    let at_ms = now_ms();
    let target = url::Url::parse(&due.webhook.url);
    let guard_error = match &target {
        Ok(url) if !config.allow_private_targets => TargetGuard::default().check(url).err(),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    let (status, error, wait) = if let Some(error) = guard_error {
        (None, Some(format!("refused: {error}")), None)
    } else {
        let result = client
            .post(&due.webhook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, header)
            .header("Docent-Event-Id", &due.event.id)
            .header("Docent-Event-Type", &due.event.kind)
            .body(body)
            .send()
            .await;
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let wait = crate::retry::retry_after(response.headers());
                // The body is not needed, but reading a little lets the connection be reused.
                let _ = tokio::time::timeout(Duration::from_secs(1), response.bytes()).await;
                (Some(status), None, wait)
            }
            Err(e) => (None, Some(error_text(&e)), None),
        }
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    let attempts = due.attempts + 1;
    let refused = error.as_deref().is_some_and(|e| e.starts_with("refused"));
    let outcome = match status {
        Some(200..=299) => Outcome::Delivered,
        Some(408 | 429 | 500..=599) | None if !refused => {
            let next = now_ms() + backoff(config.base_delay, attempts, wait).as_millis() as u64;
            let horizon_end = due.event.created * 1000 + config.horizon.as_millis() as u64;
            if next > horizon_end {
                Outcome::Failed
            } else {
                Outcome::RetryAt(next)
            }
        }
        _ => Outcome::Failed,
    };
    tracing::info!(
        target: "docent::webhooks",
        webhook = %due.webhook.id,
        event = %due.event.id,
        status,
        error = error.as_deref().unwrap_or(""),
        latency_ms,
        outcome = ?outcome,
        "delivery attempt"
    );
    let attempt = Attempt {
        at_ms,
        status,
        error,
        latency_ms,
    };
    (due, attempt, outcome)
}

/// What went wrong, without the URL (webhook URLs can carry secrets in their path).
fn error_text(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_the_right_secret_and_time_only() {
        let body = br#"{"id":"evt_1"}"#;
        // Computed independently: Python's hmac.new(b"whsec_test",
        // b'1700000000.{"id":"evt_1"}', hashlib.sha256).hexdigest()
        assert_eq!(
            sign("whsec_test", 1_700_000_000, body),
            "c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925"
        );
        let header = signature_header(&["whsec_new", "whsec_old"], 1_700_000_000, body);
        assert_eq!(header.matches("v1=").count(), 2);
        for secret in ["whsec_new", "whsec_old"] {
            assert!(verify(&header, secret, body, 1_700_000_100, 300));
        }
        assert!(!verify(&header, "whsec_other", body, 1_700_000_100, 300));
        assert!(!verify(&header, "whsec_new", b"{}", 1_700_000_100, 300));
        assert!(
            !verify(&header, "whsec_new", body, 1_700_000_301, 300),
            "replayed too late"
        );
        assert!(!verify("v1=00", "whsec_new", body, 1_700_000_000, 300));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let base = Duration::from_secs(1);
        for attempts in 1..=5 {
            let full = Duration::from_secs(1 << (attempts - 1));
            for _ in 0..50 {
                let delay = backoff(base, attempts, None);
                assert!(delay >= full / 2 && delay < full, "{attempts}: {delay:?}");
            }
        }
        assert!(backoff(base, 40, None) <= Duration::from_secs(3600));
        assert_eq!(
            backoff(base, 3, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}
