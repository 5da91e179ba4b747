//! Items and digests: the editor's drafts and their state changes (the fan-out that turns a
//! due digest into deliveries is in `fan_out`).

use sqlx::{Any, AnyConnection, Transaction};

use super::{
    DigestRow, ItemRow, PerDialect, Store, StoreError, StoreResult, WaveRow, new_id, not_found,
    parse_col,
};
use crate::domain::clock::Millis;
use crate::domain::digest::{CANCELLED, Change, DigestAction};
use crate::domain::{DigestStatus, ItemSelection, NewDigest, NewItem};

const DIGEST_BY_ID: &str = "SELECT id, subject, intro, status, paused_reason, send_at,
        daily_date, expires_at, recipients, started_at, finished_at, note, created_at,
        local_time, local_date, fanned_out_at,
        CASE WHEN fanned_out_at IS NOT NULL THEN 'complete'
             WHEN started_at IS NOT NULL AND status = 'cancelled' THEN 'stopped'
             WHEN started_at IS NOT NULL THEN 'running' END AS fan_out,
        (SELECT COUNT(*) FROM digest_items di WHERE di.digest_id = digests.id) AS item_count
     FROM digests WHERE id = $1";

const LATEST_DIGESTS: &str = "SELECT id, subject, intro, status, paused_reason, send_at,
        daily_date, expires_at, recipients, started_at, finished_at, note, created_at,
        local_time, local_date, fanned_out_at,
        CASE WHEN fanned_out_at IS NOT NULL THEN 'complete'
             WHEN started_at IS NOT NULL AND status = 'cancelled' THEN 'stopped'
             WHEN started_at IS NOT NULL THEN 'running' END AS fan_out,
        (SELECT COUNT(*) FROM digest_items di WHERE di.digest_id = digests.id) AS item_count
     FROM digests ORDER BY created_at DESC, id DESC LIMIT $1";

/// The archive's listing: the statuses `DigestStatus::in_archive` names, newest first.
const ARCHIVED_DIGESTS: &str = "SELECT id, subject, intro, status, paused_reason, send_at,
        daily_date, expires_at, recipients, started_at, finished_at, note, created_at,
        local_time, local_date, fanned_out_at,
        CASE WHEN fanned_out_at IS NOT NULL THEN 'complete'
             WHEN started_at IS NOT NULL AND status = 'cancelled' THEN 'stopped'
             WHEN started_at IS NOT NULL THEN 'running' END AS fan_out,
        (SELECT COUNT(*) FROM digest_items di WHERE di.digest_id = digests.id) AS item_count
     FROM digests WHERE status IN ('sending', 'sent')
     ORDER BY COALESCE(started_at, created_at) DESC, id DESC LIMIT $1 OFFSET $2";

const DUE_DIGESTS: &str = "SELECT id, subject, intro, status, paused_reason, send_at,
        daily_date, expires_at, recipients, started_at, finished_at, note, created_at,
        local_time, local_date, fanned_out_at,
        CASE WHEN fanned_out_at IS NOT NULL THEN 'complete'
             WHEN started_at IS NOT NULL AND status = 'cancelled' THEN 'stopped'
             WHEN started_at IS NOT NULL THEN 'running' END AS fan_out,
        (SELECT COUNT(*) FROM digest_items di WHERE di.digest_id = digests.id) AS item_count
     FROM digests WHERE status = 'scheduled' AND send_at <= $1 ORDER BY send_at";

/// The next due time after `$1` of `DUE_DIGESTS` and of `due_waves`' statement.
const NEXT_DUE: &str = "SELECT MIN(due) FROM (
         SELECT MIN(send_at) AS due FROM digests WHERE status = 'scheduled' AND send_at > $1
         UNION ALL
         SELECT MIN(due_at) FROM digest_waves WHERE state = 'waiting' AND due_at > $1) AS next";

const LOCK_ITEM_STATUS: PerDialect = PerDialect {
    sqlite: "SELECT status FROM items WHERE id = $1",
    postgres: "SELECT status FROM items WHERE id = $1 FOR UPDATE",
};

const LOCK_PENDING_ITEMS: PerDialect = PerDialect {
    sqlite: "SELECT id FROM items WHERE status = 'pending' ORDER BY created_at, id LIMIT 100",
    postgres: "SELECT id FROM items WHERE status = 'pending' ORDER BY created_at, id LIMIT 100 FOR UPDATE",
};

const LOCK_DIGEST_STATE: PerDialect = PerDialect {
    sqlite: "SELECT status, paused_from FROM digests WHERE id = $1",
    postgres: "SELECT status, paused_from FROM digests WHERE id = $1 FOR UPDATE",
};

impl Store {
    pub async fn add_item(&self, item: &NewItem, now: Millis) -> StoreResult<ItemRow> {
        let mut conn = self.write_conn().await?;
        let id = new_id();
        sqlx::query(
            "INSERT INTO items (id, title, url, summary, source, status, created_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6)",
        )
        .bind(&id)
        .bind(&item.title)
        .bind(&item.url)
        .bind(&item.summary)
        .bind(&item.source)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(ItemRow {
            id,
            title: item.title.clone(),
            url: item.url.clone(),
            summary: item.summary.clone(),
            source: item.source.clone(),
            status: "pending".into(),
            digest_id: None,
            created_at: now,
        })
    }

    pub async fn list_items(&self, status: Option<&str>) -> StoreResult<Vec<ItemRow>> {
        Ok(sqlx::query_as(
            "SELECT id, title, url, summary, source, status, digest_id, created_at FROM items
             WHERE $1 IS NULL OR status = $1 ORDER BY created_at, id LIMIT 1000",
        )
        .bind(status)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Locks an item that must still be pending; `NotFound`, or `Conflict` with `why_not`.
    async fn lock_pending_item(
        &self,
        tx: &mut AnyConnection,
        id: &str,
        why_not: &str,
    ) -> StoreResult<()> {
        let status: Option<String> = sqlx::query_scalar(self.sql(&LOCK_ITEM_STATUS))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        match status.as_deref() {
            None => Err(not_found("item", id)),
            Some("pending") => Ok(()),
            Some(_) => Err(StoreError::Conflict(format!("item {id} {why_not}"))),
        }
    }

    /// Deletes a pending item; one already in a digest is kept (`Conflict`).
    pub async fn delete_item(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        self.lock_pending_item(&mut tx, id, "is part of a digest; cancel that digest first")
            .await?;
        sqlx::query("DELETE FROM items WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Rewrites a pending item; one already in a digest is kept as it was (`Conflict`).
    pub async fn update_item(&self, id: &str, item: &NewItem) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        self.lock_pending_item(&mut tx, id, "is part of a digest; cancel that digest first")
            .await?;
        sqlx::query(
            "UPDATE items SET title = $1, url = $2, summary = $3, source = $4 WHERE id = $5",
        )
        .bind(&item.title)
        .bind(&item.url)
        .bind(&item.summary)
        .bind(&item.source)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Creates a draft from pending items (named, or all of them), marking them used.
    /// `daily_date` makes it the daily digest of that local date (at most one per date).
    pub async fn create_digest(
        &self,
        d: &NewDigest,
        daily_date: Option<&str>,
        now: Millis,
    ) -> StoreResult<DigestRow> {
        let mut tx = self.begin_write().await?;
        let item_ids: Vec<String> = match &d.items {
            ItemSelection::Pending => {
                sqlx::query_scalar(self.sql(&LOCK_PENDING_ITEMS))
                    .fetch_all(&mut *tx)
                    .await?
            }
            ItemSelection::Ids(ids) => {
                for id in ids {
                    self.lock_pending_item(&mut tx, id, "is already part of another digest")
                        .await?;
                }
                let mut seen = std::collections::HashSet::new();
                ids.iter().filter(|i| seen.insert(*i)).cloned().collect()
            }
        };
        if item_ids.is_empty() {
            return Err(StoreError::Conflict("there are no pending items".into()));
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO digests (id, subject, intro, status, daily_date, created_at, updated_at)
             VALUES ($1, $2, $3, 'draft', $4, $5, $6)",
        )
        .bind(&id)
        .bind(&d.subject)
        .bind(&d.intro)
        .bind(daily_date)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (position, item) in item_ids.iter().enumerate() {
            sqlx::query(
                "INSERT INTO digest_items (digest_id, item_id, position) VALUES ($1, $2, $3)",
            )
            .bind(&id)
            .bind(item)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE items SET status = 'used', digest_id = $1 WHERE id = $2")
                .bind(&id)
                .bind(item)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        self.digest(&id)
            .await?
            .ok_or_else(|| not_found("digest", &id))
    }

    /// A digest with its items.
    pub async fn digest(&self, id: &str) -> StoreResult<Option<DigestRow>> {
        let digest: Option<DigestRow> = sqlx::query_as(DIGEST_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(mut digest) = digest else {
            return Ok(None);
        };
        digest.items = sqlx::query_as(
            "SELECT i.id, i.title, i.url, i.summary, i.source, i.status, i.digest_id, i.created_at
             FROM digest_items di JOIN items i ON i.id = di.item_id
             WHERE di.digest_id = $1 ORDER BY di.position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        digest.waves = self.waves(id).await?;
        Ok(Some(digest))
    }

    /// A digest's waves, earliest first, with how many of each were sent (counted in the
    /// roll-up once the digest has one: `digest_waves.sent`).
    pub async fn waves(&self, id: &str) -> StoreResult<Vec<WaveRow>> {
        let rows: Vec<(String, Millis, i64, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT w.timezone, w.due_at, w.recipients, w.state, w.note,
                 COALESCE(w.sent, (SELECT COUNT(*) FROM deliveries d
                  WHERE d.digest_id = w.digest_id AND d.wave = w.timezone AND d.status = 'sent'))
             FROM digest_waves w WHERE w.digest_id = $1 ORDER BY w.due_at, w.timezone",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(tz, due, recipients, state, note, sent)| {
                WaveRow::new(tz, due, recipients, sent, state, note)
            })
            .collect())
    }

    /// The distinct zones confirmed subscribers stored (`None`: the list's), for planning
    /// waves.
    pub async fn subscriber_zones(&self) -> StoreResult<Vec<Option<String>>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT timezone FROM subscribers WHERE status = 'confirmed'",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn list_digests(&self, limit: u32) -> StoreResult<Vec<DigestRow>> {
        Ok(sqlx::query_as(LATEST_DIGESTS)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    /// Digests in the public archive, newest first: `limit` of them after skipping `offset`.
    pub async fn archived_digests(&self, limit: u32, offset: u64) -> StoreResult<Vec<DigestRow>> {
        Ok(sqlx::query_as(ARCHIVED_DIGESTS)
            .bind(i64::from(limit))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?)
    }

    /// A digest's status alone (cheaper than `digest`, which loads its items).
    pub async fn digest_status(&self, id: &str) -> StoreResult<Option<DigestStatus>> {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM digests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        status.as_deref().map(parse_col).transpose()
    }

    /// Opens a write transaction, reads the digest's state in it (locked on PostgreSQL;
    /// SQLite's `BEGIN IMMEDIATE` already holds the write lock) and asks the domain's one rule
    /// what `action` does: the transaction and the status to move to, `None` when it was done
    /// already (nothing to write), `NotFound`, or `Conflict` saying why not.
    async fn begin_change(
        &self,
        id: &str,
        action: DigestAction,
    ) -> StoreResult<Option<(Transaction<'static, Any>, DigestStatus)>> {
        match self.begin_allowed(id, action).await? {
            (tx, Change::To(to)) => Ok(Some((tx, to))),
            (_, Change::Unchanged) => Ok(None),
        }
    }

    /// The same rule asked for an action that keeps the digest's status (editing a draft,
    /// sending a test): the transaction, with the digest locked, and what the rule said.
    pub(super) async fn begin_allowed(
        &self,
        id: &str,
        action: DigestAction,
    ) -> StoreResult<(Transaction<'static, Any>, Change)> {
        let (tx, _, change) = self.begin_decided(id, action).await?;
        Ok((tx, change))
    }

    /// `begin_allowed`, and the digest's state it was asked of: its status and, paused,
    /// what it was paused from.
    async fn begin_decided(
        &self,
        id: &str,
        action: DigestAction,
    ) -> StoreResult<(
        Transaction<'static, Any>,
        (DigestStatus, Option<DigestStatus>),
        Change,
    )> {
        let mut tx = self.begin_write().await?;
        let row: Option<(String, Option<String>)> = sqlx::query_as(self.sql(&LOCK_DIGEST_STATE))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((status, paused_from)) = row else {
            return Err(not_found("digest", id));
        };
        let status: DigestStatus = parse_col(&status)?;
        let paused_from = paused_from.as_deref().map(parse_col).transpose()?;
        let change = status
            .decide(action, paused_from)
            .map_err(|why| StoreError::Conflict(format!("digest {id} is {why}")))?;
        Ok((tx, (status, paused_from), change))
    }

    /// Rewrites a draft: its subject, introduction and items, in the order given. Items it
    /// drops become pending again; items it gains must be pending (`Conflict` otherwise) and
    /// become used. Only while it is a draft (`DigestAction::Edit`).
    pub async fn edit_digest(&self, id: &str, d: &NewDigest, now: Millis) -> StoreResult<()> {
        let (mut tx, _) = self.begin_allowed(id, DigestAction::Edit).await?;
        let ids: Vec<String> = match &d.items {
            ItemSelection::Ids(ids) => {
                let mut seen = std::collections::HashSet::new();
                ids.iter().filter(|i| seen.insert(*i)).cloned().collect()
            }
            ItemSelection::Pending => {
                return Err(StoreError::Conflict(
                    "an edit names its items; \"pending\" is only for a new digest".into(),
                ));
            }
        };
        let current: Vec<String> =
            sqlx::query_scalar("SELECT item_id FROM digest_items WHERE digest_id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        for item in ids.iter().filter(|i| !current.contains(i)) {
            self.lock_pending_item(&mut tx, item, "is already part of another digest")
                .await?;
        }
        sqlx::query("UPDATE digests SET subject = $1, intro = $2, updated_at = $3 WHERE id = $4")
            .bind(&d.subject)
            .bind(&d.intro)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM digest_items WHERE digest_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for item in current.iter().filter(|i| !ids.contains(i)) {
            sqlx::query("UPDATE items SET status = 'pending', digest_id = NULL WHERE id = $1")
                .bind(item)
                .execute(&mut *tx)
                .await?;
        }
        for (position, item) in ids.iter().enumerate() {
            sqlx::query(
                "INSERT INTO digest_items (digest_id, item_id, position) VALUES ($1, $2, $3)",
            )
            .bind(id)
            .bind(item)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE items SET status = 'used', digest_id = $1 WHERE id = $2")
                .bind(id)
                .bind(item)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        Ok(())
    }

    /// `draft` or `scheduled` -> `scheduled` at `send_at`, for everyone at that moment.
    pub async fn schedule_digest(&self, id: &str, send_at: Millis, now: Millis) -> StoreResult<()> {
        self.schedule_digest_at(id, send_at, None, now).await
    }

    /// `draft` or `scheduled` -> `scheduled`, delivered at `time` (HH:MM) on `date` in each
    /// subscriber's zone; it fans out at `send_at`, the first wave.
    pub async fn schedule_digest_waves(
        &self,
        id: &str,
        send_at: Millis,
        date: &str,
        time: &str,
        now: Millis,
    ) -> StoreResult<()> {
        self.schedule_digest_at(id, send_at, Some((date, time)), now)
            .await
    }

    async fn schedule_digest_at(
        &self,
        id: &str,
        send_at: Millis,
        local: Option<(&str, &str)>,
        now: Millis,
    ) -> StoreResult<()> {
        let Some((mut tx, to)) = self.begin_change(id, DigestAction::Schedule).await? else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE digests SET status = $1, send_at = $2, updated_at = $3, local_date = $5,
                 local_time = $6
             WHERE id = $4",
        )
        .bind(to.as_str())
        .bind(send_at)
        .bind(now)
        .bind(id)
        .bind(local.map(|l| l.0))
        .bind(local.map(|l| l.1))
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        self.schedule_wake.notify_one();
        Ok(())
    }

    /// -> `cancelled` (idempotent), in one transaction. Before it went out, its items become
    /// pending again. Once it went out (`sending`, or paused while sending), it stops: its
    /// fan-out writes no further chunk (each chunk reads the status under the digest's lock),
    /// every delivery still queued (or waiting for its wave) is suppressed with the reason
    /// and leaves the queue, its waves not yet opened are cancelled; what was sent stays sent
    /// and counted, and its items stay its own. A delivery already claimed is suppressed by
    /// the worker's re-check before sending.
    pub async fn cancel_digest(&self, id: &str, now: Millis) -> StoreResult<()> {
        let (mut tx, (from, paused_from), change) =
            self.begin_decided(id, DigestAction::Cancel).await?;
        let Change::To(to) = change else {
            return Ok(());
        };
        sqlx::query("UPDATE digests SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(to.as_str())
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if from.cancel_gives_items_back(paused_from) {
            sqlx::query(
                "UPDATE items SET status = 'pending', digest_id = NULL WHERE digest_id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM digest_items WHERE digest_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for queue in [
            "DELETE FROM delivery_queue WHERE digest_id = $1",
            "DELETE FROM queued_chunks WHERE digest_id = $1",
        ] {
            sqlx::query(queue).bind(id).execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE deliveries SET status = 'suppressed', last_error = $3, updated_at = $2
             WHERE digest_id = $1 AND status = 'queued'",
        )
        .bind(id)
        .bind(now)
        .bind(CANCELLED)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE digest_waves SET state = 'cancelled', note = $2
             WHERE digest_id = $1 AND state = 'waiting'",
        )
        .bind(id)
        .bind(CANCELLED)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// `scheduled` or `sending` -> `paused` (idempotent): workers stop claiming its mail.
    pub async fn pause_digest(&self, id: &str, reason: &str, now: Millis) -> StoreResult<()> {
        let Some((mut tx, to)) = self.begin_change(id, DigestAction::Pause).await? else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE digests SET paused_from = status, status = $1, paused_reason = $2,
                 updated_at = $3
             WHERE id = $4",
        )
        .bind(to.as_str())
        .bind(reason)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// `paused` -> whatever it was before (idempotent for a digest that is not paused).
    pub async fn resume_digest(&self, id: &str, now: Millis) -> StoreResult<()> {
        let Some((mut tx, to)) = self.begin_change(id, DigestAction::Resume).await? else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE digests SET status = $1, paused_from = NULL, updated_at = $2 WHERE id = $3",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        // Resumed to `scheduled`, it may be due already; resumed to `sending`, its queued
        // mail is claimable again (idle workers look again only now and then: `idle_wait`).
        self.schedule_wake.notify_one();
        self.work_queued();
        Ok(())
    }

    /// Scheduled digests whose time has come.
    pub async fn due_digests(&self, now: Millis) -> StoreResult<Vec<DigestRow>> {
        Ok(sqlx::query_as(DUE_DIGESTS)
            .bind(now)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The earliest time after `after` at which a scheduled digest (`due_digests`) or a
    /// waiting wave (`due_waves`) falls due, if any: the scheduler sleeps until then when it
    /// is sooner than its tick. What is due at or before `after` is the tick's business, not
    /// a reason to wake again.
    pub async fn next_due_digest_or_wave(&self, after: Millis) -> StoreResult<Option<Millis>> {
        Ok(sqlx::query_scalar(NEXT_DUE)
            .bind(after)
            .fetch_one(&self.pool)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_statements_are_written_for_each_backend() {
        super::super::tests::assert_dialects(&[
            ("LOCK_ITEM_STATUS", LOCK_ITEM_STATUS),
            ("LOCK_PENDING_ITEMS", LOCK_PENDING_ITEMS),
            ("LOCK_DIGEST_STATE", LOCK_DIGEST_STATE),
        ]);
    }
}
