//! The store's SQL, one implementation for both backends through sqlx's `Any` driver: the
//! statements are portable (`$n` parameters, `ON CONFLICT`, `RETURNING`), and the few real
//! differences (locking, random ids, notifications) are methods of `Dialect`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor as _, Row, Transaction};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    ClaimedDelivery, ConfirmOutcome, DayColumn, DeliveryCounts, DeliveryRow, DigestRow, EventRow,
    FailureRow, ItemRow, Millis, Outcome, Recorded, SignUp, SignUpOutcome, StoreError, StoreResult,
    StoredSchedule, SubscriberRow, UnsubscribeOutcome, ms, parse_col,
};
use crate::config::DatabaseKind;
use crate::domain::subscriber::{CONFIRMATION_DEADLINE, RESEND_CONFIRMATION_AFTER};
use crate::domain::{
    DailySchedule, EmailAddress, ItemSelection, NewDigest, NewItem, SubscriberName,
    SubscriberStatus, Token,
};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel a PostgreSQL store notifies when it queues mail, so idle workers wake at once.
pub const WORK_CHANNEL: &str = "squeeze_work";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Row locks for read-then-write transactions (SQLite's `BEGIN IMMEDIATE` already holds
    /// the database's write lock).
    fn for_update(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE",
        }
    }

    /// Lets concurrent workers claim disjoint rows without waiting for each other.
    fn skip_locked(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Where a row is stored. A row picked (and, on PostgreSQL, locked) by one part of a
    /// statement is found again by it, not through an index: by `delivery_id`, PostgreSQL
    /// planned the claim's delete as a scan of the whole queue, dead rows included, 4 ms per
    /// claim at 50,000 instead of 1 ms.
    fn row_locator(self) -> &'static str {
        match self {
            Self::Sqlite => "rowid",
            Self::Postgres => "ctid",
        }
    }

    /// The strings of parameter `$n`, bound as a JSON array (`json_list`), as rows for
    /// `IN (…)`. One statement text whatever the list's length, so it is prepared once and
    /// (PostgreSQL) planned once; a list of `$n`s made a statement per length, more than the
    /// connection's statement cache holds, and each was parsed and planned again.
    fn list(self, n: u8) -> String {
        match self {
            Self::Sqlite => format!("SELECT value FROM json_each(${n})"),
            Self::Postgres => format!("SELECT jsonb_array_elements_text(${n}::jsonb)"),
        }
    }

    /// The ids of a fan-out's rows: parameter `$n` (a fresh UUID, so no two fan-outs share
    /// ids) and a number that grows in the order the rows are inserted (the subscriber's
    /// rowid on SQLite, the row's number on PostgreSQL). Growing keys append to the primary
    /// key's index; random ones landed each on a random page of it, which made the fan-out to
    /// a million subscribers hold SQLite's write lock 12 s instead of 5.
    fn fan_out_id(self, n: u8) -> String {
        match self {
            Self::Sqlite => format!("${n} || '-' || printf('%012x', s.rowid)"),
            Self::Postgres => {
                format!("${n} || '-' || lpad(to_hex(row_number() OVER ()), 12, '0')")
            }
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Sql {
    /// Reads (on PostgreSQL, everything: `writer` is the same pool there).
    pool: AnyPool,
    dialect: Dialect,
    url: String,
    /// Every write goes through this pool. On SQLite it holds one connection, so the
    /// process's writes take turns on it, asynchronously and in order, instead of colliding
    /// on the database lock, where SQLite's busy handler sleeps 1, 2, 5, 10… ms and gives up
    /// after `busy_timeout` (10 s): a write that long exists, the fan-out to a million
    /// subscribers, and the unsubscribes and sign-ups that arrive meanwhile wait for it
    /// instead of failing. One connection also keeps its page cache: in WAL mode a
    /// connection drops its whole cache whenever another one has written, so writes spread
    /// over the pool re-read their pages from the file each time. On PostgreSQL it is the
    /// pool itself.
    writer: AnyPool,
    /// SQLite: sign-ups go to one task that writes whatever arrived together in one
    /// transaction (SQLite has one writer at a time; a transaction each capped /subscribe at
    /// about 2,000 requests/s with a p99 over 100 ms).
    sign_ups: Option<mpsc::Sender<SignUpJob>>,
    /// SQLite: held, never used, by every clone; when the last one goes, the background
    /// checkpoint task (`checkpoints`) sees its channel close and ends.
    _checkpoints: Option<mpsc::Sender<()>>,
}

/// Most sign-ups written in one transaction.
const SIGN_UP_BATCH: usize = 128;
/// How often a background task copies the WAL into the database file (see `checkpoints`).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// At most this many checkpoint passes on a read connection before the writer's.
const READER_CHECKPOINT_PASSES: usize = 4;
/// WAL frames (pages): a pass that copied fewer leaves the rest to the writer's pass.
const LITTLE_LEFT_TO_COPY: i64 = 256;

#[derive(Debug)]
struct SignUpJob {
    sign_up: SignUp,
    now: Millis,
    reply: oneshot::Sender<StoreResult<SignUpOutcome>>,
}

/// The scheduler role's advisory lock is (this, hash of the schema): one scheduler per
/// installation, even when several share a database in different schemas.
pub const SCHEDULER_LOCK: i32 = 0x5371_7565; // "Sque"

/// Holding this makes a process the one scheduler: on PostgreSQL it owns a connection with
/// the session-level advisory lock, released when the connection closes (also on a crash).
pub struct Leadership {
    conn: Option<sqlx::AnyConnection>,
}

/// Strings as a JSON array, for `Dialect::list`.
fn json_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.into_iter().collect();
    // Straight from the strings, not through a `serde_json::Value` (a copy of each). Strings
    // always serialise; were it ever to fail, the empty text is not JSON and the statement
    // fails loudly.
    serde_json::to_string(&items).unwrap_or_default()
}

fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// SQLite creates the file when the URL asks for mode `rwc`.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Pool options for a SQLite file: WAL, so readers never wait for the writer.
fn sqlite_pool(connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(connections)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // The writer checkpoints by itself only past 64 MB of WAL, should the
                // background task (`checkpoints`) ever fall behind.
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;
                     PRAGMA wal_autocheckpoint = 16384;",
                )
                .await?;
                Ok(())
            })
        })
}

impl Sql {
    pub(super) async fn connect(url: &str, kind: &DatabaseKind) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let (pool, writer, dialect) = match kind {
            DatabaseKind::Sqlite => {
                let url = sqlite_url(url);
                let pool = sqlite_pool(4).connect(&url).await?;
                // A write waits for its turn up to 5 minutes (the longest write, a fan-out
                // to a million, takes seconds), not the 10 s after which SQLite's own lock
                // gives up; past that it fails and HTTP answers 503.
                let writer = sqlite_pool(1)
                    .acquire_timeout(Duration::from_secs(300))
                    .test_before_acquire(false)
                    .connect(&url)
                    .await?;
                (pool, writer, Dialect::Sqlite)
            }
            DatabaseKind::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?;
                (pool.clone(), pool, Dialect::Postgres)
            }
        };
        let mut sql = Self {
            pool,
            writer,
            dialect,
            url: url.to_owned(),
            sign_ups: None,
            _checkpoints: None,
        };
        if dialect == Dialect::Sqlite {
            let (tx, rx) = mpsc::channel(SIGN_UP_BATCH * 4);
            tokio::spawn(sql.clone().sign_up_batches(rx));
            sql.sign_ups = Some(tx);
            let (alive, gone) = mpsc::channel(1);
            tokio::spawn(checkpoints(sql.pool.clone(), sql.writer.clone(), gone));
            sql._checkpoints = Some(alive);
        }
        Ok(sql)
    }

    /// Tries to become the scheduler. SQLite runs one process, so it always succeeds there
    /// (and fan-out is idempotent anyway).
    pub(super) async fn try_lead(&self) -> StoreResult<Option<Leadership>> {
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
    pub(super) async fn still_leading(&self, l: &mut Leadership) -> bool {
        match &mut l.conn {
            None => true,
            Some(conn) => sqlx::query("SELECT 1").execute(conn).await.is_ok(),
        }
    }

    /// Forwards PostgreSQL notifications of new work to `wake` until `shutdown`.
    pub(super) async fn forward_work_notifications(
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

    /// Records a worker's heartbeat; returns how many workers are alive (heartbeat within
    /// `alive_within`), this one included.
    pub(super) async fn heartbeat(
        &self,
        worker_id: &str,
        host: &str,
        now: Millis,
        alive_within: Millis,
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
        // Forget workers long gone, so the table stays small.
        sqlx::query("DELETE FROM workers WHERE heartbeat_at < $1")
            .bind(now - 3_600_000)
            .execute(&mut *conn)
            .await?;
        self.live_workers(now, alive_within).await
    }

    pub(super) async fn live_workers(&self, now: Millis, alive_within: Millis) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM workers WHERE heartbeat_at >= $1")
                .bind(now - alive_within)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub(super) async fn deregister(&self, worker_id: &str) -> StoreResult<()> {
        let mut conn = self.write_conn().await?;
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(worker_id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// The connection for a write outside a transaction; on SQLite, the process's turn to
    /// write (see `writer`).
    async fn write_conn(&self) -> StoreResult<PoolConnection<Any>> {
        Ok(self.writer.acquire().await?)
    }

    /// A transaction that will write: on SQLite it takes this process's write turn and the
    /// database's write lock up front, so a read inside it cannot go stale; on PostgreSQL
    /// reads lock their rows (`for_update`).
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Any>> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.writer.begin().await?,
        })
    }

    /// Wakes idle workers (PostgreSQL: delivered at commit); SQLite runs in one process,
    /// where the in-process notification does this.
    async fn notify_work(&self, tx: &mut AnyConnection) -> StoreResult<()> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(WORK_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn migrate(&self) -> StoreResult<()> {
        match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    pub(super) async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    pub(super) async fn sign_up(&self, s: &SignUp, now: Millis) -> StoreResult<SignUpOutcome> {
        let Some(batcher) = &self.sign_ups else {
            return self.sign_up_alone(s, now).await;
        };
        let (reply, answer) = oneshot::channel();
        let job = SignUpJob {
            sign_up: s.clone(),
            now,
            reply,
        };
        let gone = || StoreError::from(sqlx::Error::PoolClosed);
        batcher.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Writes the sign-ups that arrived together in one transaction. If that fails, each is
    /// written on its own, so one bad sign-up cannot fail the others and each gets its own
    /// answer.
    async fn sign_up_batches(self, mut rx: mpsc::Receiver<SignUpJob>) {
        let mut jobs = Vec::with_capacity(SIGN_UP_BATCH);
        while rx.recv_many(&mut jobs, SIGN_UP_BATCH).await > 0 {
            match self.sign_up_together(&jobs).await {
                Ok(outcomes) => {
                    for (job, outcome) in jobs.drain(..).zip(outcomes) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, count = jobs.len(), "writing sign-ups together failed; writing each on its own");
                    for job in jobs.drain(..) {
                        let outcome = self.sign_up_alone(&job.sign_up, job.now).await;
                        let _ = job.reply.send(outcome);
                    }
                }
            }
        }
    }

    async fn sign_up_together(&self, jobs: &[SignUpJob]) -> StoreResult<Vec<SignUpOutcome>> {
        let mut tx = self.begin_write().await?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        // Queued in one statement for the batch: a statement per sign-up more cost a quarter
        // of the sign-ups per second on SQLite (scripts/bench-subscribe.sh).
        let mut confirmations = Vec::new();
        let mut latest = 0;
        for j in jobs {
            let (outcome, confirmation) = self.sign_up_in(&mut tx, &j.sign_up, j.now).await?;
            outcomes.push(outcome);
            confirmations.extend(confirmation);
            latest = latest.max(j.now);
        }
        self.enqueue(&mut tx, &confirmations, latest).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn sign_up_alone(&self, s: &SignUp, now: Millis) -> StoreResult<SignUpOutcome> {
        let mut tx = self.begin_write().await?;
        let (outcome, confirmation) = self.sign_up_in(&mut tx, s, now).await?;
        self.enqueue(&mut tx, confirmation.as_slice(), now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// One sign-up inside a write transaction; it writes nothing unless it makes a
    /// confirmation (never more than one per `RESEND_CONFIRMATION_AFTER` for a pending
    /// address; it is given up after `CONFIRMATION_DEADLINE`), whose delivery id it returns
    /// for the caller to queue (`enqueue`).
    async fn sign_up_in(
        &self,
        tx: &mut AnyConnection,
        s: &SignUp,
        now: Millis,
    ) -> StoreResult<(SignUpOutcome, Option<String>)> {
        let name = s.name.as_ref().map(|n| n.as_str());
        // Insert first: of two concurrent sign-ups for a new address exactly one inserts,
        // and the other finds (and locks) the row below.
        let id = new_id();
        let inserted = sqlx::query(
            "INSERT INTO subscribers (id, email, name, status, unsubscribe_token,
                 consent_at, consent_ip, consent_user_agent, confirmation_queued_at,
                 created_at, updated_at)
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $5, $5, $5)
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(&id)
        .bind(s.email.as_str())
        .bind(name)
        .bind(Token::generate().as_str())
        .bind(now)
        .bind(&s.ip)
        .bind(&s.user_agent)
        .execute(&mut *tx)
        .await?
        .rows_affected();

        let subscriber_id = if inserted == 1 {
            id
        } else {
            let row = sqlx::query(&format!(
                "SELECT id, status, confirmation_queued_at FROM subscribers WHERE email = $1{}",
                self.dialect.for_update()
            ))
            .bind(s.email.as_str())
            .fetch_one(&mut *tx)
            .await?;
            let id: String = row.try_get("id")?;
            let status: SubscriberStatus = parse_col(row.try_get("status")?)?;
            let queued_at: Option<Millis> = row.try_get("confirmation_queued_at")?;
            match status {
                SubscriberStatus::Confirmed => return Ok((SignUpOutcome::AlreadyConfirmed, None)),
                SubscriberStatus::Bounced => return Ok((SignUpOutcome::Bounced, None)),
                SubscriberStatus::Pending | SubscriberStatus::Unsubscribed => {}
            }
            if queued_at.is_some_and(|t| now - t < ms(RESEND_CONFIRMATION_AFTER)) {
                return Ok((SignUpOutcome::RecentlyQueued, None));
            }
            // A returning or repeated sign-up is new consent: record its evidence.
            sqlx::query(
                "UPDATE subscribers SET status = 'pending', name = COALESCE($1, name),
                     consent_at = $2, consent_ip = $3, consent_user_agent = $4,
                     unsubscribed_at = NULL, confirmation_queued_at = $2, updated_at = $2
                 WHERE id = $5",
            )
            .bind(name)
            .bind(now)
            .bind(&s.ip)
            .bind(&s.user_agent)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            id
        };
        let delivery_id = new_id();
        sqlx::query(
            "INSERT INTO deliveries (id, kind, subscriber_id, status, expires_at, created_at,
                 updated_at)
             VALUES ($1, 'confirmation', $2, 'queued', $3, $4, $4)",
        )
        .bind(&delivery_id)
        .bind(&subscriber_id)
        .bind(now + ms(CONFIRMATION_DEADLINE))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.notify_work(tx).await?;
        Ok((SignUpOutcome::ConfirmationQueued, Some(delivery_id)))
    }

    pub(super) async fn insert_confirmation_token(
        &self,
        subscriber_id: &str,
        token_hash: &str,
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<()> {
        let mut conn = self.write_conn().await?;
        sqlx::query(
            "INSERT INTO confirmation_tokens (token_hash, subscriber_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(subscriber_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    pub(super) async fn confirm(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<ConfirmOutcome> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT t.subscriber_id, t.expires_at, t.used_at, s.status
             FROM confirmation_tokens t JOIN subscribers s ON s.id = t.subscriber_id
             WHERE t.token_hash = $1{}",
            self.dialect.for_update()
        ))
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(ConfirmOutcome::Invalid);
        };
        let subscriber_id: String = row.try_get("subscriber_id")?;
        let expires_at: Millis = row.try_get("expires_at")?;
        let used_at: Option<Millis> = row.try_get("used_at")?;
        let status: SubscriberStatus = parse_col(row.try_get("status")?)?;

        let outcome = match (used_at, status) {
            (_, SubscriberStatus::Confirmed) => ConfirmOutcome::AlreadyConfirmed,
            (Some(_), _) => ConfirmOutcome::Invalid,
            (None, _) if expires_at <= now => ConfirmOutcome::Invalid,
            (None, SubscriberStatus::Pending) => {
                sqlx::query(
                    "UPDATE subscribers SET status = 'confirmed', confirmed_at = $1, updated_at = $2
                     WHERE id = $3 AND status = 'pending'",
                )
                .bind(now)
                .bind(now)
                .bind(&subscriber_id)
                .execute(&mut *tx)
                .await?;
                ConfirmOutcome::Confirmed
            }
            // Unsubscribed or bounced since the link was sent: an old link must not re-enrol.
            (None, _) => ConfirmOutcome::Invalid,
        };
        if used_at.is_none() && outcome != ConfirmOutcome::Invalid {
            sqlx::query("UPDATE confirmation_tokens SET used_at = $1 WHERE token_hash = $2")
                .bind(now)
                .bind(token_hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    pub(super) async fn unsubscribe_token_status(
        &self,
        token: &str,
    ) -> StoreResult<Option<SubscriberStatus>> {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM subscribers WHERE unsubscribe_token = $1")
                .bind(token)
                .fetch_optional(&self.pool)
                .await?;
        status.as_deref().map(parse_col).transpose()
    }

    pub(super) async fn unsubscribe(
        &self,
        token: &str,
        now: Millis,
    ) -> StoreResult<UnsubscribeOutcome> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT id, status FROM subscribers WHERE unsubscribe_token = $1{}",
            self.dialect.for_update()
        ))
        .bind(token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(UnsubscribeOutcome::UnknownToken);
        };
        let id: String = row.try_get("id")?;
        let status: SubscriberStatus = parse_col(row.try_get("status")?)?;
        let outcome = match status {
            SubscriberStatus::Pending | SubscriberStatus::Confirmed => {
                sqlx::query(
                    "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = $1,
                         updated_at = $2
                     WHERE id = $3",
                )
                .bind(now)
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                UnsubscribeOutcome::Unsubscribed
            }
            SubscriberStatus::Unsubscribed | SubscriberStatus::Bounced => {
                UnsubscribeOutcome::AlreadyGone
            }
        };
        suppress_queued(&mut tx, &id, "unsubscribed", now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    pub(super) async fn claim(
        &self,
        now: Millis,
        lease: Millis,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let claim_id = new_id();
        // Committed before any SMTP work.
        let mut tx = self.begin_write().await?;
        self.requeue_expired_claims(&mut tx, now).await?;
        // Taken out of the queue; the claim row below holds them from here. On PostgreSQL,
        // SKIP LOCKED lets concurrent workers take disjoint rows without waiting for each
        // other.
        let taken: Vec<AnyRow> = sqlx::query(&format!(
            "WITH due AS MATERIALIZED (
                 SELECT {row} AS row_locator FROM delivery_queue
                 WHERE run_at <= $1
                   AND (digest_id IS NULL OR digest_id NOT IN
                        (SELECT id FROM digests WHERE status = 'paused'))
                 ORDER BY run_at
                 LIMIT $2{lock})
             DELETE FROM delivery_queue WHERE {row} IN (SELECT row_locator FROM due)
             RETURNING delivery_id, run_at",
            lock = self.dialect.skip_locked(),
            row = self.dialect.row_locator(),
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut run_at = HashMap::with_capacity(taken.len());
        for r in &taken {
            run_at.insert(
                r.try_get::<String, _>("delivery_id")?,
                r.try_get::<Millis, _>("run_at")?,
            );
        }
        let claimed = sqlx::query(&format!(
            "UPDATE deliveries SET status = 'sending', claim_id = $1, attempts = attempts + 1,
                 updated_at = $2
             WHERE id IN ({}) AND status = 'queued'
             RETURNING id, kind, digest_id, attempts, expires_at, created_at, subscriber_id",
            self.dialect.list(3)
        ))
        .bind(&claim_id)
        .bind(now)
        .bind(json_list(run_at.keys().map(String::as_str)))
        .fetch_all(&mut *tx)
        .await?;
        // Nothing due, or (should the queue ever hold a delivery no longer queued) nothing to
        // send of what was taken.
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        // Each column is read once: a read from an `AnyRow` looks the name up and copies the
        // value, and a claim reads thousands.
        let subscriber_ids = claimed
            .iter()
            .map(|r| r.try_get::<String, _>("subscriber_id"))
            .collect::<Result<Vec<_>, _>>()?;
        // The subscribers as they are now: whoever left since the fan-out is not mailed. In
        // the claim's transaction: a SQLite connection of the read pool would have dropped its
        // page cache, since the claim has just written.
        let rows = sqlx::query(&format!(
            "SELECT id, email, name, status, unsubscribe_token FROM subscribers WHERE id IN ({})",
            self.dialect.list(1)
        ))
        .bind(json_list(subscriber_ids.iter().map(String::as_str)))
        .fetch_all(&mut *tx)
        .await?;
        let mut subscribers = HashMap::with_capacity(rows.len());
        for r in &rows {
            subscribers.insert(r.try_get::<String, _>("id")?, r);
        }
        let mut ids = Vec::with_capacity(claimed.len());
        let mut digests = HashSet::new();
        let mut deliveries = Vec::with_capacity(claimed.len());
        for (r, subscriber_id) in claimed.iter().zip(subscriber_ids) {
            let id: String = r.try_get("id")?;
            let digest_id: Option<String> = r.try_get("digest_id")?;
            ids.push(id.clone());
            digests.extend(digest_id.clone());
            // Deliveries go with their subscriber (ON DELETE CASCADE), so this is there.
            let Some(s) = subscribers.get(&subscriber_id) else {
                continue;
            };
            deliveries.push((
                run_at.get(&id).copied().unwrap_or_default(),
                ClaimedDelivery {
                    id,
                    claim_id: claim_id.clone(),
                    kind: parse_col(r.try_get("kind")?)?,
                    digest_id,
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                    expires_at: r.try_get("expires_at")?,
                    created_at: r.try_get("created_at")?,
                    subscriber_id,
                    email: s.try_get("email")?,
                    name: s.try_get("name")?,
                    subscriber_status: parse_col(s.try_get("status")?)?,
                    unsubscribe_token: s.try_get("unsubscribe_token")?,
                },
            ));
        }
        // The claim holds every delivery it took (the lease's expiry requeues what is left
        // of them) and waits for the outcomes of those handed out.
        sqlx::query(
            "INSERT INTO claims (id, lease_until, deliveries, remaining) VALUES ($1, $2, $3, $4)",
        )
        .bind(&claim_id)
        .bind(now + lease)
        .bind(json_list(ids.iter().map(String::as_str)))
        .bind(i64::try_from(deliveries.len()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        for digest_id in &digests {
            sqlx::query("INSERT INTO claim_digests (digest_id, claim_id) VALUES ($1, $2)")
                .bind(digest_id)
                .bind(&claim_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        // RETURNING gives no order; the oldest due go first.
        deliveries.sort_by_key(|(run_at, _)| *run_at);
        Ok(deliveries.into_iter().map(|(_, d)| d).collect())
    }

    /// Claims whose lease ran out (their worker died or hung): what they still hold goes back
    /// into the queue, due now, and the claim is gone; a late outcome from the old holder no
    /// longer matches (`deliveries.claim_id`) and is ignored.
    async fn requeue_expired_claims(&self, tx: &mut AnyConnection, now: Millis) -> StoreResult<()> {
        let expired: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT id, deliveries FROM claims WHERE lease_until < $1
             ORDER BY lease_until LIMIT 16{}",
            self.dialect.skip_locked()
        ))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for (claim_id, ids) in expired {
            // The update first: it waits for an outcome being recorded for the same rows,
            // and then sees it.
            let requeued: Vec<String> = sqlx::query_scalar(&format!(
                "UPDATE deliveries SET status = 'queued', claim_id = NULL, updated_at = $3
                 WHERE id IN ({}) AND claim_id = $2 AND status = 'sending'
                 RETURNING id",
                self.dialect.list(1)
            ))
            .bind(&ids)
            .bind(&claim_id)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            self.enqueue(tx, &requeued, now).await?;
            sqlx::query("DELETE FROM claims WHERE id = $1")
                .bind(&claim_id)
                .execute(&mut *tx)
                .await?;
            tracing::warn!(claim_id = %claim_id, "a claim's lease expired; its unsent deliveries are queued again");
        }
        Ok(())
    }

    /// Puts deliveries just set back to `queued` into the queue, due at `run_at`. A row
    /// already there stays as it is: a second copy of a delivery is never queued.
    async fn enqueue(
        &self,
        tx: &mut AnyConnection,
        ids: &[impl AsRef<str>],
        run_at: Millis,
    ) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
             SELECT id, digest_id, $2 FROM deliveries WHERE id IN ({})
             ON CONFLICT (delivery_id) DO NOTHING",
            self.dialect.list(1)
        ))
        .bind(json_list(ids.iter().map(AsRef::as_ref)))
        .bind(run_at)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    pub(super) async fn record(&self, outcomes: &[Recorded], now: Millis) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        // An outcome counts only while its claim still holds the delivery: after the lease
        // expired the delivery was queued again, maybe claimed by someone else.
        let held = "id = $2 AND claim_id = $3 AND status = 'sending'";
        // Outcomes per claim, to know when a claim is done: each delivery a claim handed
        // out comes back exactly once (a forgotten subscriber's delivery is gone from the
        // table, but its outcome still counts).
        let mut recorded: HashMap<&str, i64> = HashMap::new();
        for r in outcomes {
            *recorded.entry(r.claim_id.as_str()).or_default() += 1;
        }
        // Most outcomes are "sent": those go in one statement per claim instead of one per
        // message (the claims of a busy worker hold tens of deliveries each).
        let mut sent: HashMap<&str, Vec<&str>> = HashMap::new();
        for r in outcomes.iter().filter(|r| r.outcome == Outcome::Sent) {
            sent.entry(r.claim_id.as_str())
                .or_default()
                .push(r.delivery_id.as_str());
        }
        let mut sent_count = 0;
        for (claim_id, ids) in sent {
            sent_count += sqlx::query(&format!(
                "UPDATE deliveries SET status = 'sent', sent_at = $1, last_error = NULL,
                     smtp_code = NULL, updated_at = $1
                 WHERE id IN ({}) AND claim_id = $2 AND status = 'sending'",
                self.dialect.list(3)
            ))
            .bind(now)
            .bind(claim_id)
            .bind(json_list(ids))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        for r in outcomes.iter().filter(|r| r.outcome != Outcome::Sent) {
            // $1 = now, $2 = delivery id, $3 = claim id; outcome-specific values follow. The
            // second value: when it is due again, for what goes back into the queue.
            let (set, due_again) = match &r.outcome {
                Outcome::Sent => continue,
                Outcome::Retry { run_at, .. } => (
                    "status = 'queued', claim_id = NULL, smtp_code = $4, last_error = $5",
                    Some(*run_at),
                ),
                Outcome::Failed { .. } => (
                    "status = 'failed', failed_at = $1, smtp_code = $4, last_error = $5,
                     bounce = $6",
                    None,
                ),
                Outcome::Suppressed { .. } => ("status = 'suppressed', last_error = $4", None),
                // Not attempted: the attempt the claim counted is given back.
                Outcome::Released => (
                    "status = 'queued', claim_id = NULL,
                     attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END",
                    Some(now),
                ),
                Outcome::Deferred { run_at } => (
                    "status = 'queued', claim_id = NULL,
                     attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END",
                    Some(*run_at),
                ),
            };
            let sql = format!("UPDATE deliveries SET {set}, updated_at = $1 WHERE {held}");
            let mut q = sqlx::query(&sql)
                .bind(now)
                .bind(r.delivery_id.as_str())
                .bind(r.claim_id.as_str());
            match &r.outcome {
                Outcome::Retry { code, error, .. } => {
                    q = q.bind(code.map(i64::from)).bind(error.as_str());
                }
                Outcome::Failed {
                    code,
                    error,
                    bounce,
                } => {
                    q = q
                        .bind(code.map(i64::from))
                        .bind(error.as_str())
                        .bind(i64::from(*bounce));
                }
                Outcome::Suppressed { reason } => q = q.bind(reason.as_str()),
                Outcome::Sent | Outcome::Released | Outcome::Deferred { .. } => {}
            }
            if q.execute(&mut *tx).await?.rows_affected() == 0 {
                continue;
            }
            if let Some(run_at) = due_again {
                self.enqueue(&mut tx, &[r.delivery_id.as_str()], run_at)
                    .await?;
            }
            if let Outcome::Failed { bounce: true, .. } = r.outcome {
                sqlx::query(
                    "UPDATE subscribers SET status = 'bounced', bounced_at = $1, updated_at = $1
                     WHERE id = $2 AND status IN ('pending', 'confirmed')",
                )
                .bind(now)
                .bind(r.subscriber_id.as_str())
                .execute(&mut *tx)
                .await?;
                suppress_queued(&mut tx, &r.subscriber_id, "bounced", now).await?;
            }
        }
        // In the same order in every transaction: two workers' transactions (PostgreSQL)
        // never each wait for a claim the other has updated.
        let mut recorded: Vec<_> = recorded.into_iter().collect();
        recorded.sort_unstable();
        for (claim_id, n) in recorded {
            let remaining: Option<i64> = sqlx::query_scalar(
                "UPDATE claims SET remaining = remaining - $2 WHERE id = $1 RETURNING remaining",
            )
            .bind(claim_id)
            .bind(n)
            .fetch_optional(&mut *tx)
            .await?;
            if remaining.is_some_and(|r| r <= 0) {
                sqlx::query("DELETE FROM claims WHERE id = $1")
                    .bind(claim_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if sent_count > 0 {
            sqlx::query(
                "INSERT INTO sent_per_minute (minute, sent) VALUES ($1, $2)
                 ON CONFLICT (minute) DO UPDATE SET sent = sent_per_minute.sent + excluded.sent",
            )
            .bind(now / 60_000)
            .bind(i64::try_from(sent_count).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn next_due(&self) -> StoreResult<Option<Millis>> {
        let due: Option<Millis> = sqlx::query_scalar(
            "SELECT MIN(t) FROM (
                 SELECT MIN(run_at) AS t FROM delivery_queue
                 UNION ALL
                 SELECT MIN(lease_until) AS t FROM claims) AS next",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(due)
    }

    pub(super) async fn subscriber_by_email(
        &self,
        email: &str,
    ) -> StoreResult<Option<SubscriberRow>> {
        let row = sqlx::query(
            "SELECT id, email, name, status, consent_at, consent_ip, consent_user_agent,
                    confirmed_at, created_at
             FROM subscribers WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(subscriber_from_row).transpose()
    }

    pub(super) async fn subscriber_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM subscribers")
            .fetch_one(&self.pool)
            .await?)
    }

    pub(super) async fn deliveries_for(
        &self,
        subscriber_id: &str,
    ) -> StoreResult<Vec<DeliveryRow>> {
        let rows = sqlx::query(
            "SELECT id, kind, subscriber_id, status, attempts, smtp_code, last_error
             FROM deliveries WHERE subscriber_id = $1 ORDER BY created_at, id",
        )
        .bind(subscriber_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRow {
                    id: r.try_get("id")?,
                    kind: parse_col(r.try_get("kind")?)?,
                    subscriber_id: r.try_get("subscriber_id")?,
                    status: parse_col(r.try_get("status")?)?,
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
                    smtp_code: r
                        .try_get::<Option<i64>, _>("smtp_code")?
                        .and_then(|c| u16::try_from(c).ok()),
                    last_error: r.try_get("last_error")?,
                })
            })
            .collect()
    }
}

const DIGEST_COLUMNS: &str = "id, subject, intro, status, paused_reason, send_at, daily_date,
    expires_at, recipients, started_at, finished_at, note, created_at,
    (SELECT COUNT(*) FROM digest_items di WHERE di.digest_id = digests.id) AS item_count";

fn digest_from_row(r: &AnyRow) -> StoreResult<DigestRow> {
    Ok(DigestRow {
        id: r.try_get("id")?,
        subject: r.try_get("subject")?,
        intro: r.try_get("intro")?,
        status: parse_col(r.try_get("status")?)?,
        paused_reason: r.try_get("paused_reason")?,
        send_at: r.try_get("send_at")?,
        daily_date: r.try_get("daily_date")?,
        expires_at: r.try_get("expires_at")?,
        recipients: r.try_get("recipients")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        note: r.try_get("note")?,
        created_at: r.try_get("created_at")?,
        item_count: r.try_get("item_count")?,
        items: Vec::new(),
    })
}

fn item_from_row(r: &AnyRow) -> StoreResult<ItemRow> {
    Ok(ItemRow {
        id: r.try_get("id")?,
        title: r.try_get("title")?,
        url: r.try_get("url")?,
        summary: r.try_get("summary")?,
        source: r.try_get("source")?,
        status: r.try_get("status")?,
        digest_id: r.try_get("digest_id")?,
        created_at: r.try_get("created_at")?,
    })
}

fn subscriber_from_row(r: &AnyRow) -> StoreResult<SubscriberRow> {
    Ok(SubscriberRow {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        name: r.try_get("name")?,
        status: parse_col(r.try_get("status")?)?,
        consent_at: r.try_get("consent_at")?,
        consent_ip: r.try_get("consent_ip")?,
        consent_user_agent: r.try_get("consent_user_agent")?,
        confirmed_at: r.try_get("confirmed_at")?,
        created_at: r.try_get("created_at")?,
    })
}

fn not_found(what: &str, id: &str) -> StoreError {
    StoreError::NotFound(format!("no {what} with id {id}"))
}

impl Sql {
    pub(super) async fn add_item(&self, item: &NewItem, now: Millis) -> StoreResult<ItemRow> {
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

    pub(super) async fn list_items(&self, status: Option<&str>) -> StoreResult<Vec<ItemRow>> {
        let rows = sqlx::query(
            "SELECT id, title, url, summary, source, status, digest_id, created_at FROM items
             WHERE $1 IS NULL OR status = $1 ORDER BY created_at, id LIMIT 1000",
        )
        .bind(status)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(item_from_row).collect()
    }

    /// Locks an item that must still be pending; `NotFound`, or `Conflict` with `why_not`.
    async fn lock_pending_item(
        &self,
        tx: &mut AnyConnection,
        id: &str,
        why_not: &str,
    ) -> StoreResult<()> {
        let status: Option<String> = sqlx::query_scalar(&format!(
            "SELECT status FROM items WHERE id = $1{}",
            self.dialect.for_update()
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        match status.as_deref() {
            None => Err(not_found("item", id)),
            Some("pending") => Ok(()),
            Some(_) => Err(StoreError::Conflict(format!("item {id} {why_not}"))),
        }
    }

    pub(super) async fn delete_item(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        self.lock_pending_item(&mut tx, id, "is part of a digest; cancel that digest first")
            .await?;
        sqlx::query("DELETE FROM items WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn create_digest(
        &self,
        d: &NewDigest,
        daily_date: Option<&str>,
        now: Millis,
    ) -> StoreResult<DigestRow> {
        let mut tx = self.begin_write().await?;
        let item_ids: Vec<String> = match &d.items {
            ItemSelection::Pending => sqlx::query_scalar(&format!(
                "SELECT id FROM items WHERE status = 'pending' ORDER BY created_at, id LIMIT 100{}",
                self.dialect.for_update()
            ))
            .fetch_all(&mut *tx)
            .await?,
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
        tx.commit().await?;
        self.digest(&id)
            .await?
            .ok_or_else(|| not_found("digest", &id))
    }

    pub(super) async fn digest(&self, id: &str) -> StoreResult<Option<DigestRow>> {
        let row = sqlx::query(&format!(
            "SELECT {DIGEST_COLUMNS} FROM digests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut digest = digest_from_row(&row)?;
        let items = sqlx::query(
            "SELECT i.id, i.title, i.url, i.summary, i.source, i.status, i.digest_id, i.created_at
             FROM digest_items di JOIN items i ON i.id = di.item_id
             WHERE di.digest_id = $1 ORDER BY di.position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        digest.items = items
            .iter()
            .map(item_from_row)
            .collect::<StoreResult<_>>()?;
        Ok(Some(digest))
    }

    pub(super) async fn list_digests(&self, limit: u32) -> StoreResult<Vec<DigestRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {DIGEST_COLUMNS} FROM digests ORDER BY created_at DESC, id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(digest_from_row).collect()
    }

    /// Runs a guarded state change (`… WHERE id = ? AND status IN (…)`); when it changes
    /// nothing, says why: no such digest, or `refuse(current status)`.
    async fn transition<'q>(
        &self,
        id: &str,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
        refuse: impl Fn(&str) -> String,
    ) -> StoreResult<()> {
        let mut conn = self.write_conn().await?;
        if query.execute(&mut *conn).await?.rows_affected() == 1 {
            return Ok(());
        }
        drop(conn);
        match self.digest_status(id).await? {
            None => Err(not_found("digest", id)),
            Some(s) => Err(StoreError::Conflict(refuse(&s))),
        }
    }

    pub(super) async fn schedule_digest(
        &self,
        id: &str,
        send_at: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        let q = sqlx::query(
            "UPDATE digests SET status = 'scheduled', send_at = $1, updated_at = $2
             WHERE id = $3 AND status IN ('draft', 'scheduled')",
        )
        .bind(send_at)
        .bind(now)
        .bind(id);
        self.transition(id, q, |s| {
            format!("digest {id} is {s}; only a draft or scheduled digest can be scheduled")
        })
        .await
    }

    pub(super) async fn cancel_digest(&self, id: &str, now: Millis) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let status: Option<String> = sqlx::query_scalar(&format!(
            "SELECT status FROM digests WHERE id = $1{}",
            self.dialect.for_update()
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        match status.as_deref() {
            None => return Err(not_found("digest", id)),
            Some("cancelled") => return Ok(()),
            Some("draft" | "scheduled") => {}
            Some(s) => {
                return Err(StoreError::Conflict(format!(
                    "digest {id} is {s}; only a draft or scheduled digest can be cancelled (pause a sending one)"
                )));
            }
        }
        sqlx::query("UPDATE digests SET status = 'cancelled', updated_at = $1 WHERE id = $2")
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
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn pause_digest(
        &self,
        id: &str,
        reason: &str,
        now: Millis,
    ) -> StoreResult<()> {
        if self.digest_status(id).await?.as_deref() == Some("paused") {
            return Ok(());
        }
        let q = sqlx::query(
            "UPDATE digests SET paused_from = status, status = 'paused', paused_reason = $1,
                 updated_at = $2
             WHERE id = $3 AND status IN ('scheduled', 'sending')",
        )
        .bind(reason)
        .bind(now)
        .bind(id);
        self.transition(id, q, |s| {
            format!("digest {id} is {s}; only a scheduled or sending digest can be paused")
        })
        .await
    }

    pub(super) async fn resume_digest(&self, id: &str, now: Millis) -> StoreResult<()> {
        match self.digest_status(id).await?.as_deref() {
            None => Err(not_found("digest", id)),
            Some("paused") => {
                let q = sqlx::query(
                    "UPDATE digests SET status = COALESCE(paused_from, 'scheduled'),
                         paused_from = NULL, updated_at = $1
                     WHERE id = $2 AND status = 'paused'",
                )
                .bind(now)
                .bind(id);
                self.transition(id, q, |s| format!("digest {id} is {s}, not paused"))
                    .await
            }
            Some("scheduled" | "sending" | "sent") => Ok(()),
            Some(s) => Err(StoreError::Conflict(format!(
                "digest {id} is {s}; only a paused digest can be resumed"
            ))),
        }
    }

    pub(super) async fn digest_status(&self, id: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT status FROM digests WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub(super) async fn due_digests(&self, now: Millis) -> StoreResult<Vec<DigestRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {DIGEST_COLUMNS} FROM digests
             WHERE status = 'scheduled' AND send_at <= $1 ORDER BY send_at"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(digest_from_row).collect()
    }

    pub(super) async fn fan_out(
        &self,
        id: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE digests SET status = 'sending', started_at = $2, expires_at = $3,
                 updated_at = $2
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
        // The snapshot: confirmed subscribers at this moment, one row each, never twice.
        let inserted = sqlx::query(&format!(
            "INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
                 created_at, updated_at)
             SELECT {}, 'digest', s.id, $1, 'queued', $3, $2, $2
             FROM subscribers s WHERE s.status = 'confirmed'
             ON CONFLICT (digest_id, subscriber_id) DO NOTHING",
            self.dialect.fan_out_id(4)
        ))
        .bind(id)
        .bind(now)
        .bind(expires_at)
        .bind(new_id())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
             SELECT id, digest_id, $2 FROM deliveries WHERE digest_id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Every delivery of the digest was inserted just now: deliveries are made only here,
        // and only once per digest (the status moved from `scheduled` above). Counting them
        // again read a million index entries while holding SQLite's write lock.
        sqlx::query("UPDATE digests SET recipients = $2 WHERE id = $1")
            .bind(id)
            .bind(i64::try_from(inserted).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        self.notify_work(&mut tx).await?;
        tx.commit().await?;
        self.refresh_queue_statistics().await;
        Ok(Some(inserted))
    }

    /// PostgreSQL: a fan-out grows the queue from nothing to the whole list at once, and until
    /// autovacuum gets round to it (a minute or more) the planner believes the table still
    /// holds the few rows it had. On those statistics it planned each claim as "read every
    /// queued row and sort them" (120 ms and a 5 MB on-disk sort per claim at 100,000) instead
    /// of reading the first rows of the `run_at` index (6 ms). Best effort: without it the
    /// claims are slower, not wrong.
    async fn refresh_queue_statistics(&self) {
        if self.dialect == Dialect::Postgres
            && let Err(e) = sqlx::query("ANALYZE delivery_queue")
                .execute(&self.pool)
                .await
        {
            tracing::warn!(error = %e, "could not refresh the queue's statistics after a fan-out");
        }
    }

    pub(super) async fn mark_missed(&self, id: &str, note: &str, now: Millis) -> StoreResult<bool> {
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

    pub(super) async fn finish_digests(&self, now: Millis) -> StoreResult<Vec<String>> {
        let mut conn = self.write_conn().await?;
        Ok(sqlx::query_scalar(
            "UPDATE digests SET status = 'sent', finished_at = $1, updated_at = $1
             WHERE status = 'sending'
               AND NOT EXISTS (SELECT 1 FROM delivery_queue q WHERE q.digest_id = digests.id)
               AND NOT EXISTS (SELECT 1 FROM claim_digests c WHERE c.digest_id = digests.id)
             RETURNING id",
        )
        .bind(now)
        .fetch_all(&mut *conn)
        .await?)
    }

    pub(super) async fn schedule(&self) -> StoreResult<Option<StoredSchedule>> {
        let row = sqlx::query(
            "SELECT time, timezone, CAST(enabled AS INTEGER) AS enabled, last_date
             FROM daily_schedule WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let time: String = r.try_get("time")?;
        let tz: String = r.try_get("timezone")?;
        let enabled = r.try_get::<i64, _>("enabled")? != 0;
        let schedule = DailySchedule::parse(&time, &tz, enabled)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(StoredSchedule {
            schedule,
            last_date: r.try_get("last_date")?,
        }))
    }

    pub(super) async fn put_schedule(
        &self,
        s: &DailySchedule,
        handled_through: &str,
        now: Millis,
    ) -> StoreResult<()> {
        let mut conn = self.write_conn().await?;
        sqlx::query(
            "INSERT INTO daily_schedule (id, time, timezone, enabled, last_date, updated_at)
             VALUES (1, $1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET time = $1, timezone = $2, enabled = $3,
                 last_date = CASE WHEN daily_schedule.last_date IS NULL
                     OR daily_schedule.last_date < $4 THEN $4 ELSE daily_schedule.last_date END,
                 updated_at = $5",
        )
        .bind(s.time_str())
        .bind(s.timezone.name())
        .bind(s.enabled)
        .bind(handled_through)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    pub(super) async fn take_daily_date(&self, date: &str, now: Millis) -> StoreResult<bool> {
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

    pub(super) async fn add_event(
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

    pub(super) async fn events(&self, limit: u32) -> StoreResult<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT at, kind, digest_id, message FROM events ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    digest_id: r.try_get("digest_id")?,
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }

    pub(super) async fn list_subscribers(
        &self,
        status: Option<SubscriberStatus>,
        limit: u32,
        after: Option<&str>,
    ) -> StoreResult<Vec<SubscriberRow>> {
        let rows = sqlx::query(
            "SELECT id, email, name, status, consent_at, consent_ip, consent_user_agent,
                    confirmed_at, created_at
             FROM subscribers
             WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR id > $2)
             ORDER BY id LIMIT $3",
        )
        .bind(status.map(|s| s.as_str()))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(subscriber_from_row).collect()
    }
}

impl Sql {
    pub(super) async fn delivery_counts(
        &self,
        digest_id: Option<&str>,
    ) -> StoreResult<DeliveryCounts> {
        // Two statements rather than `$1 IS NULL OR digest_id = $1`, which SQLite can only
        // answer by reading every delivery ever made.
        let filter = if digest_id.is_some() {
            "WHERE digest_id = $1"
        } else {
            ""
        };
        let sql = format!(
            "SELECT
                 COUNT(CASE WHEN status = 'queued' AND attempts = 0 THEN 1 END) AS queued,
                 COUNT(CASE WHEN status = 'queued' AND attempts > 0 THEN 1 END) AS retrying,
                 COUNT(CASE WHEN status = 'sending' THEN 1 END) AS sending,
                 COUNT(CASE WHEN status = 'sent' THEN 1 END) AS sent,
                 COUNT(CASE WHEN status = 'failed' AND bounce = 0 THEN 1 END) AS failed,
                 COUNT(CASE WHEN status = 'failed' AND bounce <> 0 THEN 1 END) AS bounced,
                 COUNT(CASE WHEN status = 'suppressed' THEN 1 END) AS suppressed,
                 MIN(sent_at) AS first_sent_at,
                 MAX(sent_at) AS last_sent_at
             FROM deliveries {filter}"
        );
        let mut query = sqlx::query(&sql);
        if let Some(id) = digest_id {
            query = query.bind(id);
        }
        let r = query.fetch_one(&self.pool).await?;
        Ok(DeliveryCounts {
            queued: r.try_get("queued")?,
            retrying: r.try_get("retrying")?,
            sending: r.try_get("sending")?,
            sent: r.try_get("sent")?,
            failed: r.try_get("failed")?,
            bounced: r.try_get("bounced")?,
            suppressed: r.try_get("suppressed")?,
            first_sent_at: r.try_get("first_sent_at")?,
            last_sent_at: r.try_get("last_sent_at")?,
        })
    }

    /// The enqueue-to-sent latency at rank `rank` (0-based) among a digest's sent messages.
    pub(super) async fn latency_at_rank(
        &self,
        digest_id: &str,
        rank: i64,
    ) -> StoreResult<Option<Millis>> {
        Ok(sqlx::query_scalar(
            "SELECT sent_at - created_at AS latency FROM deliveries
             WHERE digest_id = $1 AND status = 'sent'
             ORDER BY latency LIMIT 1 OFFSET $2",
        )
        .bind(digest_id)
        .bind(rank)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub(super) async fn reply_codes(
        &self,
        digest_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT smtp_code, COUNT(*) AS n FROM deliveries
             WHERE digest_id = $1 AND smtp_code IS NOT NULL
             GROUP BY smtp_code ORDER BY n DESC, smtp_code LIMIT $2",
        )
        .bind(digest_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("smtp_code")?, r.try_get("n")?)))
            .collect()
    }

    pub(super) async fn subscriber_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM subscribers GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    /// Counts per UTC day (days since the epoch) of a subscriber timestamp column since `since`.
    pub(super) async fn per_day(
        &self,
        column: DayColumn,
        since: Millis,
    ) -> StoreResult<Vec<(i64, i64)>> {
        let col = column.as_str();
        let rows = sqlx::query(&format!(
            "SELECT {col} / 86400000 AS day, COUNT(*) AS n FROM subscribers
             WHERE {col} >= $1 GROUP BY {col} / 86400000 ORDER BY day"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("day")?, r.try_get("n")?)))
            .collect()
    }

    /// Of the sign-ups since `since`: how many, and how many are confirmed (or were, before
    /// leaving).
    pub(super) async fn confirmation_counts(&self, since: Millis) -> StoreResult<(i64, i64)> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS total, COUNT(confirmed_at) AS confirmed
             FROM subscribers WHERE created_at >= $1",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok((r.try_get("total")?, r.try_get("confirmed")?))
    }

    /// When the longest-waiting due delivery became due.
    pub(super) async fn oldest_due(&self, now: Millis) -> StoreResult<Option<Millis>> {
        Ok(
            sqlx::query_scalar("SELECT MIN(run_at) FROM delivery_queue WHERE run_at <= $1")
                .bind(now)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Messages sent per minute (minutes since the epoch) since `since`.
    pub(super) async fn sent_per_minute(&self, since: Millis) -> StoreResult<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT minute, sent AS n FROM sent_per_minute WHERE minute >= $1 / 60000
             ORDER BY minute",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("minute")?, r.try_get("n")?)))
            .collect()
    }

    pub(super) async fn recent_failures(&self, limit: i64) -> StoreResult<Vec<FailureRow>> {
        let rows = sqlx::query(
            "SELECT d.id, d.kind, d.digest_id, s.email, d.smtp_code, d.last_error, d.failed_at
             FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
             WHERE d.failed_at IS NOT NULL ORDER BY d.failed_at DESC, d.id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FailureRow {
                    delivery_id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    digest_id: r.try_get("digest_id")?,
                    email: r.try_get("email")?,
                    smtp_code: r.try_get("smtp_code")?,
                    error: r
                        .try_get::<Option<String>, _>("last_error")?
                        .unwrap_or_default(),
                    at: r.try_get("failed_at")?,
                })
            })
            .collect()
    }
}

impl Sql {
    /// Inserts already-confirmed subscribers (an import whose consent the operator vouches
    /// for); addresses already known are left exactly as they are. Returns how many were new.
    pub(super) async fn import_confirmed(
        &self,
        rows: &[(EmailAddress, Option<SubscriberName>)],
        source: &str,
        now: Millis,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let mut inserted = 0;
        for (email, name) in rows {
            inserted += sqlx::query(
                "INSERT INTO subscribers (id, email, name, status, unsubscribe_token, consent_at,
                     consent_user_agent, confirmed_at, created_at, updated_at)
                 VALUES ($1, $2, $3, 'confirmed', $4, $5, $6, $5, $5, $5)
                 ON CONFLICT (email) DO NOTHING",
            )
            .bind(new_id())
            .bind(email.as_str())
            .bind(name.as_ref().map(SubscriberName::as_str))
            .bind(Token::generate().as_str())
            .bind(now)
            .bind(source)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Erases a subscriber with their tokens and deliveries (right to erasure).
    pub(super) async fn forget(&self, email: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let id: Option<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM subscribers WHERE email = $1{}",
            self.dialect.for_update()
        ))
        .bind(email)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else { return Ok(false) };
        for sql in [
            "DELETE FROM deliveries WHERE subscriber_id = $1",
            "DELETE FROM confirmation_tokens WHERE subscriber_id = $1",
            "DELETE FROM subscribers WHERE id = $1",
        ] {
            sqlx::query(sql).bind(&id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// Copies committed pages from the WAL into the database file, mostly off the write path.
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold (1,000
/// pages), copying and fsync included, and every write queued behind that commit waits:
/// under a few thousand sign-ups a second that was most of their p99 (BENCHMARKS.md). Here
/// passive checkpoints on a read connection copy the bulk without blocking anyone, repeated
/// while each still finds much to copy; then the write connection, in its turn, copies what
/// was committed meanwhile, which completes the
/// checkpoint so the next write starts the WAL over (a checkpoint from another connection
/// never catches up with a busy writer, and the WAL would grow). Every commit reaches the
/// disk within about `CHECKPOINT_EVERY`. Ends when the store is dropped or closed.
async fn checkpoints(pool: AnyPool, writer: AnyPool, mut gone: mpsc::Receiver<()>) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = gone.recv() => return,
            () = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        let done = async {
            // Passes on a read connection until one has little left to copy (what was
            // committed during the previous pass), so the writer's pass, which holds up every
            // write for its copy and its fsyncs, is short: one pass left it ~25 ms of copying
            // under a sign-up load, most of a sign-up's p99 (BENCHMARKS.md, item 28).
            let mut copied = 0;
            for _ in 0..READER_CHECKPOINT_PASSES {
                let (_, _, now_copied): (i64, i64, i64) =
                    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                        .fetch_one(&pool)
                        .await?;
                let fresh = now_copied - copied;
                copied = now_copied;
                if fresh < LITTLE_LEFT_TO_COPY {
                    break;
                }
            }
            let mut conn = writer.acquire().await?;
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut *conn)
                .await
        }
        .await;
        match done {
            Ok(_) => failing = false,
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "background WAL checkpoint failed; writes checkpoint by themselves past 64 MB of WAL");
                }
                failing = true;
            }
        }
    }
}

/// Queued mail for someone who left is suppressed at once, not just skipped at send time.
async fn suppress_queued(
    tx: &mut AnyConnection,
    subscriber_id: &str,
    reason: &str,
    now: Millis,
) -> StoreResult<()> {
    sqlx::query(
        "DELETE FROM delivery_queue
         WHERE delivery_id IN (SELECT id FROM deliveries WHERE subscriber_id = $1)",
    )
    .bind(subscriber_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE deliveries SET status = 'suppressed', last_error = $1, updated_at = $2
         WHERE subscriber_id = $3 AND status = 'queued'",
    )
    .bind(reason)
    .bind(now)
    .bind(subscriber_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
