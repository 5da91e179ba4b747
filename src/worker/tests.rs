//! The worker's handling of each outcome, driven through `deliver` with the recording stub
//! sender: no socket, no SMTP server (a SQLite file in a temp dir stands in for the store).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Worker, WorkerSettings};
use crate::compose::{ComposeSettings, Composer, DigestContent, ItemContent};
use crate::domain::clock::{Millis, ms, now_ms};
use crate::domain::delivery::{Outcome, SendFailure};
use crate::domain::{DeliveryKind, RetryPolicy, SubscriberStatus};
use crate::mail::Transport;
use crate::mail::stub::StubSender;
use crate::metrics::Metrics;
use crate::render::Renderer;
use crate::store::DatabaseKind;
use crate::store::{ClaimedDelivery, Store};

const DAY: Millis = 24 * 3600 * 1000;
const DIGEST: &str = "digest-1";

/// 10 minutes for the first retry, less up to a quarter of jitter: 7.5 to 10 minutes.
fn retry() -> RetryPolicy {
    RetryPolicy::builder()
        .initial(Duration::from_secs(600))
        .factor(2.0)
        .max(Duration::from_secs(3600))
        .jitter(0.25)
        .build()
}

struct Harness {
    worker: Worker,
    _dir: tempfile::TempDir,
}

async fn harness(pause_threshold: f64, pause_window: usize) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("worker.db").display());
    let store = Store::connect(&url, &DatabaseKind::Sqlite)
        .await
        .expect("store");
    store.migrate().await.expect("migrate");
    let templates = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");
    let renderer = Renderer::load(std::path::Path::new(templates)).expect("templates");
    let composer = Composer::new(
        Arc::new(renderer),
        ComposeSettings {
            list_name: "Squeeze".into(),
            list_id: "Squeeze <news.example.com>".into(),
            public_url: "https://news.example.com".parse().expect("url"),
            unsubscribe_mailto: None,
            confirmation_ttl: Duration::from_secs(48 * 3600),
            postal_address: None,
            feedback_sender: "example.com".into(),
            archive: true,
        },
    );
    let n = std::num::NonZeroU32::new(10_000).expect("nonzero");
    let settings = WorkerSettings {
        from: "News <news@example.com>".parse().expect("from"),
        concurrency: std::num::NonZeroUsize::MIN,
        rate: n,
        burst: n,
        domain_rates: Vec::new(),
        throttle_cooldown: Duration::from_secs(60),
        retry: retry(),
        pause_threshold,
        pause_window,
        lease: Duration::from_secs(300),
        shutdown_timeout: Duration::from_secs(5),
        confirmation_ttl: Duration::from_secs(48 * 3600),
        signer: None,
        verp: None,
    };
    let worker = Worker::new(
        store,
        composer,
        Transport::Outbox(dir.path().join("outbox")),
        settings,
        Arc::new(Notify::new()),
        Arc::new(Metrics::new().expect("metrics")),
    );
    // The digest's content is already loaded, as after its first email.
    let item = ItemContent {
        title: "Rust 2.0",
        url: "https://example.com/rust",
        summary: "It happened.",
        source: None,
    };
    worker.digests.lock().await.insert(
        DIGEST.into(),
        Arc::new(DigestContent::new(DIGEST, "Monday", None, [item])),
    );
    Harness { worker, _dir: dir }
}

fn delivery(id: &str, email: &str) -> ClaimedDelivery {
    let now = now_ms();
    ClaimedDelivery {
        id: id.into(),
        claim_id: "claim-1".into(),
        kind: DeliveryKind::Digest,
        digest_id: Some(DIGEST.into()),
        tested_digest: None,
        attempts: 1,
        expires_at: now + 3 * DAY,
        created_at: now,
        subscriber_id: Some(format!("sub-{id}")),
        email: email.into(),
        name: Some("Ada".into()),
        subscriber_status: SubscriberStatus::Confirmed,
        unsubscribe_token: "tok".into(),
    }
}

fn reply(code: u16, reply: &str) -> Result<(), SendFailure> {
    let kind = if code >= 500 {
        "permanent"
    } else {
        "transient"
    };
    Err(SendFailure::reply(
        code,
        format!("{kind} error ({code}): {reply}"),
    ))
}

async fn deliver_with(
    h: &Harness,
    d: &ClaimedDelivery,
    answer: Result<(), SendFailure>,
) -> (Outcome, StubSender) {
    let mut stub = StubSender::answering([answer]);
    let outcome = h.worker.deliver(d, &mut stub).await;
    (outcome, stub)
}

#[tokio::test]
async fn a_sent_message_is_sent_with_its_headers() {
    let h = harness(0.5, 10).await;
    let d = delivery("dlv-sent", "ada@example.org");
    let (outcome, stub) = deliver_with(&h, &d, Ok(())).await;
    assert_eq!(outcome, Outcome::Sent);
    assert_eq!(stub.sent.len(), 1);
    let sent = &stub.sent[0];
    assert_eq!(sent.delivery_id, "dlv-sent");
    let to: Vec<String> = sent.envelope.to().iter().map(ToString::to_string).collect();
    assert_eq!(to, ["ada@example.org"]);
    let text = String::from_utf8_lossy(&sent.bytes);
    assert!(
        text.contains("Message-ID: <dlv-sent@example.com>"),
        "{text}"
    );
    assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
}

/// Break (a): a worker that retries at once, ignoring the retry policy's delay.
#[tokio::test]
async fn a_4xx_is_retried_after_the_retry_policys_delay_not_at_once() {
    let h = harness(0.5, 10).await;
    let d = delivery("dlv-4xx", "ada@example.org");
    let before = now_ms();
    let (outcome, stub) = deliver_with(&h, &d, reply(450, "4.2.0 Mailbox busy")).await;
    let after = now_ms();
    assert_eq!(stub.sent.len(), 1);
    let Outcome::Retry {
        run_at,
        code,
        error,
    } = outcome
    else {
        panic!("expected a retry, got {outcome:?}");
    };
    assert_eq!(code, Some(450));
    assert_eq!(error, "transient error (450): 4.2.0 Mailbox busy");
    let (shortest, longest) = (ms(Duration::from_secs(450)), ms(Duration::from_secs(600)));
    assert!(
        run_at >= before + shortest && run_at <= after + longest,
        "due again {} s from now, the policy says 450 to 600",
        (run_at - before) / 1000
    );
    // The domain did not ask to slow down: nothing cools.
    assert_eq!(h.worker.limits.cooling("example.org"), None);
}

#[tokio::test]
async fn a_4xx_whose_retry_would_be_past_the_deadline_fails() {
    let h = harness(0.5, 10).await;
    let mut d = delivery("dlv-late", "ada@example.org");
    // The next try (7.5 to 10 minutes away) would come after the deadline.
    d.expires_at = now_ms() + ms(Duration::from_secs(60));
    let (outcome, _) = deliver_with(&h, &d, reply(450, "4.2.0 Mailbox busy")).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            code: Some(450),
            error: "gave up after 1 attempts: transient error (450): 4.2.0 Mailbox busy".into(),
            bounce: false,
        }
    );
}

#[tokio::test]
async fn a_connection_failure_is_retried_later() {
    let h = harness(0.5, 10).await;
    let d = delivery("dlv-conn", "ada@example.org");
    let before = now_ms();
    let failure = SendFailure::connection("cannot connect to relay:25: refused".into());
    let (outcome, _) = deliver_with(&h, &d, Err(failure)).await;
    assert!(
        matches!(outcome, Outcome::Retry { run_at, code: None, .. } if run_at >= before + ms(Duration::from_secs(450))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_5xx_fails_at_once_without_bouncing() {
    let h = harness(0.5, 10).await;
    let d = delivery("dlv-5xx", "ada@example.org");
    for (code, text) in [
        (554, "5.7.1 Message rejected as spam"),
        (552, "5.2.2 Mailbox full"),
        (554, "Transaction failed"),
    ] {
        let (outcome, _) = deliver_with(&h, &d, reply(code, text)).await;
        assert_eq!(
            outcome,
            Outcome::Failed {
                code: Some(code),
                error: format!("permanent error ({code}): {text}"),
                bounce: false,
            }
        );
    }
}

/// Break (d): the enhanced-code branch of the hard-bounce rule, alone: the reply says 5.1.1
/// and nothing about an unknown user.
#[tokio::test]
async fn an_enhanced_5_1_code_alone_is_a_hard_bounce() {
    let h = harness(0.5, 10).await;
    let d = delivery("dlv-bounce", "ada@example.org");
    for code in [550, 554] {
        let text = "5.1.1 <ada@example.org>: Recipient address rejected";
        let (outcome, _) = deliver_with(&h, &d, reply(code, text)).await;
        assert_eq!(
            outcome,
            Outcome::Failed {
                code: Some(code),
                error: format!("permanent error ({code}): {text}"),
                bounce: true,
            },
            "{code}"
        );
        assert!(outcome.bounces_subscriber());
    }
}

#[tokio::test]
async fn a_throttle_cools_the_domain_and_defers_its_next_message() {
    let h = harness(0.5, 10).await;
    let d = delivery("dlv-throttle", "ada@slow.example");
    let (outcome, _) = deliver_with(&h, &d, reply(421, "4.7.0 Try again later")).await;
    assert!(
        matches!(
            outcome,
            Outcome::Retry {
                code: Some(421),
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(h.worker.limits.cooling("slow.example").is_some());
    // The next message to that domain is not attempted, and spends no attempt.
    let next = delivery("dlv-next", "bob@slow.example");
    let (outcome, stub) = deliver_with(&h, &next, Ok(())).await;
    assert!(matches!(outcome, Outcome::Deferred { .. }), "{outcome:?}");
    assert!(outcome.gives_attempt_back());
    assert!(stub.sent.is_empty(), "nothing sent to a cooling domain");
    // Other domains are not held back.
    let other = delivery("dlv-other", "cy@fast.example");
    let (outcome, _) = deliver_with(&h, &other, Ok(())).await;
    assert_eq!(outcome, Outcome::Sent);
}

#[tokio::test]
async fn a_subscriber_who_left_is_suppressed_and_not_mailed() {
    let h = harness(0.5, 10).await;
    for status in [
        SubscriberStatus::Unsubscribed,
        SubscriberStatus::Bounced,
        SubscriberStatus::Pending,
    ] {
        let mut d = delivery("dlv-left", "ada@example.org");
        d.subscriber_status = status;
        let (outcome, stub) = deliver_with(&h, &d, Ok(())).await;
        assert_eq!(
            outcome,
            Outcome::Suppressed {
                reason: format!("subscriber is {status}"),
            }
        );
        assert!(stub.sent.is_empty());
    }
}

#[tokio::test]
async fn an_expired_delivery_fails_unsent() {
    let h = harness(0.5, 10).await;
    let mut d = delivery("dlv-expired", "ada@example.org");
    d.expires_at = now_ms() - 1;
    let (outcome, stub) = deliver_with(&h, &d, Ok(())).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            code: None,
            error: "expired before it could be sent".into(),
            bounce: false,
        }
    );
    assert!(stub.sent.is_empty());
}

/// Auto-pause counts connection trouble and permanent failures, never a 4xx reply.
#[tokio::test]
async fn auto_pause_counts_connection_trouble_but_not_a_4xx_reply() {
    let h = harness(0.5, 2).await;
    for i in 0..4 {
        let d = delivery(&format!("dlv-4xx-{i}"), "ada@example.org");
        let (outcome, _) = deliver_with(&h, &d, reply(450, "4.2.0 busy")).await;
        assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    }
    for i in 0..2 {
        let d = delivery(&format!("dlv-conn-{i}"), "ada@example.org");
        let failure = SendFailure::connection("connection reset".into());
        let (outcome, _) = deliver_with(&h, &d, Err(failure)).await;
        assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    }
    // The digest paused itself: what is claimed of it goes back unsent.
    let d = delivery("dlv-after", "ada@example.org");
    let (outcome, stub) = deliver_with(&h, &d, Ok(())).await;
    assert_eq!(outcome, Outcome::Released);
    assert!(stub.sent.is_empty());
}

#[tokio::test]
async fn auto_pause_counts_permanent_failures() {
    let h = harness(0.5, 2).await;
    for i in 0..2 {
        let d = delivery(&format!("dlv-5xx-{i}"), "ada@example.org");
        let (outcome, _) = deliver_with(&h, &d, reply(554, "5.7.1 spam")).await;
        assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    }
    let d = delivery("dlv-after", "ada@example.org");
    let (outcome, _) = deliver_with(&h, &d, Ok(())).await;
    assert_eq!(outcome, Outcome::Released);
}

/// A delivery claimed just before an editor cancelled its digest is suppressed, not sent.
#[tokio::test]
async fn a_claimed_delivery_of_a_cancelled_digest_is_suppressed_not_sent() {
    use crate::domain::{ItemSelection, NewDigest, NewItem};
    let h = harness(0.5, 10).await;
    let store = &h.worker.store;
    let now = now_ms();
    let item = NewItem::parse("Wrong link", "https://example.com/x", "", None).expect("item");
    store.add_item(&item, now).await.expect("item");
    let draft = NewDigest::parse("Monday", None, ItemSelection::Pending).expect("digest");
    let digest = store
        .create_digest(&draft, None, now)
        .await
        .expect("digest");
    let mut d = delivery("dlv-cancelled", "ada@example.org");
    d.digest_id = Some(digest.id.clone());
    let content = h.worker.digests.lock().await.get(DIGEST).cloned();
    if let Some(content) = content {
        h.worker
            .digests
            .lock()
            .await
            .insert(digest.id.clone(), content);
    }
    store.cancel_digest(&digest.id, now).await.expect("cancel");

    let (outcome, stub) = deliver_with(&h, &d, Ok(())).await;
    assert_eq!(
        outcome,
        Outcome::Suppressed {
            reason: "cancelled by an editor".into()
        }
    );
    assert!(stub.sent.is_empty(), "a cancelled digest's email went out");
}
