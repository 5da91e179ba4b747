//! The retention job (`delivery_retention`): every ten minutes, on the node that holds the
//! scheduler role, finished digests are rolled up (once each), then the deliveries older
//! than the retention are deleted in batches of `BATCH`, each its own short transaction,
//! yielding between batches so claims, outcomes and sign-ups (on SQLite, all through the
//! one writer connection) take their turns. The SQL is `store::retention`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::leading::every_while_leading;
use crate::domain::clock::Millis;
use crate::metrics::Metrics;
use crate::store::{Store, StoreResult};

/// Deliveries per deletion transaction: short enough never to hold up a claim or a sign-up.
pub const BATCH: i64 = 2_000;
/// Digests asked for at a time, to roll up or to prune.
const PAGE: i64 = 100;
/// How often the job runs.
pub const EVERY: Duration = Duration::from_secs(600);

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Digests rolled up.
    pub rolled_up: usize,
    /// Delivery records deleted.
    pub deleted: u64,
    /// Deletion transactions.
    pub batches: u64,
}

#[derive(Clone)]
pub struct Retention {
    store: Store,
    metrics: Arc<Metrics>,
    /// `None`: keep every delivery (digests are still rolled up: their statistics then read
    /// a row, not their deliveries).
    keep: Option<Duration>,
    batch: i64,
    /// Rest between deletion batches (zero: only yield).
    pause: Duration,
}

impl Retention {
    pub fn new(store: Store, metrics: Arc<Metrics>, keep: Option<Duration>) -> Self {
        Self {
            store,
            metrics,
            keep,
            batch: BATCH,
            pause: Duration::ZERO,
        }
    }

    /// Deletes at most `batch` deliveries per transaction (the benchmark and the tests).
    pub fn with_batch(mut self, batch: i64) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Rests `pause` after each deletion batch instead of only yielding (the benchmark
    /// measures what that spares a send beside the job).
    pub fn with_pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// After a deletion batch: the other tasks' turn, and the pause if there is one.
    async fn between_batches(&self) {
        if self.pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(self.pause).await;
        }
    }

    /// One run as if it were `now`: roll up what finished, then delete what is older than
    /// `now - delivery_retention`, batch by batch.
    pub async fn run_once(&self, now: Millis) -> StoreResult<Pruned> {
        let mut done = Pruned::default();
        loop {
            let due = self.store.digests_to_roll_up(PAGE).await?;
            let mut rolled = 0;
            for id in &due {
                if self.store.roll_up(id, now).await? {
                    rolled += 1;
                }
            }
            done.rolled_up += rolled;
            // A short page was the last; a page of which none could be rolled up (each
            // changed meanwhile) would come back the same.
            if due.len() < PAGE as usize || rolled == 0 {
                break;
            }
        }
        let Some(keep) = self.keep else {
            return Ok(done);
        };
        let cutoff = now - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        loop {
            let digests = self.store.digests_to_prune(cutoff, PAGE).await?;
            let mut pruned = 0;
            for id in &digests {
                let mut after = String::new();
                loop {
                    let batch = self
                        .store
                        .prune_digest(id, cutoff, &after, self.batch, now)
                        .await?;
                    self.deleted(&mut done, batch.deleted);
                    self.between_batches().await;
                    match batch.next {
                        Some(next) => after = next,
                        None => {
                            pruned += usize::from(batch.pruned);
                            break;
                        }
                    }
                }
            }
            // A digest some of whose deliveries are not past the cutoff yet (a wave made
            // later) stays unpruned and comes back in the next page: ask again only while
            // the page was full and pruned some.
            if digests.len() < PAGE as usize || pruned == 0 {
                break;
            }
        }
        loop {
            let n = self.store.prune_messages(cutoff, self.batch).await?;
            self.deleted(&mut done, n);
            self.between_batches().await;
            if n < self.batch as u64 {
                break;
            }
        }
        Ok(done)
    }

    fn deleted(&self, done: &mut Pruned, n: u64) {
        if n > 0 {
            done.deleted += n;
            done.batches += 1;
            self.metrics.retention_deleted(n);
        }
    }

    /// Runs every `EVERY` until `shutdown`, only while `leading` says this node holds the
    /// scheduler role (one node of an installation; like the feed poller).
    pub async fn run(self, shutdown: CancellationToken, leading: watch::Receiver<bool>) {
        let this = &self;
        every_while_leading(EVERY, shutdown, leading, || async move {
            match this.run_once(crate::domain::clock::now_ms()).await {
                Ok(d) if d.deleted > 0 || d.rolled_up > 0 => info!(
                    rolled_up = d.rolled_up,
                    deleted = d.deleted,
                    batches = d.batches,
                    "retention: digests rolled up, old deliveries deleted"
                ),
                Ok(_) => {}
                Err(e) => warn!(
                    error = %e,
                    "retention: the database refused; trying again at the next run"
                ),
            }
        })
        .await;
    }
}
