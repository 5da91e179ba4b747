//! The jobs that run where the scheduler does (the feed poller, the retention job): one
//! node of an installation does each, the one whose scheduler holds the role (its advisory
//! lock on PostgreSQL; the one process on SQLite), and hands it on when it loses the role.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Runs `job`, then waits `every`, again and again until `shutdown`, only while `leading`
/// says this node holds the scheduler role; a job under way when shutdown comes is dropped
/// (each job's writes are transactions: a dropped one leaves nothing half done).
pub async fn every_while_leading<F, Fut>(
    every: Duration,
    shutdown: CancellationToken,
    mut leading: watch::Receiver<bool>,
    mut job: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        if !*leading.borrow_and_update() {
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = leading.changed() => if changed.is_err() { break },
            }
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = job() => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
}
