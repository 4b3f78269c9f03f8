//! `docent bench --only cluster`: cached answers through a load balancer (Debian's haproxy,
//! round robin) in front of one `docent serve` node and then three, all on one PostgreSQL
//! store (`pg::local`), beside the first node asked directly. Every process shares this
//! machine's cores, so the three-to-one ratio shows what adding nodes costs or gains when
//! they cannot add cores; one node's rate per core is what each further machine adds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::balancer::Haproxy;
use super::serve::{QUESTIONS, Server, demo_site, load, prepare_store};
use super::{ratio, round1};
use crate::config::Config;
use crate::embed::MiniLm;
use crate::pg::PgStore;
use crate::pg::local::{LocalServer, Settings};
use crate::ports::Storage;

/// Nodes behind the balancer in the second measurement.
const NODES: usize = 3;
/// Requests in flight at once, as in the serve part.
const CONCURRENCY: usize = 16;

pub async fn bench_cluster(
    config: &Config,
    embedder: Arc<MiniLm>,
    pg_bin: &Path,
    quick: bool,
) -> anyhow::Result<Value> {
    let site = demo_site().context("the bundled demo site (tests/fixtures/site) is missing")?;
    let settings = Settings {
        max_connections: 100,
        fsync: true,
    };
    let (server, url) = tokio::task::spawn_blocking({
        let pg_bin = pg_bin.to_path_buf();
        move || -> anyhow::Result<(LocalServer, String)> {
            let server = LocalServer::start(&pg_bin, settings)?;
            let url = server.database("bench_cluster")?;
            Ok((server, url))
        }
    })
    .await??;
    let store: Arc<dyn Storage> = Arc::new(PgStore::open(&url, None)?);
    let key = prepare_store(store, &site, embedder).await?;
    let dirs = (0..NODES)
        .map(|_| tempfile::tempdir())
        .collect::<Result<Vec<_>, _>>()?;
    let global = ["--store".to_string(), url];
    let nodes = dirs
        .iter()
        .map(|dir| Server::spawn_with(config, dir.path(), &global, &[]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    crate::ingest::crawl::install_tls_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(300))
        .build()?;
    let question = json!({"bot_id": "demo", "message": QUESTIONS[0]});
    for node in &nodes {
        node.wait_ready(&client).await?;
        warm(&client, node, &key, &question).await?;
    }
    let seconds = if quick { 3.0 } else { 8.0 };
    let ask = |base: String| {
        let (client, key, question) = (client.clone(), key.clone(), question.clone());
        async move {
            let url = format!("{base}/v1/chat");
            load(
                &client,
                &url,
                Some(&key),
                Some(&question),
                CONCURRENCY,
                seconds,
            )
            .await
        }
    };
    let direct = ask(nodes[0].url("")).await?;
    let one = {
        let lb = Haproxy::start(&[nodes[0].address().to_string()])?;
        ask(lb.base().to_string()).await?
    };
    let before = cached_counts(&client, &nodes).await?;
    let three = {
        let addresses: Vec<String> = nodes.iter().map(|n| n.address().to_string()).collect();
        let lb = Haproxy::start(&addresses)?;
        ask(lb.base().to_string()).await?
    };
    let after = cached_counts(&client, &nodes).await?;
    let served: Vec<u64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    for node in nodes {
        node.stop();
    }
    drop(server);
    Ok(report(direct, one, three, served))
}

/// Asks `question` on `node` until the answer comes from its cache (the first ask
/// generates it with the configured model).
async fn warm(
    client: &reqwest::Client,
    node: &Server,
    key: &str,
    question: &Value,
) -> anyhow::Result<()> {
    for _ in 0..2 {
        let res = client
            .post(node.url("/v1/chat"))
            .bearer_auth(key)
            .json(question)
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "chat failed: {}", res.status());
    }
    let cached = cached_counts(client, std::slice::from_ref(node)).await?;
    anyhow::ensure!(
        cached[0] >= 1,
        "the second ask on {} was not served from the answer cache",
        node.address()
    );
    Ok(())
}

/// Each node's `docent_chat_cached_total` (its `/metrics`, readable from loopback).
async fn cached_counts(client: &reqwest::Client, nodes: &[Server]) -> anyhow::Result<Vec<u64>> {
    let mut counts = Vec::new();
    for node in nodes {
        let text = client
            .get(node.url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("docent_chat_cached_total "))
            .and_then(|n| n.trim().parse().ok())
            .context("no docent_chat_cached_total in /metrics")?;
        counts.push(count);
    }
    Ok(counts)
}

fn report(direct: Value, one: Value, three: Value, served: Vec<u64>) -> Value {
    let rps = |v: &Value| v["requests_per_s"].as_f64().unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    json!({
        "one_node_direct": direct,
        "one_node_via_haproxy": one,
        "three_nodes_via_haproxy": three,
        "haproxy_vs_direct": ratio(rps(&one), rps(&direct)),
        "three_vs_one_node": ratio(rps(&three), rps(&one)),
        "cached_answers_per_node_in_three": served,
        "cores": cores,
        "one_node_per_core_req_per_s": round1(rps(&one) / cores as f64),
        "note": "every process (nodes, haproxy, PostgreSQL, the load loop) shares these cores: \
                 three nodes here add no cores, so the ratio is the cost of spreading; \
                 nodes on their own machines add about one node's per-core rate per core",
        "concurrency": CONCURRENCY,
    })
}
