//! Outcomes written back: each by its guarded statement, only while its claim still holds the
//! delivery; "sent" together, a statement per claim; the claims counted down.

use std::collections::{BTreeMap, HashMap};

use sqlx::AnyConnection;

use super::queue::suppress_queued;
use super::{PerDialect, Recorded, Store, StoreResult, json_list};
use crate::domain::clock::Millis;
use crate::domain::delivery::Outcome;
use crate::domain::{DeliveryKind, DeliveryStatus};

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

impl Store {
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
    fn record_statements_are_written_for_each_backend() {
        super::super::tests::assert_dialects(&[("RECORD_SENT", RECORD_SENT)]);
    }
}
