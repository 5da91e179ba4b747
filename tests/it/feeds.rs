//! Feeds: real-world-shaped samples (tests/samples/feeds/) served by a local HTTP server
//! become pending items; the fetch rules hold against servers that misbehave (malformed,
//! 304, a redirect loop, oversized, a gzip bomb, slow) and against a private address; and the
//! daily digest takes the feed's items like any other.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use squeeze::domain::DailySchedule;

use crate::helpers::{Options, SmtpServer, TestApp, TestDb, at, seed};

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/samples/feeds");

/// The samples' "now": the morning after most of their entries.
fn now() -> DateTime<Utc> {
    at("2026-12-02T06:00:00Z")
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(SAMPLES).join(name)).expect("sample")
}

#[derive(Clone, Default)]
struct Hits {
    all: Arc<AtomicUsize>,
    /// The `If-None-Match` the 304 route was last sent.
    conditional: Arc<std::sync::Mutex<Vec<String>>>,
}

/// A feed server on 127.0.0.1: the samples, and routes that misbehave.
async fn feed_server() -> (String, Hits) {
    let hits = Hits::default();
    let serve = |name: &'static str, content_type: &'static str| {
        move |State(h): State<Hits>| async move {
            h.all.fetch_add(1, Ordering::SeqCst);
            ([(header::CONTENT_TYPE, content_type)], sample(name)).into_response()
        }
    };
    let app = Router::new()
        .route(
            "/blog.xml",
            get(serve("blog-rss2.xml", "application/rss+xml")),
        )
        .route(
            "/releases.atom",
            get(serve("github-releases.atom", "application/atom+xml")),
        )
        .route(
            "/feed.json",
            get(serve("json-feed.json", "application/feed+json")),
        )
        .route(
            "/rdf.xml",
            get(serve("rdf-rss1.xml", "application/rdf+xml")),
        )
        .route("/cdata.xml", get(serve("cdata-html.xml", "text/xml")))
        .route("/malformed.xml", get(serve("malformed.xml", "text/xml")))
        .route("/etag.xml", get(conditional))
        .route("/loop", get(redirect_loop))
        .route("/big.xml", get(oversized))
        .route("/bomb.xml", get(bomb))
        .route("/slow.xml", get(slow))
        .route("/fresh.xml", get(fresh))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

async fn conditional(State(h): State<Hits>, headers: HeaderMap) -> Response {
    h.all.fetch_add(1, Ordering::SeqCst);
    let sent = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    h.conditional.lock().expect("lock").push(sent.clone());
    if sent == "\"v1\"" {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    (
        [
            (header::ETAG, HeaderValue::from_static("\"v1\"")),
            (
                header::LAST_MODIFIED,
                HeaderValue::from_static("Tue, 01 Dec 2026 18:00:00 GMT"),
            ),
        ],
        sample("blog-rss2.xml"),
    )
        .into_response()
}

async fn redirect_loop(State(h): State<Hits>) -> Redirect {
    h.all.fetch_add(1, Ordering::SeqCst);
    Redirect::temporary("/loop")
}

/// 6 MB, over the default 5 MB cap.
async fn oversized(State(h): State<Hits>) -> Response {
    h.all.fetch_add(1, Ordering::SeqCst);
    vec![b' '; 6 << 20].into_response()
}

/// 20 KB of gzip that decodes to 20 MB.
async fn bomb(State(h): State<Hits>) -> Response {
    h.all.fetch_add(1, Ordering::SeqCst);
    (
        [
            (header::CONTENT_TYPE, "application/rss+xml"),
            (header::CONTENT_ENCODING, "gzip"),
        ],
        sample("bomb.xml.gz"),
    )
        .into_response()
}

/// An RSS feed whose one entry was published an hour before the request.
async fn fresh(State(h): State<Hits>) -> Response {
    h.all.fetch_add(1, Ordering::SeqCst);
    let date = (Utc::now() - chrono::Duration::hours(1)).to_rfc2822();
    let rss = format!(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Fresh</title>
        <item><title>Just in</title><link>https://fresh.example/just-in</link>
        <guid>just-in</guid><pubDate>{date}</pubDate><description>New.</description></item>
        </channel></rss>"#
    );
    ([(header::CONTENT_TYPE, "application/rss+xml")], rss).into_response()
}

async fn slow(State(h): State<Hits>) -> Response {
    h.all.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    sample("blog-rss2.xml").into_response()
}

async fn spawn(settings: &[(&str, &str)]) -> TestApp {
    spawn_with(settings, None).await
}

async fn spawn_with(settings: &[(&str, &str)], smtp: Option<&SmtpServer>) -> TestApp {
    TestApp::spawn_with(Options {
        smtp_url: smtp.map(SmtpServer::url),
        worker: smtp.is_some(),
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Options::default()
    })
    .await
}

const PRIVATE_OK: (&str, &str) = ("feed_allow_private", "true");

async fn add_feed(app: &TestApp, url: &str) -> String {
    let (status, body) = app.post_json("/api/feeds", json!({ "url": url })).await;
    assert_eq!(status, StatusCode::CREATED.as_u16(), "{body}");
    body["id"].as_str().expect("id").to_owned()
}

async fn feeds(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get_json("/api/feeds").await;
    assert_eq!(status, StatusCode::OK.as_u16(), "{body}");
    body["feeds"].as_array().expect("feeds").clone()
}

async fn pending(app: &TestApp) -> Vec<Value> {
    let (_, body) = app.get_json("/api/items?status=pending").await;
    body["items"].as_array().expect("items").clone()
}

fn titles(items: &[Value]) -> Vec<String> {
    let mut t: Vec<String> = items
        .iter()
        .map(|i| i["title"].as_str().unwrap_or_default().to_owned())
        .collect();
    t.sort();
    t
}

async fn poll(app: &TestApp, now: DateTime<Utc>) -> Vec<squeeze::service::Polled> {
    app.app.feeds().poll_all(now).await.expect("poll")
}

#[tokio::test]
async fn five_real_feeds_become_pending_items_once_and_only_the_last_day() {
    let (server, _) = feed_server().await;
    let app = spawn(&[PRIVATE_OK]).await;
    for path in [
        "/blog.xml",
        "/releases.atom",
        "/feed.json",
        "/rdf.xml",
        "/cdata.xml",
    ] {
        add_feed(&app, &format!("{server}{path}")).await;
    }
    let polled = poll(&app, now()).await;
    assert!(polled.iter().all(|p| p.error.is_none()), "{polled:?}");
    let items = pending(&app).await;
    assert_eq!(
        titles(&items),
        [
            "Announcing the Compiler Performance Working Group",
            "Security updates for Tuesday",
            "Show HN: A tiny SQLite replicator",
            "The M5 MacBook Air",
            "This Week in Rust 576",
            "Tokio v1.52.0",
            "Why we left Kubernetes",
            "[$] The 6.19 merge window begins",
            "iOS 27.2 Is Out",
        ],
        "the last 24 hours of each feed; older and future-dated entries are not items"
    );
    let by_title = |t: &str| {
        items
            .iter()
            .find(|i| i["title"] == t)
            .unwrap_or_else(|| panic!("{t}"))
            .clone()
    };
    // Source = the feed's title; the link normalised (no tracking parameters).
    let perf = by_title("Announcing the Compiler Performance Working Group");
    assert_eq!(perf["source"], "Inside Rust Blog");
    assert_eq!(
        perf["url"],
        "https://blog.rust-lang.example/inside-rust/2026/12/01/compiler-perf.html"
    );
    assert_eq!(
        perf["summary"],
        "We are happy to announce a new working group focused on compile times & the incremental cache."
    );
    assert_eq!(
        by_title("Tokio v1.52.0")["source"],
        "Release notes from tokio"
    );
    assert_eq!(by_title("The M5 MacBook Air")["source"], "Daring Example");
    assert_eq!(
        by_title("[$] The 6.19 merge window begins")["source"],
        "LWN.example headlines"
    );
    // HTML and CDATA become plain text: no tags, no script, entities decoded.
    let show = by_title("Show HN: A tiny SQLite replicator");
    assert_eq!(show["source"], "Hacker Example: Front Page");
    let summary = show["summary"].as_str().expect("summary");
    assert!(
        !summary.contains('<') && !summary.contains("alert"),
        "{summary}"
    );
    assert!(summary.contains("Points: 312 & counting —"), "{summary}");
    let release = by_title("Tokio v1.52.0");
    let summary = release["summary"].as_str().expect("summary");
    assert!(
        summary.contains("TcpStream::set_quickack (#7001)"),
        "{summary}"
    );
    assert!(
        !summary.contains("&lt;") && !summary.contains('<'),
        "{summary}"
    );

    // Polled again: nothing new, nothing twice.
    let polled = poll(&app, now() + chrono::Duration::minutes(15)).await;
    assert!(polled.iter().all(|p| p.new_items == 0), "{polled:?}");
    assert_eq!(pending(&app).await.len(), 9);

    // The future-dated entry comes once its time has come; the old one never does.
    poll(&app, at("2026-12-05T09:00:00Z")).await;
    let items = pending(&app).await;
    assert_eq!(items.len(), 10);
    assert!(
        items
            .iter()
            .any(|i| i["title"] == "Scheduled: the Rust 2.0 roadmap")
    );
    assert!(
        !items
            .iter()
            .any(|i| i["title"] == "Planning the 2027 edition")
    );

    let listed = feeds(&app).await;
    assert_eq!(listed.len(), 5);
    for f in &listed {
        assert_eq!(f["consecutive_failures"], 0, "{f}");
        assert!(f["last_success_at"].is_string(), "{f}");
        assert_eq!(f["failing"], false, "{f}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_feed_entry_whose_url_is_already_an_item_is_not_added_again() {
    let (server, _) = feed_server().await;
    let app = spawn(&[PRIVATE_OK]).await;
    let (status, body) = app
        .post_json(
            "/api/items",
            json!({ "title": "Editor's pick", "url": "https://lwn.example/Articles/1001/", "summary": "" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    add_feed(&app, &format!("{server}/rdf.xml")).await;
    let polled = poll(&app, now()).await;
    assert_eq!(polled[0].new_items, 1, "{polled:?}");
    assert_eq!(
        titles(&pending(&app).await),
        ["Editor's pick", "Security updates for Tuesday"]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_feed_is_its_last_error_and_a_day_of_failures_is_flagged() {
    let (server, _) = feed_server().await;
    let app = spawn(&[PRIVATE_OK]).await;
    add_feed(&app, &format!("{server}/malformed.xml")).await;
    // Failing since 25 hours ago, and again now.
    poll(&app, Utc::now() - chrono::Duration::hours(25)).await;
    let polled = poll(&app, Utc::now()).await;
    let error = polled[0].error.as_deref().expect("an error");
    assert!(error.starts_with("not a feed"), "{error}");
    let f = &feeds(&app).await[0];
    assert_eq!(f["consecutive_failures"], 2, "{f}");
    assert!(
        f["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("not a feed")),
        "{f}"
    );
    assert!(f["last_success_at"].is_null(), "{f}");
    assert_eq!(f["failing"], true, "failing for over a day is flagged: {f}");
    assert!(pending(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_304_is_a_success_with_nothing_new_and_the_etag_is_sent_back() {
    let (server, hits) = feed_server().await;
    let app = spawn(&[PRIVATE_OK]).await;
    add_feed(&app, &format!("{server}/etag.xml")).await;
    let first = poll(&app, now()).await;
    assert_eq!(first[0].new_items, 2, "{first:?}");
    let second = poll(&app, now() + chrono::Duration::minutes(15)).await;
    assert!(
        second[0].not_modified && second[0].error.is_none(),
        "{second:?}"
    );
    assert_eq!(
        *hits.conditional.lock().expect("lock"),
        ["", "\"v1\""],
        "the second GET carried the first answer's ETag"
    );
    let f = &feeds(&app).await[0];
    assert_eq!(f["consecutive_failures"], 0, "{f}");
    assert_eq!(pending(&app).await.len(), 2);
    app.stop().await;
}

/// Polls one feed and returns its error.
async fn poll_error(app: &TestApp, url: &str) -> String {
    add_feed(app, url).await;
    let polled = poll(app, now()).await;
    let error = polled[0].error.clone().expect("the poll fails");
    let f = &feeds(app).await[0];
    assert_eq!(f["consecutive_failures"], 1, "{f}");
    assert_eq!(f["last_error"], error.as_str(), "{f}");
    assert!(pending(app).await.is_empty());
    error
}

#[tokio::test]
async fn fault_a_redirect_loop_stops_after_five_redirects() {
    let (server, hits) = feed_server().await;
    let app = spawn(&[PRIVATE_OK]).await;
    let error = poll_error(&app, &format!("{server}/loop")).await;
    assert!(error.contains("more than 5 redirects"), "{error}");
    assert_eq!(
        hits.all.load(Ordering::SeqCst),
        6,
        "the first GET and five redirects"
    );
    app.stop().await;
}

#[tokio::test]
async fn fault_an_oversized_feed_is_refused_at_the_size_cap() {
    let (server, _) = feed_server().await;
    let app = spawn(&[PRIVATE_OK]).await;
    let error = poll_error(&app, &format!("{server}/big.xml")).await;
    assert_eq!(error, format!("the feed is larger than {} bytes", 5 << 20));
    app.stop().await;
}

#[tokio::test]
async fn fault_a_gzip_bomb_is_cut_off_at_the_size_cap_after_decompression() {
    let (server, _) = feed_server().await;
    // 20 KB on the wire, 20 MB decoded; the cap is 1 MB.
    let app = spawn(&[PRIVATE_OK, ("feed_max_bytes", "1MB")]).await;
    let error = poll_error(&app, &format!("{server}/bomb.xml")).await;
    assert_eq!(error, format!("the feed is larger than {} bytes", 1 << 20));
    app.stop().await;
}

#[tokio::test]
async fn fault_a_slow_feed_times_out() {
    let (server, _) = feed_server().await;
    let app = spawn(&[PRIVATE_OK, ("feed_timeout", "1s")]).await;
    let started = std::time::Instant::now();
    let error = poll_error(&app, &format!("{server}/slow.xml")).await;
    assert!(error.contains("no complete answer within 1s"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn fault_a_private_address_is_refused_and_never_fetched() {
    let (server, hits) = feed_server().await;
    let app = spawn(&[]).await;
    // A literal loopback address, and a name that resolves to one.
    let port = server.rsplit(':').next().expect("port");
    for url in [
        format!("{server}/blog.xml"),
        format!("http://localhost:{port}/blog.xml"),
    ] {
        let id = add_feed(&app, &url).await;
        let polled = poll(&app, now()).await;
        let error = polled[0].error.clone().expect("refused");
        assert!(
            error.starts_with("refused: ") && error.contains("feed_allow_private"),
            "{url}: {error}"
        );
        let status = app
            .admin(Method::DELETE, &format!("/api/feeds/{id}"))
            .send()
            .await
            .expect("delete")
            .status();
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    assert_eq!(
        hits.all.load(Ordering::SeqCst),
        0,
        "nothing reached the server"
    );
    assert!(pending(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn the_feeds_api_refuses_bad_input_precisely() {
    let app = spawn(&[]).await;
    let (status, body) = app
        .post_json("/api/feeds", json!({ "url": "file:///etc/passwd" }))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "url", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("http")),
        "{body}"
    );
    let (status, body) = app.post_json("/api/feeds", json!({ "link": "x" })).await;
    assert_eq!(status, 400, "{body}");
    add_feed(&app, "https://example.com/feed.xml").await;
    let (status, body) = app
        .post_json(
            "/api/feeds",
            json!({ "url": "https://example.com/feed.xml" }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let res = app
        .admin(Method::DELETE, "/api/feeds/nope")
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app
        .http
        .get(format!("{}/api/feeds", app.url))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn the_daily_digest_sends_the_feeds_items_and_an_empty_day_sends_nothing() {
    let (server, _) = feed_server().await;
    let smtp = SmtpServer::start().await;
    let app = spawn_with(&[PRIVATE_OK], Some(&smtp)).await;
    seed(&app, &[("confirmed", 2)], "example.com").await;
    let editor = app.app.editor();
    let scheduler = app.app.scheduler();
    // The daily firing an hour ago by the real clock, not on a fixed date: the worker lets a
    // daily digest's deliveries expire at the next firing, by the real clock (a fixed
    // 2026-12-02 07:00 made this test fail from 2026-12-03 07:00 on).
    let ago = Utc::now() - chrono::Duration::hours(1);
    let fire = at(&ago.format("%Y-%m-%dT%H:%M:00Z").to_string());
    let daily =
        DailySchedule::parse(&fire.format("%H:%M").to_string(), "UTC", true).expect("schedule");
    editor
        .set_schedule(&daily, now())
        .await
        .expect("set schedule");
    add_feed(&app, &format!("{server}/rdf.xml")).await;
    poll(&app, now()).await;
    let r = scheduler.tick(fire).await.expect("tick");
    let today = fire.format("%Y-%m-%d").to_string();
    assert_eq!(r.daily_created.as_deref(), Some(today.as_str()));
    assert_eq!(r.fanned_out.len(), 1);
    let mail = app.wait_all_sent(&smtp, 2).await;
    let text = String::from_utf8_lossy(&mail[0].data).into_owned();
    assert!(text.contains("The 6.19 merge window begins"), "{text}");
    assert!(text.contains("LWN.example headlines"), "{text}");
    assert!(
        pending(&app).await.is_empty(),
        "the digest took the feed's items"
    );

    // The next day the feed has nothing new: nothing is sent.
    let next_day = fire + chrono::Duration::days(1);
    poll(&app, next_day - chrono::Duration::hours(1)).await;
    let r = scheduler.tick(next_day).await.expect("tick");
    assert_eq!(r.daily_created, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.count(), 2);
    app.stop().await;
}

/// `squeeze …` with a fresh environment but for `env`; (exit code, stdout, stderr).
async fn squeeze(dir: &Path, args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_squeeze"));
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("SQUEEZE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("SQUEEZE_TEMPLATES", crate::helpers::TEMPLATES);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run squeeze"))
        .await
        .expect("join");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_adds_lists_polls_and_removes_feeds() {
    let (server, _) = feed_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        (
            "SQUEEZE_DATABASE_URL",
            format!("sqlite://{}/squeeze.db", dir.path().display()),
        ),
        ("SQUEEZE_FEED_ALLOW_PRIVATE", "true".to_owned()),
    ];
    let (code, _, err) = squeeze(dir.path(), &["feeds", "add", "ftp://x.example/f"], &env).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("url: must be an http:// or https:// URL"),
        "{err}"
    );
    let (code, id, err) = squeeze(
        dir.path(),
        &["feeds", "add", &format!("{server}/cdata.xml")],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    squeeze(
        dir.path(),
        &["feeds", "add", &format!("{server}/malformed.xml")],
        &env,
    )
    .await;
    // `poll` takes what the feed has now; the samples' entries are days old by then except
    // on their own morning, so it reports each feed's outcome rather than a count here.
    let (code, out, err) = squeeze(dir.path(), &["feeds", "poll"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("/cdata.xml  ") && out.contains("new items"),
        "{out}"
    );
    assert!(out.contains("/malformed.xml  failed: not a feed"), "{out}");
    let (code, out, _) = squeeze(dir.path(), &["feeds", "list"], &env).await;
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("last error: not a feed"),
        "{out}"
    );
    let (code, out, _) = squeeze(dir.path(), &["feeds", "list", "--json"], &env).await;
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).expect("json");
    let cdata = &listed["feeds"][0];
    assert_eq!(cdata["title"], "Hacker Example: Front Page", "{out}");
    assert_eq!(cdata["consecutive_failures"], 0, "{out}");
    assert_eq!(listed["feeds"][1]["consecutive_failures"], 1, "{out}");
    let (code, out, _) = squeeze(dir.path(), &["feeds", "remove", &id], &env).await;
    assert_eq!((code, out.trim()), (0, format!("removed {id}").as_str()));
    let (code, _, err) = squeeze(dir.path(), &["feeds", "remove", &id], &env).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("no feed with id {id}")), "{err}");
}

#[tokio::test]
async fn the_poller_started_with_the_scheduler_polls_each_feed_every_feed_interval() {
    let (server, hits) = feed_server().await;
    let app = TestApp::spawn_with(Options {
        worker: false,
        scheduler: true,
        settings: vec![
            ("feed_allow_private".into(), "true".into()),
            ("feed_interval".into(), "2s".into()),
        ],
        ..Options::default()
    })
    .await;
    add_feed(&app, &format!("{server}/fresh.xml")).await;
    crate::helpers::eventually(
        "the poller made the item",
        Duration::from_secs(10),
        || async { pending(&app).await.len() == 1 },
    )
    .await;
    let polls = hits.all.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let later = hits.all.load(Ordering::SeqCst) - polls;
    // Every 2 s (the poller looks every second): two or three polls in 4.5 s, not one a tick.
    assert!((1..=3).contains(&later), "{later} polls in 4.5 s");
    assert_eq!(
        pending(&app).await.len(),
        1,
        "the entry became an item once"
    );
    app.stop().await;
}

/// On PostgreSQL several `squeeze serve` nodes share one installation: only the node holding
/// the scheduler role (the advisory lock) polls, and another takes over when it goes. The
/// leader polls hourly, the second node would every second: any fetch while the leader lives
/// is the second node's.
#[tokio::test]
async fn on_postgres_only_the_node_holding_the_scheduler_role_polls_the_feeds() {
    let Some(db) = TestDb::postgres_or_skip().await else {
        return;
    };
    let (server, hits) = feed_server().await;
    let node = |interval: &str| {
        TestApp::spawn_with(Options {
            worker: false,
            scheduler: true,
            database: Some(db.clone()),
            settings: vec![
                ("feed_allow_private".into(), "true".into()),
                ("feed_interval".into(), interval.into()),
            ],
            ..Options::default()
        })
    };
    let leader = node("1h").await;
    add_feed(&leader, &format!("{server}/fresh.xml")).await;
    crate::helpers::eventually(
        "the leader's poller made the item",
        Duration::from_secs(20),
        || async { pending(&leader).await.len() == 1 },
    )
    .await;
    let other = node("1s").await;
    let polls = hits.all.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        hits.all.load(Ordering::SeqCst),
        polls,
        "the node without the scheduler role polled"
    );
    leader.stop().await;
    crate::helpers::eventually(
        "the other node took the role over and polls",
        Duration::from_secs(10),
        || async { hits.all.load(Ordering::SeqCst) > polls },
    )
    .await;
    other.stop().await;
}
