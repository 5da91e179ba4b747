//! The API's contract: the OpenAPI document is current, valid, served without a token, and
//! describes exactly the routes the router serves (and the pages it deliberately leaves out).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{SmtpServer, TestApp};

const REGENERATE: &str = "cargo run -q -- openapi > docs/openapi.json";

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

fn document() -> String {
    squeeze::http::openapi()
        .to_pretty_json()
        .expect("the document encodes")
}

/// The operations of a document, as "METHOD /path".
fn operations(doc: &Value) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                ops.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    ops
}

#[test]
fn the_committed_document_is_current() {
    let current = document();
    if std::env::var_os("SQUEEZE_UPDATE_OPENAPI").is_some() {
        std::fs::write(committed(), format!("{current}\n")).expect("write docs/openapi.json");
    }
    let on_disk = std::fs::read_to_string(committed()).unwrap_or_default();
    assert!(
        on_disk.trim_end() == current,
        "docs/openapi.json is not the document the code makes: regenerate it with `{REGENERATE}` \
         (or run this test with SQUEEZE_UPDATE_OPENAPI=1) and commit it"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_valid() {
    let doc: Value = serde_json::from_str(&document()).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let found = Command::new(&python)
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let why = format!(
            "no openapi-spec-validator at {}: run `python3 -m venv .venv && .venv/bin/pip install \
             openapi-spec-validator` (as .ci/run does)",
            python.display()
        );
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "the OpenAPI validation must run under CI=true: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document()).expect("write");
    let out = Command::new(&python)
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "openapi-spec-validator refuses the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `.route("PATH", get(..).post(..))` in src/http: the routes served without a
/// `#[utoipa::path]` (the documented ones are registered with `routes!`, which names no path).
fn plain_routes() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut found = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("src/http")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let name = format!(
            "src/http/{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        for bad in [".route_service(", ".nest(", ".nest_service("] {
            assert!(
                !text.contains(bad),
                "{name} uses {bad}: the route check reads only `.route(` and `routes!`"
            );
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let call = balanced(rest);
            let Some((path, methods)) = call.split_once(',') else {
                continue;
            };
            let path = path.trim().trim_matches('"').to_owned();
            for method in ["get", "post", "put", "delete", "patch"] {
                if calls(methods, method) {
                    found.push((format!("{} {path}", method.to_uppercase()), name.clone()));
                }
            }
        }
    }
    found
}

/// Whether `text` calls `name(` (`get(h)`, `.post(h)`, `axum::routing::put(h)`), not as the
/// tail of a longer name (`get_digest(`, `forget(`).
fn calls(text: &str, name: &str) -> bool {
    let call = format!("{name}(");
    text.match_indices(&call).any(|(at, _)| {
        text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

/// The text of a call's arguments: up to the parenthesis that closes it.
fn balanced(s: &str) -> &str {
    let mut depth = 1;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &s[..i];
                }
            }
            _ => {}
        }
    }
    s
}

/// Whether the router serves `op` ("METHOD /path/{param}"): the answer is not the fallback's
/// 404 nor a 405.
async fn served(app: &TestApp, op: &str) -> Result<(), String> {
    let (method, path) = op.split_once(' ').unwrap_or((op, ""));
    let mut concrete = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                concrete.push_str("probe");
            }
            c if !in_param => concrete.push(c),
            _ => {}
        }
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let res = app
        .http
        .request(method, format!("{}{concrete}", app.url))
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    if status == StatusCode::METHOD_NOT_ALLOWED
        || (status == StatusCode::NOT_FOUND && body.contains("there is no page at"))
    {
        return Err(format!("{op} is not served ({status} for {concrete})"));
    }
    Ok(())
}

#[tokio::test]
async fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let doc: Value = serde_json::from_str(&document()).expect("JSON");
    let documented = operations(&doc);
    let pages: BTreeSet<String> = squeeze::http::PAGES.iter().map(|s| s.to_string()).collect();
    let plain = plain_routes();
    let mut missing = Vec::new();
    for (op, file) in &plain {
        if !pages.contains(op) {
            missing.push(format!(
                "{op} is served ({file}) but not in the OpenAPI document: annotate its handler \
                 with #[utoipa::path(...)] and register it with `.routes(routes!(handler))` in \
                 place of `.route(...)`; or, if it is a page for browsers, add it to http::PAGES"
            ));
        }
    }
    let plain_ops: BTreeSet<&String> = plain.iter().map(|(op, _)| op).collect();
    for page in &pages {
        if !plain_ops.contains(page) {
            missing.push(format!(
                "{page} is listed in http::PAGES but no `.route(...)` in src/http serves it"
            ));
        }
        if documented.contains(page) {
            missing.push(format!(
                "{page} is both documented and listed in http::PAGES: take it out of PAGES"
            ));
        }
    }
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    for op in documented.iter().chain(pages.iter()) {
        if let Err(e) = served(&app, op).await {
            missing.push(format!(
                "{e}: documented in the OpenAPI document or http::PAGES"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "the router and the OpenAPI document disagree:\n  {}\n(then regenerate the document: \
         `{REGENERATE}`)",
        missing.join("\n  ")
    );
    app.stop().await;
}

#[tokio::test]
async fn the_document_is_served_without_a_token() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    let res = app
        .http
        .get(format!("{}/api/openapi.json", app.url))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()
            .get("content-type")
            .is_some_and(|v| v == "application/json")
    );
    let served: Value = res.json().await.expect("JSON");
    let made: Value = serde_json::from_str(&document()).expect("JSON");
    assert_eq!(served, made);
    // The API it describes still wants the token.
    let res = app
        .http
        .get(format!("{}/api/items", app.url))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// Found by probing what schemathesis throws (a NUL, which PostgreSQL's text cannot hold, or
/// bytes that are not UTF-8, in a path id or the `after` cursor): these name nothing, so they
/// are a 404 (or a 422 naming `after`) in the error shape, never a 500 or axum's plain text.
#[tokio::test]
async fn hostile_ids_name_nothing() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    for (method, path) in [
        (Method::GET, "/api/digests/a%00b"),
        (Method::GET, "/api/digests/a%00b/stats"),
        (Method::GET, "/api/digests/%00/preview"),
        (Method::POST, "/api/digests/%00/cancel"),
        (Method::DELETE, "/api/items/%00"),
        (Method::DELETE, "/api/feeds/%00"),
        (Method::GET, "/api/digests/%FF"),
    ] {
        let res = app.admin(method.clone(), path).send().await.expect("send");
        let status = res.status();
        let body: Value = res.json().await.unwrap_or_default();
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    // A NUL in a body's item ids (found by schemathesis: a 500 on PostgreSQL).
    let res = app
        .admin(Method::POST, "/api/digests")
        .json(&serde_json::json!({"subject": "%", "items": ["a\u{0}b"]}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["field"], "items", "{body}");
    let res = app
        .admin(Method::GET, "/api/subscribers?after=%00")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["field"], "after");
    let res = app
        .http
        .get(format!("{}/archive/%00", app.url))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}
