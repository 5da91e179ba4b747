//! Retention (`delivery_retention`): finished digests rolled up once (what their statistics
//! read of their deliveries, kept in `delivery_rollups`, `delivery_rollup_codes` and
//! `digest_waves.sent`), then deliveries older than the cutoff deleted in small batches, each
//! its own short transaction. Only a rolled-up digest's deliveries are deleted, and of no
//! digest only final ones (sent, failed, suppressed), each counted by kind in
//! `message_rollups` in the transaction that deletes it: a delivery queued or being sent,
//! or of a digest not finished, is never deleted. The job is `service::retention`.

use super::stats::{COUNTS_OF_DIGEST, rank};
use super::{DeliveryCounts, PerDialect, Store, StoreResult, json_list};
use crate::domain::clock::Millis;

/// Finished digests (sent, cancelled, missed) not rolled up yet, nothing of which is queued,
/// claimed or not final: their deliveries do not change any more.
const TO_ROLL_UP: &str = "SELECT id FROM digests g
     WHERE g.status IN ('sent', 'cancelled', 'missed') AND g.rolled_up_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM delivery_queue q WHERE q.digest_id = g.id)
       AND NOT EXISTS (SELECT 1 FROM claim_digests c WHERE c.digest_id = g.id)
       AND NOT EXISTS (SELECT 1 FROM deliveries d
                       WHERE d.digest_id = g.id AND d.status IN ('queued', 'sending'))
     ORDER BY g.created_at LIMIT $1";

/// Rolled-up digests that may have deliveries older than the cutoff `$1`.
const TO_PRUNE: &str = "SELECT id FROM digests
     WHERE rolled_up_at IS NOT NULL AND pruned_at IS NULL
       AND COALESCE(started_at, created_at) < $1
     ORDER BY created_at LIMIT $2";

/// One batch of a rolled-up digest's deliveries older than the cutoff.
const DELETE_OF_DIGEST: &str = "DELETE FROM deliveries WHERE id IN
     (SELECT id FROM deliveries WHERE digest_id = $1 AND created_at < $2 LIMIT $3)";

/// The oldest final deliveries of no digest, older than the cutoff (`deliveries_no_digest`).
const OLD_OF_NO_DIGEST: PerDialect = PerDialect {
    sqlite: "SELECT id, kind, status, bounce, sent_at FROM deliveries
             WHERE digest_id IS NULL AND created_at < $1
               AND status IN ('sent', 'failed', 'suppressed')
             ORDER BY created_at, id LIMIT $2",
    postgres: "SELECT id, kind, status, bounce, sent_at FROM deliveries
             WHERE digest_id IS NULL AND created_at < $1
               AND status IN ('sent', 'failed', 'suppressed')
             ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
};

const DELETE_LISTED: PerDialect = PerDialect {
    sqlite: "DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each($1))",
    postgres: "DELETE FROM deliveries WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb))",
};

/// Adds deleted deliveries of one kind to its roll-up.
const ADD_TO_MESSAGE_ROLLUP: PerDialect = PerDialect {
    sqlite: "INSERT INTO message_rollups
                 (kind, sent, failed, bounced, suppressed, first_sent_at, last_sent_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (kind) DO UPDATE SET
                 sent = message_rollups.sent + excluded.sent,
                 failed = message_rollups.failed + excluded.failed,
                 bounced = message_rollups.bounced + excluded.bounced,
                 suppressed = message_rollups.suppressed + excluded.suppressed,
                 first_sent_at = COALESCE(min(message_rollups.first_sent_at,
                     excluded.first_sent_at), message_rollups.first_sent_at,
                     excluded.first_sent_at),
                 last_sent_at = COALESCE(max(message_rollups.last_sent_at,
                     excluded.last_sent_at), message_rollups.last_sent_at,
                     excluded.last_sent_at)",
    postgres: "INSERT INTO message_rollups
                 (kind, sent, failed, bounced, suppressed, first_sent_at, last_sent_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (kind) DO UPDATE SET
                 sent = message_rollups.sent + excluded.sent,
                 failed = message_rollups.failed + excluded.failed,
                 bounced = message_rollups.bounced + excluded.bounced,
                 suppressed = message_rollups.suppressed + excluded.suppressed,
                 first_sent_at = LEAST(message_rollups.first_sent_at, excluded.first_sent_at),
                 last_sent_at = GREATEST(message_rollups.last_sent_at, excluded.last_sent_at)",
};

impl Store {
    /// Finished digests not rolled up yet (at most `limit`), oldest first.
    pub async fn digests_to_roll_up(&self, limit: i64) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(TO_ROLL_UP)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Rolls up a finished digest, once: `false` if it already was. Its deliveries no longer
    /// change (`digests_to_roll_up`), so they are read outside the transaction, which only
    /// writes the few rows of the roll-up and stays short.
    pub async fn roll_up(&self, digest_id: &str, now: Millis) -> StoreResult<bool> {
        let counts: DeliveryCounts = sqlx::query_as(COUNTS_OF_DIGEST)
            .bind(digest_id)
            .fetch_one(&self.pool)
            .await?;
        let (p50, p95) = if counts.sent > 0 {
            (
                self.latency_at_rank(digest_id, rank(counts.sent, 0.5))
                    .await?,
                self.latency_at_rank(digest_id, rank(counts.sent, 0.95))
                    .await?,
            )
        } else {
            (None, None)
        };
        let codes: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT smtp_code, COUNT(*) FROM deliveries
             WHERE digest_id = $1 AND smtp_code IS NOT NULL GROUP BY smtp_code",
        )
        .bind(digest_id)
        .fetch_all(&self.pool)
        .await?;
        let waves: Vec<(String, i64)> = sqlx::query_as(
            "SELECT w.timezone, (SELECT COUNT(*) FROM deliveries d
                  WHERE d.digest_id = w.digest_id AND d.wave = w.timezone AND d.status = 'sent')
             FROM digest_waves w WHERE w.digest_id = $1",
        )
        .bind(digest_id)
        .fetch_all(&self.pool)
        .await?;

        let mut tx = self.begin_write().await?;
        let marked = sqlx::query(
            "UPDATE digests SET rolled_up_at = $2 WHERE id = $1 AND rolled_up_at IS NULL",
        )
        .bind(digest_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if marked == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO delivery_rollups (digest_id, sent, failed, bounced, suppressed,
                 first_sent_at, last_sent_at, latency_p50_ms, latency_p95_ms, rolled_up_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(digest_id)
        .bind(counts.sent)
        .bind(counts.failed)
        .bind(counts.bounced)
        .bind(counts.suppressed)
        .bind(counts.first_sent_at)
        .bind(counts.last_sent_at)
        .bind(p50)
        .bind(p95)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (code, n) in codes {
            sqlx::query(
                "INSERT INTO delivery_rollup_codes (digest_id, smtp_code, n) VALUES ($1, $2, $3)",
            )
            .bind(digest_id)
            .bind(code)
            .bind(n)
            .execute(&mut *tx)
            .await?;
        }
        for (zone, sent) in waves {
            sqlx::query("UPDATE digest_waves SET sent = $3 WHERE digest_id = $1 AND timezone = $2")
                .bind(digest_id)
                .bind(zone)
                .bind(sent)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        Ok(true)
    }

    /// Rolled-up digests that may hold deliveries older than `cutoff`.
    pub async fn digests_to_prune(&self, cutoff: Millis, limit: i64) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(TO_PRUNE)
            .bind(cutoff)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Deletes up to `batch` of a rolled-up digest's deliveries made before `cutoff`, in one
    /// statement (its own transaction): how many, and whether the digest is pruned now (none
    /// of its deliveries left).
    pub async fn prune_digest(
        &self,
        digest_id: &str,
        cutoff: Millis,
        batch: i64,
        now: Millis,
    ) -> StoreResult<(u64, bool)> {
        let mut conn = self.write_conn().await?;
        let deleted = sqlx::query(DELETE_OF_DIGEST)
            .bind(digest_id)
            .bind(cutoff)
            .bind(batch)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        let mut pruned = false;
        if deleted < batch as u64 {
            pruned = sqlx::query(
                "UPDATE digests SET pruned_at = $2 WHERE id = $1 AND rolled_up_at IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM deliveries WHERE digest_id = $1)",
            )
            .bind(digest_id)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1;
        }
        Ok((deleted, pruned))
    }

    /// Deletes up to `batch` final deliveries of no digest made before `cutoff`, oldest
    /// first, and counts them by kind in `message_rollups` in the same transaction; how many.
    pub async fn prune_messages(&self, cutoff: Millis, batch: i64) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let rows: Vec<(String, String, String, i64, Option<Millis>)> =
            sqlx::query_as(self.sql(&OLD_OF_NO_DIGEST))
                .bind(cutoff)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut per_kind: std::collections::BTreeMap<&str, DeliveryCounts> = Default::default();
        for (_, kind, status, bounce, sent_at) in &rows {
            // A test send is in no count.
            if kind == "test" {
                continue;
            }
            let c = per_kind.entry(kind.as_str()).or_default();
            match (status.as_str(), *bounce != 0) {
                ("sent", _) => c.sent += 1,
                ("failed", false) => c.failed += 1,
                ("failed", true) => c.bounced += 1,
                _ => c.suppressed += 1,
            }
            if let Some(at) = *sent_at {
                c.first_sent_at = Some(c.first_sent_at.map_or(at, |f| f.min(at)));
                c.last_sent_at = Some(c.last_sent_at.map_or(at, |l| l.max(at)));
            }
        }
        for (kind, c) in per_kind {
            sqlx::query(self.sql(&ADD_TO_MESSAGE_ROLLUP))
                .bind(kind)
                .bind(c.sent)
                .bind(c.failed)
                .bind(c.bounced)
                .bind(c.suppressed)
                .bind(c.first_sent_at)
                .bind(c.last_sent_at)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query(self.sql(&DELETE_LISTED))
            .bind(json_list(rows.iter().map(|r| r.0.as_str())))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        self.commit(tx).await?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_has_its_own_text() {
        crate::store::tests::assert_dialects(&[
            ("OLD_OF_NO_DIGEST", OLD_OF_NO_DIGEST),
            ("DELETE_LISTED", DELETE_LISTED),
            ("ADD_TO_MESSAGE_ROLLUP", ADD_TO_MESSAGE_ROLLUP),
        ]);
    }
}
