//! The only place with SQL, cut by concern: each file below is one `impl Store` block with the
//! statements of its concern. One implementation for both backends through sqlx's `Any`
//! driver: the statements are portable (`$n` parameters, `ON CONFLICT`, `RETURNING`), and
//! where the backends differ (locking, lists, generated ids) a statement is written out whole
//! for each, side by side ([`PerDialect`]).
//!
//! - `sign_ups`: sign-ups, written in batches (one transaction for those that arrive together);
//! - `subscribers`: confirmation, unsubscribe, tokens, import, erasure, lookups;
//! - `digests`: items, digests and their transitions, the fan-out;
//! - `claim`: due deliveries into a worker's claim (the send path's first half);
//! - `record`: their outcomes, each guarded by the claim (its second half);
//! - `queue`: the queue itself: enqueue, claims taken over, the next due, suppression;
//! - `stats`: counts for reporting;
//! - `retention`: finished digests rolled up, old deliveries deleted in batches;
//! - `bounces`: bounces and complaints heard after sending, and what they change;
//! - `feeds`: feeds, the entries seen of each, and the items they make;
//! - `schedule`: the daily schedule and the event log;
//! - `workers`: heartbeats, the scheduler's leadership, work notifications (sent and heard);
//! - `sqlite`: SQLite-only machinery (the pools, checkpoints);
//! - `rows`: the rows callers read.

mod bounces;
mod claim;
mod digests;
mod fan_out;
mod feeds;
mod health;
mod queue;
mod record;
mod retention;
mod rows;
mod schedule;
mod sessions;
mod sign_ups;
mod sqlite;
mod stats;
mod subscribers;
mod test_sends;
mod waves;
mod webhooks;
mod workers;

pub use bounces::{BounceCounts, BounceEventRow, BounceRecorded, BounceTarget, DigestHealth};
pub use feeds::{FeedRow, SeenEntry};
pub use retention::PrunedBatch;
pub use rows::{
    ClaimedDelivery, DeliveryRow, DigestRow, EventRow, FailureRow, HistoryRow, ItemRow, Recorded,
    SubscriberRow, WaveRow,
};
pub use schedule::StoredSchedule;
pub use stats::{DayColumn, DeliveryCounts};
pub use subscribers::{ImportRow, SignUp, UnsubscribeOutcome};
pub use waves::PlannedWave;
pub use workers::{Leadership, SCHEDULER_LOCK, WORK_CHANNEL};

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use tokio::sync::mpsc;
use uuid::Uuid;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Every PostgreSQL connection plans each statement for its parameters and for the tables as
/// they are when it runs. sqlx prepares each statement once per connection, and after five
/// runs PostgreSQL keeps a generic plan if it looks no dearer; the queue and the deliveries
/// grow from nothing to the whole list in a minute, so a worker that waited on an empty
/// queue kept plans made for empty tables: the claim's delete and the outcome's update read
/// the whole table per statement (`Seq Scan`), never replanned while nothing ANALYZEs it.
/// At 1,000,000 subscribers that made the send ~1,000/s instead of ~15,000/s
/// (BENCHMARKS.md, issue 23 c). Planning costs ~0.1 ms a statement.
///
/// And without JIT compilation: the store's statements are index lookups and counts over one
/// digest, which JIT never pays back, but a large row estimate crosses `jit_above_cost`:
/// 157 ms of the 882 ms `/api/stats` spent counting the live digests with 30,000,000 rows of
/// history was compiling (BENCHMARKS.md, history and retention).
const POSTGRES_SESSION: &str = "SET plan_cache_mode = force_custom_plan; SET jit = off";

/// Which database a URL names; its scheme decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What went wrong in the store, by kind: callers branch on these and never see the driver.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Every connection stayed busy for the whole wait for one (on SQLite: the write turn,
    /// behind a very long write): transient, try again shortly.
    #[error("database error: {0}")]
    Busy(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database cannot be reached (connection refused or lost, pool closed).
    #[error("database error: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Any other failure of the database or of a statement.
    #[error("database error: {0}")]
    Fault(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A write found no room on the disk (SQLite's "database or disk is full", PostgreSQL's
    /// `disk_full`): nothing was written; the next write after space returns succeeds.
    #[error("the database cannot be written: disk full")]
    Full(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Writes are refused: the database file was deleted or replaced under this process, or
    /// the database is read-only. Says which file and why.
    #[error("{0}")]
    Unwritable(String),
    /// The database could not be opened at start (read-only file or folder, a server that
    /// refuses connections): names the file or host and the cause.
    #[error("cannot open the database {0}")]
    Open(String),
    #[error("database migration failed: {0}")]
    Migrate(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the database holds a value this version does not understand: {0}")]
    Corrupt(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => Self::Busy(e.into()),
            sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(e.into()),
            sqlx::Error::Database(ref db) => match database_fault(db.as_ref()) {
                Some(DatabaseFault::Full) => Self::Full(e.into()),
                Some(DatabaseFault::Busy) => Self::Busy(e.into()),
                Some(DatabaseFault::Unavailable) => Self::Unavailable(e.into()),
                Some(DatabaseFault::ReadOnly) => {
                    Self::Unwritable(format!("the database is read-only: {db}"))
                }
                None => Self::Fault(e.into()),
            },
            // A stored value a row type refuses (`#[sqlx(try_from = "String")]`): the
            // domain's own parse error, such as `unknown subscriber status "x"`.
            sqlx::Error::ColumnDecode { source, .. } => Self::Corrupt(source.to_string()),
            e => Self::Fault(e.into()),
        }
    }
}

enum DatabaseFault {
    Full,
    Busy,
    Unavailable,
    ReadOnly,
}

/// What a database's own error code says about the storage (SQLite result codes, PostgreSQL
/// SQLSTATEs), where it is not a statement's fault.
fn database_fault(db: &dyn sqlx::error::DatabaseError) -> Option<DatabaseFault> {
    let code = db.code()?;
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let n: i32 = code.parse().ok()?;
        // SQLite: the primary result code is the low byte of the extended one.
        return match n & 0xff {
            13 => Some(DatabaseFault::Full),             // SQLITE_FULL
            8 => Some(DatabaseFault::ReadOnly),          // SQLITE_READONLY
            10 | 14 => Some(DatabaseFault::Unavailable), // SQLITE_IOERR, SQLITE_CANTOPEN
            _ => None,
        };
    }
    match code.as_ref() {
        "53100" => Some(DatabaseFault::Full),     // disk_full
        "53300" => Some(DatabaseFault::Busy),     // too_many_connections
        "25006" => Some(DatabaseFault::ReadOnly), // read_only_sql_transaction
        // connection_exception, admin/crash shutdown, cannot_connect_now, a login refused
        c if c.starts_with("08") || c.starts_with("57P") || c.starts_with("28") => {
            Some(DatabaseFault::Unavailable)
        }
        _ => None,
    }
}

impl StoreError {
    /// Whether this says the database cannot take writes at all (a full disk, a file gone,
    /// a server away): what `/healthz` reports until a write succeeds again.
    pub fn is_storage_fault(&self) -> bool {
        matches!(
            self,
            Self::Full(_) | Self::Unwritable(_) | Self::Unavailable(_)
        )
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e.into())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// One statement written out whole for each backend, where the two differ (locking, lists
/// bound as JSON, generated ids). Where they do not differ, a statement is one literal.
#[derive(Clone, Copy, Debug)]
struct PerDialect {
    sqlite: &'static str,
    postgres: &'static str,
}

impl PerDialect {
    fn get(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }
}

/// The store. Cheap to clone (pool handles).
#[derive(Clone, Debug)]
pub struct Store {
    /// Reads (on PostgreSQL, everything: `writer` is the same pool there).
    pool: AnyPool,
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
    dialect: Dialect,
    kind: DatabaseKind,
    url: String,
    /// Sign-ups go to batchers that write whatever arrived together in one transaction
    /// (`sign_ups`): a transaction each capped /subscribe at about 2,000 requests/s with a
    /// p99 over 100 ms on SQLite (one writer at a time) and at 900-1,300 on PostgreSQL (a
    /// flush to disk each).
    sign_ups: Option<mpsc::Sender<sign_ups::SignUpJob>>,
    /// SQLite: held, never used, by every clone; when the last one goes, the background
    /// checkpoint task (`sqlite::checkpoints`) sees its channel close and ends.
    _checkpoints: Option<mpsc::Sender<()>>,
    /// Whether writes work (`health`): the last write's storage fault, the probe's, and on
    /// SQLite whether the file is still there.
    write_health: Arc<health::WriteHealth>,
    /// Held by every clone; when the last one goes, the write probe and the file watch end.
    _background: Option<Arc<tokio_util::sync::DropGuard>>,
    /// Wakes this process's idle workers when mail is queued (`work_queued`).
    wake: Arc<tokio::sync::Notify>,
    /// PostgreSQL: asks for a NOTIFY to the other nodes' workers (`workers::announce_work`).
    announce: Option<Arc<tokio::sync::Notify>>,
    /// Wakes this process's scheduler when a digest is scheduled or resumed, or the daily
    /// schedule changes (`schedule_wake`).
    schedule_wake: Arc<tokio::sync::Notify>,
}

impl Store {
    /// Opens the database the URL names (creating an SQLite file if needed), without migrating.
    pub async fn connect(url: &str, kind: &DatabaseKind) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let (pool, writer, dialect) = match kind {
            DatabaseKind::Sqlite => {
                let (pool, writer) = sqlite::pools(url).await?;
                (pool, writer, Dialect::Sqlite)
            }
            DatabaseKind::Postgres => {
                postgres_reachable(url).await?;
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::Executor::execute(conn, POSTGRES_SESSION).await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?;
                (pool.clone(), pool, Dialect::Postgres)
            }
        };
        let mut store = Self {
            pool,
            writer,
            dialect,
            kind: kind.clone(),
            url: url.to_owned(),
            sign_ups: None,
            _checkpoints: None,
            write_health: Arc::default(),
            _background: None,
            wake: Arc::default(),
            announce: None,
            schedule_wake: Arc::default(),
        };
        let background = tokio_util::sync::CancellationToken::new();
        tokio::spawn(store.clone().probe_writes(background.clone()));
        if dialect == Dialect::Postgres {
            let announce = Arc::new(tokio::sync::Notify::new());
            tokio::spawn(workers::announce_work(
                store.pool.clone(),
                announce.clone(),
                background.clone(),
            ));
            store.announce = Some(announce);
        }
        if dialect == Dialect::Sqlite {
            if let Some(path) = sqlite::file_path(url) {
                store.write_health.watch(path);
            }
            store.start_sqlite_tasks();
        }
        store.start_sign_up_batchers();
        store._background = Some(Arc::new(background.drop_guard()));
        Ok(store)
    }

    pub fn kind(&self) -> &DatabaseKind {
        &self.kind
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Whether the database answers and takes writes: the last write's storage fault (until
    /// a write succeeds again; a probe writes every few seconds), a deleted or replaced
    /// SQLite file, then a `SELECT 1`.
    pub async fn health(&self) -> StoreResult<()> {
        self.write_health.status()?;
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// This backend's text of a statement written for each.
    fn sql(&self, statement: &PerDialect) -> &'static str {
        statement.get(self.dialect)
    }

    /// The connection for a write outside a transaction; on SQLite, the process's turn to
    /// write (see `writer`).
    async fn write_conn(&self) -> StoreResult<PoolConnection<Any>> {
        self.write_health.admit()?;
        let conn = self.writer.acquire().await.map_err(StoreError::from);
        if conn.is_err() {
            self.write_health.note(&conn);
        }
        conn
    }

    /// A transaction that will write: on SQLite it takes this process's write turn and the
    /// database's write lock up front, so a read inside it cannot go stale; on PostgreSQL
    /// reads lock their rows (`FOR UPDATE`).
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Any>> {
        self.begin_write_as(match self.dialect {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        })
        .await
    }

    /// `begin_write` for statements whose plans do not depend on how big the tables are
    /// (inserts from a parameter, lookups by a unique key): on PostgreSQL the transaction
    /// lets the plan cache keep their generic plans (`plan_cache_mode = auto`, in the same
    /// round trip as `BEGIN`), which the session's `force_custom_plan` (`POSTGRES_SESSION`)
    /// would make again for every run. Sign-ups spent 14 % of the server's CPU planning
    /// (`perf record` of the backends under scripts/bench-subscribe.sh, BENCHMARKS.md).
    async fn begin_write_with_generic_plans(&self) -> StoreResult<Transaction<'static, Any>> {
        self.begin_write_as(match self.dialect {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN; SET LOCAL plan_cache_mode = auto",
        })
        .await
    }

    /// A write transaction opened by `begin`, admitted by and noted in `write_health`.
    async fn begin_write_as(&self, begin: &'static str) -> StoreResult<Transaction<'static, Any>> {
        self.write_health.admit()?;
        let tx = self
            .writer
            .begin_with(begin)
            .await
            .map_err(StoreError::from);
        if tx.is_err() {
            self.write_health.note(&tx);
        }
        tx
    }

    /// Commits a write transaction, noting whether writes work (see `health`). A failed
    /// commit leaves nothing behind: the transaction is rolled back as it drops, and on
    /// SQLite a connection still inside one is discarded (`sqlite::sqlite_pool`).
    async fn commit(&self, tx: Transaction<'static, Any>) -> StoreResult<()> {
        let done = tx.commit().await.map_err(StoreError::from);
        self.write_health.note(&done);
        done
    }

    /// What wakes this process's idle workers when mail is queued: the worker waits on it
    /// (and on its poll, at most a second).
    pub fn wake(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// What wakes this process's scheduler when an editor schedules or resumes a digest or
    /// changes the daily schedule here (the API and the scheduler share `squeeze serve`): it
    /// ticks at once, and a digest sent "now" does not wait for its tick. Another node's
    /// scheduler sees the change at its next tick, within a second.
    pub fn schedule_wake(&self) -> Arc<tokio::sync::Notify> {
        self.schedule_wake.clone()
    }

    /// Says that mail was queued, once the transaction that queued it has committed: this
    /// process's idle workers wake at once, and on PostgreSQL every node's by a NOTIFY sent
    /// after the commit (`announce_work`), one for however many commits came meanwhile.
    /// Not a NOTIFY inside the transaction: PostgreSQL takes a database-wide lock at the
    /// commit of a transaction that notifies and holds it past the flush to disk, so every
    /// transaction that queued mail committed one at a time, each waiting for the previous
    /// one's flush (sign-ups: BENCHMARKS.md, issue 23 d). A worker woken early finds nothing
    /// new, and one that misses a wake-up (a process that died between the commit and the
    /// NOTIFY) finds the mail at its next poll.
    fn work_queued(&self) {
        self.wake.notify_one();
        if let Some(announce) = &self.announce {
            announce.notify_one();
        }
    }
}

/// A PostgreSQL server that cannot be reached fails the start at once (within 5 s for one
/// that does not answer), naming the host and the cause, instead of after the pool's wait.
async fn postgres_reachable(url: &str) -> StoreResult<()> {
    use sqlx::Connection as _;
    use std::str::FromStr as _;
    let at = match sqlx::postgres::PgConnectOptions::from_str(url) {
        Ok(o) => format!("at {}:{}", o.get_host(), o.get_port()),
        Err(_) => "(the URL does not parse)".to_owned(),
    };
    match tokio::time::timeout(Duration::from_secs(5), AnyConnection::connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(StoreError::Open(format!("{at}: {e}"))),
        Err(_) => Err(StoreError::Open(format!("{at}: no answer within 5 s"))),
    }
}

/// Strings as a JSON array, for a list parameter: the statements read it as rows for `IN
/// (…)` (`json_each($n)` on SQLite, `jsonb_array_elements_text($n::jsonb)` on PostgreSQL).
/// One statement text whatever the list's length, so it is prepared once and (PostgreSQL)
/// planned once; a list of `$n`s made a statement per length, more than the connection's
/// statement cache holds, and each was parsed and planned again.
fn json_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.into_iter().collect();
    // Straight from the strings, not through a `serde_json::Value` (a copy of each). Strings
    // always serialise; were it ever to fail, the empty text is not JSON and the statement
    // fails loudly.
    serde_json::to_string(&items).unwrap_or_default()
}

/// Rows as a JSON array, for a statement that reads a batch (`json_each`,
/// `json_to_recordset`). Such rows always serialise; were it ever to fail, the empty text is
/// not JSON and the statement fails loudly.
fn json_rows(rows: &[impl serde::Serialize]) -> String {
    serde_json::to_string(rows).unwrap_or_default()
}

fn new_id() -> String {
    Uuid::now_v7().to_string()
}

fn parse_col<T: std::str::FromStr<Err = String>>(s: &str) -> StoreResult<T> {
    s.parse().map_err(StoreError::Corrupt)
}

fn not_found(what: &str, id: &str) -> StoreError {
    StoreError::NotFound(format!("no {what} with id {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use squeeze_test_support::db::TestDb;

    /// A store on a fresh, migrated PostgreSQL database (the database dropped with the
    /// `TestDb`); `None`, after printing why, without PostgreSQL (a failure under CI=true).
    pub(super) async fn postgres_store() -> Option<(TestDb, Store)> {
        let db = TestDb::postgres_or_skip().await?;
        let store = Store::connect(db.url(), &DatabaseKind::Postgres)
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        Some((db, store))
    }

    /// What only one backend understands (SQLite has window functions such as `row_number()`
    /// since 3.25): a statement for the other that uses it was
    /// copied to the wrong side.
    const POSTGRES_ONLY: [&str; 5] = ["FOR UPDATE", "jsonb", "ctid", "to_hex(", "lpad("];
    const SQLITE_ONLY: [&str; 3] = ["json_each(", "rowid", "printf("];

    /// Each pair differs (else it would be one literal), and neither side uses what only the
    /// other backend has.
    pub(super) fn assert_dialects(statements: &[(&str, PerDialect)]) {
        for (name, s) in statements {
            assert_ne!(
                s.sqlite, s.postgres,
                "{name}: the same for both; make it one"
            );
            assert_eq!(s.get(Dialect::Sqlite), s.sqlite, "{name}");
            assert_eq!(s.get(Dialect::Postgres), s.postgres, "{name}");
            for word in POSTGRES_ONLY {
                assert!(!s.sqlite.contains(word), "{name}: SQLite text has {word:?}");
            }
            for word in SQLITE_ONLY {
                assert!(
                    !s.postgres.contains(word),
                    "{name}: PostgreSQL text has {word:?}"
                );
            }
        }
    }

    #[test]
    fn a_list_parameter_is_a_json_array_of_its_strings() {
        assert_eq!(json_list(["a", "b\"c"]), r#"["a","b\"c"]"#);
        assert_eq!(json_list([]), "[]");
    }

    #[test]
    fn a_stored_value_the_domain_refuses_is_corrupt_not_a_fault() {
        let e = StoreError::from(sqlx::Error::ColumnDecode {
            index: "\"status\"".into(),
            source: "unknown subscriber status \"gone\"".into(),
        });
        assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the database holds a value this version does not understand: \
             unknown subscriber status \"gone\""
        );
        assert!(matches!(
            StoreError::from(sqlx::Error::PoolTimedOut),
            StoreError::Busy(_)
        ));
    }
}
