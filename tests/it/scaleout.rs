//! Scale-out on PostgreSQL: several `squeeze worker` processes share one queue and one global
//! rate; several `squeeze serve` nodes elect one scheduler. These tests need PostgreSQL: on a
//! laptop without it they skip with a reason; under CI=true they fail instead.

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::helpers::{
    Options, SmtpServer, TestApp, TestDb, eventually, free_port, seed, spawn_squeeze, terminate,
    wait_exit,
};

async fn web(db: &TestDb, smtp: &SmtpServer) -> TestApp {
    TestApp::spawn_with(Options {
        smtp_url: Some(smtp.url()),
        worker: false,
        database: Some(db.clone()),
        ..Options::default()
    })
    .await
}

fn workers(n: usize, db: &TestDb, env: &[(&str, String)]) -> Vec<Child> {
    (0..n)
        .map(|_| spawn_squeeze(&["worker"], db, env))
        .collect()
}

async fn stop_all(children: &mut [Child]) {
    for c in children.iter() {
        terminate(c);
    }
    for c in children.iter_mut() {
        let status = wait_exit(c, Duration::from_secs(15)).await;
        assert!(status.success(), "graceful exit: {status:?}");
    }
}

async fn wait_live_workers(app: &TestApp, n: i64) {
    eventually("workers registered", Duration::from_secs(20), || async {
        let since = squeeze::domain::clock::now_ms() - 6000;
        app.scalar(&format!(
            "SELECT COUNT(*) FROM workers WHERE heartbeat_at >= {since}"
        ))
        .await
            == n
    })
    .await;
}

fn copies(smtp: &SmtpServer) -> HashMap<String, usize> {
    let mut per = HashMap::new();
    for m in smtp.received() {
        *per.entry(m.rcpts[0].clone()).or_default() += 1;
    }
    per
}

#[tokio::test]
async fn scaleout_three_workers_share_the_queue_and_the_global_rate() {
    let Some(db) = TestDb::postgres_or_skip().await else {
        return;
    };
    let smtp = SmtpServer::start().await;
    let app = web(&db, &smtp).await;
    let confirmed = seed(&app, &[("confirmed", 3000)], "example.com").await;
    let env = [
        ("SQUEEZE_SMTP_URL", smtp.url()),
        ("SQUEEZE_RATE", "300".to_owned()),
        ("SQUEEZE_BURST", "10".to_owned()),
        ("SQUEEZE_CONCURRENCY", "4".to_owned()),
    ];
    let mut children = workers(3, &db, &env);
    wait_live_workers(&app, 3).await;
    // Let every worker see the other two at a heartbeat before the digest arrives.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.send_digest_now().await;
    let got = smtp.wait_for(3000, Duration::from_secs(60)).await;
    let arrivals: Vec<Instant> = got.iter().map(|m| m.at).collect();
    let first = *arrivals.iter().min().expect("arrivals");
    let last = *arrivals.iter().max().expect("arrivals");
    let rate = (arrivals.len() - 1) as f64 / last.duration_since(first).as_secs_f64();
    println!(
        "3 workers, global limit 300/s: {rate:.0} msg/s over {} connections",
        smtp.connections()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_all(&mut children).await;

    let per = copies(&smtp);
    assert_eq!(smtp.count(), 3000, "exactly one copy each");
    assert!(confirmed.iter().all(|e| per.get(e) == Some(&1)));
    assert!(
        // Unshared, three workers would send 900/s.
        (225.0..=375.0).contains(&rate),
        "aggregate {rate:.0}/s at a global 300/s"
    );
    // All three took part.
    assert!(
        smtp.connections() >= 12,
        "{} connections",
        smtp.connections()
    );
    app.stop().await;
}

#[tokio::test]
async fn scaleout_killing_one_of_three_workers_loses_nothing() {
    let Some(db) = TestDb::postgres_or_skip().await else {
        return;
    };
    let smtp = SmtpServer::start().await;
    let app = web(&db, &smtp).await;
    let confirmed = seed(&app, &[("confirmed", 3000)], "example.com").await;
    let env = [
        ("SQUEEZE_SMTP_URL", smtp.url()),
        ("SQUEEZE_RATE", "1500".to_owned()),
        ("SQUEEZE_CONCURRENCY", "4".to_owned()),
    ];
    let mut children = workers(3, &db, &env);
    wait_live_workers(&app, 3).await;
    app.send_digest_now().await;
    smtp.wait_for_at_least(1000, Duration::from_secs(30)).await;
    let mut victim = children.remove(0);
    victim.kill().expect("SIGKILL");
    victim.wait().expect("reaped");
    let at_kill = smtp.count();

    eventually(
        "every subscriber received the digest",
        Duration::from_secs(60),
        || async { copies(&smtp).len() == 3000 },
    )
    .await;
    eventually(
        "nothing left queued or leased",
        Duration::from_secs(20),
        || async {
            app.scalar("SELECT COUNT(*) FROM deliveries WHERE status IN ('queued', 'sending')")
                .await
                == 0
        },
    )
    .await;
    stop_all(&mut children).await;
    let per = copies(&smtp);
    assert!(confirmed.iter().all(|e| per.contains_key(e)));
    let duplicates = smtp.count() - 3000;
    println!("killed one of three workers after {at_kill} messages; {duplicates} duplicates");
    // One worker's worth (concurrency 4): on the wire, waiting for the recorder, being
    // written (as in tests/it/engine.rs).
    let bound = 4 + 2 * squeeze::worker::UNRECORDED_PER_CONNECTION * 4;
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates (bound {bound}): more than one worker had in flight"
    );
    app.stop().await;
}

#[tokio::test]
async fn scaleout_two_serve_nodes_elect_one_scheduler_and_fan_out_once() {
    let Some(db) = TestDb::postgres_or_skip().await else {
        return;
    };
    let smtp = SmtpServer::start().await;
    let app = web(&db, &smtp).await;
    seed(&app, &[("confirmed", 50)], "example.com").await;
    let nodes: Vec<Child> = (0..2)
        .map(|_| {
            let bind = format!("127.0.0.1:{}", free_port());
            spawn_squeeze(
                &["serve", "--no-worker", "--bind", &bind],
                &db,
                &[("SQUEEZE_SMTP_URL", smtp.url())],
            )
        })
        .collect();
    let held = || async {
        app.scalar(&format!(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND classid = {}::oid AND objid = hashtext(current_schema())::oid",
            squeeze::store::SCHEDULER_LOCK
        ))
        .await
    };
    eventually(
        "one node holds the scheduler role",
        Duration::from_secs(20),
        || async { held().await == 1 },
    )
    .await;

    let schedule = |subject: &'static str| {
        let store = app.app.store.clone();
        async move {
            use squeeze::domain::{ItemSelection, NewDigest, NewItem};
            let now = squeeze::domain::clock::now_ms();
            let item = NewItem::parse(subject, "https://example.com/x", "", None).expect("item");
            store.add_item(&item, now).await.expect("item");
            let d = NewDigest::parse(subject, None, ItemSelection::Pending).expect("digest");
            let d = store.create_digest(&d, None, now).await.expect("digest");
            store
                .schedule_digest(&d.id, now, now)
                .await
                .expect("schedule");
            d.id
        }
    };
    let first = schedule("First").await;
    eventually(
        "the first digest is fanned out",
        Duration::from_secs(20),
        || async {
            app.text(&format!("SELECT status FROM digests WHERE id = '{first}'"))
                .await
                == "sending"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM events WHERE kind = 'fan_out' AND digest_id = '{first}'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{first}'"
        ))
        .await,
        50
    );
    assert_eq!(held().await, 1, "still exactly one scheduler");

    // Whichever node led, stopping one leaves a scheduler running.
    let mut nodes = nodes;
    let mut gone = nodes.remove(0);
    gone.kill().expect("SIGKILL");
    gone.wait().expect("reaped");
    let second = schedule("Second").await;
    eventually(
        "the second digest is fanned out by the surviving node",
        Duration::from_secs(20),
        || async {
            app.text(&format!("SELECT status FROM digests WHERE id = '{second}'"))
                .await
                == "sending"
        },
    )
    .await;
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE digest_id = '{second}'"
        ))
        .await,
        50
    );
    stop_all(&mut nodes).await;
    app.stop().await;
}
