//! The claim: due deliveries taken out of the queue into a claim owned by one worker, in one
//! committed transaction before any SMTP work, and handed out with their recipients as they
//! are now.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow as _, Row as _};

use super::{ClaimedDelivery, PerDialect, Store, StoreResult, json_list, new_id};
use crate::domain::clock::{Millis, ms};
use crate::domain::{DeliveryKind, SubscriberStatus};

/// Takes due rows out of the queue (the claim row holds them from here). On PostgreSQL, SKIP
/// LOCKED lets concurrent workers take disjoint rows without waiting for each other. A row
/// picked (and, on PostgreSQL, locked) by the `due` part is found again by where it is stored
/// (`rowid`, `ctid`), not through an index: by `delivery_id`, PostgreSQL planned the delete as
/// a scan of the whole queue, dead rows included, 4 ms per claim at 50,000 instead of 1 ms.
const TAKE_DUE: PerDialect = PerDialect {
    sqlite: "WITH due AS MATERIALIZED (
                 SELECT rowid AS row_locator FROM delivery_queue
                 WHERE run_at <= $1
                   AND (digest_id IS NULL OR digest_id NOT IN
                        (SELECT id FROM digests WHERE status = 'paused'))
                 ORDER BY run_at
                 LIMIT $2)
             DELETE FROM delivery_queue WHERE rowid IN (SELECT row_locator FROM due)
             RETURNING delivery_id, run_at",
    postgres: "WITH due AS MATERIALIZED (
                 SELECT ctid AS row_locator FROM delivery_queue
                 WHERE run_at <= $1
                   AND (digest_id IS NULL OR digest_id NOT IN
                        (SELECT id FROM digests WHERE status = 'paused'))
                 ORDER BY run_at
                 LIMIT $2 FOR UPDATE SKIP LOCKED)
             DELETE FROM delivery_queue WHERE ctid IN (SELECT row_locator FROM due)
             RETURNING delivery_id, run_at",
};

/// The fan-out chunk (migration 0026) due first whose digest is not paused, with where its
/// claims have got to. On PostgreSQL a chunk being claimed is skipped: concurrent workers
/// take different chunks.
const TAKE_CHUNK: PerDialect = PerDialect {
    sqlite: "SELECT id, after_id, run_at FROM queued_chunks
             WHERE run_at <= $1
               AND digest_id NOT IN (SELECT id FROM digests WHERE status = 'paused')
             ORDER BY run_at
             LIMIT 1",
    postgres: "SELECT id, after_id, run_at FROM queued_chunks
             WHERE run_at <= $1
               AND digest_id NOT IN (SELECT id FROM digests WHERE status = 'paused')
             ORDER BY run_at
             LIMIT 1 FOR UPDATE SKIP LOCKED",
};

/// A chunk's next `$3` deliveries after `$1`, in id order, up to its last possible id `$2`
/// (`fan_out::last_id_of_chunk`): a range of the primary key, whatever their status
/// (`MARK_SENDING` takes only the queued ones). The chunk's ids all have one shape (its id,
/// '-', twelve hex digits), so the range holds only them in any collation.
const CHUNK_DELIVERIES: &str = "SELECT id FROM deliveries WHERE id > $1 AND id <= $2
     ORDER BY id LIMIT $3";

/// A claim takes from at most this many chunks: the rest of one and the start of the next
/// is the common case; a run of chunks whose deliveries were all suppressed is passed over
/// by the next claims.
const CHUNKS_PER_CLAIM: usize = 4;

/// The taken deliveries, still queued, become this claim's (`$3`: their ids, `json_list`).
const MARK_SENDING: PerDialect = PerDialect {
    sqlite: "UPDATE deliveries SET status = 'sending', claim_id = $1, attempts = attempts + 1,
                 updated_at = $2
             WHERE id IN (SELECT value FROM json_each($3)) AND status = 'queued'
             RETURNING id, kind, digest_id, attempts, expires_at, created_at, subscriber_id",
    postgres: "UPDATE deliveries SET status = 'sending', claim_id = $1, attempts = attempts + 1,
                 updated_at = $2
             WHERE id IN (SELECT jsonb_array_elements_text($3::jsonb)) AND status = 'queued'
             RETURNING id, kind, digest_id, attempts, expires_at, created_at, subscriber_id",
};

const CLAIMED_SUBSCRIBERS: PerDialect = PerDialect {
    sqlite: "SELECT id, email, name, status, unsubscribe_token FROM subscribers
             WHERE id IN (SELECT value FROM json_each($1))",
    postgres: "SELECT id, email, name, status, unsubscribe_token FROM subscribers
             WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb))",
};

/// A delivery just marked `sending` for the claim.
#[derive(sqlx::FromRow)]
struct Taken {
    id: String,
    #[sqlx(try_from = "String")]
    kind: DeliveryKind,
    digest_id: Option<String>,
    attempts: i64,
    expires_at: Millis,
    created_at: Millis,
    /// `None` for a test send, which goes to an address of its own (`test_sends`).
    subscriber_id: Option<String>,
}

/// Where a claimed delivery goes, read from its subscriber's row as it is now.
#[derive(sqlx::FromRow)]
struct Contact {
    email: String,
    name: Option<String>,
    #[sqlx(try_from = "String")]
    status: SubscriberStatus,
    unsubscribe_token: String,
}

impl Store {
    /// Leases up to `limit` due deliveries (queued and due, or held by a dead worker's or an
    /// expired claim) in one committed transaction, before any SMTP work. The claim belongs to
    /// `worker_id`: while that worker heartbeats, nobody takes it over before its lease.
    pub async fn claim(
        &self,
        worker_id: &str,
        now: Millis,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let claim_id = new_id();
        // Committed before any SMTP work.
        let mut tx = self.begin_write().await?;
        self.requeue_expired_claims(&mut tx, worker_id, now).await?;
        let mut run_at = self.take_due(&mut tx, now, limit).await?;
        let room = limit.saturating_sub(u32::try_from(run_at.len()).unwrap_or(u32::MAX));
        if room > 0 {
            self.take_from_chunks(&mut tx, now, room, &mut run_at)
                .await?;
        }
        let taken = self.mark_sending(&mut tx, &claim_id, now, &run_at).await?;
        // Nothing due, or (should the queue ever hold a delivery no longer queued) nothing to
        // send of what was taken.
        if taken.is_empty() {
            self.commit(tx).await?;
            return Ok(Vec::new());
        }
        let subscribers = self.read_subscribers(&mut tx, &taken).await?;
        let tests = if taken.iter().any(|t| t.kind == DeliveryKind::Test) {
            let ids = taken
                .iter()
                .filter(|t| t.kind == DeliveryKind::Test)
                .map(|t| t.id.as_str());
            super::test_sends::claimed_tests(self, &mut tx, ids).await?
        } else {
            HashMap::new()
        };
        let mut out = hand_out(&claim_id, taken, &subscribers, &tests, &run_at)?;
        write_claim(&mut tx, &claim_id, worker_id, now + ms(lease), &out).await?;
        self.commit(tx).await?;
        // RETURNING gives no order; the oldest due go first, and a chunk's in id order (the
        // order of their subscribers).
        out.deliveries
            .sort_unstable_by(|(a, x), (b, y)| (a, &x.id).cmp(&(b, &y.id)));
        Ok(out.deliveries.into_iter().map(|(_, d)| d).collect())
    }

    /// Takes up to `limit` due rows out of the queue: when each was due, by delivery id.
    async fn take_due(
        &self,
        tx: &mut AnyConnection,
        now: Millis,
        limit: u32,
    ) -> StoreResult<HashMap<String, Millis>> {
        let taken: Vec<(String, Millis)> = sqlx::query_as(self.sql(&TAKE_DUE))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        Ok(taken.into_iter().collect())
    }

    /// Takes up to `room` deliveries from the fan-out chunks due (`TAKE_CHUNK`), in id order,
    /// into `run_at`: each chunk's `after_id` moves past what was read, and a chunk read to
    /// its end is deleted. The queue's own rows (`take_due`) go first: a welcome message
    /// queued during a digest's fan-out to a million does not wait behind it.
    async fn take_from_chunks(
        &self,
        tx: &mut AnyConnection,
        now: Millis,
        mut room: u32,
        run_at: &mut HashMap<String, Millis>,
    ) -> StoreResult<()> {
        for _ in 0..CHUNKS_PER_CLAIM {
            if room == 0 {
                break;
            }
            let Some((chunk, after, due)): Option<(String, String, Millis)> =
                sqlx::query_as(self.sql(&TAKE_CHUNK))
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
            else {
                break;
            };
            let ids: Vec<String> = sqlx::query_scalar(CHUNK_DELIVERIES)
                .bind(&after)
                .bind(super::fan_out::last_id_of_chunk(&chunk))
                .bind(i64::from(room))
                .fetch_all(&mut *tx)
                .await?;
            let read = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            match ids.last() {
                Some(last) if read == room => {
                    sqlx::query("UPDATE queued_chunks SET after_id = $2 WHERE id = $1")
                        .bind(&chunk)
                        .bind(last)
                        .execute(&mut *tx)
                        .await?;
                }
                // Fewer than asked for: the chunk is read to its end.
                _ => {
                    sqlx::query("DELETE FROM queued_chunks WHERE id = $1")
                        .bind(&chunk)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            room -= read;
            run_at.extend(ids.into_iter().map(|id| (id, due)));
        }
        Ok(())
    }

    /// Marks the taken deliveries `sending` for this claim, counting the attempt.
    async fn mark_sending(
        &self,
        tx: &mut AnyConnection,
        claim_id: &str,
        now: Millis,
        run_at: &HashMap<String, Millis>,
    ) -> StoreResult<Vec<Taken>> {
        Ok(sqlx::query_as(self.sql(&MARK_SENDING))
            .bind(claim_id)
            .bind(now)
            .bind(json_list(run_at.keys().map(String::as_str)))
            .fetch_all(&mut *tx)
            .await?)
    }

    /// The subscribers as they are now: whoever left since the fan-out is not mailed. In the
    /// claim's transaction: a SQLite connection of the read pool would have dropped its page
    /// cache, since the claim has just written.
    async fn read_subscribers(
        &self,
        tx: &mut AnyConnection,
        taken: &[Taken],
    ) -> StoreResult<Vec<AnyRow>> {
        Ok(sqlx::query(self.sql(&CLAIMED_SUBSCRIBERS))
            .bind(json_list(
                taken.iter().filter_map(|t| t.subscriber_id.as_deref()),
            ))
            .fetch_all(&mut *tx)
            .await?)
    }
}

/// What a claim took and hands out.
struct HandedOut {
    /// Every delivery it took.
    ids: Vec<String>,
    /// Their digests (a digest with a claim is not finished).
    digests: HashSet<String>,
    /// Each delivery that still has its subscriber, with when it was due.
    deliveries: Vec<(Millis, ClaimedDelivery)>,
}

/// What a claim hands out, from the deliveries it took, their subscribers' rows and the
/// tests' recipients (delivery id -> digest id, address). Each subscriber column is read once
/// per delivery, straight from its row: a read from an `AnyRow` looks the name up and copies
/// the value, and a claim reads thousands.
fn hand_out(
    claim_id: &str,
    taken: Vec<Taken>,
    subscribers: &[AnyRow],
    tests: &HashMap<String, (String, String)>,
    run_at: &HashMap<String, Millis>,
) -> StoreResult<HandedOut> {
    let mut by_id = HashMap::with_capacity(subscribers.len());
    for r in subscribers {
        by_id.insert(r.try_get::<String, _>("id")?, r);
    }
    let mut ids = Vec::with_capacity(taken.len());
    let mut digests = HashSet::new();
    let mut deliveries = Vec::with_capacity(taken.len());
    for t in taken {
        ids.push(t.id.clone());
        digests.extend(t.digest_id.clone());
        let due = run_at.get(&t.id).copied().unwrap_or_default();
        let (contact, tested_digest) = match &t.subscriber_id {
            // Deliveries go with their subscriber (ON DELETE CASCADE), so this is there.
            Some(sid) => match by_id.get(sid) {
                Some(s) => (Contact::from_row(*s)?, None),
                None => continue,
            },
            // A test goes to the address its editor typed, which asked for it; it has no
            // subscriber's token (`compose` gives it links that unsubscribe no one).
            None => match tests.get(&t.id) {
                Some((digest_id, address)) => (
                    Contact {
                        email: address.clone(),
                        name: None,
                        status: SubscriberStatus::Confirmed,
                        unsubscribe_token: String::new(),
                    },
                    Some(digest_id.clone()),
                ),
                // Its test row goes with the delivery (ON DELETE CASCADE), so this is there.
                None => continue,
            },
        };
        deliveries.push((
            due,
            ClaimedDelivery {
                id: t.id,
                claim_id: claim_id.to_owned(),
                kind: t.kind,
                digest_id: t.digest_id,
                tested_digest,
                attempts: u32::try_from(t.attempts).unwrap_or(u32::MAX),
                expires_at: t.expires_at,
                created_at: t.created_at,
                subscriber_id: t.subscriber_id,
                email: contact.email,
                name: contact.name,
                subscriber_status: contact.status,
                unsubscribe_token: contact.unsubscribe_token,
            },
        ));
    }
    Ok(HandedOut {
        ids,
        digests,
        deliveries,
    })
}

/// The claim holds every delivery it took (the lease's expiry requeues what is left of them)
/// and waits for the outcomes of those handed out.
async fn write_claim(
    tx: &mut AnyConnection,
    claim_id: &str,
    worker_id: &str,
    lease_until: Millis,
    out: &HandedOut,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO claims (id, lease_until, deliveries, remaining, worker_id)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(claim_id)
    .bind(lease_until)
    .bind(json_list(out.ids.iter().map(String::as_str)))
    .bind(i64::try_from(out.deliveries.len()).unwrap_or(i64::MAX))
    .bind(worker_id)
    .execute(&mut *tx)
    .await?;
    for digest_id in &out.digests {
        sqlx::query("INSERT INTO claim_digests (digest_id, claim_id) VALUES ($1, $2)")
            .bind(digest_id)
            .bind(claim_id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker waits on an empty queue, then a fan-out fills it: the claim's statements,
    /// prepared on the worker's connection and run there while the tables were empty, must
    /// be planned for the tables as they are now. With PostgreSQL's default plan cache they
    /// kept the generic plans made for empty tables (the delete by row locator a `Seq Scan`
    /// of the whole queue, the update one of all deliveries) until something ANALYZEd them.
    #[tokio::test]
    async fn postgres_plans_the_claim_for_the_tables_as_they_are_now() {
        let Some((_db, store)) = super::super::tests::postgres_store().await else {
            return;
        };
        let mut conn = store
            .pool
            .acquire()
            .await
            .expect("a connection of the store's");
        for (name, sql, args) in [
            ("take_due", TAKE_DUE.postgres, "(bigint, bigint)"),
            ("chunk_deliveries", CHUNK_DELIVERIES, "(text, text, bigint)"),
            (
                "mark_sending",
                MARK_SENDING.postgres,
                "(text, bigint, text)",
            ),
        ] {
            sqlx::query(&format!("PREPARE {name}{args} AS {sql}"))
                .execute(&mut *conn)
                .await
                .expect("prepare");
        }
        let runs = [
            ("take_due", "EXECUTE take_due(0, 40)"),
            (
                "chunk_deliveries",
                "EXECUTE chunk_deliveries('c-', 'c-ffffffffffff', 40)",
            ),
            ("mark_sending", r#"EXECUTE mark_sending('c', 0, '["d1"]')"#),
        ];
        // Idle claims: more than the five runs after which PostgreSQL may keep a generic plan.
        for _ in 0..8 {
            for (_, run) in runs {
                sqlx::query(run).execute(&mut *conn).await.expect("claim");
            }
        }
        // The fan-out: a chunk's deliveries (`c-…`), here queued as rows too (another
        // connection; nothing ANALYZEs the tables).
        for sql in [
            "INSERT INTO deliveries (id, kind, subscriber_id, status, expires_at, created_at,
                 updated_at)
             SELECT 'c-' || lpad(to_hex(i), 12, '0'), 'digest', 's' || i, 'queued', 0, 0, 0
             FROM generate_series(1, 20000) i",
            "INSERT INTO delivery_queue (delivery_id, run_at) SELECT id, 0 FROM deliveries",
        ] {
            sqlx::query(sql).execute(&store.pool).await.expect(sql);
        }
        for (name, run) in runs {
            let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {run}"))
                .fetch_all(&mut *conn)
                .await
                .expect("plan");
            assert!(
                !plan.iter().any(|line| line.contains("Seq Scan")),
                "{name} reads a whole table: {plan:#?}"
            );
        }
        conn.close().await.expect("close");
        store.close().await;
    }

    /// Every connection of a PostgreSQL store runs without JIT (`POSTGRES_SESSION`).
    #[tokio::test]
    async fn postgres_connections_compile_no_statement() {
        let Some((_db, store)) = super::super::tests::postgres_store().await else {
            return;
        };
        let jit: String = sqlx::query_scalar("SHOW jit")
            .fetch_one(&store.pool)
            .await
            .expect("show");
        assert_eq!(jit, "off");
        store.close().await;
    }

    #[test]
    fn claim_statements_are_written_for_each_backend() {
        super::super::tests::assert_dialects(&[
            ("TAKE_DUE", TAKE_DUE),
            ("TAKE_CHUNK", TAKE_CHUNK),
            ("MARK_SENDING", MARK_SENDING),
            ("CLAIMED_SUBSCRIBERS", CLAIMED_SUBSCRIBERS),
        ]);
    }
}
