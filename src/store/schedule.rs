//! The editors' daily schedule (with the last local date it handled) and the event log.

use super::{EventRow, Store, StoreError, StoreResult};
use crate::domain::clock::Millis;
use crate::domain::{DailySchedule, DeliverAt};

/// The stored daily schedule and the last local date it handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchedule {
    pub schedule: DailySchedule,
    pub last_date: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ScheduleRow {
    time: String,
    timezone: String,
    enabled: i64,
    deliver_at: String,
    last_date: Option<String>,
}

impl Store {
    pub async fn schedule(&self) -> StoreResult<Option<StoredSchedule>> {
        let row: Option<ScheduleRow> = sqlx::query_as(
            "SELECT time, timezone, CAST(enabled AS INTEGER) AS enabled, deliver_at, last_date
             FROM daily_schedule WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let deliver_at =
            DeliverAt::parse(&r.deliver_at).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let schedule = DailySchedule::parse(&r.time, &r.timezone, r.enabled != 0)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .with_deliver_at(deliver_at);
        Ok(Some(StoredSchedule {
            schedule,
            last_date: r.last_date,
        }))
    }

    /// Saves the schedule; `handled_through` is the local date already taken care of, so
    /// setting a time earlier than now does not fire at once.
    pub async fn put_schedule(
        &self,
        s: &DailySchedule,
        handled_through: &str,
        now: Millis,
    ) -> StoreResult<()> {
        let mut conn = self.write_conn().await?;
        sqlx::query(
            "INSERT INTO daily_schedule (id, time, timezone, enabled, last_date, updated_at,
                 deliver_at)
             VALUES (1, $1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET time = $1, timezone = $2, enabled = $3,
                 deliver_at = $6,
                 last_date = CASE WHEN daily_schedule.last_date IS NULL
                     OR daily_schedule.last_date < $4 THEN $4 ELSE daily_schedule.last_date END,
                 updated_at = $5",
        )
        .bind(s.time_str())
        .bind(s.timezone.name())
        .bind(s.enabled)
        .bind(handled_through)
        .bind(now)
        .bind(s.deliver_at.as_str())
        .execute(&mut *conn)
        .await?;
        // Its next firing may come before the scheduler's next wake.
        self.schedule_wake.notify_one();
        Ok(())
    }

    /// Compare-and-set of the last handled date: true for the one caller that moves it to
    /// `date`, so a daily firing is handled once.
    pub async fn take_daily_date(&self, date: &str, now: Millis) -> StoreResult<bool> {
        let mut conn = self.write_conn().await?;
        let done = sqlx::query(
            "UPDATE daily_schedule SET last_date = $1, updated_at = $2
             WHERE id = 1 AND (last_date IS NULL OR last_date < $1)",
        )
        .bind(date)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    pub async fn add_event(
        &self,
        kind: &str,
        digest_id: Option<&str>,
        message: &str,
        now: Millis,
    ) -> StoreResult<()> {
        let mut conn = self.write_conn().await?;
        sqlx::query("INSERT INTO events (at, kind, digest_id, message) VALUES ($1, $2, $3, $4)")
            .bind(now)
            .bind(kind)
            .bind(digest_id)
            .bind(message)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// The latest events, newest first.
    pub async fn events(&self, limit: u32) -> StoreResult<Vec<EventRow>> {
        Ok(sqlx::query_as(
            "SELECT at, kind, digest_id, message FROM events ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}
