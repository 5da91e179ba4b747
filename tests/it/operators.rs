//! What operators see: stats as JSON and in the CLI, Prometheus metrics, and the dashboard in
//! a real browser — all showing the numbers of one seeded scenario.

use std::process::Command;
use std::time::Duration;

use crate::helpers::{self, ADMIN_TOKEN, Options, SmtpServer, TestApp, eventually, seed};
use reqwest::StatusCode;
use serde_json::Value;

const METRICS_TOKEN: &str = "metrics-token-0123456789";

/// Ten confirmed subscribers get a digest: 4 are sent, 2 fail (550 5.7.1), 1 bounces
/// (550 5.1.1), 1 unsubscribed after fan-out (suppressed), 2 are still queued.
async fn scenario(smtp: &SmtpServer) -> (TestApp, String) {
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        worker: false,
        settings: vec![("metrics_token".into(), METRICS_TOKEN.into())],
        ..Options::default()
    })
    .await;
    seed(&app, &[("confirmed", 10)], "example.com").await;
    {
        let mut f = smtp.faults();
        for r in ["confirmed7@example.com", "confirmed8@example.com"] {
            f.rcpt_always
                .insert(r.into(), "550 5.7.1 Message rejected: policy".into());
        }
        f.rcpt_always.insert(
            "confirmed6@example.com".into(),
            "550 5.1.1 No such user here".into(),
        );
    }
    let id = app.send_digest_now().await;
    app.exec(
        "UPDATE subscribers SET status = 'unsubscribed' WHERE email = 'confirmed9@example.com'",
    )
    .await;
    // Two wait for a later turn, as a deferred retry would: out of the fan-out's chunk (a new
    // id, outside its range) into the queue, due in an hour.
    app.exec(
        "UPDATE deliveries SET id = 'later-' || id WHERE subscriber_id IN (SELECT id FROM subscribers WHERE email IN ('confirmed4@example.com', 'confirmed5@example.com'))",
    )
    .await;
    app.exec(&format!(
        "INSERT INTO delivery_queue (delivery_id, digest_id, run_at) SELECT id, digest_id, {} FROM deliveries WHERE id LIKE 'later-%'",
        squeeze::domain::clock::now_ms() + 3_600_000
    ))
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(app.app.worker().run(stop.clone()));
    eventually("8 deliveries final", Duration::from_secs(10), || async {
        app.scalar(
            "SELECT COUNT(*) FROM deliveries WHERE status IN ('sent', 'failed', 'suppressed')",
        )
        .await
            == 8
    })
    .await;
    stop.cancel();
    worker.await.expect("join").expect("worker");
    (app, id)
}

fn check_digest_numbers(d: &Value) {
    for (key, n) in [
        ("recipients", 10),
        ("sent", 4),
        ("failed", 2),
        ("bounced", 1),
        ("suppressed", 1),
        ("queued", 2),
        ("retrying", 0),
        ("sending", 0),
    ] {
        assert_eq!(d[key], n, "{key} in {d}");
    }
    assert_eq!(d["progress"], 0.8);
    assert_eq!(d["reply_codes"][0]["code"], 550);
    assert_eq!(d["reply_codes"][0]["count"], 3);
    assert!(d["latency"]["p50_ms"].is_number() && d["latency"]["p95_ms"].is_number());
    assert!(d["throughput_per_second"].is_number());
}

#[tokio::test]
async fn json_stats_and_the_cli_show_the_seeded_numbers() {
    let smtp = SmtpServer::start().await;
    let (app, id) = scenario(&smtp).await;

    let (status, d) = app.digest_stats(&id).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    check_digest_numbers(&d);
    let (status, o) = app.stats().await;
    assert_eq!(status, StatusCode::OK, "{o}");
    assert_eq!(o["subscribers"]["confirmed"], 8, "{o}");
    assert_eq!(o["subscribers"]["bounced"], 1);
    assert_eq!(o["subscribers"]["unsubscribed"], 1);
    assert_eq!(o["subscribers"]["pending"], 0);
    assert_eq!(o["queue"]["depth"], 2);
    assert_eq!(o["last_30_days"].as_array().map(Vec::len), Some(30));
    check_digest_numbers(&o["current_digest"]);
    let res = app
        .http
        .get(format!("{}/api/stats", app.url))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.digest_stats("nope").await.0, StatusCode::NOT_FOUND);

    // The CLI reads the same database.
    let db = app.database.clone();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_squeeze"))
            .args(args)
            .current_dir(db.dir())
            .env("SQUEEZE_DATABASE_URL", db.url())
            .env("SQUEEZE_TEMPLATES", helpers::TEMPLATES)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json: Value =
        serde_json::from_str(&run(&["stats", "--json", "--digest", &id])).expect("CLI JSON");
    check_digest_numbers(&json);
    let table = run(&["stats", "--digest", &id]);
    for line in [
        "sent         4",
        "failed       2",
        "bounced      1",
        "suppressed   1",
        "queued       2",
        "progress     80.0%",
    ] {
        assert!(table.contains(line), "{line:?} in\n{table}");
    }
    let overall = run(&["stats"]);
    assert!(
        overall.contains("confirmed      8") && overall.contains("queue depth    2"),
        "{overall}"
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_need_a_token() {
    let smtp = SmtpServer::start().await;
    let (app, _) = scenario(&smtp).await;
    let url = format!("{}/metrics", app.url);
    assert_eq!(
        app.http.get(&url).send().await.expect("req").status(),
        StatusCode::UNAUTHORIZED
    );
    let body = app
        .http
        .get(&url)
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("body");
    let admin = app
        .http
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("req");
    assert_eq!(admin.status(), StatusCode::OK);

    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} {labels:?} missing in\n{body}"))
    };
    assert_eq!(
        value(
            "squeeze_messages_total",
            &[("kind", "digest"), ("outcome", "sent"), ("class", "2xx")]
        ),
        4.0
    );
    assert_eq!(
        value(
            "squeeze_messages_total",
            &[("kind", "digest"), ("outcome", "failed"), ("class", "5xx")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "squeeze_messages_total",
            &[("kind", "digest"), ("outcome", "bounced"), ("class", "5xx")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "squeeze_messages_total",
            &[
                ("kind", "digest"),
                ("outcome", "suppressed"),
                ("class", "none")
            ]
        ),
        1.0
    );
    assert_eq!(value("squeeze_queue_depth", &[]), 2.0);
    assert_eq!(
        value("squeeze_subscribers", &[("status", "confirmed")]),
        8.0
    );
    assert_eq!(value("squeeze_subscribers", &[("status", "pending")]), 0.0);
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "squeeze_smtp_send_seconds")
        .expect("histogram");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.iter().any(|b| b.count >= 7.0), "{buckets:?}")
        }
        other => panic!("not a histogram: {other:?}"),
    }
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "squeeze_delivery_latency_seconds")
    );
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_needs_a_login_and_shows_progress_and_failures() {
    let smtp = SmtpServer::start().await;
    let (app, id) = scenario(&smtp).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .expect("client");
    let page = http
        .get(format!("{}/admin", app.url))
        .send()
        .await
        .expect("req");
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    assert!(page.text().await.expect("body").contains("name=\"token\""));
    let wrong = http
        .post(format!("{}/admin/login", app.url))
        .form(&[("token", "nope")])
        .send()
        .await
        .expect("req");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let ok = http
        .post(format!("{}/admin/login", app.url))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("req");
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let set_cookie = ok.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains(ADMIN_TOKEN),
        "the token itself is never the cookie"
    );
    let html = http
        .get(format!("{}/admin", app.url))
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("body");
    assert!(html.contains("8 of 10 done (80.0%)"), "progress figure");
    assert!(
        html.contains("5.7.1 Message rejected: policy"),
        "failure reason"
    );
    assert!(
        html.contains(&format!("action=\"/admin/digests/{id}/pause\"")),
        "a pause button while sending"
    );
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("every dashboard form carries a CSRF token")
        .to_owned();
    let status_sql = format!("SELECT status FROM digests WHERE id = '{id}'");
    let status = || app.text(&status_sql);
    // A forged cross-site POST pauses nothing: no token, a wrong one, or the right one from
    // another origin (a page on a sibling port or subdomain, which SameSite lets through).
    let pause = format!("{}/admin/digests/{id}/pause", app.url);
    let forged = [
        http.post(&pause).header("origin", "http://evil.example"),
        http.post(&pause).form(&[("csrf", "forged")]),
        http.post(&pause)
            .header("origin", "http://127.0.0.1:1")
            .form(&[("csrf", csrf.as_str())]),
        http.post(&pause)
            .header("sec-fetch-site", "same-site")
            .form(&[("csrf", csrf.as_str())]),
    ];
    for request in forged {
        let res = request.send().await.expect("req");
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert!(
            res.text()
                .await
                .expect("body")
                .contains("nothing was changed"),
            "a page that says why"
        );
        assert_eq!(status().await, "sending");
    }
    // Pause from the dashboard, as its form does.
    let res = http
        .post(&pause)
        .header("origin", &app.url)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(status().await, "paused");
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    let forged_logout = http
        .post(format!("{}/admin/logout", app.url))
        .send()
        .await
        .expect("req");
    assert_eq!(forged_logout.status(), StatusCode::FORBIDDEN);
    let out = http
        .post(format!("{}/admin/logout", app.url))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("req");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        http.get(format!("{}/admin", app.url))
            .send()
            .await
            .expect("req")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Logout ended the session on the server: the old cookie, sent again, opens nothing.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let reused = plain
        .get(format!("{}/admin", app.url))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("req");
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        reused
            .text()
            .await
            .expect("body")
            .contains("name=\"token\"")
    );
    let reused = plain
        .post(format!("{}/admin/digests/{id}/resume", app.url))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("req");
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(status().await, "paused");
    app.stop().await;
}

#[tokio::test]
async fn the_eleventh_wrong_admin_token_in_a_minute_gets_429_with_retry_after() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let login = |token: &'static str| {
        app.http
            .post(format!("{}/admin/login", app.url))
            .form(&[("token", token)])
            .send()
    };
    for i in 0..10 {
        let res = login("wrong-token-0123456789").await.expect("req");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "attempt {}", i + 1);
    }
    let res = login("wrong-token-0123456789").await.expect("req");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(
        res.text()
            .await
            .expect("body")
            .contains("Too many wrong tokens")
    );
    // Throttled means throttled: the right token does not get through either, nor a bearer.
    let res = login(ADMIN_TOKEN).await.expect("req");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let res = app
        .admin(reqwest::Method::GET, "/api/stats")
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    app.stop().await;
}

#[tokio::test]
async fn wrong_bearer_tokens_are_throttled_and_the_scheme_is_case_insensitive() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let res = app
            .http
            .get(format!("{}/api/stats", app.url))
            .header("authorization", format!("{scheme} {ADMIN_TOKEN}"))
            .send()
            .await
            .expect("req");
        assert_eq!(res.status(), StatusCode::OK, "{scheme}");
    }
    let wrong = || {
        app.http
            .get(format!("{}/api/stats", app.url))
            .header("authorization", "Bearer wrong-token-0123456789")
            .send()
    };
    for _ in 0..10 {
        assert_eq!(
            wrong().await.expect("req").status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let res = wrong().await.expect("req");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_renders_in_headless_chromium() {
    if !crate::helpers::browser_available() {
        return;
    }
    let smtp = SmtpServer::start().await;
    let (app, _) = scenario(&smtp).await;
    // A feed failing since 25 hours ago (this list refuses private addresses), through the
    // real API and poller.
    let (status, body) = app
        .post_json(
            "/api/feeds",
            serde_json::json!({"url": "http://127.0.0.1:9/news.xml"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let feeds = app.app.feeds();
    for at in [
        chrono::Utc::now() - chrono::Duration::hours(25),
        chrono::Utc::now(),
    ] {
        feeds.poll_all(at).await.expect("poll");
    }
    // A complaint heard after sending (as a provider's webhook or the MTA's pipe hands it
    // over), matched by the address the digest went to.
    let heard = app
        .app
        .inbound()
        .record(squeeze::domain::bounce::Report {
            kind: squeeze::domain::bounce::ReportKind::Complaint,
            status: None,
            action: None,
            diagnostic: Some("abuse".into()),
            recipient: Some("confirmed0@example.com".into()),
            message_id: None,
            verp_token: None,
            received_at: squeeze::domain::clock::now_ms(),
            source: "test".into(),
        })
        .await
        .expect("recorded");
    assert!(
        matches!(heard, squeeze::service::inbound::Recorded::Matched { .. }),
        "{heard:?}"
    );
    let shot = concat!(env!("CARGO_MANIFEST_DIR"), "/target/dashboard.png");
    let seen = crate::helpers::browser("dashboard.mjs", &[&app.url, ADMIN_TOKEN, shot]).await;
    assert_eq!(seen["progress"], "8 of 10 done (80.0%)", "{seen}");
    assert_eq!(seen["bar"], "80");
    assert!(
        seen["failures"]
            .as_str()
            .is_some_and(|f| f.contains("5.1.1 No such user here") && f.contains("5.7.1")),
        "{seen}"
    );
    assert_eq!(seen["chartBars"], 180);
    // The feed's URL and flag, last success, last error, consecutive failures.
    let cells = &seen["feedCells"];
    let cell = |i: usize| cells[i].as_str().unwrap_or_default();
    assert!(
        cell(0).contains("http://127.0.0.1:9/news.xml")
            && cell(0).contains("failing for over a day"),
        "{seen}"
    );
    assert_eq!(cell(1), "never", "{seen}");
    assert!(cell(2).starts_with("refused: 127.0.0.1"), "{seen}");
    assert_eq!(cell(3), "2", "{seen}");
    assert_eq!(seen["failingFeeds"], 1, "{seen}");
    // What was heard after sending: the complaint, overall and on the digest's figures.
    assert_eq!(seen["complaints"], "1", "{seen}");
    assert_eq!(seen["digestComplaints"], "1", "{seen}");
    assert_eq!(seen["hardBounces"], "0", "{seen}");
    assert_eq!(seen["cookies"][0]["httpOnly"], true);
    assert_eq!(seen["cookies"][0]["sameSite"], "Strict");
    assert_eq!(seen["afterPause"], "paused", "{seen}");
    assert_ne!(seen["afterResume"], "paused", "{seen}");
    assert!(
        std::fs::metadata(shot).is_ok_and(|m| m.len() > 1000),
        "screenshot kept at {shot}"
    );
    app.stop().await;
}

#[tokio::test]
async fn logs_carry_delivery_ids_as_json_and_never_an_address() {
    let smtp = SmtpServer::start().await;
    smtp.faults().rcpt_always.insert(
        "confirmed0@example.com".into(),
        "550 5.1.1 <confirmed0@example.com>: Recipient address rejected: User unknown".into(),
    );
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        worker: false,
        ..Options::default()
    })
    .await;
    seed(&app, &[("confirmed", 3)], "example.com").await;
    app.send_digest_now().await;
    let db = app.database.clone();
    let mut worker = helpers::spawn_squeeze(
        &["worker"],
        &db,
        &[
            ("SQUEEZE_SMTP_URL", smtp.url()),
            ("SQUEEZE_LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "squeeze=info".to_owned()),
        ],
    );
    smtp.wait_for(2, Duration::from_secs(10)).await;
    eventually(
        "the bounce is recorded",
        Duration::from_secs(10),
        || async {
            app.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'failed'")
                .await
                == 1
        },
    )
    .await;
    helpers::terminate(&worker);
    helpers::wait_exit(&mut worker, Duration::from_secs(10)).await;
    let log = std::fs::read_to_string(db.dir().join("squeeze.log")).expect("log");
    assert!(
        !log.contains("@example.com"),
        "an address in the logs:\n{log}"
    );
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failure = lines
        .iter()
        .find(|l| l["fields"]["message"] == "permanent failure")
        .unwrap_or_else(|| panic!("no permanent failure logged:\n{log}"));
    assert_eq!(failure["level"], "WARN");
    assert!(
        failure["span"]["delivery_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{failure}"
    );
    assert!(
        failure["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("<address>")),
        "{failure}"
    );
    app.stop().await;
}

/// Sessions live in the database: two `serve` processes on one database (behind a load
/// balancer) both know a session, and logging out on one ends it on the other.
#[tokio::test]
async fn a_dashboard_session_is_known_to_every_process_and_logout_ends_it_everywhere() {
    let one = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let two = TestApp::spawn_with(Options {
        worker: false,
        database: Some(one.database.clone()),
        ..Options::default()
    })
    .await;
    let login = one
        .http
        .post(format!("{}/admin/login", one.url))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("req");
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let dashboard = |app: &TestApp| {
        app.http
            .get(format!("{}/admin", app.url))
            .header("cookie", &cookie)
            .send()
    };
    let page = dashboard(&two).await.expect("req");
    assert_eq!(page.status(), StatusCode::OK, "the other process knows it");
    let html = page.text().await.expect("body");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token")
        .to_owned();
    let out = two
        .http
        .post(format!("{}/admin/logout", two.url))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("req");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        dashboard(&one).await.expect("req").status(),
        StatusCode::UNAUTHORIZED,
        "logout on one process ended it on the other"
    );
    assert_eq!(
        one.scalar("SELECT COUNT(*) FROM admin_sessions").await,
        0,
        "nothing of it is left"
    );
    two.stop().await;
    one.stop().await;
}
