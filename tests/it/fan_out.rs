//! The fan-out in chunks (issue 23): a digest's deliveries are written a few thousand at a
//! time, each chunk committed on its own, the workers sending the first while the rest is
//! written; cut short, the next scheduler tick continues from the cursor, every confirmed
//! subscriber exactly once, and the digest is never `sent` before its fan-out is complete.

use std::collections::HashMap;
use std::time::Duration;

use crate::helpers::{self, CLAIMABLE, Options, SmtpServer, TestApp, WAIT, eventually};
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::json;

/// Each confirmed address received exactly one message, and nobody else got one.
fn assert_once_each(smtp: &SmtpServer, confirmed: &[String]) {
    let mut per_rcpt: HashMap<String, usize> = HashMap::new();
    for m in smtp.received() {
        for r in &m.rcpts {
            *per_rcpt.entry(r.clone()).or_default() += 1;
        }
    }
    assert_eq!(
        per_rcpt.len(),
        confirmed.len(),
        "one recipient per confirmed subscriber"
    );
    let twice: Vec<_> = per_rcpt.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "received more than once: {twice:?}");
    assert!(confirmed.iter().all(|e| per_rcpt.contains_key(e)));
}

async fn scheduled_digest(app: &TestApp) -> String {
    app.add_item("One").await;
    let id = app.create_digest(json!("pending")).await;
    let (status, body) = app.schedule_now(&id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    id
}

#[tokio::test]
async fn a_fan_out_in_chunks_reaches_every_confirmed_subscriber_once() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        settings: vec![
            ("concurrency".into(), "8".into()),
            ("fanout_chunk".into(), "400".into()),
        ],
        ..Options::default()
    })
    .await;
    let confirmed = helpers::seed(
        &app,
        &[("confirmed", 1_850), ("pending", 120), ("unsubscribed", 90)],
        "example.com",
    )
    .await;
    let id = scheduled_digest(&app).await;

    let report = app
        .app
        .scheduler()
        .tick(Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("tick");
    assert_eq!(report.fanned_out, vec![(id.clone(), 1_850)]);
    // Five chunks of at most 400, each its own transaction with its own id prefix.
    let chunks = app
        .scalar(&format!(
            "SELECT COUNT(DISTINCT substr(id, 1, 36)) FROM deliveries WHERE digest_id = '{id}'"
        ))
        .await;
    assert_eq!(chunks, 5, "1,850 subscribers in chunks of 400");
    let (status, d) = app.digest(&id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d["fan_out"], "complete", "{d}");
    assert_eq!(d["recipients"], 1_850);

    smtp.wait_for(1_850, Duration::from_secs(90)).await;
    app.tick_until_sent(&id, WAIT).await;
    assert_once_each(&smtp, &confirmed);
    let (_, stats) = app.digest_stats(&id).await;
    assert_eq!(stats["fan_out"], "complete", "{stats}");
    assert_eq!(stats["recipients"], 1_850);
    assert_eq!(stats["sent"], 1_850);
    app.stop().await;
}

#[tokio::test]
async fn a_fan_out_cut_short_sends_its_first_chunk_and_is_continued_by_the_next_tick() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        settings: vec![
            ("concurrency".into(), "8".into()),
            ("fanout_chunk".into(), "300".into()),
        ],
        ..Options::default()
    })
    .await;
    let confirmed = helpers::seed(
        &app,
        &[("confirmed", 1_000), ("bounced", 50)],
        "example.com",
    )
    .await;
    let id = scheduled_digest(&app).await;
    let store = &app.app.store;
    let now = Utc::now().timestamp_millis();

    // The first chunk's transaction, and then the process "dies": nothing more is written.
    let first = store
        .start_fan_out(&id, now + 3_600_000, now, 300)
        .await
        .expect("first chunk");
    assert_eq!(first, Some((300, false)));
    let (_, d) = app.digest(&id).await;
    assert_eq!(d["status"], "sending", "{d}");
    assert_eq!(d["fan_out"], "running", "{d}");
    assert_eq!(d["recipients"], 300, "recipients count what was fanned out");
    let (_, stats) = app.digest_stats(&id).await;
    assert_eq!(stats["fan_out"], "running", "{stats}");

    // The workers send the first chunk while the fan-out is incomplete...
    smtp.wait_for(300, Duration::from_secs(60)).await;
    eventually("first chunk recorded as sent", WAIT, || async {
        app.scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{id}' AND status = 'sent'"
        ))
        .await
            == 300
    })
    .await;
    // ...and with nothing queued or on the wire the digest is still not `sent`.
    let finished = store
        .finish_digests(Utc::now().timestamp_millis())
        .await
        .expect("finish");
    assert!(finished.is_empty(), "finished mid fan-out: {finished:?}");
    assert_eq!(
        app.text(&format!("SELECT status FROM digests WHERE id = '{id}'"))
            .await,
        "sending"
    );

    // A new scheduler (a restarted process, or another node) continues from the cursor.
    let report = app.app.scheduler().tick(Utc::now()).await.expect("tick");
    assert_eq!(report.fanned_out, vec![(id.clone(), 700)]);
    let (_, d) = app.digest(&id).await;
    assert_eq!(d["fan_out"], "complete", "{d}");
    assert_eq!(d["recipients"], 1_000);
    // Nothing more to continue: a second continuation writes nothing.
    assert_eq!(
        store
            .continue_fan_out(&id, Utc::now().timestamp_millis(), 300)
            .await
            .expect("continue"),
        0
    );

    smtp.wait_for(1_000, Duration::from_secs(60)).await;
    app.tick_until_sent(&id, WAIT).await;
    assert_once_each(&smtp, &confirmed);
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{id}'"
        ))
        .await,
        1_000
    );
    // The first messages left before the fan-out was complete.
    let before = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM deliveries d JOIN digests g ON g.id = d.digest_id
             WHERE g.id = '{id}' AND d.sent_at < g.fanned_out_at"
        ))
        .await;
    assert!(before >= 300, "{before} sent before the fan-out completed");
    app.stop().await;
}

/// The first chunk is small whatever `fanout_chunk` says: its commit wakes the workers, so
/// the first message waits for it (at 1,000,000 on PostgreSQL a first chunk of 5,000 took
/// 60-90 ms).
#[tokio::test]
async fn the_first_chunk_is_small_so_sending_starts_at_once() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        worker: false,
        ..Options::default()
    })
    .await;
    helpers::seed(&app, &[("confirmed", 1_200)], "example.com").await;
    let id = scheduled_digest(&app).await;
    let now = Utc::now().timestamp_millis();
    let store = &app.app.store;
    let first = store
        .start_fan_out(&id, now + 3_600_000, now, 5_000)
        .await
        .expect("first chunk");
    assert_eq!(first, Some((500, false)), "a first chunk of at most 500");
    let rest = store
        .continue_fan_out(&id, now, 5_000)
        .await
        .expect("the rest");
    assert_eq!(rest, 700, "the rest in chunks of fanout_chunk");
    app.stop().await;
}

/// A chunk is the next `fanout_chunk` subscribers in id order, whatever their status (so no
/// statistics can turn its read into a pass over the list): chunks with nobody confirmed in
/// them, in the middle of the list, write nothing and do not end the fan-out.
#[tokio::test]
async fn chunks_with_nobody_confirmed_in_them_do_not_end_the_fan_out() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        worker: false,
        settings: vec![("fanout_chunk".into(), "100".into())],
        ..Options::default()
    })
    .await;
    // By id: 150 confirmed, 250 unsubscribed (pages 3 and 4 of 100 hold nobody confirmed),
    // then 150 confirmed.
    helpers::seed(
        &app,
        &[("confirmed", 150), ("unsubscribed", 250)],
        "a.example",
    )
    .await;
    helpers::seed(&app, &[("confirmed", 150)], "b.example").await;
    let id = scheduled_digest(&app).await;
    let report = app.app.scheduler().tick(Utc::now()).await.expect("tick");
    assert_eq!(report.fanned_out, vec![(id.clone(), 300)]);
    let (_, d) = app.digest(&id).await;
    assert_eq!(d["fan_out"], "complete", "{d}");
    assert_eq!(d["recipients"], 300);
    let last = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
             WHERE d.digest_id = '{id}' AND s.email LIKE '%@b.example'"
        ))
        .await;
    assert_eq!(last, 150, "the confirmed after the unsubscribed ones");
    app.stop().await;
}

/// 250 confirmed subscribers, a digest due, its fan-out started in chunks of 100 and left
/// after the first (no worker: nothing is sent).
async fn first_chunk_of_250(smtp: &SmtpServer) -> (TestApp, String) {
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        worker: false,
        settings: vec![("fanout_chunk".into(), "100".into())],
        ..Options::default()
    })
    .await;
    helpers::seed(&app, &[("confirmed", 250)], "example.com").await;
    let id = scheduled_digest(&app).await;
    let now = Utc::now().timestamp_millis();
    assert_eq!(
        app.app
            .store
            .start_fan_out(&id, now + 3_600_000, now, 100)
            .await
            .expect("first chunk"),
        Some((100, false))
    );
    (app, id)
}

#[tokio::test]
async fn a_digest_paused_mid_fan_out_is_fanned_out_but_not_sent_until_resumed() {
    let smtp = SmtpServer::start().await;
    let (app, id) = first_chunk_of_250(&smtp).await;
    let (status, body) = app.pause(&id, "wrong link").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report = app.app.scheduler().tick(Utc::now()).await.expect("tick");
    assert_eq!(report.fanned_out, vec![(id.clone(), 150)]);
    let (_, d) = app.digest(&id).await;
    assert_eq!(d["status"], "paused", "{d}");
    assert_eq!(d["fan_out"], "complete", "{d}");
    assert_eq!(d["recipients"], 250);
    // Its chunks stay queued, and no claim takes them until it resumes.
    assert!(
        claim_all(&app, 40).await.is_empty(),
        "a paused digest's mail was claimed"
    );
    assert_eq!(app.claimable(&id).await, 250);
    let (status, body) = app.resume(&id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(claim_all(&app, 40).await.len(), 250);
    app.stop().await;
}

/// Claims `limit` at a time until a claim comes back empty: the ids of everything claimed.
async fn claim_all(app: &TestApp, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let claimed = app
            .app
            .store
            .claim("tester", Utc::now().timestamp_millis(), WAIT, limit)
            .await
            .expect("claim");
        if claimed.is_empty() {
            return ids;
        }
        assert!(
            claimed.len() <= limit as usize,
            "{} > {limit}",
            claimed.len()
        );
        ids.extend(claimed.into_iter().map(|d| d.id));
    }
}

/// A fan-out's chunks are queued as one row each and claimed as ranges of their deliveries'
/// ids (migration 0026): claims of any size take every queued delivery once, pass over
/// those suppressed since the fan-out, and leave no queue row behind.
#[tokio::test]
async fn a_fan_outs_chunks_are_claimed_once_each_and_who_left_is_passed_over() {
    let smtp = SmtpServer::start().await;
    let (app, id) = first_chunk_of_250(&smtp).await;
    let report = app.app.scheduler().tick(Utc::now()).await.expect("tick");
    assert_eq!(report.fanned_out, vec![(id.clone(), 150)]);
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM queued_chunks WHERE digest_id = '{id}'"
        ))
        .await,
        3,
        "one queue row per chunk (100, 100, 50)"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM delivery_queue").await,
        0,
        "no queue row per delivery"
    );
    // Five who left after the fan-out, in the middle of the first chunks.
    app.exec(&format!(
        "UPDATE deliveries SET status = 'suppressed' WHERE id IN
             (SELECT id FROM deliveries WHERE digest_id = '{id}' ORDER BY subscriber_id
              LIMIT 5 OFFSET 95)"
    ))
    .await;
    let expected: Vec<String> = {
        let pool = app.db().await;
        let ids = sqlx::query_scalar(&format!(
            "SELECT id FROM deliveries d WHERE d.digest_id = '{id}' AND d.status = 'queued'
             ORDER BY id"
        ))
        .fetch_all(&pool)
        .await
        .expect("queued");
        pool.close().await;
        ids
    };
    assert_eq!(expected.len(), 245);
    let mut claimed = claim_all(&app, 7).await;
    claimed.sort();
    assert_eq!(
        claimed, expected,
        "every queued delivery once, nobody who left"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM queued_chunks").await,
        0,
        "every chunk read to its end is gone"
    );
    app.stop().await;
}

/// A confirmation asked for while a digest's fan-out fills the queue goes out first: the
/// queue's own rows are claimed before a fan-out's chunks, not behind every recipient the
/// digest has.
#[tokio::test]
async fn a_confirmation_asked_for_during_a_big_send_is_claimed_before_the_digest() {
    let smtp = SmtpServer::start().await;
    let (app, _id) = first_chunk_of_250(&smtp).await;
    let res = app.subscribe("late@example.com").await;
    assert!(res.status().is_success(), "{}", res.status());
    let first = app
        .app
        .store
        .claim("tester", Utc::now().timestamp_millis(), WAIT, 1)
        .await
        .expect("claim");
    assert_eq!(
        first.iter().map(|d| d.email.as_str()).collect::<Vec<_>>(),
        ["late@example.com"],
        "the first claim takes the confirmation"
    );
    app.stop().await;
}

/// How many deliveries the subscriber `id` has and how many of them a claim would take, and
/// how many queue rows in all have no delivery.
async fn traces_of(app: &TestApp, id: &str) -> (i64, i64, i64) {
    let deliveries = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE subscriber_id = '{id}'"
        ))
        .await;
    let queued = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM deliveries d WHERE d.subscriber_id = '{id}' AND {CLAIMABLE}"
        ))
        .await;
    let orphans = app
        .scalar(
            "SELECT COUNT(*) FROM delivery_queue q
             WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = q.delivery_id)",
        )
        .await;
    (deliveries, queued, orphans)
}

/// A confirmed subscriber's id and address: the last with a delivery of `digest` already
/// (`fanned_out`), or the first the fan-out has not reached yet (in its next chunk).
async fn confirmed_subscriber(app: &TestApp, digest: &str, fanned_out: bool) -> (String, String) {
    let pool = app.db().await;
    let (id, email): (String, String) = sqlx::query_as(&format!(
        "SELECT id, email FROM subscribers s WHERE status = 'confirmed'
           AND {} EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber_id = s.id
                              AND d.digest_id = '{digest}')
         ORDER BY id {} LIMIT 1",
        if fanned_out { "" } else { "NOT" },
        if fanned_out { "DESC" } else { "ASC" }
    ))
    .fetch_one(&pool)
    .await
    .expect("a confirmed subscriber");
    pool.close().await;
    (id, email)
}

/// The right to erasure holds in the middle of a fan-out: a subscriber erased after their
/// chunk was written, before it, or (PostgreSQL, where chunks and erasures run at once) while
/// a chunk is being written, has no delivery and nothing queued, and everyone else is fanned
/// out once.
#[tokio::test]
async fn an_erased_subscriber_leaves_no_delivery_and_nothing_queued() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        settings: vec![("fanout_chunk".into(), "100".into())],
        ..Options::default()
    })
    .await;
    helpers::seed(&app, &[("confirmed", 300)], "example.com").await;
    let id = scheduled_digest(&app).await;
    let store = &app.app.store;
    let now = Utc::now().timestamp_millis();
    assert_eq!(
        store
            .start_fan_out(&id, now + 3_600_000, now, 100)
            .await
            .expect("first chunk"),
        Some((100, false))
    );

    let (written, written_email) = confirmed_subscriber(&app, &id, true).await;
    let (ahead, ahead_email) = confirmed_subscriber(&app, &id, false).await;
    assert!(store.forget(&written_email).await.expect("forget"));
    assert!(store.forget(&ahead_email).await.expect("forget"));
    let mut erased = vec![written, ahead];

    if helpers::on_postgres() {
        // An erasure that deleted the row before the next chunk read it, and commits while
        // that chunk waits on it.
        let (during, _) = confirmed_subscriber(&app, &id, false).await;
        let pool = app.db().await;
        let mut erasing = pool.begin().await.expect("tx");
        sqlx::query("DELETE FROM subscribers WHERE id = $1")
            .bind(&during)
            .execute(&mut *erasing)
            .await
            .expect("delete");
        let chunk = store.fan_out_next_chunk(&id, now, 100);
        let commit = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            erasing.commit().await.expect("commit");
        };
        let (chunk, ()) = tokio::join!(chunk, commit);
        assert_eq!(chunk.expect("chunk"), Some((100, false)));
        pool.close().await;
        erased.push(during);
    }

    let report = app.app.scheduler().tick(Utc::now()).await.expect("tick");
    assert_eq!(report.fanned_out.len(), 1, "{report:?}");
    for gone in &erased {
        assert_eq!(traces_of(&app, gone).await, (0, 0, 0), "subscriber {gone}");
    }
    let left = 300 - i64::try_from(erased.len()).unwrap_or(0);
    let rows = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{id}'"
        ))
        .await;
    assert_eq!(rows, left, "deliveries: everyone else, once");
    assert_eq!(
        app.claimable(&id).await,
        left,
        "queued: everyone else, once"
    );
    app.stop().await;
}

/// Deleting deliveries (a subscriber's, or old ones) takes their queue rows with them, and
/// deleting a subscriber takes their deliveries: no queue row is left pointing at nothing,
/// for a worker to claim.
#[tokio::test]
async fn deleting_deliveries_or_subscribers_leaves_no_orphan_queue_rows() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        settings: vec![("fanout_chunk".into(), "100".into())],
        ..Options::default()
    })
    .await;
    helpers::seed(&app, &[("confirmed", 250)], "example.com").await;
    let id = scheduled_digest(&app).await;
    let report = app.app.scheduler().tick(Utc::now()).await.expect("tick");
    assert_eq!(report.fanned_out, vec![(id.clone(), 250)]);
    let (subscriber, _) = confirmed_subscriber(&app, &id, true).await;

    app.exec(&format!(
        "DELETE FROM deliveries WHERE id IN
             (SELECT id FROM deliveries WHERE digest_id = '{id}' ORDER BY id LIMIT 40)"
    ))
    .await;
    app.exec(&format!(
        "DELETE FROM subscribers WHERE id = '{subscriber}'"
    ))
    .await;
    assert_eq!(traces_of(&app, &subscriber).await, (0, 0, 0));
    let queued = app.claimable(&id).await;
    let deliveries = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{id}'"
        ))
        .await;
    assert_eq!(deliveries, 250 - 40 - 1);
    assert_eq!(queued, deliveries, "one queue row per delivery left");
    app.stop().await;
}

/// A fan-out whose cursor is behind what was written (a chunk written again) skips whoever
/// already has a delivery of the digest: no error, nobody twice, the rest fanned out.
#[tokio::test]
async fn a_chunk_written_again_skips_who_already_has_a_delivery() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        settings: vec![("fanout_chunk".into(), "100".into())],
        ..Options::default()
    })
    .await;
    helpers::seed(&app, &[("confirmed", 250)], "example.com").await;
    let id = scheduled_digest(&app).await;
    let store = &app.app.store;
    let now = Utc::now().timestamp_millis();
    assert_eq!(
        store
            .start_fan_out(&id, now + 3_600_000, now, 100)
            .await
            .expect("first chunk"),
        Some((100, false))
    );
    app.exec(&format!(
        "UPDATE digests SET fan_out_cursor = '' WHERE id = '{id}'"
    ))
    .await;
    let made = store
        .continue_fan_out(&id, now, 100)
        .await
        .expect("the chunk written again");
    assert_eq!(made, 150, "only those without a delivery");
    let once = app
        .scalar(&format!(
            "SELECT COUNT(DISTINCT subscriber_id) FROM deliveries WHERE digest_id = '{id}'"
        ))
        .await;
    let rows = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{id}'"
        ))
        .await;
    assert_eq!((once, rows), (250, 250));
    let queued = app.claimable(&id).await;
    assert_eq!(queued, 250);
    app.stop().await;
}

async fn deliveries_where(app: &TestApp, id: &str, condition: &str) -> i64 {
    app.scalar(&format!(
        "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{id}' AND {condition}"
    ))
    .await
}

#[tokio::test]
async fn a_digest_cancelled_mid_fan_out_stops_and_suppresses_what_is_queued() {
    let smtp = SmtpServer::start().await;
    let (app, id) = first_chunk_of_250(&smtp).await;

    // An editor stops it (and, to be sure, asks again: nothing changes the second time).
    for _ in 0..2 {
        let (status, d) = app.cancel(&id).await;
        assert_eq!(status, StatusCode::OK, "{d}");
        assert_eq!(d["status"], "cancelled", "{d}");
        assert_eq!(d["fan_out"], "stopped", "{d}");
    }
    // No further chunk: the next tick leaves it alone.
    let report = app.app.scheduler().tick(Utc::now()).await.expect("tick");
    assert!(report.fanned_out.is_empty(), "{report:?}");
    assert_eq!(deliveries_where(&app, &id, "1 = 1").await, 100);
    assert_eq!(
        deliveries_where(
            &app,
            &id,
            "status = 'suppressed' AND last_error = 'cancelled by an editor'"
        )
        .await,
        100,
        "every queued delivery is suppressed, with the reason"
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT (SELECT COUNT(*) FROM delivery_queue WHERE digest_id = '{id}')
                 + (SELECT COUNT(*) FROM queued_chunks WHERE digest_id = '{id}')"
        ))
        .await,
        0,
        "nothing of it is left in the queue"
    );
    let (_, d) = app.digest(&id).await;
    assert_eq!(d["status"], "cancelled", "{d}");
    assert_eq!(d["recipients"], 100, "{d}");
    assert_eq!(
        d["items"].as_array().map(Vec::len),
        Some(1),
        "it keeps its items"
    );
    let (_, stats) = app.digest_stats(&id).await;
    assert_eq!(stats["sent"], 0, "{stats}");
    assert_eq!(smtp.count(), 0);
    app.stop().await;
}

#[tokio::test]
async fn a_digest_cancelled_while_sending_sends_no_more_than_was_claimed() {
    let smtp = SmtpServer::start().await;
    // One slow connection and a claim of ten: most of what is claimed is not yet on the
    // wire when the editor cancels.
    smtp.faults().data_delay = Some(Duration::from_millis(300));
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        settings: vec![
            ("concurrency".into(), "1".into()),
            ("rate".into(), "10".into()),
        ],
        ..Options::default()
    })
    .await;
    helpers::seed(&app, &[("confirmed", 300)], "example.com").await;
    let id = scheduled_digest(&app).await;
    app.app.scheduler().tick(Utc::now()).await.expect("tick");
    smtp.wait_for(2, Duration::from_secs(30)).await;

    let (status, d) = app.cancel(&id).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    // What is claimed or sent now is all that may still go out.
    let claimed = deliveries_where(&app, &id, "status IN ('sending', 'sent')").await;
    assert!(claimed < 300, "{claimed} claimed");
    eventually("its claimed deliveries settled", WAIT, || async {
        deliveries_where(&app, &id, "status IN ('queued', 'sending')").await == 0
    })
    .await;
    let sent = deliveries_where(&app, &id, "status = 'sent'").await;
    assert!(
        i64::try_from(smtp.count()).unwrap_or(i64::MAX) <= claimed,
        "{} sent, {claimed} were claimed",
        smtp.count()
    );
    assert_eq!(
        i64::try_from(smtp.count()).ok(),
        Some(sent),
        "what was sent is counted"
    );
    assert_eq!(
        deliveries_where(
            &app,
            &id,
            "status = 'suppressed' AND last_error = 'cancelled by an editor'"
        )
        .await,
        300 - sent
    );
    // Claimed before the cancel, and stopped by the worker's re-check before sending.
    let stopped_by_worker =
        deliveries_where(&app, &id, "status = 'suppressed' AND attempts > 0").await;
    assert!(stopped_by_worker > 0, "every claimed delivery went out");
    app.app.scheduler().tick(Utc::now()).await.expect("tick");
    let (_, stats) = app.digest_stats(&id).await;
    assert_eq!(stats["status"], "cancelled", "{stats}");
    assert_eq!(stats["sent"], sent, "{stats}");
    app.stop().await;
}

/// Makes the fan-out fail at subscriber `hold` (every chunk that holds them is rolled back,
/// tick after tick), so a test can stop a process while its fan-out is `running`, after the
/// chunks before that subscriber committed: no guessing with sleeps.
async fn hold_fan_out_at(app: &TestApp, hold: &str) {
    if helpers::on_postgres() {
        app.exec(&format!(
            "CREATE FUNCTION hold_fan_out() RETURNS trigger AS $$ BEGIN
                 IF NEW.subscriber_id = '{hold}' THEN RAISE EXCEPTION 'held by the test'; END IF;
                 RETURN NEW; END $$ LANGUAGE plpgsql"
        ))
        .await;
        app.exec(
            "CREATE TRIGGER hold_fan_out BEFORE INSERT ON deliveries
             FOR EACH ROW EXECUTE FUNCTION hold_fan_out()",
        )
        .await;
    } else {
        app.exec(&format!(
            "CREATE TRIGGER hold_fan_out BEFORE INSERT ON deliveries
             WHEN NEW.subscriber_id = '{hold}'
             BEGIN SELECT RAISE(ABORT, 'held by the test'); END"
        ))
        .await;
    }
}

async fn release_fan_out(app: &TestApp) {
    if helpers::on_postgres() {
        app.exec("DROP TRIGGER hold_fan_out ON deliveries").await;
    } else {
        app.exec("DROP TRIGGER hold_fan_out").await;
    }
}

#[tokio::test]
async fn a_serve_sigkilled_mid_fan_out_and_restarted_sends_everyone_exactly_once() {
    let smtp = SmtpServer::start().await;
    let db = helpers::TestDb::new().await;
    // This process only seeds, schedules and reads: no worker, no scheduler.
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        worker: false,
        database: Some(db.clone()),
        ..Options::default()
    })
    .await;
    let confirmed = helpers::seed(
        &app,
        &[
            ("confirmed", 3_000),
            ("pending", 100),
            ("unsubscribed", 100),
        ],
        "example.com",
    )
    .await;
    // The 2,001st confirmed subscriber in id order: chunks of 100 before them commit.
    let hold = app
        .text(
            "SELECT id FROM subscribers WHERE status = 'confirmed' ORDER BY id LIMIT 1 OFFSET 2000",
        )
        .await;
    hold_fan_out_at(&app, &hold).await;
    let env = [
        ("SQUEEZE_SMTP_URL", smtp.url()),
        ("SQUEEZE_FANOUT_CHUNK", "100".to_owned()),
        ("SQUEEZE_RATE", "10000".to_owned()),
        ("SQUEEZE_CONCURRENCY", "8".to_owned()),
        ("SQUEEZE_WELCOME", "false".to_owned()),
    ];
    let serve = |env: &[(&str, String)]| {
        let bind = format!("127.0.0.1:{}", helpers::free_port());
        squeeze_test_support::process::Reaped(helpers::spawn_squeeze(
            &["serve", "--bind", &bind],
            &db,
            env,
        ))
    };
    let mut first = serve(&env);
    let id = scheduled_digest(&app).await;

    // The fan-out is running, 20 chunks in, and everything fanned out so far is sent and
    // recorded (so no message is on the wire when the process dies).
    eventually(
        "20 chunks fanned out and sent",
        Duration::from_secs(60),
        || async {
            let (_, d) = app.digest(&id).await;
            d["fan_out"] == "running"
            && d["recipients"] == 2_000
            && app
                .scalar(&format!(
                    "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{id}' AND status = 'sent'"
                ))
                .await
                == 2_000
        },
    )
    .await;
    first.0.kill().expect("SIGKILL");
    first.0.wait().expect("reaped");
    let (_, d) = app.digest(&id).await;
    assert_eq!(d["status"], "sending", "{d}");
    assert_eq!(d["fan_out"], "running", "{d}");
    assert_eq!(smtp.count(), 2_000);

    // Restarted on the same database, the fan-out is continued from its cursor.
    release_fan_out(&app).await;
    let _second = serve(&env);
    eventually("the digest is sent", Duration::from_secs(90), || async {
        app.text(&format!("SELECT status FROM digests WHERE id = '{id}'"))
            .await
            == "sent"
    })
    .await;
    assert_once_each(&smtp, &confirmed);
    let (_, stats) = app.digest_stats(&id).await;
    assert_eq!(stats["fan_out"], "complete", "{stats}");
    assert_eq!(stats["recipients"], 3_000);
    assert_eq!(stats["sent"], 3_000);
    app.stop().await;
}

/// A fan-out's chunk wakes the process's idle workers once it has committed its mail, so the
/// first message does not wait for a worker's next poll (up to a second: the first of
/// 1,000,000 left 1.05 s after the fan-out started on SQLite). Other nodes' workers hear a
/// NOTIFY (signup.rs).
#[tokio::test]
async fn a_chunk_wakes_the_idle_workers_of_its_process() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    helpers::seed(&app, &[("confirmed", 10)], "example.com").await;
    let id = scheduled_digest(&app).await;
    let wake = app.app.store.wake();
    // Whatever woke it before (nothing should have) is not what this test is about.
    let _ = tokio::time::timeout(Duration::from_millis(10), wake.notified()).await;
    let now = Utc::now().timestamp_millis();
    let made = app
        .app
        .store
        .start_fan_out(&id, now + 3_600_000, now, 100)
        .await
        .expect("fan-out");
    assert_eq!(made, Some((10, true)));
    assert!(
        tokio::time::timeout(Duration::from_millis(10), wake.notified())
            .await
            .is_ok(),
        "the chunk left no wake-up for an idle worker"
    );
    app.stop().await;
}
