//! The compose step: each delivery's content and list headers, from the digest (loaded once
//! and shared by all its emails), a fresh confirmation token, or the welcome email.

use std::sync::Arc;

use super::Worker;
use crate::compose::{DigestContent, ItemContent};
use crate::domain::DeliveryKind;
use crate::domain::Token;
use crate::domain::clock::ms;
use crate::mail::{Content, ListHeaders};
use crate::store::{ClaimedDelivery, DigestRow};

/// A digest as the templates see it, from its row: the one place a row becomes content.
impl From<&DigestRow> for DigestContent {
    fn from(d: &DigestRow) -> Self {
        DigestContent::new(
            &d.id,
            &d.subject,
            d.intro.as_deref(),
            d.items.iter().map(|i| ItemContent {
                title: &i.title,
                url: &i.url,
                summary: &i.summary,
                source: i.source.as_deref(),
            }),
        )
    }
}

impl Worker {
    pub(super) async fn compose(
        &self,
        d: &ClaimedDelivery,
        now: i64,
    ) -> Result<(Content, Option<ListHeaders>), Compose> {
        match d.kind {
            DeliveryKind::Confirmation => {
                // The token is born here and only its hash is stored: the database never
                // holds a usable confirmation link.
                let token = Token::generate();
                let expires = now + ms(self.settings.confirmation_ttl);
                let subscriber_id = d
                    .subscriber_id
                    .as_deref()
                    .ok_or_else(|| Compose::Fail("confirmation without a subscriber".into()))?;
                self.store
                    .insert_confirmation_token(subscriber_id, &token.hash(), now, expires)
                    .await
                    .map_err(|e| Compose::Retry(format!("cannot store confirmation token: {e}")))?;
                let rendered = self
                    .composer
                    .confirmation(d.name.as_deref(), token.as_str())
                    .map_err(|e| Compose::Fail(e.to_string()))?;
                Ok((rendered.into(), None))
            }
            DeliveryKind::Welcome => {
                let (rendered, list) = self
                    .composer
                    .welcome(d.name.as_deref(), &d.unsubscribe_token)
                    .map_err(|e| Compose::Fail(e.to_string()))?;
                Ok((rendered.into(), Some(list)))
            }
            DeliveryKind::Digest => {
                let content = self.digest_content(d).await?;
                let (email, list) = self
                    .composer
                    .digest(&content, d.name.as_deref(), &d.unsubscribe_token)
                    .map_err(|e| Compose::Fail(e.to_string()))?;
                Ok((email, Some(list)))
            }
            DeliveryKind::Test => {
                let content = self.tested_content(d).await?;
                let (email, list) = self
                    .composer
                    .test_digest(&content)
                    .map_err(|e| Compose::Fail(e.to_string()))?;
                Ok((email, Some(list)))
            }
        }
    }

    /// A test's digest as it is now, loaded for this email: a draft may have changed since
    /// the last test (the cache holds digests being sent, which no longer change).
    async fn tested_content(&self, d: &ClaimedDelivery) -> Result<DigestContent, Compose> {
        let id = d
            .tested_digest
            .as_deref()
            .ok_or_else(|| Compose::Fail("test without a digest".into()))?;
        let digest = self.load_digest(id).await?;
        Ok(DigestContent::from(&digest))
    }

    /// A digest from the store: a store that cannot answer now is retried, a digest that
    /// does not exist fails the email.
    async fn load_digest(&self, id: &str) -> Result<DigestRow, Compose> {
        self.store
            .digest(id)
            .await
            .map_err(|e| Compose::Retry(format!("cannot load digest {id}: {e}")))?
            .ok_or_else(|| Compose::Fail(format!("digest {id} does not exist")))
    }

    async fn digest_content(&self, d: &ClaimedDelivery) -> Result<Arc<DigestContent>, Compose> {
        let id = d
            .digest_id
            .as_deref()
            .ok_or_else(|| Compose::Fail("digest delivery without a digest".into()))?;
        // Loaded under the lock: the senders that start on a digest together wait for one
        // load (and then one prerendering) instead of each doing its own.
        let mut cache = self.digests.lock().await;
        if let Some(c) = cache.get(id) {
            return Ok(c.clone());
        }
        let digest = self.load_digest(id).await?;
        let content = Arc::new(DigestContent::from(&digest));
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(id.to_owned(), content.clone());
        Ok(content)
    }
}

pub(super) enum Compose {
    Retry(String),
    Fail(String),
}
