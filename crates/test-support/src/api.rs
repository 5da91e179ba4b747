//! Typed helpers for what tests do through Squeeze's HTTP API, in place of hand-built
//! requests: each names the use case and checks the answer a caller relies on.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::smtp::Received;
use crate::{SmtpServer, TestApp, WAIT};

/// The status and the JSON body of an answer (`null` when the body is not JSON).
pub async fn json_of(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

impl TestApp {
    /// An admin API request with a JSON body (or none), answered with status and JSON.
    pub async fn admin_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.admin(method.clone(), path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        json_of(
            req.send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}")),
        )
        .await
    }

    /// `GET` on the admin API.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        self.admin_json(Method::GET, path, None).await
    }

    /// `POST` with a JSON body on the admin API.
    pub async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.admin_json(Method::POST, path, Some(body)).await
    }

    /// Adds a pending item with this title (and a URL and summary that need escaping);
    /// returns its id.
    pub async fn add_item(&self, title: &str) -> String {
        let (status, body) = self
            .post_json(
                "/api/items",
                json!({ "title": title, "url": "https://example.com/news?a=1&b=2", "summary": "Short & sweet.", "source": "Example" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Deletes item `id`; returns the answer's status.
    pub async fn delete_item(&self, id: &str) -> StatusCode {
        self.admin(Method::DELETE, &format!("/api/items/{id}"))
            .send()
            .await
            .expect("delete item")
            .status()
    }

    /// Creates a draft digest of these items (`"pending"` or a list of ids); returns its id.
    pub async fn create_digest(&self, items: Value) -> String {
        let (status, body) = self
            .post_json(
                "/api/digests",
                json!({ "subject": "Freshly squeezed: Monday", "intro": "Three things worth your time.", "items": items }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["status"], "draft");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Schedules digest `id` for `send_at` (RFC 3339 or `"now"`).
    pub async fn schedule(&self, id: &str, send_at: &str) -> (StatusCode, Value) {
        self.post_json(
            &format!("/api/digests/{id}/schedule"),
            json!({ "send_at": send_at }),
        )
        .await
    }

    /// Schedules digest `id` for now.
    pub async fn schedule_now(&self, id: &str) -> (StatusCode, Value) {
        self.schedule(id, "now").await
    }

    /// Cancels digest `id`.
    pub async fn cancel(&self, id: &str) -> (StatusCode, Value) {
        self.admin_json(Method::POST, &format!("/api/digests/{id}/cancel"), None)
            .await
    }

    /// Pauses the sending of digest `id`, saying why.
    pub async fn pause(&self, id: &str, reason: &str) -> (StatusCode, Value) {
        self.post_json(
            &format!("/api/digests/{id}/pause"),
            json!({ "reason": reason }),
        )
        .await
    }

    /// Resumes the sending of digest `id`.
    pub async fn resume(&self, id: &str) -> (StatusCode, Value) {
        self.admin_json(Method::POST, &format!("/api/digests/{id}/resume"), None)
            .await
    }

    /// Digest `id` as the admin API shows it.
    pub async fn digest(&self, id: &str) -> (StatusCode, Value) {
        self.get_json(&format!("/api/digests/{id}")).await
    }

    /// The daily schedule (`GET /api/schedule`; 404 while there is none).
    pub async fn daily_schedule(&self) -> (StatusCode, Value) {
        self.get_json("/api/schedule").await
    }

    /// Sets the daily schedule (`PUT /api/schedule` with `body`: `time`, `timezone`,
    /// `enabled`).
    pub async fn set_daily_schedule(&self, body: Value) -> (StatusCode, Value) {
        self.admin_json(Method::PUT, "/api/schedule", Some(body))
            .await
    }

    /// One page of subscribers (`GET /api/subscribers?{query}`).
    pub async fn subscribers(&self, query: &str) -> (StatusCode, Value) {
        self.get_json(&format!("/api/subscribers?{query}")).await
    }

    /// The delivery figures of digest `id` (`GET /api/digests/{id}/stats`).
    pub async fn digest_stats(&self, id: &str) -> (StatusCode, Value) {
        self.get_json(&format!("/api/digests/{id}/stats")).await
    }

    /// The dashboard's figures (`GET /api/stats`).
    pub async fn stats(&self) -> (StatusCode, Value) {
        self.get_json("/api/stats").await
    }

    /// Waits until `smtp` has received `n` messages and nothing is left to send (no delivery
    /// queued or on the wire), then checks that exactly `n` arrived: a message sent again after
    /// a failure (which the worker would pick up only after its idle poll, later than
    /// [`SmtpServer::wait_for`] looks) fails the test either way. Returns what arrived.
    pub async fn wait_all_sent(&self, smtp: &SmtpServer, n: usize) -> Vec<Received> {
        smtp.wait_for_at_least(n, WAIT).await;
        crate::eventually("nothing left to send", WAIT, || async {
            self.scalar("SELECT COUNT(*) FROM deliveries WHERE status IN ('queued', 'sending')")
                .await
                == 0
        })
        .await;
        smtp.wait_for(n, WAIT).await
    }

    /// Ticks the scheduler (which finishes digests) until the digest `id` is `sent`, or
    /// fails the test after `timeout`.
    pub async fn tick_until_sent(&self, id: &str, timeout: std::time::Duration) {
        crate::eventually("the digest is sent", timeout, || async {
            self.app
                .scheduler()
                .tick(chrono::Utc::now())
                .await
                .expect("tick");
            self.text(&format!("SELECT status FROM digests WHERE id = '{id}'"))
                .await
                == "sent"
        })
        .await;
    }

    /// Presses the confirmation page's button: a POST to the link, as a browser sends it from
    /// the page (`Origin` and `Sec-Fetch-Site` of Squeeze's own pages).
    pub async fn confirm(&self, link: &str) -> reqwest::Response {
        self.http
            .post(link)
            .header("origin", &self.url)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .expect("confirm")
    }

    /// Signs `email` up and follows the link of the confirmation `smtp` receives for it, as a
    /// reader would; returns once the address is confirmed.
    pub async fn subscribe_confirmed(&self, smtp: &SmtpServer, email: &str) {
        let res = self.subscribe(email).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED, "sign-up of {email}");
        let prefix = format!("{}/confirm?token=", self.url);
        let deadline = tokio::time::Instant::now() + WAIT;
        let link = loop {
            if let Some(link) = smtp.to(email).iter().find_map(|m| m.link(&prefix)) {
                break link;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no confirmation for {email} within {WAIT:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        // The link shows a button (GET changes nothing); its POST confirms.
        let page = self
            .http
            .get(&link)
            .send()
            .await
            .expect("confirmation page");
        assert_eq!(
            page.status(),
            StatusCode::OK,
            "confirmation page of {email}"
        );
        let page = self.confirm(&link).await;
        assert_eq!(page.status(), StatusCode::OK, "confirmation of {email}");
        assert_eq!(
            self.status_of(email).await.as_deref(),
            Some("confirmed"),
            "{email}"
        );
    }
}
