//! `--kill-restart`: a `squeeze serve` SIGKILLed in the middle of a fan-out and restarted on
//! the same database (issue 23, point 1). The digest falls due a moment after the first
//! process is up (so the first message's delay from due is the product's: the scheduler's
//! tick, the first chunk, the worker's wake-up and claim); the first process is killed once
//! the fan-out has written `--kill-at` of the list, while its digest's `fan_out` is still
//! `running`; a second process on the same database continues it from its cursor. Reported:
//! the time to the fan-out's completion and to the last message, and, from the rows, that
//! every confirmed subscriber has exactly one delivery and every delivery was sent once.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use sqlx::{AnyConnection, Connection as _};
use squeeze::domain::clock::now_ms;
use squeeze_test_support::process::Reaped;

use crate::{Args, POLL, free_port, squeeze_process, tail};

/// How long after the first process starts the digest falls due: it is up and ticking by then.
pub const DUE_AFTER_MS: i64 = 3_000;

/// The digest's fan-out as its row says: recipients so far, whether the last chunk is written.
async fn fan_out(conn: &mut AnyConnection, digest_id: &str) -> Result<(i64, bool, String)> {
    let (recipients, done, status): (i64, i64, String) = sqlx::query_as(
        "SELECT CAST(COALESCE(recipients, 0) AS BIGINT), CASE WHEN fanned_out_at IS NULL THEN 0 ELSE 1 END, status
         FROM digests WHERE id = $1",
    )
    .bind(digest_id)
    .fetch_one(conn)
    .await?;
    Ok((recipients, done == 1, status))
}

fn serve(
    args: &Args,
    dir: &Path,
    url: &str,
    sink_port: u16,
    name: &str,
) -> Result<(Reaped, std::path::PathBuf)> {
    let bind = format!("127.0.0.1:{}", free_port()?);
    let (process, log) =
        squeeze_process(args, dir, url, sink_port, &["serve", "--bind", &bind], name)?;
    println!(
        "{name}: squeeze serve pid {}, log {}",
        process.0.id(),
        log.display()
    );
    Ok((process, log))
}

/// Runs the scenario on a seeded database whose digest `digest_id` falls due at `due_at`.
pub async fn run(
    args: &Args,
    dir: &Path,
    url: &str,
    sink_port: u16,
    digest_id: &str,
    due_at: i64,
) -> Result<()> {
    let n = i64::try_from(args.subscribers).context("--subscribers")?;
    // At least one chunk is written before the kill, and at least one is left after it.
    let kill_at = ((n as f64 * args.kill_at) as i64).clamp(1, n - 1);
    let deadline = Instant::now() + Duration::from_secs(120 + args.subscribers / 100);
    let mut conn = AnyConnection::connect(url).await?;

    let started = Instant::now();
    let (mut first, first_log) = serve(args, dir, url, sink_port, "serve-1")?;
    loop {
        if let Some(status) = first.0.try_wait()? {
            bail!(
                "the first squeeze serve exited early ({status}); its log:\n{}",
                tail(&first_log)
            );
        }
        let (recipients, done, _) = fan_out(&mut conn, digest_id).await?;
        ensure!(
            !done,
            "the fan-out completed ({recipients} recipients) before the kill point ({kill_at}): \
             use a larger --subscribers or a smaller --kill-at"
        );
        if recipients >= kill_at {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the fan-out did not reach {kill_at} recipients in time; log:\n{}",
            tail(&first_log)
        );
        tokio::time::sleep(POLL / 5).await;
    }
    first.0.kill().context("SIGKILL")?;
    first.0.wait().context("reaping the first squeeze serve")?;
    let killed_after = started.elapsed();
    let (recipients, done, status) = fan_out(&mut conn, digest_id).await?;
    let sent_before: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries WHERE digest_id = $1 AND status = 'sent'",
    )
    .bind(digest_id)
    .fetch_one(&mut conn)
    .await?;
    println!(
        "SIGKILL after {:.2} s: digest {status}, fan_out {}, {recipients} of {n} recipients fanned out, {sent_before} sent",
        killed_after.as_secs_f64(),
        if done { "complete" } else { "running" }
    );
    ensure!(!done, "the fan-out was complete when the process died");

    let restarted = Instant::now();
    let (mut second, second_log) = serve(args, dir, url, sink_port, "serve-2")?;
    let mut fanned_out = None;
    loop {
        if let Some(status) = second.0.try_wait()? {
            bail!(
                "the second squeeze serve exited early ({status}); its log:\n{}",
                tail(&second_log)
            );
        }
        let (_, done, status) = fan_out(&mut conn, digest_id).await?;
        if done && fanned_out.is_none() {
            fanned_out = Some(restarted.elapsed());
        }
        if status == "sent" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the digest was not sent in time (status {status}); log:\n{}",
            tail(&second_log)
        );
        tokio::time::sleep(POLL).await;
    }
    let all_sent = restarted.elapsed();
    let status = second.terminate(Duration::from_secs(40)).await?;
    ensure!(
        status.success(),
        "the second squeeze serve exited with {status} on SIGTERM"
    );

    let (deliveries, distinct, sent, started_at, first_sent): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT COUNT(*), COUNT(DISTINCT subscriber_id),
                    COUNT(CASE WHEN status = 'sent' THEN 1 END),
                    (SELECT started_at FROM digests WHERE id = $1),
                    MIN(sent_at)
             FROM deliveries WHERE digest_id = $1",
        )
        .bind(digest_id)
        .fetch_one(&mut conn)
        .await?;
    let confirmed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM subscribers WHERE status = 'confirmed'")
            .fetch_one(&mut conn)
            .await?;
    let (recipients, _, _) = fan_out(&mut conn, digest_id).await?;
    conn.close().await?;
    println!(
        "restarted: fan-out complete {:.2} s after the restart, every message sent {:.2} s after it",
        fanned_out.unwrap_or(all_sent).as_secs_f64(),
        all_sent.as_secs_f64()
    );
    if sent_before > 0 {
        println!(
            "first message sent {} ms after the digest fell due ({} ms after the fan-out started), by the first process",
            first_sent - due_at,
            first_sent - started_at
        );
    } else {
        println!(
            "the first process sent nothing before it was killed: first message {} ms after the digest fell due, by the restarted one",
            first_sent - due_at
        );
    }
    println!(
        "rows: {deliveries} deliveries, {distinct} distinct subscribers, {confirmed} confirmed, {sent} sent, recipients {recipients}"
    );
    ensure!(
        deliveries == distinct && distinct == confirmed && sent == confirmed,
        "NOT exactly once: {deliveries} deliveries, {distinct} distinct subscribers, \
         {confirmed} confirmed, {sent} sent"
    );
    println!("exactly once: every confirmed subscriber has one delivery, and it was sent");
    Ok(())
}

/// When the kill-restart run's digest falls due.
pub fn due_at() -> i64 {
    now_ms() + DUE_AFTER_MS
}
