//! Sign-up, double opt-in and one-click unsubscribe over real HTTP and a real SMTP server.

use std::time::Duration;

use crate::helpers::{self, Options, SmtpServer, TestApp, WAIT};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn sign_up_confirm_and_one_click_unsubscribe() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;

    let res = app
        .subscribe_json(json!({ "email": "Ada@Example.COM", "name": "Ada <b>L</b>" }))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    // Stored pending, domain lower-cased, with consent evidence.
    let s = app
        .app
        .store
        .subscriber_by_email("Ada@example.com")
        .await
        .expect("db")
        .expect("stored");
    assert_eq!(s.status.as_str(), "pending");
    assert_eq!(s.consent_ip.as_deref(), Some("127.0.0.1"));
    assert!(s.consent_at > 0);

    let mail = smtp.wait_for(1, WAIT).await.remove(0);
    assert_eq!(mail.rcpts, vec!["Ada@example.com"]);
    assert!(
        mail.header("Subject")
            .is_some_and(|s| s.contains("Confirm"))
    );
    let id = mail.header("Message-ID").expect("Message-ID");
    let delivery_id = app
        .text("SELECT id FROM deliveries WHERE kind = 'confirmation'")
        .await;
    assert_eq!(id, format!("<{delivery_id}@squeeze.test>"));
    assert!(mail.header("Date").is_some());
    assert!(
        mail.part("text/html")
            .is_some_and(|h| h.contains("Ada &lt;b&gt;L&lt;&#x2f;b&gt;"))
    );
    let link = mail
        .link(&format!("{}/confirm?token=", app.url))
        .expect("confirm link in text part");
    // Only the hash of the token is in the database.
    let token = link.split("token=").nth(1).expect("token");
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM confirmation_tokens WHERE token_hash LIKE '%{token}%'"
        ))
        .await,
        0
    );

    let page = app.confirm(&link).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("body").contains("confirmed"));
    assert_eq!(
        app.status_of("Ada@example.com").await.as_deref(),
        Some("confirmed")
    );

    // The same link again: the same friendly page, nothing changes.
    let again = app.confirm(&link).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert!(again.text().await.expect("body").contains("confirmed"));

    let unsub_token = app.text("SELECT unsubscribe_token FROM subscribers").await;
    let unsub_url = format!("{}/unsubscribe?token={unsub_token}", app.url);
    // GET shows a button and changes nothing (mail scanners follow links).
    let get = app.http.get(&unsub_url).send().await.expect("get");
    assert_eq!(get.status(), StatusCode::OK);
    assert!(get.text().await.expect("body").contains("<button"));
    assert_eq!(
        app.status_of("Ada@example.com").await.as_deref(),
        Some("confirmed")
    );

    // RFC 8058 one-click POST: 200, no redirect, idempotent.
    for _ in 0..2 {
        let post = app
            .http
            .post(&unsub_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .expect("post");
        assert_eq!(post.status(), StatusCode::OK);
        assert_eq!(
            app.status_of("Ada@example.com").await.as_deref(),
            Some("unsubscribed")
        );
    }

    // A replayed confirmation link must not re-enrol someone who left.
    let replay = app.confirm(&link).await;
    assert_eq!(replay.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.status_of("Ada@example.com").await.as_deref(),
        Some("unsubscribed")
    );
    assert_eq!(smtp.count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn one_click_unsubscribe_accepts_multipart_bodies() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    app.subscribe("grace@example.com").await;
    let token = app.text("SELECT unsubscribe_token FROM subscribers").await;
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--XyZ--\r\n";
    let res = app
        .http
        .post(format!("{}/unsubscribe?token={token}", app.url))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.status_of("grace@example.com").await.as_deref(),
        Some("unsubscribed")
    );
    app.stop().await;
}

#[tokio::test]
async fn forged_and_unknown_tokens_get_clear_pages_and_change_nothing() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    app.subscribe("linus@example.com").await;
    let unknown = "A".repeat(43);
    for (method, path, expected) in [
        ("GET", "/confirm".to_owned(), StatusCode::BAD_REQUEST),
        (
            "GET",
            "/confirm?token=not-a-token".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            format!("/confirm?token={unknown}"),
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/unsubscribe?token=%0d%0a".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            format!("/unsubscribe?token={unknown}"),
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            format!("/unsubscribe?token={unknown}"),
            StatusCode::NOT_FOUND,
        ),
        ("POST", "/unsubscribe".to_owned(), StatusCode::BAD_REQUEST),
    ] {
        let url = format!("{}{path}", app.url);
        let req = if method == "GET" {
            app.http.get(&url)
        } else {
            app.http.post(&url)
        };
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), expected, "{method} {path}");
        let body = res.text().await.expect("body");
        assert!(body.contains("<h1>"), "{method} {path} renders a page");
    }
    assert_eq!(
        app.status_of("linus@example.com").await.as_deref(),
        Some("pending")
    );
    app.stop().await;
}

#[tokio::test]
async fn expired_confirmation_link_offers_a_new_one_without_revealing_the_address() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    app.subscribe("hopper@example.com").await;
    let mail = smtp.wait_for(1, WAIT).await.remove(0);
    let link = mail
        .link(&format!("{}/confirm?token=", app.url))
        .expect("link");

    let pool = app.db().await;
    sqlx::query("UPDATE confirmation_tokens SET expires_at = 0")
        .execute(&pool)
        .await
        .expect("expire");
    pool.close().await;

    let res = app.http.get(&link).send().await.expect("confirm");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body = res.text().await.expect("body");
    assert!(body.contains("name=\"email\""), "offers a new link");
    assert!(!body.contains("hopper"), "does not reveal the address");
    // Same page as for a token that never existed.
    let unknown = app
        .http
        .get(format!("{}/confirm?token={}", app.url, "B".repeat(43)))
        .send()
        .await
        .expect("unknown");
    assert_eq!(unknown.text().await.expect("body"), body);
    assert_eq!(
        app.status_of("hopper@example.com").await.as_deref(),
        Some("pending")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_confirmation_link_stops_working_after_confirmation_ttl() {
    // Through the product only: the setting, the emails, the links. A token stored with no
    // expiry (or a fixed one) keeps the late link working and fails this test.
    let ttl = Duration::from_secs(3);
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        settings: vec![("confirmation_ttl".into(), "3s".into())],
        ..Options::default()
    })
    .await;
    app.subscribe("late@example.com").await;
    // Valid within the TTL: signed up, followed the link, confirmed.
    app.subscribe_confirmed(&smtp, "early@example.com").await;
    let late = smtp.wait_for(2, WAIT).await;
    let late = late
        .iter()
        .find(|m| m.rcpts.iter().any(|r| r == "late@example.com"))
        .and_then(|m| m.link(&format!("{}/confirm?token=", app.url)))
        .expect("confirm link");

    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    let res = app.confirm(&late).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "expired after the TTL");
    assert!(
        res.text().await.expect("body").contains("name=\"email\""),
        "offers a new link"
    );
    assert_eq!(
        app.status_of("late@example.com").await.as_deref(),
        Some("pending")
    );
    app.stop().await;
}

#[tokio::test]
async fn the_answer_is_identical_for_new_pending_and_confirmed_addresses() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    let first = app.subscribe("known@example.com").await;
    let (status, body) = (first.status(), first.text().await.expect("body"));
    let mail = smtp.wait_for(1, WAIT).await.remove(0);
    let pending = app.subscribe("known@example.com").await;
    assert_eq!(
        (pending.status(), pending.text().await.expect("body")),
        (status, body.clone())
    );
    let link = mail
        .link(&format!("{}/confirm?token=", app.url))
        .expect("link");
    app.confirm(&link).await;
    let confirmed = app.subscribe("known@example.com").await;
    assert_eq!(
        (confirmed.status(), confirmed.text().await.expect("body")),
        (status, body.clone())
    );
    let fresh = app.subscribe("fresh@example.com").await;
    assert_eq!(
        (fresh.status(), fresh.text().await.expect("body")),
        (status, body)
    );

    // Form posts get the same page for every state too.
    let mut pages = Vec::new();
    for email in ["known@example.com", "other@example.com"] {
        let res = app
            .http
            .post(format!("{}/subscribe", app.url))
            .form(&[("email", email)])
            .send()
            .await
            .expect("form");
        pages.push((res.status(), res.text().await.expect("body")));
    }
    assert_eq!(pages[0], pages[1]);
    assert_eq!(pages[0].0, StatusCode::ACCEPTED);

    // The pending address got one confirmation only (re-sends are limited to one per 10 min).
    smtp.wait_for(3, WAIT).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(smtp.to("known@example.com").len(), 1);
    assert_eq!(smtp.to("fresh@example.com").len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn malformed_and_hostile_addresses_are_refused_stored_nowhere_and_never_mailed() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    let long_local = format!("{}@example.com", "a".repeat(65));
    let long_total = format!("a@{}.com", vec!["b".repeat(60); 5].join("."));
    let hostile = [
        "",
        "plainaddress",
        "@example.com",
        "ada@",
        "ada@@example.com",
        "ada@example.com\r\nBcc: victim@example.org",
        "ada@example.com\nSubject: spam",
        "ada\r@example.com",
        "Ada Lovelace <ada@example.com>",
        "<ada@example.com>",
        "ada @example.com",
        "ada@exa mple.com",
        "\"ada\"@example.com",
        "ada@[127.0.0.1]",
        "ada@localhost",
        "ada..lovelace@example.com",
        ".ada@example.com",
        "ada@-example.com",
        "ada\u{0}@example.com",
        "ada\u{7}@example.com",
        "ada\u{85}@example.com",
        "adä@example.com",
        "ada@exämple.com",
        "ada(comment)@example.com",
        long_local.as_str(),
        long_total.as_str(),
    ];
    for email in hostile {
        let res = app.subscribe(email).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{email:?}");
        let body: serde_json::Value = res.json().await.expect("json error");
        assert_eq!(body["field"], "email", "{email:?}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("email address")
                    || e.contains("domain")
                    || e.contains("before the @")),
            "{email:?}: {body}"
        );

        let form = app
            .http
            .post(format!("{}/subscribe", app.url))
            .form(&[("email", email)])
            .send()
            .await
            .expect("form");
        assert_eq!(
            form.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "form {email:?}"
        );
        assert!(form.text().await.expect("body").contains("class=\"error\""));
    }
    // Names are checked too.
    let res = app
        .subscribe_json(json!({"email": "ok@example.com", "name": "x\r\nBcc: y@z.com"}))
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Bodies that are not a sign-up.
    let res = app
        .http
        .post(format!("{}/subscribe", app.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = app
        .http
        .post(format!("{}/subscribe", app.url))
        .header("content-type", "text/plain")
        .body("email=a@b.com")
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_eq!(app.scalar("SELECT COUNT(*) FROM subscribers").await, 0);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM deliveries").await, 0);
    // A valid sentinel proves the worker was running: it is the only message sent.
    app.subscribe("sentinel@example.com").await;
    smtp.wait_for(1, WAIT).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(smtp.count(), 1);
    assert_eq!(smtp.received()[0].rcpts, vec!["sentinel@example.com"]);
    app.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413_and_store_nothing() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    let big = json!({ "email": "big@example.com", "name": "x".repeat(20 * 1024) });
    let res = app.subscribe_json(big).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = res.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than"))
    );
    let form = app
        .http
        .post(format!("{}/subscribe", app.url))
        .form(&[
            ("email", "big@example.com"),
            ("name", &"y".repeat(17 * 1024)),
        ])
        .send()
        .await
        .expect("form");
    assert_eq!(form.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM subscribers").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn sign_ups_are_rate_limited_per_client_ip() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(helpers::Options {
        smtp_url: Some(smtp.url()),
        settings: vec![("subscribe_per_minute".into(), "3".into())],
        ..Default::default()
    })
    .await;
    for i in 0..3 {
        let res = app.subscribe(&format!("r{i}@example.com")).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    let res = app.subscribe("r9@example.com").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after));
    assert!(app.status_of("r9@example.com").await.is_none());
    app.stop().await;
}

#[tokio::test]
async fn sign_up_page_and_health_check() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    let page = app.http.get(&app.url).send().await.expect("index");
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.expect("body");
    assert!(html.contains("We respect your privacy and will never spam you."));
    assert!(html.contains("name=\"email\""));
    let health = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_sign_ups_each_get_their_answer_and_exactly_one_confirmation() {
    // On SQLite, sign-ups arriving together are written in one transaction: duplicates inside
    // one batch, and known addresses among new ones, must still behave one by one.
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    app.subscribe("known@example.com").await;
    smtp.wait_for(1, WAIT).await;
    let addresses: Vec<String> = (0..40).map(|i| format!("reader{i}@example.com")).collect();
    let mut requests = tokio::task::JoinSet::new();
    for email in addresses
        .iter()
        .chain(addresses.iter().take(20))
        .cloned()
        .chain(std::iter::repeat_n("known@example.com".to_owned(), 5))
    {
        let (http, url) = (app.http.clone(), app.url.clone());
        requests.spawn(async move {
            http.post(format!("{url}/subscribe"))
                .json(&json!({ "email": email }))
                .send()
                .await
                .expect("sign-up")
                .status()
        });
    }
    let mut answered = 0;
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.expect("request task"), StatusCode::ACCEPTED);
        answered += 1;
    }
    assert_eq!(answered, 65);
    smtp.wait_for(41, WAIT).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for a in addresses
        .iter()
        .map(String::as_str)
        .chain(["known@example.com"])
    {
        assert_eq!(smtp.to(a).len(), 1, "{a} gets exactly one confirmation");
        assert_eq!(app.status_of(a).await.as_deref(), Some("pending"), "{a}");
    }
    assert_eq!(app.scalar("SELECT COUNT(*) FROM subscribers").await, 41);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE kind = 'confirmation'")
            .await,
        41
    );
    app.stop().await;
}

/// A sign-up reaches the database file itself, not only SQLite's write-ahead log, within a
/// few seconds (the checkpoint runs every 200 ms), without waiting for 1,000 pages of WAL to make SQLite checkpoint: a
/// copy of the file alone holds it. (What lives only in the WAL is not on disk until synced.)
#[tokio::test]
async fn a_sign_up_reaches_the_sqlite_file_within_seconds() {
    use sqlx::Connection as _;
    if helpers::on_postgres() {
        println!("skipped: SQLite's write-ahead log only");
        return;
    }
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    assert_eq!(app.subscribe("durable@example.com").await.status(), 202);
    let file = app.database.dir().join("squeeze.db");
    let copy_dir = tempfile::tempdir().expect("tempdir");
    let copy = copy_dir.path().join("copy.db");
    let within = std::time::Duration::from_secs(3);
    helpers::eventually("the sign-up in the database file", within, || async {
        // A copy caught in the middle of a checkpoint may not open; try again.
        if std::fs::copy(&file, &copy).is_err() {
            return false;
        }
        let Ok(mut conn) =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?immutable=true", copy.display()))
                .await
        else {
            return false;
        };
        let found: Result<i64, _> = sqlx::query_scalar(
            "SELECT COUNT(*) FROM subscribers WHERE email = 'durable@example.com'",
        )
        .fetch_one(&mut conn)
        .await;
        conn.close().await.ok();
        found.is_ok_and(|n| n == 1)
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn get_and_head_of_a_confirmation_link_change_nothing_and_its_post_confirms() {
    // Mail filters (Safe Links, Mimecast) fetch every link of every message, some with HEAD:
    // neither may confirm an address someone else typed in.
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    app.subscribe("scanned@example.com").await;
    let mail = smtp.wait_for(1, WAIT).await.remove(0);
    let link = mail
        .link(&format!("{}/confirm?token=", app.url))
        .expect("confirm link");

    for _ in 0..2 {
        let page = app.http.get(&link).send().await.expect("GET");
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("body");
        assert!(
            html.contains("<form method=\"post\"")
                && html.contains("<button type=\"submit\">Confirm my subscription</button>"),
            "one button that posts: {html}"
        );
        let head = app.http.head(&link).send().await.expect("HEAD");
        assert_eq!(head.status(), StatusCode::OK);
    }
    assert_eq!(
        app.status_of("scanned@example.com").await.as_deref(),
        Some("pending"),
        "GET and HEAD changed nothing"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM confirmation_tokens WHERE used_at IS NOT NULL")
            .await,
        0,
        "the link is still unused"
    );
    // A digest now does not reach them.
    app.send_digest_now().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        smtp.to("scanned@example.com").len(),
        1,
        "only the confirmation"
    );

    // The button's POST confirms; pressed twice, the same page.
    for _ in 0..2 {
        let page = app.confirm(&link).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.text().await.expect("body").contains("You're in"));
        assert_eq!(
            app.status_of("scanned@example.com").await.as_deref(),
            Some("confirmed")
        );
    }
    // Once confirmed, the link's GET says so (and still changes nothing).
    let page = app.http.get(&link).send().await.expect("GET after");
    assert!(page.text().await.expect("body").contains("You're in"));
    // A repeat sign-up does not demote them.
    app.subscribe("scanned@example.com").await;
    assert_eq!(
        app.status_of("scanned@example.com").await.as_deref(),
        Some("confirmed"),
        "a repeat sign-up never demotes a confirmed subscriber"
    );
    app.send_digest_now().await;
    app.wait_all_sent(&smtp, 2).await;
    assert_eq!(
        smtp.to("scanned@example.com").len(),
        2,
        "the digest reached them"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_confirmation_button_confirms_in_headless_chromium() {
    if !crate::helpers::browser_available() {
        return;
    }
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    app.subscribe("clicker@example.com").await;
    let mail = smtp.wait_for(1, WAIT).await.remove(0);
    let link = mail
        .link(&format!("{}/confirm?token=", app.url))
        .expect("confirm link");
    let browse = |step: &'static str| {
        let link = link.clone();
        async move { crate::helpers::browser("confirm.mjs", &[link.as_str(), step]).await }
    };
    // Opening the link, as a reader (or a scanner with a real browser) does, confirms nothing.
    let seen = browse("look").await;
    assert_eq!(seen["heading"], "One last click", "{seen}");
    assert_eq!(seen["button"], "Confirm my subscription", "{seen}");
    assert_eq!(
        app.status_of("clicker@example.com").await.as_deref(),
        Some("pending")
    );
    // The click does, with the Origin and Sec-Fetch-Site a real browser sends.
    let seen = browse("click").await;
    assert_eq!(seen["heading"], "You're in", "{seen}");
    assert_eq!(
        app.status_of("clicker@example.com").await.as_deref(),
        Some("confirmed")
    );
    app.stop().await;
}

#[tokio::test]
async fn three_casings_of_one_address_are_one_subscriber_with_one_confirmation() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    for email in [
        "Mixed@EXAMPLE.COM",
        "mixed@example.com",
        "MIXED@example.com",
    ] {
        let res = app.subscribe(email).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED, "{email}");
    }
    let mail = smtp.wait_for(1, WAIT).await.remove(0);
    assert_eq!(
        mail.rcpts,
        vec!["Mixed@example.com"],
        "the address as first given"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.count(), 1, "one confirmation");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM subscribers").await, 1);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE kind = 'confirmation'")
            .await,
        1
    );
    // Every lookup goes through the same key: the store, an import, the admin API.
    let s = app
        .app
        .store
        .subscriber_by_email("mIxEd@Example.Com")
        .await
        .expect("db")
        .expect("found whatever the case");
    assert_eq!(s.email.as_str(), "Mixed@example.com");
    let report = app
        .app
        .subscribers()
        .import_csv(
            "email\nMIXED@EXAMPLE.COM\n".as_bytes(),
            true,
            "import of test.csv",
            squeeze::domain::clock::now_ms(),
            &|| false,
        )
        .await
        .expect("import");
    assert_eq!((report.added, report.unchanged), (0, 1));
    assert_eq!(app.scalar("SELECT COUNT(*) FROM subscribers").await, 1);
    let res = app
        .admin(
            reqwest::Method::DELETE,
            "/api/subscribers/MIXED@example.COM",
        )
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM subscribers").await, 0);
    app.stop().await;
}

/// On PostgreSQL every node's idle workers hear of a confirmation to send: a NOTIFY, sent once
/// the sign-up has committed (`Store::work_queued`), reaches a listener like another node's
/// worker.
#[tokio::test]
async fn a_sign_up_is_announced_to_the_workers_of_every_node_after_it_commits() {
    if !helpers::on_postgres() {
        println!("skipped on SQLite: one process, its workers are woken in-process");
        return;
    }
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let mut other_node = sqlx::postgres::PgListener::connect(app.database.url())
        .await
        .expect("listen");
    other_node
        .listen(squeeze::store::WORK_CHANNEL)
        .await
        .expect("listen");
    app.subscribe("reader@example.com").await;
    let heard = tokio::time::timeout(WAIT, other_node.recv())
        .await
        .expect("no NOTIFY reached the other node within the wait")
        .expect("notification");
    assert_eq!(heard.channel(), squeeze::store::WORK_CHANNEL);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM delivery_queue").await,
        1,
        "announced with its confirmation queued"
    );
    app.stop().await;
}
