//! A database of its own for one test or one benchmark run: an SQLite file in a temporary
//! folder, or a fresh schema in a PostgreSQL database, dropped when the last clone goes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::Connection as _;

/// The PostgreSQL server of the test suite: `SQUEEZE_TEST_POSTGRES_URL`, by default
/// `postgres://root@127.0.0.1:5432/test`.
pub fn postgres_base_url() -> String {
    std::env::var("SQUEEZE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

/// Whether this run exercises PostgreSQL instead of SQLite (`SQUEEZE_TEST_DATABASE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("SQUEEZE_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

/// A fresh database: an SQLite file in a temporary folder, or a schema of its own in a
/// PostgreSQL database. The folder (SQLite file, outbox, logs) and the schema go when the
/// last clone is dropped, unless [`TestDb::keep_dir`] was called.
#[derive(Clone)]
pub struct TestDb(Arc<DbInner>);

struct DbInner {
    url: String,
    path: PathBuf,
    /// Holds the SQLite file, the outbox and logs; `None` once kept.
    dir: Mutex<Option<tempfile::TempDir>>,
    /// The server and the schema to drop.
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// SQLite, or PostgreSQL when `SQUEEZE_TEST_DATABASE=postgres`; panics if that fails.
    pub async fn new() -> Self {
        if on_postgres() {
            Self::postgres()
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL for the test suite: {e}"))
        } else {
            Self::sqlite("squeeze-test-").unwrap_or_else(|e| panic!("{e:#}"))
        }
    }

    /// An SQLite file `squeeze.db` in a new temporary folder whose name starts with `prefix`.
    pub fn sqlite(prefix: &str) -> anyhow::Result<Self> {
        let dir = temp_dir(prefix)?;
        let url = format!("sqlite://{}", dir.path().join("squeeze.db").display());
        Ok(Self::with(url, dir, None))
    }

    /// A new schema in the test PostgreSQL database ([`postgres_base_url`]), or why there is
    /// none.
    pub async fn postgres() -> Result<Self, String> {
        Self::postgres_at(&postgres_base_url(), "t_", "squeeze-test-")
            .await
            .map_err(|e| format!("{e:#}"))
    }

    /// A PostgreSQL schema for a test that needs PostgreSQL whatever the backend under test:
    /// `None`, with the reason printed, where there is none (a laptop); under `CI=true` its
    /// absence fails the test instead.
    pub async fn postgres_or_skip() -> Option<Self> {
        match Self::postgres().await {
            Ok(db) => Some(db),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("PostgreSQL is required under CI=true: {e}")
            }
            Err(e) => {
                eprintln!("skipping: PostgreSQL is not available ({e})");
                None
            }
        }
    }

    /// A new schema, named `schema_prefix` and a UUID, in the PostgreSQL database at `base`,
    /// with a temporary folder (for the outbox and logs) whose name starts with `dir_prefix`.
    pub async fn postgres_at(
        base: &str,
        schema_prefix: &str,
        dir_prefix: &str,
    ) -> anyhow::Result<Self> {
        let mut conn =
            tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(base))
                .await
                .map_err(|_| anyhow::anyhow!("no answer from {base}"))?
                .with_context(|| format!("cannot connect to {base}"))?;
        let schema = format!("{schema_prefix}{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating schema {schema}"))?;
        conn.close().await.ok();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let dir = temp_dir(dir_prefix)?;
        Ok(Self::with(url, dir, Some((base.to_owned(), schema))))
    }

    fn with(url: String, dir: tempfile::TempDir, postgres: Option<(String, String)>) -> Self {
        Self(Arc::new(DbInner {
            url,
            path: dir.path().to_path_buf(),
            dir: Mutex::new(Some(dir)),
            postgres,
        }))
    }

    pub fn url(&self) -> &str {
        &self.0.url
    }

    /// The temporary folder: the SQLite file, the outbox, logs.
    pub fn dir(&self) -> &Path {
        &self.0.path
    }

    /// The PostgreSQL schema, if this database is one.
    pub fn schema(&self) -> Option<&str> {
        self.0.postgres.as_ref().map(|(_, s)| s.as_str())
    }

    /// Leaves the temporary folder in place when the database goes; returns where it is.
    pub fn keep_dir(&self) -> PathBuf {
        let mut dir = self.0.dir.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = dir.take() {
            return d.keep();
        }
        self.0.path.clone()
    }

    pub async fn pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(self.url())
            .await
            .expect("open test database")
    }
}

fn temp_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("creating a temporary folder")
}

impl Drop for DbInner {
    fn drop(&mut self) {
        if let Some((base, schema)) = self.postgres.take() {
            // Drop is not async; a short-lived runtime on its own thread does the clean-up.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    match sqlx::PgConnection::connect(&base).await {
                        Ok(mut c) => {
                            // This blocks the caller's thread: should a connection still hold
                            // a lock in the schema (a task left mid-transaction), the schema
                            // stays behind rather than the caller hanging.
                            let _ = sqlx::query("SET lock_timeout = '10s'")
                                .execute(&mut c)
                                .await;
                            if let Err(e) = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                                .execute(&mut c)
                                .await
                            {
                                eprintln!("schema {schema} left behind: {e}");
                            }
                        }
                        Err(e) => eprintln!("schema {schema} left behind: {e}"),
                    }
                });
                Ok::<(), std::io::Error>(())
            })
            .join();
        }
    }
}
