//! Bounces and complaints heard after sending (issue 20): the VERP envelope sender, the real
//! `squeeze inbound` binary fed DSNs and ARF reports, the rules, and the parser over real
//! samples.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use chrono::Utc;
use serde_json::json;

use crate::helpers::{Options, SmtpServer, TEMPLATES, TestApp};
use squeeze::domain::bounce::{BounceKind, Verp};

const BOUNCE: &str = "bounces@bounce.squeeze.test";
const SECRET: &str = "a-test-secret-of-at-least-32-characters";

fn bounce_settings(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut s = vec![
        ("bounce_address".to_owned(), BOUNCE.to_owned()),
        ("bounce_secret".to_owned(), SECRET.to_owned()),
    ];
    s.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    s
}

async fn spawn(smtp: &SmtpServer, extra: &[(&str, &str)]) -> TestApp {
    TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        settings: bounce_settings(extra),
        ..Options::default()
    })
    .await
}

/// `squeeze inbound` (the real binary) with `message` on standard input.
fn inbound(app: &TestApp, message: &[u8], args: &[&str], extra: &[(&str, &str)]) -> Output {
    inbound_at(app.database.url(), app, message, args, extra)
}

fn inbound_at(
    database_url: &str,
    app: &TestApp,
    message: &[u8],
    args: &[&str],
    extra: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_squeeze"));
    cmd.current_dir(app.database.dir())
        .arg("inbound")
        .args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("SQUEEZE_") || k == "RECIPIENT" || k == "ORIGINAL_RECIPIENT" {
            cmd.env_remove(k);
        }
    }
    cmd.env("SQUEEZE_DATABASE_URL", database_url)
        .env("SQUEEZE_TEMPLATES", TEMPLATES)
        .env("SQUEEZE_FROM", "Squeeze Test <news@squeeze.test>")
        .env("SQUEEZE_OUTBOX", app.database.dir().join("outbox"))
        .env("SQUEEZE_BOUNCE_ADDRESS", BOUNCE)
        .env("SQUEEZE_BOUNCE_SECRET", SECRET)
        .env("SQUEEZE_LOG_FORMAT", "text");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run squeeze inbound");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(message);
    }
    child.wait_with_output().expect("squeeze inbound ends")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

async fn metrics(app: &TestApp) -> String {
    app.http
        .get(format!("{}/metrics", app.url))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// A digest to everyone confirmed, sent through the real SMTP server.
async fn send_digest(app: &TestApp, smtp: &SmtpServer, title: &str, total: usize) -> String {
    app.add_item(title).await;
    let id = app.create_digest(json!("pending")).await;
    let (status, body) = app.schedule_now(&id).await;
    assert!(status.is_success(), "{body}");
    app.app
        .scheduler()
        .tick(Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("tick");
    app.wait_all_sent(smtp, total).await;
    id
}

/// A DSN (RFC 3464) as Postfix writes it, to `to`, about `recipient`.
fn dsn(to: &str, recipient: &str, status: &str, message_id: &str) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n\
To: {to}\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"XX\"\r\n\
\r\n\
--XX\r\n\
Content-Type: text/plain\r\n\
\r\n\
I'm sorry to have to inform you that your message could not be delivered.\r\n\
--XX\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.org\r\n\
\r\n\
Final-Recipient: rfc822; {recipient}\r\n\
Action: failed\r\n\
Status: {status}\r\n\
Diagnostic-Code: smtp; 550 {status} the receiver says no\r\n\
\r\n\
--XX\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
Message-ID: {message_id}\r\n\
To: {recipient}\r\n\
Subject: Today's digest\r\n\
\r\n\
--XX--\r\n"
    )
    .into_bytes()
}

/// An ARF complaint (RFC 5965) about `recipient`.
fn arf(to: &str, recipient: &str, message_id: &str) -> Vec<u8> {
    format!(
        "From: <abuse@isp.example>\r\n\
To: {to}\r\n\
Subject: FW: Earn money\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"part1\"\r\n\
\r\n\
--part1\r\n\
Content-Type: text/plain\r\n\
\r\n\
This is an email abuse report.\r\n\
--part1\r\n\
Content-Type: message/feedback-report\r\n\
\r\n\
Feedback-Type: abuse\r\n\
User-Agent: SomeGenerator/1.0\r\n\
Version: 1\r\n\
Original-Rcpt-To: {recipient}\r\n\
\r\n\
--part1\r\n\
Content-Type: message/rfc822\r\n\
Content-Disposition: inline\r\n\
\r\n\
From: <news@squeeze.test>\r\n\
To: {recipient}\r\n\
Subject: Today's digest\r\n\
Message-ID: {message_id}\r\n\
\r\n\
Hello.\r\n\
--part1--\r\n"
    )
    .into_bytes()
}

async fn status_of(app: &TestApp, email: &str) -> String {
    app.text(&format!(
        "SELECT status FROM subscribers WHERE email = '{email}'"
    ))
    .await
}

#[tokio::test]
async fn a_dsn_to_the_verp_address_bounces_its_subscriber_once_and_a_forged_one_does_nothing() {
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, &[]).await;
    app.subscribe_confirmed(&smtp, "gone@example.org").await;
    app.subscribe_confirmed(&smtp, "alive@example.org").await;
    let before = smtp.count();
    send_digest(&app, &smtp, "News", before + 2).await;
    let received = smtp.received();
    let mail = received
        .iter()
        .rev()
        .find(|m| m.rcpts == ["gone@example.org"])
        .expect("the digest to gone@");
    // The envelope sender carries a token that names this delivery and verifies.
    let verp = Verp::new(BOUNCE, SECRET).expect("settings");
    let token = verp
        .token_in(&mail.from)
        .unwrap_or_else(|| panic!("a VERP envelope sender: {:?}", mail.from));
    let delivery = verp.verify(token).expect("the token verifies");
    let kind = app
        .text(&format!(
            "SELECT kind FROM deliveries WHERE id = '{delivery}'"
        ))
        .await;
    assert_eq!(kind, "digest");
    // The From header stays the From address.
    assert!(
        mail.header("From")
            .is_some_and(|f| f.contains("<news@squeeze.test>")),
        "{:?}",
        mail.header("From")
    );

    // A forged token (right shape, wrong MAC) about the other subscriber changes nothing.
    let (id, _) = token.rsplit_once('-').expect("id-mac");
    let forged = format!("bounces+{id}-0123456789abcdef@bounce.squeeze.test");
    let out = inbound(
        &app,
        &dsn(&forged, "alive@example.org", "5.1.1", "<nothing@x>"),
        &[],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "unmatched hard");
    assert_eq!(status_of(&app, "alive@example.org").await, "confirmed");

    // The genuine DSN, its recipient given as Postfix's pipe gives it.
    let message = dsn(
        BOUNCE,
        "gone@example.org",
        "5.1.1",
        "<unrelated@example.org>",
    );
    let out = inbound(
        &app,
        &message,
        &[],
        &[("ORIGINAL_RECIPIENT", mail.from.as_str())],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "matched hard by verp");
    assert_eq!(status_of(&app, "gone@example.org").await, "bounced");
    assert_eq!(status_of(&app, "alive@example.org").await, "confirmed");

    // The same report again counts once.
    let out = inbound(&app, &message, &["--recipient", mail.from.as_str()], &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "duplicate");
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM bounce_events WHERE kind = 'hard' AND matched_by IS NOT NULL"
        )
        .await,
        1
    );
    // Operators see the bounce and the unmatched report in the event log.
    let (_, events) = app.get_json("/api/events").await;
    let kinds: Vec<&str> = events
        .as_array()
        .or_else(|| events["events"].as_array())
        .map(|a| a.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(kinds.contains(&"bounce.hard"), "{events}");
    assert!(kinds.contains(&"bounce.unmatched"), "{events}");
    // The subscriber's history in the admin API: the delivery and the bounce heard of it.
    let (status, history) = app.get_json("/api/subscribers/Gone@Example.org").await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["subscriber"]["status"], "bounced", "{history}");
    assert_eq!(history["bounces"][0]["kind"], "hard", "{history}");
    assert_eq!(
        history["bounces"][0]["delivery_id"],
        delivery.as_str(),
        "{history}"
    );
    assert!(
        history["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["id"] == delivery.as_str())),
        "{history}"
    );
    // Stats and Prometheus count the hard bounce once, and the unmatched report.
    let (_, stats) = app.stats().await;
    assert_eq!(stats["bounces"]["hard_bounces"], 1, "{stats}");
    assert_eq!(stats["bounces"]["unmatched"], 1, "{stats}");
    let metrics = metrics(&app).await;
    assert!(
        metrics.contains("squeeze_bounces_total{kind=\"hard\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("squeeze_bounces_total{kind=\"unmatched\"} 1"),
        "{metrics}"
    );
    let (status, _) = app.get_json("/api/subscribers/nobody@example.org").await;
    assert_eq!(status, 404);
    let (status, body) = app.get_json("/api/subscribers/not-an-address").await;
    assert!(status.is_client_error() && status != 404, "{status} {body}");
    // Forgetting the subscriber erases the bounce reports that name them.
    let pool = app.db().await;
    let rows: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT recipient, subscriber_id FROM bounce_events")
            .fetch_all(&pool)
            .await
            .expect("bounce events");
    pool.close().await;
    assert!(
        rows.iter()
            .any(|(r, s)| r.as_deref() == Some("gone@example.org") && s.is_some()),
        "{rows:?}"
    );
    let (status, _) = app
        .admin_json(
            reqwest::Method::DELETE,
            "/api/subscribers/gone@example.org",
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM bounce_events WHERE lower(recipient) = 'gone@example.org'"
        )
        .await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_complaint_unsubscribes_at_once_and_pauses_a_digest_past_the_complaint_rate() {
    let smtp = SmtpServer::start().await;
    let app = spawn(
        &smtp,
        &[
            ("complaint_pause_rate", "0.4"),
            ("complaint_pause_min", "2"),
        ],
    )
    .await;
    for who in ["a", "b", "c"] {
        app.subscribe_confirmed(&smtp, &format!("{who}@example.org"))
            .await;
    }
    let before = smtp.count();
    let digest = send_digest(&app, &smtp, "News", before + 3).await;
    let message_id_of = |to: &str| {
        smtp.received()
            .iter()
            .rev()
            .find(|m| m.rcpts == [to])
            .and_then(|m| m.header("Message-ID"))
            .expect("the digest's Message-ID")
    };
    // Matched by the returned Message-ID (sent to the plain bounce address, no token).
    // The intake runs with the same small settings as the server.
    let rate = [
        ("SQUEEZE_COMPLAINT_PAUSE_RATE", "0.4"),
        ("SQUEEZE_COMPLAINT_PAUSE_MIN", "2"),
    ];
    let out = inbound(
        &app,
        &arf(BOUNCE, "a@example.org", &message_id_of("a@example.org")),
        &[],
        &rate,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "matched complaint by message_id");
    assert_eq!(status_of(&app, "a@example.org").await, "unsubscribed");
    // 1 of 3: under 40%.
    let (_, d) = app.digest(&digest).await;
    assert_ne!(d["status"], "paused", "{d}");
    // A second complaint (matched by the address alone): 2 of 3, over 40%: paused, with why.
    let out = inbound(
        &app,
        &arf(BOUNCE, "B@Example.org", "<not-ours@x>"),
        &[],
        &rate,
    );
    assert_eq!(stdout(&out), "matched complaint by recipient", "{out:?}");
    assert_eq!(status_of(&app, "b@example.org").await, "unsubscribed");
    let (_, d) = app.digest(&digest).await;
    let reason = app
        .text(&format!(
            "SELECT COALESCE(paused_reason, status) FROM digests WHERE id = '{digest}'"
        ))
        .await;
    assert_eq!(d["status"], "paused", "{d}");
    assert!(reason.contains("complaint"), "{reason}");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM bounce_events WHERE kind = 'complaint'")
            .await,
        2
    );
    // Visible: the digest's stats (2 of 3 delivered), overall, Prometheus.
    let (_, stats) = app.digest_stats(&digest).await;
    assert_eq!(stats["bounces"]["complaints"], 2, "{stats}");
    let rate = stats["bounces"]["complaint_rate"].as_f64().unwrap_or(0.0);
    assert!((rate - 2.0 / 3.0).abs() < 1e-9, "{stats}");
    let (_, overall) = app.stats().await;
    assert_eq!(overall["bounces"]["complaints"], 2, "{overall}");
    let metrics = metrics(&app).await;
    assert!(metrics.contains("squeeze_complaints_total 2"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn a_policy_rejection_leaves_the_subscriber_alone_and_pauses_the_digest_with_the_reason() {
    let smtp = SmtpServer::start().await;
    // The worker's auto-pause settings: past 20% of the digest's delivered mail, once 10
    // are delivered.
    let small = [("pause_threshold", "0.2"), ("pause_window", "10")];
    let app = spawn(&smtp, &small).await;
    let readers: Vec<String> = (0..10).map(|i| format!("r{i}@example.org")).collect();
    for r in &readers {
        app.subscribe_confirmed(&smtp, r).await;
    }
    let before = smtp.count();
    let digest = send_digest(&app, &smtp, "News", before + readers.len()).await;
    let env = [
        ("SQUEEZE_PAUSE_THRESHOLD", "0.2"),
        ("SQUEEZE_PAUSE_WINDOW", "10"),
    ];
    // Gmail's DMARC rejection: the sender's problem, not the readers'.
    for (i, r) in readers.iter().take(3).enumerate() {
        let out = inbound(&app, &dsn(BOUNCE, r, "5.7.26", "<x@y>"), &[], &env);
        assert_eq!(stdout(&out), "matched policy by recipient", "{out:?}");
        assert_eq!(status_of(&app, r).await, "confirmed");
        let (_, d) = app.digest(&digest).await;
        let paused = d["status"] == "paused";
        assert_eq!(paused, i == 2, "after {} rejections of 10: {d}", i + 1);
    }
    let (_, d) = app.digest(&digest).await;
    let reason = d["paused_reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("5.7.26") && reason.contains("policy"),
        "{reason}"
    );
    let (_, stats) = app.digest_stats(&digest).await;
    assert_eq!(stats["bounces"]["policy_rejections"], 3, "{stats}");
    app.stop().await;
}

#[tokio::test]
async fn three_soft_bounces_in_five_deliveries_bounce_and_a_success_resets_the_count() {
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, &[]).await;
    app.subscribe_confirmed(&smtp, "full@example.org").await;
    app.subscribe_confirmed(&smtp, "ok@example.org").await;
    let verp = Verp::new(BOUNCE, SECRET).expect("settings");
    let mut sent = smtp.count();
    let soft = |app: &TestApp, who: &str| {
        let mail = smtp
            .received()
            .into_iter()
            .rev()
            .find(|m| m.rcpts == [who])
            .expect("a digest");
        let token = verp.token_in(&mail.from).expect("verp").to_owned();
        let to = format!("bounces+{token}@bounce.squeeze.test");
        let out = inbound(app, &dsn(&to, who, "5.2.2", "<x@y>"), &[], &[]);
        assert!(out.status.success(), "{out:?}");
        stdout(&out)
    };
    // full@: soft three times: bounced at the third. ok@: soft, soft, a delivery with no
    // bounce, soft: the success reset the count, so 3 of its last 5 do not bounce it.
    for round in 0..4 {
        sent += if round == 3 { 1 } else { 2 };
        send_digest(&app, &smtp, &format!("Issue {round}"), sent).await;
        if round < 3 {
            assert_eq!(soft(&app, "full@example.org"), "matched soft by verp");
            let expected = if round == 2 { "bounced" } else { "confirmed" };
            assert_eq!(
                status_of(&app, "full@example.org").await,
                expected,
                "round {round}"
            );
        }
        if round != 2 {
            assert_eq!(soft(&app, "ok@example.org"), "matched soft by verp");
        }
    }
    assert_eq!(status_of(&app, "ok@example.org").await, "confirmed");
    app.stop().await;
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_exits_75_so_the_mta_retries() {
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, &[]).await;
    let out = inbound_at(
        "postgres://squeeze@127.0.0.1:1/nothing",
        &app,
        &dsn(BOUNCE, "x@example.org", "5.1.1", "<a@b>"),
        &[],
        &[],
    );
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    // Over the size cap: ignored, exit 0, nothing recorded.
    let big = vec![b'x'; 2048];
    let out = inbound(&app, &big, &[], &[("SQUEEZE_INBOUND_MAX_BYTES", "1KB")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A bounce address without its secret: refused at start, one sentence, exit 2.
    let out = inbound(&app, b"", &[], &[("SQUEEZE_BOUNCE_SECRET", "short")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bounce_secret") && !err.contains("short"),
        "{err}"
    );
    app.stop().await;
}

/// Every sample parses without a panic and in bounded time, and each means what the rules
/// say: the kind the rules give it and its status code (`None`: not a bounce Squeeze can
/// read, e.g. an old text bounce without an enhanced status code, or a malformed message).
#[test]
fn every_sample_parses_and_means_what_the_rules_say() {
    use squeeze::domain::bounce::{BounceKind::*, classify};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/samples/bounces");
    #[rustfmt::skip]
    let expected: &[(&str, Option<BounceKind>, Option<&str>)] = &[
        ("arf-jmrp.eml", Some(Complaint), None),
        ("arf-rfc5965.eml", Some(Complaint), None),
        ("malformed-binary.eml", None, None),
        ("malformed-truncated.eml", None, None),
        ("sisimai-arf-01.eml", Some(Complaint), None),
        ("sisimai-arf-12.eml", Some(Complaint), None),
        ("sisimai-lhost-exchange2007-01.eml", Some(Hard), Some("5.1.1")),
        ("sisimai-lhost-exim-01.eml", Some(Policy), Some("5.7.0")),
        ("sisimai-lhost-gmail-01.eml", Some(Hard), Some("5.1.1")),
        ("sisimai-lhost-office365-01.eml", Some(Hard), Some("5.1.10")),
        ("sisimai-lhost-office365-03.eml", Some(Hard), Some("5.1.0")),
        ("sisimai-lhost-outlook-01.eml", Some(Soft), Some("5.2.2")),
        ("sisimai-lhost-postfix-01.eml", Some(Hard), Some("5.1.1")),
        ("sisimai-lhost-postfix-02.eml", Some(Hard), Some("5.2.1")),
        ("sisimai-lhost-qmail-01.eml", Some(Soft), Some("5.5.0")),
        ("sisimai-lhost-yahoo-01.eml", Some(Hard), Some("5.1.1")),
        ("sisimai-rhost-google-01.eml", Some(Hard), Some("5.2.1")),
        ("sisimai-rhost-google-03.eml", Some(Policy), Some("5.7.26")),
    ];
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(dir).expect("samples") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("eml") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        let raw = std::fs::read(&path).expect("read");
        let started = std::time::Instant::now();
        let report = squeeze::inbound::parse(&raw, "test", 0).report;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{name} too slow"
        );
        let (_, kind, status) = expected
            .iter()
            .find(|(n, ..)| *n == name)
            .unwrap_or_else(|| panic!("{name} has no expectation"));
        assert_eq!(report.as_ref().map(classify), *kind, "{name}: {report:?}");
        assert_eq!(
            report.as_ref().and_then(|r| r.status.as_deref()),
            *status,
            "{name}"
        );
        if kind.is_some() {
            assert!(
                report.as_ref().is_some_and(|r| r.recipient.is_some()),
                "{name}: {report:?}"
            );
        }
        seen.push(name);
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "samples without a file: {seen:?}"
    );
    // Made here: a huge header and deeply nested multiparts.
    let mut huge = b"From: mailer-daemon@x.example\r\nSubject: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 5 << 20));
    huge.extend_from_slice(b"\r\n\r\n5.1.1 gone@example.org\r\n");
    let _ = squeeze::inbound::parse(&huge, "test", 0);
    let mut nested = Vec::new();
    for i in 0..5000 {
        nested.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n")
                .as_bytes(),
        );
    }
    let started = std::time::Instant::now();
    let _ = squeeze::inbound::parse(&nested, "test", 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
