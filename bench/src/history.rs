//! `squeeze-bench --history N` (issue 23, retention): whether a year of history stays cheap.
//!
//! Seeds the subscribers, measures the claim (100 deliveries), the outcome write (100 sent),
//! the fan-out to every subscriber and `/api/stats` (the list's and a digest's) on an empty
//! history; then seeds N delivery rows of past digests by SQL (one `INSERT … SELECT` over the
//! subscribers per digest, not by sending), measures the same with that history before and
//! after the retention job's roll-up; then runs the job to delete it (rows/s) while a loop
//! of claims and outcome writes runs beside it, and prints that loop's rate with and without
//! the job.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use sqlx::{AnyConnection, Connection as _};
use squeeze::app::App;
use squeeze::domain::clock::now_ms;
use squeeze::domain::delivery::Outcome;
use squeeze::store::Recorded;

const DAY_MS: i64 = 86_400_000;
const CLAIM: u32 = 100;
const WORKER: &str = "bench-history";

/// One set of figures, in milliseconds.
struct Costs {
    claim: f64,
    record: f64,
    fan_out: f64,
    stats: f64,
    digest_stats: f64,
}

pub(crate) async fn run(
    args: &super::Args,
    dir: &std::path::Path,
    url: &str,
    rows: u64,
) -> Result<()> {
    let n = args.subscribers;
    println!(
        "squeeze-bench --history {rows}: {n} subscribers, {}",
        args.database.name()
    );
    println!("machine: {}", super::machine());
    let app = App::start(super::config(args, url, dir)?)
        .await
        .context("starting Squeeze")?;
    super::seed(url, n).await.context("seeding subscribers")?;
    let empty = measure(&app, url, args, n).await?;

    let started = Instant::now();
    let digests = seed_history(url, rows, n).await?;
    let seeded = started.elapsed().as_secs_f64();
    println!(
        "history: {} delivery rows of {digests} past digests in {seeded:.1} s (SQL, not sending)",
        digests * n
    );
    let raw = measure(&app, url, args, n).await?;
    // The job's first half alone (retention 0): every finished digest rolled up.
    let started = Instant::now();
    let rolled = squeeze::service::Retention::new(app.store.clone(), metrics()?, None)
        .run_once(now_ms())
        .await?;
    println!(
        "roll-up: {} digests in {} ms",
        rolled.rolled_up,
        started.elapsed().as_millis()
    );
    let rolled_up = measure(&app, url, args, n).await?;

    println!(
        "{:<28}{:>12}{:>20}{:>20}",
        "ms per", "empty", "history", "history rolled up"
    );
    for (what, f) in [
        ("claim of 100", (|c: &Costs| c.claim) as fn(&Costs) -> f64),
        ("outcomes of 100 (sent)", |c| c.record),
        ("fan-out of all", |c| c.fan_out),
        ("/api/stats (overall)", |c| c.stats),
        ("/api/digests/{id}/stats", |c| c.digest_stats),
    ] {
        println!(
            "{what:<28}{:>12.2}{:>20.2}{:>20.2}",
            f(&empty),
            f(&raw),
            f(&rolled_up)
        );
    }

    // The deletion, with a claim-and-record loop beside it.
    let alone = claim_loop(&app, url, args, n, Duration::from_secs(5), None).await?;
    let job = squeeze::service::Retention::new(
        app.store.clone(),
        metrics()?,
        Some(Duration::from_millis(90 * DAY_MS as u64)),
    );
    let started = Instant::now();
    let handle = tokio::spawn(async move { job.run_once(now_ms()).await });
    let beside = claim_loop(&app, url, args, n, Duration::from_secs(3600), Some(&handle)).await?;
    let pruned = handle.await??;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "retention: {} rows deleted in {} batches in {secs:.1} s: {:.0} rows/s",
        pruned.deleted,
        pruned.batches,
        pruned.deleted as f64 / secs
    );
    println!(
        "claim+record of 100 beside it: {alone:.0} deliveries/s alone, {beside:.0}/s while the job deletes ({:.2}x)",
        beside / alone
    );
    app.close().await;
    Ok(())
}

fn metrics() -> Result<std::sync::Arc<squeeze::metrics::Metrics>> {
    Ok(std::sync::Arc::new(squeeze::metrics::Metrics::new()?))
}

/// The costs now: a fresh digest fanned out to everyone, claims and outcomes of it, the
/// statistics; the digest is then finished, so the next measure starts from an empty queue.
async fn measure(app: &App, url: &str, args: &super::Args, n: u64) -> Result<Costs> {
    let id = super::make_digest(app, args.items, args.summary_chars, now_ms()).await?;
    let started = Instant::now();
    let report = app.scheduler().tick(chrono::Utc::now()).await?;
    let fan_out = ms(started);
    anyhow::ensure!(
        report.fanned_out.len() == 1,
        "the digest was not fanned out"
    );
    let (mut claim, mut record, mut k) = (0.0, 0.0, 0.0);
    for _ in 0..20.min(n / u64::from(CLAIM)).max(1) {
        let (c, r) = claim_and_record(app).await?;
        claim += c;
        record += r;
        k += 1.0;
    }
    let mut stats = 0.0;
    let mut digest_stats = 0.0;
    for _ in 0..10 {
        let started = Instant::now();
        app.reporting().overall(now_ms()).await?;
        stats += ms(started);
        let started = Instant::now();
        app.reporting().digest(&id).await?;
        digest_stats += ms(started);
    }
    finish_all(url).await?;
    Ok(Costs {
        claim: claim / k,
        record: record / k,
        fan_out,
        stats: stats / 10.0,
        digest_stats: digest_stats / 10.0,
    })
}

/// One claim of 100 and its outcomes, each timed (ms).
async fn claim_and_record(app: &App) -> Result<(f64, f64)> {
    let now = now_ms();
    app.store
        .heartbeat(WORKER, "bench", now, Duration::from_secs(30), now + 60_000)
        .await?;
    let started = Instant::now();
    let claimed = app
        .store
        .claim(WORKER, now, Duration::from_secs(60), CLAIM)
        .await?;
    let claim = ms(started);
    let outcomes: Vec<Recorded> = claimed
        .into_iter()
        .map(|d| Recorded {
            delivery_id: d.id,
            claim_id: d.claim_id,
            kind: d.kind,
            subscriber_id: d.subscriber_id,
            outcome: Outcome::Sent,
        })
        .collect();
    let started = Instant::now();
    app.store.record(&outcomes, now_ms()).await?;
    Ok((claim, ms(started)))
}

/// Claims and records in a loop for `limit`, or until `until` ends; deliveries per second.
async fn claim_loop(
    app: &App,
    url: &str,
    args: &super::Args,
    n: u64,
    limit: Duration,
    until: Option<&tokio::task::JoinHandle<squeeze::store::StoreResult<squeeze::service::Pruned>>>,
) -> Result<f64> {
    super::make_digest(app, args.items, args.summary_chars, now_ms()).await?;
    app.scheduler().tick(chrono::Utc::now()).await?;
    let started = Instant::now();
    let (mut total, mut done) = (0u64, 0u64);
    while started.elapsed() < limit && until.is_none_or(|h| !h.is_finished()) {
        claim_and_record(app).await?;
        total += u64::from(CLAIM);
        done += u64::from(CLAIM);
        if done + u64::from(CLAIM) > n {
            // Out of deliveries: another digest.
            finish_all(url).await?;
            super::make_digest(app, args.items, args.summary_chars, now_ms()).await?;
            app.scheduler().tick(chrono::Utc::now()).await?;
            done = 0;
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    finish_all(url).await?;
    Ok(total as f64 / secs)
}

/// What is left queued becomes sent and the digests sending are sent: the measure's digest
/// out of the way of the next (fixture SQL).
async fn finish_all(url: &str) -> Result<()> {
    let now = now_ms();
    let mut conn = AnyConnection::connect(url).await?;
    for sql in [
        "DELETE FROM delivery_queue",
        "DELETE FROM claims",
        "UPDATE deliveries SET status = 'sent', sent_at = created_at + 1000
         WHERE status IN ('queued', 'sending')",
    ] {
        sqlx::query(sql).execute(&mut conn).await?;
    }
    sqlx::query(
        "UPDATE digests SET status = 'sent', finished_at = $1, fanned_out_at = COALESCE(fanned_out_at, $1)
         WHERE status = 'sending'",
    )
    .bind(now)
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// `rows` delivery rows (rounded up to whole digests of every subscriber) of past digests,
/// sent 100 days ago and earlier, one set-based statement per digest; returns how many
/// digests.
async fn seed_history(url: &str, rows: u64, n: u64) -> Result<u64> {
    let digests = rows.div_ceil(n);
    let mut conn = AnyConnection::connect(url).await?;
    let now = now_ms();
    for d in 0..digests {
        let at = now - (100 + d as i64) * DAY_MS;
        let id = format!("history-{d:05}");
        sqlx::query(
            "INSERT INTO digests (id, subject, status, recipients, started_at, finished_at,
                 fanned_out_at, created_at, updated_at)
             VALUES ($1, 'History', 'sent', $2, $3, $3 + 60000, $3, $3, $3)",
        )
        .bind(&id)
        .bind(n as i64)
        .bind(at)
        .execute(&mut conn)
        .await?;
        sqlx::query(
            "INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, attempts,
                 expires_at, created_at, sent_at, updated_at)
             SELECT $1 || s.id, 'digest', s.id, $1, 'sent', 1, $2 + 86400000, $2, $2 + 1000, $2
             FROM subscribers s",
        )
        .bind(&id)
        .bind(at)
        .execute(&mut conn)
        .await?;
        if d % 10 == 9 {
            println!("history: {} digests of {digests} seeded", d + 1);
        }
    }
    if url.starts_with("postgres") {
        sqlx::query("ANALYZE").execute(&mut conn).await?;
    }
    conn.close().await?;
    Ok(digests)
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}
