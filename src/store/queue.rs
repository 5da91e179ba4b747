//! The queue and the send path's contract: `claim` takes due deliveries into a claim owned by
//! one worker, `record` writes their outcomes back, each guarded by "still this claim's";
//! `enqueue`, `next_due` and `suppress_queued` keep the queue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow as _, Row as _};

use super::{ClaimedDelivery, PerDialect, Recorded, Store, StoreResult, json_list, new_id};
use crate::domain::clock::{Millis, ms};
use crate::domain::delivery::Outcome;
use crate::domain::liveness::alive_since;
use crate::domain::{DeliveryKind, DeliveryStatus, SubscriberStatus};

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
    postgres: "INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
             SELECT id, digest_id, $2 FROM deliveries
             WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb))
             ON CONFLICT (delivery_id) DO NOTHING",
};

/// A claim's "sent" outcomes (`$3`: the ids), while it still holds them.
const RECORD_SENT: PerDialect = PerDialect {
    sqlite:
        "UPDATE deliveries SET status = 'sent', sent_at = $1, last_error = NULL,
                 smtp_code = NULL, updated_at = $1
             WHERE id IN (SELECT value FROM json_each($3)) AND claim_id = $2 AND status = 'sending'",
    postgres: "UPDATE deliveries SET status = 'sent', sent_at = $1, last_error = NULL,
                 smtp_code = NULL, updated_at = $1
             WHERE id IN (SELECT jsonb_array_elements_text($3::jsonb)) AND claim_id = $2
               AND status = 'sending'",
};

// One outcome each: $1 = now, $2 = delivery id, $3 = claim id; the outcome's values follow.
// An outcome counts only while its claim still holds the delivery: after the lease expired
// the delivery was queued again, maybe claimed by someone else.

/// A transient failure: back to the queue, the attempt spent.
const RECORD_RETRY: &str = "UPDATE deliveries
     SET status = 'queued', claim_id = NULL, smtp_code = $4, last_error = $5, updated_at = $1
     WHERE id = $2 AND claim_id = $3 AND status = 'sending'";
const RECORD_FAILED: &str = "UPDATE deliveries
     SET status = 'failed', failed_at = $1, smtp_code = $4, last_error = $5, bounce = $6,
         updated_at = $1
     WHERE id = $2 AND claim_id = $3 AND status = 'sending'";
const RECORD_SUPPRESSED: &str = "UPDATE deliveries
     SET status = 'suppressed', last_error = $4, updated_at = $1
     WHERE id = $2 AND claim_id = $3 AND status = 'sending'";
/// Not attempted (released at shutdown, or deferred): back to the queue, and the attempt the
/// claim counted is given back.
const RECORD_NOT_ATTEMPTED: &str = "UPDATE deliveries
     SET status = 'queued', claim_id = NULL,
         attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = $1
     WHERE id = $2 AND claim_id = $3 AND status = 'sending'";

/// The guarded update that records one outcome, chosen by the domain's rule (the status it
/// moves to, whether the attempt is given back). `None` for "sent": those are written
/// together, a statement per claim (`RECORD_SENT`).
fn guarded_update(outcome: &Outcome) -> Option<&'static str> {
    debug_assert!(DeliveryStatus::Sending.may_become(outcome.status()));
    match outcome.status() {
        DeliveryStatus::Sent | DeliveryStatus::Sending => None,
        DeliveryStatus::Queued if outcome.gives_attempt_back() => Some(RECORD_NOT_ATTEMPTED),
        DeliveryStatus::Queued => Some(RECORD_RETRY),
        DeliveryStatus::Failed => Some(RECORD_FAILED),
        DeliveryStatus::Suppressed => Some(RECORD_SUPPRESSED),
    }
}

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
        let run_at = self.take_due(&mut tx, now, limit).await?;
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
        // RETURNING gives no order; the oldest due go first.
        out.deliveries.sort_by_key(|(run_at, _)| *run_at);
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

impl Store {
    /// Claims whose worker is dead, or whose lease ran out (their worker heartbeats but makes
    /// no progress): what they still hold goes back into the queue, due now, and the claim is
    /// gone; a late outcome from the old holder no longer matches (`deliveries.claim_id`) and
    /// is ignored, and tells that worker its claim was taken over (`record`).
    async fn requeue_expired_claims(
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

    /// Writes outcomes in one transaction. Each update only applies while the row still
    /// carries that claim, so a worker whose claim was taken over cannot overwrite the result.
    /// Returns the claims of these outcomes that are no longer there: taken over, their
    /// deliveries queued again for someone else.
    pub async fn record(&self, outcomes: &[Recorded], now: Millis) -> StoreResult<Vec<String>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let sent = self.record_sent(&mut tx, outcomes, now).await?;
        for r in outcomes {
            self.record_one(&mut tx, r, now).await?;
        }
        let gone = count_down_claims(&mut tx, outcomes).await?;
        if sent > 0 {
            sqlx::query(
                "INSERT INTO sent_per_minute (minute, sent) VALUES ($1, $2)
                 ON CONFLICT (minute) DO UPDATE SET sent = sent_per_minute.sent + excluded.sent",
            )
            .bind(now / 60_000)
            .bind(i64::try_from(sent).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        self.commit(tx).await?;
        Ok(gone)
    }

    /// Most outcomes are "sent": those go in one statement per claim instead of one per
    /// message (the claims of a busy worker hold tens of deliveries each). Returns how many
    /// were still held, and so are sent now.
    async fn record_sent(
        &self,
        tx: &mut AnyConnection,
        outcomes: &[Recorded],
        now: Millis,
    ) -> StoreResult<u64> {
        // By claim, and apart for tests, which the throughput does not count.
        let mut sent: HashMap<(&str, bool), Vec<&str>> = HashMap::new();
        for r in outcomes.iter().filter(|r| r.outcome == Outcome::Sent) {
            sent.entry((r.claim_id.as_str(), r.kind == DeliveryKind::Test))
                .or_default()
                .push(r.delivery_id.as_str());
        }
        let mut count = 0;
        for ((claim_id, test), ids) in sent {
            let done = sqlx::query(self.sql(&RECORD_SENT))
                .bind(now)
                .bind(claim_id)
                .bind(json_list(ids))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if !test {
                count += done;
            }
        }
        Ok(count)
    }

    /// One outcome other than "sent", by its guarded statement; when the claim still held the
    /// delivery, it goes back into the queue if due again, and a hard bounce retires the
    /// subscriber.
    async fn record_one(
        &self,
        tx: &mut AnyConnection,
        r: &Recorded,
        now: Millis,
    ) -> StoreResult<()> {
        let Some(sql) = guarded_update(&r.outcome) else {
            return Ok(());
        };
        let q = sqlx::query(sql)
            .bind(now)
            .bind(r.delivery_id.as_str())
            .bind(r.claim_id.as_str());
        let q = match &r.outcome {
            Outcome::Retry { code, error, .. } => q.bind(code.map(i64::from)).bind(error.as_str()),
            Outcome::Failed {
                code,
                error,
                bounce,
            } => q
                .bind(code.map(i64::from))
                .bind(error.as_str())
                .bind(i64::from(*bounce)),
            Outcome::Suppressed { reason } => q.bind(reason.as_str()),
            Outcome::Sent | Outcome::Released | Outcome::Deferred { .. } => q,
        };
        if q.execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(());
        }
        if let Some(run_at) = r.outcome.due_again(now) {
            self.enqueue(tx, &[r.delivery_id.as_str()], run_at).await?;
        }
        if let (true, Some(subscriber_id)) =
            (r.outcome.bounces_subscriber(), r.subscriber_id.as_deref())
        {
            sqlx::query(
                "UPDATE subscribers SET status = 'bounced', bounced_at = $1, updated_at = $1
                 WHERE id = $2 AND status IN ('pending', 'confirmed')",
            )
            .bind(now)
            .bind(subscriber_id)
            .execute(&mut *tx)
            .await?;
            suppress_queued(tx, subscriber_id, "bounced", now).await?;
        }
        Ok(())
    }

    /// When the next queued delivery is due, if any: lets an idle worker sleep exactly so long.
    pub async fn next_due(&self) -> StoreResult<Option<Millis>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(t) FROM (
                 SELECT MIN(run_at) AS t FROM delivery_queue
                 UNION ALL
                 SELECT MIN(lease_until) AS t FROM claims) AS next",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Counts the outcomes off their claims; a claim with none left to come is done. Each
/// delivery a claim handed out comes back exactly once (a forgotten subscriber's delivery is
/// gone from the table, but its outcome still counts). In the same (sorted) order in every
/// transaction: two workers' transactions (PostgreSQL) never each wait for a claim the other
/// has updated. Returns the claims no longer there (taken over).
async fn count_down_claims(
    tx: &mut AnyConnection,
    outcomes: &[Recorded],
) -> StoreResult<Vec<String>> {
    let mut gone = Vec::new();
    let mut recorded: BTreeMap<&str, i64> = BTreeMap::new();
    for r in outcomes {
        *recorded.entry(r.claim_id.as_str()).or_default() += 1;
    }
    for (claim_id, n) in recorded {
        let remaining: Option<i64> = sqlx::query_scalar(
            "UPDATE claims SET remaining = remaining - $2 WHERE id = $1 RETURNING remaining",
        )
        .bind(claim_id)
        .bind(n)
        .fetch_optional(&mut *tx)
        .await?;
        match remaining {
            None => gone.push(claim_id.to_owned()),
            Some(r) if r <= 0 => {
                sqlx::query("DELETE FROM claims WHERE id = $1")
                    .bind(claim_id)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(_) => {}
        }
    }
    Ok(gone)
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

    fn every_outcome() -> [Outcome; 6] {
        [
            Outcome::Sent,
            Outcome::Retry {
                run_at: 5,
                code: Some(451),
                error: "later".into(),
            },
            Outcome::Failed {
                code: Some(550),
                error: "no such user".into(),
                bounce: true,
            },
            Outcome::Suppressed {
                reason: "unsubscribed".into(),
            },
            Outcome::Released,
            Outcome::Deferred { run_at: 7 },
        ]
    }

    #[test]
    fn each_outcome_is_written_with_the_status_the_domain_gives_it() {
        for outcome in every_outcome() {
            let status = outcome.status();
            let Some(sql) = guarded_update(&outcome) else {
                assert_eq!(status, DeliveryStatus::Sent, "{outcome:?}");
                assert!(RECORD_SENT.sqlite.contains("status = 'sent'"));
                continue;
            };
            assert!(
                sql.contains(&format!("SET status = '{status}'")),
                "{outcome:?}: {sql}"
            );
            assert!(
                sql.ends_with("WHERE id = $2 AND claim_id = $3 AND status = 'sending'"),
                "{outcome:?} is not guarded by its claim"
            );
            assert_eq!(
                sql.contains("attempts - 1"),
                outcome.gives_attempt_back(),
                "{outcome:?}"
            );
            // What goes back into the queue leaves its claim.
            assert_eq!(
                sql.contains("claim_id = NULL"),
                outcome.due_again(0).is_some(),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn queue_statements_are_written_for_each_backend() {
        super::super::tests::assert_dialects(&[
            ("TAKE_DUE", TAKE_DUE),
            ("MARK_SENDING", MARK_SENDING),
            ("CLAIMED_SUBSCRIBERS", CLAIMED_SUBSCRIBERS),
            ("EXPIRED_CLAIMS", EXPIRED_CLAIMS),
            ("REQUEUE_HELD", REQUEUE_HELD),
            ("ENQUEUE", ENQUEUE),
            ("RECORD_SENT", RECORD_SENT),
        ]);
    }
}
