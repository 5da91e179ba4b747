//! Each subscriber's own time zone (issue 22, point 3): what sign-ups (the form's hidden field,
//! JSON) and CSV imports record, what exports carry, and an unknown zone being the list's.

use crate::helpers::{SmtpServer, TestApp};
use reqwest::StatusCode;
use squeeze::domain::clock::now_ms;

async fn zone_of(app: &TestApp, email: &str) -> Option<String> {
    app.app
        .store
        .subscriber_by_email(email)
        .await
        .expect("query")
        .expect("known")
        .timezone
}

#[tokio::test]
async fn a_json_sign_up_keeps_its_zone_and_an_unknown_zone_is_the_lists_not_a_refusal() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;

    let res = app
        .subscribe_json(
            serde_json::json!({"email": "kolkata@example.com", "timezone": "Asia/Kolkata"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(
        zone_of(&app, "kolkata@example.com").await.as_deref(),
        Some("Asia/Kolkata")
    );

    let res = app
        .subscribe_json(
            serde_json::json!({"email": "mars@example.com", "timezone": "Mars/Olympus_Mons"}),
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::ACCEPTED,
        "an unknown zone is no refusal"
    );
    assert_eq!(
        zone_of(&app, "mars@example.com").await,
        None,
        "the list's zone"
    );

    let res = app.subscribe("nozone@example.com").await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(zone_of(&app, "nozone@example.com").await, None);

    // The admin API shows it.
    let (status, body) = app.subscribers("").await;
    assert_eq!(status, StatusCode::OK);
    let zones: Vec<_> = body["subscribers"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| {
            (
                s["email"].as_str().unwrap_or("").to_owned(),
                s["timezone"].clone(),
            )
        })
        .collect();
    assert!(
        zones.contains(&("kolkata@example.com".into(), "Asia/Kolkata".into())),
        "{zones:?}"
    );
    assert!(zones.contains(&("mars@example.com".into(), serde_json::Value::Null)));
    app.stop().await;
}

#[tokio::test]
async fn the_sign_up_form_fills_the_browsers_zone_and_the_post_records_it() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;

    let page = app
        .http
        .get(format!("{}/", app.url))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains(r#"name="timezone" type="hidden""#)
            && page.contains(r#"<script src="/assets/timezone.js""#),
        "{page}"
    );

    // What the form posts once the script has filled the field.
    let res = app
        .http
        .post(format!("{}/subscribe", app.url))
        .form(&[
            ("email", "la@example.com"),
            ("name", ""),
            ("timezone", "America/Los_Angeles"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(
        zone_of(&app, "la@example.com").await.as_deref(),
        Some("America/Los_Angeles")
    );
    // Without JavaScript the field stays empty: the list's zone.
    let res = app
        .http
        .post(format!("{}/subscribe", app.url))
        .form(&[("email", "nojs@example.com"), ("timezone", "")])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(zone_of(&app, "nojs@example.com").await, None);
    app.stop().await;
}

async fn export(app: &TestApp) -> String {
    let mut out = Vec::new();
    app.app
        .subscribers()
        .export_csv(&mut out, None)
        .await
        .expect("export");
    String::from_utf8(out).expect("utf-8")
}

/// Each exported row's address and zone column.
fn zones_in(csv: &str) -> Vec<(String, String)> {
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().expect("header").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (email, zone) = (col("email"), col("timezone"));
    let mut rows: Vec<_> = reader
        .records()
        .map(|r| {
            let r = r.expect("row");
            (r[email].to_owned(), r[zone].to_owned())
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn csv_import_and_export_carry_the_zone_and_round_trip() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    let file = "email,name,timezone\n\
                madrid@example.com,,Europe/Madrid\n\
                chatham@example.com,Chatham,Pacific/Chatham\n\
                blank@example.com,,\n\
                unknown@example.com,,Atlantis/Capital\n";
    let report = app
        .app
        .subscribers()
        .import_csv(
            file.as_bytes(),
            true,
            "import of people.csv",
            now_ms(),
            &|| false,
        )
        .await
        .expect("an unknown zone does not refuse the file");
    assert_eq!(report.added, 4);
    // A double opt-in import records the zone too.
    app.app
        .subscribers()
        .import_csv(
            "email,timezone\npending@example.com,Asia/Kolkata\n".as_bytes(),
            false,
            "import of pending.csv",
            now_ms(),
            &|| false,
        )
        .await
        .expect("import");

    let exported = export(&app).await;
    let expected = vec![
        ("blank@example.com".to_owned(), String::new()),
        (
            "chatham@example.com".to_owned(),
            "Pacific/Chatham".to_owned(),
        ),
        ("madrid@example.com".to_owned(), "Europe/Madrid".to_owned()),
        ("pending@example.com".to_owned(), "Asia/Kolkata".to_owned()),
        ("unknown@example.com".to_owned(), String::new()),
    ];
    assert_eq!(zones_in(&exported), expected, "{exported}");
    app.stop().await;

    // The export imports into another list with the same zones.
    let other = TestApp::spawn(&smtp).await;
    other
        .app
        .subscribers()
        .import_csv(
            exported.as_bytes(),
            true,
            "import of export.csv",
            now_ms(),
            &|| false,
        )
        .await
        .expect("the export is an import file");
    assert_eq!(zones_in(&export(&other).await), expected);
    other.stop().await;
}

/// The form's script runs under the pages' Content Security Policy (no inline scripts) and
/// fills the zone from the browser's own: a reader in Tokyo signs up in Tokyo's zone.
#[tokio::test]
async fn the_sign_up_form_records_the_browsers_zone_in_headless_chromium() {
    if !crate::helpers::browser_available() {
        return;
    }
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    let seen = crate::helpers::browser(
        "signup.mjs",
        &[
            format!("{}/", app.url).as_str(),
            "browser@example.com",
            "Asia/Tokyo",
        ],
    )
    .await;
    assert_eq!(seen["zone"], "Asia/Tokyo", "{seen}");
    assert_eq!(
        zone_of(&app, "browser@example.com").await.as_deref(),
        Some("Asia/Tokyo")
    );
    app.stop().await;
}
