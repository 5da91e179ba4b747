//! The record loop: outcomes written back in batched transactions, retried rather than
//! dropped.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{error, warn};

use super::{GATHER, RECORD_BATCH, Worker};
use crate::domain::clock::now_ms;
use crate::store::{Recorded, Store, StoreResult};

/// Writes outcomes back in batches: whatever piled up while the previous write ran goes in the
/// next transaction. A failed write is retried, not dropped: a lost "sent" would let the lease
/// expire and the message go out again.
impl Worker {
    pub(super) async fn record_loop(self, mut rx: mpsc::Receiver<Recorded>) -> anyhow::Result<()> {
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
            let gone = write_with_retry(&self.store, &batch).await?;
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

async fn write_with_retry(store: &Store, batch: &[Recorded]) -> StoreResult<Vec<String>> {
    let mut delay = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        match store.record(batch, now_ms()).await {
            Ok(gone) => return Ok(gone),
            Err(e) if tries < 20 => {
                tries += 1;
                error!(error = %e, count = batch.len(), "recording outcomes failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}
