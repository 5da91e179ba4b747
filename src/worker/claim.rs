//! The claim loop: due deliveries are leased in batches (each claim commits before any SMTP
//! work) and handed to the senders through a bounded channel.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{CLAIMED_AHEAD, IDLE_POLL, Worker};
use crate::domain::clock::{Millis, now_ms};
use crate::store::ClaimedDelivery;

impl Worker {
    pub(super) async fn claim_loop(
        &self,
        job_tx: &mpsc::Sender<ClaimedDelivery>,
        shutdown: &CancellationToken,
    ) {
        let depth = job_tx.max_capacity();
        // Failed claims in a row: the pause after one doubles (1 s to 16 s), one ERROR when
        // claiming starts failing, one INFO when it works again (a full disk must not make a
        // hot loop or a flood of logs).
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            let room = job_tx.capacity();
            // Claim in large batches (each claim is a write transaction, whatever its size),
            // and early: a claim takes milliseconds, and senders that run dry meanwhile idle.
            // Profiled at 11,000 emails/s on PostgreSQL, claims made when half the queue was
            // free (11 ms each) left it empty two times in three.
            if room == 0 || room < depth / 4 {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(5)) => continue,
                }
            }
            // Nothing claimed is waiting (the worker has just been woken, or its senders ran
            // dry): a small claim first sets every connection going within milliseconds,
            // where a full one keeps them all idle while it runs (18 ms for 512 on
            // PostgreSQL); the next turn claims the rest.
            let room = if room == depth {
                room.min(self.settings.concurrency.get() * 2)
            } else {
                room
            };
            let room = u32::try_from(room).unwrap_or(u32::MAX);
            let claimed = match self
                .store
                .claim(&self.id, now_ms(), self.settings.lease, room)
                .await
            {
                Ok(c) => {
                    if failures > 0 {
                        info!(failures, "claiming deliveries works again");
                        failures = 0;
                    }
                    c
                }
                Err(e) => {
                    if failures == 0 && e.is_storage_fault() {
                        // The store has said it once, at ERROR (`store::health`).
                        warn!(error = %e, "claiming deliveries failed; retrying with backoff");
                    } else if failures == 0 {
                        error!(error = %e, "claiming deliveries failed; retrying with backoff");
                    } else {
                        debug!(error = %e, failures, "claiming deliveries failed again");
                    }
                    let pause = Duration::from_secs(1 << failures.min(4));
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
            };
            if claimed.is_empty() {
                let next_due = self.store.next_due().await.ok().flatten();
                self.idle(idle_wait(next_due, now_ms()), shutdown).await;
                continue;
            }
            debug!(count = claimed.len(), "claimed deliveries");
            for d in claimed {
                if job_tx.send(d).await.is_err() {
                    return;
                }
            }
        }
    }

    /// How many claimed deliveries may wait for a sender: enough that claims come in large
    /// batches, but no more than about a second of sending at the configured rate, so a
    /// slow, rate-limited worker does not sit on leases others could use.
    pub(super) fn queue_depth(&self) -> usize {
        let concurrency = self.settings.concurrency.get();
        let per_second = usize::try_from(self.settings.rate.get()).unwrap_or(usize::MAX);
        (concurrency * 2).max(CLAIMED_AHEAD.min(per_second))
    }

    pub(super) async fn idle(&self, wait: Duration, shutdown: &CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = self.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// How long to wait after a claim that took nothing, given when the next queued delivery is
/// due (`Store::next_due`): until then, at most `IDLE_POLL`. Something due already that the
/// claim could not take is held: a paused digest's mail, or rows another worker's claim is
/// taking right now. Looking again at once would spin (a write transaction after another,
/// for as long as a digest stays paused), so it waits `HELD_RECHECK`; new work, and a
/// resumed digest, wake the worker sooner (`Store::work_queued`).
fn idle_wait(next_due: Option<Millis>, now: Millis) -> Duration {
    match next_due {
        Some(due) if due <= now => HELD_RECHECK,
        Some(due) => Duration::from_millis(u64::try_from(due - now).unwrap_or(0)).min(IDLE_POLL),
        None => IDLE_POLL,
    }
}

/// How soon to look again at due work a claim could not take (`idle_wait`).
const HELD_RECHECK: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_worker_sleeps_until_the_next_due_and_never_spins_on_held_work() {
        assert_eq!(idle_wait(None, 1_000), IDLE_POLL);
        assert_eq!(idle_wait(Some(1_200), 1_000), Duration::from_millis(200));
        assert_eq!(idle_wait(Some(60_000), 1_000), IDLE_POLL);
        // Due already, yet not claimed (a paused digest's mail): not at once again.
        assert_eq!(idle_wait(Some(1_000), 1_000), HELD_RECHECK);
        assert_eq!(idle_wait(Some(10), 1_000), HELD_RECHECK);
    }
}
