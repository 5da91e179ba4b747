//! The fan-out: a due digest becomes one delivery per confirmed subscriber, in chunks that
//! commit on their own (a digest delivered at each subscriber's time: `waves.rs`), and a
//! digest whose deliveries are all done becomes `sent`.

use sqlx::{Any, Transaction};

use super::{PerDialect, Store, StoreResult, new_id, parse_col};
use crate::domain::DigestStatus;
use crate::domain::clock::Millis;

/// SQLite, one chunk of a fan-out: the confirmed subscribers after the cursor `$5` (in id
/// order), up to and including `$6` (the chunk's last id, `CHUNK_END`; `SQLITE_FAN_OUT_LAST`
/// has no upper bound: the list's tail), one delivery each, never twice (`ON CONFLICT`). The
/// ids are `$4` (a fresh UUID v7 per chunk: later chunks sort after earlier ones) and a
/// number growing in the order the rows are inserted, so the primary key's index is appended
/// to instead of written on random pages (random keys made the fan-out to a million
/// subscribers hold SQLite's write lock 12 s instead of 5), and the claim takes a chunk's
/// deliveries as a range of it (`QUEUE_CHUNK`). The unary `+` before `status` keeps SQLite
/// off that column's index: never ANALYZEd, it took the equality over the id range, and each
/// chunk read the whole list (the fan-out to 1,000,000 took 70 s instead of 4).
const SQLITE_FAN_OUT_CHUNK: &str = "INSERT INTO deliveries (id, kind, subscriber_id, digest_id,
         status, expires_at, created_at, updated_at)
     SELECT $4 || '-' || printf('%012x', row_number() OVER (ORDER BY s.id)), 'digest',
         s.id, $1, 'queued', $3, $2, $2
     FROM subscribers s WHERE +s.status = 'confirmed' AND s.id > $5 AND s.id <= $6
     ON CONFLICT (digest_id, subscriber_id) DO NOTHING";

/// `SQLITE_FAN_OUT_CHUNK` for the last chunk: everyone after the cursor.
const SQLITE_FAN_OUT_LAST: &str = "INSERT INTO deliveries (id, kind, subscriber_id, digest_id,
         status, expires_at, created_at, updated_at)
     SELECT $4 || '-' || printf('%012x', row_number() OVER (ORDER BY s.id)), 'digest',
         s.id, $1, 'queued', $3, $2, $2
     FROM subscribers s WHERE +s.status = 'confirmed' AND s.id > $5
     ON CONFLICT (digest_id, subscriber_id) DO NOTHING";

/// PostgreSQL, one chunk of a fan-out in one statement (the same rows and ids as SQLite's):
/// the next `$5` subscribers after the cursor `$6` in id order (`page`), read `FOR KEY
/// SHARE` (the lock the foreign key's per-row check took before migration 0024: an erasure
/// waits for this chunk to commit and then deletes what it wrote, or this chunk waits for
/// the erasure and skips the row; the `LIMIT` counts only rows locked), a delivery for each
/// confirmed one among them, and the chunk's one queue row (`QUEUE_CHUNK`) if it made any.
/// It answers how many subscribers it read (fewer than `$5`: the list's end), the last one
/// (the next cursor) and the deliveries made.
///
/// The page is the next rows of the primary key, with no condition on `status` under the
/// `LIMIT`, so no statistics can make the planner read the whole list: with `status =
/// 'confirmed'` in the scan, a `subscribers` table never ANALYZEd (a list just imported or
/// seeded; autovacuum comes a minute later) was estimated at 0.5 % confirmed, and every
/// chunk read all confirmed subscribers through `subscribers_status` and sorted them (74 MB
/// on disk at 1,000,000): 750 ms per chunk, the first message at 1,000,000 600 ms after the
/// fan-out started instead of 145 ms at 100,000 (BENCHMARKS.md, issue 23).
///
/// Who already has a delivery of the digest is skipped by one range read of the unique
/// key (`existing`, empty unless the cursor was behind) instead of `ON CONFLICT DO
/// NOTHING`, whose probe and speculative insertion per row cost 14 % of the fan-out's
/// server CPU (BENCHMARKS.md). The unique key still refuses a duplicate: only a second
/// writer of the same chunk at the same time could meet it, and the digest's row lock
/// (`LOCK_FAN_OUT`, or the `scheduled` -> `sending` update) keeps one writer per digest;
/// were it met, the chunk would fail whole and the next tick would skip what is there.
const POSTGRES_FAN_OUT_CHUNK: &str = "WITH page AS MATERIALIZED (
         SELECT id, status FROM subscribers WHERE id > $6
         ORDER BY id LIMIT $5 FOR KEY SHARE),
     chunk AS MATERIALIZED (SELECT id FROM page WHERE status = 'confirmed'),
     existing AS MATERIALIZED (
         SELECT subscriber_id FROM deliveries
         WHERE digest_id = $1 AND subscriber_id > $6
           AND subscriber_id <= (SELECT MAX(id) FROM page)),
     made AS (
         INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
             created_at, updated_at)
         SELECT $4 || '-' || lpad(to_hex(row_number() OVER (ORDER BY id)), 12, '0'),
             'digest', id, $1, 'queued', $3, $2, $2
         FROM chunk
         WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.subscriber_id = chunk.id)
         RETURNING 1),
     queued AS (
         INSERT INTO queued_chunks (id, digest_id, run_at, after_id)
         SELECT $4, $1, $2, $4 || '-' WHERE EXISTS (SELECT 1 FROM made)
         RETURNING 1)
     SELECT (SELECT COUNT(*) FROM page), (SELECT MAX(id) FROM page),
         (SELECT COUNT(*) FROM made)";

/// A chunk's deliveries are queued together, as one row (migration 0026): the claim takes
/// them in id order after `after_id` (`claim::TAKE_CHUNK`), instead of a queue row and three
/// index entries per delivery written here and deleted there, a third of the fan-out's cost
/// on PostgreSQL (BENCHMARKS.md, issue 23). `$1 || '-'` sorts before the chunk's first id
/// (`$1-000000000001`) in any collation: every id of the chunk starts with it. SQLite's
/// statement; PostgreSQL's is the `queued` part of `POSTGRES_FAN_OUT_CHUNK`.
const QUEUE_CHUNK: &str = "INSERT INTO queued_chunks (id, digest_id, run_at, after_id)
     VALUES ($1, $2, $3, $1 || '-')";

/// The last id a delivery of the chunk `chunk` can have: the chunk's ids are its id, '-' and
/// twelve hex digits (the fan-out statements above), so this bounds the range a claim reads
/// (`claim::CHUNK_DELIVERIES`).
pub(super) fn last_id_of_chunk(chunk: &str) -> String {
    format!("{chunk}-ffffffffffff")
}

/// SQLite: the last subscriber of the next chunk, the `$2`-th after the cursor `$1`, whatever
/// their status: a chunk is the next `fanout_chunk` subscribers in id order, of whom the
/// confirmed get a delivery, as on PostgreSQL (`POSTGRES_FAN_OUT_CHUNK`: a condition on
/// `status` there let the planner read the whole list).
const CHUNK_END: &str = "SELECT id FROM subscribers WHERE id > $1 ORDER BY id LIMIT 1 OFFSET $2";

/// The most subscribers of the first chunk, whatever `fanout_chunk` says: its commit is what
/// wakes the workers, so the first message waits for it. At 1,000,000 on PostgreSQL the first
/// chunk of 5,000 took 60-90 ms (the first message 150 ms after due; issue 23's target is
/// 100 ms); 500 is more than the workers' first claims take (twice the connections) before
/// the next chunk commits.
const FIRST_CHUNK: u32 = 500;

/// A running fan-out as `LOCK_FAN_OUT` reads it: status, cursor, expiry, start.
type FanOutState = (String, Option<String>, Option<Millis>, Option<Millis>);

const LOCK_FAN_OUT: PerDialect = PerDialect {
    sqlite: "SELECT status, fan_out_cursor, expires_at, started_at FROM digests
             WHERE id = $1 AND fanned_out_at IS NULL",
    postgres: "SELECT status, fan_out_cursor, expires_at, started_at FROM digests
             WHERE id = $1 AND fanned_out_at IS NULL FOR UPDATE",
};

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

    /// `scheduled` -> `sending` and the first chunk (of at most `FIRST_CHUNK` subscribers),
    /// in one transaction: the deliveries made and whether the fan-out is complete; `None` if
    /// the digest was no longer `scheduled`.
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
            .fan_out_chunk_in(&mut tx, id, "", expires_at, now, chunk.min(FIRST_CHUNK))
            .await?;
        self.commit(tx).await?;
        if made > 0 {
            self.work_queued();
        }
        Ok(Some((made, done)))
    }

    /// The chunks after the cursor until the fan-out is complete, each its own transaction
    /// (on SQLite its own turn of the writer, so sign-ups and outcomes go in between): the
    /// deliveries made. Stops when the digest is no longer `sending` or `paused` (a paused
    /// digest's fan-out goes on: the claim skips its mail until it resumes).
    pub async fn continue_fan_out(&self, id: &str, now: Millis, chunk: u32) -> StoreResult<u64> {
        let mut made = 0;
        while let Some((n, done)) = self.fan_out_next_chunk(id, now, chunk).await? {
            made += n;
            if done {
                break;
            }
        }
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
        if made.0 > 0 {
            self.work_queued();
        }
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

    /// The chunk after `cursor` in `tx`: its deliveries and queue row, `recipients` and
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
        let (made, end) = if self.dialect == super::Dialect::Postgres {
            postgres_chunk(tx, id, cursor, expires_at, now, chunk).await?
        } else {
            sqlite_chunk(tx, id, cursor, expires_at, now, chunk).await?
        };
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
        Ok((made, done))
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
               AND NOT EXISTS (SELECT 1 FROM queued_chunks q WHERE q.digest_id = digests.id)
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

/// PostgreSQL's chunk, one statement (`POSTGRES_FAN_OUT_CHUNK`): the deliveries made and
/// the chunk's last subscriber, `None` when it reached the list's end.
///
/// The chunk commits without waiting for its WAL to reach the disk (`synchronous_commit
/// = off`, this transaction only): 20 flushes fewer for 100,000 subscribers. Safe, because
/// WAL is written and flushed in order: any later commit that waits (a worker's claim of
/// one of these deliveries, a `sent` record) flushes this chunk's commit before its own,
/// so nothing of the chunk is sent, nor any outcome recorded, unless the chunk is durable.
/// A crash can lose only chunks nobody acted on, and loses each whole: deliveries, queue
/// rows, `recipients` and the cursor, which are in this same transaction; the fan-out is
/// then continued from the cursor that survived (or, the first chunk lost, the digest is
/// still `scheduled` and fans out again), every subscriber still exactly once.
async fn postgres_chunk(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    cursor: &str,
    expires_at: Millis,
    now: Millis,
    chunk: u32,
) -> StoreResult<(u64, Option<String>)> {
    let prefix = new_id();
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut **tx)
        .await?;
    let (read, last, made): (i64, Option<String>, i64) = sqlx::query_as(POSTGRES_FAN_OUT_CHUNK)
        .bind(id)
        .bind(now)
        .bind(expires_at)
        .bind(&prefix)
        .bind(i64::from(chunk.max(1)))
        .bind(cursor)
        .fetch_one(&mut **tx)
        .await?;
    let made = u64::try_from(made).unwrap_or(0);
    // Fewer than a chunk: everyone after the cursor was read (rows another transaction
    // deleted meanwhile are not counted: the `LIMIT` is above the lock).
    let next = if read < i64::from(chunk.max(1)) {
        None
    } else {
        last
    };
    Ok((made, next))
}

/// SQLite's chunk: its last subscriber (`CHUNK_END`), its deliveries, then its queue row;
/// the deliveries made and the chunk's last subscriber, `None` for the list's tail.
async fn sqlite_chunk(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    cursor: &str,
    expires_at: Millis,
    now: Millis,
    chunk: u32,
) -> StoreResult<(u64, Option<String>)> {
    let prefix = new_id();
    let end: Option<String> = sqlx::query_scalar(CHUNK_END)
        .bind(cursor)
        .bind(i64::from(chunk.max(1) - 1))
        .fetch_optional(&mut **tx)
        .await?;
    let sql = if end.is_some() {
        SQLITE_FAN_OUT_CHUNK
    } else {
        SQLITE_FAN_OUT_LAST
    };
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
    if made > 0 {
        sqlx::query(QUEUE_CHUNK)
            .bind(&prefix)
            .bind(id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    Ok((made, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_statements_are_written_for_each_backend() {
        super::super::tests::assert_dialects(&[("LOCK_FAN_OUT", LOCK_FAN_OUT)]);
    }

    /// SQLite's chunks read their subscribers by a range of the primary key. SQLite is never ANALYZEd here, and without statistics it preferred
    /// the equality of `status` (or `digest_id`) to the id range: a pass over the whole list
    /// for every chunk, and the fan-out to 1,000,000 took 70 s instead of 4.
    #[tokio::test]
    async fn sqlite_chunks_read_a_range_of_ids_not_the_whole_list() {
        use crate::store::DatabaseKind;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = Store::connect(&url, &DatabaseKind::Sqlite)
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        for (name, sql, params) in [
            ("SQLITE_FAN_OUT_CHUNK", SQLITE_FAN_OUT_CHUNK, 6),
            ("SQLITE_FAN_OUT_LAST", SQLITE_FAN_OUT_LAST, 5),
            ("CHUNK_END", CHUNK_END, 2),
        ] {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain);
            for n in 1..=params {
                query = query.bind(format!("p{n}"));
            }
            let plan: Vec<String> = query
                .fetch_all(&store.pool)
                .await
                .expect("plan")
                .into_iter()
                .map(|(_, _, _, detail)| detail)
                .collect();
            let reads: Vec<&String> = plan
                .iter()
                .filter(|d| {
                    d.starts_with("SEARCH s ")
                        || d.starts_with("SCAN s")
                        || d.contains("subscribers")
                        || d.contains(" deliveries")
                })
                .collect();
            assert!(!reads.is_empty(), "{name}: {plan:?}");
            for read in reads {
                assert!(
                    read.contains("sqlite_autoindex_") && read.contains("(id>?"),
                    "{name} reads by something else than the id range: {plan:?}"
                );
            }
        }
    }

    /// PostgreSQL's chunk reads the next subscribers by the primary key, whatever the
    /// statistics say. A list never ANALYZEd (just imported; here autovacuum is off for the
    /// table) looked 0.5 % confirmed to the planner, and with `status = 'confirmed'` in the
    /// scan every chunk read all confirmed subscribers through `subscribers_status` and
    /// sorted them: at 1,000,000, 750 ms a chunk. Runs with `SQUEEZE_TEST_DATABASE=postgres`
    /// (the server of `SQUEEZE_TEST_POSTGRES_URL`), like the integration tests.
    #[tokio::test]
    async fn postgres_chunks_read_the_next_ids_whatever_the_statistics() {
        use crate::store::DatabaseKind;
        use sqlx::Connection as _;
        if std::env::var("SQUEEZE_TEST_DATABASE").ok().as_deref() != Some("postgres") {
            return;
        }
        let base = std::env::var("SQUEEZE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
        let schema = format!("plan_{}", uuid::Uuid::now_v7().simple());
        sqlx::any::install_default_drivers();
        let mut admin = sqlx::AnyConnection::connect(&base).await.expect("server");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .expect("schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let store = Store::connect(&url, &DatabaseKind::Postgres)
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        for sql in [
            "ALTER TABLE subscribers SET (autovacuum_enabled = false)",
            "INSERT INTO subscribers (id, email, status, unsubscribe_token, consent_at,
                 created_at, updated_at)
             SELECT lpad(to_hex(i), 12, '0'), 'reader' || i || '@example.com', 'confirmed',
                 md5(i::text), 0, 0, 0
             FROM generate_series(1, 20000) i",
        ] {
            sqlx::query(sql).execute(&store.pool).await.expect(sql);
        }
        // A chunk much smaller than the list, as in production (5,000 of a million).
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {POSTGRES_FAN_OUT_CHUNK}"))
            .bind("digest")
            .bind(0_i64)
            .bind(0_i64)
            .bind("prefix")
            .bind(100_i64)
            .bind("")
            .fetch_all(&store.pool)
            .await
            .expect("plan");
        store.close().await;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut admin)
            .await
            .expect("drop schema");
        let reads: Vec<&String> = plan
            .iter()
            .filter(|l| l.contains(" on subscribers "))
            .collect();
        assert_eq!(reads.len(), 1, "one read of the list: {plan:#?}");
        assert!(
            reads[0].contains("Index Scan using subscribers_pkey"),
            "the chunk reads its subscribers by something else than the next ids: {plan:#?}"
        );
    }
}
