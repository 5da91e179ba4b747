//! The only place with SQL. One API; the database URL's scheme picks the implementation.

mod sqlite;

use std::time::Duration;

use crate::config::DatabaseKind;
use crate::domain::{DeliveryKind, DeliveryStatus, EmailAddress, SubscriberName, SubscriberStatus};

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Unsupported(String),
    #[error("the database holds a value this version does not understand: {0}")]
    Corrupt(String),
}

/// Milliseconds since the Unix epoch: how every time is stored.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

pub fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A sign-up as the HTTP edge parsed it, with its consent evidence.
#[derive(Debug, Clone)]
pub struct SignUp {
    pub email: EmailAddress,
    pub name: Option<SubscriberName>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// What a sign-up did. The HTTP answer is the same for all of them (no address enumeration);
/// this is for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignUpOutcome {
    /// New address, or a returning one that had unsubscribed: pending, confirmation queued.
    ConfirmationQueued,
    /// Pending and a confirmation was queued less than the re-send interval ago.
    RecentlyQueued,
    AlreadyConfirmed,
    /// A hard-bounced address is never mailed again.
    Bounced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed,
    /// The link was used before, and the subscriber is confirmed: same friendly page.
    AlreadyConfirmed,
    /// Expired, used by someone no longer pending, or never issued: offer a new link.
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsubscribeOutcome {
    Unsubscribed,
    AlreadyGone,
    UnknownToken,
}

/// A delivery claimed by a worker, with what it needs to render and address it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: String,
    pub claim_id: String,
    pub kind: DeliveryKind,
    pub digest_id: Option<String>,
    pub attempts: u32,
    pub expires_at: Millis,
    pub subscriber_id: String,
    pub email: String,
    pub name: Option<String>,
    pub subscriber_status: SubscriberStatus,
    pub unsubscribe_token: String,
}

/// The result of one claimed delivery, written back in batches.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent,
    /// Transient failure: back to `queued`, due again at `run_at`.
    Retry {
        run_at: Millis,
        code: Option<u16>,
        error: String,
    },
    Failed {
        code: Option<u16>,
        error: String,
        /// The address does not exist: mark the subscriber `bounced`.
        bounce: bool,
    },
    Suppressed {
        reason: String,
    },
    /// Never started (shutdown): hand the lease back without counting an attempt.
    Released,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub delivery_id: String,
    pub claim_id: String,
    pub subscriber_id: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberRow {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub status: SubscriberStatus,
    pub consent_at: Millis,
    pub consent_ip: Option<String>,
    pub consent_user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: String,
    pub kind: DeliveryKind,
    pub subscriber_id: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub smtp_code: Option<u16>,
    pub last_error: Option<String>,
}

/// The store. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(sqlite::Sqlite),
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match &$self.backend {
            Backend::Sqlite($b) => $e,
        }
    };
}

impl Store {
    /// Opens (creating an SQLite file if needed) without migrating.
    pub async fn connect(url: &str, kind: &DatabaseKind) -> StoreResult<Self> {
        let backend = match kind {
            DatabaseKind::Sqlite => Backend::Sqlite(sqlite::Sqlite::connect(url).await?),
            DatabaseKind::Postgres => {
                return Err(StoreError::Unsupported(
                    "PostgreSQL is not supported by this build yet; use a sqlite:// database_url"
                        .into(),
                ));
            }
        };
        Ok(Self { backend })
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        dispatch!(self, b => b.migrate().await)
    }

    pub async fn ping(&self) -> StoreResult<()> {
        dispatch!(self, b => b.ping().await)
    }

    pub async fn close(&self) {
        dispatch!(self, b => b.close().await)
    }

    /// Records a sign-up and, in the same transaction, queues its confirmation email when one
    /// is due (never more than one per `resend_after` for a pending address).
    pub async fn sign_up(
        &self,
        s: &SignUp,
        now: Millis,
        resend_after: Duration,
        confirmation_deadline: Duration,
    ) -> StoreResult<SignUpOutcome> {
        dispatch!(self, b => b.sign_up(s, now, ms(resend_after), ms(confirmation_deadline)).await)
    }

    pub async fn insert_confirmation_token(
        &self,
        subscriber_id: &str,
        token_hash: &str,
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<()> {
        dispatch!(self, b => b.insert_confirmation_token(subscriber_id, token_hash, now, expires_at).await)
    }

    pub async fn confirm(&self, token_hash: &str, now: Millis) -> StoreResult<ConfirmOutcome> {
        dispatch!(self, b => b.confirm(token_hash, now).await)
    }

    /// The status of the subscriber an unsubscribe token belongs to, if any.
    pub async fn unsubscribe_token_status(
        &self,
        token: &str,
    ) -> StoreResult<Option<SubscriberStatus>> {
        dispatch!(self, b => b.unsubscribe_token_status(token).await)
    }

    /// Unsubscribes and suppresses whatever is still queued for them.
    pub async fn unsubscribe(&self, token: &str, now: Millis) -> StoreResult<UnsubscribeOutcome> {
        dispatch!(self, b => b.unsubscribe(token, now).await)
    }

    /// Leases up to `limit` due deliveries (queued and due, or sending with an expired lease)
    /// in one committed statement, before any SMTP work.
    pub async fn claim(
        &self,
        now: Millis,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        dispatch!(self, b => b.claim(now, ms(lease), limit).await)
    }

    /// Writes outcomes in one transaction. Each update only applies while the row still
    /// carries that claim, so a worker whose lease was taken over cannot overwrite the result.
    pub async fn record(&self, outcomes: &[Recorded], now: Millis) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        dispatch!(self, b => b.record(outcomes, now).await)
    }

    /// When the next queued delivery is due, if any: lets an idle worker sleep exactly so long.
    pub async fn next_due(&self) -> StoreResult<Option<Millis>> {
        dispatch!(self, b => b.next_due().await)
    }

    pub async fn subscriber_by_email(&self, email: &str) -> StoreResult<Option<SubscriberRow>> {
        dispatch!(self, b => b.subscriber_by_email(email).await)
    }

    pub async fn subscriber_count(&self) -> StoreResult<i64> {
        dispatch!(self, b => b.subscriber_count().await)
    }

    pub async fn deliveries_for(&self, subscriber_id: &str) -> StoreResult<Vec<DeliveryRow>> {
        dispatch!(self, b => b.deliveries_for(subscriber_id).await)
    }
}

fn parse_col<T: std::str::FromStr<Err = String>>(s: &str) -> StoreResult<T> {
    s.parse().map_err(StoreError::Corrupt)
}
