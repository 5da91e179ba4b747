//! The test-support crate, and what needs this test binary: the `squeeze` binary Cargo built
//! for it.

use std::process::Child;

pub use squeeze_test_support::smtp::{self, SmtpServer};
pub use squeeze_test_support::{
    ADMIN_TOKEN, CLAIMABLE, Options, TEMPLATES, TestApp, TestDb, WAIT, eventually, on_postgres,
    seed, terminate, wait_exit,
};

/// An instant written in RFC 3339, for tests that drive the scheduler's clock.
pub fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&chrono::Utc)
}

/// A port free on 127.0.0.1 for a `squeeze serve` child to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The `squeeze` binary as a child process (for crash and signal tests), logging to a file in
/// the database's folder.
pub fn spawn_squeeze(args: &[&str], database: &TestDb, env: &[(&str, String)]) -> Child {
    squeeze_test_support::spawn_squeeze(
        std::path::Path::new(env!("CARGO_BIN_EXE_squeeze")),
        args,
        database,
        env,
    )
}

/// Why the browser test cannot run here, if it cannot.
fn browser_missing() -> Option<String> {
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("node is not installed".into());
    }
    let module = concat!(env!("CARGO_MANIFEST_DIR"), "/node_modules/playwright-core");
    if !std::path::Path::new(module).exists() {
        return Some("playwright-core is not installed (npm ci)".into());
    }
    None
}

/// Whether the headless-Chromium tests can run here: `false`, after printing why, on a
/// machine without Chromium, node or playwright-core; under `CI=true` a missing browser fails
/// the test instead (CI installs all three).
pub fn browser_available() -> bool {
    let Some(why) = browser_missing() else {
        return true;
    };
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "the browser test must run under CI=true: {why}"
    );
    eprintln!("skipping the browser test: {why}");
    false
}

/// Runs `tests/browser/<script>` in node with `args` and returns the JSON it printed.
pub async fn browser(script: &str, args: &[&str]) -> serde_json::Value {
    let path = format!("{}/tests/browser/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("node")
        .arg(&path)
        .args(args)
        .output()
        .await
        .expect("run node");
    assert!(
        out.status.success(),
        "browser script {script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "JSON from {script}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A browser logged in to the dashboard and the studio: its cookie jar (following no
/// redirect, so a test sees where a form sends it) and the session's CSRF token, read off
/// the studio's items page.
pub async fn studio_login(app: &TestApp) -> (reqwest::Client, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .expect("client");
    let ok = http
        .post(format!("{}/admin/login", app.url))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("login");
    assert_eq!(ok.status(), reqwest::StatusCode::SEE_OTHER);
    let html = page_get(&http, app, "/admin/items").await.1;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("every studio form carries the CSRF token")
        .to_owned();
    (http, csrf)
}

/// A page of the app, as that browser gets it: status and body.
pub async fn page_get(
    http: &reqwest::Client,
    app: &TestApp,
    path: &str,
) -> (reqwest::StatusCode, String) {
    let res = http
        .get(format!("{}{path}", app.url))
        .send()
        .await
        .expect("get");
    (res.status(), res.text().await.expect("body"))
}

/// A form posted by that browser: status, body and where it redirects.
pub async fn form_post(
    http: &reqwest::Client,
    app: &TestApp,
    path: &str,
    form: &[(&str, &str)],
) -> (reqwest::StatusCode, String, Option<String>) {
    let res = http
        .post(format!("{}{path}", app.url))
        .form(form)
        .send()
        .await
        .expect("post");
    let location = res
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned);
    (res.status(), res.text().await.expect("body"), location)
}
