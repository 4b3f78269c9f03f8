//! Crawler behaviour against fixture sites on loopback, with the fake embedder so the
//! assertions are about crawling, not about model output.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use docent::domain::BotId;
use docent::embed::FakeEmbedder;
use docent::ingest::{
    self, IngestRequest, IngestSummary, Source, chunk::ChunkSpec, crawl::CrawlOptions,
};
use docent::ports::Storage;
use indicatif::ProgressBar;

use crate::helpers::{copy_fixture, fixture, open_store, serve};

fn options() -> CrawlOptions {
    CrawlOptions {
        delay: Duration::ZERO,
        timeout: Duration::from_secs(5),
        ..CrawlOptions::default()
    }
}

async fn ingest_with(
    store: &Arc<dyn Storage>,
    embedder: Arc<FakeEmbedder>,
    url: &str,
    crawl: CrawlOptions,
) -> anyhow::Result<IngestSummary> {
    ingest_source(store, embedder, Source::parse(url, None)?, crawl).await
}

/// Ingests `source` into the test bot.
async fn ingest_source(
    store: &Arc<dyn Storage>,
    embedder: Arc<FakeEmbedder>,
    source: Source,
    crawl: CrawlOptions,
) -> anyhow::Result<IngestSummary> {
    let request = IngestRequest {
        bot: BotId::parse("site").unwrap(),
        name: None,
        source,
        crawl,
        chunk: ChunkSpec::default(),
        test: false,
    };
    ingest::run(store.clone(), embedder, request, &ProgressBar::hidden()).await
}

fn page_paths(store: &Arc<dyn Storage>, base: &str) -> BTreeSet<String> {
    store
        .pages(&BotId::parse("site").unwrap())
        .unwrap()
        .into_iter()
        .map(|p| p.url.trim_start_matches(base).to_string())
        .collect()
}

#[tokio::test]
async fn crawl_honours_robots_noindex_refresh_canonical_and_duplicates() {
    let site = serve(&fixture("site"));
    let data = tempfile::tempdir().unwrap();
    let store = open_store(data.path());

    let summary = ingest_with(&store, Arc::default(), &site.url("index.html"), options())
        .await
        .unwrap();

    let pages = page_paths(&store, &site.base);
    let expected: BTreeSet<String> = [
        "/index.html",
        "/shipping.html",
        "/returns.html",
        "/warranty.html",
        "/specs.html",
        "/guides/descaling.html",
        "/guides/safety.html",
        "/contact.html",
        "/hostile.html",
        // Reached only through a noindex,follow page: its links are still followed.
        "/orphan-from-noindex.html",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(pages, expected);
    assert_eq!(
        site.hits("/private/internal.html"),
        0,
        "robots.txt disallows /private/"
    );
    assert_eq!(summary.pages_indexed, expected.len());
    // noindex, the refresh stub, the duplicate, the canonical copy and the PDF.
    assert!(summary.pages_skipped >= 5, "{summary:?}");
    assert!(summary.chunks >= expected.len());
}

#[tokio::test]
async fn reingest_embeds_only_changed_pages_and_removes_vanished_ones() {
    let root = copy_fixture("site");
    let site = serve(root.path());
    let data = tempfile::tempdir().unwrap();
    let store = open_store(data.path());
    let first = ingest_with(&store, Arc::default(), &site.url("index.html"), options())
        .await
        .unwrap();

    let returns = root.path().join("returns.html");
    let html = std::fs::read_to_string(&returns).unwrap();
    std::fs::write(&returns, html.replace("45 days", "60 days")).unwrap();
    std::fs::remove_file(root.path().join("guides/safety.html")).unwrap();
    let embedder = Arc::new(FakeEmbedder::default());
    let second = ingest_with(&store, embedder.clone(), &site.url("index.html"), options())
        .await
        .unwrap();

    assert_eq!(second.pages_indexed, 1, "{second:?}");
    assert_eq!(second.pages_removed, 1, "{second:?}");
    assert_eq!(
        second.pages_unchanged,
        first.pages_indexed - 2,
        "{second:?}"
    );
    let returns_chunks = store
        .pages(&BotId::parse("site").unwrap())
        .unwrap()
        .into_iter()
        .find(|p| p.url.ends_with("/returns.html"))
        .unwrap()
        .chunk_ids
        .len();
    assert_eq!(
        embedder.texts_embedded.load(Ordering::SeqCst),
        returns_chunks
    );
    assert!(
        site.not_modified.load(Ordering::SeqCst) >= 5,
        "unchanged pages answer 304"
    );
    assert!(!page_paths(&store, &site.base).contains("/guides/safety.html"));
}

#[tokio::test]
async fn max_pages_caps_the_crawl() {
    let site = serve(&fixture("site"));
    let data = tempfile::tempdir().unwrap();
    let store = open_store(data.path());
    let crawl = CrawlOptions {
        max_pages: 3,
        ..options()
    };
    let summary = ingest_with(&store, Arc::default(), &site.url("index.html"), crawl)
        .await
        .unwrap();
    assert_eq!(summary.pages_indexed, 3);
    assert_eq!(page_paths(&store, &site.base).len(), 3);
}

#[tokio::test]
async fn sitemap_finds_pages_no_link_reaches() {
    let site = serve(&fixture("site-sitemap"));
    let data = tempfile::tempdir().unwrap();
    let store = open_store(data.path());
    ingest_with(&store, Arc::default(), &site.url("index.html"), options())
        .await
        .unwrap();
    assert!(page_paths(&store, &site.base).contains("/b.html"));
}

#[tokio::test]
async fn bad_start_urls_fail_clearly_and_keep_the_previous_state() {
    let site = serve(&fixture("site"));
    let data = tempfile::tempdir().unwrap();
    let store = open_store(data.path());
    ingest_with(&store, Arc::default(), &site.url("index.html"), options())
        .await
        .unwrap();
    let before = page_paths(&store, &site.base);

    // A loopback port held bound but not listening: connections to it are refused.
    let closed = crate::helpers::ClosedPort::new();
    let cases = [
        (site.url("loop/a"), "redirect"),
        (site.url("missing.html"), "404"),
        (site.url("big.html"), "page limit"),
        // A PDF is read as a document now: this one is no PDF at all.
        (site.url("files/manual.pdf"), "not a readable PDF file"),
        (site.url("private/internal.html"), "robots.txt"),
        (closed.url(), "cannot reach"),
    ];
    for (url, expected) in cases {
        let err = ingest_with(&store, Arc::default(), &url, options())
            .await
            .expect_err(&url);
        let message = format!("{err:#}");
        assert!(message.contains(expected), "{url}: {message}");
        assert_eq!(
            page_paths(&store, &site.base),
            before,
            "{url} changed the bot"
        );
    }
}

#[tokio::test]
async fn invalid_utf8_and_redirects_are_handled() {
    let site = serve(&fixture("site"));
    let data = tempfile::tempdir().unwrap();
    let store = open_store(data.path());
    let summary = ingest_with(
        &store,
        Arc::default(),
        &site.url("bad-utf8.html"),
        options(),
    )
    .await
    .unwrap();
    assert_eq!(summary.pages_indexed, 1);
    let summary = ingest_with(&store, Arc::default(), &site.url("moved.html"), options())
        .await
        .unwrap();
    assert!(
        page_paths(&store, &site.base).contains("/shipping.html"),
        "{summary:?}"
    );
}

/// Ingests the folder `root` into the test bot, cited under `base` when given.
async fn ingest_folder(
    store: &Arc<dyn Storage>,
    root: &std::path::Path,
    base: Option<&str>,
) -> IngestSummary {
    let source = Source::parse(root.to_str().unwrap(), base).unwrap();
    let embedder = Arc::new(FakeEmbedder::default());
    ingest_source(store, embedder, source, options())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_folder_ingested_again_removes_its_deleted_files_and_keeps_other_sources_pages() {
    for base in [None, Some("https://help.example/docs")] {
        let (shop, news) = (copy_fixture("site"), copy_fixture("site-sitemap"));
        let data = tempfile::tempdir().unwrap();
        let store = open_store(data.path());
        let first = ingest_folder(&store, shop.path(), base).await;
        // Another folder into the same bot (under its own base when cited under one).
        let news_base = base.map(|_| "https://news.example/");
        ingest_folder(&store, news.path(), news_base).await;
        let all = store.pages(&BotId::parse("site").unwrap()).unwrap().len();
        std::fs::remove_file(shop.path().join("warranty.html")).unwrap();
        let second = ingest_folder(&store, shop.path(), base).await;
        assert_eq!(second.pages_removed, 1, "{base:?}: {second:?}");
        assert_eq!(
            second.pages_unchanged,
            first.pages_indexed - 1,
            "{second:?}"
        );
        let pages = store.pages(&BotId::parse("site").unwrap()).unwrap();
        assert_eq!(
            pages.len(),
            all - 1,
            "{base:?}: the other folder's pages stay"
        );
        assert!(!pages.iter().any(|p| p.url.ends_with("/warranty.html")));
    }
}

#[tokio::test]
async fn folder_ingest_cites_public_urls_and_skips_stubs_noindex_and_canonical_copies() {
    let data = tempfile::tempdir().unwrap();
    let store = open_store(data.path());
    let request = IngestRequest {
        bot: BotId::parse("site").unwrap(),
        name: None,
        source: Source::parse(
            fixture("site").to_str().unwrap(),
            Some("https://help.example/docs"),
        )
        .unwrap(),
        crawl: options(),
        chunk: ChunkSpec::default(),
        test: false,
    };
    ingest::run(
        store.clone(),
        Arc::new(FakeEmbedder::default()),
        request,
        &ProgressBar::hidden(),
    )
    .await
    .unwrap();
    let pages = page_paths(&store, "https://help.example/docs");
    assert!(pages.contains("/returns.html"), "{pages:?}");
    assert!(pages.contains("/guides/descaling.html"), "{pages:?}");
    for skipped in [
        "/old-shipping.html",
        "/noindex.html",
        "/canonical.html",
        "/shipping-copy.html",
    ] {
        assert!(
            !pages.contains(skipped),
            "{skipped} should be skipped: {pages:?}"
        );
    }
}
