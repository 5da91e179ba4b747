//! The digest email as a reader gets it, through a real SMTP server: the intro's paragraphs
//! in both parts, the editor's Markdown (emphasis, links) rendered and sanitised, a hidden
//! preheader, one blank line between the text part's items, the list's name said once, and
//! an HTML part that fits a phone's screen (390 px, in headless Chromium).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::smtp::Received;
use crate::helpers::{SmtpServer, TestApp, WAIT};

const READER: &str = "ada.email@example.com";

/// Signs `READER` up as "Ada" and confirms the address by the emailed link.
async fn subscribe_ada(app: &TestApp, smtp: &SmtpServer) {
    let res = app
        .subscribe_json(json!({"email": READER, "name": "Ada"}))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let prefix = format!("{}/confirm?token=", app.url);
    let deadline = tokio::time::Instant::now() + WAIT;
    let link = loop {
        if let Some(link) = smtp.to(READER).iter().find_map(|m| m.link(&prefix)) {
            break link;
        }
        assert!(tokio::time::Instant::now() < deadline, "no confirmation");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(app.confirm(&link).await.status(), StatusCode::OK);
}

/// Adds these items, makes a digest of them with this subject and intro, sends it now and
/// returns the email the reader received.
async fn send(
    app: &TestApp,
    smtp: &SmtpServer,
    subject: &str,
    intro: &str,
    items: &[Value],
) -> Received {
    let before = smtp.count();
    let mut ids = Vec::new();
    for item in items {
        let (status, body) = app.post_json("/api/items", item.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].clone());
    }
    let (status, body) = app
        .post_json(
            "/api/digests",
            json!({ "subject": subject, "intro": intro, "items": ids }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let (status, body) = app.schedule_now(&id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.app
        .scheduler()
        .tick(chrono::Utc::now())
        .await
        .expect("tick");
    let got = app.wait_all_sent(smtp, before + 1).await;
    got.last().expect("the digest").clone()
}

/// What follows `<body …>`: the first thing a mail client shows.
fn after_body(html: &str) -> &str {
    let at = html.find("<body").expect("a body");
    let rest = &html[at..];
    rest[rest.find('>').expect("the body tag ends") + 1..].trim_start()
}

#[tokio::test]
async fn a_digest_keeps_paragraphs_renders_markdown_and_hides_its_preheader() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    subscribe_ada(&app, &smtp).await;
    let intro = "Hello **readers**,\n\nthis week *three* things and [a guide](https://example.com/guide?a=1&b=2).\n\n\n\nBeware <script>alert('x')</script> and [bad](javascript:alert(1)).";
    let items = [
        json!({ "title": "First story", "url": "https://example.com/first",
                "summary": "Read **this**:\n\nit is [here](https://example.com/here).", "source": "Example" }),
        json!({ "title": "Second story", "url": "https://example.com/second", "summary": "Plain." }),
        json!({ "title": "Third story", "url": "https://example.com/third", "summary": "" }),
    ];
    let email = send(&app, &smtp, "Weekly picks", intro, &items).await;
    assert_eq!(email.header("Subject").as_deref(), Some("Weekly picks"));
    let html = email.part("text/html").expect("an HTML part");
    let text = email.text().replace("\r\n", "\n");

    // The intro's paragraphs, its emphasis and its link; the raw HTML shown, never a tag.
    assert!(
        html.contains("<p>Hello <strong>readers</strong>,</p>"),
        "{html}"
    );
    assert!(
        html.contains(
            "<p>this week <em>three</em> things and <a href=\"https://example.com/guide?a=1&amp;b=2\">a guide</a>.</p>"
        ),
        "{html}"
    );
    assert!(!html.contains("<script"), "no script tag: {html}");
    assert!(html.contains("&lt;script&gt;"), "shown as text: {html}");
    assert!(!html.contains("javascript:"), "{html}");
    assert!(
        html.contains("<p>Read <strong>this</strong>:</p>")
            && html.contains("<a href=\"https://example.com/here\">here</a>"),
        "the summary's Markdown: {html}"
    );

    // The preheader is the first thing in the body, hidden, the intro's words without markup.
    let first = after_body(&html);
    assert!(first.starts_with("<span style=\"display:none"), "{first}");
    let preheader = &first[..first.find("</span>").expect("the preheader ends")];
    assert!(
        preheader.contains("Hello readers, this week three things and a guide."),
        "{preheader}"
    );
    assert!(
        !preheader.contains('*') && !preheader.contains("https:"),
        "{preheader}"
    );

    // The text part: paragraphs with one blank line between them, the link as "text (url)",
    // no Markdown markers, one blank line between items, none doubled.
    assert!(
        text.contains(
            "Hi Ada,\n\nHello readers,\n\nthis week three things and a guide (https://example.com/guide?a=1&b=2).\n\nBeware <script>alert('x')</script> and bad.\n\n1. First story (Example)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "1. First story (Example)\n   https://example.com/first\n   Read this:\n\n   it is here (https://example.com/here).\n\n2. Second story\n   https://example.com/second\n   Plain.\n\n3. Third story\n   https://example.com/third\n\n--\n"
        ),
        "{text}"
    );
    assert!(!text.contains("**") && !text.contains("]("), "{text}");
    assert!(!text.contains("\n\n\n"), "no doubled blank line: {text:?}");
    assert_eq!(
        text.lines().next(),
        Some("Squeeze Test: Weekly picks"),
        "the text part starts with the list's name and the subject"
    );

    // A subject that names the list already: the name is not said again above it.
    let email = send(
        &app,
        &smtp,
        "Squeeze Test weekly: the picks",
        "",
        &[json!({ "title": "Fourth story", "url": "https://example.com/fourth", "summary": "Four." })],
    )
    .await;
    let html = email.part("text/html").expect("an HTML part");
    let text = email.text().replace("\r\n", "\n");
    assert_eq!(
        email.header("Subject").as_deref(),
        Some("Squeeze Test weekly: the picks")
    );
    assert_eq!(text.lines().next(), Some("Squeeze Test weekly: the picks"));
    let heading = &html[..html.find("</h1>").expect("a heading")];
    assert_eq!(
        heading.matches("Squeeze Test").count(),
        2,
        "once in <title>, once in the heading: {heading}"
    );
    // No intro: the preheader is the first item's title.
    let first = after_body(&html);
    assert!(
        first.starts_with("<span style=\"display:none") && first.contains("Fourth story"),
        "{first}"
    );
    assert!(text.contains("Hi Ada,\n\n1. Fourth story\n"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn a_digest_fits_a_phone_screen() {
    if !crate::helpers::browser_available() {
        return;
    }
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    subscribe_ada(&app, &smtp).await;
    let long_url = format!("https://example.com/{}", "a".repeat(100));
    assert_eq!(long_url.len(), 120);
    let subject = format!(
        "A very long subject line about everything that happened this week in the world of software, {}",
        "Supercalifragilisticexpialidocious".repeat(2)
    );
    let email = send(
        &app,
        &smtp,
        &subject,
        &format!("The long link: {long_url}\n\nAnd [as a link]({long_url})."),
        &[json!({ "title": long_url, "url": long_url, "summary": format!("See {long_url} for more.") })],
    )
    .await;
    let html = email.part("text/html").expect("an HTML part");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/email-screenshots");
    std::fs::create_dir_all(dir).expect("screenshot directory");
    let file = format!("{dir}/digest.html");
    std::fs::write(&file, &html).expect("write the HTML part");
    let shot = format!("{dir}/digest-390.png");
    let seen = crate::helpers::browser("email_width.mjs", &[&file, "390", &shot]).await;
    eprintln!("the digest at 390 px, kept in {dir}: {seen}");
    assert!(
        seen["scrollWidth"].as_i64().is_some_and(|w| w <= 390),
        "no horizontal scroll at 390 px: {seen}"
    );
    assert_eq!(seen["firstHidden"], true, "the preheader is hidden: {seen}");
    let visible = seen["visibleText"].as_str().expect("text");
    assert!(
        visible.trim_start().starts_with("View in browser") && visible.contains("Hi Ada,"),
        "the preheader is not shown: {visible}"
    );
    assert_eq!(
        seen["requests"],
        json!([]),
        "nothing fetched from elsewhere"
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
        "screenshot kept at {shot}"
    );
    app.stop().await;
}
