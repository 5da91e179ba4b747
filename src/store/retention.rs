//! Retention (`delivery_retention`): finished digests rolled up once (what their statistics
//! read of their deliveries, kept in `delivery_rollups`, `delivery_rollup_codes` and
//! `digest_waves.sent`), then deliveries older than the cutoff deleted in small batches, each
//! its own short transaction. Only a rolled-up digest's deliveries are deleted, and of no
//! digest only final ones (sent, failed, suppressed), each counted by kind in
//! `message_rollups` in the transaction that deletes it: a delivery queued or being sent,
//! or of a digest not finished, is never deleted. The job is `service::retention`.

use super::stats::{COUNTS_OF_DIGEST, rank};
use super::{DeliveryCounts, Dialect, PerDialect, Store, StoreResult, json_list};
use crate::domain::clock::Millis;

/// Finished digests (sent, cancelled, missed) not rolled up yet, nothing of which is queued,
/// claimed or not final: their deliveries do not change any more.
const TO_ROLL_UP: &str = "SELECT id FROM digests g
     WHERE g.status IN ('sent', 'cancelled', 'missed') AND g.rolled_up_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM delivery_queue q WHERE q.digest_id = g.id)
       AND NOT EXISTS (SELECT 1 FROM queued_chunks q WHERE q.digest_id = g.id)
       AND NOT EXISTS (SELECT 1 FROM claim_digests c WHERE c.digest_id = g.id)
       AND NOT EXISTS (SELECT 1 FROM deliveries d
                       WHERE d.digest_id = g.id AND d.status IN ('queued', 'sending'))
     ORDER BY g.created_at LIMIT $1";

/// Rolled-up digests that may have deliveries older than the cutoff `$1`.
const TO_PRUNE: &str = "SELECT id FROM digests
     WHERE rolled_up_at IS NOT NULL AND pruned_at IS NULL
       AND COALESCE(started_at, created_at) < $1
     ORDER BY created_at LIMIT $2";

/// One batch of a rolled-up digest's deliveries older than the cutoff `$2`: the next `$3`
/// of them in the order of the (digest, subscriber) key after the subscriber `$4` (`''`
/// before the first). The order makes it a range of that key's index, whatever the tables'
/// statistics say: without it PostgreSQL may read the batch by a sequential scan, from
/// wherever the scan starts up to this digest's rows (BENCHMARKS.md, "History and
/// retention", 2026-12-07), and each batch would read again the entries of the rows the batches
/// before it deleted. PostgreSQL returns how many were deleted, how many were read and the
/// last subscriber read (in the column's collation); SQLite the subscribers deleted (its
/// text compares bytewise, as Rust's does).
const DELETE_OF_DIGEST: PerDialect = PerDialect {
    sqlite: "DELETE FROM deliveries WHERE id IN
                 (SELECT id FROM deliveries
                  WHERE digest_id = $1 AND subscriber_id > $4 AND created_at < $2
                  ORDER BY subscriber_id LIMIT $3)
             RETURNING subscriber_id",
    postgres: "WITH batch AS MATERIALIZED
                 (SELECT id, subscriber_id FROM deliveries
                  WHERE digest_id = $1 AND subscriber_id > $4 AND created_at < $2
                  ORDER BY subscriber_id LIMIT $3),
             gone AS (DELETE FROM deliveries WHERE id IN (SELECT id FROM batch) RETURNING 1)
             SELECT (SELECT COUNT(*) FROM gone), (SELECT COUNT(*) FROM batch),
                    (SELECT MAX(subscriber_id) FROM batch)",
};

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

/// What one deletion batch of a digest's deliveries did (`Store::prune_digest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedBatch {
    /// Delivery records deleted.
    pub deleted: u64,
    /// The batch was full: the next starts after this subscriber.
    pub next: Option<String>,
    /// The batch was the digest's last and none of its deliveries is left.
    pub pruned: bool,
}

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

    /// Deletes the next `batch` of a rolled-up digest's deliveries made before `cutoff`,
    /// those of the subscribers after `after` (`""` at first), in one statement (its own
    /// transaction). Says how many, where the next batch starts if this one was full, and
    /// otherwise whether the digest is pruned now (none of its deliveries left).
    pub async fn prune_digest(
        &self,
        digest_id: &str,
        cutoff: Millis,
        after: &str,
        batch: i64,
        now: Millis,
    ) -> StoreResult<PrunedBatch> {
        let mut conn = self.write_conn().await?;
        let (deleted, read, last): (i64, i64, Option<String>) = match self.dialect {
            Dialect::Postgres => {
                sqlx::query_as(DELETE_OF_DIGEST.postgres)
                    .bind(digest_id)
                    .bind(cutoff)
                    .bind(batch)
                    .bind(after)
                    .fetch_one(&mut *conn)
                    .await?
            }
            Dialect::Sqlite => {
                let gone: Vec<String> = sqlx::query_scalar(DELETE_OF_DIGEST.sqlite)
                    .bind(digest_id)
                    .bind(cutoff)
                    .bind(batch)
                    .bind(after)
                    .fetch_all(&mut *conn)
                    .await?;
                let n = i64::try_from(gone.len()).unwrap_or(i64::MAX);
                (n, n, gone.into_iter().max())
            }
        };
        let deleted = u64::try_from(deleted).unwrap_or(0);
        if read >= batch {
            return Ok(PrunedBatch {
                deleted,
                next: last,
                pruned: false,
            });
        }
        let pruned = sqlx::query(
            "UPDATE digests SET pruned_at = $2 WHERE id = $1 AND rolled_up_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM deliveries WHERE digest_id = $1)",
        )
        .bind(digest_id)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        Ok(PrunedBatch {
            deleted,
            next: None,
            pruned,
        })
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

    /// Sequential scans of `table` counted in this session's current transaction.
    async fn seq_scans(conn: &mut sqlx::AnyConnection, table: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT seq_scan FROM pg_stat_xact_user_tables
             WHERE relname = $1 AND schemaname = current_schema()",
        )
        .bind(table)
        .fetch_one(conn)
        .await
        .expect("pg_stat_xact_user_tables")
    }

    /// A deletion batch reads its own digest's rows by the (digest, subscriber) key, and the
    /// queue rows of what it deleted by the queue's key: it never reads the whole history,
    /// nor the queue a send is being claimed from, whatever the statistics say. Before, with
    /// a few digests whose rows lie in no order of that key, PostgreSQL read a batch by a
    /// sequential scan of the history (from wherever it started to the digest's rows), and
    /// the trigger that takes deleted deliveries out of the queue joined 2,000 of them by
    /// hash, reading every queued row of the send beside it.
    #[tokio::test]
    async fn postgres_a_deletion_batch_reads_neither_the_history_nor_the_queue() {
        let Some((_db, store)) = super::super::tests::postgres_store().await else {
            return;
        };
        for sql in [
            "INSERT INTO subscribers (id, email, status, unsubscribe_token, consent_at,
                 created_at, updated_at)
             SELECT md5(i::text), 'reader' || i || '@example.com', 'confirmed',
                 md5('t' || i), 0, 0, 0
             FROM generate_series(1, 10000) i",
            "INSERT INTO digests (id, subject, status, recipients, created_at, updated_at,
                 rolled_up_at)
             SELECT 'old-' || d, 'Old', 'sent', 10000, 0, 0, 1 FROM generate_series(1, 8) d",
            // In no order of the (digest, subscriber) key, as the history of a list whose
            // ids are not made in the order its fan-outs read them.
            "INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
                 created_at, updated_at)
             SELECT 'old-' || d || '-' || s.id, 'digest', s.id, 'old-' || d, 'sent', 0, 0, 0
             FROM generate_series(1, 8) d, subscribers s ORDER BY random()",
            // A send beside the job: 50,000 deliveries queued.
            "INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
             SELECT 'live-' || i, 'live', 0 FROM generate_series(1, 50000) i",
            "ANALYZE deliveries",
            "ANALYZE delivery_queue",
        ] {
            sqlx::query(sql).execute(&store.pool).await.expect(sql);
        }
        let mut conn = store.pool.acquire().await.expect("connection");
        sqlx::query("BEGIN")
            .execute(&mut *conn)
            .await
            .expect("begin");
        let (history, queue) = (
            seq_scans(&mut conn, "deliveries").await,
            seq_scans(&mut conn, "delivery_queue").await,
        );
        // A batch of each digest: more than the five runs after which PostgreSQL may keep a
        // generic plan.
        for d in 1..=8 {
            let (deleted, read, last): (i64, i64, Option<String>) =
                sqlx::query_as(DELETE_OF_DIGEST.postgres)
                    .bind(format!("old-{d}"))
                    .bind(1_i64)
                    .bind(2_000_i64)
                    .bind("")
                    .fetch_one(&mut *conn)
                    .await
                    .expect("batch");
            assert_eq!((deleted, read), (2000, 2000));
            assert!(last.is_some());
        }
        let reads = (
            seq_scans(&mut conn, "deliveries").await - history,
            seq_scans(&mut conn, "delivery_queue").await - queue,
        );
        sqlx::query("ROLLBACK")
            .execute(&mut *conn)
            .await
            .expect("rollback");
        drop(conn);
        store.close().await;
        assert_eq!(
            reads,
            (0, 0),
            "sequential scans of (deliveries, delivery_queue) in 8 batches"
        );
    }

    #[test]
    fn each_dialect_has_its_own_text() {
        crate::store::tests::assert_dialects(&[
            ("OLD_OF_NO_DIGEST", OLD_OF_NO_DIGEST),
            ("DELETE_LISTED", DELETE_LISTED),
            ("ADD_TO_MESSAGE_ROLLUP", ADD_TO_MESSAGE_ROLLUP),
            ("DELETE_OF_DIGEST", DELETE_OF_DIGEST),
        ]);
    }
}
