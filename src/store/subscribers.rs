//! Subscribers: confirmation and unsubscribe tokens (the sign-up itself is `sign_ups`), the
//! operator's import and erasure, lookups and listings.

use super::rows::StoredDelivery;
use super::{
    DeliveryRow, HistoryRow, PerDialect, Store, StoreResult, SubscriberRow, new_id, parse_col,
};
use crate::domain::clock::{Millis, ms};
use crate::domain::email::key as email_key;
use crate::domain::subscriber::{ConfirmOutcome, WELCOME_DEADLINE, confirm_link};
use crate::domain::{EmailAddress, SubscriberName, SubscriberStatus, Token};

/// A sign-up as the HTTP edge parsed it, with its consent evidence.
#[derive(Debug, Clone)]
pub struct SignUp {
    pub email: EmailAddress,
    pub name: Option<SubscriberName>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Their own zone; `None` is the list's.
    pub timezone: Option<chrono_tz::Tz>,
}

/// One row of a confirmed import.
#[derive(Debug, Clone)]
pub struct ImportRow {
    pub email: EmailAddress,
    pub name: Option<SubscriberName>,
    /// `None` is the list's zone.
    pub timezone: Option<chrono_tz::Tz>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsubscribeOutcome {
    Unsubscribed,
    AlreadyGone,
    UnknownToken,
}

const LOCK_TOKEN: PerDialect = PerDialect {
    sqlite: "SELECT t.subscriber_id, t.expires_at, t.used_at, s.status
             FROM confirmation_tokens t JOIN subscribers s ON s.id = t.subscriber_id
             WHERE t.token_hash = $1",
    postgres: "SELECT t.subscriber_id, t.expires_at, t.used_at, s.status
             FROM confirmation_tokens t JOIN subscribers s ON s.id = t.subscriber_id
             WHERE t.token_hash = $1 FOR UPDATE",
};

#[derive(sqlx::FromRow)]
struct IssuedToken {
    subscriber_id: String,
    expires_at: Millis,
    used_at: Option<Millis>,
    #[sqlx(try_from = "String")]
    status: SubscriberStatus,
}

const LOCK_BY_UNSUBSCRIBE_TOKEN: PerDialect = PerDialect {
    sqlite: "SELECT id, status FROM subscribers WHERE unsubscribe_token = $1",
    postgres: "SELECT id, status FROM subscribers WHERE unsubscribe_token = $1 FOR UPDATE",
};

#[derive(sqlx::FromRow)]
struct Holder {
    id: String,
    #[sqlx(try_from = "String")]
    status: SubscriberStatus,
}

const LOCK_ID_BY_EMAIL: PerDialect = PerDialect {
    sqlite: "SELECT id FROM subscribers WHERE lower(email) = $1",
    postgres: "SELECT id FROM subscribers WHERE lower(email) = $1 FOR UPDATE",
};

impl Store {
    pub async fn insert_confirmation_token(
        &self,
        subscriber_id: &str,
        token_hash: &str,
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<()> {
        let mut conn = self.write_conn().await?;
        sqlx::query(
            "INSERT INTO confirmation_tokens (token_hash, subscriber_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(subscriber_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// What following this confirmation link would do now, changing nothing (a GET of the
    /// link: mail scanners fetch every link).
    pub async fn confirmation_link_status(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<ConfirmOutcome> {
        // The SQLite text is the plain read on both backends: nothing is locked here.
        let token: Option<IssuedToken> = sqlx::query_as(LOCK_TOKEN.sqlite)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(token.map_or(ConfirmOutcome::Invalid, |t| {
            confirm_link(t.status, t.used_at.is_some(), t.expires_at, now)
        }))
    }

    /// Confirms the subscriber this link was issued to, as `confirm_link` decides; with
    /// `welcome`, a newly confirmed subscriber's welcome email is queued in the same
    /// transaction.
    pub async fn confirm(
        &self,
        token_hash: &str,
        now: Millis,
        welcome: bool,
    ) -> StoreResult<ConfirmOutcome> {
        let mut tx = self.begin_write().await?;
        let token: Option<IssuedToken> = sqlx::query_as(self.sql(&LOCK_TOKEN))
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(token) = token else {
            return Ok(ConfirmOutcome::Invalid);
        };
        let outcome = confirm_link(token.status, token.used_at.is_some(), token.expires_at, now);
        let mut welcomed = false;
        if outcome == ConfirmOutcome::Confirmed {
            let confirmed = sqlx::query(
                "UPDATE subscribers SET status = 'confirmed', confirmed_at = $1, updated_at = $2
                 WHERE id = $3 AND status = 'pending'",
            )
            .bind(now)
            .bind(now)
            .bind(&token.subscriber_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if welcome && confirmed == 1 {
                let delivery_id = new_id();
                sqlx::query(
                    "INSERT INTO deliveries (id, kind, subscriber_id, status, expires_at,
                         created_at, updated_at)
                     VALUES ($1, 'welcome', $2, 'queued', $3, $4, $4)",
                )
                .bind(&delivery_id)
                .bind(&token.subscriber_id)
                .bind(now + ms(WELCOME_DEADLINE))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                self.enqueue(&mut tx, &[delivery_id], now).await?;
                welcomed = true;
            }
        }
        if token.used_at.is_none() && outcome != ConfirmOutcome::Invalid {
            sqlx::query("UPDATE confirmation_tokens SET used_at = $1 WHERE token_hash = $2")
                .bind(now)
                .bind(token_hash)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        if welcomed {
            self.work_queued();
        }
        Ok(outcome)
    }

    /// The subscriber whose own token (the one in every unsubscribe and manage link) this is.
    pub async fn subscriber_by_token(&self, token: &str) -> StoreResult<Option<SubscriberRow>> {
        Ok(sqlx::query_as(
            "SELECT id, email, name, status, consent_at, consent_ip, consent_user_agent, timezone,
                    confirmed_at, created_at
             FROM subscribers WHERE unsubscribe_token = $1",
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Sets (or, with `None`, clears) the name of the subscriber whose token this is; false
    /// if the token is nobody's.
    pub async fn rename_by_token(
        &self,
        token: &str,
        name: Option<&SubscriberName>,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut conn = self.write_conn().await?;
        let changed = sqlx::query(
            "UPDATE subscribers SET name = $1, updated_at = $2 WHERE unsubscribe_token = $3",
        )
        .bind(name.map(SubscriberName::as_str))
        .bind(now)
        .bind(token)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Every email kept for a subscriber, oldest first, with its digest's subject: their
    /// delivery history, for their data export.
    pub async fn history_of(&self, subscriber_id: &str) -> StoreResult<Vec<HistoryRow>> {
        Ok(sqlx::query_as(
            "SELECT d.id, d.kind, d.digest_id, g.subject, d.status, d.attempts, d.created_at,
                    d.sent_at, d.smtp_code, d.last_error
             FROM deliveries d LEFT JOIN digests g ON g.id = d.digest_id
             WHERE d.subscriber_id = $1 ORDER BY d.created_at, d.id",
        )
        .bind(subscriber_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The status of the subscriber an unsubscribe token belongs to, if any.
    pub async fn unsubscribe_token_status(
        &self,
        token: &str,
    ) -> StoreResult<Option<SubscriberStatus>> {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM subscribers WHERE unsubscribe_token = $1")
                .bind(token)
                .fetch_optional(&self.pool)
                .await?;
        status.as_deref().map(parse_col).transpose()
    }

    /// Unsubscribes and suppresses whatever is still queued for them.
    pub async fn unsubscribe(&self, token: &str, now: Millis) -> StoreResult<UnsubscribeOutcome> {
        let mut tx = self.begin_write().await?;
        let holder: Option<Holder> = sqlx::query_as(self.sql(&LOCK_BY_UNSUBSCRIBE_TOKEN))
            .bind(token)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(holder) = holder else {
            return Ok(UnsubscribeOutcome::UnknownToken);
        };
        let outcome = match holder.status {
            SubscriberStatus::Pending | SubscriberStatus::Confirmed => {
                sqlx::query(
                    "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = $1,
                         updated_at = $2
                     WHERE id = $3",
                )
                .bind(now)
                .bind(now)
                .bind(&holder.id)
                .execute(&mut *tx)
                .await?;
                UnsubscribeOutcome::Unsubscribed
            }
            SubscriberStatus::Unsubscribed | SubscriberStatus::Bounced => {
                UnsubscribeOutcome::AlreadyGone
            }
        };
        super::queue::suppress_queued(&mut tx, &holder.id, "unsubscribed", now).await?;
        self.commit(tx).await?;
        Ok(outcome)
    }

    /// Adds confirmed subscribers (an import whose consent the operator vouches for),
    /// leaving known addresses exactly as they are; returns how many were new.
    pub async fn import_confirmed(
        &self,
        rows: &[ImportRow],
        source: &str,
        now: Millis,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let mut inserted = 0;
        for ImportRow {
            email,
            name,
            timezone,
        } in rows
        {
            inserted += sqlx::query(
                "INSERT INTO subscribers (id, email, name, status, unsubscribe_token, consent_at,
                     consent_user_agent, confirmed_at, created_at, updated_at, timezone)
                 VALUES ($1, $2, $3, 'confirmed', $4, $5, $6, $5, $5, $5, $7)
                 ON CONFLICT DO NOTHING",
            )
            .bind(new_id())
            .bind(email.as_str())
            .bind(name.as_ref().map(SubscriberName::as_str))
            .bind(Token::generate().as_str())
            .bind(now)
            .bind(source)
            .bind(timezone.map(|tz| tz.name()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        self.commit(tx).await?;
        Ok(inserted)
    }

    /// Erases a subscriber with their tokens and deliveries (right to erasure); false if the
    /// address is unknown.
    pub async fn forget(&self, email: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let id: Option<String> = sqlx::query_scalar(self.sql(&LOCK_ID_BY_EMAIL))
            .bind(email_key(email))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = id else { return Ok(false) };
        // Bounce reports name the address too: matched ones by subscriber, others by address.
        sqlx::query("DELETE FROM bounce_events WHERE subscriber_id = $1 OR lower(recipient) = $2")
            .bind(&id)
            .bind(email_key(email))
            .execute(&mut *tx)
            .await?;
        for sql in [
            "DELETE FROM deliveries WHERE subscriber_id = $1",
            "DELETE FROM confirmation_tokens WHERE subscriber_id = $1",
            "DELETE FROM subscribers WHERE id = $1",
        ] {
            sqlx::query(sql).bind(&id).execute(&mut *tx).await?;
        }
        self.commit(tx).await?;
        Ok(true)
    }

    pub async fn subscriber_by_email(&self, email: &str) -> StoreResult<Option<SubscriberRow>> {
        Ok(sqlx::query_as(
            "SELECT id, email, name, status, consent_at, consent_ip, consent_user_agent, timezone,
                    confirmed_at, created_at
             FROM subscribers WHERE lower(email) = $1",
        )
        .bind(email_key(email))
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn subscriber_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM subscribers")
            .fetch_one(&self.pool)
            .await?)
    }

    /// A page of subscribers in id order (ids are time-ordered), after `after` if given.
    pub async fn list_subscribers(
        &self,
        status: Option<SubscriberStatus>,
        limit: u32,
        after: Option<&str>,
    ) -> StoreResult<Vec<SubscriberRow>> {
        Ok(sqlx::query_as(
            "SELECT id, email, name, status, consent_at, consent_ip, consent_user_agent, timezone,
                    confirmed_at, created_at
             FROM subscribers
             WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR id > $2)
             ORDER BY id LIMIT $3",
        )
        .bind(status.map(|s| s.as_str()))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// A subscriber's deliveries, oldest first.
    pub async fn deliveries_for(&self, subscriber_id: &str) -> StoreResult<Vec<DeliveryRow>> {
        let rows: Vec<StoredDelivery> = sqlx::query_as(
            "SELECT id, kind, subscriber_id, status, attempts, smtp_code, last_error
             FROM deliveries WHERE subscriber_id = $1 ORDER BY created_at, id",
        )
        .bind(subscriber_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(DeliveryRow::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locking_reads_are_written_for_each_backend() {
        super::super::tests::assert_dialects(&[
            ("LOCK_TOKEN", LOCK_TOKEN),
            ("LOCK_BY_UNSUBSCRIBE_TOKEN", LOCK_BY_UNSUBSCRIBE_TOKEN),
            ("LOCK_ID_BY_EMAIL", LOCK_ID_BY_EMAIL),
        ]);
    }
}
