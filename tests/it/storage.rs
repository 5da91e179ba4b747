//! Storage faults a running `squeeze serve` survives without a restart: a full disk (a real,
//! tiny tmpfs filled with a ballast file), a database file deleted or replaced under it, a
//! read-only or unreachable database at start, a PostgreSQL server that drops its connections.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{self, Options, SmtpServer, TestApp, TestDb, eventually, on_postgres};

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped (lazily, so a process still
/// holding a file there cannot keep it mounted).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts one, or says why it cannot: then the test skips, except under `CI=true`.
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self {
                dir: dir.to_path_buf(),
            }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "cannot mount a tmpfs under CI=true: {why}"
                );
                eprintln!("skipped: cannot mount a tmpfs ({why})");
                None
            }
        }
    }

    /// Remounts it read-only (or read-write again).
    fn remount(&self, read_only: bool) {
        let mode = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let ok = Command::new("mount")
            .args(["-o", mode])
            .arg(&self.dir)
            .status()
            .expect("mount");
        assert!(ok.success(), "mount -o {mode} failed");
    }

    /// Writes a ballast file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("ballast");
        let mut f = std::fs::File::create(&path).expect("ballast");
        let block = vec![0u8; 64 * 1024];
        loop {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        // The last bytes a partial block could not take.
        while f.write_all(&[0u8]).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// `squeeze serve` on a free port over the SQLite file `file`, logging to the test folder.
struct Serve {
    child: Option<Child>,
    url: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Serve {
    async fn start(db: &TestDb, database_url: &str, smtp: &SmtpServer) -> Self {
        let port = helpers::free_port();
        let url = format!("http://127.0.0.1:{port}");
        let child = helpers::spawn_squeeze(
            &["serve"],
            db,
            &[
                ("SQUEEZE_DATABASE_URL", database_url.to_owned()),
                ("SQUEEZE_BIND", format!("127.0.0.1:{port}")),
                ("SQUEEZE_PUBLIC_URL", url.clone()),
                ("SQUEEZE_SMTP_URL", smtp.url()),
                ("SQUEEZE_SUBSCRIBE_PER_MINUTE", "0".to_owned()),
                ("SQUEEZE_ADMIN_TOKEN", helpers::ADMIN_TOKEN.to_owned()),
                ("RUST_LOG", "squeeze=info".to_owned()),
            ],
        );
        let serve = Self {
            child: Some(child),
            url,
            log: db.dir().join("squeeze.log"),
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        while serve.health().await != Some(StatusCode::OK) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "serve did not start: {}",
                serve.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        serve
    }

    async fn health(&self) -> Option<StatusCode> {
        self.http
            .get(format!("{}/healthz", self.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()
            .map(|r| r.status())
    }

    async fn subscribe(&self, email: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/subscribe", self.url))
            .json(&json!({ "email": email, "name": "A name long enough to need some room" }))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .expect("subscribe answers");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn admin_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(helpers::ADMIN_TOKEN)
            .json(&body)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .expect("admin API answers");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; returns how long the process took to exit, and its code.
    async fn stop(&mut self) -> (Duration, Option<i32>) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        helpers::terminate(&child);
        let status = helpers::wait_exit(&mut child, Duration::from_secs(60)).await;
        (started.elapsed(), status.code())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sign-ups until one is refused (the disk is full); returns that answer.
async fn subscribe_until_refused(serve: &Serve, prefix: &str) -> (StatusCode, Value) {
    for i in 0..20_000 {
        let (status, body) = serve.subscribe(&format!("{prefix}{i}@example.com")).await;
        if status != StatusCode::ACCEPTED {
            return (status, body);
        }
    }
    panic!("20,000 sign-ups fit on a full disk");
}

#[tokio::test]
async fn storage_a_full_disk_answers_503_then_the_first_write_after_space_returns_succeeds() {
    if on_postgres() {
        return; // A full disk of the shared PostgreSQL server is not ours to make.
    }
    let db = TestDb::new().await;
    let Some(disk) = Tmpfs::mount(&db.dir().join("disk"), "3m") else {
        return;
    };
    let file = disk.dir.join("squeeze.db");
    let url = format!("sqlite://{}", file.display());
    let smtp = SmtpServer::start().await;
    let mut serve = Serve::start(&db, &url, &smtp).await;
    assert_eq!(
        serve.subscribe("first@example.com").await.0,
        StatusCode::ACCEPTED
    );

    let ballast = disk.fill();
    let (status, body) = subscribe_until_refused(&serve, "full").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["error"], "the database cannot be written: disk full",
        "{body}"
    );
    eventually(
        "/healthz says 503 while writes fail",
        Duration::from_secs(10),
        || async { serve.health().await == Some(StatusCode::SERVICE_UNAVAILABLE) },
    )
    .await;
    // An editor's write on the same full disk: the same 503, not a 500.
    let (status, body) = serve
        .admin_post(
            "/api/items",
            json!({ "title": "News", "url": "https://example.com/a" }),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["error"], "the database cannot be written: disk full",
        "{body}"
    );
    // The worker backs off: seconds of the fault log its trouble once, not every second.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = serve.log_text();
    let claim_errors = log
        .lines()
        .filter(|l| l.contains("claiming deliveries failed"))
        .count();
    assert!(
        claim_errors <= 1,
        "{claim_errors} lines about failed claims in 4 s:\n{log}"
    );

    std::fs::remove_file(&ballast).expect("space returns");
    let (status, body) = serve.subscribe("after@example.com").await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the first write after space returns: {body}"
    );
    eventually(
        "/healthz says 200 again",
        Duration::from_secs(10),
        || async { serve.health().await == Some(StatusCode::OK) },
    )
    .await;
    eventually(
        "the confirmation after the fault is sent",
        Duration::from_secs(20),
        || async { !smtp.to("after@example.com").is_empty() },
    )
    .await;
    let log = serve.log_text();
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("disk full"))
        .count();
    assert!(
        errors <= 1,
        "{errors} ERROR lines about the full disk:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && l.contains("can be written again")),
        "no INFO line on recovery:\n{log}"
    );

    // Full again; SIGTERM stays prompt during the fault.
    let _ballast = disk.fill();
    let (status, _) = subscribe_until_refused(&serve, "again").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (took, code) = serve.stop().await;
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?} on a full disk"
    );
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn storage_a_deleted_database_file_is_detected_and_sign_ups_are_refused_naming_it() {
    if on_postgres() {
        return; // A file of SQLite's.
    }
    let db = TestDb::new().await;
    let smtp = SmtpServer::start().await;
    let file = db.dir().join("squeeze.db");
    let serve = Serve::start(&db, db.url(), &smtp).await;
    assert_eq!(
        serve.subscribe("before@example.com").await.0,
        StatusCode::ACCEPTED
    );

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    // At once, not after some watcher's next look: a sign-up acknowledged now would be
    // written into a file no one will open again.
    let (status, body) = serve.subscribe("lost@example.com").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(serve.health().await, Some(StatusCode::SERVICE_UNAVAILABLE));
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&file.display().to_string()) && error.contains("gone"),
        "{body}"
    );
    let log = serve.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains(&file.display().to_string())),
        "no ERROR naming the file:\n{log}"
    );
}

#[tokio::test]
async fn storage_a_replaced_database_file_is_detected_and_writes_are_refused() {
    if on_postgres() {
        return;
    }
    let db = TestDb::new().await;
    let smtp = SmtpServer::start().await;
    let file = db.dir().join("squeeze.db");
    let serve = Serve::start(&db, db.url(), &smtp).await;
    // A restore copied over it: another file, another inode, at the same path.
    let copy = db.dir().join("restored.db");
    std::fs::copy(&file, &copy).expect("copy");
    std::fs::rename(&copy, &file).expect("replace");
    eventually(
        "/healthz says 503 once the file is replaced",
        Duration::from_secs(5),
        || async { serve.health().await == Some(StatusCode::SERVICE_UNAVAILABLE) },
    )
    .await;
    let (status, body) = serve.subscribe("lost@example.com").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("replaced"),
        "{body}"
    );
}

/// `squeeze migrate` with `database_url`: how long it took, its exit code and what it said.
fn migrate(dir: &Path, database_url: &str) -> (Duration, Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_squeeze"));
    squeeze_test_support::process::without_squeeze_env(&mut cmd);
    let started = Instant::now();
    let out = cmd
        .arg("migrate")
        .current_dir(dir)
        .env("SQUEEZE_DATABASE_URL", database_url)
        .env("SQUEEZE_TEMPLATES", helpers::TEMPLATES)
        .env("SQUEEZE_FROM", "Squeeze Test <news@squeeze.test>")
        .output()
        .expect("run squeeze");
    (
        started.elapsed(),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn storage_a_read_only_database_fails_at_start_within_seconds_naming_the_file() {
    if on_postgres() {
        return;
    }
    let db = TestDb::new().await;
    let Some(disk) = Tmpfs::mount(&db.dir().join("disk"), "8m") else {
        return;
    };
    let file = disk.dir.join("squeeze.db");
    let url = format!("sqlite://{}", file.display());
    let (_, code, said) = migrate(db.dir(), &url);
    assert_eq!(code, Some(0), "{said}");

    disk.remount(true);
    let (took, code, said) = migrate(db.dir(), &url);
    assert!(took < Duration::from_secs(5), "took {took:?}: {said}");
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains(&file.display().to_string()) && said.contains("cannot be written"),
        "{said}"
    );

    // A new file in a folder SQLite cannot write to.
    let fresh = disk.dir.join("fresh.db");
    let (took, code, said) = migrate(db.dir(), &format!("sqlite://{}", fresh.display()));
    assert!(took < Duration::from_secs(5), "took {took:?}: {said}");
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("folder") && said.contains("not writable"),
        "{said}"
    );
    disk.remount(false);
}

#[tokio::test]
async fn storage_an_unreachable_postgres_server_fails_at_start_within_seconds_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on 5433 on the test machine.
    let (took, code, said) = migrate(dir.path(), "postgres://root@127.0.0.1:5433/test");
    assert!(took < Duration::from_secs(6), "took {took:?}: {said}");
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("127.0.0.1:5433") && said.to_lowercase().contains("connection refused"),
        "{said}"
    );
}

#[tokio::test]
async fn storage_a_postgres_server_that_refuses_us_mid_run_answers_503_then_recovers() {
    if !on_postgres() {
        return;
    }
    let db = TestDb::new().await;
    let smtp = SmtpServer::start().await;
    let schema = db.schema().expect("a PostgreSQL schema").to_owned();
    // A role of this test's own, so the server can refuse it (and only it) mid-run.
    let role = format!("r_{schema}");
    let admin = db.pool().await;
    let exec = |sql: String| {
        let admin = admin.clone();
        async move {
            sqlx::query(&sql).execute(&admin).await.expect(&sql);
        }
    };
    exec(format!("CREATE ROLE {role} LOGIN SUPERUSER")).await;
    let mut url = url::Url::parse(db.url()).expect("database URL");
    url.set_username(&role).expect("a user name");
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        database: Some(db.clone()),
        settings: vec![("database_url".into(), url.to_string())],
        ..Options::default()
    })
    .await;
    let health = || async {
        app.http
            .get(format!("{}/healthz", app.url))
            .send()
            .await
            .map(|r| r.status())
            .ok()
    };
    assert_eq!(
        app.subscribe("before@example.com").await.status(),
        StatusCode::ACCEPTED
    );

    // The server goes away for us: our connections are ended, new ones refused.
    exec(format!("ALTER ROLE {role} NOLOGIN")).await;
    exec(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    ))
    .await;
    let r = app.subscribe("during@example.com").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = app
        .post_json(
            "/api/items",
            json!({ "title": "News", "url": "https://example.com/a" }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "an editor's write: {body}"
    );
    let (status, body) = app.stats().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a report: {body}");
    eventually(
        "/healthz says 503 while the server refuses",
        Duration::from_secs(10),
        || async { health().await == Some(StatusCode::SERVICE_UNAVAILABLE) },
    )
    .await;

    // It comes back: no restart needed.
    exec(format!("ALTER ROLE {role} LOGIN")).await;
    eventually(
        "sign-ups are accepted again",
        Duration::from_secs(10),
        || async { app.subscribe("after@example.com").await.status() == StatusCode::ACCEPTED },
    )
    .await;
    eventually(
        "/healthz says 200 again",
        Duration::from_secs(10),
        || async { health().await == Some(StatusCode::OK) },
    )
    .await;
    app.stop().await;
    exec(format!("REASSIGN OWNED BY {role} TO CURRENT_USER")).await;
    exec(format!("DROP OWNED BY {role}")).await;
    exec(format!("DROP ROLE {role}")).await;
}

#[tokio::test]
async fn storage_sigterm_stays_prompt_while_a_full_disk_refuses_the_outcomes_to_record() {
    if on_postgres() {
        return;
    }
    let db = TestDb::new().await;
    let Some(disk) = Tmpfs::mount(&db.dir().join("disk"), "3m") else {
        return;
    };
    let url = format!("sqlite://{}", disk.dir.join("squeeze.db").display());
    let smtp = SmtpServer::start().await;
    // The confirmation is claimed, then stays on the wire while the disk fills: its outcome
    // arrives when nothing can be written.
    smtp.faults().data_delay = Some(Duration::from_secs(2));
    let mut serve = Serve::start(&db, &url, &smtp).await;
    assert_eq!(
        serve.subscribe("slow@example.com").await.0,
        StatusCode::ACCEPTED
    );
    eventually(
        "the confirmation is on the wire",
        Duration::from_secs(10),
        || async { !smtp.rcpt_attempts().is_empty() },
    )
    .await;
    let _ballast = disk.fill();
    let (status, _) = subscribe_until_refused(&serve, "full").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    eventually(
        "the recorder meets the full disk",
        Duration::from_secs(10),
        || async { serve.log_text().contains("recording outcomes failed") },
    )
    .await;
    let (took, code) = serve.stop().await;
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?} with outcomes refused:\n{}",
        serve.log_text()
    );
    assert_eq!(code, Some(0));
}
