//! Bounces and complaints heard after sending: finding the delivery a report is about, and
//! recording it with what the rules decided, once per delivery and kind.

use super::{Store, StoreResult};
use crate::domain::bounce::{self, BounceKind, Heard, Report};
use crate::domain::clock::Millis;

/// The delivery a report is about, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BounceTarget {
    pub delivery_id: String,
    pub subscriber_id: String,
    pub digest_id: Option<String>,
    pub email: String,
    pub created_at: Millis,
}

/// What recording a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BounceRecorded {
    /// The same report (delivery and kind) was recorded before: nothing changed.
    Duplicate,
    Recorded {
        /// The subscriber's new status, when the report changed it.
        subscriber: Option<&'static str>,
        /// The digest's delivered emails and, of them, the complaints and policy
        /// rejections heard: what its auto-pause asks.
        digest: Option<DigestHealth>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestHealth {
    pub digest_id: String,
    pub delivered: i64,
    pub complaints: i64,
    pub policy: i64,
}

/// One bounce event, as `/api/subscribers/{email}` and the operators read it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct BounceEventRow {
    pub received_at: Millis,
    pub kind: String,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    pub recipient: Option<String>,
    pub delivery_id: Option<String>,
    pub digest_id: Option<String>,
    pub matched_by: Option<String>,
    pub source: String,
}

/// Bounce counts, of one digest or of all.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct BounceCounts {
    pub hard_bounces: i64,
    pub soft_bounces: i64,
    pub policy_rejections: i64,
    pub complaints: i64,
    pub unmatched: i64,
}

const TARGET: &str = "SELECT d.id AS delivery_id, d.subscriber_id, d.digest_id, s.email,
        d.created_at
     FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id";

const COUNTS: &str = "SELECT
        COUNT(CASE WHEN kind = 'hard' AND matched_by IS NOT NULL THEN 1 END) AS hard_bounces,
        COUNT(CASE WHEN kind = 'soft' AND matched_by IS NOT NULL THEN 1 END) AS soft_bounces,
        COUNT(CASE WHEN kind = 'policy' AND matched_by IS NOT NULL THEN 1 END)
            AS policy_rejections,
        COUNT(CASE WHEN kind = 'complaint' AND matched_by IS NOT NULL THEN 1 END) AS complaints,
        COUNT(CASE WHEN matched_by IS NULL THEN 1 END) AS unmatched
     FROM bounce_events";

impl Store {
    /// The delivery with this id.
    pub async fn bounce_target(&self, delivery_id: &str) -> StoreResult<Option<BounceTarget>> {
        Ok(sqlx::query_as(&format!("{TARGET} WHERE d.id = $1"))
            .bind(delivery_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The latest delivery to the subscriber with this address key (`domain::email::key`).
    pub async fn bounce_target_by_email(&self, key: &str) -> StoreResult<Option<BounceTarget>> {
        Ok(sqlx::query_as(&format!(
            "{TARGET} WHERE lower(s.email) = $1 ORDER BY d.created_at DESC, d.id DESC LIMIT 1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records a report (matched to `target` by `matched_by`, or unmatched), and applies
    /// what `kind` means, in one transaction: a hard bounce (or three soft ones in the last
    /// five deliveries: `domain::bounce::soft_bounces_bounce`) bounces the subscriber, a
    /// complaint unsubscribes them; either suppresses what is still queued for them. The
    /// same report (delivery and kind) twice is recorded once.
    pub async fn record_bounce(
        &self,
        report: &Report,
        kind: BounceKind,
        target: Option<(&BounceTarget, &str)>,
        now: Millis,
    ) -> StoreResult<BounceRecorded> {
        let mut tx = self.begin_write().await?;
        let dedupe = target.map(|(t, _)| format!("{}:{}", t.delivery_id, kind.as_str()));
        let inserted = sqlx::query(
            "INSERT INTO bounce_events (received_at, kind, status, diagnostic, recipient,
                 message_id, delivery_id, subscriber_id, digest_id, matched_by, source,
                 dedupe_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(report.received_at)
        .bind(kind.as_str())
        .bind(report.status.as_deref())
        .bind(report.diagnostic.as_deref())
        .bind(report.recipient.as_deref())
        .bind(report.message_id.as_deref())
        .bind(target.map(|(t, _)| t.delivery_id.as_str()))
        .bind(target.map(|(t, _)| t.subscriber_id.as_str()))
        .bind(target.and_then(|(t, _)| t.digest_id.as_deref()))
        .bind(target.map(|(_, by)| by))
        .bind(report.source.as_str())
        .bind(dedupe.as_deref())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(BounceRecorded::Duplicate);
        }
        let Some((t, _)) = target else {
            sqlx::query(
                "INSERT INTO events (at, kind, digest_id, message) VALUES ($1, $2, NULL, $3)",
            )
            .bind(now)
            .bind("bounce.unmatched")
            .bind(event_message(report, kind, None))
            .execute(&mut *tx)
            .await?;
            self.commit(tx).await?;
            return Ok(BounceRecorded::Recorded {
                subscriber: None,
                digest: None,
            });
        };
        let becomes = match kind {
            BounceKind::Hard => Some("bounced"),
            BounceKind::Complaint => Some("unsubscribed"),
            BounceKind::Soft if bounce::soft_bounces_bounce(&self.heard(&mut tx, t).await?) => {
                Some("bounced")
            }
            _ => None,
        };
        let mut changed = None;
        if let Some(status) = becomes {
            let column = if status == "bounced" {
                "bounced_at"
            } else {
                "unsubscribed_at"
            };
            let n = sqlx::query(&format!(
                "UPDATE subscribers SET status = $1, {column} = $2, updated_at = $2
                 WHERE id = $3 AND status IN ('pending', 'confirmed')"
            ))
            .bind(status)
            .bind(now)
            .bind(t.subscriber_id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            super::queue::suppress_queued(&mut tx, &t.subscriber_id, status, now).await?;
            changed = (n == 1).then_some(status);
        }
        let event_kind = if kind == BounceKind::Complaint {
            "complaint".to_owned()
        } else {
            format!("bounce.{}", kind.as_str())
        };
        sqlx::query("INSERT INTO events (at, kind, digest_id, message) VALUES ($1, $2, $3, $4)")
            .bind(now)
            .bind(event_kind)
            .bind(t.digest_id.as_deref())
            .bind(event_message(report, kind, changed))
            .execute(&mut *tx)
            .await?;
        let digest = match &t.digest_id {
            Some(id) => Some(digest_health(&mut tx, id).await?),
            None => None,
        };
        self.commit(tx).await?;
        Ok(BounceRecorded::Recorded {
            subscriber: changed,
            digest,
        })
    }

    /// What was heard of the subscriber's last five deliveries up to `t`, newest first.
    async fn heard(
        &self,
        tx: &mut sqlx::AnyConnection,
        t: &BounceTarget,
    ) -> StoreResult<Vec<Heard>> {
        let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT d.status,
                    (SELECT CAST(MAX(CASE WHEN b.kind = 'soft' THEN 2
                                      WHEN b.kind IN ('hard', 'policy') THEN 1
                                      ELSE 0 END) AS BIGINT)
                     FROM bounce_events b WHERE b.delivery_id = d.id) AS heard
             FROM deliveries d
             WHERE d.subscriber_id = $1 AND d.created_at <= $2
             ORDER BY d.created_at DESC, d.id DESC LIMIT $3",
        )
        .bind(t.subscriber_id.as_str())
        .bind(t.created_at)
        .bind(bounce::SOFT_WINDOW as i64)
        .fetch_all(&mut *tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(status, heard)| match heard {
                Some(2) => Heard::SoftBounce,
                Some(1) => Heard::Neutral,
                _ if status == "sent" => Heard::Delivered,
                _ => Heard::Neutral,
            })
            .collect())
    }

    /// A subscriber's bounce events, oldest first.
    pub async fn bounce_events_of(&self, subscriber_id: &str) -> StoreResult<Vec<BounceEventRow>> {
        Ok(sqlx::query_as(
            "SELECT received_at, kind, status, diagnostic, recipient, delivery_id, digest_id,
                    matched_by, source
             FROM bounce_events WHERE subscriber_id = $1 ORDER BY id",
        )
        .bind(subscriber_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Bounce counts of one digest, or of all when `digest_id` is `None`.
    pub async fn bounce_counts(&self, digest_id: Option<&str>) -> StoreResult<BounceCounts> {
        Ok(match digest_id {
            Some(id) => {
                sqlx::query_as(&format!("{COUNTS} WHERE digest_id = $1"))
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?
            }
            None => sqlx::query_as(COUNTS).fetch_one(&self.pool).await?,
        })
    }
}

async fn digest_health(tx: &mut sqlx::AnyConnection, id: &str) -> StoreResult<DigestHealth> {
    let (delivered,): (i64,) =
        // The roll-up's count once the digest has one: its deliveries may be gone.
        sqlx::query_as(
            "SELECT COALESCE((SELECT sent FROM delivery_rollups WHERE digest_id = $1),
                             (SELECT COUNT(*) FROM deliveries
                              WHERE digest_id = $1 AND status = 'sent'))",
        )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    let (complaints, policy): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(CASE WHEN kind = 'complaint' THEN 1 END),
                COUNT(CASE WHEN kind = 'policy' THEN 1 END)
         FROM bounce_events WHERE digest_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    Ok(DigestHealth {
        digest_id: id.to_owned(),
        delivered,
        complaints,
        policy,
    })
}

/// The event log's line for a report.
fn event_message(report: &Report, kind: BounceKind, changed: Option<&str>) -> String {
    let what = match kind {
        BounceKind::Complaint => "complaint".to_owned(),
        k => format!("{} bounce", k.as_str()),
    };
    let mut m = format!(
        "{what} from {} for {}",
        report.source,
        report
            .recipient
            .as_deref()
            .unwrap_or("an unknown recipient")
    );
    if let Some(s) = &report.status {
        m.push_str(&format!(", status {s}"));
    }
    if let Some(d) = &report.diagnostic {
        let d: String = d.chars().filter(|c| !c.is_control()).take(200).collect();
        m.push_str(&format!(": {d}"));
    }
    if let Some(status) = changed {
        m.push_str(&format!("; subscriber {status}"));
    }
    m
}
