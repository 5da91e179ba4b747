//! Feeds and the entries seen of each: the poller's state per feed (validators for the
//! conditional GET, last success, last error, consecutive failures) and the writes that turn
//! new entries into pending items, each entry once.

use serde::Serialize;

use super::rows::{rfc3339, rfc3339_opt};
use super::{Store, StoreError, StoreResult, new_id, not_found};
use crate::domain::NewItem;
use crate::domain::clock::Millis;

const FEED_COLUMNS: &str = "id, url, title, etag, last_modified, last_polled_at, \
     last_success_at, last_error, last_error_at, failing_since, consecutive_failures, created_at";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FeedRow {
    pub id: String,
    pub url: String,
    /// The feed's own title, once it has been read; the source of its items.
    pub title: Option<String>,
    #[serde(skip)]
    pub etag: Option<String>,
    #[serde(skip)]
    pub last_modified: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_polled_at: Option<Millis>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_success_at: Option<Millis>,
    pub last_error: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_error_at: Option<Millis>,
    /// When the current run of failures began; `None` while the feed works.
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub failing_since: Option<Millis>,
    pub consecutive_failures: i64,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
}

/// An entry of a successful poll: its key, and the item it becomes if it is new.
pub struct SeenEntry<'a> {
    pub key: &'a str,
    pub item: Option<&'a NewItem>,
}

impl Store {
    /// Adds a feed; the same URL twice is a `Conflict`.
    pub async fn add_feed(&self, url: &str, now: Millis) -> StoreResult<FeedRow> {
        let mut conn = self.write_conn().await?;
        let id = new_id();
        let added = sqlx::query(
            "INSERT INTO feeds (id, url, consecutive_failures, created_at) VALUES ($1, $2, 0, $3)
             ON CONFLICT (url) DO NOTHING",
        )
        .bind(&id)
        .bind(url)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        drop(conn);
        if added.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "the feed {url} is already there"
            )));
        }
        self.feed(&id).await?.ok_or_else(|| not_found("feed", &id))
    }

    pub async fn feed(&self, id: &str) -> StoreResult<Option<FeedRow>> {
        Ok(
            sqlx::query_as(&format!("SELECT {FEED_COLUMNS} FROM feeds WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn list_feeds(&self) -> StoreResult<Vec<FeedRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {FEED_COLUMNS} FROM feeds ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Feeds never polled, or last polled at or before `polled_before`.
    pub async fn due_feeds(&self, polled_before: Millis) -> StoreResult<Vec<FeedRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {FEED_COLUMNS} FROM feeds
             WHERE last_polled_at IS NULL OR last_polled_at <= $1 ORDER BY created_at, id"
        ))
        .bind(polled_before)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Removes a feed and what was seen of it; the items it made stay.
    pub async fn delete_feed(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM feed_entries WHERE feed_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM feeds WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() == 0 {
            return Err(not_found("feed", id));
        }
        self.commit(tx).await
    }

    /// A poll that read the feed: each entry not seen before is recorded, and becomes a
    /// pending item when it has one and no item has its URL yet; the feed's state is reset
    /// to working. Returns how many items were made.
    pub async fn record_feed_read(
        &self,
        id: &str,
        title: Option<&str>,
        etag: Option<&str>,
        last_modified: Option<&str>,
        entries: &[SeenEntry<'_>],
        now: Millis,
    ) -> StoreResult<usize> {
        let mut tx = self.begin_write().await?;
        let mut made = 0;
        for e in entries {
            let item_id = e.item.map(|_| new_id());
            let seen = sqlx::query(
                "INSERT INTO feed_entries (feed_id, entry_key, item_id, seen_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (feed_id, entry_key) DO NOTHING",
            )
            .bind(id)
            .bind(e.key)
            .bind(item_id.as_deref())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let (Some(item), Some(item_id)) = (e.item, item_id) else {
                continue;
            };
            if seen.rows_affected() == 0 {
                continue;
            }
            let added = sqlx::query(
                "INSERT INTO items (id, title, url, summary, source, status, created_at)
                 SELECT $1, $2, $3, $4, $5, 'pending', $6
                 WHERE NOT EXISTS (SELECT 1 FROM items WHERE url = $3)",
            )
            .bind(&item_id)
            .bind(&item.title)
            .bind(&item.url)
            .bind(&item.summary)
            .bind(&item.source)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            made += added.rows_affected() as usize;
        }
        let updated = sqlx::query(
            "UPDATE feeds SET title = COALESCE($2, title), etag = $3, last_modified = $4,
                 last_polled_at = $5, last_success_at = $5, failing_since = NULL,
                 consecutive_failures = 0
             WHERE id = $1",
        )
        .bind(id)
        .bind(title)
        .bind(etag)
        .bind(last_modified)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            // Removed while it was being fetched: nothing of it is kept.
            return Err(not_found("feed", id));
        }
        self.commit(tx).await?;
        Ok(made)
    }

    /// A `304 Not Modified`: a success with nothing new.
    pub async fn record_feed_unchanged(&self, id: &str, now: Millis) -> StoreResult<()> {
        let mut conn = self.write_conn().await?;
        sqlx::query(
            "UPDATE feeds SET last_polled_at = $2, last_success_at = $2, failing_since = NULL,
                 consecutive_failures = 0
             WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// A poll that failed, and why.
    pub async fn record_feed_failure(&self, id: &str, error: &str, now: Millis) -> StoreResult<()> {
        let mut conn = self.write_conn().await?;
        sqlx::query(
            "UPDATE feeds SET last_polled_at = $2, last_error = $3, last_error_at = $2,
                 failing_since = COALESCE(failing_since, $2),
                 consecutive_failures = consecutive_failures + 1
             WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .bind(error)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
