//! Delivering one claimed delivery: re-check, compose, limit, send, decide the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info_span, warn};

use super::compose::Compose;
use super::outcome::{after_failure, recheck, retry_or_fail};
use super::sign;
use super::{PAUSE_CHECK, Worker};
use crate::domain::DigestStatus;
use crate::domain::clock::{ms, now_ms};
use crate::domain::delivery::Outcome;
use crate::domain::digest::CANCELLED;
use crate::domain::email::redact_addresses;
use crate::mail::{self, Letter, Sender};
use crate::store::{ClaimedDelivery, Recorded};

impl Worker {
    pub(super) async fn sender_loop(
        self,
        jobs: Arc<Mutex<mpsc::Receiver<ClaimedDelivery>>>,
        out: mpsc::Sender<Recorded>,
        shutdown: CancellationToken,
    ) {
        let mut sender = self.transport.sender();
        loop {
            let job = jobs.lock().await.recv().await;
            let Some(d) = job else { break };
            self.progressed();
            if self.lost_claim(&d.claim_id) {
                // Taken over (this worker was thought dead, or made no progress for a
                // lease): the delivery is queued again for its new holder; no outcome counts.
                debug!(delivery_id = %d.id, "claim taken over; leaving the delivery to its new holder");
                continue;
            }
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
                kind: d.kind,
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
    pub(super) async fn deliver<S: Sender>(&self, d: &ClaimedDelivery, sender: &mut S) -> Outcome {
        // What is logged about a send is logged in its span. The span is made only then: one
        // per message, formatted by the log writer as it is made, was 6% of the worker's
        // instructions (BENCHMARKS.md, item 26).
        let span = || info_span!("send", delivery_id = %d.id, kind = d.kind.as_str());
        let now = now_ms();
        if let Some(outcome) = recheck(d, now) {
            return outcome;
        }
        if let Some(digest_id) = &d.digest_id {
            match self.digest_state(digest_id).await {
                // Handed back unspent; claims skip a paused digest until it resumes.
                Some(DigestStatus::Paused) => return Outcome::Released,
                // Claimed just before an editor stopped the digest: never sent.
                Some(DigestStatus::Cancelled) => {
                    return Outcome::Suppressed {
                        reason: CANCELLED.into(),
                    };
                }
                _ => {}
            }
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
            Err(Compose::Retry(error)) => {
                let unit = rand::rng().random::<f64>();
                return retry_or_fail(d, &self.settings.retry, unit, now, None, error);
            }
            Err(Compose::Fail(error)) => {
                span().in_scope(|| error!(%error, "cannot compose message"));
                return Outcome::Failed {
                    code: None,
                    error,
                    bounce: false,
                };
            }
        };
        let return_path = self.settings.verp.as_ref().map(|v| v.return_path(&d.id));
        let letter = Letter {
            return_path: return_path.as_deref(),
            delivery_id: &d.id,
            to_email: &d.email,
            to_name: d.name.as_deref(),
            content: &content,
            list: list.as_ref(),
        };
        let (envelope, bytes) =
            match mail::build(&self.settings.from, &letter, sender.takes_eight_bit()) {
                Ok(m) => m,
                Err(e) => {
                    return Outcome::Failed {
                        code: None,
                        error: e.to_string(),
                        bounce: false,
                    };
                }
            };
        let bytes = match &self.settings.signer {
            Some(signer) => match sign::sign(signer, bytes).await {
                Ok(signed) => signed,
                Err(error) => {
                    // Never sent unsigned: a signature that cannot be made is a failed send.
                    span().in_scope(|| error!(%error, "cannot sign message"));
                    return Outcome::Failed {
                        code: None,
                        error,
                        bounce: false,
                    };
                }
            },
            None => bytes,
        };
        // A throttled message waits here; it is never dropped.
        self.limits.wait(domain).await;
        self.progressed();
        let started = std::time::Instant::now();
        let result = sender.send(&d.id, &envelope, &bytes).await;
        self.progressed();
        self.metrics.smtp_send(d.kind, started.elapsed());
        let failure = match result {
            Ok(()) => {
                if let Some(digest_id) = &d.digest_id {
                    // A pause is logged with its digest_id (the last straw may be a success).
                    self.watch_health(digest_id, false).await;
                }
                debug!(delivery_id = %d.id, kind = d.kind.as_str(), "sent");
                return Outcome::Sent;
            }
            Err(f) => f,
        };
        let verdict = failure.verdict();
        if let Some(digest_id) = &d.digest_id {
            self.watch_health(digest_id, verdict.counts_against_health())
                .await;
        }
        let (code, text) = (failure.code, failure.text.as_str());
        if verdict.is_permanent() {
            let bounce = verdict.is_bounce();
            span().in_scope(|| {
                warn!(code, error = %redact_addresses(text), bounce, "permanent failure");
            });
        } else {
            span().in_scope(|| {
                warn!(code, error = %redact_addresses(text), attempt = d.attempts, "transient failure");
                if verdict.is_throttle() {
                    warn!(domain, "domain asks to slow down; cooling it down");
                }
            });
            if verdict.is_throttle() {
                self.limits.throttled(domain);
            }
        }
        let unit = rand::rng().random::<f64>();
        after_failure(d, failure, verdict, &self.settings.retry, unit, now_ms())
    }

    /// Feeds the digest's auto-pause window with one attempt (`failed`: it counts against the
    /// digest's health, see `Verdict::counts_against_health`).
    async fn watch_health(&self, digest_id: &str, failed: bool) {
        let Some(reason) = self.autopause.record(digest_id, failed) else {
            return;
        };
        warn!(digest_id, %reason, "pausing digest");
        remember(
            &mut *self.digest_states.lock().await,
            digest_id,
            Some(DigestStatus::Paused),
        );
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

    /// The digest's status as of at most `PAUSE_CHECK` ago (`None`: unknown, or unreadable:
    /// then it is sent, as before the digest could be paused or cancelled).
    async fn digest_state(&self, digest_id: &str) -> Option<DigestStatus> {
        // Read under the lock: the senders that find the state stale together (all of them,
        // when a digest starts) wait for one read instead of each making their own.
        let mut known = self.digest_states.lock().await;
        if let Some((read_at, status)) = known.get(digest_id)
            && read_at.elapsed() < PAUSE_CHECK
        {
            return *status;
        }
        let status = match self.store.digest_status(digest_id).await {
            Ok(status) => status,
            Err(e) => {
                warn!(digest_id, error = %e, "cannot read the digest's status; sending");
                None
            }
        };
        remember(&mut known, digest_id, status);
        status
    }
}

fn remember(known: &mut super::DigestStates, digest_id: &str, status: Option<DigestStatus>) {
    if known.len() >= 64 {
        known.clear();
    }
    known.insert(digest_id.to_owned(), (Instant::now(), status));
}
