//! Whether the database takes writes, as this process last found: the last write's storage
//! fault (a full disk, a server away), cleared by the next write that succeeds (a few seconds
//! after the last fault: `RECOVERED_AFTER`); a tiny write
//! every `PROBE_EVERY` (`write_probe`, one row) so the answer is fresh when nothing else
//! writes; and, on SQLite, whether the path still names the file this process has open
//! (deleted or replaced under it, its writes would go nowhere), asked before every write
//! transaction (one `stat`, next to a commit's fsync), so no write goes into a file that is
//! no longer there. `/healthz` answers from this.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Store, StoreError, StoreResult};
use crate::domain::clock::now_ms;

/// How often the probe writes its row.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Writes work again once one succeeds this long after the last storage fault: on a full
/// SQLite disk a small write (the probe, an outcome) can find room that a sign-up does not,
/// and `/healthz` must not flap between the two.
const RECOVERED_AFTER: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
pub(super) struct WriteHealth {
    /// The last write's storage fault, said as the store says it, and when it happened.
    failing: Mutex<Option<(String, Instant)>>,
    /// SQLite: the file this process opened and its identity (device, inode).
    file: OnceLock<(PathBuf, (u64, u64))>,
    /// SQLite: why the path no longer names the open file.
    gone: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl WriteHealth {
    /// Notes a write's outcome: a storage fault is remembered (one ERROR when writes start
    /// failing), a success forgets it (one INFO when they work again).
    pub(super) fn note<T>(&self, result: &StoreResult<T>) {
        match result {
            Ok(_) => {
                let mut failing = lock(&self.failing);
                if failing
                    .as_ref()
                    .is_some_and(|(_, at)| at.elapsed() >= RECOVERED_AFTER)
                {
                    *failing = None;
                    tracing::info!("the database can be written again");
                }
            }
            Err(e) if e.is_storage_fault() => {
                let mut failing = lock(&self.failing);
                if failing.is_none() {
                    tracing::error!(error = %e, "the database cannot be written; writes answer 503 until one succeeds");
                }
                *failing = Some((e.to_string(), Instant::now()));
            }
            Err(_) => {}
        }
    }

    /// SQLite: remembers the file just opened, whose identity every write checks.
    pub(super) fn watch(&self, path: PathBuf) {
        if let Ok(opened) = std::fs::metadata(&path) {
            let _ = self.file.set((path, (opened.dev(), opened.ino())));
        }
    }

    /// Refuses a write while the database file is gone or replaced. The file is looked at
    /// here, at every write, not by a timer: a sign-up accepted in between would be written
    /// into a file no one will ever open again.
    pub(super) fn admit(&self) -> StoreResult<()> {
        if let Some((path, identity)) = self.file.get() {
            self.set_gone(file_problem(path, *identity));
        }
        match lock(&self.gone).as_ref() {
            Some(why) => Err(StoreError::Unwritable(why.clone())),
            None => Ok(()),
        }
    }

    /// Whether writes work, as far as this process knows.
    pub(super) fn status(&self) -> StoreResult<()> {
        self.admit()?;
        match lock(&self.failing).as_ref() {
            Some((why, _)) => Err(StoreError::Unwritable(why.clone())),
            None => Ok(()),
        }
    }

    fn set_gone(&self, why: Option<String>) {
        let mut gone = lock(&self.gone);
        match (&*gone, &why) {
            (None, Some(w)) => tracing::error!("{w}"),
            (Some(_), None) => {
                tracing::info!("the database file is back; writes are accepted again")
            }
            _ => {}
        }
        *gone = why;
    }
}

impl Store {
    /// Writes the probe row every `PROBE_EVERY` until `stop`.
    pub(super) async fn probe_writes(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(PROBE_EVERY) => {}
            }
            if self.writer.is_closed() {
                return;
            }
            let result = self.probe_once().await;
            if let Err(e) = &result
                && !e.is_storage_fault()
            {
                // Not the storage's fault (say, before the first migration): nothing to report.
                tracing::debug!(error = %e, "write probe failed");
            }
        }
    }

    async fn probe_once(&self) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let written = sqlx::query(
            "INSERT INTO write_probe (id, written_at) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
        )
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        if let Err(e) = written {
            let e = StoreError::from(e);
            let result = Err(e);
            self.write_health.note(&result);
            return result;
        }
        self.commit(tx).await
    }
}

/// Why `path` no longer names the file of this identity, if it does not: deleted, moved
/// away or replaced (a restore copied over it, say). Writes are refused, naming the path,
/// until the same file is back at that path.
fn file_problem(path: &std::path::Path, identity: (u64, u64)) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if (m.dev(), m.ino()) == identity => None,
        Ok(_) => Some(format!(
            "the database file {} was replaced while Squeeze had it open; writes are refused (put the original back, or restart to use the new one)",
            path.display()
        )),
        Err(e) => Some(format!(
            "the database file {} is gone ({e}); writes are refused (put it back, or restart to start over)",
            path.display()
        )),
    }
}
