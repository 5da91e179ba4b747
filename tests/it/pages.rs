//! What a browser is shown when something goes wrong (a page in the site's layout, the form
//! again with the message by the field), while JSON clients keep getting JSON; and durations
//! as people read them.

use crate::helpers::{Options, SmtpServer, TestApp, WAIT};
use reqwest::StatusCode;
use serde_json::Value;
use squeeze_test_support::api::json_of;

fn content_type(res: &reqwest::Response) -> String {
    res.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A form post of the sign-up, as a browser sends it.
async fn form_post(app: &TestApp, body: &str, accept: Option<&str>) -> reqwest::Response {
    let mut req = app
        .http
        .post(format!("{}/subscribe", app.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    req.send().await.expect("post")
}

#[tokio::test]
async fn a_refused_form_sign_up_shows_the_form_again_with_the_message_by_the_field() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        settings: vec![("subscribe_per_minute".into(), "6".into())],
        ..Options::default()
    })
    .await;
    let browser = Some("text/html,application/xhtml+xml,*/*;q=0.8");

    // 422: the address is malformed; what they typed is still there.
    let res = form_post(&app, "email=not-an-address&name=Ada", browser).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(content_type(&res).starts_with("text/html"));
    let html = res.text().await.expect("body");
    let at = html
        .find("id=\"email-error\"")
        .expect("message by the email field");
    assert!(
        at < html.find("id=\"email\"").expect("field"),
        "the message sits right above the field"
    );
    assert!(html.contains("Please check the email"), "{html}");
    assert!(html.contains("value=\"not-an-address\"") && html.contains("value=\"Ada\""));

    // 400: a form without the address field.
    let res = form_post(&app, "name=Ada", browser).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(content_type(&res).starts_with("text/html"));
    let html = res.text().await.expect("body");
    assert!(
        html.contains("missing field `email`") && html.contains("name=\"email\""),
        "{html}"
    );

    // A JSON client (by Accept, or by a JSON body) keeps today's JSON.
    let res = form_post(&app, "email=not-an-address", Some("application/json")).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["field"], "email");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("email:"))
    );
    let (status, body) = json_of(app.subscribe("also-not-an-address").await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "email");

    // 429: the form again, with the wait, and Retry-After; JSON clients get JSON.
    let mut res = form_post(&app, "email=r0%40example.com", browser).await;
    for i in 1..10 {
        if res.status() != StatusCode::ACCEPTED {
            break;
        }
        res = form_post(&app, &format!("email=r{i}%40example.com"), browser).await;
    }
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    assert!(content_type(&res).starts_with("text/html"));
    let html = res.text().await.expect("body");
    assert!(
        html.contains("Too many sign-ups") && html.contains("name=\"email\""),
        "{html}"
    );
    let res = app.subscribe("late@example.com").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(content_type(&res).starts_with("application/json"));
    app.stop().await;
}

#[tokio::test]
async fn unknown_pages_and_wrong_methods_get_pages_for_browsers_and_json_for_json_clients() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    let get = |path: &str, accept: &str| {
        app.http
            .get(format!("{}{path}", app.url))
            .header("accept", accept)
            .send()
    };
    let html_accept = "text/html,*/*;q=0.8";

    let res = get("/no-such-page", html_accept).await.expect("404");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(content_type(&res).starts_with("text/html"));
    let html = res.text().await.expect("body");
    assert!(
        html.contains("<h1>Page not found</h1>") && html.contains("&#x2f;no-such-page"),
        "{html}"
    );
    assert!(html.contains("<main>"), "in the site's layout");

    let res = get("/no-such-page", "application/json").await.expect("404");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: Value = res.json().await.expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("/no-such-page"))
    );
    let res = get("/api/no-such-thing", html_accept)
        .await
        .expect("api 404");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        content_type(&res).starts_with("application/json"),
        "the API answers JSON"
    );

    // 405: a GET of a form's address, and a DELETE.
    for (method, path) in [
        (reqwest::Method::GET, "/subscribe"),
        (reqwest::Method::DELETE, "/"),
    ] {
        let res = app
            .http
            .request(method.clone(), format!("{}{path}", app.url))
            .header("accept", html_accept)
            .send()
            .await
            .expect("405");
        assert_eq!(
            res.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(res.headers().contains_key("allow"));
        assert!(content_type(&res).starts_with("text/html"));
        assert!(
            res.text()
                .await
                .expect("body")
                .contains("<h1>Not allowed here</h1>")
        );
        let res = app
            .http
            .request(method.clone(), format!("{}{path}", app.url))
            .header("accept", "application/json")
            .send()
            .await
            .expect("405");
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        let body: Value = res.json().await.expect("JSON");
        assert!(body["error"].is_string());
    }
    app.stop().await;
}

#[tokio::test]
async fn a_database_fault_is_a_500_page_for_browsers_and_json_for_json_clients() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&smtp).await;
    app.exec("DROP TABLE confirmation_tokens").await;
    let url = format!("{}/confirm?token={}", app.url, "A".repeat(43));
    let res = app
        .http
        .get(&url)
        .header("accept", "text/html")
        .send()
        .await
        .expect("500");
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(content_type(&res).starts_with("text/html"));
    let html = res.text().await.expect("body");
    assert!(
        html.contains("Something went wrong on our side") && html.contains("<main>"),
        "{html}"
    );
    assert!(
        !html.contains("confirmation_tokens"),
        "no internals in the page"
    );
    let res = app
        .http
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
        .expect("500");
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["error"], "internal error");
    app.stop().await;
}

#[tokio::test]
async fn durations_under_an_hour_are_said_in_minutes_in_emails_and_pages() {
    for (ttl, said) in [("30m", "30 minutes"), ("48h", "2 days")] {
        let smtp = SmtpServer::start().await;
        let app = TestApp::spawn_with(Options {
            smtp_url: Some(smtp.url()),
            settings: vec![("confirmation_ttl".into(), ttl.into())],
            ..Options::default()
        })
        .await;
        app.subscribe("ttl@example.com").await;
        let mail = smtp.wait_for(1, WAIT).await.remove(0);
        assert!(
            mail.text().contains(&format!("expires in {said}.")),
            "{ttl}: {}",
            mail.text()
        );
        assert!(
            mail.part("text/html")
                .expect("html")
                .contains(&format!("expires in {said}.")),
            "{ttl}"
        );
        let page = app
            .http
            .get(format!("{}/confirm?token={}", app.url, "A".repeat(43)))
            .send()
            .await
            .expect("page");
        let html = page.text().await.expect("body");
        assert!(
            html.contains(&format!("expire after {said} and")),
            "{ttl}: {html}"
        );
        app.stop().await;
    }
}
