//! Each subscriber's morning (issue 22, points 3-5): a digest delivered at the schedule's time
//! in every subscriber's own zone, one wave per zone. The scheduler's clock is driven with
//! explicit instants (no sleeps); the queue is probed with the same clock, so a delivery is
//! seen to become claimable exactly at its due time and not a second before; the real worker
//! then sends what was claimed, through the SMTP test server, once per subscriber.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use squeeze::domain::DailySchedule;
use squeeze::domain::DeliverAt;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Options, SmtpServer, TestApp, at, page_get, studio_login};

/// A browser logged in to the dashboard, and a page of it.
async fn dashboard_page(app: &TestApp, path: &str) -> (reqwest::Client, String) {
    let (http, _) = studio_login(app).await;
    let html = page_get(&http, app, path).await.1;
    (http, html)
}

/// A probe that claims like a worker with the test's clock. Its lease outlives the test, so
/// its claims are never taken back while it probes; the real worker takes them over (the
/// probe has no heartbeat) and sends them.
const PROBE: &str = "clock-probe";
const LEASE: Duration = Duration::from_secs(3600 * 24 * 365 * 2);

/// The readers and their zones: one per zone the issue names, one without a zone (the
/// list's: Europe/Madrid) and one who moves from Kolkata to Kiritimati after the fan-out.
const READERS: [(&str, Option<&str>); 7] = [
    ("kiritimati@example.com", Some("Pacific/Kiritimati")),
    ("chatham@example.com", Some("Pacific/Chatham")),
    ("kolkata@example.com", Some("Asia/Kolkata")),
    ("mover@example.com", Some("Asia/Kolkata")),
    ("madrid@example.com", Some("Europe/Madrid")),
    ("nozone@example.com", None),
    ("la@example.com", Some("America/Los_Angeles")),
];

async fn seed_readers(app: &TestApp, readers: &[(&str, Option<&str>)]) {
    let pool = app.db().await;
    for (email, zone) in readers {
        sqlx::query(
            "INSERT INTO subscribers (id, email, name, status, unsubscribe_token, consent_at,
                 created_at, updated_at, timezone)
             VALUES ($1, $2, 'Reader', 'confirmed', $3, 0, 0, 0, $4)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(*email)
        .bind(squeeze::domain::Token::generate().as_str())
        .bind(*zone)
        .execute(&pool)
        .await
        .expect("seed");
    }
    pool.close().await;
}

/// Who the probe can claim at `now`.
async fn claimable(app: &TestApp, now: DateTime<Utc>) -> BTreeSet<String> {
    app.app
        .store
        .claim(PROBE, now.timestamp_millis(), LEASE, 100)
        .await
        .expect("claim")
        .into_iter()
        .map(|d| d.email)
        .collect()
}

fn set(emails: &[&str]) -> BTreeSet<String> {
    emails.iter().map(|e| (*e).to_owned()).collect()
}

/// One day of the daily schedule at 07:00 delivered at each subscriber's time: before each
/// wave's instant nobody of it can be claimed, at it exactly its readers can. `waves` is
/// (zone, due instant in UTC, readers), earliest first. Returns the day's digest id.
async fn walk_day(app: &TestApp, date: &str, waves: &[(&str, &str, &[&str])]) -> String {
    let scheduler = app.app.scheduler();
    let first = at(waves[0].1);
    app.add_item(&format!("News of {date}")).await;
    let before = scheduler
        .tick(first - chrono::Duration::seconds(1))
        .await
        .expect("tick");
    assert_eq!(
        before.daily_created, None,
        "{date}: not before the first wave"
    );
    let mut digest = None;
    for (i, (zone, due, readers)) in waves.iter().enumerate() {
        let due = at(due);
        let r = scheduler
            .tick(due - chrono::Duration::seconds(1))
            .await
            .expect("tick");
        assert!(
            r.waves_opened.is_empty(),
            "{date} {zone}: opened early: {r:?}"
        );
        assert_eq!(
            claimable(app, due - chrono::Duration::seconds(1)).await,
            BTreeSet::new(),
            "{date}: nobody of the {zone} wave a second before {due}"
        );
        let r = scheduler.tick(due).await.expect("tick");
        if i == 0 {
            assert_eq!(r.daily_created.as_deref(), Some(date), "{date}: {r:?}");
            assert_eq!(r.fanned_out.len(), 1, "{date}: one digest, fanned out once");
            assert_eq!(r.fanned_out[0].1, READERS.len() as u64);
            digest = Some(r.fanned_out[0].0.clone());
            // After the fan-out the mover changes zone: their delivery keeps its time.
            app.exec("UPDATE subscribers SET timezone = 'Pacific/Kiritimati' WHERE email = 'mover@example.com'")
                .await;
        }
        assert_eq!(
            r.waves_opened
                .iter()
                .map(|(_, z, n)| (z.as_str(), *n))
                .collect::<Vec<_>>(),
            [(*zone, readers.len() as u64)],
            "{date}: the {zone} wave opens at {due}"
        );
        assert_eq!(
            claimable(app, due).await,
            set(readers),
            "{date}: the {zone} wave is claimable at {due}"
        );
    }
    let id = digest.expect("digest");
    // A second scheduler firing the same day fans out nothing more.
    let last = at(waves[waves.len() - 1].1);
    let again = scheduler
        .tick(last + chrono::Duration::hours(1))
        .await
        .expect("tick");
    assert_eq!(
        (
            again.daily_created,
            again.fanned_out.len(),
            again.waves_opened.len()
        ),
        (None, 0, 0)
    );
    app.exec("UPDATE subscribers SET timezone = 'Asia/Kolkata' WHERE email = 'mover@example.com'")
        .await;
    id
}

#[tokio::test]
async fn a_day_of_waves_reaches_each_reader_at_their_own_seven_across_the_clock_changes() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        worker: false,
        ..Options::default()
    })
    .await;
    seed_readers(&app, &READERS).await;
    let editor = app.app.editor();
    let schedule = DailySchedule::parse("07:00", "Europe/Madrid", true)
        .expect("schedule")
        .with_deliver_at(DeliverAt::Subscriber);

    let kiritimati: &[&str] = &["kiritimati@example.com"];
    let chatham: &[&str] = &["chatham@example.com"];
    let kolkata: &[&str] = &["kolkata@example.com", "mover@example.com"];
    let madrid: &[&str] = &["madrid@example.com", "nozone@example.com"];
    let la: &[&str] = &["la@example.com"];
    #[allow(clippy::type_complexity)]
    let days: [(&str, &str, [(&str, &str, &[&str]); 5]); 4] = [
        // The US springs forward at 02:00 that Sunday: Los Angeles' 07:00 is PDT.
        (
            "2027-03-14",
            "2027-03-13T16:00:00Z",
            [
                ("Pacific/Kiritimati", "2027-03-13T17:00:00Z", kiritimati), // UTC+14
                ("Pacific/Chatham", "2027-03-13T17:15:00Z", chatham),       // +13:45 summer
                ("Asia/Kolkata", "2027-03-14T01:30:00Z", kolkata),          // +05:30
                ("Europe/Madrid", "2027-03-14T06:00:00Z", madrid),          // CET
                ("America/Los_Angeles", "2027-03-14T14:00:00Z", la),        // PDT
            ],
        ),
        // Europe springs forward at 01:00 UTC that Sunday: Madrid's 07:00 is CEST.
        (
            "2027-03-28",
            "2027-03-27T16:00:00Z",
            [
                ("Pacific/Kiritimati", "2027-03-27T17:00:00Z", kiritimati),
                ("Pacific/Chatham", "2027-03-27T17:15:00Z", chatham),
                ("Asia/Kolkata", "2027-03-28T01:30:00Z", kolkata),
                ("Europe/Madrid", "2027-03-28T05:00:00Z", madrid), // CEST
                ("America/Los_Angeles", "2027-03-28T14:00:00Z", la),
            ],
        ),
        // Europe falls back that Sunday: Madrid's 07:00 is CET again.
        (
            "2027-10-31",
            "2027-10-30T16:00:00Z",
            [
                ("Pacific/Kiritimati", "2027-10-30T17:00:00Z", kiritimati),
                ("Pacific/Chatham", "2027-10-30T17:15:00Z", chatham),
                ("Asia/Kolkata", "2027-10-31T01:30:00Z", kolkata),
                ("Europe/Madrid", "2027-10-31T06:00:00Z", madrid), // CET
                ("America/Los_Angeles", "2027-10-31T14:00:00Z", la), // still PDT
            ],
        ),
        // The US falls back at 02:00 that Sunday: Los Angeles' 07:00 is PST.
        (
            "2027-11-07",
            "2027-11-06T16:00:00Z",
            [
                ("Pacific/Kiritimati", "2027-11-06T17:00:00Z", kiritimati),
                ("Pacific/Chatham", "2027-11-06T17:15:00Z", chatham),
                ("Asia/Kolkata", "2027-11-07T01:30:00Z", kolkata),
                ("Europe/Madrid", "2027-11-07T06:00:00Z", madrid),
                ("America/Los_Angeles", "2027-11-07T15:00:00Z", la), // PST
            ],
        ),
    ];
    let mut digests = Vec::new();
    for (date, set_at, waves) in &days {
        // Set the evening before, so the previous days are handled and not sent.
        editor
            .set_schedule(&schedule, at(set_at))
            .await
            .expect("set");
        digests.push(walk_day(&app, date, waves).await);
    }

    // The waves, as the API shows them (the first day).
    let (status, body) = app.digest(&digests[0]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["local_time"], "07:00");
    assert_eq!(body["local_date"], "2027-03-14");
    let shape: Vec<(String, String, String, i64)> = body["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| {
            (
                w["timezone"].as_str().unwrap_or("").to_owned(),
                w["due_at"].as_str().unwrap_or("").to_owned(),
                w["due_at_utc"].as_str().unwrap_or("").to_owned(),
                w["recipients"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let want = [
        (
            "Pacific/Kiritimati",
            "2027-03-14T07:00:00+14:00",
            "2027-03-13T17:00:00.000Z",
            1,
        ),
        (
            "Pacific/Chatham",
            "2027-03-14T07:00:00+13:45",
            "2027-03-13T17:15:00.000Z",
            1,
        ),
        (
            "Asia/Kolkata",
            "2027-03-14T07:00:00+05:30",
            "2027-03-14T01:30:00.000Z",
            2,
        ),
        (
            "Europe/Madrid",
            "2027-03-14T07:00:00+01:00",
            "2027-03-14T06:00:00.000Z",
            2,
        ),
        (
            "America/Los_Angeles",
            "2027-03-14T07:00:00-07:00",
            "2027-03-14T14:00:00.000Z",
            1,
        ),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(z, d, u, n)| ((*z).to_owned(), (*d).to_owned(), (*u).to_owned(), *n))
        .collect();
    assert_eq!(shape, want);
    assert!(body["waves"][0]["sent"] == 0, "{body}");
    // A delivery counts as queued from its wave's time: its latency is not the hours it
    // waited for its zone's morning.
    let queued_at = app
        .scalar(&format!(
            "SELECT d.created_at FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
             WHERE s.email = 'la@example.com' AND d.digest_id = '{}'",
            digests[0]
        ))
        .await;
    assert_eq!(queued_at, at("2027-03-14T14:00:00Z").timestamp_millis());

    // The real worker takes over what the probe claimed and sends it: each reader gets each
    // day's digest once.
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(app.app.worker().run(shutdown.clone()));
    let received = app.wait_all_sent(&smtp, READERS.len() * days.len()).await;
    let mut per_reader: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for m in &received {
        for r in &m.rcpts {
            *per_reader
                .entry(r.clone())
                .or_default()
                .entry(m.header("Subject").unwrap_or_default())
                .or_default() += 1;
        }
    }
    assert_eq!(per_reader.len(), READERS.len(), "{per_reader:?}");
    for (reader, subjects) in &per_reader {
        assert_eq!(subjects.len(), days.len(), "{reader}: {subjects:?}");
        assert!(subjects.values().all(|n| *n == 1), "{reader}: {subjects:?}");
    }
    shutdown.cancel();
    worker.await.expect("joined").expect("worker ended");

    // Everything sent: the digests are finished, and each wave counts its sent.
    let r = app
        .app
        .scheduler()
        .tick(at("2027-11-08T00:00:00Z"))
        .await
        .expect("tick");
    assert_eq!(r.finished.len(), days.len(), "{r:?}");
    let (_, stats) = app.digest_stats(&digests[0]).await;
    let sent: Vec<i64> = stats["waves"]
        .as_array()
        .expect("waves in stats")
        .iter()
        .map(|w| w["sent"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(sent, [1, 1, 2, 2, 1]);
    assert_eq!(stats["status"], "sent");

    // Past the retention (90 days), the waves' deliveries are gone and each still counts
    // its sent (the roll-up's `digest_waves.sent`).
    let done = app
        .app
        .retention()
        .run_once(at("2028-06-01T00:00:00Z").timestamp_millis())
        .await
        .expect("retention");
    assert!(done.deleted > 0, "{done:?}");
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{}'",
            digests[0]
        ))
        .await,
        0
    );
    assert_eq!(app.digest_stats(&digests[0]).await.1, stats);
    app.stop().await;
}

#[tokio::test]
async fn a_one_off_at_local_time_misses_only_the_wave_seen_beyond_the_grace_window() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        worker: false,
        settings: vec![("missed_grace".into(), "30m".into())],
        ..Options::default()
    })
    .await;
    seed_readers(
        &app,
        &[
            ("kiritimati@example.com", Some("Pacific/Kiritimati")),
            ("madrid@example.com", Some("Europe/Madrid")),
            ("la@example.com", Some("America/Los_Angeles")),
        ],
    )
    .await;
    let item = app.add_item("One-off news").await;
    let id = app.create_digest(json!([item])).await;

    // Refusals name the field.
    for (body, field) in [
        (
            json!({"local_time": "7am", "date": "2027-01-15"}),
            "local_time",
        ),
        (json!({"local_time": "07:00", "date": "15/01/2027"}), "date"),
        (json!({"local_time": "07:00"}), "date"),
        (json!({"date": "2027-01-15"}), "local_time"),
        (json!({"local_time": "07:00", "date": "2020-01-15"}), "date"),
        (
            json!({"send_at": "now", "local_time": "07:00", "date": "2027-01-15"}),
            "send_at",
        ),
    ] {
        let (status, answer) = app
            .post_json(&format!("/api/digests/{id}/schedule"), body.clone())
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {answer}"
        );
        assert_eq!(answer["field"], field, "{body} -> {answer}");
    }

    let (status, d) = app
        .post_json(
            &format!("/api/digests/{id}/schedule"),
            json!({"local_time": "07:00", "date": "2027-01-15"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["status"], "scheduled");
    // It fans out when the earliest zone's 07:00 comes (Kiritimati, UTC+14).
    assert_eq!(d["send_at"], "2027-01-14T17:00:00.000Z");

    let scheduler = app.app.scheduler();
    let r = scheduler
        .tick(at("2027-01-14T17:00:00Z"))
        .await
        .expect("tick");
    assert_eq!(r.fanned_out, [(id.clone(), 3)]);
    assert_eq!(
        claimable(&app, at("2027-01-14T17:00:00Z")).await,
        set(&["kiritimati@example.com"])
    );
    // Nothing runs from then until 40 minutes after Madrid's 07:00 (06:00 UTC): beyond the
    // 30-minute grace, that wave is not sent late; Los Angeles' is still to come.
    let r = scheduler
        .tick(at("2027-01-15T06:40:00Z"))
        .await
        .expect("tick");
    assert_eq!(r.waves_missed, [(id.clone(), "Europe/Madrid".to_owned())]);
    assert!(r.waves_opened.is_empty(), "{r:?}");
    assert_eq!(
        claimable(&app, at("2027-01-15T06:40:00Z")).await,
        BTreeSet::new()
    );
    // Los Angeles' 07:00 (15:00 UTC), seen 10 minutes late: within the grace window.
    let r = scheduler
        .tick(at("2027-01-15T15:10:00Z"))
        .await
        .expect("tick");
    assert_eq!(
        r.waves_opened,
        [(id.clone(), "America/Los_Angeles".to_owned(), 1)]
    );
    assert_eq!(
        claimable(&app, at("2027-01-15T15:10:00Z")).await,
        set(&["la@example.com"])
    );

    let (_, d) = app.digest(&id).await;
    let states: Vec<(&str, &str)> = d["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| {
            (
                w["timezone"].as_str().unwrap_or(""),
                w["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("Pacific/Kiritimati", "open"),
            ("Europe/Madrid", "missed"),
            ("America/Los_Angeles", "open")
        ]
    );
    assert_eq!(
        app.text("SELECT d.status FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id WHERE s.email = 'madrid@example.com'").await,
        "failed"
    );
    let note = app
        .text("SELECT message FROM events WHERE kind = 'wave_missed'")
        .await;
    assert!(note.contains("Europe/Madrid"), "{note}");

    // The dashboard's digest view has the waves' table.
    let (_, html) = dashboard_page(&app, "/admin").await;
    let table = html
        .split("<table id=\"waves\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_else(|| panic!("a waves table: {html}"));
    for cell in [
        "<td>Europe&#x2f;Madrid</td><td>2027-01-15T07:00:00+01:00</td><td>2027-01-15T06:00:00.000Z</td><td>1</td><td>0</td><td title=\"the Europe&#x2f;Madrid wave was not sent",
        "<td>America&#x2f;Los_Angeles</td><td>2027-01-15T07:00:00-08:00</td>",
    ] {
        assert!(table.contains(cell), "{cell} in {table}");
    }
    app.stop().await;
}

#[tokio::test]
async fn pause_resume_and_cancel_apply_to_the_waves_not_yet_sent() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        worker: false,
        ..Options::default()
    })
    .await;
    seed_readers(
        &app,
        &[
            ("kiritimati@example.com", Some("Pacific/Kiritimati")),
            ("madrid@example.com", Some("Europe/Madrid")),
            ("la@example.com", Some("America/Los_Angeles")),
        ],
    )
    .await;
    let item = app.add_item("Paused news").await;
    let id = app.create_digest(json!([item])).await;
    let (status, _) = app
        .post_json(
            &format!("/api/digests/{id}/schedule"),
            json!({"local_time": "07:00", "date": "2027-01-15"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let scheduler = app.app.scheduler();
    scheduler
        .tick(at("2027-01-14T17:00:00Z"))
        .await
        .expect("tick");
    assert_eq!(
        claimable(&app, at("2027-01-14T17:00:00Z")).await,
        set(&["kiritimati@example.com"])
    );

    // Paused: Madrid's wave comes due, but nothing of it is claimed until the resume.
    let (status, _) = app.pause(&id, "checking a link").await;
    assert_eq!(status, StatusCode::OK);
    let madrid = at("2027-01-15T06:00:00Z");
    let r = scheduler.tick(madrid).await.expect("tick");
    assert_eq!(r.waves_opened.len(), 1);
    assert_eq!(claimable(&app, madrid).await, BTreeSet::new());
    let (status, d) = app.resume(&id).await;
    assert_eq!(
        (status, d["status"].as_str()),
        (StatusCode::OK, Some("sending"))
    );
    assert_eq!(claimable(&app, madrid).await, set(&["madrid@example.com"]));

    // Cancelled while sending: the digest stops; the waves not yet due are cancelled, the
    // others kept (what was claimed of them is stopped by the worker's re-check).
    let (status, d) = app.cancel(&id).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["status"], "cancelled", "{d}");
    let la = at("2027-01-15T15:00:00Z");
    let r = scheduler.tick(la).await.expect("tick");
    assert!(r.waves_opened.is_empty(), "{r:?}");
    assert_eq!(claimable(&app, la).await, BTreeSet::new());
    let (_, d) = app.digest(&id).await;
    let states: Vec<&str> = d["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| w["state"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(states, ["open", "open", "cancelled"]);
    assert_eq!(
        app.text("SELECT d.status FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id WHERE s.email = 'la@example.com'").await,
        "suppressed"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_schedules_delivery_mode_is_list_unless_set_and_is_checked() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    let (status, v) = app
        .set_daily_schedule(json!({"time": "07:00", "timezone": "Europe/Madrid"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["deliver_at"], "list");
    let (status, v) = app
        .set_daily_schedule(
            json!({"time": "07:00", "timezone": "Europe/Madrid", "deliver_at": "subscriber"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["deliver_at"], "subscriber");
    let (_, v) = app.daily_schedule().await;
    assert_eq!(v["deliver_at"], "subscriber");
    let (status, v): (StatusCode, Value) = app
        .set_daily_schedule(
            json!({"time": "07:00", "timezone": "Europe/Madrid", "deliver_at": "reader"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "deliver_at");

    // The studio's schedule page shows the mode and its form sets it.
    let (http, html) = dashboard_page(&app, "/admin/schedule").await;
    assert!(
        html.contains("<option value=\"subscriber\" selected>"),
        "{html}"
    );
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf")
        .to_owned();
    let (status, _) = app
        .set_daily_schedule(json!({"time": "07:00", "timezone": "Europe/Madrid"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let res = http
        .post(format!("{}/admin/schedule", app.url))
        .header("origin", &app.url)
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("csrf", csrf.as_str()),
            ("time", "06:30"),
            ("timezone", "Asia/Kolkata"),
            ("enabled", "on"),
            ("deliver_at", "subscriber"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, v) = app.daily_schedule().await;
    assert_eq!(
        (v["deliver_at"].as_str(), v["time"].as_str()),
        (Some("subscriber"), Some("06:30"))
    );
    app.stop().await;
}
