//! claim -> render -> rate-limit -> send -> record.
//!
//! One claim loop leases due deliveries in batches (committed before any SMTP work) and hands
//! them to `concurrency` sender tasks, each with its own SMTP connection. Outcomes flow to one
//! recorder task that writes them back in batched transactions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn};

use crate::compose::{Composer, DigestContent};
use crate::config::Config;
use crate::domain::clock::{ms, now_ms};
use crate::domain::delivery::Outcome;
use crate::domain::delivery::SendFailure;
use crate::domain::email::redact_addresses;
use crate::domain::{DeliveryKind, DigestStatus, RetryPolicy, SubscriberStatus, Token};
use crate::mailer::{self, Content, Letter, ListHeaders, Transport};
use crate::metrics::Metrics;
use crate::store::{ClaimedDelivery, Recorded, Store, StoreResult};

mod autopause;
mod limits;

pub use autopause::AutoPause;
pub use limits::{Limits, is_throttle};

/// How long an idle worker sleeps at most before looking for due work again.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How old a digest's paused state may be when one of its claimed emails is about to go:
/// a pause stops the emails already claimed within this long, not only the ones still queued.
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
/// How often a worker says it is alive, and how recent a heartbeat must be to count.
const HEARTBEAT: Duration = Duration::from_secs(2);
const ALIVE_WITHIN: Duration = Duration::from_secs(6);

/// Everything a worker needs; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    store: Store,
    composer: Composer,
    /// Each digest's content, loaded once and shared by all its emails.
    digests: Arc<Mutex<HashMap<String, Arc<DigestContent>>>>,
    /// Whether each digest was paused, and when that was last read (see `PAUSE_CHECK`).
    paused: Arc<Mutex<HashMap<String, (Instant, bool)>>>,
    transport: Transport,
    config: Arc<Config>,
    retry: RetryPolicy,
    limits: Arc<Limits>,
    autopause: Arc<AutoPause>,
    /// Nudged by the web side when it queues mail, so in-process work starts at once.
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Worker {
    pub fn new(
        store: Store,
        composer: Composer,
        transport: Transport,
        config: Arc<Config>,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let limits = Limits::new(
            config.rate,
            config.burst,
            &config.domain_rates,
            config.throttle_cooldown,
        );
        Self {
            store,
            composer,
            digests: Arc::new(Mutex::new(HashMap::new())),
            paused: Arc::new(Mutex::new(HashMap::new())),
            transport,
            retry: config.retry.clone(),
            limits: Arc::new(limits),
            autopause: Arc::new(AutoPause::new(config.pause_threshold, config.pause_window)),
            config,
            wake,
            metrics,
        }
    }

    /// Runs until `shutdown` is cancelled; then stops claiming, lets messages on the wire
    /// finish (up to `shutdown_timeout`), hands unstarted leases back, and returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let concurrency = self.config.concurrency.get();
        info!(
            concurrency,
            rate = self.config.rate.get(),
            transport = %self.transport.describe(),
            "worker started"
        );
        // Register before claiming anything, so the rate is shared from the first message.
        let worker_id = uuid::Uuid::now_v7().to_string();
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        self.share_rate(&worker_id, &host).await;
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
                        () = tokio::time::sleep(HEARTBEAT) => w.share_rate(&id, &host).await,
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

        let recorder = tokio::spawn(record_loop(self.store.clone(), out_rx));
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

        let drained = tokio::time::timeout(self.config.shutdown_timeout, async {
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

    /// Heartbeats, and takes this worker's share of the global rate: `rate / live workers`.
    async fn share_rate(&self, worker_id: &str, host: &str) {
        match self
            .store
            .heartbeat(worker_id, host, now_ms(), ALIVE_WITHIN)
            .await
        {
            Ok(live) => {
                let live = u32::try_from(live.max(1)).unwrap_or(u32::MAX);
                let share = (self.config.rate.get() / live).max(1);
                if self.limits.rate() != share {
                    info!(live_workers = live, rate = share, "sharing the global rate");
                    self.limits.set_rate(
                        std::num::NonZeroU32::new(share).unwrap_or(std::num::NonZeroU32::MIN),
                    );
                }
            }
            Err(e) => warn!(error = %e, "heartbeat failed; keeping the current rate"),
        }
    }

    async fn claim_loop(
        &self,
        job_tx: &mpsc::Sender<ClaimedDelivery>,
        shutdown: &CancellationToken,
    ) {
        let depth = job_tx.max_capacity();
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
                room.min(self.config.concurrency.get() * 2)
            } else {
                room
            };
            let room = u32::try_from(room).unwrap_or(u32::MAX);
            let claimed = match self.store.claim(now_ms(), self.config.lease, room).await {
                Ok(c) => c,
                Err(e) => {
                    error!(error = %e, "claiming deliveries failed; retrying in a second");
                    self.idle(Duration::from_secs(1), shutdown).await;
                    continue;
                }
            };
            if claimed.is_empty() {
                let wait = match self.store.next_due().await {
                    Ok(Some(due)) => {
                        Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0))
                    }
                    _ => IDLE_POLL,
                };
                self.idle(wait.min(IDLE_POLL), shutdown).await;
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
    fn queue_depth(&self) -> usize {
        let concurrency = self.config.concurrency.get();
        let per_second = usize::try_from(self.config.rate.get()).unwrap_or(usize::MAX);
        (concurrency * 2).max(CLAIMED_AHEAD.min(per_second))
    }

    async fn idle(&self, wait: Duration, shutdown: &CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = self.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    async fn sender_loop(
        self,
        jobs: Arc<Mutex<mpsc::Receiver<ClaimedDelivery>>>,
        out: mpsc::Sender<Recorded>,
        shutdown: CancellationToken,
    ) {
        let mut sender = self.transport.sender();
        loop {
            let job = jobs.lock().await.recv().await;
            let Some(d) = job else { break };
            let outcome = if shutdown.is_cancelled() {
                Outcome::Released
            } else {
                self.deliver(&d, &mut sender).await
            };
            let latency =
                Duration::from_millis(u64::try_from(now_ms() - d.created_at).unwrap_or(0));
            self.metrics.outcome(d.kind, &outcome, Some(latency));
            let recorded = Recorded {
                delivery_id: d.id,
                claim_id: d.claim_id,
                subscriber_id: d.subscriber_id,
                outcome,
            };
            if out.send(recorded).await.is_err() {
                break;
            }
        }
        sender.close().await;
    }

    /// One delivery, start to finish; every path ends in an outcome, never a panic.
    async fn deliver(&self, d: &ClaimedDelivery, sender: &mut mailer::Sender) -> Outcome {
        // What is logged about a send is logged in its span. The span is made only then: one
        // per message, formatted by the log writer as it is made, was 6% of the worker's
        // instructions (BENCHMARKS.md, item 26).
        let span = || info_span!("send", delivery_id = %d.id, kind = d.kind.as_str());
        // The re-check: whoever left after this delivery was queued is not mailed.
        let wanted = match d.kind {
            DeliveryKind::Confirmation => SubscriberStatus::Pending,
            DeliveryKind::Digest => SubscriberStatus::Confirmed,
        };
        if d.subscriber_status != wanted {
            return Outcome::Suppressed {
                reason: format!("subscriber is {}", d.subscriber_status),
            };
        }
        let now = now_ms();
        if now > d.expires_at {
            return Outcome::Failed {
                code: None,
                error: "expired before it could be sent".into(),
                bounce: false,
            };
        }
        if let Some(digest_id) = &d.digest_id
            && self.digest_paused(digest_id).await
        {
            // Handed back unspent; claims skip a paused digest until it resumes.
            return Outcome::Released;
        }
        let domain = d.email.rsplit_once('@').map_or("", |(_, dom)| dom);
        if let Some(left) = self.limits.cooling(domain) {
            // The domain asked us to slow down: leave it alone, without spending an attempt.
            return Outcome::Deferred {
                run_at: now + ms(left),
            };
        }
        let (content, list) = match self.compose(d, now).await {
            Ok(r) => r,
            Err(Compose::Retry(error)) => return self.retry_or_fail(d, now, None, error),
            Err(Compose::Fail(error)) => {
                span().in_scope(|| error!(%error, "cannot compose message"));
                return Outcome::Failed {
                    code: None,
                    error,
                    bounce: false,
                };
            }
        };
        let letter = Letter {
            delivery_id: &d.id,
            to_email: &d.email,
            to_name: d.name.as_deref(),
            content: &content,
            list: list.as_ref(),
        };
        let (envelope, bytes) =
            match mailer::build(&self.config.from, &letter, sender.takes_eight_bit()) {
                Ok(m) => m,
                Err(e) => {
                    return Outcome::Failed {
                        code: None,
                        error: e.to_string(),
                        bounce: false,
                    };
                }
            };
        // A throttled message waits here; it is never dropped.
        self.limits.wait(domain).await;
        let started = std::time::Instant::now();
        let result = sender.send(&d.id, &envelope, &bytes).await;
        self.metrics.smtp_send(d.kind, started.elapsed());
        if let Some(digest_id) = &d.digest_id {
            // A pause is logged with its digest_id (the last straw may be a success).
            self.watch_health(digest_id, &result).await;
        }
        match result {
            Ok(()) => {
                debug!(delivery_id = %d.id, kind = d.kind.as_str(), "sent");
                Outcome::Sent
            }
            Err(SendFailure::Transient { code, text }) => {
                span().in_scope(|| {
                    warn!(code, error = %redact_addresses(&text), attempt = d.attempts, "transient failure");
                    if is_throttle(code) {
                        warn!(domain, "domain asks to slow down; cooling it down");
                    }
                });
                if is_throttle(code) {
                    self.limits.throttled(domain);
                }
                self.retry_or_fail(d, now_ms(), code, text)
            }
            Err(SendFailure::Permanent { code, text, bounce }) => {
                span().in_scope(|| {
                    warn!(code, error = %redact_addresses(&text), bounce, "permanent failure");
                });
                Outcome::Failed {
                    code,
                    error: text,
                    bounce,
                }
            }
        }
    }

    /// Feeds the digest's auto-pause window: permanent failures and connection-level trouble
    /// count against it, a 4xx reply does not.
    async fn watch_health(&self, digest_id: &str, result: &Result<(), SendFailure>) {
        let failed = match result {
            Ok(()) => false,
            Err(SendFailure::Permanent { .. }) => true,
            Err(SendFailure::Transient { code, .. }) => code.is_none(),
        };
        let Some(reason) = self.autopause.record(digest_id, failed) else {
            return;
        };
        warn!(digest_id, %reason, "pausing digest");
        remember_paused(&mut *self.paused.lock().await, digest_id, true);
        let now = now_ms();
        let paused = self.store.pause_digest(digest_id, &reason, now).await;
        let logged = self
            .store
            .add_event("auto_pause", Some(digest_id), &reason, now)
            .await;
        if let Err(e) = paused.and(logged) {
            error!(digest_id, error = %e, "could not pause the digest");
        }
    }

    async fn digest_paused(&self, digest_id: &str) -> bool {
        // Read under the lock: the senders that find the state stale together (all of them,
        // when a digest starts) wait for one read instead of each making their own.
        let mut known = self.paused.lock().await;
        if let Some((read_at, paused)) = known.get(digest_id)
            && read_at.elapsed() < PAUSE_CHECK
        {
            return *paused;
        }
        let paused = match self.store.digest_status(digest_id).await {
            Ok(status) => status == Some(DigestStatus::Paused),
            Err(e) => {
                warn!(digest_id, error = %e, "cannot read the digest's status; sending");
                false
            }
        };
        remember_paused(&mut known, digest_id, paused);
        paused
    }

    fn retry_or_fail(
        &self,
        d: &ClaimedDelivery,
        now: i64,
        code: Option<u16>,
        error: String,
    ) -> Outcome {
        let delay = self.retry.delay(d.attempts, rand::rng().random::<f64>());
        let run_at = now + ms(delay);
        if run_at > d.expires_at {
            Outcome::Failed {
                code,
                error: format!("gave up after {} attempts: {error}", d.attempts),
                bounce: false,
            }
        } else {
            Outcome::Retry {
                run_at,
                code,
                error,
            }
        }
    }

    async fn compose(
        &self,
        d: &ClaimedDelivery,
        now: i64,
    ) -> Result<(Content, Option<ListHeaders>), Compose> {
        match d.kind {
            DeliveryKind::Confirmation => {
                // The token is born here and only its hash is stored: the database never
                // holds a usable confirmation link.
                let token = Token::generate();
                let expires = now + ms(self.config.confirmation_ttl);
                self.store
                    .insert_confirmation_token(&d.subscriber_id, &token.hash(), now, expires)
                    .await
                    .map_err(|e| Compose::Retry(format!("cannot store confirmation token: {e}")))?;
                let rendered = self
                    .composer
                    .confirmation(d.name.as_deref(), token.as_str())
                    .map_err(|e| Compose::Fail(e.to_string()))?;
                Ok((rendered.into(), None))
            }
            DeliveryKind::Digest => {
                let content = self.digest_content(d).await?;
                let (email, list) = self
                    .composer
                    .digest(&content, d.name.as_deref(), &d.unsubscribe_token)
                    .map_err(|e| Compose::Fail(e.to_string()))?;
                Ok((email, Some(list)))
            }
        }
    }

    async fn digest_content(&self, d: &ClaimedDelivery) -> Result<Arc<DigestContent>, Compose> {
        let id = d
            .digest_id
            .as_deref()
            .ok_or_else(|| Compose::Fail("digest delivery without a digest".into()))?;
        // Loaded under the lock: the senders that start on a digest together wait for one
        // load (and then one prerendering) instead of each doing its own.
        let mut cache = self.digests.lock().await;
        if let Some(c) = cache.get(id) {
            return Ok(c.clone());
        }
        let digest = self
            .store
            .digest(id)
            .await
            .map_err(|e| Compose::Retry(format!("cannot load digest {id}: {e}")))?
            .ok_or_else(|| Compose::Fail(format!("digest {id} does not exist")))?;
        let content = Arc::new(DigestContent::new(&digest));
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(id.to_owned(), content.clone());
        Ok(content)
    }
}

enum Compose {
    Retry(String),
    Fail(String),
}

fn remember_paused(known: &mut HashMap<String, (Instant, bool)>, digest_id: &str, paused: bool) {
    if known.len() >= 64 {
        known.clear();
    }
    known.insert(digest_id.to_owned(), (Instant::now(), paused));
}

/// Writes outcomes back in batches: whatever piled up while the previous write ran goes in the
/// next transaction. A failed write is retried, not dropped: a lost "sent" would let the lease
/// expire and the message go out again.
async fn record_loop(store: Store, mut rx: mpsc::Receiver<Recorded>) -> anyhow::Result<()> {
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
        write_with_retry(&store, &batch).await?;
        batch.clear();
    }
    Ok(())
}

async fn write_with_retry(store: &Store, batch: &[Recorded]) -> StoreResult<()> {
    let mut delay = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        match store.record(batch, now_ms()).await {
            Ok(()) => return Ok(()),
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
