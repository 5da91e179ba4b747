//! The record loop: outcomes written back in batched transactions, retried rather than
//! dropped.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{GATHER, RECORD_BATCH, Worker};
use crate::domain::clock::now_ms;
use crate::store::{Recorded, Store, StoreError, StoreResult};

/// After shutdown begins, how long a batch the database refuses is still retried before it is
/// given up (its claims go back to the queue once this worker's heartbeat stops, and it is
/// sent again): SIGTERM stays prompt on a full disk.
const RETRY_AT_SHUTDOWN: Duration = Duration::from_secs(2);

/// Writes outcomes back in batches: whatever piled up while the previous write ran goes in the
/// next transaction. A failed write is retried, not dropped: a lost "sent" would let the claim
/// go back to the queue and the message go out again.
impl Worker {
    pub(super) async fn record_loop(
        self,
        mut rx: mpsc::Receiver<Recorded>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        // No more than the channel holds: while a batch is written the channel fills again, so
        // the unrecorded outcomes stay under twice its capacity, the crash window's bound (as
        // the channel is drained, blocked senders refill it, and an unbounded drain would take
        // those too).
        let most = RECORD_BATCH.min(rx.max_capacity());
        let mut batch: Vec<Recorded> = Vec::with_capacity(most);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            // A record transaction costs the database about the same whatever its size, so
            // outcomes are gathered for a moment first; they wait in the channel, which holds
            // the senders back when full.
            let until = Instant::now() + GATHER;
            while rx.len() < rx.max_capacity() / 4 && !rx.is_closed() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            while batch.len() < most {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let gone = write_with_retry(&self.store, &batch, &shutdown).await?;
            self.progressed();
            self.forget_lost(gone);
            batch.clear();
        }
        Ok(())
    }

    /// Claims found taken over: what this worker still holds of them is not sent.
    fn forget_lost(&self, gone: Vec<String>) {
        if gone.is_empty() {
            return;
        }
        warn!(
            claims = gone.len(),
            "this worker's claims were taken over (its heartbeat was stale, or it made no progress for a lease); their unsent deliveries are left to their new holder"
        );
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        if lost.len() > 4096 {
            lost.clear();
        }
        lost.extend(gone);
    }
}

/// Retries a batch with a growing pause (100 ms to 5 s): as long as the database is busy or
/// cannot be written (a full disk, a server away: that passes), 20 times for any other
/// failure. One ERROR when it starts failing, one INFO when it works again. Once shutdown
/// begins it tries for `RETRY_AT_SHUTDOWN` more, then gives the batch up. Returns the claims
/// found taken over.
async fn write_with_retry(
    store: &Store,
    batch: &[Recorded],
    shutdown: &CancellationToken,
) -> StoreResult<Vec<String>> {
    let mut delay = Duration::from_millis(100);
    let mut tries = 0;
    let mut give_up_at = None;
    loop {
        let e = match store.record(batch, now_ms()).await {
            Ok(gone) => {
                if tries > 0 {
                    info!(count = batch.len(), "recording outcomes works again");
                }
                return Ok(gone);
            }
            Err(e) => e,
        };
        tries += 1;
        if tries == 1 && e.is_storage_fault() {
            // The store has said it once, at ERROR (`store::health`).
            warn!(error = %e, count = batch.len(), "recording outcomes failed; retrying");
        } else if tries == 1 {
            error!(error = %e, count = batch.len(), "recording outcomes failed; retrying");
        } else {
            debug!(error = %e, tries, "recording outcomes failed again");
        }
        let passes = e.is_storage_fault() || matches!(e, StoreError::Busy(_));
        if !passes && tries >= 20 {
            return Err(e);
        }
        if shutdown.is_cancelled() {
            let until = *give_up_at.get_or_insert_with(|| Instant::now() + RETRY_AT_SHUTDOWN);
            if Instant::now() >= until {
                error!(error = %e, count = batch.len(), "stopping with outcomes not recorded; their claims go back to the queue once this worker's heartbeat stops, and they will be sent again");
                return Ok(Vec::new());
            }
            tokio::time::sleep(delay.min(Duration::from_millis(250))).await;
        } else {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
