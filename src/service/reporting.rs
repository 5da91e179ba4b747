//! The numbers operators see, computed by the store with aggregate queries (never by loading
//! rows), shaped for the JSON API, the CLI table, the dashboard and /metrics; the event log;
//! the health check.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::{ServiceError, ServiceResult};
use crate::domain::clock::{Millis, to_rfc3339};
use crate::domain::liveness::ALIVE_WITHIN;
use crate::domain::{DigestStatus, SubscriberStatus};
use crate::metrics::Metrics;
pub use crate::store::EventRow as Event;
use crate::store::{DayColumn, DeliveryCounts, DigestRow, FailureRow, Store, StoreResult};

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Latency {
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ReplyCode {
    pub code: i64,
    pub count: i64,
}

/// Bounces and complaints heard after sending (matched to a delivery), and the complaint
/// rate: complaints per delivered email.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Bounces {
    pub hard_bounces: i64,
    pub soft_bounces: i64,
    pub policy_rejections: i64,
    pub complaints: i64,
    /// Reports that matched no delivery (overall only; 0 for a digest).
    pub unmatched: i64,
    /// `complaints / sent`; `None` before anything was sent.
    pub complaint_rate: Option<f64>,
}

impl Bounces {
    fn of(c: crate::store::BounceCounts, sent: i64) -> Self {
        Self {
            hard_bounces: c.hard_bounces,
            soft_bounces: c.soft_bounces,
            policy_rejections: c.policy_rejections,
            complaints: c.complaints,
            unmatched: c.unmatched,
            complaint_rate: (sent > 0).then(|| c.complaints as f64 / sent as f64),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DigestStats {
    pub id: String,
    pub subject: String,
    pub status: String,
    pub paused_reason: Option<String>,
    /// Deliveries made by the fan-out so far (it writes them a few thousand at a time).
    pub recipients: i64,
    /// `running` while the fan-out is still making deliveries (`recipients` grows, and
    /// `progress` is of those made so far), `complete` once every confirmed subscriber has
    /// one, `stopped` when the digest was cancelled before that; `None` before the digest
    /// is sent.
    #[schema(example = "complete")]
    pub fan_out: Option<String>,
    /// When the fan-out made its last delivery.
    pub fanned_out_at: Option<String>,
    #[serde(flatten)]
    pub deliveries: DeliveryCounts,
    /// Share of deliveries that reached a final state (sent, failed, bounced, suppressed).
    pub progress: f64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Messages sent per second from the start of sending to the last message sent.
    pub throughput_per_second: Option<f64>,
    /// Enqueue-to-sent latency of the sent messages.
    pub latency: Latency,
    /// The most frequent SMTP reply codes of failed and retried attempts (last reply kept).
    pub reply_codes: Vec<ReplyCode>,
    /// Bounces and complaints heard after sending.
    pub bounces: Bounces,
    /// One per zone, earliest first, for a digest delivered at each subscriber's own time;
    /// empty otherwise.
    pub waves: Vec<crate::store::WaveRow>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Day {
    pub date: String,
    pub signups: i64,
    pub confirmations: i64,
    pub unsubscribes: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Queue {
    /// Deliveries not final yet: queued, retrying and sending.
    pub depth: i64,
    /// Seconds the longest-waiting due delivery has waited; 0 when nothing is due.
    pub oldest_due_age_seconds: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Overall {
    /// Every status, zero included.
    pub subscribers: BTreeMap<String, i64>,
    /// Oldest first, one entry per UTC day.
    pub last_30_days: Vec<Day>,
    /// Of the sign-ups of the last 30 days, the share that confirmed.
    pub confirmation_rate: Option<f64>,
    pub deliveries: DeliveryCounts,
    /// Bounces and complaints heard after sending, of every digest and email.
    pub bounces: Bounces,
    pub queue: Queue,
    pub workers_alive: i64,
    /// The digest sending now (or paused), else the latest one sent.
    pub current_digest: Option<DigestStats>,
}

/// Stats of one digest; `None` if there is no such digest.
pub async fn digest(store: &Store, id: &str) -> StoreResult<Option<DigestStats>> {
    match store.digest(id).await? {
        Some(d) => Ok(Some(of_digest(store, &d).await?)),
        None => Ok(None),
    }
}

async fn of_digest(store: &Store, d: &DigestRow) -> StoreResult<DigestStats> {
    let counts = store.delivery_counts(Some(&d.id)).await?;
    let total = counts.total();
    let progress = if total == 0 {
        if d.status == DigestStatus::Sent {
            1.0
        } else {
            0.0
        }
    } else {
        (total - counts.pending()) as f64 / total as f64
    };
    let throughput = match (d.started_at, counts.last_sent_at) {
        (Some(start), Some(last)) if counts.sent > 0 => {
            let secs = ((last - start).max(1)) as f64 / 1000.0;
            Some((counts.sent as f64 / secs * 10.0).round() / 10.0)
        }
        _ => None,
    };
    let (p50_ms, p95_ms) = store.latency_percentiles(&d.id, counts.sent).await?;
    let latency = Latency { p50_ms, p95_ms };
    let reply_codes = store
        .reply_codes(&d.id, 5)
        .await?
        .into_iter()
        .map(|(code, count)| ReplyCode { code, count })
        .collect();
    let bounces = Bounces::of(store.bounce_counts(Some(&d.id)).await?, counts.sent);
    Ok(DigestStats {
        bounces,
        id: d.id.clone(),
        subject: d.subject.clone(),
        status: d.status.to_string(),
        paused_reason: d.paused_reason.clone(),
        recipients: d.recipients.unwrap_or(0),
        fan_out: d.fan_out.clone(),
        fanned_out_at: d.fanned_out_at.map(to_rfc3339),
        deliveries: counts,
        progress,
        started_at: d.started_at.map(to_rfc3339),
        finished_at: d.finished_at.map(to_rfc3339),
        throughput_per_second: throughput,
        latency,
        reply_codes,
        waves: if d.local_time.is_some() {
            store.waves(&d.id).await?
        } else {
            Vec::new()
        },
    })
}

pub async fn overall(store: &Store, now: Millis) -> StoreResult<Overall> {
    let mut subscribers: BTreeMap<String, i64> = SubscriberStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for (status, n) in store.subscriber_counts().await? {
        subscribers.insert(status, n);
    }

    let today = now.div_euclid(DAY_MS);
    let first_day = today - 29;
    let since = first_day * DAY_MS;
    let signups: BTreeMap<i64, i64> = store
        .per_day(DayColumn::SignedUp, since)
        .await?
        .into_iter()
        .collect();
    let confirmations: BTreeMap<i64, i64> = store
        .per_day(DayColumn::Confirmed, since)
        .await?
        .into_iter()
        .collect();
    let unsubscribes: BTreeMap<i64, i64> = store
        .per_day(DayColumn::Unsubscribed, since)
        .await?
        .into_iter()
        .collect();
    let last_30_days = (first_day..=today)
        .map(|day| Day {
            date: to_rfc3339(day * DAY_MS)[..10].to_owned(),
            signups: signups.get(&day).copied().unwrap_or(0),
            confirmations: confirmations.get(&day).copied().unwrap_or(0),
            unsubscribes: unsubscribes.get(&day).copied().unwrap_or(0),
        })
        .collect();
    let (total, confirmed) = store.confirmation_counts(since).await?;
    let confirmation_rate = (total > 0).then(|| confirmed as f64 / total as f64);

    let deliveries = store.delivery_counts(None).await?;
    let bounces = Bounces::of(store.bounce_counts(None).await?, deliveries.sent);
    let oldest = store.oldest_due(now).await?;
    let queue = Queue {
        depth: deliveries.pending(),
        oldest_due_age_seconds: oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
    };
    let workers_alive = store.live_workers(now, ALIVE_WITHIN).await?;

    let recent = store.list_digests(20).await?;
    let current = recent
        .iter()
        .find(|d| matches!(d.status, DigestStatus::Sending | DigestStatus::Paused))
        .or_else(|| recent.iter().find(|d| d.status == DigestStatus::Sent));
    let current_digest = match current {
        Some(d) => Some(of_digest(store, d).await?),
        None => None,
    };
    Ok(Overall {
        subscribers,
        last_30_days,
        confirmation_rate,
        deliveries,
        bounces,
        queue,
        workers_alive,
        current_digest,
    })
}

/// What the dashboard shows besides [`Overall`].
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    /// Messages sent in each of the last `minutes` minutes, oldest first.
    pub sent_per_minute: Vec<i64>,
    pub recent_failures: Vec<FailureRow>,
}

pub async fn activity(store: &Store, now: Millis, minutes: i64) -> StoreResult<Activity> {
    let this_minute = now.div_euclid(60_000);
    let first = this_minute - minutes + 1;
    let per: BTreeMap<i64, i64> = store
        .sent_per_minute(first * 60_000)
        .await?
        .into_iter()
        .collect();
    Ok(Activity {
        sent_per_minute: (first..=this_minute)
            .map(|m| per.get(&m).copied().unwrap_or(0))
            .collect(),
        recent_failures: store.recent_failures(20).await?,
    })
}

/// The reports as one service, for http and the CLI: a busy database is `Busy` here.
#[derive(Clone)]
pub struct Reporting {
    store: Store,
    metrics: Arc<Metrics>,
}

impl Reporting {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Self {
        Self { store, metrics }
    }

    pub async fn overall(&self, now: Millis) -> ServiceResult<Overall> {
        overall(&self.store, now)
            .await
            .map_err(ServiceError::busy_or_fault)
    }

    /// Stats of one digest; `None` if there is no such digest.
    pub async fn digest(&self, id: &str) -> ServiceResult<Option<DigestStats>> {
        digest(&self.store, id)
            .await
            .map_err(ServiceError::busy_or_fault)
    }

    pub async fn activity(&self, now: Millis, minutes: i64) -> ServiceResult<Activity> {
        activity(&self.store, now, minutes)
            .await
            .map_err(ServiceError::busy_or_fault)
    }

    /// The latest `limit` events, newest first.
    pub async fn events(&self, limit: u32) -> ServiceResult<Vec<Event>> {
        self.store
            .events(limit)
            .await
            .map_err(ServiceError::busy_or_fault)
    }

    /// The Prometheus text: the worker's counters and gauges read from the store now.
    pub async fn metrics(&self, now: Millis) -> ServiceResult<String> {
        self.metrics
            .render(&self.store, now)
            .await
            .map_err(ServiceError::busy_or_fault)
    }

    /// Whether the database answers.
    pub async fn health(&self) -> ServiceResult<()> {
        self.store.health().await.map_err(ServiceError::from)
    }
}
