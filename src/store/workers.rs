//! Workers: heartbeats (so the rate is shared out among live workers), the scheduler's
//! leadership, and notifications of new work.

use std::time::Duration;

use super::{Dialect, Store, StoreResult};
use crate::domain::clock::{Millis, ms};

/// The channel a PostgreSQL store notifies when it queues mail, so idle workers wake at once.
pub const WORK_CHANNEL: &str = "squeeze_work";

/// PostgreSQL: a NOTIFY on `WORK_CHANNEL` each time `announce` is woken (`Store::work_queued`,
/// after a commit that queued mail), one at a time: the wake-ups that come while one is on
/// its way are one more NOTIFY, not one each. Ends with `stop`.
pub(super) async fn announce_work(
    pool: sqlx::AnyPool,
    announce: std::sync::Arc<tokio::sync::Notify>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = announce.notified() => {}
        }
        let sent = sqlx::query("SELECT pg_notify($1, '')")
            .bind(WORK_CHANNEL)
            .execute(&pool)
            .await;
        match sent {
            Ok(_) => {}
            Err(sqlx::Error::PoolClosed) => return,
            // The other nodes' workers find the mail at their next poll.
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell the other nodes' workers about new mail")
            }
        }
    }
}

/// The scheduler role's advisory lock is (this, hash of the schema): one scheduler per
/// installation, even when several share a database in different schemas.
pub const SCHEDULER_LOCK: i32 = 0x5371_7565; // "Sque"

/// Holding this makes a process the one scheduler: on PostgreSQL it owns a connection with
/// the session-level advisory lock, released when the connection closes (also on a crash).
pub struct Leadership {
    conn: Option<sqlx::AnyConnection>,
}

impl Store {
    /// Tries to take the scheduler role (PostgreSQL: an advisory lock held by a dedicated
    /// connection). `None`: another node is the scheduler. SQLite runs one process, so it
    /// always succeeds there (and fan-out is idempotent anyway).
    pub async fn try_lead(&self) -> StoreResult<Option<Leadership>> {
        if self.dialect == Dialect::Sqlite {
            return Ok(Some(Leadership { conn: None }));
        }
        // A connection of its own, not the pool's: the lock lives as long as the session.
        let mut conn = self.pool.acquire().await?.detach();
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))")
                .bind(SCHEDULER_LOCK)
                .fetch_one(&mut conn)
                .await?;
        Ok(got.then_some(Leadership { conn: Some(conn) }))
    }

    /// Whether the leadership's connection (and so its lock) is still alive.
    pub async fn still_leading(&self, l: &mut Leadership) -> bool {
        match &mut l.conn {
            None => true,
            Some(conn) => sqlx::query("SELECT 1").execute(conn).await.is_ok(),
        }
    }

    /// On PostgreSQL, wakes `wake` whenever any node queues mail (LISTEN/NOTIFY), until
    /// `shutdown`.
    pub async fn forward_work_notifications(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        if self.dialect != Dialect::Postgres {
            return;
        }
        while !shutdown.is_cancelled() {
            let listener = async {
                let mut l = sqlx::postgres::PgListener::connect(&self.url).await?;
                l.listen(WORK_CHANNEL).await?;
                loop {
                    l.recv().await?;
                    wake.notify_one();
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = listener => if let Err(e) = r {
                    tracing::warn!(error = %e, "work notifications lost; idle workers poll until they return");
                },
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Records a worker's heartbeat, keeps its claims leased until `leases_until` (never
    /// shortening a lease: see `domain::liveness::lease_until`), and returns the number of live
    /// workers (heartbeat within `alive_within`), this one included.
    pub async fn heartbeat(
        &self,
        worker_id: &str,
        host: &str,
        now: Millis,
        alive_within: Duration,
        leases_until: Millis,
    ) -> StoreResult<i64> {
        let mut conn = self.write_conn().await?;
        sqlx::query(
            "INSERT INTO workers (id, host, pid, started_at, heartbeat_at)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = $4",
        )
        .bind(worker_id)
        .bind(host)
        .bind(i64::from(std::process::id()))
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE claims SET lease_until = $1 WHERE worker_id = $2 AND lease_until < $1")
            .bind(leases_until)
            .bind(worker_id)
            .execute(&mut *conn)
            .await?;
        // Forget workers long gone, so the table stays small.
        sqlx::query("DELETE FROM workers WHERE heartbeat_at < $1")
            .bind(now - 3_600_000)
            .execute(&mut *conn)
            .await?;
        self.live_workers(now, alive_within).await
    }

    pub async fn live_workers(&self, now: Millis, alive_within: Duration) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM workers WHERE heartbeat_at >= $1")
                .bind(now - ms(alive_within))
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn deregister(&self, worker_id: &str) -> StoreResult<()> {
        let mut conn = self.write_conn().await?;
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(worker_id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}
