//! The editors' half: items, digests, preview, scheduling and fan-out, with an injected clock
//! for the scheduler and a real SMTP server counting what arrives.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::helpers::{self, Options, SmtpServer, TEMPLATES, TestApp, WAIT, at, eventually};
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use squeeze::domain::DailySchedule;

async fn seed(app: &TestApp, groups: &[(&str, usize)]) -> Vec<String> {
    helpers::seed(app, groups, "example.com").await
}

fn smtp_opts(smtp: &SmtpServer) -> Options {
    Options {
        smtp_url: Some(smtp.url()),
        ..Options::default()
    }
}

#[tokio::test]
async fn admin_api_requires_the_token_and_is_closed_without_one() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    let url = format!("{}/api/items", app.url);
    let missing = app.http.get(&url).send().await.expect("req");
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert!(
        missing.json::<Value>().await.expect("json")["error"]
            .as_str()
            .is_some_and(|e| e.contains("Bearer"))
    );
    let wrong = app
        .http
        .get(&url)
        .bearer_auth("test-admin-token-0123456780")
        .send()
        .await
        .expect("req");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = app
        .admin(Method::GET, "/api/items")
        .send()
        .await
        .expect("req");
    assert_eq!(right.status(), StatusCode::OK);
    app.stop().await;

    // No token configured: never open by default.
    let closed = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        settings: vec![("admin_token".into(), String::new())],
        ..Options::default()
    })
    .await;
    let res = closed
        .admin(Method::GET, "/api/items")
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("SQUEEZE_ADMIN_TOKEN")),
        "{body}"
    );
    closed.stop().await;
}

#[tokio::test]
async fn items_are_validated_listed_and_deleted() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    for (body, field) in [
        (json!({"title": "x", "url": "javascript:alert(1)"}), "url"),
        (json!({"title": "x", "url": "ftp://example.com/f"}), "url"),
        (json!({"title": "", "url": "https://example.com"}), "title"),
        (
            json!({"title": "a\r\nBcc: x@y.z", "url": "https://example.com"}),
            "title",
        ),
        (
            json!({"title": "x".repeat(201), "url": "https://example.com"}),
            "title",
        ),
        (
            json!({"title": "x", "url": "https://example.com", "summary": "s".repeat(2001)}),
            "summary",
        ),
    ] {
        let (status, err) = app.post_json("/api/items", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(err["field"], field, "{body}: {err}");
    }
    let (status, _) = app
        .post_json("/api/items", json!({"url": "https://e.com"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "missing title");

    let a = app.add_item("A").await;
    let b = app.add_item("B").await;
    let (_, list) = app.get_json("/api/items?status=pending").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(app.delete_item(&a).await, StatusCode::NO_CONTENT);
    assert_eq!(app.delete_item(&a).await, StatusCode::NOT_FOUND);
    // An item in a digest stays.
    app.create_digest(json!([b])).await;
    assert_eq!(app.delete_item(&b).await, StatusCode::CONFLICT);
    app.stop().await;
}

#[tokio::test]
async fn preview_renders_what_a_subscriber_receives_with_editor_html_escaped() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    app.add_item("Rust <script>alert(1)</script> released")
        .await;
    let id = app.create_digest(json!("pending")).await;
    let html = app
        .admin(
            Method::GET,
            &format!("/api/digests/{id}/preview?format=html"),
        )
        .send()
        .await
        .expect("req");
    assert_eq!(html.status(), StatusCode::OK);
    assert!(
        html.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/html"))
    );
    let html = html.text().await.expect("body");
    assert!(html.contains("Rust &lt;script&gt;alert(1)&lt;&#x2f;script&gt; released"));
    assert!(!html.contains("<script>"));
    assert!(html.contains("Sample Subscriber"));
    assert!(html.contains("Unsubscribe"));
    let text = app
        .admin(
            Method::GET,
            &format!("/api/digests/{id}/preview?format=text"),
        )
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("body");
    assert!(text.contains("Rust <script>alert(1)</script> released"));
    assert!(text.contains("https://example.com/news?a=1&b=2"));
    assert!(text.contains("/unsubscribe?token="));
    let res = app
        .admin(Method::GET, "/api/digests/nope/preview")
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn a_broken_template_is_caught_at_preview_and_schedule() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(TEMPLATES).expect("templates").flatten() {
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    // Valid syntax, but a variable that does not exist: only rendering finds it.
    std::fs::write(
        dir.path().join("digest.txt.j2"),
        "Hello\n{{ subscriber.first_name }}\n",
    )
    .expect("write");
    let app = TestApp::spawn_with(Options {
        settings: vec![("templates".into(), dir.path().display().to_string())],
        ..smtp_opts(&smtp)
    })
    .await;
    app.add_item("Item").await;
    let id = app.create_digest(json!("pending")).await;
    let (status, err) = app
        .get_json(&format!("/api/digests/{id}/preview?format=text"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let msg = err["error"].as_str().expect("message");
    assert!(
        msg.contains("digest.txt.j2") && msg.contains("line 2") && msg.contains("undefined"),
        "{msg}"
    );
    let (status, err) = app.schedule_now(&id).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["field"], "template");
    let (_, d) = app.digest(&id).await;
    assert_eq!(d["status"], "draft", "nothing was scheduled");
    app.stop().await;
}

#[tokio::test]
async fn fan_out_reaches_exactly_the_confirmed_subscribers_once_with_list_headers() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        settings: vec![
            ("concurrency".into(), "8".into()),
            ("unsubscribe_mailto".into(), "leave@squeeze.test".into()),
        ],
        ..smtp_opts(&smtp)
    })
    .await;
    let confirmed = seed(
        &app,
        &[
            ("confirmed", 700),
            ("pending", 150),
            ("unsubscribed", 150),
            ("bounced", 100),
        ],
    )
    .await;
    app.add_item("One").await;
    app.add_item("Two").await;
    let id = app.create_digest(json!("pending")).await;
    let (status, body) = app.schedule_now(&id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "scheduled");

    // A scheduler that fires twice (two nodes, one tick each) and a digest scheduled twice.
    let now = Utc::now() + chrono::Duration::seconds(1);
    let (s1, s2) = (app.app.scheduler(), app.app.scheduler());
    let (a, b) = tokio::join!(s1.tick(now), s2.tick(now));
    let fanned: Vec<_> = a
        .expect("tick")
        .fanned_out
        .into_iter()
        .chain(b.expect("tick").fanned_out)
        .collect();
    assert_eq!(fanned, vec![(id.clone(), 700)]);
    let (status, _) = app.schedule_now(&id).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a sending digest cannot be scheduled again"
    );
    assert_eq!(
        app.app
            .store
            .fan_out(&id, i64::MAX, Utc::now().timestamp_millis(), 5000)
            .await
            .expect("fan out"),
        None
    );

    smtp.wait_for(700, Duration::from_secs(60)).await;
    app.tick_until_sent(&id, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = smtp.received();
    assert_eq!(received.len(), 700, "one copy each, nothing more");
    let mut per_rcpt: HashMap<String, usize> = HashMap::new();
    for m in &received {
        for r in &m.rcpts {
            *per_rcpt.entry(r.clone()).or_default() += 1;
        }
    }
    assert_eq!(per_rcpt.len(), 700);
    assert!(confirmed.iter().all(|e| per_rcpt.get(e) == Some(&1)));
    // Derived from the delivery ids, which the fan-out numbers itself.
    let message_ids: HashSet<String> = received
        .iter()
        .filter_map(|m| m.header("Message-ID"))
        .collect();
    assert_eq!(message_ids.len(), 700, "each email has its own Message-ID");

    let m = &smtp.to("confirmed7@example.com")[0];
    assert_eq!(
        m.header("Subject").as_deref(),
        Some("Freshly squeezed: Monday")
    );
    assert!(
        m.header("List-Id")
            .is_some_and(|v| v.contains("<news.squeeze.test>"))
    );
    assert_eq!(
        m.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let lu = m.header("List-Unsubscribe").expect("List-Unsubscribe");
    assert!(
        lu.contains(&format!("<{}/unsubscribe?token=", app.url))
            && lu.contains("<mailto:leave@squeeze.test?subject=unsubscribe>"),
        "{lu}"
    );
    assert!(m.header("Message-ID").is_some() && m.header("Date").is_some());
    assert_eq!(m.parsed().ctype.mimetype, "multipart/alternative");
    let (text, html) = (m.text(), m.part("text/html").expect("html part"));
    assert!(text.contains("Hi Reader 7,") && html.contains("Hi Reader 7,"));
    assert!(text.contains("/unsubscribe?token=") && html.contains("unsubscribe?token="));
    assert!(text.contains("One") && text.contains("Two"));
    app.stop().await;
}

/// Real newsletters are rarely plain ASCII: a dash, curly quotes, an accented name, an emoji.
/// Such a digest goes as 8-bit text where the relay offers 8BITMIME (declared in MAIL FROM,
/// RFC 6152), encoded where it does not, and reads the same either way.
#[tokio::test]
async fn a_digest_that_is_not_ascii_arrives_intact_as_8bit_or_encoded_as_the_relay_allows() {
    const TITLE: &str = "Rust 2.0 — “what’s new” 🍊";
    const SUMMARY: &str = "Grüße aus Köln: ½ the build time, naïve code still compiles.";
    for offers_8bitmime in [true, false] {
        let smtp = SmtpServer::start().await;
        smtp.faults().no_8bitmime = !offers_8bitmime;
        let app = TestApp::spawn_with(Options {
            settings: vec![("concurrency".into(), "2".into())],
            ..smtp_opts(&smtp)
        })
        .await;
        let confirmed = seed(&app, &[("confirmed", 12)]).await;
        app.exec("UPDATE subscribers SET name = 'Zoë Ünal' WHERE email = 'confirmed3@example.com'")
            .await;
        let (status, body) = app.post_json("/api/items", json!({ "title": TITLE, "url": "https://example.com/rust?a=1&b=2", "summary": SUMMARY })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = app
            .post_json(
                "/api/digests",
                json!({ "subject": "Montag — die Woche 🍊", "items": "pending" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().expect("id").to_owned();
        let (status, body) = app.schedule_now(&id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        app.app
            .scheduler()
            .tick(Utc::now() + chrono::Duration::seconds(1))
            .await
            .expect("tick");
        smtp.wait_for(confirmed.len(), WAIT).await;

        let received = smtp.received();
        for m in &received {
            let (text, html) = (m.text(), m.part("text/html").expect("html part"));
            assert_eq!(
                m.header("Subject").as_deref(),
                Some("Montag — die Woche 🍊")
            );
            for body in [&text, &html] {
                assert!(
                    body.contains(TITLE) && body.contains(SUMMARY),
                    "8BITMIME {offers_8bitmime}: {body}"
                );
            }
            let eight_bit = !m.data.is_ascii();
            assert_eq!(
                eight_bit,
                m.mail_params.eq_ignore_ascii_case("BODY=8BITMIME"),
                "8-bit content is declared, and only 8-bit content: {:?}",
                m.mail_params
            );
            let part_encodings: Vec<String> = m
                .parsed()
                .subparts
                .iter()
                .filter_map(|p| {
                    p.headers
                        .iter()
                        .find(|h| {
                            h.get_key_ref()
                                .eq_ignore_ascii_case("Content-Transfer-Encoding")
                        })
                        .map(|h| h.get_value())
                })
                .collect();
            assert_eq!(
                part_encodings.iter().all(|e| e == "8bit"),
                eight_bit,
                "{part_encodings:?}"
            );
        }
        let zoe = &smtp.to("confirmed3@example.com")[0];
        assert!(zoe.text().contains("Hi Zoë Ünal,"), "{}", zoe.text());
        let as_8bit = received.iter().filter(|m| !m.data.is_ascii()).count();
        if offers_8bitmime {
            // Built before this worker had talked to the relay, the first message of each
            // connection is encoded; from then on the worker knows the relay takes 8-bit.
            assert!(
                as_8bit >= confirmed.len() - 2,
                "{as_8bit} of {} as 8bit",
                confirmed.len()
            );
        } else {
            assert_eq!(as_8bit, 0, "a relay without 8BITMIME gets 7-bit data only");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn unsubscribing_between_fan_out_and_send_is_honoured() {
    let smtp = SmtpServer::start().await;
    let db = helpers::TestDb::new().await;
    let web = TestApp::spawn_with(Options {
        worker: false,
        database: Some(db.clone()),
        ..smtp_opts(&smtp)
    })
    .await;
    seed(&web, &[("confirmed", 20)]).await;
    web.add_item("News").await;
    let id = web.create_digest(json!("pending")).await;
    web.schedule_now(&id).await;
    web.app
        .scheduler()
        .tick(Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("tick");
    // One leaves through the one-click endpoint, one is changed behind the store's back (as
    // if the unsubscribe landed between claim and send): the worker's re-check catches it.
    let token = web
        .text("SELECT unsubscribe_token FROM subscribers WHERE email = 'confirmed3@example.com'")
        .await;
    let res = web
        .http
        .post(format!("{}/unsubscribe?token={token}", web.url))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::OK);
    web.exec(
        "UPDATE subscribers SET status = 'unsubscribed' WHERE email = 'confirmed5@example.com'",
    )
    .await;
    web.stop().await;

    let worker = TestApp::spawn_with(Options {
        database: Some(db),
        ..smtp_opts(&smtp)
    })
    .await;
    smtp.wait_for(18, WAIT).await;
    eventually("all deliveries final", WAIT, || async {
        worker.scalar("SELECT COUNT(*) FROM deliveries WHERE kind = 'digest' AND status IN ('queued', 'sending')").await == 0
    })
    .await;
    assert!(smtp.to("confirmed3@example.com").is_empty());
    assert!(smtp.to("confirmed5@example.com").is_empty());
    assert_eq!(
        worker
            .scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'suppressed'")
            .await,
        2
    );
    assert_eq!(smtp.count(), 18);
    worker.stop().await;
}

#[tokio::test]
async fn the_list_unsubscribe_url_of_a_received_digest_unsubscribes_with_one_post() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    seed(&app, &[("confirmed", 2)]).await;
    app.add_item("News").await;
    let id = app.create_digest(json!("pending")).await;
    app.schedule_now(&id).await;
    app.app
        .scheduler()
        .tick(Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("tick");
    let mail = smtp
        .wait_for(2, WAIT)
        .await
        .into_iter()
        .find(|m| m.rcpts == ["confirmed1@example.com"])
        .expect("mail");
    let header = mail.header("List-Unsubscribe").expect("header");
    let url = header
        .trim_start_matches('<')
        .split('>')
        .next()
        .expect("url")
        .to_owned();
    let res = app
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("one-click");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.status_of("confirmed1@example.com").await.as_deref(),
        Some("unsubscribed")
    );
    assert_eq!(
        app.status_of("confirmed0@example.com").await.as_deref(),
        Some("confirmed")
    );
    app.stop().await;
}

#[tokio::test]
async fn cancel_before_sending_returns_items_and_after_keeps_them() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..smtp_opts(&smtp)
    })
    .await;
    seed(&app, &[("confirmed", 1)]).await;
    app.add_item("News").await;
    let id = app.create_digest(json!("pending")).await;
    let (status, d) = app.cancel(&id).await;
    assert_eq!(
        (status, d["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM items WHERE status = 'pending'")
            .await,
        1
    );
    let again = app.create_digest(json!("pending")).await;
    app.schedule_now(&again).await;
    app.app
        .scheduler()
        .tick(Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("tick");
    // Once it went out, a cancel stops it and keeps its items (its archive and stats show
    // them); a second cancel changes nothing.
    for _ in 0..2 {
        let (status, d) = app.cancel(&again).await;
        assert_eq!(
            (status, d["status"].as_str()),
            (StatusCode::OK, Some("cancelled")),
            "{d}"
        );
    }
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM items WHERE status = 'used' AND digest_id = '{again}'"
        ))
        .await,
        1
    );
    let (status, _) = app.schedule(&again, "2001-01-01T00:00:00Z").await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a time in the past"
    );
    app.stop().await;
}

#[tokio::test]
async fn daily_schedule_fires_once_per_local_day_across_dst_and_records_empty_days() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..smtp_opts(&smtp)
    })
    .await;
    seed(&app, &[("confirmed", 3)]).await;
    let editor = app.app.editor();
    let scheduler = app.app.scheduler();
    let madrid = DailySchedule::parse("07:00", "Europe/Madrid", true).expect("schedule");
    // Set on Saturday 28 March 2026 at 09:00 Madrid time: today's 07:00 has passed and must
    // not fire at once.
    editor
        .set_schedule(&madrid, at("2026-03-28T08:00:00Z"))
        .await
        .expect("set");
    assert_eq!(
        scheduler
            .tick(at("2026-03-28T08:00:01Z"))
            .await
            .expect("tick")
            .daily_created,
        None
    );

    // Sunday 29 March: clocks go forward at 02:00; 07:00 local is now 05:00 UTC.
    app.add_item("Sunday news").await;
    assert_eq!(
        scheduler
            .tick(at("2026-03-29T04:59:00Z"))
            .await
            .expect("tick")
            .daily_created,
        None
    );
    let r = scheduler
        .tick(at("2026-03-29T05:00:00Z"))
        .await
        .expect("tick");
    assert_eq!(r.daily_created.as_deref(), Some("2026-03-29"));
    assert_eq!(
        r.fanned_out.len(),
        1,
        "the daily digest is due at once and fans out"
    );
    assert_eq!(r.fanned_out[0].1, 3);
    // Later ticks the same day do nothing more.
    let r = scheduler
        .tick(at("2026-03-29T09:00:00Z"))
        .await
        .expect("tick");
    assert_eq!((r.daily_created, r.fanned_out.len()), (None, 0));
    let send_at = app
        .scalar("SELECT send_at FROM digests WHERE daily_date = '2026-03-29'")
        .await;
    assert_eq!(send_at, at("2026-03-29T05:00:00Z").timestamp_millis());
    // Its subject is the date: the From name ("Squeeze Test") already says which list.
    assert_eq!(
        app.text("SELECT subject FROM digests WHERE daily_date = '2026-03-29'")
            .await,
        "Sunday 29 March 2026"
    );
    // Deliveries expire when the next daily digest is due.
    let expires = app
        .scalar("SELECT MAX(expires_at) FROM deliveries WHERE kind = 'digest'")
        .await;
    assert_eq!(expires, at("2026-03-30T05:00:00Z").timestamp_millis());

    // Monday: no pending items, so nothing is sent and the reason is recorded.
    let r = scheduler
        .tick(at("2026-03-30T05:00:30Z"))
        .await
        .expect("tick");
    assert_eq!(r.daily_created, None);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM digests").await, 1);
    let reason = app
        .text("SELECT message FROM events WHERE kind = 'daily_empty'")
        .await;
    assert!(
        reason.contains("2026-03-30") && reason.contains("no pending items"),
        "{reason}"
    );
    app.stop().await;
}

#[tokio::test]
async fn missed_schedules_are_sent_within_the_grace_window_and_marked_missed_after_it() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..smtp_opts(&smtp)
    })
    .await;
    seed(&app, &[("confirmed", 2)]).await;
    let scheduler = app.app.scheduler();
    app.add_item("Late but fine").await;
    let late = app.create_digest(json!("pending")).await;
    app.schedule_now(&late).await;
    app.add_item("Too late").await;
    let too_late = app.create_digest(json!("pending")).await;
    app.schedule_now(&too_late).await;
    let now = Utc::now();
    // The process was down: the first digest's tick comes 5 h late (grace is 6 h) ...
    app.exec(&format!(
        "UPDATE digests SET send_at = {} WHERE id = '{late}'",
        (now - chrono::Duration::hours(5)).timestamp_millis()
    ))
    .await;
    // ... the second's 7 h late.
    app.exec(&format!(
        "UPDATE digests SET send_at = {} WHERE id = '{too_late}'",
        (now - chrono::Duration::hours(7)).timestamp_millis()
    ))
    .await;
    let r = scheduler.tick(now).await.expect("tick");
    assert_eq!(r.fanned_out, vec![(late.clone(), 2)]);
    assert_eq!(r.missed, vec![too_late.clone()]);
    let (_, d) = app.digest(&too_late).await;
    assert_eq!(d["status"], "missed");
    assert!(
        d["note"].as_str().is_some_and(|n| n.contains("grace")),
        "{d}"
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{too_late}'"
        ))
        .await,
        0
    );

    // A daily schedule whose day passed beyond the grace window is not caught up either.
    let daily = DailySchedule::parse("07:00", "UTC", true).expect("schedule");
    app.app
        .editor()
        .set_schedule(&daily, at("2026-06-01T06:00:00Z"))
        .await
        .expect("set");
    app.add_item("For the daily").await;
    let r = scheduler
        .tick(at("2026-06-01T14:00:00Z"))
        .await
        .expect("tick");
    assert_eq!(r.daily_created, None);
    assert!(
        app.text("SELECT message FROM events WHERE kind = 'daily_missed'")
            .await
            .contains("2026-06-01")
    );
    // Days later, only the latest day is considered: one digest, never a backlog.
    let r = scheduler
        .tick(at("2026-06-05T08:00:00Z"))
        .await
        .expect("tick");
    assert_eq!(r.daily_created.as_deref(), Some("2026-06-05"));
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM digests WHERE daily_date IS NOT NULL")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn schedule_api_and_subscriber_listing() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    assert_eq!(app.daily_schedule().await.0, StatusCode::NOT_FOUND);
    let (status, err) = app
        .set_daily_schedule(json!({"time": "7am", "timezone": "Europe/Madrid"}))
        .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("time"))
    );
    let (status, err) = app
        .set_daily_schedule(json!({"time": "07:00", "timezone": "Europe/Madird"}))
        .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("timezone"))
    );
    let (status, s) = app
        .set_daily_schedule(json!({"time": "07:00", "timezone": "Europe/Madrid", "enabled": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(
        (
            s["time"].as_str(),
            s["timezone"].as_str(),
            s["enabled"].as_bool()
        ),
        (Some("07:00"), Some("Europe/Madrid"), Some(true))
    );
    assert!(s["next_run"].as_str().is_some());
    let (_, got) = app.daily_schedule().await;
    assert_eq!(got["time"], "07:00");

    seed(&app, &[("confirmed", 5), ("pending", 3)]).await;
    let (_, page1) = app.subscribers("status=confirmed&limit=3").await;
    assert_eq!(page1["subscribers"].as_array().map(Vec::len), Some(3));
    let after = page1["next_after"].as_str().expect("cursor");
    let (_, page2) = app
        .subscribers(&format!("status=confirmed&limit=3&after={after}"))
        .await;
    assert_eq!(page2["subscribers"].as_array().map(Vec::len), Some(2));
    assert!(page2["next_after"].is_null());
    let statuses: Vec<_> = page2["subscribers"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["status"].as_str().unwrap_or(""))
        .collect();
    assert!(statuses.iter().all(|s| *s == "confirmed"));
    let (status, _) = app.subscribers("status=vip").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}
