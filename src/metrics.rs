//! Prometheus metrics through the `prometheus` crate: counters and histograms updated by the
//! worker as it goes, gauges read from the store when scraped.

use std::time::Duration;

use prometheus::{
    Encoder as _, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::DeliveryKind;
use crate::domain::clock::Millis;
use crate::domain::delivery::Outcome;
use crate::domain::liveness::ALIVE_WITHIN;
use crate::store::{Store, StoreResult};

pub struct Metrics {
    registry: Registry,
    messages: IntCounterVec,
    smtp_seconds: HistogramVec,
    latency_seconds: HistogramVec,
    queue_depth: IntGauge,
    oldest_due_seconds: Gauge,
    subscribers: IntGaugeVec,
    workers_alive: IntGauge,
    bounces: IntCounterVec,
    complaints: IntCounter,
    retention_deleted: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The reply class of an outcome: `2xx`, `4xx`, `5xx`, or `none` (no SMTP reply: connection
/// trouble, or nothing was sent).
fn reply_class(outcome: &Outcome) -> &'static str {
    let code = match outcome {
        Outcome::Sent => return "2xx",
        Outcome::Retry { code, .. } | Outcome::Failed { code, .. } => *code,
        _ => None,
    };
    match code {
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "none",
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Sent => "sent",
        Outcome::Retry { .. } => "retried",
        Outcome::Failed { bounce: true, .. } => "bounced",
        Outcome::Failed { .. } => "failed",
        Outcome::Suppressed { .. } => "suppressed",
        Outcome::Deferred { .. } => "deferred",
        Outcome::Released => "released",
    }
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let messages = IntCounterVec::new(
            Opts::new(
                "squeeze_messages_total",
                "Delivery attempts by message kind, outcome and SMTP reply class.",
            ),
            &["kind", "outcome", "class"],
        )?;
        let buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let smtp_seconds = HistogramVec::new(
            HistogramOpts::new(
                "squeeze_smtp_send_seconds",
                "Time to hand one message to the SMTP server.",
            )
            .buckets(buckets),
            &["kind"],
        )?;
        let latency_seconds = HistogramVec::new(
            HistogramOpts::new(
                "squeeze_delivery_latency_seconds",
                "From queued to sent, per message.",
            )
            .buckets(vec![
                0.1,
                0.5,
                1.0,
                5.0,
                15.0,
                60.0,
                300.0,
                900.0,
                3600.0,
                4.0 * 3600.0,
                24.0 * 3600.0,
            ]),
            &["kind"],
        )?;
        let queue_depth = IntGauge::new(
            "squeeze_queue_depth",
            "Deliveries not final yet (queued, retrying, sending).",
        )?;
        let oldest_due_seconds = Gauge::new(
            "squeeze_oldest_due_seconds",
            "Age of the longest-waiting due delivery.",
        )?;
        let subscribers = IntGaugeVec::new(
            Opts::new("squeeze_subscribers", "Subscribers by status."),
            &["status"],
        )?;
        let workers_alive =
            IntGauge::new("squeeze_workers_alive", "Workers with a recent heartbeat.")?;
        // Counted by whichever process heard them (`squeeze inbound`, a webhook): read from
        // the store when scraped, so every node shows the same totals.
        let bounces = IntCounterVec::new(
            Opts::new(
                "squeeze_bounces_total",
                "Bounces heard after sending, by kind (hard, soft, policy; unmatched: reports \
                 that matched no delivery).",
            ),
            &["kind"],
        )?;
        let complaints = IntCounter::new(
            "squeeze_complaints_total",
            "Complaints (feedback reports) matched to a delivery.",
        )?;
        let retention_deleted = IntCounter::new(
            "squeeze_retention_deleted_total",
            "Delivery records deleted by the retention job (delivery_retention), their counts \
             kept in the roll-ups.",
        )?;
        registry.register(Box::new(retention_deleted.clone()))?;
        registry.register(Box::new(bounces.clone()))?;
        registry.register(Box::new(complaints.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(smtp_seconds.clone()))?;
        registry.register(Box::new(latency_seconds.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(oldest_due_seconds.clone()))?;
        registry.register(Box::new(subscribers.clone()))?;
        registry.register(Box::new(workers_alive.clone()))?;
        Ok(Self {
            registry,
            messages,
            smtp_seconds,
            latency_seconds,
            queue_depth,
            oldest_due_seconds,
            subscribers,
            workers_alive,
            bounces,
            complaints,
            retention_deleted,
        })
    }

    /// One delivery's outcome; `latency` is queued-to-sent for sent messages.
    pub fn outcome(&self, kind: DeliveryKind, outcome: &Outcome, latency: Option<Duration>) {
        self.messages
            .with_label_values(&[kind.as_str(), outcome_label(outcome), reply_class(outcome)])
            .inc();
        if let (Outcome::Sent, Some(l)) = (outcome, latency) {
            self.latency_seconds
                .with_label_values(&[kind.as_str()])
                .observe(l.as_secs_f64());
        }
    }

    /// Delivery records the retention job deleted.
    pub fn retention_deleted(&self, n: u64) {
        self.retention_deleted.inc_by(n);
    }

    pub fn smtp_send(&self, kind: DeliveryKind, took: Duration) {
        self.smtp_seconds
            .with_label_values(&[kind.as_str()])
            .observe(took.as_secs_f64());
    }

    /// Refreshes the gauges from the store and encodes everything in the text format.
    pub async fn render(&self, store: &Store, now: Millis) -> StoreResult<String> {
        let counts = store.delivery_counts(None).await?;
        self.queue_depth.set(counts.pending());
        let oldest = store.oldest_due(now).await?;
        self.oldest_due_seconds
            .set(oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0));
        for status in crate::domain::SubscriberStatus::ALL {
            self.subscribers
                .with_label_values(&[status.as_str()])
                .set(0);
        }
        for (status, n) in store.subscriber_counts().await? {
            self.subscribers
                .with_label_values(&[status.as_str()])
                .set(n);
        }
        self.workers_alive
            .set(store.live_workers(now, ALIVE_WITHIN).await?);
        let b = store.bounce_counts(None).await?;
        let catch_up = |c: &IntCounter, total: i64| {
            let total = u64::try_from(total).unwrap_or(0);
            if total > c.get() {
                c.inc_by(total - c.get());
            }
        };
        for (kind, n) in [
            ("hard", b.hard_bounces),
            ("soft", b.soft_bounces),
            ("policy", b.policy_rejections),
            ("unmatched", b.unmatched),
        ] {
            catch_up(&self.bounces.with_label_values(&[kind]), n);
        }
        catch_up(&self.complaints, b.complaints);
        let mut out = Vec::new();
        // Encoding our own registry into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}
