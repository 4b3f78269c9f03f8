//! Rate limits per API key and per client IP (GCRA buckets from `governor`), and the client
//! IP itself: the peer address, or the `X-Forwarded-For` entry a trusted proxy vouches for,
//! counted by address (IPv4) or by network (IPv6, a /64 by default).
//!
//! Nodes sharing a store each enforce their share of a limit: a request costs as many
//! cells as there are nodes serving, so N nodes behind an even balancer let through the
//! configured limit between them (less behind an uneven one; more only with more nodes
//! than the limit has units, each node then allowing one a window).
//!
//! Every limited response carries `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` (seconds from now until the bucket is full again); a refusal is 429
//! with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::error::ApiError;

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// How many nodes share the limits: each request costs that many units of a bucket, so
/// each node enforces its share. 1 until told otherwise (a store one process holds).
#[derive(Clone)]
pub struct Share(Arc<AtomicU32>);

impl Default for Share {
    fn default() -> Share {
        Share(Arc::new(AtomicU32::new(1)))
    }
}

impl Share {
    pub fn nodes(&self) -> u32 {
        self.0.load(Ordering::Relaxed).max(1)
    }

    /// How many nodes serve now (this one included).
    pub fn set_nodes(&self, nodes: u32) {
        self.0.store(nodes.max(1), Ordering::Relaxed);
    }

    /// What one request costs against a bucket of `limit`: the node count, or the whole
    /// bucket when there are more nodes than units (each node then allows one per window).
    fn cost(&self, limit: u32) -> u32 {
        self.nodes().min(limit).max(1)
    }
}

/// One bucket per key string, `limit` requests a window (a minute or an hour) with that
/// much burst.
pub struct RateLimit {
    limiter: Keyed,
    clock: DefaultClock,
    limit: u32,
    window_secs: u64,
    /// The refusal's error code and what it calls the limit.
    code: &'static str,
    what: &'static str,
    checks: AtomicU64,
    share: Share,
}

/// What a limited response tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
}

impl RateLimit {
    /// `None` when `per_minute` is 0 (no limit).
    pub fn per_minute(per_minute: u32) -> Option<RateLimit> {
        let n = NonZeroU32::new(per_minute)?;
        Some(RateLimit {
            limiter: RateLimiter::keyed(Quota::per_minute(n))
                .with_middleware::<StateInformationMiddleware>(),
            clock: DefaultClock::default(),
            limit: per_minute,
            window_secs: 60,
            code: "rate_limited",
            what: "rate limit of {} requests a minute",
            checks: AtomicU64::new(0),
            share: Share::default(),
        })
    }

    /// The same limit, enforced as this node's share of it among `share`'s nodes.
    pub fn shared(mut self, share: &Share) -> RateLimit {
        self.share = share.clone();
        self
    }

    /// Takes one request from `key`'s bucket, or refuses with 429. The quote is this node's
    /// share: the limit and what remains of it divided by the nodes serving.
    pub fn check(&self, key: &str) -> Result<Quote, (Quote, ApiError)> {
        // Forget idle buckets now and then so one-off clients do not pile up.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        let cost = self.share.cost(self.limit);
        let limit = (self.limit / cost).max(1);
        let seconds_per_cell = self.window_secs as f64 / self.limit as f64;
        let cells = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_key_n(&key.to_string(), cells) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                let missing = self.limit.saturating_sub(remaining) as f64;
                Ok(Quote {
                    limit,
                    remaining: remaining / cost,
                    reset: (missing * seconds_per_cell).ceil() as u64,
                })
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(self.refusal(limit, wait.as_secs_f64().ceil().max(1.0) as u64))
            }
            // The cost never exceeds the burst; were it to, the window is the wait.
            Err(_) => Err(self.refusal(limit, self.window_secs)),
        }
    }

    fn refusal(&self, limit: u32, retry_after: u64) -> (Quote, ApiError) {
        let quote = Quote {
            limit,
            remaining: 0,
            reset: self.window_secs,
        };
        let what = self.what.replace("{}", &self.limit.to_string());
        let nodes = self.share.nodes();
        let whose = if nodes > 1 {
            format!(" ({limit} on this node, one of {nodes} serving)")
        } else {
            String::new()
        };
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            self.code,
            format!("{what}{whose} reached; retry in {retry_after}s"),
        );
        error.retry_after = Some(retry_after);
        (quote, error)
    }
}

/// Who a client address counts as for limits and budgets: an IPv4 address is itself; an
/// IPv6 one is its network of `ipv6_prefix` bits (`2001:db8:1:2::/64`), since one client
/// holds a whole /64 and could rotate through it.
pub fn address_group(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = ipv6_prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - prefix as u32).unwrap_or(0);
                let network = std::net::Ipv6Addr::from(u128::from(v6) & mask);
                format!("{network}/{prefix}")
            }
        },
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(req: &HttpRequest, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    forwarded
        .iter()
        .rev()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
        .or(Some(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_retry_time() {
        let limit = RateLimit::per_minute(3).unwrap();
        let quotes: Vec<Quote> = (0..3).map(|_| limit.check("k").unwrap()).collect();
        assert_eq!(
            quotes.iter().map(|q| q.remaining).collect::<Vec<_>>(),
            [2, 1, 0]
        );
        assert!(quotes[2].reset > 0 && quotes[2].reset <= 60);
        let (quote, error) = limit.check("k").unwrap_err();
        assert_eq!(quote.remaining, 0);
        assert_eq!(error.status.as_u16(), 429);
        assert!(error.retry_after.is_some_and(|s| (1..=20).contains(&s)));
        // Other keys have their own buckets.
        assert!(limit.check("other").is_ok());
        assert!(RateLimit::per_minute(0).is_none());
    }

    #[test]
    fn each_of_n_nodes_allows_its_share_and_the_share_follows_the_node_count() {
        let share = Share::default();
        let limit = RateLimit::per_minute(6).unwrap().shared(&share);
        share.set_nodes(2);
        let quotes: Vec<Quote> = (0..3).map(|_| limit.check("k").unwrap()).collect();
        assert_eq!(
            quotes
                .iter()
                .map(|q| (q.limit, q.remaining))
                .collect::<Vec<_>>(),
            [(3, 2), (3, 1), (3, 0)]
        );
        let (quote, error) = limit.check("k").unwrap_err();
        assert_eq!((quote.limit, quote.remaining), (3, 0));
        assert_eq!(error.code, "rate_limited");
        assert!(
            error.message.contains("one of 2 serving"),
            "{}",
            error.message
        );
        // Back to one node: a fresh key has the whole limit again.
        share.set_nodes(1);
        assert_eq!(limit.check("fresh").unwrap().limit, 6);
        // More nodes than the limit has units: each node still allows one a window.
        share.set_nodes(10);
        assert_eq!(limit.check("many").unwrap().limit, 1);
        assert!(limit.check("many").is_err());
    }

    #[test]
    fn ipv6_clients_count_by_network_and_ipv4_ones_by_address() {
        let group = |ip: &str, prefix| address_group(ip.parse().unwrap(), prefix);
        assert_eq!(group("203.0.113.9", 64), "203.0.113.9");
        assert_eq!(group("::ffff:203.0.113.9", 64), "203.0.113.9");
        assert_eq!(group("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::/64");
        assert_eq!(
            group("2001:db8:1:2:aaaa::1", 64),
            group("2001:db8:1:2:ffff:ffff:ffff:ffff", 64)
        );
        assert_ne!(group("2001:db8:1:2::1", 64), group("2001:db8:1:3::1", 64));
        assert_eq!(group("2001:db8:1:2::1", 48), "2001:db8:1::/48");
        assert_eq!(group("2001:db8::1", 128), "2001:db8::1/128");
        assert_eq!(group("2001:db8::1", 0), "::/0");
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let req = actix_web::test::TestRequest::default()
            .peer_addr("127.0.0.1:5000".parse().unwrap())
            .insert_header(("X-Forwarded-For", "203.0.113.9, 198.51.100.7"))
            .to_http_request();
        assert_eq!(
            client_ip(&req, &[proxy]),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(client_ip(&req, &[]), Some(proxy));
        let spoofed = actix_web::test::TestRequest::default()
            .peer_addr("192.0.2.1:5000".parse().unwrap())
            .insert_header(("X-Forwarded-For", "10.0.0.1"))
            .to_http_request();
        assert_eq!(
            client_ip(&spoofed, &[proxy]),
            Some("192.0.2.1".parse().unwrap())
        );
    }
}
