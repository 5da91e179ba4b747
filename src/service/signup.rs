//! What a subscriber does: sign up (double opt-in: the confirmation email is queued in the
//! same transaction), confirm (and get the welcome email, queued with the confirmation),
//! manage their subscription by their token (name, data export) and unsubscribe. The answers never reveal who is subscribed;
//! that is the caller's page to keep, with the outcome here only for logs.

use serde_json::json;

use super::{ServiceError, ServiceResult};
use crate::domain::clock::{Millis, to_rfc3339};
pub use crate::domain::subscriber::{ConfirmOutcome, SignUpOutcome};
use crate::domain::{SubscriberName, Token};
use crate::store::Store;
pub use crate::store::{SignUp, SubscriberRow as Subscriber, UnsubscribeOutcome};

#[derive(Clone)]
pub struct Signup {
    store: Store,
    /// Whether confirming queues the welcome email (setting `welcome`).
    welcome: bool,
}

impl Signup {
    pub fn new(store: Store, welcome: bool) -> Self {
        Self { store, welcome }
    }

    /// Records the sign-up (or leaves a known address as it is); the store wakes the workers.
    pub async fn subscribe(&self, signup: &SignUp, now: Millis) -> ServiceResult<SignUpOutcome> {
        self.store
            .sign_up(signup, now)
            .await
            .map_err(ServiceError::busy_or_fault)
    }

    /// What confirming with this link would do now; asking changes nothing.
    pub async fn confirmation_status(
        &self,
        token: &Token,
        now: Millis,
    ) -> ServiceResult<ConfirmOutcome> {
        self.store
            .confirmation_link_status(&token.hash(), now)
            .await
            .map_err(ServiceError::busy_or_fault)
    }

    /// Confirms (idempotent) and, the first time, queues the welcome email when it is on.
    pub async fn confirm(&self, token: &Token, now: Millis) -> ServiceResult<ConfirmOutcome> {
        self.store
            .confirm(&token.hash(), now, self.welcome)
            .await
            .map_err(ServiceError::busy_or_fault)
    }

    /// The subscriber whose own token this is (the token of their manage and unsubscribe
    /// links), if anyone's.
    pub async fn subscriber_by_token(&self, token: &Token) -> ServiceResult<Option<Subscriber>> {
        self.store
            .subscriber_by_token(token.as_str())
            .await
            .map_err(ServiceError::busy_or_fault)
    }

    /// Sets or (with `None`) clears the name of the subscriber whose token this is; false if
    /// the token is nobody's.
    pub async fn rename(
        &self,
        token: &Token,
        name: Option<&SubscriberName>,
        now: Millis,
    ) -> ServiceResult<bool> {
        self.store
            .rename_by_token(token.as_str(), name, now)
            .await
            .map_err(ServiceError::busy_or_fault)
    }

    /// Everything Squeeze keeps about the subscriber whose token this is (the right of
    /// access): their record, the evidence of their consent, and every email kept for them.
    /// `None` if the token is nobody's.
    pub async fn personal_data(
        &self,
        token: &Token,
        now: Millis,
    ) -> ServiceResult<Option<serde_json::Value>> {
        let Some(s) = self.subscriber_by_token(token).await? else {
            return Ok(None);
        };
        let deliveries = self
            .store
            .history_of(&s.id)
            .await
            .map_err(ServiceError::busy_or_fault)?;
        Ok(Some(json!({
            "exported_at": to_rfc3339(now),
            "subscriber": {
                "email": s.email,
                "name": s.name,
                "status": s.status.as_str(),
                "created_at": to_rfc3339(s.created_at),
                "confirmed_at": s.confirmed_at.map(to_rfc3339),
            },
            "consent": {
                "at": to_rfc3339(s.consent_at),
                "ip": s.consent_ip,
                "user_agent": s.consent_user_agent,
            },
            "deliveries": deliveries,
        })))
    }

    /// Whether `token` is someone's unsubscribe token (asking changes nothing).
    pub async fn knows_unsubscribe_token(&self, token: &Token) -> ServiceResult<bool> {
        self.store
            .unsubscribe_token_status(token.as_str())
            .await
            .map(|status| status.is_some())
            .map_err(ServiceError::busy_or_fault)
    }

    /// One-click unsubscribe; idempotent.
    pub async fn unsubscribe(
        &self,
        token: &Token,
        now: Millis,
    ) -> ServiceResult<UnsubscribeOutcome> {
        self.store
            .unsubscribe(token.as_str(), now)
            .await
            .map_err(ServiceError::busy_or_fault)
    }
}
