//! The only place with SQL. One API; the database URL's scheme picks the implementation.

mod sql;

pub use sql::{Leadership, SCHEDULER_LOCK, WORK_CHANNEL};

use std::time::Duration;

use crate::config::DatabaseKind;
use serde::Serialize;

use crate::domain::clock::{Millis, ms, to_rfc3339};
use crate::domain::delivery::Outcome;
use crate::domain::{
    DailySchedule, DeliveryKind, DeliveryStatus, DigestStatus, EmailAddress, NewDigest, NewItem,
    SubscriberName, SubscriberStatus,
};

pub type StoreResult<T> = Result<T, StoreError>;

/// What went wrong in the store, by kind: callers branch on these and never see the driver.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Every connection stayed busy for the whole wait for one (on SQLite: the write turn,
    /// behind a very long write): transient, try again shortly.
    #[error("database error: {0}")]
    Busy(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database cannot be reached (connection refused or lost, pool closed).
    #[error("database error: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Any other failure of the database or of a statement.
    #[error("database error: {0}")]
    Fault(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("database migration failed: {0}")]
    Migrate(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the database holds a value this version does not understand: {0}")]
    Corrupt(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => Self::Busy(e.into()),
            sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Self::Unavailable(e.into())
            }
            e => Self::Fault(e.into()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e.into())
    }
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
    /// When it was queued: the start of its enqueue-to-sent latency.
    pub created_at: Millis,
    pub subscriber_id: String,
    pub email: String,
    pub name: Option<String>,
    pub subscriber_status: SubscriberStatus,
    pub unsubscribe_token: String,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub delivery_id: String,
    pub claim_id: String,
    pub subscriber_id: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriberRow {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    #[serde(serialize_with = "as_str")]
    pub status: SubscriberStatus,
    #[serde(serialize_with = "rfc3339")]
    pub consent_at: Millis,
    pub consent_ip: Option<String>,
    pub consent_user_agent: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub confirmed_at: Option<Millis>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemRow {
    pub id: String,
    pub title: String,
    pub url: String,
    pub summary: String,
    pub source: Option<String>,
    /// `pending` (waiting for a digest) or `used`.
    pub status: String,
    pub digest_id: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestRow {
    pub id: String,
    pub subject: String,
    pub intro: Option<String>,
    #[serde(serialize_with = "as_str")]
    pub status: DigestStatus,
    pub paused_reason: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub send_at: Option<Millis>,
    /// Set for digests the daily schedule made: the local date they were for.
    pub daily_date: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires_at: Option<Millis>,
    pub recipients: Option<i64>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub started_at: Option<Millis>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub finished_at: Option<Millis>,
    /// Why the scheduler did what it did (missed, …).
    pub note: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: Millis,
    pub item_count: i64,
    /// Loaded by [`Store::digest`]; empty in listings.
    pub items: Vec<ItemRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    #[serde(serialize_with = "rfc3339")]
    pub at: Millis,
    pub kind: String,
    pub digest_id: Option<String>,
    pub message: String,
}

/// Deliveries by state, for one digest or all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCounts {
    /// Waiting for a first attempt.
    pub queued: i64,
    /// Waiting for another attempt after a transient failure.
    pub retrying: i64,
    /// Leased by a worker (on the wire, or about to be).
    pub sending: i64,
    pub sent: i64,
    /// Given up, other than hard bounces.
    pub failed: i64,
    /// Failed because the address does not exist.
    pub bounced: i64,
    pub suppressed: i64,
    #[serde(skip)]
    pub first_sent_at: Option<Millis>,
    #[serde(skip)]
    pub last_sent_at: Option<Millis>,
}

impl DeliveryCounts {
    pub fn total(&self) -> i64 {
        self.queued
            + self.retrying
            + self.sending
            + self.sent
            + self.failed
            + self.bounced
            + self.suppressed
    }

    /// Not final yet.
    pub fn pending(&self) -> i64 {
        self.queued + self.retrying + self.sending
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureRow {
    pub delivery_id: String,
    pub kind: String,
    pub digest_id: Option<String>,
    pub email: String,
    pub smtp_code: Option<i64>,
    pub error: String,
    #[serde(serialize_with = "rfc3339")]
    pub at: Millis,
}

/// Subscriber timestamps that per-day statistics count.
#[derive(Debug, Clone, Copy)]
pub enum DayColumn {
    SignedUp,
    Confirmed,
    Unsubscribed,
}

impl DayColumn {
    fn as_str(self) -> &'static str {
        match self {
            Self::SignedUp => "created_at",
            Self::Confirmed => "confirmed_at",
            Self::Unsubscribed => "unsubscribed_at",
        }
    }
}

/// The stored daily schedule and the last local date it handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchedule {
    pub schedule: DailySchedule,
    pub last_date: Option<String>,
}

fn rfc3339<S: serde::Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_rfc3339(*ms))
}

fn rfc3339_opt<S: serde::Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&to_rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

fn as_str<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
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
    sql: sql::Sql,
    kind: DatabaseKind,
}

impl Store {
    /// Opens the database the URL names (creating an SQLite file if needed), without migrating.
    pub async fn connect(url: &str, kind: &DatabaseKind) -> StoreResult<Self> {
        Ok(Self {
            sql: sql::Sql::connect(url, kind).await?,
            kind: kind.clone(),
        })
    }

    pub fn kind(&self) -> &DatabaseKind {
        &self.kind
    }

    /// Tries to take the scheduler role (PostgreSQL: an advisory lock held by a dedicated
    /// connection). `None`: another node is the scheduler.
    pub async fn try_lead(&self) -> StoreResult<Option<Leadership>> {
        self.sql.try_lead().await
    }

    pub async fn still_leading(&self, l: &mut Leadership) -> bool {
        self.sql.still_leading(l).await
    }

    /// On PostgreSQL, wakes `wake` whenever any node queues mail (LISTEN/NOTIFY).
    pub async fn forward_work_notifications(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        self.sql.forward_work_notifications(wake, shutdown).await;
    }

    /// Records a worker's heartbeat and returns the number of live workers.
    pub async fn heartbeat(
        &self,
        worker_id: &str,
        host: &str,
        now: Millis,
        alive_within: Duration,
    ) -> StoreResult<i64> {
        self.sql
            .heartbeat(worker_id, host, now, ms(alive_within))
            .await
    }

    pub async fn live_workers(&self, now: Millis, alive_within: Duration) -> StoreResult<i64> {
        self.sql.live_workers(now, ms(alive_within)).await
    }

    pub async fn deregister(&self, worker_id: &str) -> StoreResult<()> {
        self.sql.deregister(worker_id).await
    }

    pub async fn delivery_counts(&self, digest_id: Option<&str>) -> StoreResult<DeliveryCounts> {
        self.sql.delivery_counts(digest_id).await
    }

    pub async fn latency_at_rank(&self, digest_id: &str, rank: i64) -> StoreResult<Option<Millis>> {
        self.sql.latency_at_rank(digest_id, rank).await
    }

    pub async fn reply_codes(&self, digest_id: &str, limit: i64) -> StoreResult<Vec<(i64, i64)>> {
        self.sql.reply_codes(digest_id, limit).await
    }

    pub async fn subscriber_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        self.sql.subscriber_counts().await
    }

    pub async fn per_day(&self, column: DayColumn, since: Millis) -> StoreResult<Vec<(i64, i64)>> {
        self.sql.per_day(column, since).await
    }

    pub async fn confirmation_counts(&self, since: Millis) -> StoreResult<(i64, i64)> {
        self.sql.confirmation_counts(since).await
    }

    pub async fn oldest_due(&self, now: Millis) -> StoreResult<Option<Millis>> {
        self.sql.oldest_due(now).await
    }

    pub async fn sent_per_minute(&self, since: Millis) -> StoreResult<Vec<(i64, i64)>> {
        self.sql.sent_per_minute(since).await
    }

    pub async fn recent_failures(&self, limit: i64) -> StoreResult<Vec<FailureRow>> {
        self.sql.recent_failures(limit).await
    }

    /// Adds confirmed subscribers, leaving known addresses untouched; returns how many were new.
    pub async fn import_confirmed(
        &self,
        rows: &[(EmailAddress, Option<SubscriberName>)],
        source: &str,
        now: Millis,
    ) -> StoreResult<u64> {
        self.sql.import_confirmed(rows, source, now).await
    }

    /// Erases a subscriber and everything about them; false if the address is unknown.
    pub async fn forget(&self, email: &str) -> StoreResult<bool> {
        self.sql.forget(email).await
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        self.sql.migrate().await
    }

    pub async fn ping(&self) -> StoreResult<()> {
        self.sql.ping().await
    }

    pub async fn close(&self) {
        self.sql.close().await
    }

    /// Records a sign-up and, in the same transaction, queues its confirmation email when one
    /// is due (never more than one per `RESEND_CONFIRMATION_AFTER` for a pending address; it
    /// is given up after `CONFIRMATION_DEADLINE`).
    pub async fn sign_up(&self, s: &SignUp, now: Millis) -> StoreResult<SignUpOutcome> {
        self.sql.sign_up(s, now).await
    }

    pub async fn insert_confirmation_token(
        &self,
        subscriber_id: &str,
        token_hash: &str,
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<()> {
        self.sql
            .insert_confirmation_token(subscriber_id, token_hash, now, expires_at)
            .await
    }

    pub async fn confirm(&self, token_hash: &str, now: Millis) -> StoreResult<ConfirmOutcome> {
        self.sql.confirm(token_hash, now).await
    }

    /// The status of the subscriber an unsubscribe token belongs to, if any.
    pub async fn unsubscribe_token_status(
        &self,
        token: &str,
    ) -> StoreResult<Option<SubscriberStatus>> {
        self.sql.unsubscribe_token_status(token).await
    }

    /// Unsubscribes and suppresses whatever is still queued for them.
    pub async fn unsubscribe(&self, token: &str, now: Millis) -> StoreResult<UnsubscribeOutcome> {
        self.sql.unsubscribe(token, now).await
    }

    /// Leases up to `limit` due deliveries (queued and due, or sending with an expired lease)
    /// in one committed statement, before any SMTP work.
    pub async fn claim(
        &self,
        now: Millis,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        self.sql.claim(now, ms(lease), limit).await
    }

    /// Writes outcomes in one transaction. Each update only applies while the row still
    /// carries that claim, so a worker whose lease was taken over cannot overwrite the result.
    pub async fn record(&self, outcomes: &[Recorded], now: Millis) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.sql.record(outcomes, now).await
    }

    /// A digest's status alone (cheaper than `digest`, which loads its items).
    pub async fn digest_status(&self, id: &str) -> StoreResult<Option<DigestStatus>> {
        self.sql
            .digest_status(id)
            .await?
            .as_deref()
            .map(parse_col)
            .transpose()
    }

    /// When the next queued delivery is due, if any: lets an idle worker sleep exactly so long.
    pub async fn next_due(&self) -> StoreResult<Option<Millis>> {
        self.sql.next_due().await
    }

    pub async fn subscriber_by_email(&self, email: &str) -> StoreResult<Option<SubscriberRow>> {
        self.sql.subscriber_by_email(email).await
    }

    pub async fn subscriber_count(&self) -> StoreResult<i64> {
        self.sql.subscriber_count().await
    }

    pub async fn deliveries_for(&self, subscriber_id: &str) -> StoreResult<Vec<DeliveryRow>> {
        self.sql.deliveries_for(subscriber_id).await
    }
}

impl Store {
    pub async fn add_item(&self, item: &NewItem, now: Millis) -> StoreResult<ItemRow> {
        self.sql.add_item(item, now).await
    }

    pub async fn list_items(&self, status: Option<&str>) -> StoreResult<Vec<ItemRow>> {
        self.sql.list_items(status).await
    }

    /// Deletes a pending item; one already in a digest is kept (`Conflict`).
    pub async fn delete_item(&self, id: &str) -> StoreResult<()> {
        self.sql.delete_item(id).await
    }

    /// Creates a draft from pending items (named, or all of them), marking them used.
    /// `daily_date` makes it the daily digest of that local date (at most one per date).
    pub async fn create_digest(
        &self,
        d: &NewDigest,
        daily_date: Option<&str>,
        now: Millis,
    ) -> StoreResult<DigestRow> {
        self.sql.create_digest(d, daily_date, now).await
    }

    pub async fn digest(&self, id: &str) -> StoreResult<Option<DigestRow>> {
        self.sql.digest(id).await
    }

    pub async fn list_digests(&self, limit: u32) -> StoreResult<Vec<DigestRow>> {
        self.sql.list_digests(limit).await
    }

    /// `draft` or `scheduled` -> `scheduled` at `send_at`.
    pub async fn schedule_digest(&self, id: &str, send_at: Millis, now: Millis) -> StoreResult<()> {
        self.sql.schedule_digest(id, send_at, now).await
    }

    /// Before sending only; its items become pending again.
    pub async fn cancel_digest(&self, id: &str, now: Millis) -> StoreResult<()> {
        self.sql.cancel_digest(id, now).await
    }

    /// `scheduled` or `sending` -> `paused` (idempotent): workers stop claiming its mail.
    pub async fn pause_digest(&self, id: &str, reason: &str, now: Millis) -> StoreResult<()> {
        self.sql.pause_digest(id, reason, now).await
    }

    /// `paused` -> whatever it was before (idempotent for a digest that is not paused).
    pub async fn resume_digest(&self, id: &str, now: Millis) -> StoreResult<()> {
        self.sql.resume_digest(id, now).await
    }

    /// Scheduled digests whose time has come.
    pub async fn due_digests(&self, now: Millis) -> StoreResult<Vec<DigestRow>> {
        self.sql.due_digests(now).await
    }

    /// Fan-out: one set-based statement makes one delivery per confirmed subscriber (unique
    /// per digest and subscriber) and moves the digest to `sending`. `None` if the digest was
    /// no longer `scheduled` (another scheduler got there first).
    pub async fn fan_out(
        &self,
        id: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<Option<u64>> {
        self.sql.fan_out(id, expires_at, now).await
    }

    pub async fn mark_missed(&self, id: &str, note: &str, now: Millis) -> StoreResult<bool> {
        self.sql.mark_missed(id, note, now).await
    }

    /// `sending` digests with nothing left queued or on the wire become `sent`.
    pub async fn finish_digests(&self, now: Millis) -> StoreResult<Vec<String>> {
        self.sql.finish_digests(now).await
    }

    pub async fn schedule(&self) -> StoreResult<Option<StoredSchedule>> {
        self.sql.schedule().await
    }

    /// Saves the schedule; `handled_through` is the local date already taken care of, so
    /// setting a time earlier than now does not fire at once.
    pub async fn put_schedule(
        &self,
        s: &DailySchedule,
        handled_through: &str,
        now: Millis,
    ) -> StoreResult<()> {
        self.sql.put_schedule(s, handled_through, now).await
    }

    /// Compare-and-set of the last handled date: true for the one caller that moves it to
    /// `date`, so a daily firing is handled once.
    pub async fn take_daily_date(&self, date: &str, now: Millis) -> StoreResult<bool> {
        self.sql.take_daily_date(date, now).await
    }

    pub async fn add_event(
        &self,
        kind: &str,
        digest_id: Option<&str>,
        message: &str,
        now: Millis,
    ) -> StoreResult<()> {
        self.sql.add_event(kind, digest_id, message, now).await
    }

    pub async fn events(&self, limit: u32) -> StoreResult<Vec<EventRow>> {
        self.sql.events(limit).await
    }

    /// A page of subscribers in id order (ids are time-ordered), after `after` if given.
    pub async fn list_subscribers(
        &self,
        status: Option<SubscriberStatus>,
        limit: u32,
        after: Option<&str>,
    ) -> StoreResult<Vec<SubscriberRow>> {
        self.sql.list_subscribers(status, limit, after).await
    }
}

fn parse_col<T: std::str::FromStr<Err = String>>(s: &str) -> StoreResult<T> {
    s.parse().map_err(StoreError::Corrupt)
}
