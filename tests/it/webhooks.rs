//! Provider webhooks (issue 20, 2b) against a live server: each provider's documented
//! sample (tests/samples/webhooks), signed here with a test key; a good call bounces or
//! unsubscribes its subscriber and records the event; a forged, unsigned, stale or
//! replayed call is refused with 401 and changes nothing.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::Sha256;

use crate::helpers::{
    Options, SmtpServer, TestApp, WAIT, eventually, spawn_squeeze, terminate, wait_exit,
};

const MAILGUN_KEY: &str = "key-a-test-webhook-signing-key-0123";
const POSTMARK_USER: &str = "postmark";
const POSTMARK_PASSWORD: &str = "a-test-webhook-password-0123";

fn sample(name: &str) -> String {
    let path = format!(
        "{}/tests/samples/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn spawn(smtp: &SmtpServer, settings: &[(&str, &str)]) -> TestApp {
    TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Options::default()
    })
    .await
}

async fn status_of(app: &TestApp, email: &str) -> String {
    app.text(&format!(
        "SELECT status FROM subscribers WHERE email = '{email}'"
    ))
    .await
}

async fn events_of(app: &TestApp, source: &str) -> i64 {
    app.scalar(&format!(
        "SELECT COUNT(*) FROM bounce_events WHERE source = '{source}'"
    ))
    .await
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Mailgun's signature: hex HMAC-SHA256 of timestamp and token under the key.
fn mailgun_signature(key: &str, timestamp: &str, token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A Mailgun sample about `recipient`, signed with `key` at `timestamp` with `token`.
fn mailgun_call(
    sample_name: &str,
    recipient: &str,
    key: &str,
    timestamp: i64,
    token: &str,
) -> String {
    let mut v: Value = serde_json::from_str(&sample(sample_name)).expect("sample JSON");
    v["event-data"]["recipient"] = recipient.into();
    v["event-data"]["message"]["headers"]["to"] = recipient.into();
    let ts = timestamp.to_string();
    v["signature"]["timestamp"] = ts.clone().into();
    v["signature"]["token"] = token.into();
    v["signature"]["signature"] = mailgun_signature(key, &ts, token).into();
    v.to_string()
}

async fn post(
    app: &TestApp,
    path: &str,
    body: String,
    auth: Option<String>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .post(format!("{}{path}", app.url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let res = req.send().await.expect("webhook call");
    let status = res.status();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// A Mailgun token (50 characters, as Mailgun's); each test has its own database.
fn token(n: u32) -> String {
    format!("{n:050}")
}

#[tokio::test]
async fn mailgun_failures_and_complaints_act_once_and_forged_stale_or_replayed_calls_change_nothing()
 {
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, &[("mailgun_signing_key", MAILGUN_KEY)]).await;
    for who in ["gone@example.org", "alive@example.org", "angry@example.org"] {
        app.subscribe_confirmed(&smtp, who).await;
    }
    let path = "/webhooks/mailgun";
    let failed = "mailgun-failed-permanent.json";

    // Forged (another key), unsigned, stale (6 minutes old) and future: 401, nothing done.
    let forged = mailgun_call(
        failed,
        "alive@example.org",
        "not-the-key",
        now_secs(),
        &token(1),
    );
    let (status, body) = post(&app, path, forged, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("signature")),
        "{body}"
    );
    let mut unsigned: Value = serde_json::from_str(&mailgun_call(
        failed,
        "alive@example.org",
        MAILGUN_KEY,
        now_secs(),
        &token(2),
    ))
    .expect("json");
    unsigned
        .as_object_mut()
        .expect("object")
        .remove("signature");
    let (status, _) = post(&app, path, unsigned.to_string(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for ts in [now_secs() - 360, now_secs() + 360] {
        let stale = mailgun_call(failed, "alive@example.org", MAILGUN_KEY, ts, &token(3));
        let (status, body) = post(&app, path, stale, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert_eq!(status_of(&app, "alive@example.org").await, "confirmed");
    assert_eq!(events_of(&app, "mailgun").await, 0);

    // The genuine permanent failure bounces its subscriber, and records the event.
    let good = mailgun_call(
        failed,
        "gone@example.org",
        MAILGUN_KEY,
        now_secs(),
        &token(4),
    );
    let (status, body) = post(&app, path, good.clone(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"][0], "matched hard by recipient", "{body}");
    assert_eq!(status_of(&app, "gone@example.org").await, "bounced");
    assert_eq!(
        app.text("SELECT status FROM bounce_events WHERE source = 'mailgun'")
            .await,
        "5.1.1"
    );

    // The same call again (its token seen) is a replay: 401, nothing more recorded.
    let (status, body) = post(&app, path, good.clone(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(events_of(&app, "mailgun").await, 1);
    // Also when it is replayed to another process on the same database.
    replayed_to_another_process(&app, &good).await;
    // So is the token under another, freshly signed body.
    let reused = mailgun_call(
        failed,
        "alive@example.org",
        MAILGUN_KEY,
        now_secs(),
        &token(4),
    );
    let (status, _) = post(&app, path, reused, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(status_of(&app, "alive@example.org").await, "confirmed");

    // A complaint unsubscribes at once.
    let complaint = mailgun_call(
        "mailgun-complained.json",
        "angry@example.org",
        MAILGUN_KEY,
        now_secs(),
        &token(5),
    );
    let (status, body) = post(&app, path, complaint, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["recorded"][0], "matched complaint by recipient",
        "{body}"
    );
    assert_eq!(status_of(&app, "angry@example.org").await, "unsubscribed");
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM bounce_events WHERE source = 'mailgun' AND kind = 'complaint'"
        )
        .await,
        1
    );

    // Not JSON: 400; over the cap: 413; both change nothing.
    let (status, _) = post(&app, path, "{not json".into(), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(
        &app,
        path,
        format!("[\"{}\"]", "x".repeat(300 * 1024)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // The two heard here and the unmatched one the second process heard.
    assert_eq!(events_of(&app, "mailgun").await, 3);
}

/// `squeeze serve` as a second process on `app`'s database refuses `call` as a replay.
async fn replayed_to_another_process(app: &TestApp, call: &str) {
    let bind = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let env = [("SQUEEZE_MAILGUN_SIGNING_KEY", MAILGUN_KEY.to_owned())];
    let mut other = spawn_squeeze(
        &["serve", "--no-worker", "--bind", &bind],
        &app.database,
        &env,
    );
    let url = format!("http://{bind}");
    eventually("the second process answers", WAIT, || async {
        app.http
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let send = |body: String| {
        app.http
            .post(format!("{url}/webhooks/mailgun"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // It hears a new call (about nobody we know: kept unmatched)...
    let fresh = mailgun_call(
        "mailgun-failed-permanent.json",
        "nobody@example.org",
        MAILGUN_KEY,
        now_secs(),
        &token(99),
    );
    let fresh = send(fresh).await.expect("call the second process").status();
    // ...and refuses the one the first process heard.
    let replay = send(call.to_owned())
        .await
        .expect("call the second process")
        .status();
    terminate(&other);
    let _ = wait_exit(&mut other, std::time::Duration::from_secs(15)).await;
    assert_eq!(fresh, StatusCode::OK, "the second process hears webhooks");
    assert_eq!(
        replay,
        StatusCode::UNAUTHORIZED,
        "the other process heard a replay"
    );
}

#[tokio::test]
async fn webhooks_are_off_until_their_credentials_are_set() {
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, &[]).await;
    let body = mailgun_call(
        "mailgun-failed-permanent.json",
        "a@example.org",
        MAILGUN_KEY,
        now_secs(),
        &token(6),
    );
    let (status, _) = post(&app, "/webhooks/mailgun", body, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(
        &app,
        "/webhooks/postmark",
        sample("postmark-bounce.json"),
        Some(basic(POSTMARK_USER, POSTMARK_PASSWORD)),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(
        &app,
        "/webhooks/sendgrid",
        sample("sendgrid-events.json"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(&app, "/webhooks/ses", sample("ses-bounce.json"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn postmark_call(sample_name: &str, email: &str) -> String {
    let mut v: Value = serde_json::from_str(&sample(sample_name)).expect("sample JSON");
    v["Email"] = email.into();
    v.to_string()
}

#[tokio::test]
async fn postmark_bounces_and_complaints_need_the_urls_credentials() {
    let smtp = SmtpServer::start().await;
    let app = spawn(
        &smtp,
        &[
            ("postmark_webhook_user", POSTMARK_USER),
            ("postmark_webhook_password", POSTMARK_PASSWORD),
        ],
    )
    .await;
    for who in ["john@example.org", "jane@example.org"] {
        app.subscribe_confirmed(&smtp, who).await;
    }
    let path = "/webhooks/postmark";
    let bounce = postmark_call("postmark-bounce.json", "john@example.org");

    for auth in [
        None,
        Some(basic(POSTMARK_USER, "a-test-webhook-password-0124")),
        Some(basic("someone", POSTMARK_PASSWORD)),
        Some(format!("Bearer {POSTMARK_PASSWORD}")),
    ] {
        let (status, body) = post(&app, path, bounce.clone(), auth.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
    }
    assert_eq!(status_of(&app, "john@example.org").await, "confirmed");
    assert_eq!(events_of(&app, "postmark").await, 0);

    let auth = Some(basic(POSTMARK_USER, POSTMARK_PASSWORD));
    let (status, body) = post(&app, path, bounce, auth.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"][0], "matched hard by recipient", "{body}");
    assert_eq!(status_of(&app, "john@example.org").await, "bounced");

    let complaint = postmark_call("postmark-spam-complaint.json", "jane@example.org");
    let (status, body) = post(&app, path, complaint, auth.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["recorded"][0], "matched complaint by recipient",
        "{body}"
    );
    assert_eq!(status_of(&app, "jane@example.org").await, "unsubscribed");
    assert_eq!(events_of(&app, "postmark").await, 2);

    let (status, _) = post(&app, path, "[]".into(), auth).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A P-256 key pair made here, and its public key as SendGrid shows it (base64 DER SPKI).
fn sendgrid_keys() -> (ring::signature::EcdsaKeyPair, String) {
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key pair");
    // SubjectPublicKeyInfo: id-ecPublicKey, prime256v1, then the uncompressed point.
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    (pair, base64::engine::general_purpose::STANDARD.encode(spki))
}

async fn post_sendgrid(
    app: &TestApp,
    body: &str,
    signature: Option<String>,
    timestamp: Option<String>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .post(format!("{}/webhooks/sendgrid", app.url))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(s) = signature {
        req = req.header("X-Twilio-Email-Event-Webhook-Signature", s);
    }
    if let Some(t) = timestamp {
        req = req.header("X-Twilio-Email-Event-Webhook-Timestamp", t);
    }
    let res = req.send().await.expect("webhook call");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn sendgrid_sign(pair: &ring::signature::EcdsaKeyPair, timestamp: &str, body: &str) -> String {
    let rng = ring::rand::SystemRandom::new();
    let sig = pair
        .sign(&rng, format!("{timestamp}{body}").as_bytes())
        .expect("sign");
    base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
}

#[tokio::test]
async fn sendgrid_signed_events_act_and_forged_stale_or_replayed_calls_change_nothing() {
    let (pair, public_key) = sendgrid_keys();
    let (other, _) = sendgrid_keys();
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, &[("sendgrid_public_key", &public_key)]).await;
    let people = ["slow", "gone", "dropped", "angry"].map(|p| format!("{p}@example.org"));
    for who in &people {
        app.subscribe_confirmed(&smtp, who).await;
    }
    // The documented events, each about one of ours: deferred, bounce, dropped, spamreport.
    let mut events: Value = serde_json::from_str(&sample("sendgrid-events.json")).expect("json");
    let mut next = people.iter();
    for e in events.as_array_mut().expect("array") {
        if matches!(
            e["event"].as_str(),
            Some("deferred" | "bounce" | "dropped" | "spamreport")
        ) {
            e["email"] = next.next().expect("a person per event").as_str().into();
        }
    }
    let body = events.to_string();
    let ts = now_secs().to_string();
    let good = sendgrid_sign(&pair, &ts, &body);

    let stale_ts = (now_secs() - 360).to_string();
    for (signature, timestamp) in [
        (Some(sendgrid_sign(&other, &ts, &body)), Some(ts.clone())),
        (None, Some(ts.clone())),
        (Some(good.clone()), None),
        (Some(good.clone()), Some((now_secs() + 1).to_string())),
        (
            Some(sendgrid_sign(&pair, &stale_ts, &body)),
            Some(stale_ts.clone()),
        ),
    ] {
        let (status, answer) = post_sendgrid(&app, &body, signature, timestamp).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    }
    // A body changed under a good signature.
    let tampered = body.replace("spamreport", "delivered");
    let (status, _) = post_sendgrid(&app, &tampered, Some(good.clone()), Some(ts.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for who in &people {
        assert_eq!(status_of(&app, who).await, "confirmed", "{who}");
    }
    assert_eq!(events_of(&app, "sendgrid").await, 0);

    let (status, answer) = post_sendgrid(&app, &body, Some(good.clone()), Some(ts.clone())).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["recorded"],
        serde_json::json!([
            "matched soft by recipient",
            "matched hard by recipient",
            "matched hard by recipient",
            "matched complaint by recipient"
        ])
    );
    assert_eq!(status_of(&app, "slow@example.org").await, "confirmed");
    assert_eq!(status_of(&app, "gone@example.org").await, "bounced");
    assert_eq!(status_of(&app, "dropped@example.org").await, "bounced");
    assert_eq!(status_of(&app, "angry@example.org").await, "unsubscribed");
    assert_eq!(events_of(&app, "sendgrid").await, 4);

    // The same call again: a replay.
    let (status, _) = post_sendgrid(&app, &body, Some(good), Some(ts)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(events_of(&app, "sendgrid").await, 4);
}

const SES_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:squeeze-bounces";
const SES_CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem";

/// A stand-in for SNS: RSA test keys and a self-signed certificate made with `openssl`,
/// the certificate served over HTTP at any `.pem` path, and the confirmation GETs it saw.
struct FakeSns {
    dir: tempfile::TempDir,
    url: String,
    cert_fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    confirmations: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (installed by .ci/run)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl FakeSns {
    async fn start() -> Self {
        use axum::extract::State;
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().expect("tempdir");
        for (key, cert) in [("key.pem", "cert.pem"), ("other-key.pem", "other-cert.pem")] {
            let key = dir.path().join(key);
            let cert = dir.path().join(cert);
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=sns.us-east-1.amazonaws.com",
                "-keyout",
                key.to_str().expect("path"),
                "-out",
                cert.to_str().expect("path"),
            ]);
        }
        let pem = std::fs::read(dir.path().join("cert.pem")).expect("cert");
        let cert_fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let confirmations = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        type Seen = (
            Vec<u8>,
            std::sync::Arc<std::sync::atomic::AtomicUsize>,
            std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        );
        let app = axum::Router::new()
            .fallback(
                |State((pem, fetches, confirmations)): State<Seen>,
                 uri: axum::http::Uri| async move {
                    if uri.path().ends_with(".pem") {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        return (StatusCode::OK, pem);
                    }
                    let mut seen = confirmations.lock().expect("lock");
                    seen.push(uri.to_string());
                    // A `flaky` subscription fails its first confirmation.
                    if uri.query().is_some_and(|q| q.contains("flaky")) && seen.len() == 1 {
                        return (StatusCode::INTERNAL_SERVER_ERROR, Vec::new());
                    }
                    (StatusCode::OK, b"<ConfirmSubscriptionResponse/>".to_vec())
                },
            )
            .with_state((pem, cert_fetches.clone(), confirmations.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            dir,
            url,
            cert_fetches,
            confirmations,
        }
    }

    /// Base64 of `openssl dgst -sha1|-sha256 -sign` over `text` with the key `key`.
    fn sign(&self, key: &str, version: &str, text: &str) -> String {
        let input = self.dir.path().join("to-sign");
        let output = self.dir.path().join("signature");
        std::fs::write(&input, text).expect("write");
        let digest = if version == "1" { "-sha1" } else { "-sha256" };
        openssl(&[
            "dgst",
            digest,
            "-sign",
            self.dir.path().join(key).to_str().expect("path"),
            "-out",
            output.to_str().expect("path"),
            input.to_str().expect("path"),
        ]);
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(output).expect("sig"))
    }
}

/// An SNS message as AWS documents it, signed with `key` over the canonical string:
/// `Key\nValue\n` for Message, MessageId, Subject (Notification, if any) or SubscribeURL,
/// Timestamp, Token (confirmations), TopicArn, Type, in that order.
fn sns_message(sns: &FakeSns, key: &str, version: &str, fields: &[(&str, &str)]) -> Value {
    let mut v = serde_json::Map::new();
    for (k, val) in fields {
        v.insert((*k).to_owned(), (*val).into());
    }
    let kind = v["Type"].as_str().expect("Type").to_owned();
    let order: &[&str] = if kind == "Notification" {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    };
    let mut canonical = String::new();
    for k in order {
        if let Some(val) = v.get(*k).and_then(Value::as_str) {
            canonical.push_str(&format!("{k}\n{val}\n"));
        }
    }
    v.insert("SignatureVersion".into(), version.into());
    v.insert(
        "Signature".into(),
        sns.sign(key, version, &canonical).into(),
    );
    v.entry("SigningCertURL").or_insert(SES_CERT_URL.into());
    Value::Object(v)
}

fn sns_now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// An SES sample as an SNS Notification's Message, about `recipient`.
fn ses_event(sample_name: &str, recipient: &str) -> String {
    let mut v: Value = serde_json::from_str(&sample(sample_name)).expect("sample JSON");
    for list in [
        "/bounce/bouncedRecipients",
        "/complaint/complainedRecipients",
    ] {
        if let Some(r) = v.pointer_mut(list).and_then(Value::as_array_mut) {
            r[0]["emailAddress"] = recipient.into();
        }
    }
    v.to_string()
}

#[tokio::test]
async fn ses_notifications_signed_v1_and_v2_act_once_and_forged_foreign_stale_or_replayed_ones_change_nothing()
 {
    let sns = FakeSns::start().await;
    let smtp = SmtpServer::start().await;
    let base = format!("{}/certs/", sns.url);
    let app = spawn(
        &smtp,
        &[
            (
                "ses_topic_arn",
                &format!("arn:aws:sns:eu-west-1:1:other,{SES_TOPIC}"),
            ),
            ("ses_sns_cert_url_override", &base),
        ],
    )
    .await;
    for who in [
        "jane@example.org",
        "richard@example.org",
        "alive@example.org",
    ] {
        app.subscribe_confirmed(&smtp, who).await;
    }
    let path = "/webhooks/ses";
    let bounce_of = |who: &str| ses_event("ses-bounce.json", who);
    let notification =
        |key: &str, version: &str, message: &str, id: &str, ts: &str, topic: &str| {
            sns_message(
                &sns,
                key,
                version,
                &[
                    ("Type", "Notification"),
                    ("MessageId", id),
                    ("TopicArn", topic),
                    ("Message", message),
                    ("Timestamp", ts),
                ],
            )
        };
    let alive = bounce_of("alive@example.org");

    let mut refused = Vec::new();
    // Signed with a key that is not the certificate's.
    refused.push(notification(
        "other-key.pem",
        "1",
        &alive,
        "m-1",
        &sns_now(),
        SES_TOPIC,
    ));
    // A good signature, then the Message changed.
    let mut tampered = notification(
        "key.pem",
        "2",
        &bounce_of("jane@example.org"),
        "m-2",
        &sns_now(),
        SES_TOPIC,
    );
    tampered["Message"] = alive.clone().into();
    refused.push(tampered);
    // Unsigned.
    let mut unsigned = notification("key.pem", "1", &alive, "m-3", &sns_now(), SES_TOPIC);
    unsigned
        .as_object_mut()
        .expect("object")
        .remove("Signature");
    refused.push(unsigned);
    // From a topic not allowed, signed well.
    refused.push(notification(
        "key.pem",
        "1",
        &alive,
        "m-4",
        &sns_now(),
        "arn:aws:sns:us-east-1:123456789012:someone-else",
    ));
    // Two hours old, and two hours ahead, signed well.
    for hours in [-2, 2] {
        let ts = (chrono::Utc::now() + chrono::Duration::hours(hours))
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        refused.push(notification("key.pem", "2", &alive, "m-5", &ts, SES_TOPIC));
    }
    // The certificate named on another host (even with the override set, the URL the
    // message names must be SNS's), and over http.
    for cert in [
        format!("{}/cert.pem", sns.url),
        "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem".to_owned(),
        "http://sns.us-east-1.amazonaws.com/cert.pem".to_owned(),
    ] {
        let mut m = notification("key.pem", "1", &alive, "m-6", &sns_now(), SES_TOPIC);
        m["SigningCertURL"] = cert.into();
        refused.push(m);
    }
    for m in refused {
        let (status, body) = post(&app, path, m.to_string(), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{m}: {body}");
    }
    assert_eq!(status_of(&app, "alive@example.org").await, "confirmed");
    assert_eq!(status_of(&app, "jane@example.org").await, "confirmed");
    assert_eq!(events_of(&app, "ses").await, 0);

    // SignatureVersion 1 (SHA1withRSA): the permanent bounce bounces its subscriber.
    let good = notification(
        "key.pem",
        "1",
        &bounce_of("jane@example.org"),
        "m-10",
        &sns_now(),
        SES_TOPIC,
    );
    let (status, body) = post(&app, path, good.to_string(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"][0], "matched hard by recipient", "{body}");
    assert_eq!(status_of(&app, "jane@example.org").await, "bounced");
    assert_eq!(
        app.text("SELECT status FROM bounce_events WHERE source = 'ses'")
            .await,
        "5.1.1"
    );
    // The same MessageId again: a replay, even freshly signed around another bounce.
    let (status, _) = post(&app, path, good.to_string(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let reused = notification("key.pem", "2", &alive, "m-10", &sns_now(), SES_TOPIC);
    let (status, _) = post(&app, path, reused.to_string(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(status_of(&app, "alive@example.org").await, "confirmed");
    assert_eq!(events_of(&app, "ses").await, 1);

    // SignatureVersion 2 (SHA256withRSA): the complaint unsubscribes at once.
    let complaint = notification(
        "key.pem",
        "2",
        &ses_event("ses-complaint.json", "richard@example.org"),
        "m-11",
        &sns_now(),
        SES_TOPIC,
    );
    let (status, body) = post(&app, path, complaint.to_string(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["recorded"][0], "matched complaint by recipient",
        "{body}"
    );
    assert_eq!(status_of(&app, "richard@example.org").await, "unsubscribed");
    assert_eq!(events_of(&app, "ses").await, 2);
    // The certificate was fetched once, then kept.
    assert_eq!(
        sns.cert_fetches.load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    let (status, _) = post(&app, path, "{not json".into(), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(sns.confirmations.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn ses_without_the_override_fetches_certificates_only_from_sns_hosts() {
    let sns = FakeSns::start().await;
    let smtp = SmtpServer::start().await;
    let app = spawn(&smtp, &[("ses_topic_arn", SES_TOPIC)]).await;
    app.subscribe_confirmed(&smtp, "jane@example.org").await;
    // Well signed, its certificate served where it names it: but that is not SNS.
    let m = sns_message(
        &sns,
        "key.pem",
        "2",
        &[
            ("Type", "Notification"),
            ("MessageId", "m-1"),
            ("TopicArn", SES_TOPIC),
            ("Message", &ses_event("ses-bounce.json", "jane@example.org")),
            ("Timestamp", &sns_now()),
            ("SigningCertURL", &format!("{}/cert.pem", sns.url)),
        ],
    );
    let (status, body) = post(&app, "/webhooks/ses", m.to_string(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("SigningCertURL")),
        "{body}"
    );
    assert_eq!(
        sns.cert_fetches.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert_eq!(status_of(&app, "jane@example.org").await, "confirmed");
    assert_eq!(events_of(&app, "ses").await, 0);
}

#[tokio::test]
async fn ses_subscription_confirmation_is_confirmed_by_a_get_of_its_subscribe_url() {
    let sns = FakeSns::start().await;
    let smtp = SmtpServer::start().await;
    let app = spawn(
        &smtp,
        &[
            ("ses_topic_arn", SES_TOPIC),
            ("ses_sns_cert_url_override", &sns.url),
        ],
    )
    .await;
    let subscribe = format!(
        "{}/?Action=ConfirmSubscription&TopicArn={SES_TOPIC}&Token=2336412f37fb687f5d51e6e2425c464de&flaky=1",
        sns.url
    );
    let confirmation = |id: &str| {
        sns_message(
            &sns,
            "key.pem",
            "1",
            &[
                ("Type", "SubscriptionConfirmation"),
                ("MessageId", id),
                ("Token", "2336412f37fb687f5d51e6e2425c464de"),
                ("TopicArn", SES_TOPIC),
                (
                    "Message",
                    "You have chosen to subscribe to the topic. To confirm the subscription, \
                     visit the SubscribeURL included in this message.",
                ),
                ("SubscribeURL", &subscribe),
                ("Timestamp", &sns_now()),
            ],
        )
    };
    // A forged one (its SubscribeURL changed after signing) is not followed.
    let mut forged = confirmation("c-1");
    forged["SubscribeURL"] = format!("{}/?Action=ConfirmSubscription&Token=other", sns.url).into();
    let (status, body) = post(&app, "/webhooks/ses", forged.to_string(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(sns.confirmations.lock().expect("lock").is_empty());

    // The first GET fails: 503, and SNS's retry of the same message is heard, not
    // refused as a replay; once confirmed, the same message again is one.
    let good = confirmation("c-2").to_string();
    let (status, body) = post(&app, "/webhooks/ses", good.clone(), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, body) = post(&app, "/webhooks/ses", good.clone(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(&app, "/webhooks/ses", good, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let seen = sns.confirmations.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].contains("Action=ConfirmSubscription"), "{seen:?}");
    assert!(
        seen[0].contains("Token=2336412f37fb687f5d51e6e2425c464de"),
        "{seen:?}"
    );
}
