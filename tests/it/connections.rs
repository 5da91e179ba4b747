//! The HTTP server's connections (issue 18, point 6): half-open clients are closed after the
//! header timeout, idle keep-alive connections after the idle timeout, and the connection
//! ceiling makes new clients wait, while `/healthz` and `/subscribe` keep answering.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Options, SmtpServer, TestApp};

/// Half-open clients held at once. The 20,000 exhausted the file limit; 2,000 keep
/// this test affordable in CI (the server runs in the test's own process, so each costs two
/// descriptors of its limit) and still show every one of them closed.
const HALF_OPEN: usize = 2_000;

async fn app(smtp: &SmtpServer, settings: &[(&str, &str)]) -> TestApp {
    TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        worker: false,
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Options::default()
    })
    .await
}

fn addr(app: &TestApp) -> String {
    app.url.trim_start_matches("http://").to_owned()
}

/// A client that sends half a request header and then nothing.
async fn half_open(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: squeeze.test\r\nX-Slow: ")
        .await
        .expect("write");
    s
}

/// Whether the server closed `s` within `within` (EOF or reset; whatever it wrote first).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A fresh client (no pooled connection) asks for `/healthz` and signs someone up.
async fn others_are_served(app: &TestApp, n: usize) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let health = client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .expect("/healthz answers");
    assert_eq!(health.status(), StatusCode::OK);
    let signup = client
        .post(format!("{}/subscribe", app.url))
        .json(&serde_json::json!({ "email": format!("meanwhile{n}@example.com") }))
        .send()
        .await
        .expect("/subscribe answers");
    assert_eq!(signup.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn slow_loris_half_open_connections_are_closed_after_the_header_timeout() {
    let smtp = SmtpServer::start().await;
    let app = app(&smtp, &[("http_header_timeout", "3s")]).await;
    let addr = addr(&app);
    let mut held = Vec::with_capacity(HALF_OPEN);
    for _ in 0..HALF_OPEN {
        held.push(half_open(&addr).await);
    }
    let opened = Instant::now();
    // Meanwhile everyone else is served.
    others_are_served(&app, 1).await;
    // None is closed before its header timeout...
    assert!(!closed_within(&mut held[0], Duration::from_millis(500)).await);
    others_are_served(&app, 2).await;
    // ...and every one soon after it.
    let checks = held.into_iter().map(|mut s| {
        tokio::spawn(async move { closed_within(&mut s, Duration::from_secs(8)).await })
    });
    let mut open = 0;
    for c in checks {
        if !c.await.expect("join") {
            open += 1;
        }
    }
    println!(
        "{HALF_OPEN} half-open connections closed {:?} after they were opened",
        opened.elapsed()
    );
    assert_eq!(
        open, 0,
        "{open} of {HALF_OPEN} half-open connections still open"
    );
    others_are_served(&app, 3).await;
    app.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let smtp = SmtpServer::start().await;
    let app = app(
        &smtp,
        &[("http_idle_timeout", "1s"), ("http_header_timeout", "30s")],
    )
    .await;
    let mut s = TcpStream::connect(addr(&app)).await.expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nHost: squeeze.test\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    // Two requests on one connection: it is kept alive, and activity keeps it open.
    for _ in 0..2 {
        s.write_all(request).await.expect("write");
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("answered")
            .expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let idle_since = Instant::now() - Duration::from_millis(600);
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "still open"
    );
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "closed after {idle:?} idle"
    );
    app.stop().await;
}

#[tokio::test]
async fn at_the_connection_limit_new_clients_wait_and_are_then_served() {
    let smtp = SmtpServer::start().await;
    let app = app(
        &smtp,
        &[
            ("http_max_connections", "20"),
            ("http_header_timeout", "1s"),
        ],
    )
    .await;
    let addr = addr(&app);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(half_open(&addr).await);
    }
    // Every slot is taken by a client that sends nothing useful: the next one waits for the
    // header timeout to free a slot, and is answered then; the process never hangs.
    let started = Instant::now();
    others_are_served(&app, 1).await;
    let waited = started.elapsed();
    println!("served after {waited:?} at the connection limit");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(3)).await);
    }
    app.stop().await;
}

/// A client that stalls in the middle of its request body holds its connection (and the
/// request's handler) no longer than twice the idle timeout: after one, the server asks the
/// connection to close once the request is done; after the second, silent still, it drops it.
#[tokio::test]
async fn a_request_body_stalled_midway_is_dropped_after_twice_the_idle_timeout() {
    let smtp = SmtpServer::start().await;
    let app = app(
        &smtp,
        &[("http_idle_timeout", "1s"), ("http_header_timeout", "30s")],
    )
    .await;
    let mut s = TcpStream::connect(addr(&app)).await.expect("connect");
    s.write_all(
        b"POST /subscribe HTTP/1.1\r\nHost: squeeze.test\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"email\": ",
    )
    .await
    .expect("write");
    let started = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(6)).await,
        "still open"
    );
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(1_900) && held < Duration::from_secs(4),
        "dropped after {held:?}"
    );
    others_are_served(&app, 1).await;
    app.stop().await;
}
