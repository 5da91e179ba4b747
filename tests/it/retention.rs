//! Retention (issue 23, `delivery_retention`): once a finished digest's deliveries are older
//! than the retention they are deleted in batches, and every statistic that covered them
//! (the list's totals, the digest's counts, latency and reply codes) reads the
//! roll-up and shows the same numbers; `0` keeps every row; the deliveries of a digest not
//! finished, and those queued or on the wire, are never deleted; sign-ups and sending go on
//! while the job deletes.

use std::time::Duration;

use crate::helpers::{self, Options, SmtpServer, TestApp, WAIT};
use reqwest::StatusCode;
use serde_json::{Value, json};
use squeeze::domain::clock::now_ms;

const DAY_MS: i64 = 86_400_000;

async fn app_with(smtp: &SmtpServer, settings: &[(&str, &str)]) -> TestApp {
    TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Options::default()
    })
    .await
}

/// Fans a digest out now, waits until all `n` of its messages are recorded and it is `sent`.
async fn send_and_finish(app: &TestApp, smtp: &SmtpServer, received: usize) -> String {
    let id = app.send_digest_now().await;
    app.wait_all_sent(smtp, received).await;
    app.tick_until_sent(&id, WAIT).await;
    id
}

/// What /api/stats says of deliveries: the totals, and the current digest's statistics.
async fn overall(app: &TestApp) -> (Value, Value) {
    let (status, s) = app.stats().await;
    assert_eq!(status, StatusCode::OK, "{s}");
    (s["deliveries"].clone(), s["current_digest"].clone())
}

#[tokio::test]
async fn a_sent_digests_deliveries_past_the_retention_are_gone_and_every_statistic_stays() {
    let smtp = SmtpServer::start().await;
    let app = app_with(&smtp, &[("delivery_retention", "30d"), ("welcome", "true")]).await;
    // Two readers who signed up through the form: a confirmation and a welcome each.
    app.subscribe_confirmed(&smtp, "reader1@example.org").await;
    app.subscribe_confirmed(&smtp, "reader2@example.org").await;
    app.wait_all_sent(&smtp, 4).await;
    helpers::seed(&app, &[("confirmed", 40)], "example.com").await;
    {
        let mut faults = smtp.faults();
        faults.rcpt_always.insert(
            "confirmed1@example.com".into(),
            "550 5.1.1 no such user".into(),
        );
        faults
            .rcpt_always
            .insert("confirmed2@example.com".into(), "554 5.7.1 refused".into());
    }
    // 42 recipients, two refused at RCPT.
    let id = send_and_finish(&app, &smtp, 4 + 40).await;

    let (totals, current) = overall(&app).await;
    let (status, digest) = app.digest_stats(&id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(digest["sent"], 40, "{digest}");
    assert_eq!(digest["bounced"], 1, "{digest}");
    assert_eq!(digest["failed"], 1, "{digest}");
    assert!(!digest["reply_codes"].as_array().expect("codes").is_empty());
    assert!(digest["latency"]["p50_ms"].is_i64(), "{digest}");
    let rows = app.scalar("SELECT COUNT(*) FROM deliveries").await;
    assert_eq!(rows, 42 + 4, "the digest's and the readers' emails");
    assert_eq!(totals["sent"], 44, "{totals}");

    // 31 days on, with batches of 7: everything is older than the retention.
    let done = app
        .app
        .retention()
        .with_batch(7)
        .run_once(now_ms() + 31 * DAY_MS)
        .await
        .expect("retention");
    assert_eq!(done.rolled_up, 1);
    assert_eq!(done.deleted, 46, "{done:?}");
    assert!(done.batches >= 46 / 7, "deleted in batches: {done:?}");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM deliveries").await, 0);
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM digests WHERE id = '{id}' AND pruned_at IS NOT NULL"
        ))
        .await,
        1
    );

    assert_eq!(overall(&app).await, (totals, current), "/api/stats");
    assert_eq!(app.digest_stats(&id).await.1, digest, "the digest's stats");
    let metrics = app
        .app
        .reporting()
        .metrics(now_ms())
        .await
        .expect("metrics");
    assert!(
        metrics.contains("squeeze_retention_deleted_total 46"),
        "{metrics}"
    );

    // Again: nothing more to do, nothing counted twice.
    let again = app
        .app
        .retention()
        .run_once(now_ms() + 31 * DAY_MS)
        .await
        .expect("retention");
    assert_eq!((again.rolled_up, again.deleted), (0, 0));
    assert_eq!(app.digest_stats(&id).await.1, digest);
    app.stop().await;
}

#[tokio::test]
async fn a_retention_of_zero_keeps_every_delivery() {
    let smtp = SmtpServer::start().await;
    let app = app_with(&smtp, &[("delivery_retention", "0")]).await;
    helpers::seed(&app, &[("confirmed", 12)], "example.com").await;
    let id = send_and_finish(&app, &smtp, 12).await;
    let (_, digest) = app.digest_stats(&id).await;

    let done = app
        .app
        .retention()
        .run_once(now_ms() + 3_650 * DAY_MS)
        .await
        .expect("retention");
    assert_eq!(done.deleted, 0, "{done:?}");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM deliveries").await, 12);
    // Rolled up all the same, and read from the roll-up the same.
    assert_eq!(done.rolled_up, 1);
    assert_eq!(app.digest_stats(&id).await.1, digest);
    app.stop().await;
}

#[tokio::test]
async fn the_deliveries_of_a_digest_not_finished_and_queued_emails_are_never_deleted() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        worker: false,
        settings: vec![("delivery_retention".into(), "1d".into())],
        ..Options::default()
    })
    .await;
    helpers::seed(&app, &[("confirmed", 30)], "example.com").await;
    // A sign-up whose confirmation is still queued: no worker runs.
    assert_eq!(
        app.subscribe("new@example.org").await.status(),
        StatusCode::ACCEPTED
    );
    app.add_item("One").await;
    let id = app.create_digest(json!("pending")).await;
    let (status, body) = app.schedule_now(&id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let now = now_ms();
    // The first chunk only: the digest is `sending`, its fan-out running.
    let first = app
        .app
        .store
        .start_fan_out(&id, now + 3_600_000, now, 10)
        .await
        .expect("first chunk");
    assert_eq!(first, Some((10, false)));

    let done = app
        .app
        .retention()
        .run_once(now + 365 * DAY_MS)
        .await
        .expect("retention");
    assert_eq!((done.rolled_up, done.deleted), (0, 0), "{done:?}");
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{id}'"
        ))
        .await,
        10
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE kind = 'confirmation'")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn sign_ups_and_a_send_go_on_while_the_history_is_deleted_batch_by_batch() {
    let smtp = SmtpServer::start().await;
    let app = app_with(&smtp, &[("delivery_retention", "1d"), ("concurrency", "4")]).await;
    helpers::seed(&app, &[("confirmed", 1_500)], "example.com").await;
    let old = send_and_finish(&app, &smtp, 1_500).await;
    let (_, old_stats) = app.digest_stats(&old).await;
    // The history is "old" from the job's view two days on; a new digest goes out meanwhile.
    let new = app.send_digest_now().await;
    let job = {
        let retention = app.app.retention().with_batch(50);
        tokio::spawn(async move { retention.run_once(now_ms() + 2 * DAY_MS).await })
    };
    let started = std::time::Instant::now();
    for i in 0..20 {
        let res = app.subscribe(&format!("during{i}@example.org")).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    let sign_ups = started.elapsed();
    let done = job.await.expect("join").expect("retention");
    assert!(done.batches >= 1_500 / 50, "in batches of 50: {done:?}");
    smtp.wait_for_at_least(3_000 + 20, Duration::from_secs(60))
        .await;
    app.tick_until_sent(&new, WAIT).await;
    assert!(
        sign_ups < Duration::from_secs(5),
        "20 sign-ups took {sign_ups:?}"
    );
    let (_, new_stats) = app.digest_stats(&new).await;
    assert_eq!(new_stats["sent"], 1_500, "{new_stats}");
    assert_eq!(app.digest_stats(&old).await.1, old_stats);
    app.stop().await;
}

/// One run prunes every digest past the retention, not only a first page of them: the first
/// run after an upgrade finds a year of daily digests past the cutoff at once.
#[tokio::test]
async fn one_run_prunes_every_digest_past_the_retention_however_many() {
    let smtp = SmtpServer::start().await;
    let app = app_with(&smtp, &[("delivery_retention", "30d")]).await;
    let long_ago = now_ms() - 400 * DAY_MS;
    let rows: Vec<String> = (0..250)
        .map(|i| {
            let t = long_ago + i * DAY_MS;
            format!("('old-{i:04}', 'Day {i}', 'sent', 0, {t}, {t}, {t}, {t}, {t})")
        })
        .collect();
    let pool = app.db().await;
    sqlx::query(&format!(
        "INSERT INTO digests (id, subject, status, recipients, started_at, finished_at,
             fanned_out_at, created_at, updated_at) VALUES {}",
        rows.join(", ")
    ))
    .execute(&pool)
    .await
    .expect("a year of sent digests");
    pool.close().await;
    let done = app
        .app
        .retention()
        .run_once(now_ms())
        .await
        .expect("retention");
    assert_eq!(done.rolled_up, 250, "{done:?}");
    // 250 days ago to 150 days ago: all past the 30 days kept.
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM digests WHERE pruned_at IS NULL")
            .await,
        0
    );
    app.stop().await;
}

/// A test send's record (the address it went to, in `test_sends`) goes with its delivery
/// when the job deletes that: nothing is left pointing at a delivery that is gone. On
/// PostgreSQL this is the deletion trigger's work, not a foreign key's (migration 0025).
#[tokio::test]
async fn a_test_sends_record_goes_with_its_delivery() {
    let smtp = SmtpServer::start().await;
    let app = app_with(&smtp, &[("delivery_retention", "30d")]).await;
    let item = app.add_item("Tested item").await;
    let id = app.create_digest(json!([item])).await;
    let (status, body) = app
        .post_json(
            &format!("/api/digests/{id}/test"),
            json!({ "addresses": ["editor@example.org", "second@example.net"] }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_all_sent(&smtp, 2).await;
    assert_eq!(app.scalar("SELECT COUNT(*) FROM test_sends").await, 2);

    let done = app
        .app
        .retention()
        .run_once(now_ms() + 31 * DAY_MS)
        .await
        .expect("retention");
    assert_eq!(done.deleted, 2, "{done:?}");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE kind = 'test'")
            .await,
        0
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM test_sends").await, 0);
    app.stop().await;
}
