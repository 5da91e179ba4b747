//! The delivery engine under load and faults: TCP_NODELAY, rate limits, throttling,
//! auto-pause, a SIGKILLed worker process, graceful shutdown, a relay that goes away.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::helpers::{
    self, Options, SmtpServer, TestApp, WAIT, eventually, seed, spawn_squeeze, terminate, wait_exit,
};
use reqwest::StatusCode;

fn opts(smtp: &SmtpServer, settings: &[(&str, &str)]) -> Options {
    Options {
        smtp_url: Some(smtp.url()),
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Options::default()
    }
}

/// Runs a worker until the SMTP server has received `n` messages, then stops it gracefully.
async fn run_worker_until(
    app: &TestApp,
    smtp: &SmtpServer,
    n: usize,
    timeout: Duration,
) -> Vec<helpers::smtp::Received> {
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(app.app.worker().run(stop.clone()));
    let got = smtp.wait_for(n, timeout).await;
    stop.cancel();
    worker.await.expect("join").expect("worker");
    got
}

/// Messages per second between the first and the last arrival.
fn achieved_rate(arrivals: &[Instant]) -> f64 {
    let first = arrivals.iter().min().copied().expect("arrivals");
    let last = arrivals.iter().max().copied().expect("arrivals");
    (arrivals.len() - 1) as f64 / last.duration_since(first).as_secs_f64()
}

#[tokio::test]
async fn one_connection_sends_200_messages_without_the_nagle_stall() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..opts(&smtp, &[("concurrency", "1")])
    })
    .await;
    seed(&app, &[("confirmed", 200)], "example.com").await;
    app.send_digest_now().await;
    let start = Instant::now();
    let got = run_worker_until(&app, &smtp, 200, Duration::from_secs(30)).await;
    let elapsed = got.iter().map(|m| m.at).max().expect("arrivals") - start;
    // With Nagle on, every message waits ~40 ms for a delayed ACK: 200 take 8 s or more.
    println!(
        "200 messages over {} connection(s): {elapsed:?}",
        smtp.connections()
    );
    assert_eq!(smtp.connections(), 1);
    assert!(
        elapsed < Duration::from_secs(2),
        "took {elapsed:?}: is TCP_NODELAY still set?"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_global_rate_holds_across_connections() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..opts(
            &smtp,
            &[("rate", "200"), ("burst", "5"), ("concurrency", "4")],
        )
    })
    .await;
    seed(&app, &[("confirmed", 500)], "example.com").await;
    app.send_digest_now().await;
    let got = run_worker_until(&app, &smtp, 500, Duration::from_secs(30)).await;
    let rate = achieved_rate(&got.iter().map(|m| m.at).collect::<Vec<_>>());
    println!(
        "achieved {rate:.0} msg/s at a limit of 200/s over {} connections",
        smtp.connections()
    );
    assert!(
        smtp.connections() >= 2,
        "several connections shared one limit"
    );
    // The upper bound is the limit (a limiter per connection would reach 4 x 200/s); the lower
    // one catches a limit split between the connections (4 x 50/s) with room for a loaded
    // machine (150/s was missed once on PostgreSQL while CI shared the two cores).
    assert!((100.0..=250.0).contains(&rate), "achieved {rate:.0}/s");
    app.stop().await;
}

#[tokio::test]
async fn a_per_domain_limit_paces_only_that_domain() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..opts(
            &smtp,
            &[("domain_rates", "slow.example=40"), ("concurrency", "4")],
        )
    })
    .await;
    seed(&app, &[("confirmed", 40)], "slow.example").await;
    seed(&app, &[("confirmed", 40)], "fast.example").await;
    app.send_digest_now().await;
    let got = run_worker_until(&app, &smtp, 80, Duration::from_secs(30)).await;
    let slow: Vec<Instant> = got
        .iter()
        .filter(|m| m.rcpts[0].ends_with("@slow.example"))
        .map(|m| m.at)
        .collect();
    assert_eq!(slow.len(), 40);
    let rate = achieved_rate(&slow);
    println!("slow.example: {rate:.1} msg/s at a limit of 40/s");
    assert!((30.0..=50.0).contains(&rate), "achieved {rate:.1}/s");
    app.stop().await;
}

#[tokio::test]
async fn a_throttling_reply_cools_the_domain_down_and_nothing_is_lost() {
    let smtp = SmtpServer::start().await;
    smtp.faults().rcpt_replies.insert(
        "confirmed0@cool.example".into(),
        ["421 4.7.0 Too many messages, slow down".to_owned()].into(),
    );
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..opts(&smtp, &[("throttle_cooldown", "1s"), ("concurrency", "1")])
    })
    .await;
    seed(&app, &[("confirmed", 10)], "cool.example").await;
    // The throttled recipient comes first: a fan-out's deliveries are claimed in the order
    // of their subscribers' ids.
    app.exec("UPDATE subscribers SET id = '0' WHERE email = 'confirmed0@cool.example'")
        .await;
    app.send_digest_now().await;
    run_worker_until(&app, &smtp, 10, WAIT).await;
    let attempts = smtp.rcpt_attempts();
    let throttled = attempts
        .iter()
        .find(|a| a.reply.starts_with("421"))
        .expect("the 421")
        .at;
    let after: Vec<_> = attempts.iter().filter(|a| a.at > throttled).collect();
    assert!(!after.is_empty());
    for a in after {
        let gap = a.at.duration_since(throttled);
        assert!(
            gap >= Duration::from_millis(900),
            "{} was tried {gap:?} after the 421",
            a.rcpt
        );
    }
    // Deferring for a cool-down costs no attempt.
    assert_eq!(
        app.scalar("SELECT MAX(attempts) FROM deliveries WHERE subscriber_id <> '0'")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failing_digest_pauses_itself_and_resumes_without_resending() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..opts(
            &smtp,
            &[
                ("pause_window", "20"),
                ("pause_threshold", "20%"),
                ("concurrency", "2"),
            ],
        )
    })
    .await;
    seed(&app, &[("confirmed", 80)], "example.com").await;
    for i in (0..80).step_by(2) {
        smtp.faults().rcpt_always.insert(
            format!("confirmed{i}@example.com"),
            "550 5.7.1 Relaying denied".into(),
        );
    }
    let id = app.send_digest_now().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(app.app.worker().run(stop.clone()));
    eventually("the digest pauses itself", WAIT, || async {
        app.text(&format!("SELECT status FROM digests WHERE id = '{id}'"))
            .await
            == "paused"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reason = app
        .text(&format!(
            "SELECT paused_reason FROM digests WHERE id = '{id}'"
        ))
        .await;
    assert!(reason.contains("paused automatically"), "{reason}");
    let queued = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{id}' AND status = 'queued'"
        ))
        .await;
    assert!(queued > 0, "the pause stopped the run before the end");
    let sent_at_pause = smtp.count();

    // The relay is fixed; an editor resumes through the API.
    smtp.faults().rcpt_always.clear();
    assert_eq!(app.resume(&id).await.0, StatusCode::OK);
    app.tick_until_sent(&id, WAIT).await;
    stop.cancel();
    worker.await.expect("join").expect("worker");
    let mut per: HashMap<String, usize> = HashMap::new();
    for m in smtp.received() {
        *per.entry(m.rcpts[0].clone()).or_default() += 1;
    }
    assert!(per.values().all(|n| *n == 1), "nobody got two copies");
    assert!(smtp.count() > sent_at_pause);
    let failed = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{id}' AND status = 'failed'"
        ))
        .await;
    assert_eq!(smtp.count() as i64 + failed, 80);
    app.stop().await;
}

#[tokio::test]
async fn pause_and_resume_by_hand_continue_where_they_stopped() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(opts(&smtp, &[("rate", "100"), ("burst", "1")])).await;
    seed(&app, &[("confirmed", 150)], "example.com").await;
    let id = app.send_digest_now().await;
    smtp.wait_for_at_least(20, WAIT).await;
    assert_eq!(
        app.pause(&id, "typo in the subject").await.0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_pause = smtp.count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.count(), at_pause, "nothing goes out while paused");
    assert!(at_pause < 150);
    assert_eq!(app.resume(&id).await.0, StatusCode::OK);
    smtp.wait_for(150, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.count(), 150, "resume never re-sends");
    app.stop().await;
}

#[tokio::test]
async fn a_relay_that_goes_away_and_comes_back_gets_everything() {
    let smtp = SmtpServer::start().await;
    let addr = smtp.addr;
    smtp.stop();
    let app = TestApp::spawn(&smtp).await;
    seed(&app, &[("confirmed", 5)], "example.com").await;
    app.send_digest_now().await;
    eventually("connection failures are recorded", WAIT, || async {
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE last_error LIKE '%cannot connect%'")
            .await
            == 5
    })
    .await;
    let back = SmtpServer::start_on(&addr.to_string()).await;
    app.wait_all_sent(&back, 5).await;
    app.stop().await;
}

/// Worst case of messages sent but not yet recorded when a worker dies: those on the wire
/// (`concurrency`), plus outcomes queued for the recorder and the batch it is writing (at
/// most as many).
fn unrecorded_bound(concurrency: usize) -> usize {
    concurrency + 2 * squeeze::worker::UNRECORDED_PER_CONNECTION * concurrency
}

#[tokio::test]
async fn a_sigkilled_worker_loses_nothing_and_duplicates_only_what_was_in_flight() {
    let smtp = SmtpServer::start().await;
    let web = TestApp::spawn_with(Options {
        worker: false,
        ..opts(&smtp, &[])
    })
    .await;
    let confirmed = seed(&web, &[("confirmed", 2000)], "example.com").await;
    web.send_digest_now().await;
    let db = web.database.clone();
    web.stop().await;
    let env = [
        ("SQUEEZE_SMTP_URL", smtp.url()),
        ("SQUEEZE_RATE", "1500".to_owned()),
        ("SQUEEZE_CONCURRENCY", "4".to_owned()),
    ];

    let mut first = spawn_squeeze(&["worker"], &db, &env);
    smtp.wait_for_at_least(600, Duration::from_secs(30)).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let at_kill = smtp.count();
    assert!(at_kill < 2000, "killed mid-run ({at_kill} sent)");

    let mut second = spawn_squeeze(&["worker"], &db, &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    let per = loop {
        let mut per: HashMap<String, Vec<String>> = HashMap::new();
        for m in smtp.received() {
            per.entry(m.rcpts[0].clone())
                .or_default()
                .push(m.header("Message-ID").unwrap_or_default());
        }
        if per.len() == 2000 || Instant::now() > deadline {
            break per;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    terminate(&second);
    let status = wait_exit(&mut second, Duration::from_secs(15)).await;
    assert!(status.success(), "graceful exit after SIGTERM: {status:?}");

    assert!(
        confirmed.iter().all(|e| per.contains_key(e)),
        "every subscriber received the digest"
    );
    let duplicates = smtp.count() - 2000;
    println!(
        "killed after {at_kill} messages; {duplicates} duplicates (bound {})",
        unrecorded_bound(4)
    );
    assert!(duplicates <= unrecorded_bound(4), "{duplicates} duplicates");
    // A duplicate is the same message: receivers can tell by its Message-ID.
    for ids in per.values().filter(|v| v.len() > 1) {
        assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    }
}

#[tokio::test]
async fn sigterm_finishes_messages_on_the_wire_and_hands_back_the_rest() {
    let smtp = SmtpServer::start().await;
    smtp.faults().data_delay = Some(Duration::from_millis(300));
    let web = TestApp::spawn_with(Options {
        worker: false,
        ..opts(&smtp, &[])
    })
    .await;
    seed(&web, &[("confirmed", 60)], "example.com").await;
    web.send_digest_now().await;
    let db = web.database.clone();
    web.stop().await;
    let env = [
        ("SQUEEZE_SMTP_URL", smtp.url()),
        ("SQUEEZE_CONCURRENCY", "4".to_owned()),
    ];
    let mut worker = spawn_squeeze(&["worker"], &db, &env);
    smtp.wait_for_at_least(4, WAIT).await;
    terminate(&worker);
    let status = wait_exit(&mut worker, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));

    let pool = db.pool().await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .expect(sql)
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM deliveries WHERE status = 'sending'").await,
        0,
        "no lease left behind"
    );
    let sent = count("SELECT COUNT(*) FROM deliveries WHERE status = 'sent'").await;
    assert_eq!(
        sent as usize,
        smtp.count(),
        "every message the server accepted is recorded as sent"
    );
    let queued = count("SELECT COUNT(*) FROM deliveries WHERE status = 'queued'").await;
    assert_eq!(sent + queued, 60);
    assert!(queued > 0, "stopped mid-run");
    assert_eq!(
        count("SELECT MAX(attempts) FROM deliveries WHERE status = 'queued'").await,
        0,
        "handed back unspent"
    );
    pool.close().await;
}
