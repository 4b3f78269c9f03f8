//! Crawl-target guard against server-side request forgery: crawls started over the API may
//! reach only public addresses. Names are checked where they are resolved (a resolver that
//! drops private answers), IP literals before each request and on every redirect hop.
//! Operators can exempt specific origins (`allowed_origins`) or turn the guard off.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Whether `ip` is a public unicast address (not loopback, private, link-local, shared,
/// unique-local, multicast, unspecified or documentation space, also when written as an
/// IPv4-mapped IPv6 address).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || (first == 0 && v6.segments()[1..6].iter().all(|s| *s == 0))) // IPv4-compatible
        }
    }
}

#[derive(Debug, Default)]
pub struct TargetGuard {
    /// Origins (`http://intranet:8080`) crawled even though they are not public.
    pub allowed_origins: Vec<String>,
}

impl TargetGuard {
    fn exempt(&self, url: &Url) -> bool {
        let origin = url.origin().ascii_serialization();
        self.allowed_origins.iter().any(|o| o == &origin)
    }

    fn exempt_name(&self, name: &str) -> bool {
        self.allowed_origins.iter().any(|o| {
            Url::parse(o)
                .ok()
                .and_then(|u| u.host_str().map(|h| h.eq_ignore_ascii_case(name)))
                .unwrap_or(false)
        })
    }

    /// Refuses URLs whose host is a non-public IP literal (names are left to the resolver).
    pub fn check(&self, url: &Url) -> Result<(), String> {
        if self.exempt(url) {
            return Ok(());
        }
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(name)) if name.eq_ignore_ascii_case("localhost") => {
                return Err(format!("{url} is a loopback address"));
            }
            Some(Host::Domain(_)) => return Ok(()),
            None => return Err(format!("{url} has no host")),
        };
        if is_public(ip) {
            Ok(())
        } else {
            Err(format!(
                "{url} is a private, loopback or link-local address ({ip})"
            ))
        }
    }
}

/// A resolver that answers only public addresses (or any, for exempt names).
pub struct PublicResolver(pub Arc<TargetGuard>);

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if guard.exempt_name(&host) {
                return Ok(Box::new(addrs.into_iter()) as Addrs);
            }
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to private, loopback or link-local addresses"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_that_resolve_to_loopback_are_refused_unless_exempt() {
        let guard = Arc::new(TargetGuard::default());
        let resolver = PublicResolver(guard);
        let name: Name = "localhost".parse().unwrap();
        assert!(resolver.resolve(name).await.is_err());
        let exempt = PublicResolver(Arc::new(TargetGuard {
            allowed_origins: vec!["http://localhost:8080".into()],
        }));
        let name: Name = "localhost".parse().unwrap();
        assert!(exempt.resolve(name).await.is_ok());
    }

    #[test]
    fn private_addresses_in_every_spelling_are_refused() {
        let guard = TargetGuard::default();
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://0.0.0.0/",
            "http://localhost:8080/",
        ] {
            assert!(guard.check(&Url::parse(url).unwrap()).is_err(), "{url}");
        }
        for url in [
            "https://93.184.215.14/",
            "https://docs.example.com/",
            "http://[2606:4700::1111]/",
        ] {
            assert!(guard.check(&Url::parse(url).unwrap()).is_ok(), "{url}");
        }
        let exempt = TargetGuard {
            allowed_origins: vec!["http://10.1.2.3:8080".into()],
        };
        assert!(
            exempt
                .check(&Url::parse("http://10.1.2.3:8080/docs/").unwrap())
                .is_ok()
        );
        assert!(
            exempt
                .check(&Url::parse("http://10.1.2.3:9090/").unwrap())
                .is_err()
        );
    }
}
