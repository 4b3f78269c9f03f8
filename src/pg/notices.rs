//! Notices between the nodes sharing a PostgreSQL store: `NOTIFY` on the channel
//! `docent_live`, each carrying the sending process's id so that it skips its own, heard by
//! every node on a connection of its own (`LISTEN`), reconnecting after a loss.

use std::time::Duration;

use anyhow::Context;
use postgres::fallible_iterator::FallibleIterator;
use serde::{Deserialize, Serialize};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgStore;
use crate::ports::{Notice, Notices, Result};

const CHANNEL: &str = "docent_live";

/// The listener's connection names itself so: the nodes serving are the sessions so named.
const LISTENER: &str = "docent-node";

/// What goes over the channel: the notice and who sent it.
#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    notice: Notice,
}

impl Notices for PgStore {
    fn send(&self, notice: &Notice) -> Result<()> {
        let envelope = Envelope {
            from: self.origin.to_string(),
            notice: notice.clone(),
        };
        let payload = serde_json::to_string(&envelope).context("encode notice")?;
        self.execute(
            "send a notice",
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &payload],
        )?;
        Ok(())
    }

    fn listen(&self, mut deliver: Box<dyn FnMut(Option<Notice>) -> bool + Send>) -> Result<()> {
        let (config, tls, origin, target) = (
            self.config.clone(),
            self.tls.clone(),
            self.origin.clone(),
            self.target.clone(),
        );
        std::thread::Builder::new()
            .name("docent-notices".into())
            .spawn(move || {
                let mut backoff = Duration::from_secs(1);
                loop {
                    match listen_once(&config, &tls, &origin, deliver.as_mut()) {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!(
                                "lost the other nodes' notices ({target}): {e:#}; reconnecting"
                            );
                            if !deliver(None) {
                                return;
                            }
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            })
            .context("start the notice listener")?;
        Ok(())
    }

    fn nodes(&self) -> Result<u32> {
        let nodes: i64 = self.client(|c| {
            let row = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name = $1",
                    &[&LISTENER],
                )
                .context("count the nodes")?;
            Ok(row.get(0))
        })?;
        Ok(u32::try_from(nodes).unwrap_or(u32::MAX))
    }
}

/// Listens on one connection until `deliver` says stop (`Ok`) or the connection fails.
fn listen_once(
    config: &postgres::Config,
    tls: &MakeRustlsConnect,
    origin: &str,
    deliver: &mut (dyn FnMut(Option<Notice>) -> bool + Send),
) -> anyhow::Result<()> {
    let mut client = config
        .clone()
        .application_name(LISTENER)
        .connect(tls.clone())
        .context("connect")?;
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .context("listen")?;
    loop {
        let mut notifications = client.notifications();
        let mut heard = notifications.timeout_iter(Duration::from_secs(1));
        let next = heard.next().context("wait for notices")?;
        let notice = next.and_then(|n| {
            let envelope: Envelope = serde_json::from_str(n.payload()).ok()?;
            (envelope.from != origin).then_some(envelope.notice)
        });
        if !deliver(notice) {
            return Ok(());
        }
    }
}
