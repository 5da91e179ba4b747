//! The durable queue and its worker against a real SMTP server: restarts, dead workers,
//! transient and permanent failures, authentication, the outbox.

use std::time::Duration;

use crate::helpers::{self, Options, SmtpServer, TestApp, WAIT, eventually, seed};
use squeeze::domain::clock::now_ms;

fn opts(smtp: &SmtpServer) -> Options {
    Options {
        smtp_url: Some(smtp.url()),
        ..Options::default()
    }
}

/// The app on a fresh database with no worker: the test claims and records by hand.
async fn without_worker(smtp: &SmtpServer) -> TestApp {
    TestApp::spawn_with(Options {
        worker: false,
        ..opts(smtp)
    })
    .await
}

/// The outcome "sent" for a claimed delivery, as its worker records it.
fn sent(d: &squeeze::store::ClaimedDelivery) -> squeeze::store::Recorded {
    squeeze::store::Recorded {
        delivery_id: d.id.clone(),
        claim_id: d.claim_id.clone(),
        kind: d.kind,
        subscriber_id: d.subscriber_id.clone(),
        outcome: squeeze::domain::delivery::Outcome::Sent,
    }
}

#[tokio::test]
async fn a_queued_confirmation_survives_a_worker_restart_and_is_delivered_once() {
    let smtp = SmtpServer::start().await;
    let db = helpers::TestDb::new().await;

    // Web only: the sign-up is queued, nothing is sent.
    let web = TestApp::spawn_with(Options {
        worker: false,
        database: Some(db.clone()),
        ..opts(&smtp)
    })
    .await;
    assert_eq!(web.subscribe("restart@example.com").await.status(), 202);
    web.stop().await;
    assert_eq!(smtp.count(), 0);

    // A worker starts later and delivers it.
    let worker = TestApp::spawn_with(Options {
        database: Some(db.clone()),
        ..opts(&smtp)
    })
    .await;
    smtp.wait_for(1, WAIT).await;
    worker.stop().await;

    // Another start sends nothing again.
    let again = TestApp::spawn_with(Options {
        database: Some(db.clone()),
        ..opts(&smtp)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        again
            .scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'sent'")
            .await,
        1
    );
    again.stop().await;
    assert_eq!(smtp.count(), 1);
}

/// A worker that claimed and died (it never heartbeats again; here it never did) holds its
/// claim no longer than its heartbeat says it is alive: the next worker takes it over at once,
/// long before the lease (default, 5 minutes) would run out.
#[tokio::test]
async fn a_dead_workers_claim_is_taken_over_long_before_its_lease() {
    let smtp = SmtpServer::start().await;
    let db = helpers::TestDb::new().await;

    let web = TestApp::spawn_with(Options {
        worker: false,
        database: Some(db.clone()),
        ..opts(&smtp)
    })
    .await;
    web.subscribe("lease@example.com").await;
    // A worker claims the row and dies before sending anything.
    let claimed = web
        .app
        .store
        .claim("a-dead-worker", now_ms(), Duration::from_secs(300), 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    // It is still its own: asking again, it gets nothing.
    assert!(
        web.app
            .store
            .claim("a-dead-worker", now_ms(), Duration::from_secs(300), 10)
            .await
            .expect("claim")
            .is_empty()
    );
    web.stop().await;

    let worker = TestApp::spawn_with(Options {
        database: Some(db),
        ..opts(&smtp)
    })
    .await;
    smtp.wait_for(1, WAIT).await;
    eventually("delivery recorded as sent", WAIT, || async {
        worker
            .scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'sent' AND attempts = 2")
            .await
            == 1
    })
    .await;
    worker.stop().await;
    assert_eq!(smtp.count(), 1);
}

#[tokio::test]
async fn a_4xx_at_rcpt_is_retried_then_delivered() {
    let smtp = SmtpServer::start().await;
    smtp.faults().rcpt_replies.insert(
        "retry@example.com".into(),
        [
            "451 4.7.1 Greylisted, try again".to_owned(),
            "452 4.2.2 Mailbox full".to_owned(),
        ]
        .into(),
    );
    let app = TestApp::spawn(&smtp).await;
    app.subscribe("retry@example.com").await;
    smtp.wait_for(1, WAIT).await;
    eventually("sent after retries", WAIT, || async {
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'sent' AND attempts = 3")
            .await
            == 1
    })
    .await;
    app.stop().await;
    assert_eq!(smtp.count(), 1);
}

#[tokio::test]
async fn a_5_1_1_reply_fails_at_once_keeps_the_reply_and_marks_the_subscriber_bounced() {
    let smtp = SmtpServer::start().await;
    smtp.faults().rcpt_always.insert(
        "ghost@example.com".into(),
        "550 5.1.1 <ghost@example.com>: Recipient address rejected: User unknown".into(),
    );
    let app = TestApp::spawn(&smtp).await;
    app.subscribe("ghost@example.com").await;
    eventually("delivery failed", WAIT, || async {
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'failed'")
            .await
            == 1
    })
    .await;
    let sub = app
        .app
        .store
        .subscriber_by_email("ghost@example.com")
        .await
        .expect("db")
        .expect("row");
    let d = &app.app.store.deliveries_for(&sub.id).await.expect("db")[0];
    assert_eq!(d.attempts, 1, "a permanent failure is not retried");
    assert_eq!(d.smtp_code, Some(550));
    assert!(
        d.last_error.as_deref().is_some_and(|e| e.contains("5.1.1")),
        "{:?}",
        d.last_error
    );
    assert_eq!(sub.status.as_str(), "bounced");
    // A bounced address is never mailed again, whatever the form says.
    assert_eq!(app.subscribe("ghost@example.com").await.status(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.scalar("SELECT COUNT(*) FROM deliveries").await, 1);
    app.stop().await;
    assert_eq!(smtp.count(), 0);
}

/// Commands go pipelined (RFC 2920) to a relay that offers it and one at a time to one that
/// does not; a refusal is read in its turn either way; and a line that starts with a dot, or
/// is a lone dot, arrives as written (dot-stuffing), where a missed stuffing would end the
/// message early or lose a dot.
#[tokio::test]
async fn commands_are_pipelined_only_where_offered_and_dotted_lines_arrive_intact() {
    let intro = "A lone dot follows.\n.\n...and a line that starts with three dots.";
    for pipelining in [true, false] {
        let smtp = SmtpServer::start().await;
        smtp.faults().no_pipelining = !pipelining;
        smtp.faults().rcpt_replies.insert(
            "confirmed0@dots.example".into(),
            ["451 4.7.1 Greylisted, try again".to_owned()].into(),
        );
        let app = TestApp::spawn(&smtp).await;
        seed(&app, &[("confirmed", 2)], "dots.example").await;
        app.send_digest_with_intro_now(Some(intro)).await;
        eventually("both sent, one after a retry", WAIT, || async {
            app.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'sent'")
                .await
                == 2
        })
        .await;
        app.stop().await;
        let received = smtp.received();
        assert_eq!(received.len(), 2, "pipelining {pipelining}");
        let refused = smtp.rcpt_attempts();
        assert!(
            refused.iter().any(|a| a.reply.starts_with("451")),
            "the greylisting reply was given: {refused:?}"
        );
        for r in &received {
            assert_eq!(r.pipelined, pipelining, "pipelined to {:?}", r.rcpts);
            let text = r.text().replace("\r\n", "\n");
            assert!(
                text.contains("A lone dot follows.\n.\n...and a line that starts with three dots."),
                "{text}"
            );
            assert!(
                text.contains("Unsubscribe with one click"),
                "the message is whole"
            );
        }
    }
}

/// A relay that refuses the second EHLO (asked to learn whether it pipelines) still gets the
/// mail, one command at a time.
#[tokio::test]
async fn a_relay_that_refuses_a_repeated_ehlo_still_gets_the_mail() {
    let smtp = SmtpServer::start().await;
    smtp.faults().refuse_repeated_ehlo = true;
    let app = TestApp::spawn(&smtp).await;
    app.subscribe("repeat@example.com").await;
    let received = smtp.wait_for(1, WAIT).await;
    app.stop().await;
    assert_eq!(received[0].rcpts, vec!["repeat@example.com".to_owned()]);
    assert!(
        !received[0].pipelined,
        "no pipelining without a known offer"
    );
}

#[tokio::test]
async fn a_refused_greeting_and_a_connection_dropped_during_data_are_retried() {
    let smtp = SmtpServer::start().await;
    {
        let mut f = smtp.faults();
        f.refuse_greetings = 2;
        f.drop_after_data = 1;
    }
    let app = TestApp::spawn(&smtp).await;
    app.subscribe("flaky@example.com").await;
    smtp.wait_for(1, WAIT).await;
    eventually("sent", WAIT, || async {
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'sent'")
            .await
            == 1
    })
    .await;
    assert!(app.scalar("SELECT attempts FROM deliveries").await >= 3);
    app.stop().await;
    assert_eq!(smtp.count(), 1);
}

#[tokio::test]
async fn a_stalled_server_times_out_and_delivery_recovers_when_it_answers_again() {
    let smtp = SmtpServer::start().await;
    smtp.faults().stall = true;
    let app = TestApp::spawn_with(Options {
        settings: vec![("smtp_timeout".into(), "300ms".into())],
        ..opts(&smtp)
    })
    .await;
    app.subscribe("patient@example.com").await;
    eventually("a timeout is recorded", WAIT, || async {
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'queued' AND last_error LIKE '%timed out%'").await == 1
    })
    .await;
    smtp.faults().stall = false;
    app.wait_all_sent(&smtp, 1).await;
    app.stop().await;
}

#[tokio::test]
async fn smtp_auth_uses_the_credentials_of_the_url() {
    let smtp = SmtpServer::start().await;
    smtp.faults().credentials = Some(("mailer".into(), "s3cr3t:pw".into()));
    let wrong = TestApp::spawn_with(Options {
        smtp_url: Some(format!("smtp://mailer:wrong@{}", smtp.addr)),
        ..Options::default()
    })
    .await;
    wrong.subscribe("auth@example.com").await;
    eventually("auth failure recorded, delivery kept for retry", WAIT, || async {
        wrong.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'queued' AND last_error LIKE '%AUTH%'").await == 1
    })
    .await;
    let db = wrong.database.clone();
    wrong.stop().await;
    assert_eq!(smtp.count(), 0);

    let right = TestApp::spawn_with(Options {
        smtp_url: Some(format!("smtp://mailer:s3cr3t%3Apw@{}", smtp.addr)),
        database: Some(db),
        ..Options::default()
    })
    .await;
    let mail = smtp.wait_for(1, WAIT).await.remove(0);
    assert_eq!(mail.auth_user.as_deref(), Some("mailer"));
    right.stop().await;
}

#[tokio::test]
async fn without_an_smtp_url_mail_goes_to_the_outbox_as_eml_files() {
    let app = TestApp::spawn_with(Options::default()).await;
    app.subscribe("outbox@example.com").await;
    let outbox = app.outbox.clone();
    eventually("an .eml file in the outbox", WAIT, || async {
        std::fs::read_dir(&outbox)
            .map(|d| {
                d.flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "eml"))
            })
            .unwrap_or(false)
    })
    .await;
    let file = std::fs::read_dir(&outbox)
        .expect("outbox")
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .expect("eml");
    let bytes = std::fs::read(file.path()).expect("read");
    let mail = mailparse::parse_mail(&bytes).expect("MIME");
    let to = mail
        .headers
        .iter()
        .find(|h| h.get_key_ref() == "To")
        .map(|h| h.get_value());
    assert_eq!(to.as_deref(), Some("outbox@example.com"));
    let id = app.text("SELECT id FROM deliveries").await;
    assert_eq!(file.file_name().to_string_lossy(), format!("{id}.eml"));
    app.stop().await;
}

async fn tls_app(smtp_url: String, ca_pem: Option<&str>) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Vec::new();
    if let Some(pem) = ca_pem {
        let path = dir.path().join("relay-ca.pem");
        std::fs::write(&path, pem).expect("write CA");
        settings.push(("smtp_ca_file".to_owned(), path.display().to_string()));
    }
    let app = TestApp::spawn_with(Options {
        smtp_url: Some(smtp_url),
        settings,
        ..Options::default()
    })
    .await;
    (app, dir)
}

#[tokio::test]
async fn starttls_and_implicit_tls_with_a_private_ca() {
    let (acceptor, pem) = helpers::smtp::localhost_tls();
    let starttls = SmtpServer::start_with(
        "127.0.0.1:0",
        helpers::smtp::Tls::Starttls(acceptor.clone()),
    )
    .await;
    starttls.faults().credentials = Some(("mailer".into(), "pw".into()));
    let url = format!(
        "smtp://mailer:pw@localhost:{}?tls=required",
        starttls.addr.port()
    );
    let (app, _dir) = tls_app(url, Some(&pem)).await;
    app.subscribe("tls@example.com").await;
    let mail = starttls.wait_for(1, WAIT).await.remove(0);
    assert!(mail.tls, "sent after STARTTLS");
    assert_eq!(mail.auth_user.as_deref(), Some("mailer"));
    app.stop().await;

    let implicit =
        SmtpServer::start_with("127.0.0.1:0", helpers::smtp::Tls::Implicit(acceptor)).await;
    let (app, _dir) = tls_app(
        format!("smtps://localhost:{}", implicit.addr.port()),
        Some(&pem),
    )
    .await;
    app.subscribe("smtps@example.com").await;
    assert!(implicit.wait_for(1, WAIT).await[0].tls);
    app.stop().await;
}

#[tokio::test]
async fn an_untrusted_relay_certificate_is_refused_and_the_mail_kept() {
    let (acceptor, _) = helpers::smtp::localhost_tls();
    let smtp = SmtpServer::start_with("127.0.0.1:0", helpers::smtp::Tls::Starttls(acceptor)).await;
    let (app, _dir) = tls_app(
        format!("smtp://localhost:{}?tls=required", smtp.addr.port()),
        None,
    )
    .await;
    app.subscribe("careful@example.com").await;
    eventually("a TLS failure is recorded and the delivery kept", WAIT, || async {
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'queued' AND last_error LIKE '%STARTTLS%'").await == 1
    })
    .await;
    assert_eq!(smtp.count(), 0);
    app.stop().await;
}

/// A test database with the schema as it was before migration `version`, and its URL.
async fn schema_before(db: &helpers::TestDb, version: i64) -> (sqlx::AnyPool, String) {
    let folder = if helpers::on_postgres() {
        "migrations/postgres"
    } else {
        "migrations/sqlite"
    };
    let mut before =
        sqlx::migrate::Migrator::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(folder))
            .await
            .expect("migrations");
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let url = if helpers::on_postgres() {
        db.url().to_owned()
    } else {
        format!("{}?mode=rwc", db.url())
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("database");
    before
        .run(&pool)
        .await
        .unwrap_or_else(|e| panic!("the schema before {version}: {e}"));
    (pool, url)
}

/// Migration 0007 moved the queue out of `deliveries` into `delivery_queue` and `claims`. A
/// database upgraded with mail in every state keeps every delivery: what was queued, and what
/// a worker held when the upgrade ran, is sent once; what was sent or failed stays so, and
/// still shows in the statistics.
#[tokio::test]
async fn an_upgrade_to_the_separate_queue_loses_and_repeats_nothing() {
    let smtp = SmtpServer::start().await;
    let db = helpers::TestDb::new().await;
    let (pool, _) = schema_before(&db, 7).await;
    let now = now_ms();
    for (id, status) in [
        ("queued", "pending"),
        ("held", "pending"),
        ("sent", "confirmed"),
        ("failed", "pending"),
    ] {
        sqlx::query(
            "INSERT INTO subscribers (id, email, status, unsubscribe_token, consent_at,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5, $5)",
        )
        .bind(id)
        .bind(format!("{id}@example.com"))
        .bind(status)
        .bind(format!("token-{id}"))
        .bind(now - 120_000)
        .execute(&pool)
        .await
        .expect("subscriber");
    }
    // (subscriber and delivery id, status, attempts, lease_until, sent_at)
    for (id, status, attempts, lease_until, sent_at) in [
        ("queued", "queued", 0, None, None),
        // Held by a worker whose lease has run out.
        ("held", "sending", 1, Some(now - 1), None),
        ("sent", "sent", 1, None, Some(now - 60_000)),
        ("failed", "failed", 1, None, None),
    ] {
        sqlx::query(
            "INSERT INTO deliveries (id, kind, subscriber_id, status, attempts, run_at,
                 lease_until, claim_id, expires_at, created_at, sent_at, updated_at)
             VALUES ($1, 'confirmation', $1, $2, $3, $4, $5, $6, $7, $4, $8, $9)",
        )
        .bind(id)
        .bind(status)
        .bind(attempts)
        .bind(now - 90_000)
        .bind(lease_until)
        .bind(lease_until.map(|_| "a-dead-worker"))
        .bind(now + 3_600_000)
        .bind(sent_at)
        .bind(now - 30_000)
        .execute(&pool)
        .await
        .expect("delivery");
    }
    pool.close().await;

    let app = TestApp::spawn_with(Options {
        database: Some(db),
        ..opts(&smtp)
    })
    .await;
    smtp.wait_for(2, WAIT).await;
    eventually("both unsent confirmations recorded", WAIT, || async {
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'sent'")
            .await
            == 3
    })
    .await;
    // Time for a second copy to go out, if one were going to.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut rcpts: Vec<String> = smtp.received().into_iter().flat_map(|m| m.rcpts).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["held@example.com", "queued@example.com"]);
    assert_eq!(
        app.scalar("SELECT attempts FROM deliveries WHERE id = 'held'")
            .await,
        2,
        "the interrupted attempt still counts"
    );
    assert_eq!(
        app.scalar("SELECT (SELECT COUNT(*) FROM delivery_queue) + (SELECT COUNT(*) FROM claims)")
            .await,
        0,
        "nothing left queued or claimed"
    );
    let activity = squeeze::service::reporting::activity(&app.app.store, now_ms(), 60)
        .await
        .expect("activity");
    let failed: Vec<_> = activity
        .recent_failures
        .iter()
        .map(|f| f.email.as_str())
        .collect();
    assert_eq!(failed, ["failed@example.com"]);
    assert_eq!(
        activity.sent_per_minute.iter().sum::<i64>(),
        3,
        "sent in the last hour: {:?}",
        activity.sent_per_minute
    );
    app.stop().await;
}

/// SQLite migration 0008 rebuilds `deliveries` so that writing a status no longer builds a
/// temporary index per row (the CHECK's five-value IN list; BENCHMARKS.md, item 27). The
/// rebuild keeps every delivery and every queued one, column for column, and the table's
/// rules: the CHECK, the foreign keys and their cascades.
#[tokio::test]
async fn the_status_check_rebuild_keeps_every_delivery_and_every_rule() {
    if helpers::on_postgres() {
        println!("skipped: migration 0008 is SQLite's alone");
        return;
    }
    let db = helpers::TestDb::new().await;
    let (pool, url) = schema_before(&db, 8).await;
    let now = now_ms();
    for id in ["a", "b"] {
        sqlx::query(
            "INSERT INTO subscribers (id, email, status, unsubscribe_token, consent_at,
                 created_at, updated_at)
             VALUES ($1, $2, 'confirmed', $3, $4, $4, $4)",
        )
        .bind(id)
        .bind(format!("{id}@example.com"))
        .bind(format!("token-{id}"))
        .bind(now)
        .execute(&pool)
        .await
        .expect("subscriber");
    }
    for (id, subscriber, status) in [
        ("d-queued", "a", "queued"),
        ("d-sending", "a", "sending"),
        ("d-sent", "b", "sent"),
        ("d-failed", "b", "failed"),
        ("d-suppressed", "b", "suppressed"),
    ] {
        sqlx::query(
            "INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, attempts,
                 claim_id, expires_at, last_error, smtp_code, created_at, sent_at, updated_at,
                 bounce, failed_at)
             VALUES ($1, 'digest', $2, $1, $3, 2, 'claim', $4, 'err', 451, $5, $6, $7, 1, $8)",
        )
        .bind(id)
        .bind(subscriber)
        .bind(status)
        .bind(now + 1)
        .bind(now + 2)
        .bind(now + 3)
        .bind(now + 4)
        .bind(now + 5)
        .execute(&pool)
        .await
        .expect("delivery");
    }
    sqlx::query(
        "INSERT INTO delivery_queue (delivery_id, digest_id, run_at) VALUES ('d-queued', 'd-queued', $1)",
    )
    .bind(now)
    .execute(&pool)
    .await
    .expect("queued");
    let everything = "SELECT d.id || '|' || d.kind || '|' || d.subscriber_id || '|' || d.digest_id
            || '|' || d.status || '|' || d.attempts || '|' || d.claim_id || '|' || d.expires_at
            || '|' || d.last_error || '|' || d.smtp_code || '|' || d.created_at || '|'
            || d.sent_at || '|' || d.updated_at || '|' || d.bounce || '|' || d.failed_at
            || '|' || COALESCE(q.run_at, '-')
        FROM deliveries d LEFT JOIN delivery_queue q ON q.delivery_id = d.id ORDER BY d.id";
    let rows_before: Vec<String> = sqlx::query_scalar(everything)
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(rows_before.len(), 5);

    pool.close().await;
    let store = squeeze::store::Store::connect(db.url(), &squeeze::store::DatabaseKind::Sqlite)
        .await
        .expect("store");
    store.migrate().await.expect("migration 0008");
    store.close().await;

    // A connection opened after the migration: EXPLAIN on one opened before would show the
    // statement as compiled against the old schema.
    let pool = sqlx::AnyPool::connect(&url).await.expect("database");
    let rows_after: Vec<String> = sqlx::query_scalar(everything)
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(rows_after, rows_before);
    let plan: Vec<(i64, String)> =
        sqlx::query_as("EXPLAIN UPDATE deliveries SET status = 'sent' WHERE id = 'd-sending'")
            .fetch_all(&pool)
            .await
            .expect("plan")
            .into_iter()
            .collect();
    assert!(
        !plan.iter().any(|(_, op)| op == "OpenEphemeral"),
        "writing a status builds a temporary table: {plan:?}"
    );
    let bogus = sqlx::query("UPDATE deliveries SET status = 'bogus' WHERE id = 'd-sent'")
        .execute(&pool)
        .await;
    assert!(bogus.is_err(), "the CHECK still holds");
    let orphan = sqlx::query(
        "INSERT INTO delivery_queue (delivery_id, digest_id, run_at) VALUES ('nope', NULL, 0)",
    )
    .execute(&pool)
    .await;
    assert!(orphan.is_err(), "the queue's foreign key still holds");
    sqlx::query("DELETE FROM subscribers WHERE id = 'a'")
        .execute(&pool)
        .await
        .expect("forget a");
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM deliveries UNION ALL SELECT delivery_id FROM delivery_queue ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("left");
    assert_eq!(
        left,
        ["d-failed", "d-sent", "d-suppressed"],
        "cascades still reach the queue"
    );
    pool.close().await;
}

/// Sending a message changes these columns of its `deliveries` row, so no index may cover one
/// (as a key or in its WHERE): on PostgreSQL, changing an indexed column makes an update add
/// an entry to every index of the table instead of rewriting the row in place (HOT), and that
/// was most of the database's work per message (BENCHMARKS.md, item 23).
#[tokio::test]
async fn no_index_of_deliveries_covers_a_column_that_sending_changes() {
    let smtp = SmtpServer::start().await;
    let app = without_worker(&smtp).await;
    let sql = if helpers::on_postgres() {
        "SELECT indexdef FROM pg_indexes
         WHERE tablename = 'deliveries' AND schemaname = current_schema()"
    } else {
        // Constraints' own indexes have no SQL: the primary key and the UNIQUE pair.
        "SELECT sql FROM sqlite_master
         WHERE type = 'index' AND tbl_name = 'deliveries' AND sql IS NOT NULL"
    };
    let indexes: Vec<String> = sqlx::query_scalar(sql)
        .fetch_all(&app.db().await)
        .await
        .expect("index definitions");
    assert!(!indexes.is_empty());
    let changed = [
        "status",
        "attempts",
        "claim_id",
        "sent_at",
        "updated_at",
        "last_error",
        "smtp_code",
    ];
    for index in &indexes {
        let words: Vec<&str> = index
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .collect();
        for column in changed {
            assert!(!words.contains(&column), "{index} covers {column}");
        }
    }
    app.stop().await;
}

/// A digest is sent when none of its deliveries is queued or held by a worker: not while the
/// last message is still on the wire.
#[tokio::test]
async fn a_digest_is_not_sent_while_a_worker_still_holds_its_last_delivery() {
    let smtp = SmtpServer::start().await;
    let app = without_worker(&smtp).await;
    seed(&app, &[("confirmed", 1)], "example.com").await;
    let id = app.send_digest_now().await;
    let digest_sent = format!("SELECT COUNT(*) FROM digests WHERE id = '{id}' AND status = 'sent'");
    let claimed = app
        .app
        .store
        .claim("a-test-worker", now_ms(), Duration::from_secs(60), 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    app.app
        .scheduler()
        .tick(chrono::Utc::now())
        .await
        .expect("tick");
    assert_eq!(app.scalar(&digest_sent).await, 0, "still sending");
    app.app
        .store
        .record(&[sent(&claimed[0])], now_ms())
        .await
        .expect("record");
    app.app
        .scheduler()
        .tick(chrono::Utc::now())
        .await
        .expect("tick");
    assert_eq!(app.scalar(&digest_sent).await, 1, "sent");
    app.stop().await;
}

/// A claim whose lease runs out gives back only what it had not finished: the outcomes its
/// worker recorded stand, the rest is claimed again (once), and a late outcome from the old
/// holder is ignored.
#[tokio::test]
async fn an_expired_claim_requeues_only_its_unfinished_deliveries() {
    let smtp = SmtpServer::start().await;
    let app = without_worker(&smtp).await;
    seed(&app, &[("confirmed", 3)], "example.com").await;
    app.send_digest_now().await;
    let store = &app.app.store;
    let lease = Duration::from_millis(200);
    let first = store
        .claim("a-test-worker", now_ms(), lease, 10)
        .await
        .expect("claim");
    assert_eq!(first.len(), 3);
    store
        .record(&[sent(&first[0])], now_ms())
        .await
        .expect("record");
    // Nothing to take while the lease holds.
    assert!(
        store
            .claim("a-test-worker", now_ms(), lease, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let again = store
        .claim("a-test-worker", now_ms(), lease, 10)
        .await
        .expect("claim");
    let mut ids: Vec<_> = again.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    let mut unfinished: Vec<_> = first[1..].iter().map(|d| d.id.clone()).collect();
    unfinished.sort();
    assert_eq!(
        ids, unfinished,
        "the two unrecorded deliveries, claimed again"
    );
    assert!(again.iter().all(|d| d.attempts == 2), "{again:?}");
    // The old holder's late outcome for one of them no longer counts.
    store
        .record(&[sent(&first[1])], now_ms())
        .await
        .expect("record");
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE id = '{}' AND status = 'sending'",
            first[1].id
        ))
        .await,
        1
    );
    let done: Vec<_> = again.iter().map(sent).collect();
    store.record(&done, now_ms()).await.expect("record");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'sent'")
            .await,
        3
    );
    assert_eq!(
        app.scalar("SELECT (SELECT COUNT(*) FROM delivery_queue) + (SELECT COUNT(*) FROM claims)")
            .await,
        0,
        "nothing left queued or claimed"
    );
    app.stop().await;
}

/// Migration 0011 makes addresses one subscriber whatever their case. A database with
/// case-duplicates in every combination of states is merged by `merge_keeper`'s rule: a
/// bounce stays, else the latest explicit choice, else the first; the kept row's evidence
/// stays, the others' deliveries and tokens move to it without breaking the one delivery per
/// digest and subscriber, and a new casing can no longer be inserted.
#[tokio::test]
async fn the_case_merge_keeps_the_latest_choice_and_moves_deliveries() {
    use squeeze::domain::SubscriberStatus;
    use squeeze::domain::subscriber::{Duplicate, merge_keeper};
    let db = helpers::TestDb::new().await;
    let (pool, url) = schema_before(&db, 11).await;
    // (id, email, status, confirmed_at, unsubscribed_at, created_at)
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        Option<i64>,
        Option<i64>,
        i64,
    );
    let groups: [&[Row]; 4] = [
        &[
            ("a1", "Ada@example.com", "pending", None, None, 1),
            ("a2", "ada@example.com", "confirmed", Some(50), None, 2),
            (
                "a3",
                "ADA@example.com",
                "unsubscribed",
                Some(10),
                Some(30),
                3,
            ),
        ],
        &[
            ("b1", "Bob@example.com", "confirmed", Some(50), None, 1),
            (
                "b2",
                "bob@example.com",
                "unsubscribed",
                Some(20),
                Some(90),
                2,
            ),
        ],
        &[
            ("c1", "Carol@example.com", "confirmed", Some(90), None, 1),
            ("c2", "carol@example.com", "bounced", Some(5), None, 2),
        ],
        &[
            ("d1", "dan@example.com", "pending", None, None, 7),
            ("d2", "Dan@example.com", "pending", None, None, 4),
        ],
    ];
    let mut expected_keepers = Vec::new();
    for group in groups {
        let dups: Vec<Duplicate> = group
            .iter()
            .map(|(_, _, status, c, u, created)| Duplicate {
                status: status.parse::<SubscriberStatus>().expect("status"),
                confirmed_at: *c,
                unsubscribed_at: *u,
                created_at: *created,
            })
            .collect();
        let keeper = merge_keeper(&dups).expect("a keeper");
        expected_keepers.push((group[keeper].0, group[keeper].2));
        for (id, email, status, c, u, created) in group {
            sqlx::query(
                "INSERT INTO subscribers (id, email, status, unsubscribe_token, consent_at,
                     consent_ip, confirmed_at, unsubscribed_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $5, $5)",
            )
            .bind(*id)
            .bind(*email)
            .bind(*status)
            .bind(format!("token-{id}"))
            .bind(*created)
            .bind(format!("192.0.2.{created}"))
            .bind(*c)
            .bind(*u)
            .execute(&pool)
            .await
            .expect("subscriber");
        }
    }
    assert_eq!(
        expected_keepers,
        [
            ("a2", "confirmed"),
            ("b2", "unsubscribed"),
            ("c2", "bounced"),
            ("d2", "pending")
        ],
        "the domain rule"
    );
    let now = now_ms();
    // (delivery, subscriber, digest, status)
    let deliveries: [(&str, &str, Option<&str>, &str); 5] = [
        ("x-a1-g1", "a1", Some("g1"), "queued"),
        ("x-a2-g1", "a2", Some("g1"), "sent"),
        ("x-a3-g2", "a3", Some("g2"), "sent"),
        ("x-a1-conf", "a1", None, "sent"),
        ("x-b1-g1", "b1", Some("g1"), "sent"),
    ];
    let insert = "INSERT INTO deliveries (id, kind, subscriber_id, digest_id, status, expires_at,
             created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $6)";
    for (id, subscriber, digest, status) in deliveries {
        sqlx::query(insert)
            .bind(id)
            .bind(if digest.is_some() {
                "digest"
            } else {
                "confirmation"
            })
            .bind(subscriber)
            .bind(digest)
            .bind(status)
            .bind(now)
            .execute(&pool)
            .await
            .expect("delivery");
    }
    sqlx::query(
        "INSERT INTO delivery_queue (delivery_id, digest_id, run_at) VALUES ('x-a1-g1', 'g1', $1)",
    )
    .bind(now)
    .execute(&pool)
    .await
    .expect("queued");
    sqlx::query(
        "INSERT INTO confirmation_tokens (token_hash, subscriber_id, created_at, expires_at)
         VALUES ('hash-a1', 'a1', $1, $1)",
    )
    .bind(now)
    .execute(&pool)
    .await
    .expect("token");
    pool.close().await;

    let kind = if helpers::on_postgres() {
        squeeze::store::DatabaseKind::Postgres
    } else {
        squeeze::store::DatabaseKind::Sqlite
    };
    let store = squeeze::store::Store::connect(db.url(), &kind)
        .await
        .expect("store");
    store.migrate().await.expect("migration 0011");
    store.close().await;

    let pool = sqlx::AnyPool::connect(&url).await.expect("database");
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT id || '|' || email || '|' || status || '|' || consent_ip FROM subscribers
         ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("subscribers");
    assert_eq!(
        kept,
        [
            "a2|ada@example.com|confirmed|192.0.2.2",
            "b2|bob@example.com|unsubscribed|192.0.2.2",
            "c2|carol@example.com|bounced|192.0.2.2",
            "d2|Dan@example.com|pending|192.0.2.4",
        ]
    );
    let moved: Vec<String> = sqlx::query_scalar(
        "SELECT id || '|' || subscriber_id || '|' || status FROM deliveries ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("deliveries");
    assert_eq!(
        moved,
        [
            "x-a1-conf|a2|sent",
            "x-a2-g1|a2|sent",
            "x-a3-g2|a2|sent",
            "x-b1-g1|b2|sent",
        ],
        "the kept row's own g1 stays, the duplicate g1 goes, the rest move"
    );
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM delivery_queue")
        .fetch_one(&pool)
        .await
        .expect("queue");
    assert_eq!(queued, 0, "the dropped delivery left the queue too");
    let token: String = sqlx::query_scalar(
        "SELECT subscriber_id FROM confirmation_tokens WHERE token_hash = 'hash-a1'",
    )
    .fetch_one(&pool)
    .await
    .expect("token");
    assert_eq!(token, "a2");
    let again = sqlx::query(
        "INSERT INTO subscribers (id, email, status, unsubscribe_token, consent_at, created_at,
             updated_at)
         VALUES ('a9', 'ADA@EXAMPLE.COM', 'pending', 'token-a9', 1, 1, 1)",
    )
    .execute(&pool)
    .await;
    assert!(again.is_err(), "the unique key is case-insensitive");
    pool.close().await;
}
