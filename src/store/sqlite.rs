//! SQLite-only machinery: the two pools (reads, and the one write connection) and the
//! background WAL checkpoint.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection as _, Executor as _};
use tokio::sync::mpsc;

use super::{Store, StoreError, StoreResult};

/// How often a background task copies the WAL into the database file (see `checkpoints`).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// At most this many checkpoint passes on a read connection before the writer's.
const READER_CHECKPOINT_PASSES: usize = 4;
/// WAL frames (pages): a pass that copied fewer leaves the rest to the writer's pass.
const LITTLE_LEFT_TO_COPY: i64 = 256;

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

/// The file a SQLite URL names (`None` for an in-memory database).
pub(super) fn file_path(url: &str) -> Option<PathBuf> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    if path.as_os_str().is_empty() || path.to_string_lossy().contains(":memory:") {
        return None;
    }
    Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// Every connection starts with these: WAL, so readers never wait for the writer. The
/// writer checkpoints by itself only past 64 MB of WAL, should the background task
/// (`checkpoints`) ever fall behind.
const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;
     PRAGMA wal_autocheckpoint = 16384;";

/// Pool options for a SQLite file.
fn sqlite_pool(connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(connections)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(PRAGMAS).await?;
                Ok(())
            })
        })
}

/// The write pool's options: one connection, never left inside a failed transaction.
fn writer_pool() -> AnyPoolOptions {
    sqlite_pool(1)
        // A transaction whose COMMIT or ROLLBACK failed (a full disk: SQLite has already
        // rolled it back itself) leaves the driver counting it as open, and every later
        // `BEGIN` on that connection failed ("non-zero transaction depth") until a restart.
        // The ping flushes the rollback a dropped transaction queued; a connection still
        // inside a transaction after it is closed, and the pool opens a fresh one.
        .after_release(|conn, _| {
            Box::pin(async move {
                conn.ping().await?;
                let clean = !conn.is_in_transaction();
                if !clean {
                    tracing::warn!(
                        "a database connection was left inside a failed transaction; replacing it"
                    );
                }
                Ok(clean)
            })
        })
}

/// Why a SQLite database cannot be opened for writing, found before any pool waits for it:
/// a read-only file, a folder where SQLite cannot create its `-wal` and `-shm` files, or
/// what SQLite itself says (taking the write lock once, so a read-only database fails here).
async fn writable(url: &str, path: Option<&Path>) -> StoreResult<()> {
    let open = |why: String| StoreError::Open(why);
    if let Some(path) = path {
        let shown = path.display();
        if path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| open(format!("{shown}: the file cannot be written ({e})")))?;
        }
        let folder = path.parent().unwrap_or(Path::new("."));
        let check = folder.join(format!(".squeeze-write-check-{}", std::process::id()));
        std::fs::File::create(&check).map_err(|e| {
            open(format!(
                "{shown}: its folder {} is not writable, and SQLite keeps its -wal and -shm files there ({e})",
                folder.display()
            ))
        })?;
        let _ = std::fs::remove_file(&check);
    }
    let shown = path.map_or_else(|| url.to_owned(), |p| p.display().to_string());
    let mut conn = AnyConnection::connect(url)
        .await
        .map_err(|e| open(format!("{shown}: {e}")))?;
    let checked = async {
        conn.execute(PRAGMAS).await?;
        conn.execute("BEGIN IMMEDIATE; ROLLBACK").await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    let _ = conn.close().await;
    checked.map_err(|e| open(format!("{shown}: {e}")))
}

/// The read pool and the write pool (one connection: see `Store::writer`).
pub(super) async fn pools(url: &str) -> StoreResult<(AnyPool, AnyPool)> {
    let path = file_path(url);
    let url = sqlite_url(url);
    // A URL that asks for read-only (`mode=ro`) is taken at its word.
    if !url.contains("mode=ro") {
        writable(&url, path.as_deref()).await?;
    }
    // The file exists now: no later connection may create it again. A pool reopens
    // connections (the writer's, after a failed transaction), and one that recreated a
    // deleted file would write into an empty database nobody will ever read.
    let url = url.replace("mode=rwc", "mode=rw");
    let pool = sqlite_pool(4).connect(&url).await?;
    // A write waits for its turn up to 5 minutes (the longest write, a fan-out to a million,
    // takes seconds), not the 10 s after which SQLite's own lock gives up; past that it
    // fails and HTTP answers 503.
    let writer = writer_pool()
        .acquire_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .connect(&url)
        .await?;
    Ok((pool, writer))
}

impl Store {
    /// Starts the checkpoint task; it ends with the last clone.
    pub(super) fn start_sqlite_tasks(&mut self) {
        let (alive, gone) = mpsc::channel(1);
        tokio::spawn(checkpoints(self.pool.clone(), self.writer.clone(), gone));
        self._checkpoints = Some(alive);
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

#[cfg(test)]
mod tests {
    use super::sqlite_url;

    #[test]
    fn a_file_url_asks_sqlite_to_create_the_file() {
        assert_eq!(sqlite_url("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            sqlite_url("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(sqlite_url("sqlite://a.db?mode=ro"), "sqlite://a.db?mode=ro");
        assert_eq!(sqlite_url("sqlite::memory:"), "sqlite::memory:");
    }
}
