//! `squeeze-bench --history N` (issue 23, retention): whether a year of history stays cheap.
//!
//! Seeds the subscribers, measures the claim (100 deliveries), the outcome write (100 sent),
//! the fan-out to every subscriber and `/api/stats` (the list's and a digest's) on an empty
//! history; then seeds N delivery rows of past digests by SQL (one `INSERT … SELECT` over the
//! subscribers per digest, not by sending), measures the same with that history before and
//! after the retention job's roll-up. Then the job's effect on a real send: a digest to every
//! subscriber sent by a `squeeze worker` process through the smtp-sink, alone, and again
//! while the job deletes the history; it prints both rates, their ratio and the job's rows/s
//! beside the send, then lets the job go on to the end (or `--retention-seconds`), prints
//! its rate over what it deleted, and sends once more with the job stopped (the control).

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
    // Started first so a missing or broken sink fails the run before minutes of seeding.
    let sink = super::Sink::start(args.smtp_sink.as_deref(), dir).await?;
    if args.database == super::Database::Postgres {
        println!("PostgreSQL: {}", postgres_settings(url).await?);
    }
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

    // The deletion beside a real send: the same digest sent to the N subscribers by a
    // `squeeze worker` process through the smtp-sink, alone and then while the job deletes.
    let alone = send(&app, args, dir, url, sink.port).await?;
    // What the measures and that send finished is rolled up first, so the job beside the
    // next send deletes from its first batch.
    squeeze::service::Retention::new(app.store.clone(), metrics()?, None)
        .run_once(now_ms())
        .await?;
    println!(
        "send alone: {n} emails, {:.0} emails/s end to end (digest due -> last sent, fan-out included; {:.2} s), {:.0}/s from the fan-out's end",
        alone.end_to_end_rate(n),
        alone.end_to_end,
        alone.pipeline_rate(n)
    );
    let keep = Some(Duration::from_millis(90 * DAY_MS as u64));
    let job = |pause: Duration| {
        let job = squeeze::service::Retention::new(app.store.clone(), app.metrics.clone(), keep)
            .with_pause(pause);
        tokio::spawn(async move { job.run_once(now_ms()).await })
    };
    let deleted_before = deleted_total(&app).await?;
    let started = Instant::now();
    let mut handle = job(Duration::ZERO);
    let mut pauses = vec![None];
    pauses.extend(
        args.retention_pause
            .map(|ms| Some(Duration::from_millis(ms))),
    );
    for pause in pauses {
        if let Some(pause) = pause {
            // The same job, resting between batches: it starts again where the last stopped
            // (the digests not pruned yet; a batch cut off rolled back or committed whole).
            handle.abort();
            handle = job(pause);
        }
        let window = Instant::now();
        let at_send = deleted_total(&app).await?;
        let beside = send(&app, args, dir, url, sink.port).await?;
        let during = deleted_total(&app).await? - at_send;
        let window = window.elapsed().as_secs_f64();
        let how = pause.map_or("no pause".to_owned(), |p| {
            format!("{} ms pause between batches", p.as_millis())
        });
        println!(
            "send beside the retention job ({how}): {:.0} emails/s end to end ({:.2} s), {:.0}/s from the fan-out's end; {:.2}x and {:.2}x of alone",
            beside.end_to_end_rate(n),
            beside.end_to_end,
            beside.pipeline_rate(n),
            beside.end_to_end_rate(n) / alone.end_to_end_rate(n),
            beside.pipeline_rate(n) / alone.pipeline_rate(n)
        );
        println!(
            "retention beside the send ({how}): {during} rows deleted in {window:.1} s = {:.0} rows/s (the worker's start, fan-out, send and the worker's stop)",
            during as f64 / window
        );
    }
    if args.retention_pause.is_some() {
        handle.abort();
        handle = job(Duration::ZERO);
    }
    // Then the job alone, to the end or to --retention-seconds.
    let alone_from = Instant::now();
    let at_alone = deleted_total(&app).await?;
    let bound = args.retention_seconds.map(Duration::from_secs);
    let mut finished = false;
    loop {
        if handle.is_finished() {
            handle.await??;
            finished = true;
            break;
        }
        if bound.is_some_and(|b| started.elapsed() >= b) {
            handle.abort();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deleted = deleted_total(&app).await?;
    let alone_secs = alone_from.elapsed().as_secs_f64();
    println!(
        "retention alone after the sends: {} rows in {alone_secs:.1} s = {:.0} rows/s",
        deleted - at_alone,
        (deleted - at_alone) as f64 / alone_secs
    );
    let secs = started.elapsed().as_secs_f64();
    let deleted = deleted - deleted_before;
    println!(
        "retention: {deleted} rows deleted of {} in {secs:.1} s = {:.0} rows/s overall ({})",
        digests * n,
        deleted as f64 / secs,
        if finished {
            "all of the history"
        } else {
            "stopped at --retention-seconds"
        }
    );
    // The control: the same send again with the job stopped, so a difference between the
    // first send and those beside the job is the job's, not the later sends' (a larger
    // table, the deleted rows left in it, a busier cache).
    let after = send(&app, args, dir, url, sink.port).await?;
    println!(
        "send alone again, the job stopped: {:.0} emails/s end to end ({:.2} s), {:.0}/s from the fan-out's end; {:.2}x of the first",
        after.end_to_end_rate(n),
        after.end_to_end,
        after.pipeline_rate(n),
        after.end_to_end_rate(n) / alone.end_to_end_rate(n)
    );
    app.close().await;
    drop(sink);
    Ok(())
}

/// Delivery records the retention job has deleted so far, as `/metrics` says.
async fn deleted_total(app: &App) -> Result<u64> {
    let text = app.metrics.render(&app.store, now_ms()).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("squeeze_retention_deleted_total "))
        .and_then(|v| v.trim().parse().ok())
        .context("no squeeze_retention_deleted_total in /metrics")
}

/// One real send's figures (seconds).
struct Sent {
    /// From the digest falling due (the fan-out's start) to the last message sent.
    end_to_end: f64,
    /// From the fan-out's end (or the first message, if earlier) to the last sent.
    pipeline: f64,
}

impl Sent {
    fn end_to_end_rate(&self, n: u64) -> f64 {
        n as f64 / self.end_to_end.max(1e-3)
    }

    fn pipeline_rate(&self, n: u64) -> f64 {
        n as f64 / self.pipeline.max(1e-3)
    }
}

/// A digest to every subscriber, sent as the bench's pipeline sends it: on PostgreSQL a
/// `squeeze worker` process waits on LISTEN while this process fans out (as another node's
/// scheduler would); on SQLite the worker process starts after the fan-out. Waits until
/// every delivery of it is sent.
async fn send(
    app: &App,
    args: &super::Args,
    dir: &std::path::Path,
    url: &str,
    port: u16,
) -> Result<Sent> {
    let n = args.subscribers;
    let waiting = if args.database == super::Database::Postgres {
        let listening = super::listeners(url).await?;
        let worker = super::Worker::start(args, dir, url, port)?;
        Some(worker.wait_listening(url, listening).await?)
    } else {
        None
    };
    let id = super::make_digest(app, args.items, args.summary_chars, now_ms()).await?;
    let due_at = now_ms();
    let report = app.scheduler().tick(chrono::Utc::now()).await?;
    anyhow::ensure!(
        report
            .fanned_out
            .iter()
            .any(|(d, count)| *d == id && *count == n),
        "the digest was not fanned out to {n}"
    );
    let fanned_out = now_ms();
    let worker = match waiting {
        Some(worker) => worker,
        None => super::Worker::start(args, dir, url, port)?,
    };
    let figures = super::pipeline(worker, args, url, Some(fanned_out), &id).await?;
    finish_all(url).await?;
    Ok(Sent {
        end_to_end: (figures.last_sent_at - due_at).max(1) as f64 / 1000.0,
        pipeline: figures.seconds,
    })
}

/// The server settings the figures depend on (autovacuum off leaves every deleted row's
/// space and index entries in place until something vacuums).
async fn postgres_settings(url: &str) -> Result<String> {
    let mut conn = AnyConnection::connect(url).await?;
    let mut out = Vec::new();
    for name in [
        "autovacuum",
        "shared_buffers",
        "synchronous_commit",
        "max_wal_size",
    ] {
        let value: String = sqlx::query_scalar(&format!("SHOW {name}"))
            .fetch_one(&mut conn)
            .await?;
        out.push(format!("{name} = {value}"));
    }
    conn.close().await?;
    Ok(out.join(", "))
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

/// What is left queued becomes sent and the digests sending are sent: the measure's digest
/// out of the way of the next (fixture SQL).
async fn finish_all(url: &str) -> Result<()> {
    let now = now_ms();
    let mut conn = AnyConnection::connect(url).await?;
    for sql in [
        "DELETE FROM delivery_queue",
        "DELETE FROM queued_chunks",
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
