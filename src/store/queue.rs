//! The queue's bookkeeping: `enqueue` (never a second copy of a delivery), claims taken over
//! from dead or stuck workers and their deliveries queued again, `next_due`, and queued mail
//! suppressed for someone who left. The claim is `claim.rs`, the outcomes `record.rs`.

use sqlx::AnyConnection;

use super::{PerDialect, Store, StoreResult, json_list};
use crate::domain::clock::Millis;
use crate::domain::liveness::alive_since;

/// Claims to take over (`$1`: now): those whose worker is dead (no heartbeat since `$3`,
/// `domain::liveness::alive_since`; never the asking worker `$2` itself), and, the last resort,
/// those whose lease ran out (a worker that heartbeats but makes no progress). A claim made
/// before claims had owners has only its lease.
const EXPIRED_CLAIMS: PerDialect = PerDialect {
    sqlite: "SELECT id, deliveries, worker_id,
                    CASE WHEN lease_until < $1 THEN 1 ELSE 0 END FROM claims
             WHERE lease_until < $1
                OR (worker_id IS NOT NULL AND worker_id <> $2 AND NOT EXISTS
                    (SELECT 1 FROM workers w WHERE w.id = claims.worker_id
                       AND w.heartbeat_at >= $3))
             ORDER BY lease_until LIMIT 16",
    postgres: "SELECT id, deliveries, worker_id,
                    CASE WHEN lease_until < $1 THEN 1 ELSE 0 END FROM claims
             WHERE lease_until < $1
                OR (worker_id IS NOT NULL AND worker_id <> $2 AND NOT EXISTS
                    (SELECT 1 FROM workers w WHERE w.id = claims.worker_id
                       AND w.heartbeat_at >= $3))
             ORDER BY lease_until LIMIT 16 FOR UPDATE SKIP LOCKED",
};

/// An expired claim's deliveries (`$1`, its `deliveries` list) that it still holds.
const REQUEUE_HELD: PerDialect = PerDialect {
    sqlite: "UPDATE deliveries SET status = 'queued', claim_id = NULL, updated_at = $3
             WHERE id IN (SELECT value FROM json_each($1)) AND claim_id = $2 AND status = 'sending'
             RETURNING id",
    postgres: "UPDATE deliveries SET status = 'queued', claim_id = NULL, updated_at = $3
             WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb)) AND claim_id = $2
               AND status = 'sending'
             RETURNING id",
};

const ENQUEUE: PerDialect = PerDialect {
    sqlite: "INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
             SELECT id, digest_id, $2 FROM deliveries WHERE id IN (SELECT value FROM json_each($1))
             ON CONFLICT (delivery_id) DO NOTHING",
    // Each id looked up by the key (the LIMIT keeps the lookup from being flattened into a
    // join): as `id IN (…)`, the prepared statement's generic plan read all of `deliveries`
    // into a hash while the table was small enough to look cheap, 3.5 ms of a sign-up
    // batch's time at 11,000 rows against 0.25 ms.
    postgres: "INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
             SELECT d.id, d.digest_id, $2 FROM jsonb_array_elements_text($1::jsonb) AS q(id)
             CROSS JOIN LATERAL (SELECT id, digest_id FROM deliveries WHERE id = q.id LIMIT 1) AS d
             ON CONFLICT (delivery_id) DO NOTHING",
};

impl Store {
    /// Claims whose worker is dead, or whose lease ran out (their worker heartbeats but makes
    /// no progress): what they still hold goes back into the queue, due now, and the claim is
    /// gone; a late outcome from the old holder no longer matches (`deliveries.claim_id`) and
    /// is ignored, and tells that worker its claim was taken over (`record`).
    pub(super) async fn requeue_expired_claims(
        &self,
        tx: &mut AnyConnection,
        worker_id: &str,
        now: Millis,
    ) -> StoreResult<()> {
        let expired: Vec<(String, String, Option<String>, i64)> =
            sqlx::query_as(self.sql(&EXPIRED_CLAIMS))
                .bind(now)
                .bind(worker_id)
                .bind(alive_since(now))
                .fetch_all(&mut *tx)
                .await?;
        for (claim_id, ids, owner, lease_ran_out) in expired {
            // The update first: it waits for an outcome being recorded for the same rows,
            // and then sees it.
            let requeued: Vec<String> = sqlx::query_scalar(self.sql(&REQUEUE_HELD))
                .bind(&ids)
                .bind(&claim_id)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
            self.enqueue(tx, &requeued, now).await?;
            sqlx::query("DELETE FROM claims WHERE id = $1")
                .bind(&claim_id)
                .execute(&mut *tx)
                .await?;
            let owner = owner.as_deref().unwrap_or("unknown");
            if lease_ran_out == 1 {
                tracing::warn!(claim_id = %claim_id, worker_id = owner, "a claim's lease ran out (its worker made no progress); its unsent deliveries are queued again");
            } else {
                tracing::warn!(claim_id = %claim_id, worker_id = owner, "a claim's worker is gone (no heartbeat); its unsent deliveries are queued again");
            }
        }
        Ok(())
    }

    /// Puts deliveries just set back to `queued` into the queue, due at `run_at`. A row
    /// already there stays as it is: a second copy of a delivery is never queued.
    pub(super) async fn enqueue(
        &self,
        tx: &mut AnyConnection,
        ids: &[impl AsRef<str>],
        run_at: Millis,
    ) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(self.sql(&ENQUEUE))
            .bind(json_list(ids.iter().map(AsRef::as_ref)))
            .bind(run_at)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// When the next queued delivery is due, if any: lets an idle worker sleep exactly so long.
    pub async fn next_due(&self) -> StoreResult<Option<Millis>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(t) FROM (
                 SELECT MIN(run_at) AS t FROM delivery_queue
                 UNION ALL
                 SELECT MIN(run_at) AS t FROM queued_chunks
                 UNION ALL
                 SELECT MIN(lease_until) AS t FROM claims) AS next",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Queued mail for someone who left is suppressed at once, not just skipped at send time.
pub(super) async fn suppress_queued(
    tx: &mut AnyConnection,
    subscriber_id: &str,
    reason: &str,
    now: Millis,
) -> StoreResult<()> {
    sqlx::query(
        "DELETE FROM delivery_queue
         WHERE delivery_id IN (SELECT id FROM deliveries WHERE subscriber_id = $1)",
    )
    .bind(subscriber_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE deliveries SET status = 'suppressed', last_error = $1, updated_at = $2
         WHERE subscriber_id = $3 AND status = 'queued'",
    )
    .bind(reason)
    .bind(now)
    .bind(subscriber_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_statements_are_written_for_each_backend() {
        super::super::tests::assert_dialects(&[
            ("EXPIRED_CLAIMS", EXPIRED_CLAIMS),
            ("REQUEUE_HELD", REQUEUE_HELD),
            ("ENQUEUE", ENQUEUE),
        ]);
    }
}
