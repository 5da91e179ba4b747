//! Sign-ups, written in batches: the sign-ups that arrive together share one transaction and
//! one flush to disk, and a batch costs the same few statements however many it holds (the
//! new addresses inserted in one, their confirmations queued in two more; only an address
//! already known takes statements of its own). A batcher takes whatever is waiting, up to
//! `SIGN_UP_BATCH`, and writes it; SQLite has one (one writer at a time), PostgreSQL several,
//! so one batch's statements run while another's commit is on its way to the disk.
//!
//! A transaction per sign-up capped /subscribe at about 2,000 requests/s with a p99 over
//! 100 ms on SQLite, and at 900-1,300/s on PostgreSQL (a flush each, and the NOTIFY of each
//! commit taken in turn): BENCHMARKS.md, issue 23 d.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;
use sqlx::AnyConnection;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Dialect, PerDialect, SignUp, Store, StoreError, StoreResult, json_rows, new_id};
use crate::domain::clock::{Millis, ms};
use crate::domain::subscriber::{CONFIRMATION_DEADLINE, SignUpOutcome, sign_up_again};
use crate::domain::{SubscriberStatus, Token};

/// Most sign-ups written in one transaction.
const SIGN_UP_BATCH: usize = 128;
/// PostgreSQL's batchers: one writing while another commits. SQLite writes one at a time.
const POSTGRES_BATCHERS: usize = 4;

/// The batch's new addresses, inserted at once; a known address is left alone (its id is
/// not returned) for `sign_up_known`. The rows come in the batch's order (by address, see
/// `write_sign_ups`).
const INSERT_NEW: PerDialect = PerDialect {
    sqlite: "INSERT INTO subscribers (id, email, name, status, unsubscribe_token, consent_at,
                 consent_ip, consent_user_agent, confirmation_queued_at, created_at,
                 updated_at, timezone)
             SELECT value ->> 'id', value ->> 'email', value ->> 'name', 'pending',
                 value ->> 'token', value ->> 'at', value ->> 'ip', value ->> 'user_agent',
                 value ->> 'at', value ->> 'at', value ->> 'at', value ->> 'timezone'
             FROM json_each($1) WHERE true
             ON CONFLICT DO NOTHING
             RETURNING id",
    postgres: "INSERT INTO subscribers (id, email, name, status, unsubscribe_token, consent_at,
                 consent_ip, consent_user_agent, confirmation_queued_at, created_at,
                 updated_at, timezone)
             SELECT id, email, name, 'pending', token, at, ip, user_agent, at, at, at, timezone
             FROM json_to_recordset($1::json) AS s(id text, email text, name text, token text,
                 at bigint, ip text, user_agent text, timezone text)
             ON CONFLICT DO NOTHING
             RETURNING id",
};

/// The batch's confirmation emails.
const INSERT_CONFIRMATIONS: PerDialect = PerDialect {
    sqlite: "INSERT INTO deliveries (id, kind, subscriber_id, status, expires_at, created_at,
                 updated_at)
             SELECT value ->> 'id', 'confirmation', value ->> 'subscriber_id', 'queued',
                 value ->> 'expires_at', value ->> 'at', value ->> 'at'
             FROM json_each($1)",
    postgres: "INSERT INTO deliveries (id, kind, subscriber_id, status, expires_at, created_at,
                 updated_at)
             SELECT id, 'confirmation', subscriber_id, 'queued', expires_at, at, at
             FROM json_to_recordset($1::json) AS c(id text, subscriber_id text,
                 expires_at bigint, at bigint)",
};

/// A known address found by a sign-up (and, on PostgreSQL, locked). Addresses are one
/// subscriber whatever their case: every lookup is by `lower(email)` (a unique index since
/// migration 0011) bound to `domain::email::key`, and inserts leave a conflict alone.
const LOCK_BY_EMAIL: PerDialect = PerDialect {
    sqlite: "SELECT id, status, confirmation_queued_at FROM subscribers WHERE lower(email) = $1",
    postgres: "SELECT id, status, confirmation_queued_at FROM subscribers WHERE lower(email) = $1
               FOR UPDATE",
};

#[derive(sqlx::FromRow)]
struct Known {
    id: String,
    #[sqlx(try_from = "String")]
    status: SubscriberStatus,
    confirmation_queued_at: Option<Millis>,
}

/// A new subscriber's row, as `INSERT_NEW` reads it.
#[derive(Serialize)]
struct NewRow<'a> {
    id: String,
    email: &'a str,
    name: Option<&'a str>,
    token: String,
    at: Millis,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    timezone: Option<&'static str>,
}

/// A confirmation email, as `INSERT_CONFIRMATIONS` reads it.
#[derive(Serialize)]
struct Confirmation {
    id: String,
    subscriber_id: String,
    expires_at: Millis,
    at: Millis,
}

#[derive(Debug)]
pub(super) struct SignUpJob {
    sign_up: SignUp,
    now: Millis,
    reply: oneshot::Sender<StoreResult<SignUpOutcome>>,
}

impl Store {
    /// Records a sign-up and, in the same transaction, queues its confirmation email when one
    /// is due (never more than one per `RESEND_CONFIRMATION_AFTER` for a pending address; it
    /// is given up after `CONFIRMATION_DEADLINE`). Written with the others that arrive
    /// meanwhile.
    pub async fn sign_up(&self, s: &SignUp, now: Millis) -> StoreResult<SignUpOutcome> {
        let gone = || StoreError::from(sqlx::Error::PoolClosed);
        let Some(batcher) = &self.sign_ups else {
            // Only the batchers' own handles have none, and they never sign anyone up.
            return Err(gone());
        };
        let (reply, answer) = oneshot::channel();
        let job = SignUpJob {
            sign_up: s.clone(),
            now,
            reply,
        };
        batcher.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Starts the sign-up batchers; they end with the last clone of the store (theirs hold
    /// no sender).
    pub(super) fn start_sign_up_batchers(&mut self) {
        let (tx, rx) = mpsc::channel(SIGN_UP_BATCH * 4);
        let rx = Arc::new(Mutex::new(rx));
        let batchers = match self.dialect {
            Dialect::Sqlite => 1,
            Dialect::Postgres => POSTGRES_BATCHERS,
        };
        for _ in 0..batchers {
            tokio::spawn(self.clone().sign_up_batches(rx.clone()));
        }
        self.sign_ups = Some(tx);
    }

    /// Writes the sign-ups that arrived together in one transaction. If that fails, each is
    /// written on its own, so one bad sign-up cannot fail the others and each gets its own
    /// answer.
    async fn sign_up_batches(self, rx: Arc<Mutex<mpsc::Receiver<SignUpJob>>>) {
        let mut jobs = Vec::with_capacity(SIGN_UP_BATCH);
        loop {
            // The receiver is held only while taking a batch: the next batcher collects
            // what arrives while this one writes.
            if rx.lock().await.recv_many(&mut jobs, SIGN_UP_BATCH).await == 0 {
                return;
            }
            let batch: Vec<_> = jobs.iter().map(|j| (&j.sign_up, j.now)).collect();
            let written = self.write_sign_ups(&batch).await;
            match written {
                Ok(outcomes) => {
                    for (job, outcome) in jobs.drain(..).zip(outcomes) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, count = jobs.len(), "writing sign-ups together failed; writing each on its own");
                    for job in jobs.drain(..) {
                        let outcome = self
                            .write_sign_ups(&[(&job.sign_up, job.now)])
                            .await
                            .and_then(|o| {
                                o.into_iter().next().ok_or_else(|| {
                                    StoreError::Corrupt("a sign-up without an outcome".into())
                                })
                            });
                        self.write_health.note(&outcome);
                        let _ = job.reply.send(outcome);
                    }
                }
            }
        }
    }

    /// One transaction for the batch; an outcome for each sign-up, in its order.
    async fn write_sign_ups(&self, batch: &[(&SignUp, Millis)]) -> StoreResult<Vec<SignUpOutcome>> {
        // By address (arrival order within one), so two PostgreSQL batches that share
        // addresses lock them in the same order and never deadlock.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_cached_key(|&i| batch[i].0.email.key());
        let rows: Vec<NewRow> = order
            .iter()
            .map(|&i| {
                let (s, now) = batch[i];
                NewRow {
                    id: new_id(),
                    email: s.email.as_str(),
                    name: s.name.as_ref().map(|n| n.as_str()),
                    token: Token::generate().as_str().to_owned(),
                    at: now,
                    ip: s.ip.as_deref(),
                    user_agent: s.user_agent.as_deref(),
                    timezone: s.timezone.map(|tz| tz.name()),
                }
            })
            .collect();
        let mut tx = self.begin_write_with_generic_plans().await?;
        let inserted: HashSet<String> = sqlx::query_scalar(self.sql(&INSERT_NEW))
            .bind(json_rows(&rows))
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let mut outcomes = vec![None; batch.len()];
        let mut confirmations = Vec::new();
        for (&i, row) in order.iter().zip(rows) {
            let (s, now) = batch[i];
            let subscriber_id = if inserted.contains(&row.id) {
                row.id
            } else {
                match self.sign_up_known(&mut tx, s, now).await? {
                    Ok(id) => id,
                    Err(outcome) => {
                        outcomes[i] = Some(outcome);
                        continue;
                    }
                }
            };
            outcomes[i] = Some(SignUpOutcome::ConfirmationQueued);
            confirmations.push(Confirmation {
                id: new_id(),
                subscriber_id,
                expires_at: now + ms(CONFIRMATION_DEADLINE),
                at: now,
            });
        }
        if let Some(latest) = confirmations.iter().map(|c| c.at).max() {
            sqlx::query(self.sql(&INSERT_CONFIRMATIONS))
                .bind(json_rows(&confirmations))
                .execute(&mut *tx)
                .await?;
            let ids: Vec<&str> = confirmations.iter().map(|c| c.id.as_str()).collect();
            self.enqueue(&mut tx, &ids, latest).await?;
        }
        self.commit(tx).await?;
        if !confirmations.is_empty() {
            self.work_queued();
        }
        // Every index is in `order` once, so each has its outcome.
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// A sign-up for an address already known (or signed up earlier in the same batch): the
    /// subscriber's id when a confirmation is due (the evidence of this new consent
    /// recorded), else what the sign-up came to.
    async fn sign_up_known(
        &self,
        tx: &mut AnyConnection,
        s: &SignUp,
        now: Millis,
    ) -> StoreResult<Result<String, SignUpOutcome>> {
        let known: Known = sqlx::query_as(self.sql(&LOCK_BY_EMAIL))
            .bind(s.email.key())
            .fetch_one(&mut *tx)
            .await?;
        let outcome = sign_up_again(known.status, known.confirmation_queued_at, now);
        if outcome != SignUpOutcome::ConfirmationQueued {
            return Ok(Err(outcome));
        }
        // A returning or repeated sign-up is new consent: record its evidence.
        sqlx::query(
            "UPDATE subscribers SET status = 'pending', name = COALESCE($1, name),
                 consent_at = $2, consent_ip = $3, consent_user_agent = $4,
                 unsubscribed_at = NULL, confirmation_queued_at = $2, updated_at = $2,
                 timezone = COALESCE($6, timezone)
             WHERE id = $5",
        )
        .bind(s.name.as_ref().map(|n| n.as_str()))
        .bind(now)
        .bind(&s.ip)
        .bind(&s.user_agent)
        .bind(&known.id)
        .bind(s.timezone.map(|tz| tz.name()))
        .execute(&mut *tx)
        .await?;
        Ok(Ok(known.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EmailAddress;

    /// Sign-ups come thousands a second, and planning their statements again for every batch
    /// was 14 % of PostgreSQL's CPU: after a few batches each connection keeps the generic
    /// plan of the insert. Plans are per connection, and PostgreSQL keeps a generic one after
    /// five custom ones: 120 sign-ups one after another give one of the pool's at most 16
    /// connections at least 8 batches, and every connection is looked at.
    #[tokio::test]
    async fn postgres_keeps_the_sign_up_statements_generic_plans() {
        let Some((_db, store)) = super::super::tests::postgres_store().await else {
            return;
        };
        for i in 0..120 {
            let s = SignUp {
                email: EmailAddress::parse(&format!("reader{i}@example.com")).expect("address"),
                name: None,
                ip: None,
                user_agent: None,
                timezone: None,
            };
            let outcome = store.sign_up(&s, 1_000 + i).await.expect("sign-up");
            assert_eq!(outcome, SignUpOutcome::ConfirmationQueued);
        }
        let mut connections = Vec::new();
        for _ in 0..store.pool.size() {
            connections.push(store.pool.acquire().await.expect("connection"));
        }
        let mut generic = 0;
        for c in &mut connections {
            let n: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(generic_plans), 0) AS BIGINT) FROM pg_prepared_statements
                 WHERE statement LIKE 'INSERT INTO subscribers%'",
            )
            .fetch_one(&mut **c)
            .await
            .expect("plans");
            generic += n;
        }
        assert!(generic > 0, "every batch planned its insert again");
        drop(connections);
        store.close().await;
    }

    #[test]
    fn sign_up_statements_are_written_for_each_backend() {
        super::super::tests::assert_dialects(&[
            ("INSERT_NEW", INSERT_NEW),
            ("INSERT_CONFIRMATIONS", INSERT_CONFIRMATIONS),
            ("LOCK_BY_EMAIL", LOCK_BY_EMAIL),
        ]);
    }
}
