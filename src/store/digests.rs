//! Items and digests: the editor's drafts, their state changes, and the fan-out that turns a
//! due digest into one delivery per confirmed subscriber.

use sqlx::{Any, AnyConnection, Transaction};

use super::{
    DigestRow, ItemRow, PerDialect, Store, StoreError, StoreResult, WaveRow, new_id, not_found,
    parse_col,
};
use crate::domain::clock::Millis;
use crate::domain::digest::{Change, DigestAction};
use crate::domain::{DigestStatus, ItemSelection, NewDigest, NewItem};

const DIGEST_BY_ID: &str = "SELECT id, subject, intro, status, paused_reason, send_at,
        daily_date, expires_at, recipients, started_at, finished_at, note, created_at,
        local_time, local_date, fanned_out_at,
        CASE WHEN fanned_out_at IS NOT NULL THEN 'complete'
             WHEN started_at IS NOT NULL THEN 'running' END AS fan_out,
        (SELECT COUNT(*) FROM digest_items di WHERE di.digest_id = digests.id) AS item_count
     FROM digests WHERE id = $1";

const LATEST_DIGESTS: &str = "SELECT id, subject, intro, status, paused_reason, send_at,
        daily_date, expires_at, recipients, started_at, finished_at, note, created_at,
        local_time, local_date, fanned_out_at,
        CASE WHEN fanned_out_at IS NOT NULL THEN 'complete'
             WHEN started_at IS NOT NULL THEN 'running' END AS fan_out,
        (SELECT COUNT(*) FROM digest_items di WHERE di.digest_id = digests.id) AS item_count
     FROM digests ORDER BY created_at DESC, id DESC LIMIT $1";

/// The archive's listing: the statuses `DigestStatus::in_archive` names, newest first.
const ARCHIVED_DIGESTS: &str = "SELECT id, subject, intro, status, paused_reason, send_at,
        daily_date, expires_at, recipients, started_at, finished_at, note, created_at,
        local_time, local_date, fanned_out_at,
        CASE WHEN fanned_out_at IS NOT NULL THEN 'complete'
             WHEN started_at IS NOT NULL THEN 'running' END AS fan_out,
        (SELECT COUNT(*) FROM digest_items di WHERE di.digest_id = digests.id) AS item_count
     FROM digests WHERE status IN ('sending', 'sent')
     ORDER BY COALESCE(started_at, created_at) DESC, id DESC LIMIT $1 OFFSET $2";

const DUE_DIGESTS: &str = "SELECT id, subject, intro, status, paused_reason, send_at,
        daily_date, expires_at, recipients, started_at, finished_at, note, created_at,
        local_time, local_date, fanned_out_at,
        CASE WHEN fanned_out_at IS NOT NULL THEN 'complete'
             WHEN started_at IS NOT NULL THEN 'running' END AS fan_out,
        (SELECT COUNT(*) FROM digest_items di WHERE di.digest_id = digests.id) AS item_count
     FROM digests WHERE status = 'scheduled' AND send_at <= $1 ORDER BY send_at";

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

/// One chunk of a fan-out: the confirmed subscribers after the cursor `$5` (in id order),
/// up to and including `$6` (the chunk's last id; the variant `FAN_OUT_LAST` has no upper
/// bound: the list's tail), one delivery each, never twice (`ON CONFLICT`). The ids are `$4`
/// (a fresh UUID v7 per chunk: later chunks sort after earlier ones) and a number growing in
/// the order the rows are inserted, so the primary key's index is appended to instead of
/// written on random pages (random keys made the fan-out to a million subscribers hold
/// SQLite's write lock 12 s instead of 5). On PostgreSQL the queue rows are written by the
/// same statement from what it inserted (`RETURNING`), instead of a second statement
/// re-reading the digest's deliveries; SQLite queues them by the chunk's id range
/// (`QUEUE_CHUNK`).
const FAN_OUT_CHUNK: PerDialect = PerDialect {
    sqlite: "INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
                 created_at, updated_at)
             SELECT $4 || '-' || printf('%012x', row_number() OVER (ORDER BY s.id)), 'digest',
                 s.id, $1, 'queued', $3, $2, $2
             FROM subscribers s WHERE s.status = 'confirmed' AND s.id > $5 AND s.id <= $6
             ON CONFLICT (digest_id, subscriber_id) DO NOTHING",
    postgres: "WITH made AS (
                 INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
                     created_at, updated_at)
                 SELECT $4 || '-' || lpad(to_hex(row_number() OVER (ORDER BY s.id)), 12, '0'),
                     'digest', s.id, $1, 'queued', $3, $2, $2
                 FROM subscribers s WHERE s.status = 'confirmed' AND s.id > $5 AND s.id <= $6
                 ON CONFLICT (digest_id, subscriber_id) DO NOTHING
                 RETURNING id)
             INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
             SELECT id, $1, $2 FROM made",
};

/// `FAN_OUT_CHUNK` for the last chunk: everyone after the cursor.
const FAN_OUT_LAST: PerDialect = PerDialect {
    sqlite: "INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
                 created_at, updated_at)
             SELECT $4 || '-' || printf('%012x', row_number() OVER (ORDER BY s.id)), 'digest',
                 s.id, $1, 'queued', $3, $2, $2
             FROM subscribers s WHERE s.status = 'confirmed' AND s.id > $5
             ON CONFLICT (digest_id, subscriber_id) DO NOTHING",
    postgres: "WITH made AS (
                 INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
                     created_at, updated_at)
                 SELECT $4 || '-' || lpad(to_hex(row_number() OVER (ORDER BY s.id)), 12, '0'),
                     'digest', s.id, $1, 'queued', $3, $2, $2
                 FROM subscribers s WHERE s.status = 'confirmed' AND s.id > $5
                 ON CONFLICT (digest_id, subscriber_id) DO NOTHING
                 RETURNING id)
             INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
             SELECT id, $1, $2 FROM made",
};

/// SQLite: the chunk just inserted goes into the queue, found by its ids (`$3 || '-'` up to
/// `$3 || '.'`, the next character: SQLite compares text bytewise), a range of the primary
/// key, not a re-read of the digest's deliveries.
const QUEUE_CHUNK: &str = "INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
     SELECT id, digest_id, $2 FROM deliveries
     WHERE id > $3 || '-' AND id < $3 || '.' AND digest_id = $1";

/// The last subscriber of the next chunk: the `$2`-th confirmed one after the cursor `$1`.
const CHUNK_END: &str = "SELECT id FROM subscribers WHERE status = 'confirmed' AND id > $1
     ORDER BY id LIMIT 1 OFFSET $2";

/// A running fan-out as `LOCK_FAN_OUT` reads it: status, cursor, expiry, start.
type FanOutState = (String, Option<String>, Option<Millis>, Option<Millis>);

const LOCK_FAN_OUT: PerDialect = PerDialect {
    sqlite: "SELECT status, fan_out_cursor, expires_at, started_at FROM digests
             WHERE id = $1 AND fanned_out_at IS NULL",
    postgres: "SELECT status, fan_out_cursor, expires_at, started_at FROM digests
             WHERE id = $1 AND fanned_out_at IS NULL FOR UPDATE",
};

/// The fan-out of a digest delivered at each subscriber's time: in one statement (not in
/// chunks: its deliveries are queued by wave, later), and each
/// delivery gets its subscriber's wave and that wave's expiry from a small list of the zones
/// subscribers stored (`$7, $8, $9, $10` and on: the stored name, its wave's zone, its expiry,
/// its due time; appended by `fan_out_waves`). A subscriber whose stored zone is not in the
/// list (none, or a name that is no zone) is in the list's zone's wave (`$5`, expiring at
/// `$3`, due at `$6`). A delivery's `created_at` is its wave's due time, when it is queued:
/// the start of its enqueue-to-sent latency, not the hours it waited for its zone's morning.
const FAN_OUT_WAVES: PerDialect = PerDialect {
    sqlite: "INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
                 created_at, updated_at, wave)
             SELECT $4 || '-' || printf('%012x', s.rowid), 'digest', s.id, $1, 'queued',
                 COALESCE(z.column3, $3), COALESCE(z.column4, $6), $2, COALESCE(z.column2, $5)
             FROM subscribers s LEFT JOIN (VALUES {zones}) z ON z.column1 = s.timezone
             WHERE s.status = 'confirmed'
             ON CONFLICT (digest_id, subscriber_id) DO NOTHING",
    postgres: "INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
                 created_at, updated_at, wave)
             SELECT $4 || '-' || lpad(to_hex(row_number() OVER ()), 12, '0'), 'digest', s.id, $1,
                 'queued', COALESCE(z.column3, $3), COALESCE(z.column4, $6), $2,
                 COALESCE(z.column2, $5)
             FROM subscribers s LEFT JOIN (VALUES {zones}) z ON z.column1 = s.timezone
             WHERE s.status = 'confirmed'
             ON CONFLICT (digest_id, subscriber_id) DO NOTHING",
};

/// One zone's wave as the scheduler planned it: when its deliveries are due and give up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWave {
    pub timezone: String,
    pub due_at: Millis,
    pub expires_at: Millis,
}

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

    /// A digest's waves, earliest first, with how many of each were sent.
    pub async fn waves(&self, id: &str) -> StoreResult<Vec<WaveRow>> {
        let rows: Vec<(String, Millis, i64, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT w.timezone, w.due_at, w.recipients, w.state, w.note,
                 (SELECT COUNT(*) FROM deliveries d
                  WHERE d.digest_id = w.digest_id AND d.wave = w.timezone AND d.status = 'sent')
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
        Ok((tx, change))
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
        Ok(())
    }

    /// Before sending only; its items become pending again. A digest delivered at each
    /// subscriber's time that is already sending has its waves not yet due cancelled instead
    /// (`cancel_waiting_waves`).
    pub async fn cancel_digest(&self, id: &str, now: Millis) -> StoreResult<()> {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM digest_waves WHERE digest_id = $1 AND state = 'waiting'",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        if waiting > 0 {
            return self.cancel_waiting_waves(id, now).await;
        }
        let Some((mut tx, to)) = self.begin_change(id, DigestAction::Cancel).await? else {
            return Ok(());
        };
        sqlx::query("UPDATE digests SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(to.as_str())
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE items SET status = 'pending', digest_id = NULL WHERE digest_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM digest_items WHERE digest_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// The waves not yet due of a sending (or paused) digest are cancelled: their deliveries
    /// are suppressed, never queued; the waves already queued or sent are kept.
    async fn cancel_waiting_waves(&self, id: &str, now: Millis) -> StoreResult<()> {
        let Some((mut tx, _)) = self.begin_change(id, DigestAction::CancelWaves).await? else {
            return Ok(());
        };
        let note = "cancelled by an editor before its wave's time";
        sqlx::query(
            "UPDATE deliveries SET status = 'suppressed', last_error = $3, updated_at = $2
             WHERE digest_id = $1 AND status = 'queued' AND wave IN
                 (SELECT timezone FROM digest_waves WHERE digest_id = $1 AND state = 'waiting')",
        )
        .bind(id)
        .bind(now)
        .bind(note)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE digest_waves SET state = 'cancelled', note = $2
             WHERE digest_id = $1 AND state = 'waiting'",
        )
        .bind(id)
        .bind(note)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE digests SET updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
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
        Ok(())
    }

    /// Scheduled digests whose time has come.
    pub async fn due_digests(&self, now: Millis) -> StoreResult<Vec<DigestRow>> {
        Ok(sqlx::query_as(DUE_DIGESTS)
            .bind(now)
            .fetch_all(&self.pool)
            .await?)
    }
}

impl Store {
    /// Fan-out, in chunks of `chunk` subscribers: the first chunk's transaction moves the
    /// digest to `sending`, and each chunk commits on its own (its deliveries, their queue
    /// rows, `recipients` and the cursor together), so workers send the first while the rest
    /// is written. Returns the deliveries made, `None` if the digest was no longer `scheduled`
    /// (another scheduler got there first). Cut short (a crash, an error), the fan-out is
    /// continued from its cursor by `continue_fan_out`.
    pub async fn fan_out(
        &self,
        id: &str,
        expires_at: Millis,
        now: Millis,
        chunk: u32,
    ) -> StoreResult<Option<u64>> {
        let Some((first, done)) = self.start_fan_out(id, expires_at, now, chunk).await? else {
            return Ok(None);
        };
        let rest = if done {
            0
        } else {
            self.continue_fan_out(id, now, chunk).await?
        };
        Ok(Some(first + rest))
    }

    /// `scheduled` -> `sending` and the first chunk, in one transaction: the deliveries made
    /// and whether the fan-out is complete; `None` if the digest was no longer `scheduled`.
    pub async fn start_fan_out(
        &self,
        id: &str,
        expires_at: Millis,
        now: Millis,
        chunk: u32,
    ) -> StoreResult<Option<(u64, bool)>> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE digests SET status = 'sending', started_at = $2, expires_at = $3,
                 updated_at = $2, recipients = 0, fan_out_cursor = '', fanned_out_at = NULL
             WHERE id = $1 AND status = 'scheduled'",
        )
        .bind(id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(None);
        }
        let (made, done) = self
            .fan_out_chunk_in(&mut tx, id, "", expires_at, now, chunk)
            .await?;
        self.commit(tx).await?;
        self.refresh_queue_statistics().await;
        Ok(Some((made, done)))
    }

    /// The chunks after the cursor until the fan-out is complete, each its own transaction
    /// (on SQLite its own turn of the writer, so sign-ups and outcomes go in between): the
    /// deliveries made. Stops when the digest is no longer `sending` or `paused` (a paused
    /// digest's fan-out goes on: the claim skips its mail until it resumes).
    pub async fn continue_fan_out(&self, id: &str, now: Millis, chunk: u32) -> StoreResult<u64> {
        let mut made = 0;
        let mut chunks = 0u32;
        while let Some((n, done)) = self.fan_out_next_chunk(id, now, chunk).await? {
            made += n;
            chunks += 1;
            // The planner learns the queue grew after the first chunk and again now and then.
            if chunks.is_power_of_two() {
                self.refresh_queue_statistics().await;
            }
            if done {
                break;
            }
        }
        self.refresh_queue_statistics().await;
        Ok(made)
    }

    /// One chunk after the cursor, in its own transaction: the deliveries made and whether
    /// the fan-out is now complete; `None` when there is nothing to do (the fan-out was
    /// complete, or the digest is no longer `sending` or `paused`).
    pub async fn fan_out_next_chunk(
        &self,
        id: &str,
        now: Millis,
        chunk: u32,
    ) -> StoreResult<Option<(u64, bool)>> {
        let mut tx = self.begin_write().await?;
        let row: Option<FanOutState> = sqlx::query_as(self.sql(&LOCK_FAN_OUT))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((status, Some(cursor), expires_at, Some(_started))) = row else {
            return Ok(None);
        };
        if !matches!(
            parse_col::<DigestStatus>(&status)?,
            DigestStatus::Sending | DigestStatus::Paused
        ) {
            return Ok(None);
        }
        let expires_at = expires_at.unwrap_or(now);
        let made = self
            .fan_out_chunk_in(&mut tx, id, &cursor, expires_at, now, chunk)
            .await?;
        self.commit(tx).await?;
        Ok(Some(made))
    }

    /// Digests whose fan-out started and is not complete (a process stopped in the middle):
    /// the scheduler continues them.
    pub async fn unfinished_fan_outs(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM digests WHERE fanned_out_at IS NULL AND fan_out_cursor IS NOT NULL
                 AND status IN ('sending', 'paused')
             ORDER BY started_at, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The chunk after `cursor` in `tx`: its deliveries and queue rows, `recipients` and
    /// the cursor moved on (or the fan-out marked complete), a wake-up for the workers.
    async fn fan_out_chunk_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        cursor: &str,
        expires_at: Millis,
        now: Millis,
        chunk: u32,
    ) -> StoreResult<(u64, bool)> {
        let end: Option<String> = sqlx::query_scalar(CHUNK_END)
            .bind(cursor)
            .bind(i64::from(chunk.max(1) - 1))
            .fetch_optional(&mut **tx)
            .await?;
        let prefix = new_id();
        let sql = self.sql(if end.is_some() {
            &FAN_OUT_CHUNK
        } else {
            &FAN_OUT_LAST
        });
        let mut insert = sqlx::query(sql)
            .bind(id)
            .bind(now)
            .bind(expires_at)
            .bind(&prefix)
            .bind(cursor);
        if let Some(end) = &end {
            insert = insert.bind(end);
        }
        let made = insert.execute(&mut **tx).await?.rows_affected();
        if self.dialect == super::Dialect::Sqlite {
            sqlx::query(QUEUE_CHUNK)
                .bind(id)
                .bind(now)
                .bind(&prefix)
                .execute(&mut **tx)
                .await?;
        }
        let done = end.is_none();
        // When the last chunk committed, by the wall clock (a tick's `now` may be earlier):
        // what the first deliveries' `sent_at` are measured against.
        let complete_at = done.then(|| now.max(crate::domain::clock::now_ms()));
        sqlx::query(
            "UPDATE digests SET recipients = COALESCE(recipients, 0) + $2, fan_out_cursor = $3,
                 fanned_out_at = $4
             WHERE id = $1",
        )
        .bind(id)
        .bind(i64::try_from(made).unwrap_or(i64::MAX))
        .bind(end.as_deref().unwrap_or(cursor))
        .bind(complete_at)
        .execute(&mut **tx)
        .await?;
        if made > 0 {
            self.notify_work(tx).await?;
        }
        Ok((made, done))
    }

    /// Fan-out of a digest delivered at each subscriber's time: in one set-based statement,
    /// one delivery per confirmed subscriber (unique per digest and subscriber) in the wave of
    /// their zone (`members`: a stored zone name and the zone of its wave in `waves`; everyone
    /// else goes in the wave of the list's zone `list_zone`), and a row per wave, `waiting`:
    /// nothing is queued yet, each wave is queued at its due time by `open_wave`. `None` if
    /// the digest was no longer `scheduled`.
    pub async fn fan_out_waves(
        &self,
        id: &str,
        list_zone: &str,
        waves: &[PlannedWave],
        members: &[(String, String)],
        now: Millis,
    ) -> StoreResult<Option<u64>> {
        let list_wave = waves.iter().find(|w| w.timezone == list_zone);
        let list_expiry = list_wave.map_or(now, |w| w.expires_at);
        let list_due = list_wave.map_or(now, |w| w.due_at);
        let last_expiry = waves.iter().map(|w| w.expires_at).max().unwrap_or(now);
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE digests SET status = 'sending', started_at = $2, expires_at = $3,
                 updated_at = $2
             WHERE id = $1 AND status = 'scheduled'",
        )
        .bind(id)
        .bind(now)
        .bind(last_expiry)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(None);
        }
        // The zone list: the first six parameters are the statement's own.
        let wave_of = |zone: &str| {
            waves
                .iter()
                .find(|w| w.timezone == zone)
                .map_or((list_expiry, list_due), |w| (w.expires_at, w.due_at))
        };
        let mut rows: Vec<(&str, &str)> = members
            .iter()
            .map(|(stored, wave)| (stored.as_str(), wave.as_str()))
            .collect();
        if rows.is_empty() {
            rows.push((list_zone, list_zone));
        }
        let zones = (0..rows.len())
            .map(|i| {
                let p = 7 + 4 * i;
                format!("(${p}, ${}, ${}, ${})", p + 1, p + 2, p + 3)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = self.sql(&FAN_OUT_WAVES).replace("{zones}", &zones);
        let mut insert = sqlx::query(&sql)
            .bind(id)
            .bind(now)
            .bind(list_expiry)
            .bind(new_id())
            .bind(list_zone)
            .bind(list_due);
        for (stored, wave) in rows {
            let (expires_at, due_at) = wave_of(wave);
            insert = insert.bind(stored).bind(wave).bind(expires_at).bind(due_at);
        }
        let inserted = insert.execute(&mut *tx).await?.rows_affected();
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT wave, COUNT(*) FROM deliveries WHERE digest_id = $1 GROUP BY wave",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        for (zone, recipients) in counts {
            let due = waves
                .iter()
                .find(|w| w.timezone == zone)
                .map_or(now, |w| w.due_at);
            sqlx::query(
                "INSERT INTO digest_waves (digest_id, timezone, due_at, recipients, state)
                 VALUES ($1, $2, $3, $4, 'waiting')",
            )
            .bind(id)
            .bind(&zone)
            .bind(due)
            .bind(recipients)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE digests SET recipients = $2, fan_out_cursor = '', fanned_out_at = $3
             WHERE id = $1",
        )
        .bind(id)
        .bind(i64::try_from(inserted).unwrap_or(i64::MAX))
        .bind(now.max(crate::domain::clock::now_ms()))
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(Some(inserted))
    }

    /// Waves still waiting whose time has come (due at or before `now`), earliest first:
    /// (digest, zone, due at).
    pub async fn due_waves(&self, now: Millis) -> StoreResult<Vec<(String, String, Millis)>> {
        Ok(sqlx::query_as(
            "SELECT digest_id, timezone, due_at FROM digest_waves
             WHERE state = 'waiting' AND due_at <= $1 ORDER BY due_at, timezone",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A waiting wave's deliveries go into the queue, due at `due_at`: how many, or `None`
    /// if the wave was no longer waiting (another scheduler got there first). A digest paused
    /// meanwhile keeps them queued until it resumes (the claim skips paused digests).
    pub async fn open_wave(
        &self,
        id: &str,
        zone: &str,
        due_at: Millis,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE digest_waves SET state = 'open'
             WHERE digest_id = $1 AND timezone = $2 AND state = 'waiting'",
        )
        .bind(id)
        .bind(zone)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(None);
        }
        let queued = sqlx::query(
            "INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
             SELECT id, digest_id, $3 FROM deliveries
             WHERE digest_id = $1 AND wave = $2 AND status = 'queued'
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(id)
        .bind(zone)
        .bind(due_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.notify_work(&mut tx).await?;
        self.commit(tx).await?;
        self.refresh_queue_statistics().await;
        Ok(Some(queued))
    }

    /// A waiting wave seen only beyond the grace window is not sent late: it is `missed`
    /// and its deliveries fail with `note`; `None` if it was no longer waiting.
    pub async fn miss_wave(
        &self,
        id: &str,
        zone: &str,
        note: &str,
        now: Millis,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE digest_waves SET state = 'missed', note = $3
             WHERE digest_id = $1 AND timezone = $2 AND state = 'waiting'",
        )
        .bind(id)
        .bind(zone)
        .bind(note)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(None);
        }
        let failed = sqlx::query(
            "UPDATE deliveries SET status = 'failed', failed_at = $3, last_error = $4,
                 updated_at = $3
             WHERE digest_id = $1 AND wave = $2 AND status = 'queued'",
        )
        .bind(id)
        .bind(zone)
        .bind(now)
        .bind(note)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.commit(tx).await?;
        Ok(Some(failed))
    }

    /// PostgreSQL: a fan-out grows the queue from nothing to the whole list at once, and until
    /// autovacuum gets round to it (a minute or more) the planner believes the table still
    /// holds the few rows it had. On those statistics it planned each claim as "read every
    /// queued row and sort them" (120 ms and a 5 MB on-disk sort per claim at 100,000) instead
    /// of reading the first rows of the `run_at` index (6 ms). Best effort: without it the
    /// claims are slower, not wrong.
    async fn refresh_queue_statistics(&self) {
        if self.dialect == super::Dialect::Postgres
            && let Err(e) = sqlx::query("ANALYZE delivery_queue")
                .execute(&self.pool)
                .await
        {
            tracing::warn!(error = %e, "could not refresh the queue's statistics after a fan-out");
        }
    }

    /// A scheduled digest whose time passed while nothing ran becomes `missed`; false if it
    /// was no longer scheduled.
    pub async fn mark_missed(&self, id: &str, note: &str, now: Millis) -> StoreResult<bool> {
        let mut conn = self.write_conn().await?;
        let done = sqlx::query(
            "UPDATE digests SET status = 'missed', note = $1, updated_at = $2
             WHERE id = $3 AND status = 'scheduled'",
        )
        .bind(note)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// `sending` digests whose fan-out is complete with nothing left queued, on the wire or
    /// waiting in a wave become `sent` (`missed` when every wave of theirs was missed).
    pub async fn finish_digests(&self, now: Millis) -> StoreResult<Vec<String>> {
        let mut conn = self.write_conn().await?;
        Ok(sqlx::query_scalar(
            "UPDATE digests SET finished_at = $1, updated_at = $1,
                 status = CASE WHEN EXISTS
                         (SELECT 1 FROM digest_waves w WHERE w.digest_id = digests.id)
                     AND NOT EXISTS (SELECT 1 FROM digest_waves w
                         WHERE w.digest_id = digests.id AND w.state <> 'missed')
                     THEN 'missed' ELSE 'sent' END
             WHERE status = 'sending' AND fanned_out_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM delivery_queue q WHERE q.digest_id = digests.id)
               AND NOT EXISTS (SELECT 1 FROM claim_digests c WHERE c.digest_id = digests.id)
               AND NOT EXISTS (SELECT 1 FROM digest_waves w
                   WHERE w.digest_id = digests.id AND w.state = 'waiting')
             RETURNING id",
        )
        .bind(now)
        .fetch_all(&mut *conn)
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
            ("FAN_OUT_CHUNK", FAN_OUT_CHUNK),
            ("FAN_OUT_LAST", FAN_OUT_LAST),
            ("LOCK_FAN_OUT", LOCK_FAN_OUT),
            ("FAN_OUT_WAVES", FAN_OUT_WAVES),
        ]);
    }
}
