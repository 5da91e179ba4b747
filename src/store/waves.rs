//! Digests delivered at each subscriber's time: their fan-out in one statement, each
//! delivery in the wave of its subscriber's zone, and the waves queued when each zone's time
//! comes (or missed, seen too late). Moved out of `fan_out.rs`, which keeps the fan-out in
//! chunks.

use super::{PerDialect, Store, StoreResult, new_id};
use crate::domain::clock::Millis;

/// The fan-out of a digest delivered at each subscriber's time: in one statement (not in
/// chunks: its deliveries are queued by wave, later), and each
/// delivery gets its subscriber's wave and that wave's expiry from a small list of the zones
/// subscribers stored (`$7, $8, $9, $10` and on: the stored name, its wave's zone, its expiry,
/// its due time; appended by `fan_out_waves`). A subscriber whose stored zone is not in the
/// list (none, or a name that is no zone) is in the list's zone's wave (`$5`, expiring at
/// `$3`, due at `$6`). A delivery's `created_at` is its wave's due time, when it is queued:
/// the start of its enqueue-to-sent latency, not the hours it waited for its zone's morning.
/// PostgreSQL reads the subscribers `FOR KEY SHARE`, as `POSTGRES_FAN_OUT_CHUNK` does (no
/// delivery for a subscriber erased meanwhile: migration 0024).
const FAN_OUT_WAVES: PerDialect = PerDialect {
    sqlite: "INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
                 created_at, updated_at, wave)
             SELECT $4 || '-' || printf('%012x', s.rowid), 'digest', s.id, $1, 'queued',
                 COALESCE(z.column3, $3), COALESCE(z.column4, $6), $2, COALESCE(z.column2, $5)
             FROM subscribers s LEFT JOIN (VALUES {zones}) z ON z.column1 = s.timezone
             WHERE s.status = 'confirmed'
             ON CONFLICT (digest_id, subscriber_id) DO NOTHING",
    postgres: "WITH s AS MATERIALIZED (
                 SELECT id, timezone FROM subscribers WHERE status = 'confirmed' FOR KEY SHARE)
             INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
                 created_at, updated_at, wave)
             SELECT $4 || '-' || lpad(to_hex(row_number() OVER ()), 12, '0'), 'digest', s.id, $1,
                 'queued', COALESCE(z.column3, $3), COALESCE(z.column4, $6), $2,
                 COALESCE(z.column2, $5)
             FROM s LEFT JOIN (VALUES {zones}) z ON z.column1 = s.timezone
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
        self.commit(tx).await?;
        self.work_queued();
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

    /// PostgreSQL: a wave opening grows the queue from nothing to the whole wave at once (as
    /// the fan-out did before its chunks were queued as one row each), and until autovacuum
    /// gets round to it (a minute or more) the planner believes the table still holds the
    /// few rows it had. On those statistics it planned each claim as "read every
    /// queued row and sort them" (120 ms and a 5 MB on-disk sort per claim at 100,000) instead
    /// of reading the first rows of the `run_at` index (6 ms). Best effort: without it the
    /// claims are slower, not wrong.
    async fn refresh_queue_statistics(&self) {
        if self.dialect == super::Dialect::Postgres
            && let Err(e) = sqlx::query("ANALYZE delivery_queue")
                .execute(&self.pool)
                .await
        {
            tracing::warn!(error = %e, "could not refresh the queue's statistics after a wave opened");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wave_statements_are_written_for_each_backend() {
        super::super::tests::assert_dialects(&[("FAN_OUT_WAVES", FAN_OUT_WAVES)]);
    }
}
