//! Test sends: a digest mailed to a few editors' addresses through the queue. Each address
//! is a delivery of kind `test` with no subscriber and no digest of its own (so nothing that
//! counts a digest's or a list's deliveries sees it), and a `test_sends` row with its address
//! and the digest it shows.

use super::{PerDialect, Store, StoreResult, json_list, new_id};
use crate::domain::DeliveryKind;
use crate::domain::EmailAddress;
use crate::domain::clock::Millis;
use crate::domain::digest::DigestAction;
use crate::domain::test_send::{WINDOW, may_request};

/// The claimed tests' recipients (`$1`: delivery ids).
pub(super) const CLAIMED_TESTS: PerDialect = PerDialect {
    sqlite: "SELECT delivery_id, digest_id, address FROM test_sends
             WHERE delivery_id IN (SELECT value FROM json_each($1))",
    postgres: "SELECT delivery_id, digest_id, address FROM test_sends
             WHERE delivery_id IN (SELECT jsonb_array_elements_text($1::jsonb))",
};

impl Store {
    /// Queues a test of digest `digest_id` to each address, as one request, if the digest
    /// may be tested (`DigestAction::SendTest`: `Conflict` otherwise) and the digest's recent
    /// requests leave room (`test_send::may_request`): `Ok(Err(seconds))` to wait otherwise.
    /// The count and the insert share the transaction that locks the digest, so two
    /// requests at once cannot both take the last place.
    pub async fn queue_test(
        &self,
        digest_id: &str,
        addresses: &[EmailAddress],
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<Result<(), u64>> {
        let (mut tx, _) = self
            .begin_allowed(digest_id, DigestAction::SendTest)
            .await?;
        let since = now - i64::try_from(WINDOW.as_millis()).unwrap_or(i64::MAX);
        let (recent, oldest): (i64, Option<Millis>) = sqlx::query_as(
            "SELECT COUNT(DISTINCT request_id), MIN(created_at) FROM test_sends
             WHERE digest_id = $1 AND created_at > $2",
        )
        .bind(digest_id)
        .bind(since)
        .fetch_one(&mut *tx)
        .await?;
        if let Err(wait) = may_request(recent, oldest, now) {
            return Ok(Err(wait));
        }
        let request_id = new_id();
        let mut ids = Vec::with_capacity(addresses.len());
        for address in addresses {
            let id = new_id();
            sqlx::query(
                "INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
                     created_at, updated_at)
                 VALUES ($1, $2, NULL, NULL, 'queued', $3, $4, $4)",
            )
            .bind(&id)
            .bind(DeliveryKind::Test.as_str())
            .bind(expires_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO test_sends (delivery_id, digest_id, request_id, address, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&id)
            .bind(digest_id)
            .bind(&request_id)
            .bind(address.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            ids.push(id);
        }
        // Queued without a digest: a paused digest's hold and its "finished" wait for its
        // own deliveries only.
        self.enqueue(&mut tx, &ids, now).await?;
        self.commit(tx).await?;
        self.work_queued();
        Ok(Ok(()))
    }

    /// The addresses the tests of a digest went or go to, newest first, with their status.
    pub async fn test_sends(&self, digest_id: &str) -> StoreResult<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT t.address, d.status FROM test_sends t JOIN deliveries d ON d.id = t.delivery_id
             WHERE t.digest_id = $1 ORDER BY t.created_at DESC, t.address LIMIT 20",
        )
        .bind(digest_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// The claimed tests' recipients: delivery id -> (digest id, address).
pub(super) async fn claimed_tests(
    store: &Store,
    tx: &mut sqlx::AnyConnection,
    ids: impl IntoIterator<Item = &str>,
) -> StoreResult<std::collections::HashMap<String, (String, String)>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(store.sql(&CLAIMED_TESTS))
        .bind(json_list(ids))
        .fetch_all(&mut *tx)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, digest, address)| (id, (digest, address)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_send_statements_are_written_for_each_backend() {
        super::super::tests::assert_dialects(&[("CLAIMED_TESTS", CLAIMED_TESTS)]);
    }
}
