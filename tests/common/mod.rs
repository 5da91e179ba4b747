//! Shared test harness: a real Squeeze (HTTP on an ephemeral port, SQLite file in a temp dir,
//! worker) wired to the in-process SMTP server.
#![allow(dead_code)]

pub mod smtp;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use squeeze::app::{App, Roles};
use squeeze::config::Config;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use smtp::SmtpServer;

pub const TEMPLATES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");
pub const WAIT: Duration = Duration::from_secs(10);
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct Options {
    pub smtp_url: Option<String>,
    pub worker: bool,
    /// The real scheduler loop; off by default so tests drive `tick(now)` with their own clock.
    pub scheduler: bool,
    pub database: Option<TestDb>,
    pub settings: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            smtp_url: None,
            worker: true,
            scheduler: false,
            database: None,
            settings: Vec::new(),
        }
    }
}

/// A fresh database for one test: an SQLite file in a temporary folder, or — when
/// `SQUEEZE_TEST_DATABASE=postgres` — a schema of its own in the PostgreSQL database at
/// `SQUEEZE_TEST_POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/test`), dropped when
/// the last clone goes.
#[derive(Clone)]
pub struct TestDb(Arc<DbInner>);

struct DbInner {
    url: String,
    /// Holds the SQLite file, the outbox and logs.
    dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

pub fn postgres_base_url() -> String {
    std::env::var("SQUEEZE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

/// Whether this run exercises PostgreSQL instead of SQLite.
pub fn on_postgres() -> bool {
    std::env::var("SQUEEZE_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

impl TestDb {
    pub async fn new() -> Self {
        if on_postgres() {
            Self::postgres()
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL for the test suite: {e}"))
        } else {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}", dir.path().join("squeeze.db").display());
            Self(Arc::new(DbInner {
                url,
                dir,
                postgres: None,
            }))
        }
    }

    /// A new schema in the test PostgreSQL database, or why there is none.
    pub async fn postgres() -> Result<Self, String> {
        use sqlx::Connection as _;
        let base = postgres_base_url();
        let mut conn =
            tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&base))
                .await
                .map_err(|_| format!("no answer from {base}"))?
                .map_err(|e| format!("cannot connect to {base}: {e}"))?;
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        conn.close().await.ok();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let dir = tempfile::tempdir().expect("tempdir");
        Ok(Self(Arc::new(DbInner {
            url,
            dir,
            postgres: Some((base, schema)),
        })))
    }

    pub fn url(&self) -> &str {
        &self.0.url
    }

    pub fn dir(&self) -> &std::path::Path {
        self.0.dir.path()
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

impl Drop for DbInner {
    fn drop(&mut self) {
        if let Some((base, schema)) = self.postgres.take() {
            // Drop is not async; a short-lived runtime on its own thread does the clean-up.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    use sqlx::Connection as _;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&base).await {
                        // This blocks the test's thread: should a connection of the test
                        // still hold a lock in the schema (a task left mid-transaction), the
                        // schema stays behind rather than the test hanging.
                        let _ = sqlx::query("SET lock_timeout = '10s'")
                            .execute(&mut c)
                            .await;
                        if let Err(e) = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                            .execute(&mut c)
                            .await
                        {
                            eprintln!("test schema {schema} left behind: {e}");
                        }
                    }
                });
                Ok::<(), std::io::Error>(())
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub url: String,
    pub app: App,
    pub database: TestDb,
    pub outbox: PathBuf,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(smtp: &SmtpServer) -> Self {
        Self::spawn_with(Options {
            smtp_url: Some(smtp.url()),
            ..Options::default()
        })
        .await
    }

    pub async fn spawn_with(opts: Options) -> Self {
        let database = match opts.database {
            Some(db) => db,
            None => TestDb::new().await,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let outbox = database.dir().join("outbox");
        let mut settings: Vec<(String, String)> = vec![
            ("database_url".into(), database.url().to_owned()),
            ("public_url".into(), url.clone()),
            ("templates".into(), TEMPLATES.into()),
            ("outbox".into(), outbox.display().to_string()),
            ("from".into(), "Squeeze Test <news@squeeze.test>".into()),
            ("rate".into(), "10000".into()),
            ("subscribe_per_minute".into(), "0".into()),
            ("smtp_timeout".into(), "2s".into()),
            ("lease".into(), "30s".into()),
            ("admin_token".into(), ADMIN_TOKEN.into()),
            // Retries in milliseconds instead of minutes, so fault tests finish quickly.
            ("retry_initial".into(), "50ms".into()),
            ("retry_max".into(), "200ms".into()),
            ("throttle_cooldown".into(), "100ms".into()),
        ];
        if let Some(smtp) = opts.smtp_url {
            settings.push(("smtp_url".into(), smtp));
        }
        settings.extend(opts.settings);
        let config = Config::load(None, settings).expect("test config is valid");
        let app = App::start(config).await.expect("app starts");
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        {
            let (app, shutdown) = (app.clone(), shutdown.clone());
            let roles = Roles {
                scheduler: opts.scheduler,
                worker: false,
            };
            tasks.push(tokio::spawn(async move {
                app.serve(listener, roles, shutdown).await
            }));
        }
        if opts.worker {
            let worker = app.worker();
            tasks.push(tokio::spawn(worker.run(shutdown.clone())));
        }
        Self {
            url,
            app,
            database,
            outbox,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            shutdown,
            tasks,
        }
    }

    /// Graceful stop (as on SIGTERM); returns once HTTP and worker have finished.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            t.await.expect("task joined").expect("task ended cleanly");
        }
        self.app.store.close().await;
    }

    pub async fn subscribe_json(&self, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/subscribe", self.url))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn subscribe(&self, email: &str) -> reqwest::Response {
        self.subscribe_json(serde_json::json!({ "email": email }))
            .await
    }

    pub async fn status_of(&self, email: &str) -> Option<String> {
        self.app
            .store
            .subscriber_by_email(email)
            .await
            .expect("query")
            .map(|s| s.status.to_string())
    }

    /// An admin API request with the bearer token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// Runs a SQL statement against the test database.
    pub async fn exec(&self, sql: &str) {
        let pool = self.db().await;
        sqlx::query(sql).execute(&pool).await.expect(sql);
        pool.close().await;
    }

    /// Direct SQL for assertions the API does not expose (`$1` parameters: both backends).
    pub async fn db(&self) -> sqlx::AnyPool {
        self.database.pool().await
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        let pool = self.db().await;
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.expect(sql);
        pool.close().await;
        v
    }

    pub async fn text(&self, sql: &str) -> String {
        let pool = self.db().await;
        let v: String = sqlx::query_scalar(sql).fetch_one(&pool).await.expect(sql);
        pool.close().await;
        v
    }
}

/// Polls `check` until it holds, or panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `squeeze` binary as a child process (for crash and signal tests), logging to a file in
/// the database's folder.
pub fn spawn_squeeze(
    args: &[&str],
    database: &TestDb,
    env: &[(&str, String)],
) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(database.dir().join("squeeze.log"))
        .expect("log file");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_squeeze"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SQUEEZE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .current_dir(database.dir())
        .env("SQUEEZE_DATABASE_URL", database.url())
        .env("SQUEEZE_TEMPLATES", TEMPLATES)
        .env("SQUEEZE_FROM", "Squeeze Test <news@squeeze.test>")
        .env("RUST_LOG", "squeeze=info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn squeeze")
}

/// Sends SIGTERM (graceful stop) to a child.
pub fn terminate(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
}

/// Waits for a child to exit, up to `timeout`.
pub async fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "process did not exit within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Inserts subscribers straight into the database: `(status, how many)`, with addresses
/// `<status><i>@<domain>`. Returns the emails of the confirmed ones.
pub async fn seed(app: &TestApp, groups: &[(&str, usize)], domain: &str) -> Vec<String> {
    let pool = app.db().await;
    let mut tx = pool.begin().await.expect("tx");
    let mut confirmed = Vec::new();
    for (status, n) in groups {
        for i in 0..*n {
            let email = format!("{status}{i}@{domain}");
            sqlx::query(
                "INSERT INTO subscribers (id, email, name, status, unsubscribe_token, consent_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 0, 0, 0)",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(&email)
            .bind(format!("Reader {i}"))
            .bind(*status)
            .bind(squeeze::domain::Token::generate().as_str())
            .execute(&mut *tx)
            .await
            .expect("seed");
            if *status == "confirmed" {
                confirmed.push(email);
            }
        }
    }
    tx.commit().await.expect("commit");
    pool.close().await;
    confirmed
}

/// Makes a digest of one fresh item and fans it out now; returns its id.
pub async fn send_digest_now(app: &TestApp) -> String {
    send_digest_with_intro_now(app, None).await
}

/// `send_digest_now`, with this introduction.
pub async fn send_digest_with_intro_now(app: &TestApp, intro: Option<&str>) -> String {
    use squeeze::domain::{ItemSelection, NewDigest, NewItem};
    let now = squeeze::domain::clock::now_ms();
    let item = NewItem::parse("News", "https://example.com/n", "Summary", None).expect("item");
    app.app.store.add_item(&item, now).await.expect("item");
    let d = NewDigest::parse("Today", intro, ItemSelection::Pending).expect("digest");
    let digest = app
        .app
        .store
        .create_digest(&d, None, now)
        .await
        .expect("digest");
    app.app
        .store
        .schedule_digest(&digest.id, now, now)
        .await
        .expect("schedule");
    let report = app
        .app
        .scheduler()
        .tick(chrono::Utc::now())
        .await
        .expect("tick");
    assert_eq!(report.fanned_out.len(), 1, "fanned out");
    digest.id
}
