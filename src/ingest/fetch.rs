//! The crawler's one way out: every request a crawl makes (pages, robots.txt, sitemaps and
//! the sitemaps they list, redirect hops, canonical pages) goes through `Fetcher::get`. It
//! checks each hop against the SSRF guard before connecting, follows redirects itself,
//! sends the start URL's credentials to that origin only, and reads bodies under a cap.
//!
//! Crawls started over the API use no proxy unless the operator configured one for crawling
//! (`CrawlOptions::proxy`): a proxy would resolve names itself, past the resolver's check.
//! The CLI's own crawls honour `HTTP(S)_PROXY` (`CrawlOptions::env_proxy`).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use anyhow::Context;
use regex::Regex;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Response, StatusCode, redirect};
use url::Url;

use super::crawl::CrawlOptions;
use super::ssrf::{PublicResolver, TargetGuard};

pub const USER_AGENT: &str = concat!("docent/", env!("CARGO_PKG_VERSION"));

/// A start URL's `user:password@`: sent as HTTP basic auth to that origin only, and never
/// part of a URL docent stores, logs or returns.
#[derive(Clone)]
struct Credentials {
    origin: String,
    user: String,
    password: Option<String>,
}

pub struct Fetcher {
    /// Resolves names only to public addresses when there is a guard.
    client: reqwest::Client,
    /// For URLs whose origin (scheme, host and port) the guard exempts: their names may
    /// resolve to private addresses.
    exempt: Option<reqwest::Client>,
    guard: Option<Arc<TargetGuard>>,
    max_redirects: usize,
    credentials: Option<Credentials>,
    /// The distinct URLs `check` refused so far (a crawl reports how many as
    /// `urls_refused`); bounded by the crawl's fetch cap.
    refused: Mutex<HashSet<String>>,
}

#[derive(Debug)]
pub enum FetchError {
    /// The guard (or the scheme check) refused a URL: the start, a hop or a sitemap.
    Refused(String),
    TooManyRedirects,
    Http(reqwest::Error),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Refused(why) => write!(f, "refused: {why}"),
            FetchError::TooManyRedirects => f.write_str("too many redirects (a redirect loop?)"),
            FetchError::Http(e) if e.is_timeout() => f.write_str("timed out"),
            FetchError::Http(e) if e.is_connect() => {
                write!(f, "cannot connect: {}", root_cause(e))
            }
            FetchError::Http(e) => f.write_str(&root_cause(e)),
        }
    }
}

impl FetchError {
    /// The site could not be reached at all (as opposed to answering badly).
    pub fn unreachable(&self) -> bool {
        matches!(self, FetchError::Http(e) if e.is_connect() || e.is_timeout())
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl Fetcher {
    /// A fetcher for a crawl of `start`; returns it with `start` minus its credentials.
    pub fn new(config: &CrawlOptions, start: &Url) -> anyhow::Result<(Fetcher, Url)> {
        super::crawl::install_tls_provider();
        let strict = config
            .guard
            .as_ref()
            .map(|_| PublicResolver(Arc::new(TargetGuard::default())));
        let client = build_client(config, strict)?;
        let exempt = match &config.guard {
            Some(guard) if !guard.allowed_origins.is_empty() => {
                Some(build_client(config, Some(PublicResolver(guard.clone())))?)
            }
            _ => None,
        };
        let (clean, credentials) = split_credentials(start);
        let fetcher = Fetcher {
            client,
            exempt,
            guard: config.guard.clone(),
            max_redirects: config.max_redirects,
            credentials,
            refused: Mutex::new(HashSet::new()),
        };
        Ok((fetcher, clean))
    }

    /// Checks a URL before anything is sent to it.
    pub fn check(&self, url: &Url) -> Result<(), FetchError> {
        let verdict = if !matches!(url.scheme(), "http" | "https") {
            Err(format!(
                "{} is not an http(s) URL",
                redact_userinfo(url.as_str())
            ))
        } else {
            match &self.guard {
                Some(guard) => guard.check(url),
                None => Ok(()),
            }
        };
        if verdict.is_err() {
            let mut refused = self.refused.lock().expect("refused lock");
            refused.insert(redact_userinfo(url.as_str()));
        }
        verdict.map_err(FetchError::Refused)
    }

    /// How many distinct URLs `check` has refused: literal private addresses, `localhost`
    /// and other schemes (names the resolver refuses are not counted).
    pub fn refused(&self) -> usize {
        self.refused.lock().expect("refused lock").len()
    }

    /// GETs `url` with `headers`, following redirects one checked hop at a time. Returns
    /// the URL that answered and its response (a 304 or a non-redirect status).
    pub async fn get(&self, url: &Url, headers: &HeaderMap) -> Result<(Url, Response), FetchError> {
        let mut url = url.clone();
        for _ in 0..=self.max_redirects {
            self.check(&url)?;
            let mut request = self
                .client_for(&url)
                .get(url.clone())
                .headers(headers.clone());
            let origin = url.origin().ascii_serialization();
            if let Some(c) = self.credentials.as_ref().filter(|c| c.origin == origin) {
                request = request.basic_auth(&c.user, c.password.as_ref());
            }
            let response = request.send().await.map_err(FetchError::Http)?;
            let status = response.status();
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url.join(l).ok());
            match location {
                Some(next) if status.is_redirection() && status != StatusCode::NOT_MODIFIED => {
                    url = strip_userinfo(next);
                }
                _ => return Ok((url, response)),
            }
        }
        Err(FetchError::TooManyRedirects)
    }

    fn client_for(&self, url: &Url) -> &reqwest::Client {
        match (&self.exempt, &self.guard) {
            (Some(exempt), Some(guard)) if guard.exempt(url) => exempt,
            _ => &self.client,
        }
    }
}

fn build_client(
    config: &CrawlOptions,
    resolver: Option<PublicResolver>,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(10)))
        // Every hop is checked by `Fetcher::get`.
        .redirect(redirect::Policy::none());
    if !config.env_proxy || config.proxy.is_some() {
        builder = builder.no_proxy();
    }
    if let Some(proxy) = &config.proxy {
        let proxy = reqwest::Proxy::all(proxy.0.as_str())
            .with_context(|| format!("invalid crawl proxy {:?}", redact_userinfo(&proxy.0)))?;
        builder = builder.proxy(proxy);
    }
    if let Some(resolver) = resolver {
        builder = builder.dns_resolver(Arc::new(resolver));
    }
    builder.build().context("failed to build the HTTP client")
}

/// Reads a body of at most `max` bytes as it streams in: `None` when it is larger.
pub async fn read_capped(
    mut response: Response,
    max: usize,
) -> Result<Option<Vec<u8>>, FetchError> {
    let declared = response.content_length();
    if declared.is_some_and(|n| n > max as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(FetchError::Http)? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Reads at most the first `max` bytes of a text body and stops there; a body cut short
/// ends at its last whole line.
pub async fn read_prefix(mut response: Response, max: usize) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(FetchError::Http)? {
        let room = max - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == max {
            let whole = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            body.truncate(whole);
            break;
        }
    }
    Ok(body)
}

/// `url` without `user:password@`, and the credentials it carried.
fn split_credentials(url: &Url) -> (Url, Option<Credentials>) {
    if url.username().is_empty() && url.password().is_none() {
        return (url.clone(), None);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = Credentials {
        origin: url.origin().ascii_serialization(),
        user: decode(url.username()),
        password: url.password().map(decode),
    };
    (strip_userinfo(url.clone()), Some(credentials))
}

/// Drops `user:password@` from a URL.
pub fn strip_userinfo(mut url: Url) -> Url {
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

/// Text (a URL, an error message) with every `scheme://user:password@` turned into
/// `scheme://***@`, for logs, errors and API answers.
pub fn redact_userinfo(text: &str) -> String {
    static USERINFO: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@").expect("a valid pattern")
    });
    USERINFO.replace_all(text, "${1}***@").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_are_redacted_wherever_shown() {
        let url = Url::parse("https://ann:s%40cret@docs.example/guide/").unwrap();
        let (clean, credentials) = split_credentials(&url);
        assert_eq!(clean.as_str(), "https://docs.example/guide/");
        let credentials = credentials.unwrap();
        assert_eq!(credentials.origin, "https://docs.example");
        assert_eq!(credentials.user, "ann");
        assert_eq!(credentials.password.as_deref(), Some("s@cret"));
        assert_eq!(
            redact_userinfo("https://ann:s%40cret@docs.example/guide/"),
            "https://***@docs.example/guide/"
        );
        assert_eq!(
            redact_userinfo("https://docs.example/"),
            "https://docs.example/"
        );
        assert_eq!(redact_userinfo("http://u:p@[bad"), "http://***@[bad");
        assert_eq!(
            redact_userinfo("http://u@x:p@host/a@b"),
            "http://***@host/a@b"
        );
        assert_eq!(
            redact_userinfo("cannot fetch http://a:b@h/x (see https://c@d/): timed out"),
            "cannot fetch http://***@h/x (see https://***@d/): timed out"
        );
        assert!(split_credentials(&clean).1.is_none());
    }
}
