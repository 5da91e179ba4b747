//! The subscriber's side after confirming: the welcome email, and the manage page every email
//! links to (name, data export, leaving), by their token alone.

use std::time::Duration;

use crate::helpers::{Options, SmtpServer, TestApp, WAIT};
use reqwest::StatusCode;
use serde_json::Value;

async fn spawn(smtp: &SmtpServer, welcome: bool) -> TestApp {
    TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        settings: vec![("welcome".into(), welcome.to_string())],
        ..Options::default()
    })
    .await
}

/// The manage link's token of `email` (their own token, as in every unsubscribe link).
async fn token_of(app: &TestApp, email: &str) -> String {
    let pool = app.db().await;
    let token: String =
        sqlx::query_scalar("SELECT unsubscribe_token FROM subscribers WHERE email = $1")
            .bind(email)
            .fetch_one(&pool)
            .await
            .expect("token");
    pool.close().await;
    token
}

async fn name_of(app: &TestApp, email: &str) -> Option<String> {
    app.app
        .store
        .subscriber_by_email(email)
        .await
        .expect("query")
        .expect("known")
        .name
}

/// `url` as an HTML attribute holds it (minijinja escapes `/` too).
fn in_html(url: &str) -> String {
    format!(
        "href=\"{}\"",
        url.replace('&', "&amp;").replace('/', "&#x2f;")
    )
}

/// A form post from Squeeze's own manage page.
async fn post_name(app: &TestApp, token: &str, name: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/manage?token={token}", app.url))
        .header("origin", &app.url)
        .header("sec-fetch-site", "same-origin")
        .form(&[("name", name)])
        .send()
        .await
        .expect("post")
}

#[tokio::test]
async fn a_welcome_email_is_sent_once_after_confirming_with_the_manage_link_in_both_parts() {
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, true).await;
    app.subscribe_confirmed(&smtp, "ada@example.com").await;
    let mails = app.wait_all_sent(&smtp, 2).await;
    let welcome = mails
        .iter()
        .find(|m| {
            m.header("Subject")
                .is_some_and(|s| s.starts_with("Welcome"))
        })
        .expect("a welcome email");
    assert_eq!(welcome.rcpts, vec!["ada@example.com"]);
    let token = token_of(&app, "ada@example.com").await;
    let manage = format!("{}/manage?token={token}", app.url);
    assert!(welcome.text().contains(&manage), "{}", welcome.text());
    let html = welcome.part("text/html").expect("html part");
    assert!(html.contains(&in_html(&manage)), "{html}");
    assert!(html.contains("Manage your subscription"));
    assert!(
        welcome
            .header("List-Unsubscribe")
            .is_some_and(|h| h.contains("/unsubscribe?token=")),
        "one-click headers: they are on the list now"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE kind = 'welcome' AND status = 'sent'")
            .await,
        1
    );

    // Pressing the button again (or a second tab) sends no second welcome.
    let link = smtp
        .to("ada@example.com")
        .iter()
        .find_map(|m| m.link(&format!("{}/confirm?token=", app.url)))
        .expect("confirmation link");
    assert_eq!(app.confirm(&link).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.to("ada@example.com").len(), 2, "exactly one welcome");

    // The manage link works.
    let page = app.http.get(&manage).send().await.expect("manage");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("body").contains("ada@example.com"));
    app.stop().await;
}

#[tokio::test]
async fn no_welcome_email_when_welcome_is_false() {
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, false).await;
    app.subscribe_confirmed(&smtp, "quiet@example.com").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.wait_all_sent(&smtp, 1).await;
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE kind = 'welcome'")
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn every_digest_carries_a_working_manage_link_in_both_parts() {
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, false).await;
    app.subscribe_confirmed(&smtp, "grace@example.com").await;
    app.subscribe_confirmed(&smtp, "linus@example.com").await;
    app.send_digest_now().await;
    let mails = app.wait_all_sent(&smtp, 4).await;
    for email in ["grace@example.com", "linus@example.com"] {
        let manage = format!("{}/manage?token={}", app.url, token_of(&app, email).await);
        let digest = mails
            .iter()
            .find(|m| m.rcpts == [email] && m.header("Subject").is_some_and(|s| s == "Today"))
            .expect("digest");
        assert!(digest.text().contains(&manage), "{}", digest.text());
        let html = digest.part("text/html").expect("html");
        assert!(html.contains(&in_html(&manage)), "{html}");
        let page = app.http.get(&manage).send().await.expect("manage");
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.text().await.expect("body").contains(email));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_changes_their_name_and_a_get_of_the_manage_page_changes_nothing() {
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, false).await;
    app.subscribe_json(serde_json::json!({ "email": "hopper@example.com", "name": "Grace" }))
        .await;
    let token = token_of(&app, "hopper@example.com").await;
    let url = format!("{}/manage?token={token}", app.url);
    let updated = "SELECT updated_at FROM subscribers";
    let before = app.scalar(updated).await;
    for _ in 0..2 {
        let page = app.http.get(&url).send().await.expect("GET");
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("body");
        assert!(html.contains("value=\"Grace\""), "{html}");
        assert_eq!(
            app.http.head(&url).send().await.expect("HEAD").status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        app.scalar(updated).await,
        before,
        "GET and HEAD changed nothing"
    );
    assert_eq!(
        name_of(&app, "hopper@example.com").await.as_deref(),
        Some("Grace")
    );

    let res = post_name(&app, &token, "Grace B. Hopper").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.text()
            .await
            .expect("body")
            .contains("Your name is saved.")
    );
    assert_eq!(
        name_of(&app, "hopper@example.com").await.as_deref(),
        Some("Grace B. Hopper"),
        "the name persists"
    );

    // A name SubscriberName refuses: the page again, the message by the field, nothing kept.
    let res = post_name(&app, &token, &"x".repeat(101)).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    let html = res.text().await.expect("body");
    assert!(
        html.contains("id=\"name-error\"") && html.contains("longer than 100 characters"),
        "{html}"
    );
    assert_eq!(
        name_of(&app, "hopper@example.com").await.as_deref(),
        Some("Grace B. Hopper")
    );

    // Blank clears it.
    let res = post_name(&app, &token, "  ").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(name_of(&app, "hopper@example.com").await, None);
    app.stop().await;
}

#[tokio::test]
async fn the_data_export_holds_record_consent_and_deliveries_and_nothing_of_others() {
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, true).await;
    app.subscribe_confirmed(&smtp, "ada@example.com").await;
    app.subscribe_confirmed(&smtp, "other@example.com").await;
    app.wait_all_sent(&smtp, 4).await;
    app.send_digest_now().await;
    app.wait_all_sent(&smtp, 6).await;

    let token = token_of(&app, "ada@example.com").await;
    let other_token = token_of(&app, "other@example.com").await;
    let res = app
        .http
        .get(format!("{}/manage/export?token={token}", app.url))
        .send()
        .await
        .expect("export");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .expect("ascii")
            .starts_with("attachment;"),
        "a download"
    );
    let body = res.text().await.expect("body");
    assert!(!body.contains("other@example.com") && !body.contains(&other_token));
    let data: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(data["subscriber"]["email"], "ada@example.com");
    assert_eq!(data["subscriber"]["status"], "confirmed");
    assert!(data["subscriber"]["confirmed_at"].is_string());
    assert_eq!(data["consent"]["ip"], "127.0.0.1");
    assert!(data["consent"]["at"].is_string());
    let kinds: Vec<&str> = data["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["confirmation", "welcome", "digest"], "{data}");
    assert!(
        data["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .all(|d| d["status"] == "sent" && d["sent_at"].is_string())
    );
    assert_eq!(data["deliveries"][2]["subject"], "Today");

    // An unknown token: the unsubscribe page's 404, here too.
    let unknown = "A".repeat(43);
    let unsubscribe = app
        .http
        .get(format!("{}/unsubscribe?token={unknown}", app.url))
        .send()
        .await
        .expect("unsubscribe");
    let unsubscribe = unsubscribe.text().await.expect("body");
    for path in ["/manage", "/manage/export"] {
        let res = app
            .http
            .get(format!("{}{path}?token={unknown}", app.url))
            .send()
            .await
            .expect("unknown");
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(res.text().await.expect("body"), unsubscribe, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn cross_site_posts_to_the_manage_page_and_the_confirmation_are_refused() {
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, false).await;
    app.subscribe_json(serde_json::json!({ "email": "target@example.com", "name": "Ada" }))
        .await;
    let link = smtp
        .wait_for(1, WAIT)
        .await
        .remove(0)
        .link(&format!("{}/confirm?token=", app.url))
        .expect("link");
    let token = token_of(&app, "target@example.com").await;
    let manage = format!("{}/manage?token={token}", app.url);
    for (origin, site) in [
        (Some("https://evil.example"), Some("cross-site")),
        (Some("http://127.0.0.1:1"), Some("same-site")),
        (None, Some("cross-site")),
        (Some("null"), Some("cross-site")),
    ] {
        for url in [&manage, &link] {
            let mut req = app.http.post(url.as_str()).form(&[("name", "Mallory")]);
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            if let Some(s) = site {
                req = req.header("sec-fetch-site", s);
            }
            let res = req.send().await.expect("post");
            assert_eq!(
                res.status(),
                StatusCode::FORBIDDEN,
                "{origin:?} {site:?} {url}"
            );
            assert!(
                res.headers()["content-type"]
                    .to_str()
                    .expect("ct")
                    .starts_with("text/html")
            );
            assert!(res.text().await.expect("body").contains("own pages"));
        }
    }
    assert_eq!(
        name_of(&app, "target@example.com").await.as_deref(),
        Some("Ada")
    );
    assert_eq!(
        app.status_of("target@example.com").await.as_deref(),
        Some("pending")
    );
    app.stop().await;
}
