//! Sites added over the API (`POST /v1/bots/{id}/sources`): each crawls as far as its
//! scope and page limit say, a bot keeps the pages of every source it has, and a scope or
//! limit it cannot take is refused before anything is queued.

use std::collections::BTreeSet;

use std::time::Duration;

use docent::domain::BotId;
use docent::server::Limits;
use serde_json::{Value, json};

use crate::helpers::{TestSite, fixture, serve};
use crate::server::{TestServer, assert_error, fake_server, wait_for_job};

const BOT: &str = "/v1/bots/scoped";

/// Adds `body` as a source of the test bot and waits for its crawl to end.
async fn add(s: &TestServer, body: Value) -> Value {
    let (status, _, accepted) = s
        .call(
            "POST",
            &format!("{BOT}/sources"),
            Some(&s.admin),
            Some(body),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job = wait_for_job(s, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    job
}

/// The bot's page URLs on `site`, as paths.
async fn paths_on(s: &TestServer, site: &TestSite) -> BTreeSet<String> {
    let (status, _, pages) = s
        .call("GET", &format!("{BOT}/pages"), Some(&s.admin), None)
        .await;
    assert_eq!(status, 200, "{pages}");
    pages["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["url"].as_str()?.strip_prefix(&site.base))
        .map(str::to_string)
        .collect()
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_source_crawls_within_its_scope_and_page_limit_and_keeps_the_others_pages() {
    let limits = Limits {
        allow_private_targets: true,
        ..Limits::default()
    };
    let (s, _) = fake_server(limits).await;
    let (shop, news) = (serve(&fixture("site")), serve(&fixture("site-sitemap")));
    let (status, _, bot) = s
        .call(
            "POST",
            "/v1/bots",
            Some(&s.admin),
            Some(json!({"id": "scoped", "name": "Scoped"})),
        )
        .await;
    assert_eq!(status, 201, "{bot}");

    // Refused before anything is queued: a scope or a limit the crawler cannot take.
    for (body, code) in [
        (
            json!({"url": shop.url("/"), "scope": "everything"}),
            "invalid_request",
        ),
        (
            json!({"url": shop.url("/"), "max_pages": 0}),
            "invalid_request",
        ),
        (
            json!({"url": shop.url("/"), "max_pages": 50_001}),
            "invalid_request",
        ),
    ] {
        let refused = s
            .call(
                "POST",
                &format!("{BOT}/sources"),
                Some(&s.admin),
                Some(body.clone()),
            )
            .await;
        assert_error(&refused, 400, code);
        assert!(
            refused.2["error"]["message"].as_str().unwrap().len() > 10,
            "{body}"
        );
    }
    let (_, _, bot) = s.call("GET", BOT, Some(&s.admin), None).await;
    assert_eq!(bot["sources"], json!([]), "nothing refused was kept");

    // The default scope is the start URL's folder: from a guide, only the guides.
    let guides = add(&s, json!({"url": shop.url("guides/descaling.html")})).await;
    assert_eq!(
        (&guides["scope"], &guides["max_pages"]),
        (&json!("path"), &Value::Null)
    );
    let guide_pages = set(&["/guides/descaling.html", "/guides/safety.html"]);
    assert_eq!(paths_on(&s, &shop).await, guide_pages);

    // A second site, the whole host but at most two pages: two pages, and the first
    // source's pages stay.
    let capped = add(
        &s,
        json!({"url": news.url("/"), "scope": "host", "max_pages": 2}),
    )
    .await;
    assert_eq!(
        (&capped["scope"], &capped["max_pages"]),
        (&json!("host"), &json!(2))
    );
    assert_eq!(capped["pages_indexed"], 2, "{capped}");
    assert_eq!(paths_on(&s, &news).await.len(), 2);
    assert_eq!(
        paths_on(&s, &shop).await,
        guide_pages,
        "another site's crawl keeps them"
    );

    // The first site from its root, host-wide: beyond the guides now, and the second
    // site's pages stay.
    let whole = add(
        &s,
        json!({"url": shop.url("/"), "scope": "host", "max_pages": 50}),
    )
    .await;
    let shop_pages = paths_on(&s, &shop).await;
    assert!(shop_pages.is_superset(&guide_pages), "{shop_pages:?}");
    assert!(shop_pages.contains("/returns.html"), "{shop_pages:?}");
    assert_eq!(whole["pages_removed"], 0, "{whole}");
    assert_eq!(paths_on(&s, &news).await.len(), 2);

    // Overlapping sources: the guides crawled again are the guides source's pages; the
    // root crawled with a limit that stops short of them removes its own pages beyond
    // the limit, and leaves the guides.
    let again = add(&s, json!({"url": shop.url("guides/descaling.html")})).await;
    assert_eq!(again["pages_removed"], 0, "{again}");
    let before = shop_pages.len();
    let capped = add(
        &s,
        json!({"url": shop.url("/"), "scope": "host", "max_pages": 2}),
    )
    .await;
    let shop_pages = paths_on(&s, &shop).await;
    assert!(shop_pages.is_superset(&guide_pages), "{shop_pages:?}");
    assert!(shop_pages.len() <= 2 + guide_pages.len(), "{shop_pages:?}");
    let removed = capped["pages_removed"].as_u64().unwrap() as usize;
    assert_eq!(removed, before - shop_pages.len(), "{capped}");
    assert!(removed > 0, "{capped}");
    assert_eq!(paths_on(&s, &news).await.len(), 2);

    // The bot lists each source with its scope and limit (adding a URL again replaces its
    // entry), which its re-crawls keep.
    let (_, _, bot) = s.call("GET", BOT, Some(&s.admin), None).await;
    let listed: Vec<(Value, Value, Value)> = bot["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["url"].clone(), s["scope"].clone(), s["max_pages"].clone()))
        .collect();
    assert_eq!(
        listed,
        [
            (json!(news.url("/")), json!("host"), json!(2)),
            (
                json!(shop.url("guides/descaling.html")),
                json!("path"),
                Value::Null
            ),
            (json!(shop.url("/")), json!("host"), json!(2)),
        ]
    );
}

/// The console's Re-crawl sends a source's URL as the API lists it, credentials masked:
/// that is the stored source, crawled with its credentials, not a second one.
#[tokio::test(flavor = "multi_thread")]
async fn a_masked_source_url_means_the_stored_source() {
    let limits = Limits {
        allow_private_targets: true,
        ..Limits::default()
    };
    let (s, _) = fake_server(limits).await;
    let shop = serve(&fixture("site"));
    let body = json!({"id": "scoped", "name": "Scoped"});
    assert_eq!(
        s.call("POST", "/v1/bots", Some(&s.admin), Some(body))
            .await
            .0,
        201
    );
    let secret = shop.base.replace("http://", "http://ana:s3cret@") + "/";
    let first = add(&s, json!({"url": secret, "scope": "host"})).await;
    let shown = first["url"].as_str().unwrap().to_string();
    assert!(
        shown.contains("***@") && !shown.contains("s3cret"),
        "{first}"
    );
    let again = add(&s, json!({"url": shown, "scope": "host"})).await;
    assert_eq!(again["pages_removed"], 0, "{again}");
    let (_, _, bot) = s.call("GET", BOT, Some(&s.admin), None).await;
    assert_eq!(bot["sources"].as_array().unwrap().len(), 1, "{bot}");
    assert_eq!(bot["sources"][0]["url"], json!(shown));
}

fn returns_page(days: u32) -> String {
    format!(
        "<html><head><title>Returns</title></head><body><main><h1>Returns</h1>\
         <p>You may return a kettle within {days} days of delivery.</p></main></body></html>"
    )
}

/// Waits until the crawl worker has looked for due re-crawls `n` more times.
async fn looks(s: &TestServer, n: u64) {
    let start = s.state.jobs.looks();
    crate::helpers::eventually_async("the worker looked", Duration::from_secs(30), async || {
        (s.state.jobs.looks() >= start + n).then_some(())
    })
    .await;
}

/// The bot's stored returns page.
fn stored_page(s: &TestServer, bot: &BotId) -> Option<docent::domain::Page> {
    let pages = s.state.store.pages(bot).unwrap();
    pages.into_iter().find(|p| p.url.ends_with("/returns.html"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_recrawls_a_source_once_it_is_due_and_picks_up_the_change() {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("returns.html"), returns_page(30)).unwrap();
    let web = serve(site.path());
    // The worker looks every 50 ms instead of every minute; nothing else is shortened.
    let (s, _) = fake_server(Limits {
        allow_private_targets: true,
        schedule_every: Duration::from_millis(50),
        ..Limits::default()
    })
    .await;
    let (status, _, _) = s
        .call(
            "POST",
            "/v1/bots",
            Some(&s.admin),
            Some(json!({"id": "scoped"})),
        )
        .await;
    assert_eq!(status, 201);
    let bot = BotId::parse("scoped").unwrap();
    let url = web.url("returns.html");
    let first = add(&s, json!({"url": url, "recrawl_every": "1h"})).await;
    let before = stored_page(&s, &bot).expect("the page was crawled");
    let crawled_at = s.state.store.get_bot(&bot).unwrap().settings.sources[0]
        .last_crawl
        .expect("the crawl is recorded on the source");

    // The site changes. The source is not due for an hour: the worker, looking twenty
    // times a second, queues nothing (the job list is read after several looks: the
    // worker's next look is at most 50 ms away and the crawl itself took longer).
    std::fs::write(site.path().join("returns.html"), returns_page(14)).unwrap();
    let jobs_of = |s: &TestServer| -> Vec<docent::domain::CrawlJob> {
        let mut jobs = s.state.store.jobs().unwrap();
        jobs.retain(|j| j.bot_id == bot && j.id != first["id"]);
        jobs
    };
    looks(&s, 5).await;
    assert!(jobs_of(&s).is_empty(), "{:?}", jobs_of(&s));
    assert_eq!(
        stored_page(&s, &bot).unwrap().content_hash,
        before.content_hash
    );

    // An hour passes (the source's last crawl is moved back past its interval): the
    // worker queues the re-crawl on its own, once, and it indexes the changed page.
    s.state
        .store
        .update_bot(&bot, &mut |record| {
            record.settings.sources[0].last_crawl = Some(crawled_at - 3600);
        })
        .unwrap();
    let job = crate::helpers::eventually_async(
        "the scheduled re-crawl done",
        Duration::from_secs(60),
        async || jobs_of(&s).into_iter().find(|j| !j.state.unfinished()),
    )
    .await;
    assert_eq!(job.state, docent::domain::JobState::Done, "{job:?}");
    assert_eq!(job.url, url);
    assert_eq!(
        job.pages_indexed,
        Some(1),
        "the changed page re-indexed: {job:?}"
    );
    let after = stored_page(&s, &bot).unwrap();
    assert_ne!(after.content_hash, before.content_hash);
    let source = &s.state.store.get_bot(&bot).unwrap().settings.sources[0];
    assert!(source.last_crawl.unwrap() >= crawled_at, "{source:?}");
    // Due again only in an hour: further looks queue nothing more.
    looks(&s, 5).await;
    assert_eq!(jobs_of(&s).len(), 1, "{:?}", jobs_of(&s));
}
