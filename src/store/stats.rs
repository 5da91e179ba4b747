//! Counts for reporting: deliveries by state, latency, reply codes, subscribers per day,
//! throughput, recent failures. Reads only.

use serde::Serialize;

use super::{FailureRow, PerDialect, Store, StoreResult};
use crate::domain::clock::Millis;

/// Deliveries by state, for one digest or all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeliveryCounts {
    /// Waiting for a first attempt.
    pub queued: i64,
    /// Waiting for another attempt after a transient failure.
    pub retrying: i64,
    /// Leased by a worker (on the wire, or about to be).
    pub sending: i64,
    pub sent: i64,
    /// Given up, other than hard bounces.
    pub failed: i64,
    /// Failed because the address does not exist.
    pub bounced: i64,
    pub suppressed: i64,
    #[serde(skip)]
    pub first_sent_at: Option<Millis>,
    #[serde(skip)]
    pub last_sent_at: Option<Millis>,
}

impl DeliveryCounts {
    pub fn total(&self) -> i64 {
        self.queued
            + self.retrying
            + self.sending
            + self.sent
            + self.failed
            + self.bounced
            + self.suppressed
    }

    /// Not final yet.
    pub fn pending(&self) -> i64 {
        self.queued + self.retrying + self.sending
    }
}

/// Subscriber timestamps that per-day statistics count.
#[derive(Debug, Clone, Copy)]
pub enum DayColumn {
    SignedUp,
    Confirmed,
    Unsubscribed,
}

impl DayColumn {
    /// Counts per UTC day (days since the epoch) of this timestamp since `$1`.
    fn per_day(self) -> &'static str {
        match self {
            Self::SignedUp => {
                "SELECT created_at / 86400000 AS day, COUNT(*) AS n FROM subscribers
                 WHERE created_at >= $1 GROUP BY created_at / 86400000 ORDER BY day"
            }
            Self::Confirmed => {
                "SELECT confirmed_at / 86400000 AS day, COUNT(*) AS n FROM subscribers
                 WHERE confirmed_at >= $1 GROUP BY confirmed_at / 86400000 ORDER BY day"
            }
            Self::Unsubscribed => {
                "SELECT unsubscribed_at / 86400000 AS day, COUNT(*) AS n FROM subscribers
                 WHERE unsubscribed_at >= $1 GROUP BY unsubscribed_at / 86400000 ORDER BY day"
            }
        }
    }
}

/// The counts of a set of deliveries by state, as `DeliveryCounts` reads them.
macro_rules! counts_of {
    ($from:literal) => {
        concat!(
            "SELECT
         COUNT(CASE WHEN status = 'queued' AND attempts = 0 THEN 1 END) AS queued,
         COUNT(CASE WHEN status = 'queued' AND attempts > 0 THEN 1 END) AS retrying,
         COUNT(CASE WHEN status = 'sending' THEN 1 END) AS sending,
         COUNT(CASE WHEN status = 'sent' THEN 1 END) AS sent,
         COUNT(CASE WHEN status = 'failed' AND bounce = 0 THEN 1 END) AS failed,
         COUNT(CASE WHEN status = 'failed' AND bounce <> 0 THEN 1 END) AS bounced,
         COUNT(CASE WHEN status = 'suppressed' THEN 1 END) AS suppressed,
         MIN(sent_at) AS first_sent_at,
         MAX(sent_at) AS last_sent_at ",
            $from
        )
    };
}

/// A digest's deliveries still there. Statements per part rather than `$1 IS NULL OR
/// digest_id = $1`, which SQLite can only answer by reading every delivery ever made.
pub(super) const COUNTS_OF_DIGEST: &str = counts_of!("FROM deliveries WHERE digest_id = $1");

/// The list's totals are three parts, none of which reads the history: the roll-ups (one row
/// per finished digest and per kind of other email), the deliveries of the digests not
/// rolled up yet (read digest by digest through `deliveries_digest`: on PostgreSQL a
/// LATERAL join, which is never planned as a scan of every delivery), and the deliveries of
/// no digest still there. Test sends are no deliveries of anyone's: a digest's have no
/// `digest_id`, and the list's leave them out by kind.
const COUNTS_OF_ROLLUPS: &str = "SELECT CAST(0 AS BIGINT) AS queued, CAST(0 AS BIGINT) AS retrying,
         CAST(0 AS BIGINT) AS sending,
         CAST(COALESCE(SUM(sent), 0) AS BIGINT) AS sent,
         CAST(COALESCE(SUM(failed), 0) AS BIGINT) AS failed,
         CAST(COALESCE(SUM(bounced), 0) AS BIGINT) AS bounced,
         CAST(COALESCE(SUM(suppressed), 0) AS BIGINT) AS suppressed,
         MIN(first_sent_at) AS first_sent_at, MAX(last_sent_at) AS last_sent_at
     FROM (SELECT sent, failed, bounced, suppressed, first_sent_at, last_sent_at
           FROM delivery_rollups
           UNION ALL
           SELECT sent, failed, bounced, suppressed, first_sent_at, last_sent_at
           FROM message_rollups) r";
const COUNTS_OF_LIVE_DIGESTS: PerDialect = PerDialect {
    sqlite: counts_of!(
        "FROM deliveries
         WHERE digest_id IN (SELECT id FROM digests WHERE rolled_up_at IS NULL)"
    ),
    // Counted inside the LATERAL subquery, per digest: an aggregate there cannot be pulled
    // up into a join, which PostgreSQL planned as a hash join over a sequential scan of every
    // delivery (2.1 s with 10M rows of history; BENCHMARKS.md).
    postgres: concat!(
        "SELECT CAST(COALESCE(SUM(c.queued), 0) AS BIGINT) AS queued,
             CAST(COALESCE(SUM(c.retrying), 0) AS BIGINT) AS retrying,
             CAST(COALESCE(SUM(c.sending), 0) AS BIGINT) AS sending,
             CAST(COALESCE(SUM(c.sent), 0) AS BIGINT) AS sent,
             CAST(COALESCE(SUM(c.failed), 0) AS BIGINT) AS failed,
             CAST(COALESCE(SUM(c.bounced), 0) AS BIGINT) AS bounced,
             CAST(COALESCE(SUM(c.suppressed), 0) AS BIGINT) AS suppressed,
             MIN(c.first_sent_at) AS first_sent_at, MAX(c.last_sent_at) AS last_sent_at
         FROM digests g CROSS JOIN LATERAL (",
        counts_of!("FROM deliveries WHERE deliveries.digest_id = g.id"),
        ") c WHERE g.rolled_up_at IS NULL"
    ),
};
const COUNTS_OF_NO_DIGEST: &str =
    counts_of!("FROM deliveries WHERE digest_id IS NULL AND kind <> 'test'");

/// A finished digest's roll-up, as its counts.
const ROLLED_UP_COUNTS: &str = "SELECT CAST(0 AS BIGINT) AS queued, CAST(0 AS BIGINT) AS retrying,
         CAST(0 AS BIGINT) AS sending, sent, failed,
         bounced, suppressed, first_sent_at, last_sent_at
     FROM delivery_rollups WHERE digest_id = $1";

/// The rank (0-based) of the quantile `q` among `sent` sent messages, by latency.
pub(super) fn rank(sent: i64, q: f64) -> i64 {
    ((sent - 1) as f64 * q).floor() as i64
}

impl DeliveryCounts {
    /// These and `other` together.
    fn add(mut self, other: Self) -> Self {
        self.queued += other.queued;
        self.retrying += other.retrying;
        self.sending += other.sending;
        self.sent += other.sent;
        self.failed += other.failed;
        self.bounced += other.bounced;
        self.suppressed += other.suppressed;
        self.first_sent_at = match (self.first_sent_at, other.first_sent_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_sent_at = self.last_sent_at.max(other.last_sent_at);
        self
    }
}

impl Store {
    /// A digest's counts (its roll-up once it has one), or the list's.
    pub async fn delivery_counts(&self, digest_id: Option<&str>) -> StoreResult<DeliveryCounts> {
        let Some(id) = digest_id else {
            let rolled: DeliveryCounts = sqlx::query_as(COUNTS_OF_ROLLUPS)
                .fetch_one(&self.pool)
                .await?;
            let live: DeliveryCounts = sqlx::query_as(self.sql(&COUNTS_OF_LIVE_DIGESTS))
                .fetch_one(&self.pool)
                .await?;
            let other: DeliveryCounts = sqlx::query_as(COUNTS_OF_NO_DIGEST)
                .fetch_one(&self.pool)
                .await?;
            return Ok(rolled.add(live).add(other));
        };
        let rolled: Option<DeliveryCounts> = sqlx::query_as(ROLLED_UP_COUNTS)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match rolled {
            Some(c) => Ok(c),
            None => Ok(sqlx::query_as(COUNTS_OF_DIGEST)
                .bind(id)
                .fetch_one(&self.pool)
                .await?),
        }
    }

    /// The enqueue-to-sent latency at the 50th and 95th percentiles of a digest's `sent` sent
    /// messages (its roll-up's once it has one).
    pub async fn latency_percentiles(
        &self,
        digest_id: &str,
        sent: i64,
    ) -> StoreResult<(Option<Millis>, Option<Millis>)> {
        let rolled: Option<(Option<Millis>, Option<Millis>)> = sqlx::query_as(
            "SELECT latency_p50_ms, latency_p95_ms FROM delivery_rollups WHERE digest_id = $1",
        )
        .bind(digest_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(p) = rolled {
            return Ok(p);
        }
        if sent <= 0 {
            return Ok((None, None));
        }
        Ok((
            self.latency_at_rank(digest_id, rank(sent, 0.5)).await?,
            self.latency_at_rank(digest_id, rank(sent, 0.95)).await?,
        ))
    }

    /// The enqueue-to-sent latency at rank `rank` (0-based) among a digest's sent messages.
    pub(super) async fn latency_at_rank(
        &self,
        digest_id: &str,
        rank: i64,
    ) -> StoreResult<Option<Millis>> {
        Ok(sqlx::query_scalar(
            "SELECT sent_at - created_at AS latency FROM deliveries
             WHERE digest_id = $1 AND status = 'sent'
             ORDER BY latency LIMIT 1 OFFSET $2",
        )
        .bind(digest_id)
        .bind(rank)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A digest's most frequent SMTP reply codes: (code, how many); its roll-up's once it has
    /// one.
    pub async fn reply_codes(&self, digest_id: &str, limit: i64) -> StoreResult<Vec<(i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT smtp_code, n FROM delivery_rollup_codes WHERE digest_id = $1
             UNION ALL
             SELECT smtp_code, COUNT(*) AS n FROM deliveries
             WHERE digest_id = $1 AND smtp_code IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM delivery_rollups r WHERE r.digest_id = $1)
             GROUP BY smtp_code
             ORDER BY n DESC, smtp_code LIMIT $2",
        )
        .bind(digest_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Subscribers by status: (status, how many).
    pub async fn subscriber_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT status, COUNT(*) AS n FROM subscribers GROUP BY status")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Counts per UTC day (days since the epoch) of a subscriber timestamp since `since`.
    pub async fn per_day(&self, column: DayColumn, since: Millis) -> StoreResult<Vec<(i64, i64)>> {
        Ok(sqlx::query_as(column.per_day())
            .bind(since)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Of the sign-ups since `since`: how many, and how many are confirmed (or were, before
    /// leaving).
    pub async fn confirmation_counts(&self, since: Millis) -> StoreResult<(i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*) AS total, COUNT(confirmed_at) AS confirmed
             FROM subscribers WHERE created_at >= $1",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await?)
    }

    /// When the longest-waiting due delivery became due.
    pub async fn oldest_due(&self, now: Millis) -> StoreResult<Option<Millis>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(t) FROM (
                     SELECT MIN(run_at) AS t FROM delivery_queue WHERE run_at <= $1
                     UNION ALL
                     SELECT MIN(run_at) AS t FROM queued_chunks WHERE run_at <= $1) AS due",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Messages sent per minute (minutes since the epoch) since `since`.
    pub async fn sent_per_minute(&self, since: Millis) -> StoreResult<Vec<(i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT minute, sent AS n FROM sent_per_minute WHERE minute >= $1 / 60000
             ORDER BY minute",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The latest permanent failures, newest first.
    pub async fn recent_failures(&self, limit: i64) -> StoreResult<Vec<FailureRow>> {
        Ok(sqlx::query_as(
            "SELECT d.id AS delivery_id, d.kind, d.digest_id, s.email, d.smtp_code,
                    COALESCE(d.last_error, '') AS error, d.failed_at AS at
             FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
             WHERE d.failed_at IS NOT NULL ORDER BY d.failed_at DESC, d.id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
