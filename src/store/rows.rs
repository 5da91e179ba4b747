//! The rows callers read, decoded by `#[derive(sqlx::FromRow)]` (by column name; the status
//! enums through their `TryFrom<String>`), and shown in JSON with RFC 3339 times.

use serde::Serialize;

use crate::domain::clock::{Millis, to_rfc3339};
use crate::domain::delivery::Outcome;
use crate::domain::{DeliveryKind, DeliveryStatus, DigestStatus, SubscriberStatus};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SubscriberRow {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    #[serde(serialize_with = "as_str")]
    #[schema(value_type = String)]
    #[sqlx(try_from = "String")]
    pub status: SubscriberStatus,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub consent_at: Millis,
    pub consent_ip: Option<String>,
    pub consent_user_agent: Option<String>,
    /// Their own zone (an IANA name); `None` is the list's.
    pub timezone: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub confirmed_at: Option<Millis>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DigestRow {
    pub id: String,
    pub subject: String,
    pub intro: Option<String>,
    #[serde(serialize_with = "as_str")]
    #[schema(value_type = String)]
    #[sqlx(try_from = "String")]
    pub status: DigestStatus,
    pub paused_reason: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub send_at: Option<Millis>,
    /// Set for digests the daily schedule made: the local date they were for.
    pub daily_date: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Millis>,
    pub recipients: Option<i64>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Millis>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Millis>,
    /// Why the scheduler did what it did (missed, …).
    pub note: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
    pub item_count: i64,
    /// Set for a digest delivered at this wall time (HH:MM) on `local_date` in each
    /// subscriber's own zone; `None` for one that goes to everyone at `send_at`.
    pub local_time: Option<String>,
    pub local_date: Option<String>,
    /// When its fan-out wrote its last chunk; `None` before or while it runs.
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub fanned_out_at: Option<Millis>,
    /// `running` while its deliveries are being made (a few thousand at a time; `recipients`
    /// counts those made so far), `complete` once every confirmed subscriber has one,
    /// `stopped` when it was cancelled before that; `None` before it is sent.
    #[schema(value_type = Option<String>, example = "complete")]
    pub fan_out: Option<String>,
    /// Loaded by [`Store::digest`](super::Store::digest); empty in listings.
    #[sqlx(skip)]
    pub items: Vec<ItemRow>,
    /// Its waves, one per zone, earliest first, once it fanned out (only for a digest
    /// delivered at each subscriber's time). Loaded by [`Store::digest`](super::Store::digest).
    #[sqlx(skip)]
    pub waves: Vec<WaveRow>,
}

/// One wave of a digest delivered at each subscriber's time: the deliveries of one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WaveRow {
    pub timezone: String,
    /// When it is due, RFC 3339 with the zone's offset.
    #[schema(format = DateTime)]
    pub due_at: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub due_at_utc: Millis,
    pub recipients: i64,
    pub sent: i64,
    /// `waiting` (not due yet), `open` (queued from its due time), `missed` (seen only
    /// beyond the grace window: not sent late) or `cancelled` (by an editor, before its time).
    pub state: String,
    pub note: Option<String>,
}

impl WaveRow {
    pub fn new(
        timezone: String,
        due_at_utc: Millis,
        recipients: i64,
        sent: i64,
        state: String,
        note: Option<String>,
    ) -> Self {
        let utc = chrono::DateTime::from_timestamp_millis(due_at_utc).unwrap_or_default();
        let due_at = match timezone.parse::<chrono_tz::Tz>() {
            Ok(tz) => utc
                .with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            Err(_) => utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        Self {
            timezone,
            due_at,
            due_at_utc,
            recipients,
            sent,
            state,
            note,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventRow {
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Millis,
    pub kind: String,
    pub digest_id: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FailureRow {
    pub delivery_id: String,
    pub kind: String,
    pub digest_id: Option<String>,
    pub email: String,
    pub smtp_code: Option<i64>,
    pub error: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Millis,
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

/// One email Squeeze sent (or meant to send) a subscriber, as their data export shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct HistoryRow {
    pub id: String,
    pub kind: String,
    pub digest_id: Option<String>,
    /// The digest's subject, for a digest.
    pub subject: Option<String>,
    pub status: String,
    pub attempts: i64,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sent_at: Option<Millis>,
    pub smtp_code: Option<i64>,
    pub last_error: Option<String>,
}

/// A delivery claimed by a worker, with what it needs to render and address it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: String,
    pub claim_id: String,
    pub kind: DeliveryKind,
    /// The digest it is one of the deliveries of (counted toward it); `None` for a test.
    pub digest_id: Option<String>,
    /// A test's digest: what it shows, counted toward nothing.
    pub tested_digest: Option<String>,
    pub attempts: u32,
    pub expires_at: Millis,
    /// When it was queued: the start of its enqueue-to-sent latency.
    pub created_at: Millis,
    /// `None` for a test, which goes to an editor's address (`email`): its status is taken
    /// as confirmed (they asked for it) and its `unsubscribe_token` is empty.
    pub subscriber_id: Option<String>,
    pub email: String,
    pub name: Option<String>,
    pub subscriber_status: SubscriberStatus,
    pub unsubscribe_token: String,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub delivery_id: String,
    pub claim_id: String,
    /// Tests are recorded like any delivery but counted in no throughput.
    pub kind: DeliveryKind,
    pub subscriber_id: Option<String>,
    pub outcome: Outcome,
}

/// A [`DeliveryRow`] as stored: its numbers are the database's.
#[derive(sqlx::FromRow)]
pub(super) struct StoredDelivery {
    id: String,
    #[sqlx(try_from = "String")]
    kind: DeliveryKind,
    subscriber_id: String,
    #[sqlx(try_from = "String")]
    status: DeliveryStatus,
    attempts: i64,
    smtp_code: Option<i64>,
    last_error: Option<String>,
}

impl From<StoredDelivery> for DeliveryRow {
    fn from(d: StoredDelivery) -> Self {
        Self {
            id: d.id,
            kind: d.kind,
            subscriber_id: d.subscriber_id,
            status: d.status,
            attempts: u32::try_from(d.attempts).unwrap_or(0),
            smtp_code: d.smtp_code.and_then(|c| u16::try_from(c).ok()),
            last_error: d.last_error,
        }
    }
}

pub(super) fn rfc3339<S: serde::Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_rfc3339(*ms))
}

pub(super) fn rfc3339_opt<S: serde::Serializer>(
    ms: &Option<Millis>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&to_rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

pub(super) fn as_str<S: serde::Serializer, T: std::fmt::Display>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}
