//! Dashboard sessions, kept in the database: every process behind a load balancer knows
//! them, a restart keeps them, logout ends one everywhere at once.

use super::{ServiceError, ServiceResult};
use crate::domain::Token;
use crate::domain::clock::Millis;
use crate::store::Store;

#[derive(Clone)]
pub struct AdminSessions {
    store: Store,
}

impl AdminSessions {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// A new session valid until `expires_at`; returns its id (the cookie's value). Only the
    /// id's SHA-256 is stored, as for confirmation tokens.
    pub async fn create(&self, now: Millis, expires_at: Millis) -> ServiceResult<String> {
        let id = Token::generate();
        let csrf = Token::generate();
        self.store
            .create_session(&id.hash(), csrf.as_str(), now, expires_at)
            .await
            .map_err(ServiceError::busy_or_fault)?;
        Ok(id.as_str().to_owned())
    }

    /// The CSRF token of the live session `id`; `None` for an unknown, ended or expired one
    /// (or for a cookie that is no session id at all).
    pub async fn csrf(&self, id: &str, now: Millis) -> ServiceResult<Option<String>> {
        let Ok(id) = Token::parse(id) else {
            return Ok(None);
        };
        self.store
            .session_csrf(&id.hash(), now)
            .await
            .map_err(ServiceError::busy_or_fault)
    }

    /// Ends the session: its cookie opens nothing any more, on any process.
    pub async fn end(&self, id: &str) -> ServiceResult<()> {
        let Ok(id) = Token::parse(id) else {
            return Ok(());
        };
        self.store
            .end_session(&id.hash())
            .await
            .map_err(ServiceError::busy_or_fault)
    }
}
