//! The website crawler: robots.txt, sitemaps, scoped link-following, conditional requests,
//! bounded concurrency with a politeness delay, and every page check the issue names
//! (redirect caps, meta-refresh stubs, noindex, canonical, size and type limits, duplicates).
//! Every request goes through `fetch::Fetcher`; pages are handed on as they are found, so
//! a crawl holds no more than its frontier and the pages in flight.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH,
};
use texting_robots::Robot;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use url::Url;

use super::documents;
use super::extract::{self, Extracted};
use super::fetch::{FetchError, Fetcher, read_capped, read_prefix};

pub use super::fetch::USER_AGENT;
/// Largest robots.txt read (Google reads 500 KiB).
const MAX_ROBOTS_BYTES: usize = 1024 * 1024;
/// Largest sitemap read (the sitemaps protocol's own limit).
const MAX_SITEMAP_BYTES: usize = 50 * 1024 * 1024;
/// Most sitemaps read per crawl (an index and the sitemaps it lists).
const MAX_SITEMAPS: usize = 20;
/// Most pages kept waiting for their canonical page to be crawled.
const MAX_DEFERRED: usize = 200;
/// The token robots.txt groups are matched against.
const ROBOTS_AGENT: &str = "docent";

pub use crate::domain::Scope;

#[derive(Debug, Clone)]
pub struct CrawlOptions {
    pub scope: Scope,
    pub max_pages: usize,
    pub max_depth: usize,
    pub concurrency: usize,
    pub delay: Duration,
    pub timeout: Duration,
    pub max_page_bytes: usize,
    pub max_redirects: usize,
    /// When set, only public addresses are fetched (API-started crawls; see `ssrf`).
    pub guard: Option<Arc<super::ssrf::TargetGuard>>,
    /// A proxy the operator configured for crawling.
    pub proxy: Option<crate::domain::Secret>,
    /// Without `proxy`, honour `HTTP(S)_PROXY` (the CLI's crawls; never API-started ones).
    pub env_proxy: bool,
}

impl Default for CrawlOptions {
    fn default() -> Self {
        CrawlOptions {
            scope: Scope::Path,
            max_pages: 1000,
            max_depth: 20,
            concurrency: 4,
            delay: Duration::from_millis(50),
            timeout: Duration::from_secs(20),
            max_page_bytes: 5 * 1024 * 1024,
            max_redirects: 10,
            guard: None,
            proxy: None,
            env_proxy: true,
        }
    }
}

/// What the last run stored about a page: enough for a conditional request, and the
/// links to follow when the server answers 304.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_hash: String,
    /// sha256 of the body text alone, for duplicate detection.
    pub body_hash: String,
    pub links: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CrawledPage {
    pub url: String,
    pub extracted: Extracted,
    pub content_hash: String,
    pub body_hash: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Absolute, in-scope links, kept so an unchanged (304) page can still be followed.
    pub links: Vec<String>,
}

#[derive(Debug, Default)]
pub struct CrawlReport {
    /// Pages to index, for sources read whole (folders, documents); the crawler sends its
    /// pages on as it finds them instead.
    pub pages: Vec<CrawledPage>,
    /// Pages the crawler sent on.
    pub sent: usize,
    /// Known pages the server said are unchanged (304).
    pub not_modified: Vec<String>,
    /// Pages that answered 404 or 410.
    pub gone: Vec<String>,
    /// Pages that failed for a reason that may pass (timeouts, 5xx): their last state stays.
    pub failed: Vec<(String, String)>,
    /// Pages seen and deliberately not indexed (noindex, duplicates, stubs, non-HTML, ...).
    pub skipped: Vec<(String, String)>,
    /// Distinct URLs the SSRF guard refused before connecting (pages, sitemaps, redirect
    /// hops).
    pub refused: usize,
    /// The URL prefix this source covers: its commit removes the bot's pages under it
    /// that it did not see again, and leaves the pages of its other sources alone.
    /// `None`: every page of the bot is the source's.
    pub covers: Option<String>,
}

impl CrawlReport {
    /// Whether `url` is this source's to keep or remove.
    pub fn covers(&self, url: &str) -> bool {
        self.covers
            .as_deref()
            .is_none_or(|prefix| url.starts_with(prefix))
    }
}

enum Outcome {
    /// A page, or a document (`document`) found by a link.
    Html {
        final_url: Url,
        body: Vec<u8>,
        document: Option<documents::Kind>,
        etag: Option<String>,
        last_modified: Option<String>,
        noindex_header: bool,
    },
    NotModified,
    Status(StatusCode),
    NotHtml(String),
    TooLarge,
    Failed(String),
}

/// Pages are started no closer together than the politeness delay.
struct Politeness {
    next_slot: tokio::sync::Mutex<Instant>,
    delay: Duration,
}

impl Politeness {
    async fn wait(&self) {
        let mut slot = self.next_slot.lock().await;
        let now = Instant::now();
        if *slot > now {
            tokio::time::sleep(*slot - now).await;
        }
        *slot = Instant::now().max(*slot) + self.delay;
    }
}

/// reqwest is built without a bundled TLS provider; ring is the one docent ships. Call
/// before building any HTTP client (idempotent).
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Crawls the site under `start`, sending each page to index to `pages` as it is found.
/// Stops with an error when the receiver goes away.
pub async fn crawl(
    start: &Url,
    options: &CrawlOptions,
    known: &HashMap<String, Known>,
    progress: &dyn super::Progress,
    pages: mpsc::Sender<CrawledPage>,
) -> anyhow::Result<CrawlReport> {
    let (fetcher, start) = Fetcher::new(options, start)?;
    if let Err(FetchError::Refused(why)) = fetcher.check(&start) {
        bail!("refusing to crawl: {why}");
    }
    let fetcher = Arc::new(fetcher);
    let start = normalize(start);
    let mut scope = ScopeRule::new(&start, options.scope);

    let robots = fetch_robots(&fetcher, &start).await?;
    if !robots.allowed(start.as_str()) {
        bail!(
            "robots.txt on {} disallows crawling {start}",
            origin(&start)
        );
    }
    let delay = match robots.delay {
        Some(seconds) if seconds > 0.0 => options
            .delay
            .max(Duration::from_secs_f32(seconds.min(30.0))),
        _ => options.delay,
    };
    let politeness = Arc::new(Politeness {
        next_slot: tokio::sync::Mutex::new(Instant::now()),
        delay,
    });

    // Never more fetches than this; so never more URLs remembered than this either.
    let max_fetches = options.max_pages.saturating_mul(4) + 20;
    let mut frontier: VecDeque<(Url, usize)> = VecDeque::new();
    let mut seen: HashSet<String> = HashSet::new();
    seen.insert(start.to_string());
    frontier.push_back((start.clone(), 0));
    let listed = |url: &Url| scope.contains(url) && robots.allowed(url.as_str());
    for url in sitemap_urls(&fetcher, &start, &robots.sitemaps, &listed, max_fetches).await {
        if seen.len() < max_fetches && seen.insert(url.to_string()) {
            frontier.push_back((url, 1));
        }
    }

    let mut report = CrawlReport::default();
    // Body hashes of every page kept so far: a second page with the same body is a duplicate.
    let mut bodies: HashSet<String> = HashSet::new();
    // URLs already in `report.pages`, and pages waiting on their canonical URL.
    let mut emitted: HashSet<String> = HashSet::new();
    let mut deferred: Vec<(String, CrawledPage)> = Vec::new();
    // Bodies the last crawl kept, by the page that had them: a copy of one waits until the
    // end, so which of two equal pages is kept does not depend on which answers first (the
    // kept one may well be an unchanged page whose 304 comes later).
    let known_bodies: HashMap<&str, &str> = known
        .iter()
        .map(|(url, k)| (k.body_hash.as_str(), url.as_str()))
        .collect();
    let mut copies: Vec<CrawledPage> = Vec::new();
    let mut in_flight: JoinSet<(Url, usize, Outcome)> = JoinSet::new();
    let mut fetches = 0usize;
    let mut first = true;
    progress.set_message("crawling");

    loop {
        while in_flight.len() < options.concurrency.max(1)
            && report.sent + report.not_modified.len() + in_flight.len() < options.max_pages
            && fetches < max_fetches
        {
            let Some((url, depth)) = frontier.pop_front() else {
                break;
            };
            fetches += 1;
            let fetcher = fetcher.clone();
            let politeness = politeness.clone();
            let known_page = known.get(url.as_str()).cloned();
            let max_bytes = options.max_page_bytes;
            in_flight.spawn(async move {
                politeness.wait().await;
                let outcome = fetch(&fetcher, &url, known_page.as_ref(), max_bytes).await;
                (url, depth, outcome)
            });
            if first {
                // The start URL decides whether there is anything to crawl at all.
                break;
            }
        }
        // The pages in sight: every URL found so far, as far as the fetches made and the
        // page budget left can reach (never fewer than the pages fetched).
        let budget_left = options
            .max_pages
            .saturating_sub(report.sent + report.not_modified.len());
        let in_sight = seen.len().min(fetches + budget_left).min(max_fetches);
        progress.set_total(in_sight as u64);
        let Some(joined) = in_flight.join_next().await else {
            break;
        };
        let (url, depth, outcome) = joined.context("crawler task failed")?;
        if first {
            first = false;
            check_start(&url, &outcome, options)?;
            if let Outcome::Html { final_url, .. } = &outcome {
                // `http://h/docs` → `https://h/docs/`: the site is where the start landed.
                let landed = normalize(final_url.clone());
                if landed != start {
                    scope = ScopeRule::new(&landed, options.scope);
                }
            }
        }
        progress.inc(1);
        progress.set_message(url.as_str());
        let mut enqueue =
            |seen: &mut HashSet<String>, links: &[String], base: &Url, depth: usize| {
                if depth > options.max_depth {
                    return;
                }
                for link in links {
                    let Ok(resolved) = base.join(link) else {
                        continue;
                    };
                    let resolved = normalize(resolved);
                    if seen.len() < max_fetches
                        && scope.contains(&resolved)
                        && robots.allowed(resolved.as_str())
                        && seen.insert(resolved.to_string())
                    {
                        frontier.push_back((resolved, depth));
                    }
                }
            };
        match outcome {
            Outcome::NotModified => {
                let page = &known[url.as_str()];
                bodies.insert(page.body_hash.clone());
                enqueue(&mut seen, &page.links, &url, depth + 1);
                report.not_modified.push(url.to_string());
            }
            Outcome::Status(status)
                if status == StatusCode::NOT_FOUND || status == StatusCode::GONE =>
            {
                report.gone.push(url.to_string());
            }
            Outcome::Status(_) | Outcome::Failed(_) => {
                let reason = match outcome {
                    Outcome::Status(status) => status.to_string(),
                    Outcome::Failed(reason) => reason,
                    _ => unreachable!("matched above"),
                };
                // The page keeps its last state, and so do the pages only it links to.
                if let Some(page) = known.get(url.as_str()) {
                    enqueue(&mut seen, &page.links, &url, depth + 1);
                }
                report.failed.push((url.to_string(), reason));
            }
            Outcome::NotHtml(kind) => report
                .skipped
                .push((url.to_string(), format!("not HTML ({kind})"))),
            Outcome::TooLarge => report
                .skipped
                .push((url.to_string(), "larger than the page size limit".into())),
            Outcome::Html {
                final_url,
                body,
                document,
                etag,
                last_modified,
                noindex_header,
            } => {
                let final_url = normalize(final_url);
                if final_url != url {
                    // A redirect: the page lives at its final URL, once.
                    if !scope.contains(&final_url) || !robots.allowed(final_url.as_str()) {
                        report.skipped.push((
                            url.to_string(),
                            format!("redirects out of scope or robots.txt to {final_url}"),
                        ));
                        continue;
                    }
                    let is_start = depth == 0 && url == start;
                    if !seen.insert(final_url.to_string()) && !is_start {
                        report.skipped.push((
                            url.to_string(),
                            format!("redirects to {final_url}, already seen"),
                        ));
                        continue;
                    }
                }
                let extracted = tokio::task::spawn_blocking(move || extract_body(document, &body))
                    .await
                    .context("extraction task failed")?;
                let extracted = match extracted {
                    Ok(extracted) => extracted,
                    // A reader out of time may do on the next crawl: the last state stays.
                    Err(unread) if unread.transient => {
                        report.failed.push((final_url.to_string(), unread.reason));
                        continue;
                    }
                    Err(unread) => {
                        report.skipped.push((final_url.to_string(), unread.reason));
                        continue;
                    }
                };
                if let Some(target) = &extracted.refresh_to {
                    enqueue(&mut seen, std::slice::from_ref(target), &final_url, depth);
                    report
                        .skipped
                        .push((final_url.to_string(), "meta refresh redirect stub".into()));
                    continue;
                }
                // Resolved once: followed now, and stored for the next crawl's 304s.
                let links = if extracted.nofollow {
                    Vec::new()
                } else {
                    absolute_links(&extracted.links, &final_url, &scope)
                };
                enqueue(&mut seen, &links, &final_url, depth + 1);
                if extracted.noindex || noindex_header {
                    report
                        .skipped
                        .push((final_url.to_string(), "noindex".into()));
                    continue;
                }
                if extracted.is_empty() {
                    report
                        .skipped
                        .push((final_url.to_string(), "no text".into()));
                    continue;
                }
                let (content_hash, body_hash) = super::page_hashes(&extracted);
                let canonical = extracted
                    .canonical
                    .as_deref()
                    .and_then(|c| final_url.join(c).ok())
                    .map(normalize)
                    .filter(|c| *c != final_url && scope.contains(c));
                let page = CrawledPage {
                    url: final_url.to_string(),
                    extracted,
                    content_hash,
                    body_hash,
                    etag,
                    last_modified,
                    links,
                };
                if let Some(canonical) = canonical {
                    // Index the canonical page instead; this one only if that fails (a
                    // few such pages wait; beyond, they are left out).
                    enqueue(&mut seen, &[canonical.to_string()], &final_url, depth);
                    if deferred.len() < MAX_DEFERRED {
                        deferred.push((canonical.to_string(), page));
                    } else {
                        report
                            .skipped
                            .push((page.url, format!("canonical is {canonical}")));
                    }
                    continue;
                }
                let copy = known_bodies
                    .get(page.body_hash.as_str())
                    .is_some_and(|kept| *kept != page.url);
                if copy && !bodies.contains(&page.body_hash) && copies.len() < MAX_DEFERRED {
                    copies.push(page);
                    continue;
                }
                if !emitted.insert(page.url.clone()) {
                    continue;
                }
                if !bodies.insert(page.body_hash.clone()) {
                    report.skipped.push((page.url, "duplicate content".into()));
                    continue;
                }
                send_page(&mut report, &pages, page, options.max_pages).await?;
            }
        }
        crate::telemetry::failpoint("crawl");
    }
    // Done: what was in sight is what was fetched.
    progress.set_total(fetches as u64);
    for page in copies {
        if !emitted.insert(page.url.clone()) {
            continue;
        }
        if !bodies.insert(page.body_hash.clone()) {
            report.skipped.push((page.url, "duplicate content".into()));
        } else {
            send_page(&mut report, &pages, page, options.max_pages).await?;
        }
    }
    let not_modified: HashSet<String> = report.not_modified.iter().cloned().collect();
    for (canonical, page) in deferred {
        let canonical_kept = emitted.contains(&canonical) || not_modified.contains(&canonical);
        if canonical_kept
            || !emitted.insert(page.url.clone())
            || !bodies.insert(page.body_hash.clone())
        {
            report
                .skipped
                .push((page.url, format!("canonical is {canonical}")));
        } else {
            send_page(&mut report, &pages, page, options.max_pages).await?;
        }
    }
    report.refused = fetcher.refused();
    report.covers = Some(scope.prefix());
    Ok(report)
}

/// A page's or a document's content, or why a document has none.
fn extract_body(
    document: Option<documents::Kind>,
    body: &[u8],
) -> Result<extract::Extracted, documents::Unread> {
    match document {
        Some(kind) => documents::extract(kind, body),
        // Invalid UTF-8 is replaced rather than refused: the rest of the page is still useful.
        None => Ok(extract::extract_html(&String::from_utf8_lossy(body))),
    }
}

/// Hands a page on, within the page budget (concurrency can overshoot it by the fetches
/// in flight at the end: those are left out).
async fn send_page(
    report: &mut CrawlReport,
    pages: &mpsc::Sender<CrawledPage>,
    page: CrawledPage,
    max_pages: usize,
) -> anyhow::Result<()> {
    if report.sent + report.not_modified.len() >= max_pages {
        return Ok(());
    }
    pages
        .send(page)
        .await
        .map_err(|_| anyhow::anyhow!("the ingest stopped"))?;
    report.sent += 1;
    Ok(())
}

fn check_start(url: &Url, outcome: &Outcome, options: &CrawlOptions) -> anyhow::Result<()> {
    match outcome {
        Outcome::Html { .. } | Outcome::NotModified => Ok(()),
        Outcome::Status(status) => bail!("start URL {url} answered {status}"),
        Outcome::NotHtml(kind) => bail!("start URL {url} is not an HTML page ({kind})"),
        Outcome::TooLarge => bail!(
            "start URL {url} is larger than the {} MB page limit",
            options.max_page_bytes / (1024 * 1024)
        ),
        Outcome::Failed(reason) => bail!("cannot fetch start URL {url}: {reason}"),
    }
}

async fn fetch(fetcher: &Fetcher, url: &Url, known: Option<&Known>, max_bytes: usize) -> Outcome {
    let mut headers = HeaderMap::new();
    let value = |v: &str| HeaderValue::from_str(v).ok();
    if let Some(known) = known {
        if let Some(etag) = known.etag.as_deref().and_then(value) {
            headers.insert(IF_NONE_MATCH, etag);
        }
        if let Some(modified) = known.last_modified.as_deref().and_then(value) {
            headers.insert(IF_MODIFIED_SINCE, modified);
        }
    }
    let (final_url, response) = match fetcher.get(url, &headers).await {
        Ok(answered) => answered,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED && known.is_some() {
        return Outcome::NotModified;
    }
    if !status.is_success() {
        return Outcome::Status(status);
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header(CONTENT_TYPE)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let document = documents::Kind::of_response(&content_type, &final_url);
    if document.is_none() && !content_type.is_empty() && !content_type.contains("html") {
        return Outcome::NotHtml(content_type);
    }
    let max_bytes = match document {
        Some(_) => max_bytes.max(documents::MAX_DOCUMENT_BYTES),
        None => max_bytes,
    };
    let etag = header(ETAG);
    let last_modified = header(reqwest::header::LAST_MODIFIED);
    let noindex_header = response
        .headers()
        .get_all("x-robots-tag")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("noindex"));
    let body = match read_capped(response, max_bytes).await {
        Ok(Some(body)) => body,
        Ok(None) => return Outcome::TooLarge,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    Outcome::Html {
        final_url,
        body,
        document,
        etag,
        last_modified,
        noindex_header,
    }
}

async fn fetch_robots(fetcher: &Fetcher, start: &Url) -> anyhow::Result<Robot> {
    let robots_url = Url::parse(&format!("{}/robots.txt", origin(start)))?;
    let allow_all = || Robot::new(ROBOTS_AGENT, b"").expect("empty robots.txt parses");
    match fetcher.get(&robots_url, &HeaderMap::new()).await {
        Ok((_, response)) if response.status().is_success() => {
            // What lies past the cap is ignored (as Google does past 500 KiB).
            let body = read_prefix(response, MAX_ROBOTS_BYTES)
                .await
                .unwrap_or_default();
            Ok(Robot::new(ROBOTS_AGENT, &body).unwrap_or_else(|_| allow_all()))
        }
        Ok(_) => Ok(allow_all()),
        Err(e) if e.unreachable() => bail!("cannot reach {}: {e}", origin(start)),
        Err(_) => Ok(allow_all()),
    }
}

/// Up to `limit` URLs that `keep` accepts, listed in the site's sitemaps (robots.txt
/// `Sitemap:` lines, else /sitemap.xml), following sitemap indexes; every sitemap is fetched
/// through the guard, and read only up to `MAX_SITEMAP_BYTES`.
async fn sitemap_urls(
    fetcher: &Fetcher,
    start: &Url,
    declared: &[String],
    keep: &dyn Fn(&Url) -> bool,
    limit: usize,
) -> Vec<Url> {
    let mut queue: Vec<String> = if declared.is_empty() {
        vec![format!("{}/sitemap.xml", origin(start))]
    } else {
        declared.to_vec()
    };
    let mut urls = Vec::new();
    let mut fetched = 0;
    while let Some(sitemap) = queue.pop() {
        fetched += 1;
        if fetched > MAX_SITEMAPS {
            break;
        }
        let Ok(sitemap) = Url::parse(&sitemap) else {
            continue;
        };
        let response = match fetcher.get(&sitemap, &HeaderMap::new()).await {
            Ok((_, response)) if response.status().is_success() => response,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(%sitemap, "sitemap not read: {e}");
                continue;
            }
        };
        let Ok(Some(body)) = read_capped(response, MAX_SITEMAP_BYTES).await else {
            tracing::debug!(%sitemap, "sitemap not read: over the size limit or broken");
            continue;
        };
        let body = String::from_utf8_lossy(&body);
        let is_index = body.contains("<sitemapindex");
        for loc in xml_locs(&body) {
            let Ok(url) = Url::parse(&loc) else { continue };
            if is_index {
                if queue.len() < MAX_SITEMAPS {
                    queue.push(url.to_string());
                }
            } else {
                let url = normalize(url);
                if keep(&url) {
                    urls.push(url);
                }
                if urls.len() >= limit {
                    return urls;
                }
            }
        }
    }
    urls
}

fn xml_locs(xml: &str) -> Vec<String> {
    xml.split("<loc>")
        .skip(1)
        .filter_map(|rest| rest.split("</loc>").next())
        .map(|loc| loc.trim().replace("&amp;", "&"))
        .collect()
}

fn absolute_links(links: &[String], base: &Url, scope: &ScopeRule) -> Vec<String> {
    let mut out: Vec<String> = links
        .iter()
        .filter_map(|l| base.join(l).ok())
        .map(normalize)
        .filter(|u| scope.contains(u))
        .map(|u| u.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Drops the fragment (`page#a` and `page#b` are one page) and any `user:password@` (a
/// page's URL is shown in citations).
pub fn normalize(mut url: Url) -> Url {
    url.set_fragment(None);
    super::fetch::strip_userinfo(url)
}

struct ScopeRule {
    origin: String,
    path_prefix: Option<String>,
}

impl ScopeRule {
    fn new(start: &Url, scope: Scope) -> ScopeRule {
        let path = start.path();
        let dir = &path[..path.rfind('/').map(|i| i + 1).unwrap_or(path.len())];
        ScopeRule {
            origin: origin(start),
            path_prefix: (scope == Scope::Path).then(|| dir.to_string()),
        }
    }

    /// The start of every URL in scope: its origin, then the directory or `/`.
    fn prefix(&self) -> String {
        let path = self.path_prefix.as_deref().unwrap_or("/");
        format!("{}{path}", self.origin)
    }

    fn contains(&self, url: &Url) -> bool {
        matches!(url.scheme(), "http" | "https")
            && origin(url) == self.origin
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| url.path().starts_with(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_scope_stays_under_the_start_directory() {
        let start = Url::parse("http://h.example/book/index.html").unwrap();
        let rule = ScopeRule::new(&start, Scope::Path);
        let inside = |u: &str| rule.contains(&Url::parse(u).unwrap());
        assert!(inside("http://h.example/book/ch01.html"));
        assert!(!inside("http://h.example/std/index.html"));
        assert!(!inside("https://h.example/book/ch01.html"));
        assert!(!inside("http://other.example/book/"));
        let host = ScopeRule::new(&start, Scope::Host);
        assert!(host.contains(&Url::parse("http://h.example/std/").unwrap()));
        // A URL is in scope exactly when it starts with the scope's prefix.
        assert_eq!(rule.prefix(), "http://h.example/book/");
        assert_eq!(host.prefix(), "http://h.example/");
        let odd_port = Url::parse("https://h.example:8443/a/b.html").unwrap();
        let rule = ScopeRule::new(&odd_port, Scope::Path);
        assert_eq!(rule.prefix(), "https://h.example:8443/a/");
        assert!(rule.contains(&odd_port) && odd_port.as_str().starts_with(&rule.prefix()));
    }

    #[test]
    fn sitemap_locs_are_read() {
        let xml = "<urlset><url><loc> http://h/a?x=1&amp;y=2 </loc></url><url><loc>http://h/b</loc></url></urlset>";
        assert_eq!(xml_locs(xml), vec!["http://h/a?x=1&y=2", "http://h/b"]);
    }
}
