//! The fan-out: a due digest becomes one delivery per confirmed subscriber, in chunks that
//! commit on their own (or, delivered at each subscriber's time, in waves queued when each
//! zone's time comes), and a digest whose deliveries are all done becomes `sent`.

use sqlx::{Any, Transaction};

use super::{PerDialect, Store, StoreResult, new_id, parse_col};
use crate::domain::DigestStatus;
use crate::domain::clock::Millis;

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
    fn fan_out_statements_are_written_for_each_backend() {
        super::super::tests::assert_dialects(&[
            ("FAN_OUT_CHUNK", FAN_OUT_CHUNK),
            ("FAN_OUT_LAST", FAN_OUT_LAST),
            ("LOCK_FAN_OUT", LOCK_FAN_OUT),
            ("FAN_OUT_WAVES", FAN_OUT_WAVES),
        ]);
    }
}
