//! claim -> compose -> limit -> send -> record, one file per step:
//!
//! - `claim`: one claim loop leases due deliveries in batches (committed before any SMTP
//!   work) and hands them to `concurrency` sender tasks, each with its own connection;
//! - `deliver`: each sender re-checks, composes (`compose`), signs (`sign`, off the async
//!   runtime's threads), waits for the limits (`limits`), sends, and decides the outcome (`outcome`, pure), watching the digest's
//!   health (`autopause`);
//! - `record`: one recorder task writes the outcomes back in batched transactions.

use std::collections::{HashMap, HashSet};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::compose::{Composer, DigestContent};
use crate::domain::clock::now_ms;
use crate::domain::liveness::{ALIVE_WITHIN, HEARTBEAT, lease_until};
use crate::domain::{DigestStatus, RetryPolicy};
use crate::mail::Transport;
use crate::mail::dkim::Signer;
use crate::metrics::Metrics;
use crate::store::{ClaimedDelivery, Recorded, Store};

mod autopause;
mod claim;
mod compose;
mod deliver;
mod limits;
mod outcome;
mod record;
mod sign;
#[cfg(test)]
mod tests;

pub use autopause::AutoPause;
pub use limits::Limits;

/// How long an idle worker sleeps at most before looking for due work again.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Each digest's status as last read (`None`: unknown), and when.
type DigestStates = HashMap<String, (Instant, Option<DigestStatus>)>;

/// How old a digest's status may be when one of its claimed emails is about to go: a pause
/// or a cancel stops the emails already claimed within this long, not only the ones still
/// queued.
const PAUSE_CHECK: Duration = Duration::from_millis(250);
/// Most deliveries a worker holds claimed ahead of its senders, when the rate allows (see
/// `Worker::queue_depth`); it claims again when a quarter of that is free.
const CLAIMED_AHEAD: usize = 512;
/// Outcomes that may wait for the recorder, per SMTP connection. Each is a message sent but
/// not yet recorded, which a crash would send again; fewer make the senders wait for the
/// recorder. At 4, the senders waited a third of the time on PostgreSQL at 12,000 emails/s:
/// a record transaction (its commit waits for the disk) took longer than 80 messages.
pub const UNRECORDED_PER_CONNECTION: usize = 8;
/// How long the recorder gathers outcomes before writing them, unless a quarter of the
/// channel fills first: at 6,000 emails/s of 40 KB it wrote a transaction per six outcomes,
/// and the transactions, not the rows, were most of PostgreSQL's work (BENCHMARKS.md, item 31).
const GATHER: Duration = Duration::from_millis(5);
/// Most outcomes written back in one transaction.
const RECORD_BATCH: usize = 256;

/// What the worker is told by the configuration (built in `app`).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub from: Mailbox,
    /// SMTP connections, one per sender task.
    pub concurrency: NonZeroUsize,
    /// The global rate (messages per second), shared among live workers, and its burst.
    pub rate: NonZeroU32,
    pub burst: NonZeroU32,
    pub domain_rates: Vec<(String, NonZeroU32)>,
    pub throttle_cooldown: Duration,
    pub retry: RetryPolicy,
    pub pause_threshold: f64,
    pub pause_window: usize,
    pub lease: Duration,
    pub shutdown_timeout: Duration,
    /// How long a confirmation link is valid.
    pub confirmation_ttl: Duration,
    /// Signs every message (DKIM) when configured; `None`: nothing is signed.
    pub signer: Option<Signer>,
    /// The VERP return path of every message when a bounce address is set; `None`: the
    /// envelope sender is the From address.
    pub verp: Option<crate::domain::bounce::Verp>,
}

/// Everything a worker needs; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    store: Store,
    composer: Composer,
    /// Each digest's content, loaded once and shared by all its emails.
    digests: Arc<Mutex<HashMap<String, Arc<DigestContent>>>>,
    /// Each digest's status (paused, cancelled, …), and when it was last read (see
    /// `PAUSE_CHECK`).
    digest_states: Arc<Mutex<DigestStates>>,
    transport: Transport,
    settings: Arc<WorkerSettings>,
    limits: Arc<Limits>,
    autopause: Arc<AutoPause>,
    /// Nudged by the web side when it queues mail, so in-process work starts at once.
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// This worker's id: its heartbeat row, and the owner of its claims.
    id: Arc<str>,
    /// When this worker last made progress (ms): a delivery taken up by a sender, a rate-limit
    /// wait or an SMTP exchange over, outcomes written. Its heartbeat keeps its claims leased
    /// for `lease` after this, so a wedged worker that still heartbeats loses them.
    progress: Arc<AtomicI64>,
    /// This worker's claims that were taken over (found by the recorder): their deliveries
    /// not yet sent are left to their new holder.
    lost: Arc<std::sync::Mutex<HashSet<String>>>,
}

impl Worker {
    pub fn new(
        store: Store,
        composer: Composer,
        transport: Transport,
        settings: WorkerSettings,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let limits = Limits::new(
            settings.rate,
            settings.burst,
            &settings.domain_rates,
            settings.throttle_cooldown,
        );
        Self {
            store,
            composer,
            digests: Arc::new(Mutex::new(HashMap::new())),
            digest_states: Arc::new(Mutex::new(HashMap::new())),
            transport,
            limits: Arc::new(limits),
            autopause: Arc::new(AutoPause::new(
                settings.pause_threshold,
                settings.pause_window,
            )),
            settings: Arc::new(settings),
            wake,
            metrics,
            id: uuid::Uuid::now_v7().to_string().into(),
            progress: Arc::new(AtomicI64::new(now_ms())),
            lost: Arc::new(std::sync::Mutex::new(HashSet::new())),
        }
    }

    /// This worker is making progress (see `Worker::progress`).
    fn progressed(&self) {
        self.progress.fetch_max(now_ms(), Ordering::Relaxed);
    }

    /// Whether this worker's claim was taken over.
    fn lost_claim(&self, claim_id: &str) -> bool {
        self.lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(claim_id)
    }

    /// Runs until `shutdown` is cancelled; then stops claiming, lets messages on the wire
    /// finish (up to `shutdown_timeout`), hands unstarted leases back, and returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let concurrency = self.settings.concurrency.get();
        info!(
            concurrency,
            rate = self.settings.rate.get(),
            transport = %self.transport.describe(),
            "worker started"
        );
        // Register before claiming anything, so the rate is shared from the first message and
        // the others see the owner of this worker's claims alive.
        let worker_id = self.id.to_string();
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        while !self.share_rate(&worker_id, &host).await && !shutdown.is_cancelled() {
            self.idle(Duration::from_secs(1), &shutdown).await;
        }
        let heartbeat = {
            let (w, id, host, stop) = (
                self.clone(),
                worker_id.clone(),
                host.clone(),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(HEARTBEAT) => { w.share_rate(&id, &host).await; }
                    }
                }
            })
        };
        let notifications = tokio::spawn({
            let (store, wake, stop) = (self.store.clone(), self.wake.clone(), shutdown.clone());
            async move { store.forward_work_notifications(wake, stop).await }
        });

        let (job_tx, job_rx) = mpsc::channel::<ClaimedDelivery>(self.queue_depth());
        let job_rx = Arc::new(Mutex::new(job_rx));
        // Small on purpose: an outcome waiting here is a sent message not yet recorded, which a
        // crash would send again. Senders wait for the recorder rather than run ahead of it.
        let (out_tx, out_rx) = mpsc::channel::<Recorded>(concurrency * UNRECORDED_PER_CONNECTION);

        let recorder = tokio::spawn(self.clone().record_loop(out_rx, shutdown.clone()));
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (w, rx, tx, stop) = (
                self.clone(),
                job_rx.clone(),
                out_tx.clone(),
                shutdown.clone(),
            );
            senders.spawn(async move { w.sender_loop(rx, tx, stop).await });
        }
        drop(out_tx);

        self.claim_loop(&job_tx, &shutdown).await;
        drop(job_tx);

        let drained = tokio::time::timeout(self.settings.shutdown_timeout, async {
            while senders.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                "messages still on the wire at the shutdown timeout; their leases will expire and be retried"
            );
            senders.shutdown().await;
        }
        recorder.await??;
        heartbeat.abort();
        notifications.abort();
        if let Err(e) = self.store.deregister(&worker_id).await {
            warn!(error = %e, "could not deregister; the others will notice the missing heartbeat");
        }
        info!("worker stopped");
        Ok(())
    }

    /// Heartbeats, keeps its claims leased until `lease` after its last progress, and takes
    /// this worker's share of the global rate: `rate / live workers`. Whether the heartbeat
    /// was written.
    async fn share_rate(&self, worker_id: &str, host: &str) -> bool {
        let leases_until = lease_until(self.progress.load(Ordering::Relaxed), self.settings.lease);
        match self
            .store
            .heartbeat(worker_id, host, now_ms(), ALIVE_WITHIN, leases_until)
            .await
        {
            Ok(live) => {
                let live = u32::try_from(live.max(1)).unwrap_or(u32::MAX);
                let share = (self.settings.rate.get() / live).max(1);
                if self.limits.rate() != share {
                    info!(live_workers = live, rate = share, "sharing the global rate");
                    self.limits.set_rate(
                        std::num::NonZeroU32::new(share).unwrap_or(std::num::NonZeroU32::MIN),
                    );
                }
                true
            }
            Err(e) => {
                warn!(error = %e, "heartbeat failed; keeping the current rate");
                false
            }
        }
    }
}
