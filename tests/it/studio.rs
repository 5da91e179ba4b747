//! The editor's studio under /admin: forms behind the dashboard's login, each refused without
//! the session's CSRF token or from another origin, validation messages tied to their field,
//! a digest composed, previewed and sent from the browser's forms alone.

use reqwest::StatusCode;

use crate::helpers::{
    ADMIN_TOKEN, Options, SmtpServer, TestApp, form_post, page_get, seed, studio_login,
};

#[tokio::test]
async fn studio_forms_are_refused_without_the_csrf_token_or_from_another_origin() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let (status, html) = page_get(&anonymous, &app, "/admin/items").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the studio needs the login"
    );
    assert!(html.contains("name=\"token\""), "{html}");
    let (http, csrf) = studio_login(&app).await;
    let item = [
        ("title", "Forged"),
        ("url", "https://example.com/f"),
        ("summary", ""),
        ("source", ""),
    ];
    let mut forged_token = item.to_vec();
    forged_token.push(("csrf", "forged"));
    let mut right_token = item.to_vec();
    right_token.push(("csrf", csrf.as_str()));
    let url = format!("{}/admin/items", app.url);
    let forged = [
        http.post(&url).form(&item),
        http.post(&url).form(&forged_token),
        http.post(&url)
            .header("origin", "http://evil.example")
            .form(&right_token),
        http.post(&url)
            .header("sec-fetch-site", "cross-site")
            .form(&right_token),
        anonymous.post(&url).form(&right_token),
    ];
    for request in forged {
        let res = request.send().await.expect("req");
        assert!(
            matches!(
                res.status(),
                StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED
            ),
            "{}",
            res.status()
        );
    }
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM items").await,
        0,
        "no forged form added anything"
    );
    let (status, _, location) = form_post(&http, &app, "/admin/items", &right_token).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/admin/items"));
    assert_eq!(app.scalar("SELECT COUNT(*) FROM items").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_field_is_shown_next_to_it_and_keeps_what_was_typed() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let (http, csrf) = studio_login(&app).await;
    let (status, html, _) = form_post(
        &http,
        &app,
        "/admin/items",
        &[
            ("csrf", &csrf),
            ("title", "Typed title"),
            ("url", "not a url"),
            ("summary", ""),
            ("source", ""),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("aria-describedby=\"e-url\"") && html.contains("id=\"e-url\""),
        "the URL's error is tied to the URL field: {html}"
    );
    assert!(html.contains("value=\"Typed title\""), "keeps the title");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM items").await, 0);

    // The same rules when a pending item is edited.
    let item = [
        ("csrf", csrf.as_str()),
        ("title", "Before"),
        ("url", "https://example.com/b"),
        ("summary", ""),
        ("source", ""),
    ];
    let (status, _, _) = form_post(&http, &app, "/admin/items", &item).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let id = app
        .text("SELECT id FROM items WHERE title = 'Before'")
        .await;
    let (status, html) = page_get(&http, &app, &format!("/admin/items/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("value=\"Before\""),
        "the form holds the item: {html}"
    );
    let edit = |url| {
        [
            ("csrf", csrf.clone()),
            ("title", "After".to_owned()),
            ("url", url),
            ("summary", "Now with a summary".to_owned()),
            ("source", String::new()),
        ]
    };
    let bad = edit("ftp://example.com/a".to_owned());
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, html, _) = form_post(&http, &app, &format!("/admin/items/{id}"), &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("aria-describedby=\"e-url\""), "{html}");
    let good = edit("https://example.com/a".to_owned());
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, _) = form_post(&http, &app, &format!("/admin/items/{id}"), &good).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.text(&format!(
            "SELECT title || ' ' || url FROM items WHERE id = '{id}'"
        ))
        .await,
        "After https://example.com/a"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_digest_made_in_the_studio_keeps_the_chosen_order_and_goes_to_every_confirmed_subscriber()
{
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        ..Options::default()
    })
    .await;
    seed(&app, &[("confirmed", 3), ("pending", 2)], "example.com").await;
    let (http, csrf) = studio_login(&app).await;
    for (title, url) in [
        ("First item", "https://example.com/1"),
        ("Second item", "https://example.com/2"),
        ("Third item", "https://example.com/3"),
    ] {
        let (status, _, _) = form_post(
            &http,
            &app,
            "/admin/items",
            &[
                ("csrf", &csrf),
                ("title", title),
                ("url", url),
                ("summary", ""),
                ("source", ""),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
    }
    let id_of = |title: &str| format!("SELECT id FROM items WHERE title = '{title}'");
    let first = app.text(&id_of("First item")).await;
    let third = app.text(&id_of("Third item")).await;
    let (p1, p3) = (format!("position.{first}"), format!("position.{third}"));
    let (status, _, location) = form_post(
        &http,
        &app,
        "/admin/digests",
        &[
            ("csrf", &csrf),
            ("subject", "Studio digest"),
            ("intro", "Hello"),
            ("item", &first),
            ("item", &third),
            (&p1, "2"),
            (&p3, "1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let page = location.expect("to the digest's page");
    let (status, html) = page_get(&http, &app, &page).await;
    assert_eq!(status, StatusCode::OK);
    let (a, b) = (
        html.find("<li>Third item</li>").expect("third listed"),
        html.find("<li>First item</li>").expect("first listed"),
    );
    assert!(a < b, "reordered: third before first");
    assert!(!html.contains("<li>Second item</li>"), "not chosen");
    assert!(
        html.contains("sandbox=\"\"") && html.contains("width=\"390\""),
        "the HTML part in a sandboxed frame, at phone width too"
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM deliveries").await, 0);
    let (status, _, _) =
        form_post(&http, &app, &format!("{page}/send-now"), &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    app.app
        .scheduler()
        .tick(chrono::Utc::now())
        .await
        .expect("tick");
    let got = app.wait_all_sent(&smtp, 3).await;
    assert_eq!(got.len(), 3, "once per confirmed subscriber");
    let text = got[0].text();
    assert!(
        text.find("Third item") < text.find("First item"),
        "in the chosen order"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_editor_composes_previews_and_sends_a_digest_in_headless_chromium() {
    if !crate::helpers::browser_available() {
        return;
    }
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        ..Options::default()
    })
    .await;
    seed(&app, &[("confirmed", 3), ("pending", 2)], "example.com").await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/studio-screenshots");
    std::fs::create_dir_all(dir).expect("screenshot directory");
    let seen = crate::helpers::browser("studio.mjs", &[app.url.as_str(), ADMIN_TOKEN, dir]).await;
    eprintln!("studio screenshots in {dir}");
    assert!(
        seen["urlError"]
            .as_str()
            .is_some_and(|e| e.starts_with("URL ")),
        "the URL's message is tied to the URL field: {seen}"
    );
    assert_eq!(seen["urlInvalid"], "true", "{seen}");
    assert_eq!(seen["pending"], 3, "three items added: {seen}");
    assert_eq!(
        seen["items"],
        serde_json::json!(["Third item", "First item"]),
        "{seen}"
    );
    assert_eq!(seen["phone"]["width"], 390, "{seen}");
    assert!(seen["desktop"]["width"].as_i64() > Some(390), "{seen}");
    assert_eq!(seen["desktop"]["hasThird"], true, "{seen}");
    assert_eq!(seen["phone"]["hasThird"], true, "{seen}");
    assert!(
        seen["text"]
            .as_str()
            .is_some_and(|t| t.contains("Third item")),
        "the text part beside it: {seen}"
    );
    // The test: a wrong address named next to the field, then the real SMTP server got it,
    // marked, at the address typed, and no subscriber did; the draft stayed a draft.
    assert!(
        seen["testError"]
            .as_str()
            .is_some_and(|e| e.starts_with("Test address ") && e.contains("\"not-an-address\"")),
        "{seen}"
    );
    assert_eq!(
        seen["testSends"],
        serde_json::json!(["editor@studio.test"]),
        "{seen}"
    );
    assert_eq!(seen["statusAfterTest"], "draft", "{seen}");
    // The edit shows in the preview at once.
    assert!(
        seen["textBeforeEdit"]
            .as_str()
            .is_some_and(|t| !t.contains("Edited in the browser.")),
        "{seen}"
    );
    assert!(
        seen["textAfterEdit"]
            .as_str()
            .is_some_and(|t| t.contains("Edited in the browser.") && t.contains("Second item")),
        "{seen}"
    );
    assert_eq!(seen["desktopAfterEdit"], true, "{seen}");
    assert_eq!(
        seen["itemsAfterEdit"],
        serde_json::json!(["Third item", "First item", "Second item"]),
        "{seen}"
    );
    assert_eq!(seen["status"], "scheduled", "{seen}");
    // The second digest, sent now and then cancelled in the browser before its time came:
    // its page says so and offers no Cancel any more.
    assert_eq!(seen["beforeCancel"], "scheduled", "{seen}");
    assert_eq!(seen["afterCancel"], "cancelled", "{seen}");
    assert_eq!(seen["cancelButtons"], 0, "{seen}");
    app.app
        .scheduler()
        .tick(chrono::Utc::now())
        .await
        .expect("tick");
    // The tick that fans the first digest out makes nothing of the cancelled one.
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM deliveries d JOIN digests g ON g.id = d.digest_id
             WHERE g.subject = 'Cancelled digest'"
        )
        .await,
        0,
        "a cancelled digest is never sent"
    );
    let all = app.wait_all_sent(&smtp, 4).await;
    let (tests, got): (Vec<_>, Vec<_>) = all.into_iter().partition(|m| {
        m.header("Subject")
            .is_some_and(|s| s.starts_with("[Test] Studio_digest:"))
    });
    assert_eq!(tests.len(), 1, "one test");
    assert_eq!(tests[0].rcpts, ["editor@studio.test"]);
    assert!(
        got.iter()
            .all(|m| !m.rcpts.iter().any(|r| r == "editor@studio.test")),
        "the editor is no subscriber"
    );
    assert!(
        got.iter()
            .all(|m| m.text().contains("Edited in the browser.")),
        "subscribers got the edited draft"
    );
    let mut to: Vec<String> = got.iter().filter_map(|m| m.header("To")).collect();
    to.sort();
    assert_eq!(to.len(), 3, "once per confirmed subscriber: {to:?}");
    to.dedup();
    assert_eq!(to.len(), 3, "never twice: {to:?}");
    // Once sent, the 120-character subject is the dashboard's current digest: neither it nor
    // the digest's own page grows wider than the window.
    app.app
        .scheduler()
        .tick(chrono::Utc::now())
        .await
        .expect("tick");
    let id = app
        .text("SELECT id FROM digests WHERE subject LIKE 'Studio_digest:%'")
        .await;
    let subject_len = app
        .scalar(&format!(
            "SELECT LENGTH(subject) FROM digests WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(subject_len, 120);
    let digest_page = format!("/admin/digests/{id}");
    let widths = crate::helpers::browser(
        "width.mjs",
        &[
            app.url.as_str(),
            ADMIN_TOKEN,
            &format!("{dir}/dashboard-long-subject.png"),
            "/admin",
            &digest_page,
        ],
    )
    .await;
    eprintln!("page widths at a 1200 px window: {widths}");
    assert!(widths["/admin"].as_i64() <= Some(1200), "{widths}");
    assert!(
        widths[digest_page.as_str()].as_i64() <= Some(1200),
        "{widths}"
    );
    for shot in [
        "studio-items-error.png",
        "studio-digest.png",
        "studio-digest-phone.png",
        "studio-test-sent.png",
        "studio-edited.png",
    ] {
        assert!(
            std::fs::metadata(format!("{dir}/{shot}")).is_ok_and(|m| m.len() > 1000),
            "screenshot {shot} kept in {dir}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_daily_schedule_is_set_from_its_form_and_shows_its_next_run() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let (http, csrf) = studio_login(&app).await;
    let (status, html, _) = form_post(
        &http,
        &app,
        "/admin/schedule",
        &[
            ("csrf", &csrf),
            ("time", "07:30"),
            ("timezone", "Mars/Base"),
            ("enabled", "on"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("aria-describedby=\"e-timezone\"")
            && html.contains("value=\"Mars&#x2f;Base\""),
        "{html}"
    );
    let (status, _, _) = form_post(
        &http,
        &app,
        "/admin/schedule",
        &[
            ("csrf", &csrf),
            ("time", "07:30"),
            ("timezone", "Europe/Paris"),
            ("enabled", "on"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = page_get(&http, &app, "/admin/schedule").await;
    assert!(
        html.contains("<strong>07:30</strong> (Europe&#x2f;Paris)"),
        "{html}"
    );
    assert!(
        html.contains("<span id=\"next-run\">20"),
        "the next run is shown: {html}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_sending_digest_is_stopped_from_its_pages_cancel_button_behind_the_form_check() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    seed(&app, &[("confirmed", 3)], "example.com").await;
    app.add_item("Wrong link").await;
    let id = app.create_digest(serde_json::json!("pending")).await;
    app.schedule_now(&id).await;
    app.app
        .scheduler()
        .tick(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("tick");
    let query = format!("SELECT status FROM digests WHERE id = '{id}'");
    let status_of = || app.text(&query);
    assert_eq!(status_of().await, "sending");
    let (http, csrf) = studio_login(&app).await;
    let page = format!("/admin/digests/{id}");
    let (_, html) = page_get(&http, &app, &page).await;
    assert!(
        html.contains("id=\"cancel-form\""),
        "a Cancel button: {html}"
    );

    let cancel = format!("{page}/cancel");
    let (status, _, _) = form_post(&http, &app, &cancel, &[("csrf", "forged")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(status_of().await, "sending", "a forged form stops nothing");
    let (status, _, location) = form_post(&http, &app, &cancel, &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some(page.as_str()));
    assert_eq!(status_of().await, "cancelled");
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{id}' AND status = 'suppressed'"
        ))
        .await,
        3
    );
    let (_, html) = page_get(&http, &app, &page).await;
    assert!(
        !html.contains("id=\"cancel-form\""),
        "nothing left to cancel"
    );
    app.stop().await;
}
