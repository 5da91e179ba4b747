//! SQLite implementation of the store (the embedded default).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::{
    ClaimedDelivery, ConfirmOutcome, DeliveryRow, Millis, Outcome, Recorded, SignUp, SignUpOutcome,
    StoreResult, SubscriberRow, UnsubscribeOutcome, parse_col,
};
use crate::domain::{SubscriberStatus, Token};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub(super) struct Sqlite {
    pool: SqlitePool,
}

fn new_id() -> String {
    Uuid::now_v7().to_string()
}

impl Sqlite {
    pub(super) async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub(super) async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    pub(super) async fn sign_up(
        &self,
        s: &SignUp,
        now: Millis,
        resend_after: Millis,
        deadline: Millis,
    ) -> StoreResult<SignUpOutcome> {
        // IMMEDIATE: take the write lock up front, so the read below cannot go stale.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let existing = sqlx::query(
            "SELECT id, status, confirmation_queued_at FROM subscribers WHERE email = ?",
        )
        .bind(s.email.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let name = s.name.as_ref().map(|n| n.as_str());

        let subscriber_id = match existing {
            None => {
                let id = new_id();
                sqlx::query(
                    "INSERT INTO subscribers (id, email, name, status, unsubscribe_token,
                         consent_at, consent_ip, consent_user_agent, confirmation_queued_at,
                         created_at, updated_at)
                     VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&id)
                .bind(s.email.as_str())
                .bind(name)
                .bind(Token::generate().as_str())
                .bind(now)
                .bind(&s.ip)
                .bind(&s.user_agent)
                .bind(now)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                id
            }
            Some(row) => {
                let id: String = row.try_get("id")?;
                let status: SubscriberStatus = parse_col(row.try_get("status")?)?;
                let queued_at: Option<Millis> = row.try_get("confirmation_queued_at")?;
                match status {
                    SubscriberStatus::Confirmed => return Ok(SignUpOutcome::AlreadyConfirmed),
                    SubscriberStatus::Bounced => return Ok(SignUpOutcome::Bounced),
                    SubscriberStatus::Pending | SubscriberStatus::Unsubscribed => {}
                }
                if queued_at.is_some_and(|t| now - t < resend_after) {
                    return Ok(SignUpOutcome::RecentlyQueued);
                }
                // A returning or repeated sign-up is new consent: record its evidence.
                sqlx::query(
                    "UPDATE subscribers SET status = 'pending', name = COALESCE(?, name),
                         consent_at = ?, consent_ip = ?, consent_user_agent = ?,
                         unsubscribed_at = NULL, confirmation_queued_at = ?, updated_at = ?
                     WHERE id = ?",
                )
                .bind(name)
                .bind(now)
                .bind(&s.ip)
                .bind(&s.user_agent)
                .bind(now)
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        sqlx::query(
            "INSERT INTO deliveries (id, kind, subscriber_id, status, run_at, expires_at,
                 created_at, updated_at)
             VALUES (?, 'confirmation', ?, 'queued', ?, ?, ?, ?)",
        )
        .bind(new_id())
        .bind(&subscriber_id)
        .bind(now)
        .bind(now + deadline)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SignUpOutcome::ConfirmationQueued)
    }

    pub(super) async fn insert_confirmation_token(
        &self,
        subscriber_id: &str,
        token_hash: &str,
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO confirmation_tokens (token_hash, subscriber_id, created_at, expires_at)
             VALUES (?, ?, ?, ?)",
        )
        .bind(token_hash)
        .bind(subscriber_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn confirm(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<ConfirmOutcome> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(
            "SELECT t.subscriber_id, t.expires_at, t.used_at, s.status
             FROM confirmation_tokens t JOIN subscribers s ON s.id = t.subscriber_id
             WHERE t.token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(ConfirmOutcome::Invalid);
        };
        let subscriber_id: String = row.try_get("subscriber_id")?;
        let expires_at: Millis = row.try_get("expires_at")?;
        let used_at: Option<Millis> = row.try_get("used_at")?;
        let status: SubscriberStatus = parse_col(row.try_get("status")?)?;

        let outcome = match (used_at, status) {
            (_, SubscriberStatus::Confirmed) => ConfirmOutcome::AlreadyConfirmed,
            (Some(_), _) => ConfirmOutcome::Invalid,
            (None, _) if expires_at <= now => ConfirmOutcome::Invalid,
            (None, SubscriberStatus::Pending) => {
                sqlx::query(
                    "UPDATE subscribers SET status = 'confirmed', confirmed_at = ?, updated_at = ?
                     WHERE id = ? AND status = 'pending'",
                )
                .bind(now)
                .bind(now)
                .bind(&subscriber_id)
                .execute(&mut *tx)
                .await?;
                ConfirmOutcome::Confirmed
            }
            // Unsubscribed or bounced since the link was sent: an old link must not re-enrol.
            (None, _) => ConfirmOutcome::Invalid,
        };
        if used_at.is_none() && outcome != ConfirmOutcome::Invalid {
            sqlx::query("UPDATE confirmation_tokens SET used_at = ? WHERE token_hash = ?")
                .bind(now)
                .bind(token_hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    pub(super) async fn unsubscribe_token_status(
        &self,
        token: &str,
    ) -> StoreResult<Option<SubscriberStatus>> {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM subscribers WHERE unsubscribe_token = ?")
                .bind(token)
                .fetch_optional(&self.pool)
                .await?;
        status.as_deref().map(parse_col).transpose()
    }

    pub(super) async fn unsubscribe(
        &self,
        token: &str,
        now: Millis,
    ) -> StoreResult<UnsubscribeOutcome> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT id, status FROM subscribers WHERE unsubscribe_token = ?")
            .bind(token)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(UnsubscribeOutcome::UnknownToken);
        };
        let id: String = row.try_get("id")?;
        let status: SubscriberStatus = parse_col(row.try_get("status")?)?;
        let outcome = match status {
            SubscriberStatus::Pending | SubscriberStatus::Confirmed => {
                sqlx::query(
                    "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = ?,
                         updated_at = ?
                     WHERE id = ?",
                )
                .bind(now)
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                UnsubscribeOutcome::Unsubscribed
            }
            SubscriberStatus::Unsubscribed | SubscriberStatus::Bounced => {
                UnsubscribeOutcome::AlreadyGone
            }
        };
        suppress_queued(&mut tx, &id, "unsubscribed", now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    pub(super) async fn claim(
        &self,
        now: Millis,
        lease: Millis,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let claim_id = new_id();
        // One statement: atomic on SQLite, committed before any SMTP work.
        let claimed = sqlx::query(
            "UPDATE deliveries
             SET status = 'sending', lease_until = ?1, claim_id = ?2,
                 attempts = attempts + 1, updated_at = ?3
             WHERE id IN (
                 SELECT id FROM deliveries
                 WHERE (status = 'queued' AND run_at <= ?3)
                    OR (status = 'sending' AND lease_until < ?3)
                 ORDER BY run_at
                 LIMIT ?4)",
        )
        .bind(now + lease)
        .bind(&claim_id)
        .bind(now)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT d.id, d.kind, d.digest_id, d.attempts, d.expires_at,
                    s.id AS subscriber_id, s.email, s.name, s.status AS subscriber_status,
                    s.unsubscribe_token
             FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
             WHERE d.claim_id = ? AND d.status = 'sending'
             ORDER BY d.run_at",
        )
        .bind(&claim_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ClaimedDelivery {
                    id: r.try_get("id")?,
                    claim_id: claim_id.clone(),
                    kind: parse_col(r.try_get("kind")?)?,
                    digest_id: r.try_get("digest_id")?,
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                    expires_at: r.try_get("expires_at")?,
                    subscriber_id: r.try_get("subscriber_id")?,
                    email: r.try_get("email")?,
                    name: r.try_get("name")?,
                    subscriber_status: parse_col(r.try_get("subscriber_status")?)?,
                    unsubscribe_token: r.try_get("unsubscribe_token")?,
                })
            })
            .collect()
    }

    pub(super) async fn record(&self, outcomes: &[Recorded], now: Millis) -> StoreResult<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for r in outcomes {
            // ?1 = now, ?2 = delivery id, ?3 = claim id; outcome-specific values follow.
            let base = |sql| {
                sqlx::query(sql)
                    .bind(now)
                    .bind(r.delivery_id.as_str())
                    .bind(r.claim_id.as_str())
            };
            let q = match &r.outcome {
                Outcome::Sent => base(
                    "UPDATE deliveries SET status = 'sent', sent_at = ?1, lease_until = NULL,
                         last_error = NULL, smtp_code = NULL, updated_at = ?1
                     WHERE id = ?2 AND claim_id = ?3 AND status = 'sending'",
                ),
                Outcome::Retry {
                    run_at,
                    code,
                    error,
                } => base(
                    "UPDATE deliveries SET status = 'queued', run_at = ?4, lease_until = NULL,
                         smtp_code = ?5, last_error = ?6, updated_at = ?1
                     WHERE id = ?2 AND claim_id = ?3 AND status = 'sending'",
                )
                .bind(*run_at)
                .bind(code.map(i64::from))
                .bind(error.as_str()),
                Outcome::Failed { code, error, .. } => base(
                    "UPDATE deliveries SET status = 'failed', lease_until = NULL,
                         smtp_code = ?4, last_error = ?5, updated_at = ?1
                     WHERE id = ?2 AND claim_id = ?3 AND status = 'sending'",
                )
                .bind(code.map(i64::from))
                .bind(error.as_str()),
                Outcome::Suppressed { reason } => base(
                    "UPDATE deliveries SET status = 'suppressed', lease_until = NULL,
                         last_error = ?4, updated_at = ?1
                     WHERE id = ?2 AND claim_id = ?3 AND status = 'sending'",
                )
                .bind(reason.as_str()),
                Outcome::Released => base(
                    "UPDATE deliveries SET status = 'queued', lease_until = NULL, claim_id = NULL,
                         attempts = MAX(attempts - 1, 0), updated_at = ?1
                     WHERE id = ?2 AND claim_id = ?3 AND status = 'sending'",
                ),
            };
            q.execute(&mut *tx).await?;
            if let Outcome::Failed { bounce: true, .. } = r.outcome {
                sqlx::query(
                    "UPDATE subscribers SET status = 'bounced', bounced_at = ?1, updated_at = ?1
                     WHERE id = ?2 AND status IN ('pending', 'confirmed')",
                )
                .bind(now)
                .bind(r.subscriber_id.as_str())
                .execute(&mut *tx)
                .await?;
                suppress_queued(&mut tx, &r.subscriber_id, "bounced", now).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn next_due(&self) -> StoreResult<Option<Millis>> {
        let due: Option<Millis> = sqlx::query_scalar(
            "SELECT MIN(t) FROM (
                 SELECT MIN(run_at) AS t FROM deliveries WHERE status = 'queued'
                 UNION ALL
                 SELECT MIN(lease_until) AS t FROM deliveries WHERE status = 'sending')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(due)
    }

    pub(super) async fn subscriber_by_email(
        &self,
        email: &str,
    ) -> StoreResult<Option<SubscriberRow>> {
        let row = sqlx::query(
            "SELECT id, email, name, status, consent_at, consent_ip, consent_user_agent
             FROM subscribers WHERE email = ?",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SubscriberRow {
                id: r.try_get("id")?,
                email: r.try_get("email")?,
                name: r.try_get("name")?,
                status: parse_col(r.try_get("status")?)?,
                consent_at: r.try_get("consent_at")?,
                consent_ip: r.try_get("consent_ip")?,
                consent_user_agent: r.try_get("consent_user_agent")?,
            })
        })
        .transpose()
    }

    pub(super) async fn subscriber_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM subscribers")
            .fetch_one(&self.pool)
            .await?)
    }

    pub(super) async fn deliveries_for(
        &self,
        subscriber_id: &str,
    ) -> StoreResult<Vec<DeliveryRow>> {
        let rows = sqlx::query(
            "SELECT id, kind, subscriber_id, status, attempts, smtp_code, last_error
             FROM deliveries WHERE subscriber_id = ? ORDER BY created_at, id",
        )
        .bind(subscriber_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRow {
                    id: r.try_get("id")?,
                    kind: parse_col(r.try_get("kind")?)?,
                    subscriber_id: r.try_get("subscriber_id")?,
                    status: parse_col(r.try_get("status")?)?,
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
                    smtp_code: r
                        .try_get::<Option<i64>, _>("smtp_code")?
                        .and_then(|c| u16::try_from(c).ok()),
                    last_error: r.try_get("last_error")?,
                })
            })
            .collect()
    }
}

/// Queued mail for someone who left is suppressed at once, not just skipped at send time.
async fn suppress_queued(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    subscriber_id: &str,
    reason: &str,
    now: Millis,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deliveries SET status = 'suppressed', last_error = ?, updated_at = ?
         WHERE subscriber_id = ? AND status = 'queued'",
    )
    .bind(reason)
    .bind(now)
    .bind(subscriber_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
