//! The scheduler's own loop (`Scheduler::run`), not a test's ticks: it wakes when something
//! falls due, and when an editor schedules in this process, instead of waiting for its tick.
//! The tick is made a minute long, so a digest that waited for it would fail the test.

use std::time::Duration;

use crate::helpers::{self, Options, SmtpServer, TestApp, at};
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::json;
use squeeze::domain::DailySchedule;
use tokio_util::sync::CancellationToken;

/// Far longer than anything here should take: only a scheduler that waited for it is late.
const LONG_TICK: Duration = Duration::from_secs(60);
/// Generous, and well before `LONG_TICK`.
const WELL_BEFORE_THE_TICK: Duration = Duration::from_secs(20);

fn smtp_opts(smtp: &SmtpServer) -> Options {
    Options {
        smtp_url: Some(smtp.url()),
        ..Options::default()
    }
}

async fn draft(app: &TestApp) -> String {
    app.add_item("One").await;
    app.create_digest(json!("pending")).await
}

/// The scheduler's loop with a minute's tick, told on the returned watch when it leads.
fn run_scheduler(
    app: &TestApp,
    stop: &CancellationToken,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::watch::Receiver<bool>,
) {
    let (leading, led) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(
        app.app
            .scheduler()
            .with_tick(LONG_TICK)
            .with_leading(leading)
            .run(stop.clone()),
    );
    (run, led)
}

#[tokio::test]
async fn a_digest_due_between_two_ticks_goes_out_when_due_not_at_the_next_tick() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(smtp_opts(&smtp)).await;
    helpers::seed(&app, &[("confirmed", 3)], "example.com").await;
    let id = draft(&app).await;
    let due = Utc::now() + chrono::Duration::milliseconds(1_500);
    let (status, body) = app.schedule(&id, &due.to_rfc3339()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Its first tick finds nothing due yet; the next is a minute away.
    let stop = CancellationToken::new();
    let (run, _led) = run_scheduler(&app, &stop);
    smtp.wait_for(3, WELL_BEFORE_THE_TICK).await;
    let started_at = app
        .scalar(&format!("SELECT started_at FROM digests WHERE id = '{id}'"))
        .await;
    assert!(
        started_at >= due.timestamp_millis(),
        "fanned out at {started_at}, before it was due at {}",
        due.timestamp_millis()
    );
    stop.cancel();
    run.await.expect("scheduler stopped");
    app.stop().await;
}

#[tokio::test]
async fn a_digest_sent_now_wakes_the_scheduler_of_this_process() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(smtp_opts(&smtp)).await;
    helpers::seed(&app, &[("confirmed", 3)], "example.com").await;
    let id = draft(&app).await;

    let stop = CancellationToken::new();
    let (run, mut led) = run_scheduler(&app, &stop);
    led.wait_for(|leading| *leading).await.expect("leading");
    // Time for its first tick, which finds nothing, to end: then it sleeps for a minute
    // (were the digest scheduled before that tick read, the test would pass without the
    // wake, never fail with it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = app.schedule_now(&id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    smtp.wait_for(3, WELL_BEFORE_THE_TICK).await;
    stop.cancel();
    run.await.expect("scheduler stopped");
    app.stop().await;
}

#[tokio::test]
async fn a_tick_says_when_a_digest_or_the_daily_schedule_next_falls_due() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..smtp_opts(&smtp)
    })
    .await;
    let scheduler = app.app.scheduler();
    let now = Utc::now();
    assert_eq!(
        scheduler.tick(now).await.expect("tick").next_due,
        None,
        "nothing scheduled"
    );

    let id = draft(&app).await;
    let due = now + chrono::Duration::hours(3);
    let (status, body) = app.schedule(&id, &due.to_rfc3339()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let next = scheduler.tick(now).await.expect("tick").next_due;
    assert_eq!(
        next.map(|t| t.timestamp_millis()),
        Some(due.timestamp_millis())
    );

    // A daily schedule whose next firing comes first.
    let daily = DailySchedule::parse("07:00", "Europe/Madrid", true).expect("schedule");
    let set = at("2026-03-28T09:00:00Z");
    app.app
        .editor()
        .set_schedule(&daily, set)
        .await
        .expect("set");
    let next = scheduler.tick(set).await.expect("tick").next_due;
    assert_eq!(
        next,
        Some(at("2026-03-29T05:00:00Z")),
        "07:00 in Madrid, CEST"
    );
    app.stop().await;
}
