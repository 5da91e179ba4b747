//! Sending a test of a digest and editing a draft (issue 21): a test goes through the queue
//! and the worker to the addresses typed, and to no subscriber; it is counted in no
//! statistic and moves no digest; refusals are precise (422 naming the field or address, 429
//! with the limit, 409 for the wrong state, 403 without the form's token).

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Options, SmtpServer, TestApp, form_post, seed, studio_login};

async fn send_test(
    app: &TestApp,
    id: &str,
    addresses: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    app.post_json(
        &format!("/api/digests/{id}/test"),
        json!({ "addresses": addresses }),
    )
    .await
}

#[tokio::test]
async fn a_test_reaches_the_addresses_typed_through_the_worker_and_counts_toward_nothing() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        ..Options::default()
    })
    .await;
    let subscribers = seed(&app, &[("confirmed", 2)], "example.com").await;
    let item = app.add_item("Tested item").await;
    let id = app.create_digest(json!([item])).await;

    let (status, body) = send_test(
        &app,
        &id,
        json!(["Editor@Example.org", "second@example.net"]),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["queued"], 2, "{body}");
    let got = smtp.wait_for(2, std::time::Duration::from_secs(10)).await;
    let mut rcpts: Vec<String> = got.iter().flat_map(|m| m.rcpts.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["Editor@example.org", "second@example.net"]);
    for m in &got {
        assert_eq!(
            m.header("Subject").as_deref(),
            Some("[Test] Freshly squeezed: Monday")
        );
        assert!(m.text().contains("Tested item"), "the digest's content");
        let unsubscribe = m.header("List-Unsubscribe").expect("List-Unsubscribe");
        assert!(unsubscribe.contains("/test-email>"), "{unsubscribe}");
        assert!(
            !m.text().contains("token="),
            "no subscriber's token in a test"
        );
        assert!(
            m.header("Feedback-ID").is_none(),
            "no complaint signal for the digest"
        );
    }
    for s in &subscribers {
        assert!(smtp.to(s).is_empty(), "no subscriber got the test: {s}");
    }
    // Its unsubscribe link (and List-Unsubscribe's one-click POST) says it was a test and
    // unsubscribes no one.
    assert!(
        got[0].text().contains("/test-email"),
        "the text part's unsubscribe link"
    );
    let link = format!("{}/test-email", app.url);
    let page = reqwest::get(&link).await.expect("get");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text()
            .await
            .expect("body")
            .contains("This was a test email")
    );
    let one_click = reqwest::Client::new()
        .post(&link)
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .expect("post");
    assert_eq!(one_click.status(), StatusCode::OK);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM subscribers WHERE status = 'confirmed'")
            .await,
        2
    );

    // Counted toward nothing: the draft stays a draft with no recipients or sends.
    let (_, digest) = app.digest(&id).await;
    assert_eq!(digest["status"], "draft", "{digest}");
    let (_, stats) = app.digest_stats(&id).await;
    assert_eq!(stats["sent"], 0, "{stats}");
    assert_eq!(stats["recipients"], 0, "{stats}");
    let (_, overall) = app.stats().await;
    assert_eq!(overall["deliveries"]["sent"], 0, "{overall}");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sent_per_minute WHERE sent > 0")
            .await,
        0,
        "the throughput chart counts no test"
    );

    // Sent for real: once per confirmed subscriber, and only those count.
    let (status, _) = app.schedule_now(&id).await;
    assert_eq!(status, StatusCode::OK);
    app.app
        .scheduler()
        .tick(chrono::Utc::now())
        .await
        .expect("tick");
    let all = app.wait_all_sent(&smtp, 4).await;
    let real: Vec<_> = all
        .iter()
        .filter(|m| m.header("Subject").as_deref() == Some("Freshly squeezed: Monday"))
        .collect();
    assert_eq!(real.len(), 2, "once per confirmed subscriber");
    app.app
        .scheduler()
        .tick(chrono::Utc::now())
        .await
        .expect("tick");
    let (_, stats) = app.digest_stats(&id).await;
    assert_eq!(stats["sent"], 2, "{stats}");
    assert_eq!(stats["status"], "sent", "{stats}");
    let (_, overall) = app.stats().await;
    assert_eq!(overall["deliveries"]["sent"], 2, "{overall}");
    app.stop().await;
}

#[tokio::test]
async fn test_sends_are_refused_precisely() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let item = app.add_item("An item").await;
    let id = app.create_digest(json!([item])).await;
    let six = json!([
        "a@x.org", "b@x.org", "c@x.org", "d@x.org", "e@x.org", "f@x.org"
    ]);
    let (status, body) = send_test(&app, &id, six).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "addresses", "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("at most 5")),
        "{body}"
    );
    let (status, body) = send_test(&app, &id, json!(["ok@example.com", "nobody@"])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"nobody@\" is not valid")),
        "names the bad address: {body}"
    );
    let (status, _) = send_test(&app, &id, json!([])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = send_test(&app, "no-such-digest", json!(["a@x.org"])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM test_sends").await, 0);

    // A few a minute per digest.
    for _ in 0..3 {
        let (status, body) = send_test(&app, &id, json!(["a@x.org"])).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let res = app
        .admin(reqwest::Method::POST, &format!("/api/digests/{id}/test"))
        .json(&json!({ "addresses": ["a@x.org"] }))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get("retry-after").is_some());
    let body: serde_json::Value = res.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("at most 3 test sends of a digest a minute")),
        "{body}"
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM test_sends").await, 3);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE subscriber_id IS NULL AND kind = 'test'")
            .await,
        3
    );
    // A cancelled digest has nothing left to test.
    let other = app.add_item("Another").await;
    let cancelled = app.create_digest(json!([other])).await;
    app.cancel(&cancelled).await;
    let (status, _) = send_test(&app, &cancelled, json!(["a@x.org"])).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // The studio's form: the CSRF token, the message next to the field, the limit.
    let (http, csrf) = studio_login(&app).await;
    let fresh = app.add_item("Fresh").await;
    let studio = app.create_digest(json!([fresh])).await;
    let path = format!("/admin/digests/{studio}/test");
    let (status, _, _) = form_post(&http, &app, &path, &[("addresses", "a@x.org")]).await;
    assert!(
        matches!(status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED),
        "no token, no test: {status}"
    );
    let (status, html, _) = form_post(
        &http,
        &app,
        &path,
        &[("csrf", &csrf), ("addresses", "ok@x.org, broken")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("aria-describedby=\"e-addresses\"")
            && html.contains("&quot;broken&quot; is not valid"),
        "the message is tied to the Test address field: {html}"
    );
    assert!(
        html.contains("value=\"ok@x.org, broken\""),
        "keeps what was typed"
    );
    for _ in 0..3 {
        let (status, _, location) = form_post(
            &http,
            &app,
            &path,
            &[("csrf", &csrf), ("addresses", "me@x.org")],
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location, Some(format!("/admin/digests/{studio}")));
    }
    let (status, html, _) = form_post(
        &http,
        &app,
        &path,
        &[("csrf", &csrf), ("addresses", "me@x.org")],
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(html.contains("id=\"e-addresses\""), "{html}");
    app.stop().await;
}

#[tokio::test]
async fn a_draft_is_edited_until_it_is_scheduled() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let a = app.add_item("Item A").await;
    let b = app.add_item("Item B").await;
    let c = app.add_item("Item C").await;
    let id = app.create_digest(json!([a, b])).await;
    let path = format!("/api/digests/{id}");
    let app_ref = &app;
    let put = |body: serde_json::Value| {
        let path = path.clone();
        async move {
            app_ref
                .admin_json(reqwest::Method::PUT, &path, Some(body))
                .await
        }
    };
    // Reorder, drop B, take C.
    let (status, body) =
        put(json!({ "subject": "Edited", "intro": "New intro", "items": [c, a] })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["subject"], "Edited");
    assert_eq!(body["status"], "draft");
    let titles: Vec<&str> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["title"].as_str())
        .collect();
    assert_eq!(titles, ["Item C", "Item A"]);
    assert_eq!(
        app.text(&format!("SELECT status FROM items WHERE id = '{b}'"))
            .await,
        "pending",
        "a dropped item is pending again"
    );
    let (_, preview) = app.get_json(&format!("/api/digests/{id}")).await;
    assert_eq!(preview["intro"], "New intro");
    let (status, body) = put(json!({ "subject": " ", "items": [a] })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "subject");
    let (status, body) = put(json!({ "subject": "x", "items": "pending" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "items");
    let other = app.create_digest(json!([b])).await;
    let (status, body) = put(json!({ "subject": "x", "items": [b] })).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "another digest's item: {body}"
    );

    // The studio's edit form: its token, then the page shows the new preview.
    let (http, csrf) = studio_login(&app).await;
    let edit_path = format!("/admin/digests/{id}/edit");
    let pos_a = format!("position.{a}");
    let pos_c = format!("position.{c}");
    let form = |csrf: &str| {
        vec![
            ("csrf".to_owned(), csrf.to_owned()),
            ("subject".to_owned(), "From the form".to_owned()),
            ("intro".to_owned(), String::new()),
            ("item".to_owned(), a.clone()),
            ("item".to_owned(), c.clone()),
            (pos_a.clone(), "1".to_owned()),
            (pos_c.clone(), "2".to_owned()),
        ]
    };
    let forged = form("forged");
    let forged: Vec<(&str, &str)> = forged
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, _, _) = form_post(&http, &app, &edit_path, &forged).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let good = form(&csrf);
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, _, location) = form_post(&http, &app, &edit_path, &good).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let page = http
        .get(format!("{}{}", app.url, location.expect("to the digest")))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    let preview = page
        .split("id=\"preview-text\">")
        .nth(1)
        .expect("text preview");
    assert!(
        preview.contains("From the form"),
        "the new preview: {preview}"
    );
    assert!(
        preview.find("Item A") < preview.find("Item C"),
        "in the new order: {preview}"
    );

    // Once scheduled (or sent), no more edits.
    let (status, _) = app.schedule(&id, "2099-01-01T07:00:00Z").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = put(json!({ "subject": "Late", "items": [a] })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("only a draft can be edited")),
        "{body}"
    );
    let _ = other;
    app.stop().await;
}

#[tokio::test]
async fn pause_and_resume_from_the_studio_come_back_to_the_digest() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let item = app.add_item("Paused item").await;
    let id = app.create_digest(json!([item])).await;
    let (status, _) = app.schedule(&id, "2099-01-01T07:00:00Z").await;
    assert_eq!(status, StatusCode::OK);
    let (http, csrf) = studio_login(&app).await;
    let page = format!("/admin/digests/{id}");
    let html = http
        .get(format!("{}{page}", app.url))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(html.contains(&format!("action=\"{page}/pause\"")), "{html}");
    let (status, _, location) =
        form_post(&http, &app, &format!("{page}/pause"), &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some(page.as_str()));
    assert_eq!(
        app.text(&format!("SELECT status FROM digests WHERE id = '{id}'"))
            .await,
        "paused"
    );
    // The dashboard's own form goes back to the dashboard.
    let (status, _, location) = form_post(
        &http,
        &app,
        &format!("{page}/resume"),
        &[("csrf", &csrf), ("back", "dashboard")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/admin"));
    assert_eq!(
        app.text(&format!("SELECT status FROM digests WHERE id = '{id}'"))
            .await,
        "scheduled"
    );
    app.stop().await;
}
