//! The public archive: sent digests at /archive, each at /archive/<id> with nothing of any
//! subscriber in it, an Atom feed a feed reader parses, and the "View in browser" link in
//! every digest email; `archive = false` turns all of it off.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Options, SmtpServer, TestApp, WAIT};

const NAME: &str = "Quintessa Marbleworth";
const EMAIL: &str = "quintessa.archive@example.com";

fn opts(smtp: &SmtpServer, archive: bool) -> Options {
    Options {
        smtp_url: Some(smtp.url()),
        settings: vec![("archive".into(), archive.to_string())],
        ..Options::default()
    }
}

/// Signs up `EMAIL` with the distinctive `NAME` and confirms it by the emailed link.
async fn subscribe_named(app: &TestApp, smtp: &SmtpServer) {
    let res = app
        .subscribe_json(json!({"email": EMAIL, "name": NAME}))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let prefix = format!("{}/confirm?token=", app.url);
    let deadline = tokio::time::Instant::now() + WAIT;
    let link = loop {
        if let Some(link) = smtp.to(EMAIL).iter().find_map(|m| m.link(&prefix)) {
            break link;
        }
        assert!(tokio::time::Instant::now() < deadline, "no confirmation");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(app.confirm(&link).await.status(), StatusCode::OK);
    assert_eq!(app.status_of(EMAIL).await.as_deref(), Some("confirmed"));
}

/// The status and body of a GET, attribute escaping of `/` undone (`&#x2f;`) so links read
/// as links.
async fn get(app: &TestApp, path_or_url: &str) -> (StatusCode, String) {
    let url = if path_or_url.starts_with("http") {
        path_or_url.to_owned()
    } else {
        format!("{}{path_or_url}", app.url)
    };
    let res = app.http.get(&url).send().await.expect("get");
    let status = res.status();
    let body = res.text().await.expect("body").replace("&#x2f;", "/");
    (status, body)
}

/// The digest email's "View in browser" link, from the text part.
fn text_link(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("View in browser: "))
        .map(|l| l.trim().to_owned())
}

#[tokio::test]
async fn a_sent_digest_is_published_with_nothing_of_its_subscribers() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(opts(&smtp, true)).await;
    subscribe_named(&app, &smtp).await;
    let confirmations = smtp.count();

    // A draft and a scheduled digest are not published.
    let draft_item = app.add_item("Draft-only story").await;
    let draft = app.create_digest(json!([draft_item])).await;
    let later_item = app.add_item("Scheduled-only story").await;
    let scheduled = app.create_digest(json!([later_item])).await;
    let (status, _) = app.schedule(&scheduled, "2999-01-01T09:00:00Z").await;
    assert_eq!(status, StatusCode::OK);

    let sent = app
        .send_digest_with_intro_now(Some("The intro of the archived issue"))
        .await;
    let received = app.wait_all_sent(&smtp, confirmations + 1).await;
    let email = received.last().expect("the digest");
    assert!(email.rcpts.iter().any(|r| r == EMAIL));

    // The email links to its page in both parts, and the link answers.
    let page_url = format!("{}/archive/{sent}", app.url);
    let text = email.text();
    assert_eq!(
        text_link(&text).as_deref(),
        Some(page_url.as_str()),
        "{text}"
    );
    // Attribute values are escaped (`/` as `&#x2f;`).
    let html = email
        .part("text/html")
        .expect("html part")
        .replace("&#x2f;", "/");
    assert!(
        html.contains(&format!("href=\"{page_url}\"")) && html.contains("View in browser"),
        "{html}"
    );
    let (status, page) = get(&app, &page_url).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<h1>Today</h1>"), "{page}");
    assert!(page.contains("The intro of the archived issue"), "{page}");
    assert!(page.contains("https://example.com/n"), "the item: {page}");
    assert!(page.contains("<!doctype html>"), "in the site's layout");
    // Nothing of the subscriber: not their name, address or any token of theirs.
    let token = app
        .text(&format!(
            "SELECT unsubscribe_token FROM subscribers WHERE email = '{EMAIL}'"
        ))
        .await;
    for secret in [
        NAME,
        "Quintessa",
        EMAIL,
        token.as_str(),
        "token=",
        "unsubscribe",
        "manage",
    ] {
        assert!(!page.contains(secret), "{secret:?} on the page: {page}");
    }

    // The listing shows the sent digest and neither of the others.
    let (status, list) = get(&app, "/archive").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains(&format!("/archive/{sent}")), "{list}");
    assert!(
        !list.contains(&draft) && !list.contains(&scheduled),
        "{list}"
    );
    for other in [&draft, &scheduled, &"no-such-digest".to_owned()] {
        let (status, body) = get(&app, &format!("/archive/{other}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{other}");
        assert!(body.contains("Page not found"), "a page: {body}");
    }
    let (status, _) = get(&app, "/archive?page=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A feed reader reads the feed, and finds the sent digest in it.
    let res = app
        .http
        .get(format!("{}/archive/feed.xml", app.url))
        .send()
        .await
        .expect("feed");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("application/atom+xml"))
    );
    let xml = res.bytes().await.expect("body");
    let feed = feed_rs::parser::parse(&xml[..]).expect("the feed parses");
    assert_eq!(feed.entries.len(), 1, "only the sent digest");
    let entry = &feed.entries[0];
    assert_eq!(
        entry.title.as_ref().map(|t| t.content.as_str()),
        Some("Today")
    );
    assert_eq!(
        entry.links.first().map(|l| l.href.as_str()),
        Some(page_url.as_str())
    );
    let body = entry
        .content
        .as_ref()
        .and_then(|c| c.body.as_deref())
        .unwrap_or_default()
        .replace("&#x2f;", "/");
    assert!(
        body.contains("<a href=\"https://example.com/n\""),
        "the digest's HTML: {body}"
    );
    assert!(!String::from_utf8_lossy(&xml).contains(NAME));
    app.stop().await;
}

#[tokio::test]
async fn the_listing_is_newest_first_twenty_to_a_page() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(opts(&smtp, true)).await;
    // Digests sent before the archive existed are rows with status `sent`, like these.
    for i in 0..21 {
        app.exec(&format!(
            "INSERT INTO digests (id, subject, status, started_at, finished_at, created_at, \
             updated_at) VALUES ('old-{i:02}', 'Issue {i:02}', 'sent', {at}, {at}, {at}, {at})",
            at = 1_700_000_000_000_i64 + i * 86_400_000
        ))
        .await;
    }
    let (_, first) = get(&app, "/archive").await;
    let newest = first.find("Issue 20").expect("the newest on page 1");
    let older = first.find("Issue 19").expect("the next");
    assert!(newest < older, "newest first");
    assert!(!first.contains("Issue 00"), "the 21st is on page 2");
    assert!(first.contains("/archive?page=2") && !first.contains("rel=\"prev\""));
    let (_, second) = get(&app, "/archive?page=2").await;
    assert!(
        second.contains("Issue 00") && !second.contains("Issue 01"),
        "{second}"
    );
    assert!(second.contains("/archive?page=1") && !second.contains("rel=\"next\""));
    let (status, _) = get(&app, "/archive?page=3").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "past the last page");
    let (status, old) = get(&app, "/archive/old-00").await;
    assert_eq!(status, StatusCode::OK, "{old}");
    assert!(old.contains("2023-11-14"), "its date: {old}");
    let (_, xml) = get(&app, "/archive/feed.xml").await;
    let feed = feed_rs::parser::parse(xml.as_bytes()).expect("the feed parses");
    assert_eq!(feed.entries.len(), 20, "the newest 20");
    app.stop().await;
}

#[tokio::test]
async fn with_the_archive_off_there_are_no_pages_and_no_link() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(opts(&smtp, false)).await;
    subscribe_named(&app, &smtp).await;
    let confirmations = smtp.count();
    let sent = app.send_digest_now().await;
    let received = app.wait_all_sent(&smtp, confirmations + 1).await;
    let email = received.last().expect("the digest");
    assert_eq!(text_link(&email.text()), None, "{}", email.text());
    let html = email.part("text/html").expect("html part");
    assert!(
        !html.contains("View in browser") && !html.contains("/archive/"),
        "{html}"
    );
    for path in [
        "/archive".to_owned(),
        format!("/archive/{sent}"),
        "/archive/feed.xml".into(),
    ] {
        let (status, _) = get(&app, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    app.stop().await;
}
