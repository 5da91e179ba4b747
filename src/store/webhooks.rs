//! Provider webhook calls seen: a signed call's token is accepted once, across processes,
//! until it expires (when the call could no longer pass the freshness check anyway).

use super::{Store, StoreResult};
use crate::domain::clock::Millis;

impl Store {
    /// Takes `token` of `provider` for the first time: `true` the first time, `false` for a
    /// replay. Tokens past their expiry are forgotten on the way.
    pub async fn first_use_of_webhook_token(
        &self,
        provider: &str,
        token: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM webhook_tokens WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO webhook_tokens (provider, token, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (provider, token) DO NOTHING",
        )
        .bind(provider)
        .bind(token)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.commit(tx).await?;
        Ok(inserted == 1)
    }

    /// Forgets a token taken for a call that then failed, so the provider's retry of the
    /// same call is heard.
    pub async fn forget_webhook_token(&self, provider: &str, token: &str) -> StoreResult<()> {
        let mut conn = self.write_conn().await?;
        sqlx::query("DELETE FROM webhook_tokens WHERE provider = $1 AND token = $2")
            .bind(provider)
            .bind(token)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}
