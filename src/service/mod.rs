//! The use cases that http and the CLI share, so both behave the same: `editorial` (items,
//! digests, preview, schedule), `signup` (subscribe, confirm, unsubscribe), `subscribers`
//! (import, export, list, forget), `reporting` (statistics, events, metrics, health),
//! `retention` (roll-ups and the deletion of old deliveries) and `sessions` (the dashboard's).
//!
//! This is the layer that talks to the store; above it, `http` and `cli` name neither the
//! store nor sqlx. What they print or serialise is re-exported here under the service's
//! names. Every use case answers with one error type, `ServiceError`, which http maps to a
//! status and the CLI to an exit code.

pub mod archive;
pub mod editorial;
pub mod feeds;
pub mod inbound;
mod leading;
pub mod reporting;
pub mod retention;
pub mod sessions;
pub mod signup;
pub mod sns;
pub mod subscribers;

pub use archive::Archive;
pub use editorial::{DigestRequest, Editor, ItemsField, PreviewFormat, ScheduleView, TestRequest};
pub use feeds::{FeedView, Feeds, Polled};
pub use inbound::{Inbound, InboundSettings, Recorded};
pub use reporting::Reporting;
pub use retention::{Pruned, Retention};
pub use sessions::AdminSessions;
pub use signup::Signup;
pub use subscribers::{ImportReport, Subscribers};

/// The rows http and the CLI show, as the store reads them.
pub use crate::store::{
    DigestRow as Digest, ItemRow as Item, SubscriberRow as Subscriber, WaveRow as Wave,
};

use crate::domain::Invalid;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request breaks a rule: names the field and why.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the current state (a digest already sent, say).
    #[error("{0}")]
    Conflict(String),
    /// A template failed to render this digest: fix the template, then preview again.
    #[error("the digest does not render: {0}")]
    Template(String),
    /// The database stayed busy for the whole wait for a connection: try again shortly.
    #[error("{0}")]
    Busy(String),
    /// The database cannot take this now: its disk is full, its file was deleted or
    /// replaced, it is read-only, or its server is away. Says which, as the store says it;
    /// it passes without a restart once the cause does.
    #[error("{0}")]
    Unavailable(String),
    /// Asked too often: what the limit is, and how long until it allows another.
    #[error("{message}")]
    Limited { message: String, retry_after: u64 },
    #[error(transparent)]
    Store(StoreError),
}

/// Mistakes the store detects become `NotFound` and `Conflict`; a busy or unavailable
/// database (every use case alike: sign-up, editorial, reporting) is `Busy` or
/// `Unavailable`, which callers may retry; anything else is a fault.
impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Self::NotFound(m),
            StoreError::Conflict(m) => Self::Conflict(m),
            // Said as the store says it: "database error: …".
            busy @ StoreError::Busy(_) => Self::Busy(busy.to_string()),
            StoreError::Unavailable(_) => {
                Self::Unavailable("the database is unavailable; try again shortly".into())
            }
            full @ StoreError::Full(_) => Self::Unavailable(full.to_string()),
            StoreError::Unwritable(m) => Self::Unavailable(m),
            other => Self::Store(other),
        }
    }
}

impl ServiceError {
    /// The same as `From`, named where a use case's caller may simply retry.
    fn busy_or_fault(e: StoreError) -> Self {
        Self::from(e)
    }

    /// Whether the operator can fix this by changing what they asked (CLI exit code 2), as
    /// opposed to a conflict with the current state or database trouble (exit code 1).
    pub fn is_request_mistake(&self) -> bool {
        match self {
            Self::Invalid(_) | Self::NotFound(_) | Self::Template(_) => true,
            Self::Conflict(_)
            | Self::Limited { .. }
            | Self::Busy(_)
            | Self::Unavailable(_)
            | Self::Store(_) => false,
        }
    }

    /// A failure to write a report (CSV on standard output).
    fn output(e: impl std::fmt::Display) -> Self {
        Self::Store(StoreError::Corrupt(format!("cannot write CSV: {e}")))
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// An editor's mistake about one field.
pub fn invalid(field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(crate::domain::digest::invalid(field, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_use_case_tells_a_busy_or_unavailable_database_apart() {
        let busy = || StoreError::Busy("pool timed out".into());
        assert!(
            matches!(ServiceError::busy_or_fault(busy()), ServiceError::Busy(m) if m == "database error: pool timed out")
        );
        assert!(matches!(ServiceError::from(busy()), ServiceError::Busy(_)));
        let full = ServiceError::from(StoreError::Full("database or disk is full".into()));
        assert!(
            matches!(&full, ServiceError::Unavailable(m) if m == "the database cannot be written: disk full"),
            "{full:?}"
        );
        let away = ServiceError::from(StoreError::Unavailable("connection refused".into()));
        assert!(matches!(away, ServiceError::Unavailable(_)), "{away:?}");
        assert!(matches!(
            ServiceError::from(StoreError::Unwritable("gone".into())),
            ServiceError::Unavailable(m) if m == "gone"
        ));
        assert!(matches!(
            ServiceError::from(StoreError::NotFound("no digest".into())),
            ServiceError::NotFound(_)
        ));
        assert!(matches!(
            ServiceError::from(StoreError::Fault("syntax error".into())),
            ServiceError::Store(_)
        ));
    }
}
