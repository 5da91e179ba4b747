//! Dashboard sessions: the SHA-256 of each session id, its CSRF token and its expiry.

use super::{Store, StoreResult};
use crate::domain::clock::Millis;

impl Store {
    /// Stores a new session (and forgets the expired ones).
    pub async fn create_session(
        &self,
        id_hash: &str,
        csrf: &str,
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO admin_sessions (id_hash, csrf, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id_hash)
        .bind(csrf)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The CSRF token of the live session whose id hashes to `id_hash`.
    pub async fn session_csrf(&self, id_hash: &str, now: Millis) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT csrf FROM admin_sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn end_session(&self, id_hash: &str) -> StoreResult<()> {
        let mut conn = self.write_conn().await?;
        sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}
