//! What a subscriber does: sign up (double opt-in: the confirmation email is queued in the
//! same transaction), confirm, and unsubscribe. The answers never reveal who is subscribed;
//! that is the caller's page to keep, with the outcome here only for logs.

use std::sync::Arc;

use tokio::sync::Notify;

use super::{ServiceError, ServiceResult};
use crate::domain::Token;
use crate::domain::clock::Millis;
pub use crate::domain::subscriber::{ConfirmOutcome, SignUpOutcome};
use crate::store::Store;
pub use crate::store::{SignUp, UnsubscribeOutcome};

#[derive(Clone)]
pub struct Signup {
    store: Store,
    /// Wakes an in-process worker when a confirmation is queued.
    wake: Arc<Notify>,
}

impl Signup {
    pub fn new(store: Store, wake: Arc<Notify>) -> Self {
        Self { store, wake }
    }

    /// Records the sign-up (or leaves a known address as it is) and wakes the worker.
    pub async fn subscribe(&self, signup: &SignUp, now: Millis) -> ServiceResult<SignUpOutcome> {
        let outcome = self
            .store
            .sign_up(signup, now)
            .await
            .map_err(ServiceError::busy_or_fault)?;
        self.wake.notify_one();
        Ok(outcome)
    }

    pub async fn confirm(&self, token: &Token, now: Millis) -> ServiceResult<ConfirmOutcome> {
        self.store
            .confirm(&token.hash(), now)
            .await
            .map_err(ServiceError::busy_or_fault)
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
