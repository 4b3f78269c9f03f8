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
            // Forms that carry an IPv4 address a gateway will reach: judged by it.
            if let Some(embedded) = embedded_ipv4(v6) {
                return embedded.iter().all(|v4| is_public(IpAddr::V4(*v4)));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || (first == 0x0064 && v6.segments()[1] == 0xff9b && v6.segments()[2] == 1) // local-use NAT64
                || (first == 0x0100 && v6.segments()[1..4].iter().all(|s| *s == 0)) // discard-only
                || (first == 0 && v6.segments()[1..6].iter().all(|s| *s == 0))) // IPv4-compatible
        }
    }
}

/// The IPv4 addresses an IPv6 address reaches through a translator or tunnel: NAT64's
/// well-known prefix (`64:ff9b::/96`, the last 32 bits), 6to4 (`2002::/16`, bits 16-47)
/// and Teredo (`2001::/32`: the server in bits 32-63, the client inverted in the last 32).
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<Vec<std::net::Ipv4Addr>> {
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| std::net::Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
        Some(vec![v4(s[6], s[7])])
    } else if s[0] == 0x2002 {
        Some(vec![v4(s[1], s[2])])
    } else if s[0] == 0x2001 && s[1] == 0 {
        Some(vec![v4(s[2], s[3]), v4(!s[6], !s[7])])
    } else {
        None
    }
}

#[derive(Debug, Default)]
pub struct TargetGuard {
    /// Origins (`http://intranet:8080`) crawled even though they are not public.
    pub allowed_origins: Vec<String>,
}

impl TargetGuard {
    /// Whether the URL's origin (scheme, host and port) is one the operator exempted.
    pub fn exempt(&self, url: &Url) -> bool {
        let origin = url.origin().ascii_serialization();
        self.allowed_origins.iter().any(|o| o == &origin)
    }

    /// Whether some exempt origin has this host name. Only the client that `fetch` uses
    /// for exempt origins resolves with it, so other ports of the name stay guarded.
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
            // NAT64, 6to4 and Teredo spellings of private IPv4 addresses.
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b:1::a00:1]/",
            "http://[2002:7f00:1::1]/",
            "http://[2002:a9fe:a9fe::]/",
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
            "http://[2001:0:a00:1:8000:63bf:3fff:fdd2]/",
            "http://[100::1]/",
        ] {
            assert!(guard.check(&Url::parse(url).unwrap()).is_err(), "{url}");
        }
        for url in [
            "https://93.184.215.14/",
            "https://docs.example.com/",
            "http://[2606:4700::1111]/",
            // The same forms around public IPv4 addresses.
            "http://[64:ff9b::5db8:d70e]/",
            "http://[2002:5db8:d70e::1]/",
            "http://[2001:0:5db8:d70e:8000:63bf:a247:28f1]/",
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
