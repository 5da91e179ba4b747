//! What Squeeze's integration tests (`tests/it`) and its benchmark (`bench/`) share: a real
//! Squeeze (HTTP on an ephemeral port, a database of its own, worker) wired to the in-process
//! SMTP server, with typed helpers for what tests do through the API; the test database; child
//! processes.

pub mod api;
pub mod db;
pub mod process;
pub mod smtp;

use std::path::PathBuf;
use std::time::Duration;

use squeeze::app::{App, Roles};
use squeeze::config::Config;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use db::{TestDb, on_postgres, postgres_base_url};
pub use process::{spawn_squeeze, terminate, wait_exit};
pub use smtp::SmtpServer;

/// The product's repository (the workspace root).
pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// The product's templates.
pub const TEMPLATES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../templates");
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
            // Off, so tests count only the emails they are about; the welcome tests turn it on.
            ("welcome".into(), "false".into()),
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

    /// How many deliveries of the digest `id` a claim would take (`CLAIMABLE`).
    pub async fn claimable(&self, digest_id: &str) -> i64 {
        self.scalar(&format!(
            "SELECT COUNT(*) FROM deliveries d WHERE d.digest_id = '{digest_id}' AND {CLAIMABLE}"
        ))
        .await
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

/// A delivery `d` that a claim would take (a SQL condition): queued, and either in the queue
/// itself (welcome mail, tests, retries, waves, what an expired claim gave back) or in the
/// range of a fan-out chunk's queue row (migration 0026: after its `after_id`, up to its last
/// possible id).
pub const CLAIMABLE: &str = "d.status = 'queued' AND (
    EXISTS (SELECT 1 FROM delivery_queue q WHERE q.delivery_id = d.id)
    OR EXISTS (SELECT 1 FROM queued_chunks c
               WHERE d.id > c.after_id AND d.id <= c.id || '-ffffffffffff'))";

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

impl TestApp {
    /// Makes a digest of one fresh item and fans it out now; returns its id.
    pub async fn send_digest_now(&self) -> String {
        self.send_digest_with_intro_now(None).await
    }

    /// `send_digest_now`, with this introduction.
    pub async fn send_digest_with_intro_now(&self, intro: Option<&str>) -> String {
        use squeeze::domain::{ItemSelection, NewDigest, NewItem};
        let now = squeeze::domain::clock::now_ms();
        let item = NewItem::parse("News", "https://example.com/n", "Summary", None).expect("item");
        self.app.store.add_item(&item, now).await.expect("item");
        let d = NewDigest::parse("Today", intro, ItemSelection::Pending).expect("digest");
        let digest = self
            .app
            .store
            .create_digest(&d, None, now)
            .await
            .expect("digest");
        self.app
            .store
            .schedule_digest(&digest.id, now, now)
            .await
            .expect("schedule");
        let report = self
            .app
            .scheduler()
            .tick(chrono::Utc::now())
            .await
            .expect("tick");
        assert_eq!(report.fanned_out.len(), 1, "fanned out");
        digest.id
    }
}
