//! `squeeze-bench`: end-to-end throughput, latency and memory of the delivery pipeline,
//! measured against the raw SMTP floor in the same run (issue #7).
//!
//! One run: starts Postfix's `smtp-sink` on 127.0.0.1, seeds N confirmed subscribers, makes a
//! realistic digest through the library, and sends it as production does: on PostgreSQL a
//! `squeeze worker` child process waits on LISTEN while this process fans out (as another
//! node's scheduler would); on SQLite one `squeeze serve` child process, whose scheduler fans
//! the digest out in chunks when it falls due and whose worker sends from the first chunk.
//! It runs until every delivery is sent, samples the sending process's peak RSS and CPU time,
//! then sends N copies of the same message over the same kind of TCP_NODELAY connections
//! twice, with no database or rendering (the floors): with lettre's client alone, and with the
//! worker's own SMTP code alone; it prints the pipeline's ratio to each. Its headline is the
//! end-to-end rate, from the moment the digest became due (the fan-out included) to the last
//! message sent, with its ratio to each floor. It prints figures and never judges them:
//! timing assertions belong to no test.
//!
//! ```sh
//! cargo build --release --bins
//! target/release/squeeze-bench --subscribers 100000 [--database postgres]
//! ```

mod history;

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use lettre::address::Envelope;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use sqlx::{AnyConnection, Connection as _};
use squeeze::app::App;
use squeeze::compose::DigestContent;
use squeeze::config::Config;
use squeeze::domain::clock::now_ms;
use squeeze::domain::{ItemSelection, NewDigest, NewItem, Token};
use squeeze::mail::settings::SmtpSettings;
use squeeze::mail::{self as mailer, Letter, Sender as _};
use squeeze::store::WORK_CHANNEL;
use squeeze_test_support::TEMPLATES;
use squeeze_test_support::db::TestDb;
use squeeze_test_support::process::{Reaped, child_command, without_squeeze_env};
use tokio::net::TcpStream;

mod kill_restart;

const INSTALL_SINK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/smtp-sink.sh");
const FROM: &str = "Freshly Squeezed <news@squeeze.example>";
const PUBLIC_URL: &str = "https://news.squeeze.example";
/// Rate limits lifted: the benchmark measures what the pipeline can do, not the pacing.
const LIFTED_RATE: &str = "1000000";
/// Subscribers per INSERT statement (4 parameters each: well under SQLite's 32,766 and
/// PostgreSQL's 65,535) and per transaction.
const SEED_ROWS_PER_STATEMENT: u64 = 1_000;
const SEED_ROWS_PER_TRANSACTION: u64 = 50_000;
/// No single SMTP exchange of the floor may hang the benchmark.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the database is asked whether the worker is done. The end time itself comes
/// from the rows' `sent_at`, so this only bounds how late the benchmark notices.
const POLL: Duration = Duration::from_millis(50);

#[derive(Parser, Debug)]
#[command(
    name = "squeeze-bench",
    about = "End-to-end benchmark of the Squeeze pipeline against the raw SMTP floor"
)]
struct Args {
    /// Confirmed subscribers to seed, i.e. emails the digest fans out to.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    subscribers: u64,
    /// Backend to measure.
    #[arg(long, value_enum, default_value_t = Database::Sqlite)]
    database: Database,
    /// PostgreSQL server for `--database postgres`; the run uses a fresh schema in it and
    /// drops it at the end.
    #[arg(long, default_value = "postgres://root@127.0.0.1:5432/test")]
    postgres_url: String,
    /// SMTP connections, for the worker and for the floor alike.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrency: u32,
    /// Instead of the pipeline and floors: run `squeeze serve` with the sink as relay, SIGKILL
    /// it in the middle of the digest's fan-out (see --kill-at), restart it on the same
    /// database, and check from the rows that every confirmed subscriber got exactly one
    /// delivery, sent (issue 23, point 1).
    #[arg(long, conflicts_with = "fanout_only")]
    kill_restart: bool,
    /// With --kill-restart: the share of the list fanned out when the first process is killed.
    #[arg(long, default_value_t = 0.5, value_parser = fraction)]
    kill_at: f64,
    /// Measure seeding and fan-out only (no sink, worker or floor): for N = 1,000,000.
    #[arg(long)]
    fanout_only: bool,
    /// The smtp-sink to run (default: where scripts/smtp-sink.sh installs it, installing it
    /// first if it is missing).
    #[arg(long, value_name = "PATH")]
    smtp_sink: Option<PathBuf>,
    /// Items in the digest.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
    items: u64,
    /// Characters of each item's summary (the default makes about 20 KB of HTML).
    #[arg(long, default_value_t = 1_600, value_parser = clap::value_parser!(u64).range(0..=2000))]
    summary_chars: u64,
    /// Keep the temporary folder (database, worker and sink logs) and print where it is.
    #[arg(long)]
    keep_dir: bool,
    /// Runs the worker under this command, for profiling, e.g.
    /// "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out". RSS and CPU figures
    /// then describe the wrapper too.
    #[arg(long, value_name = "COMMAND")]
    worker_wrapper: Option<String>,
    /// Sign every email with a fresh DKIM key of this algorithm, and measure the signer's own
    /// floor in the same run (the same number of signatures of the same message on all cores,
    /// no database, no SMTP).
    #[arg(long, value_enum)]
    dkim: Option<DkimAlgorithm>,
    /// Seed this many delivery rows of past digests by SQL and measure claim, outcome write,
    /// fan-out and /api/stats with that history against an empty one, then a real send
    /// alone and beside the retention job deleting the history, and the job's rate (issue 23).
    #[arg(long, value_name = "ROWS")]
    history: Option<u64>,
    /// With --history: stop the retention job this many seconds after it started (it
    /// deletes the whole history otherwise); the rate is then over the part deleted.
    #[arg(long, value_name = "SECONDS", requires = "history")]
    retention_seconds: Option<u64>,
    /// With --history: after the send beside the job, send once more beside the job resting
    /// this many milliseconds between its batches.
    #[arg(long, value_name = "MS", requires = "history")]
    retention_pause: Option<u64>,
    /// A setting for this run, as in squeeze.toml (repeatable), for this process and the
    /// `squeeze` processes it starts alike, e.g. `--set fanout_chunk=20000`; it overrides the
    /// benchmark's own.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
    set: Vec<(String, String)>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("{s:?} is not KEY=VALUE"));
    };
    let key = key.trim();
    if !squeeze::config::SETTINGS.contains(&key) {
        return Err(format!(
            "{key:?} is not a setting of squeeze.toml (the configuration reference lists them)"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(format!(
            "{s:?} is not a fraction between 0 and 1 (exclusive)"
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DkimAlgorithm {
    Rsa,
    Ed25519,
}

/// Writes a fresh key for `--dkim` into the run's folder: Ed25519 from ring, RSA-2048 from
/// openssl (as `squeeze dkim keygen` makes them).
fn write_dkim_key(algorithm: DkimAlgorithm, dir: &Path) -> Result<()> {
    let pem = match algorithm {
        DkimAlgorithm::Ed25519 => {
            squeeze::mail::dkim::generate_ed25519().map_err(|e| anyhow!("Ed25519 key: {e}"))?
        }
        DkimAlgorithm::Rsa => {
            let out = Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ])
                .output()
                .context("running openssl for an RSA key")?;
            ensure!(out.status.success(), "openssl genpkey failed");
            String::from_utf8(out.stdout).context("openssl's key is not PEM")?
        }
    };
    std::fs::write(dir.join(DKIM_KEY_FILE), pem).context("writing the DKIM key")
}

const DKIM_KEY_FILE: &str = "dkim.pem";

/// `n` signatures of `message` on every core at once; returns seconds.
fn signer_floor(signer: &squeeze::mail::dkim::Signer, n: u64, message: &[u8]) -> Result<f64> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let next = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..cores)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        signer.sign(message).map_err(|e| anyhow!("{e}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow!("a signing thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(started.elapsed().as_secs_f64().max(1e-3))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Database {
    Sqlite,
    Postgres,
}

impl Database {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match bench(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("squeeze-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Sets up the database, runs the measurements (stopping early on Ctrl-C), and always
/// cleans up: child processes through `Drop` guards inside `run`, the temporary folder and the
/// PostgreSQL schema when the test database goes.
async fn bench(args: &Args) -> Result<()> {
    sqlx::any::install_default_drivers();
    let db = match args.database {
        Database::Sqlite => TestDb::sqlite("squeeze-bench-")?,
        Database::Postgres => {
            TestDb::postgres_at(&args.postgres_url, "bench_", "squeeze-bench-").await?
        }
    };
    let result = tokio::select! {
        r = run(args, db.dir(), db.url()) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if args.keep_dir {
        println!("kept: {}", db.keep_dir().display());
    }
    drop(db);
    result
}

async fn run(args: &Args, dir: &Path, url: &str) -> Result<()> {
    if let Some(rows) = args.history {
        return history::run(args, dir, url, rows).await;
    }
    let n = args.subscribers;
    println!(
        "squeeze-bench: {n} subscribers, {}, {} connections",
        args.database.name(),
        args.concurrency
    );
    println!("machine: {}", machine());

    // Started first so a missing or broken sink fails the run before minutes of seeding.
    let sink = if args.fanout_only {
        None
    } else {
        Some(Sink::start(args.smtp_sink.as_deref(), dir).await?)
    };

    if let Some(algorithm) = args.dkim {
        write_dkim_key(algorithm, dir)?;
        println!("DKIM: every email signed with a fresh {algorithm:?} key");
    }
    let app = App::start(config(args, url, dir)?)
        .await
        .context("starting Squeeze (database, templates)")?;

    let started = Instant::now();
    seed(url, n).await.context("seeding subscribers")?;
    println!(
        "seed: {n} confirmed subscribers in {} ms (fixture SQL, not the sign-up path)",
        started.elapsed().as_millis()
    );

    if args.kill_restart {
        let due_at = kill_restart::due_at();
        let digest_id = make_digest(&app, args.items, args.summary_chars, due_at).await?;
        app.store.close().await;
        let sink = sink.context("no smtp-sink")?;
        return kill_restart::run(args, dir, url, sink.port, &digest_id, due_at).await;
    }
    // Where the fan-out runs and where the worker is when the digest falls due, as in
    // production. SQLite runs as one `squeeze serve`: its scheduler fans the digest out in
    // chunks and wakes its own worker on the first, so the digest falls due a moment after
    // that process is up and the process does both. On PostgreSQL, `squeeze worker`
    // processes run all the time and wait on LISTEN: the worker starts now, this process
    // fans out (as the scheduler of another node would) and the fan-out's NOTIFY wakes it.
    let serving = args.database == Database::Sqlite && !args.fanout_only;
    let scheduled_at = if serving {
        now_ms() + kill_restart::DUE_AFTER_MS
    } else {
        now_ms()
    };
    let digest_id = make_digest(&app, args.items, args.summary_chars, scheduled_at).await?;
    let (envelope, message) = sample_message(&app, &digest_id).await?;

    let waiting_worker = match (&sink, args.database) {
        (Some(sink), Database::Postgres) => {
            let listening = listeners(url).await?;
            let worker = Worker::start(args, dir, url, sink.port)?;
            Some(worker.wait_listening(url, listening).await?)
        }
        (Some(sink), Database::Sqlite) => Some(Worker::serve(args, dir, url, sink.port)?),
        (None, _) => None,
    };
    if serving {
        println!(
            "the digest falls due {} ms after squeeze serve started (its scheduler fans out, its worker sends)",
            kill_restart::DUE_AFTER_MS
        );
    }

    // Fan-out: what the scheduler does when the digest is due. The headline's clock starts
    // at the due instant: a subscriber's digest is late by the fan-out as much as by the
    // sending.
    let (due_at, fanned_out) = if serving {
        (scheduled_at, None)
    } else {
        // This tick is the instant the digest falls due here.
        let due_at = now_ms();
        let started = Instant::now();
        let report = app
            .scheduler()
            .tick(chrono::Utc::now())
            .await
            .context("scheduler tick (fan-out)")?;
        let fanout = started.elapsed();
        let deliveries = report
            .fanned_out
            .iter()
            .find(|(id, _)| *id == digest_id)
            .map(|(_, count)| *count)
            .context("the scheduler did not fan out the digest")?;
        ensure!(
            deliveries == n,
            "fan-out made {deliveries} deliveries for {n} subscribers"
        );
        println!("fan-out: {n} deliveries in {} ms", fanout.as_millis());
        if args.fanout_only {
            app.store.close().await;
            return Ok(());
        }
        (due_at, Some(now_ms()))
    };
    let sink = sink.context("no smtp-sink")?;

    println!(
        "rate limits lifted for the benchmark: SQUEEZE_RATE={LIFTED_RATE}, SQUEEZE_BURST={LIFTED_RATE}"
    );
    // The sink's CPU time per phase shows whether the relay, not the sender, was the limit.
    // So is the database server's, for PostgreSQL, where the queries run outside the worker.
    let sink_cpu = cpu_seconds(sink.pid)?;
    let db_cpu = postgres_cpu_seconds();
    let machine = Busy::sample()?;
    let worker = match waiting_worker {
        Some(worker) => worker,
        None => Worker::start(args, dir, url, sink.port)?,
    };
    let when_started = worker.when_started();
    let pipeline = pipeline(worker, args, url, fanned_out, &digest_id).await?;
    let fanned_out_at = pipeline.fanned_out_at;
    if serving {
        println!(
            "fan-out: {n} deliveries in {} ms after due (squeeze serve's scheduler, in chunks, while its worker sent)",
            fanned_out_at - due_at
        );
    }
    let sink_cpu_pipeline = cpu_seconds(sink.pid)? - sink_cpu;
    let db_cpu_pipeline = pipeline.db_cpu_seconds - db_cpu;
    let others_pipeline =
        machine.others(pipeline.cpu_seconds + sink_cpu_pipeline + db_cpu_pipeline)?;
    println!(
        "pipeline: {n} emails in {:.2} s = {:.0} emails/s end to end (from fan-out done, or the first message if earlier, to the last sent)",
        pipeline.seconds,
        n as f64 / pipeline.seconds
    );
    println!(
        "latency enqueue-to-sent: p50 {} ms, p99 {} ms; first message sent {} ({when_started})",
        pipeline.p50_ms,
        pipeline.p99_ms,
        match pipeline.first_sent_ms {
            ms @ 0.. => format!("{ms} ms after the fan-out"),
            ms => format!("{} ms before the fan-out was complete", -ms),
        }
    );
    // From the instant the headline's clock starts: the fan-out's first chunk, the worker's
    // wake-up and first claim, and one SMTP transaction (issue 23: within 100 ms).
    println!(
        "first message sent {} ms after the digest fell due (the instant the headline starts from; fan-out took {} ms)",
        pipeline.first_sent_at - due_at,
        fanned_out_at - due_at
    );
    println!(
        "worker peak RSS: {:.1} MB; CPU: {:.2} s = {:.3} s per 1,000 emails",
        pipeline.peak_rss_kb as f64 / 1024.0,
        pipeline.cpu_seconds,
        pipeline.cpu_seconds * 1000.0 / n as f64
    );

    println!(
        "smtp-sink CPU during the pipeline: {sink_cpu_pipeline:.2} s = {:.3} s per 1,000 emails",
        sink_cpu_pipeline * 1000.0 / n as f64
    );
    if args.database == Database::Postgres {
        println!(
            "PostgreSQL server CPU during the pipeline (all its processes on this machine): {db_cpu_pipeline:.2} s = {:.3} s per 1,000 emails",
            db_cpu_pipeline * 1000.0 / n as f64
        );
    }

    println!("{others_pipeline}");

    let pipeline_rate = n as f64 / pipeline.seconds;
    let mut ratios = Vec::new();
    for client in [FloorClient::Lettre, FloorClient::Squeeze] {
        let (sink_cpu, own_cpu) = (cpu_seconds(sink.pid)?, cpu_seconds(std::process::id())?);
        let machine = Busy::sample()?;
        let seconds = floor(client, sink.port, args.concurrency, n, &envelope, &message).await?;
        // Nothing else runs in this process meanwhile (the app is idle; its SQLite checkpoint
        // task wakes every 200 ms to find nothing to copy).
        let client_cpu = cpu_seconds(std::process::id())? - own_cpu;
        let sink_cpu = cpu_seconds(sink.pid)? - sink_cpu;
        let others = machine.others(client_cpu + sink_cpu)?;
        let rate = n as f64 / seconds;
        println!(
            "floor, {}: {} TCP_NODELAY connections, same message and sink: {n} emails in {seconds:.2} s = {rate:.0} emails/s",
            client.describe(),
            args.concurrency
        );
        println!(
            "  CPU: client {client_cpu:.2} s = {:.3} s per 1,000 emails; smtp-sink {sink_cpu:.2} s = {:.3} s per 1,000 emails",
            client_cpu * 1000.0 / n as f64,
            sink_cpu * 1000.0 / n as f64
        );
        println!("{others}");
        ratios.push((client, pipeline_rate / rate));
    }
    for (client, ratio) in &ratios {
        println!("pipeline / floor ({}): {ratio:.2}", client.name());
    }
    // The headline: from the moment the digest became due (before the fan-out) to the last
    // message sent, against each floor measured in this run.
    let end_to_end = ((pipeline.last_sent_at - due_at).max(1)) as f64 / 1000.0;
    let end_to_end_rate = n as f64 / end_to_end;
    println!(
        "HEADLINE end to end, digest due -> last sent (fan-out included): {n} emails in {end_to_end:.2} s = {end_to_end_rate:.0} emails/s"
    );
    for (client, ratio) in &ratios {
        let floor_rate = pipeline_rate / ratio;
        println!(
            "HEADLINE end to end / floor ({}): {:.2}",
            client.name(),
            end_to_end_rate / floor_rate
        );
    }
    if let Some(signer) = &app.signer {
        // The floor signs the message as it was before the worker signed it.
        let unsigned = unsigned_part(&message);
        let own_cpu = cpu_seconds(std::process::id())?;
        let seconds = tokio::task::block_in_place(|| signer_floor(signer, n, unsigned))?;
        let cpu = cpu_seconds(std::process::id())? - own_cpu;
        let rate = n as f64 / seconds;
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        println!(
            "floor, DKIM signer alone ({n} signatures of the same message on all {cores} cores, no database, no SMTP): {seconds:.2} s = {rate:.0} signatures/s; CPU {cpu:.2} s = {:.3} ms per signature",
            cpu * 1000.0 / n as f64
        );
        let smtp_floor = ratios
            .iter()
            .map(|(_, ratio)| pipeline_rate / ratio)
            .fold(f64::INFINITY, f64::min);
        println!(
            "pipeline / lower of the signer floor and the SMTP floor: {:.2}",
            pipeline_rate / rate.min(smtp_floor)
        );
    }
    app.store.close().await;
    drop(sink);
    Ok(())
}

/// The configuration the bench process uses for seeding, the digest and fan-out; the worker
/// child gets the same settings as environment variables.
fn config(args: &Args, url: &str, dir: &Path) -> Result<Config> {
    // An empty file of our own, so a squeeze.toml in the working directory (or
    // SQUEEZE_CONFIG) cannot change what is measured.
    let file = dir.join("bench.toml");
    std::fs::write(&file, "").with_context(|| format!("writing {}", file.display()))?;
    let layer = settings(args, url, dir).into_iter().collect();
    Config::load(Some(&file), layer).map_err(|e| anyhow!("benchmark configuration: {e}"))
}

/// The run's settings, by key: the benchmark's own, then `--set` over them.
fn settings(args: &Args, url: &str, dir: &Path) -> Vec<(String, String)> {
    let dkim = args.dkim.is_some().then(|| {
        [
            ("dkim_selector", "bench".to_owned()),
            ("dkim_key", dir.join(DKIM_KEY_FILE).display().to_string()),
        ]
    });
    let own = [
        ("database_url", url.to_owned()),
        ("templates", TEMPLATES.to_owned()),
        ("from", FROM.to_owned()),
        ("public_url", PUBLIC_URL.to_owned()),
        ("outbox", dir.join("outbox").display().to_string()),
        ("rate", LIFTED_RATE.to_owned()),
        ("burst", LIFTED_RATE.to_owned()),
        ("concurrency", args.concurrency.to_string()),
    ];
    let mut all: Vec<(String, String)> = own
        .into_iter()
        .chain(dkim.into_iter().flatten())
        .filter(|(k, _)| !args.set.iter().any(|(set, _)| set == k))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    all.extend(args.set.iter().cloned());
    all
}

/// A benchmark fixture may use SQL directly: N confirmed subscribers in multi-row INSERTs,
/// a few large transactions. The product's sign-up path (one transaction and a confirmation
/// per address) would take far longer at a million and is load-tested on its own by
/// scripts/bench-subscribe.sh.
async fn seed(url: &str, n: u64) -> Result<()> {
    const DOMAINS: [&str; 4] = ["example.com", "example.org", "example.net", "mail.example"];
    let mut conn = AnyConnection::connect(url).await?;
    let now = now_ms();
    let mut i = 0;
    while i < n {
        let tx_end = (i + SEED_ROWS_PER_TRANSACTION).min(n);
        let mut tx = conn.begin().await?;
        while i < tx_end {
            let end = (i + SEED_ROWS_PER_STATEMENT).min(tx_end);
            let mut sql = String::from(
                "INSERT INTO subscribers (id, email, name, status, unsubscribe_token,
                     consent_at, confirmed_at, created_at, updated_at) VALUES ",
            );
            for k in 0..(end - i) {
                let p = k * 4;
                if k > 0 {
                    sql.push(',');
                }
                // Times are the bench's own integer, not input: inlining them is safe.
                let _ = write!(
                    sql,
                    "(${}, ${}, ${}, 'confirmed', ${}, {now}, {now}, {now}, {now})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4
                );
            }
            let mut q = sqlx::query(&sql);
            for j in i..end {
                let domain = DOMAINS[usize::try_from(j % 4).unwrap_or(0)];
                q = q
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(format!("reader{j}@{domain}"))
                    .bind(format!("Reader {j}"))
                    .bind(Token::generate().as_str().to_owned());
            }
            q.execute(&mut *tx).await?;
            i = end;
        }
        tx.commit().await?;
    }
    conn.close().await?;
    Ok(())
}

/// A realistic digest through the library: `items` items with long summaries (about 20 KB of
/// HTML by default, and the text part), created and scheduled. Like most real ones it
/// is not plain ASCII (a dash, a curly apostrophe): such text once cost four times as much per
/// email (BENCHMARKS.md, item 34), which an ASCII digest would not show. It falls due at
/// `due_at` (ms since the epoch).
async fn make_digest(app: &App, items: u64, summary_chars: u64, due_at: i64) -> Result<String> {
    let now = now_ms();
    for k in 1..=items {
        let summary = prose(k, usize::try_from(summary_chars).unwrap_or(2000));
        let item = NewItem::parse(
            &format!("Item {k}: what changed in the toolchain this week — and why it’s worth it"),
            &format!("https://news.example.org/2026/05/{k}/what-changed-this-week"),
            &summary,
            Some("The Example Gazette"),
        )
        .map_err(|e| anyhow!("benchmark item {k}: {e}"))?;
        app.store
            .add_item(&item, now)
            .await
            .context("adding item")?;
    }
    let digest = NewDigest::parse(
        "Freshly squeezed — the week in tools",
        Some("Good morning. Ten stories worth your coffee, in the order we’d read them."),
        ItemSelection::Pending,
    )
    .map_err(|e| anyhow!("benchmark digest: {e}"))?;
    let digest = app
        .store
        .create_digest(&digest, None, now)
        .await
        .context("creating the digest")?;
    app.store
        .schedule_digest(&digest.id, due_at, now)
        .await
        .context("scheduling the digest")?;
    Ok(digest.id)
}

/// Deterministic English-looking text of exactly `len` characters, ending with a period.
fn prose(seed: u64, len: usize) -> String {
    const WORDS: [&str; 24] = [
        "the", "compiler", "now", "checks", "borrowed", "values", "across", "await", "points",
        "which", "makes", "async", "code", "easier", "to", "review", "and", "release", "notes",
        "explain", "every", "change", "in", "detail",
    ];
    let mut s = String::with_capacity(len + 16);
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    while s.len() < len {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let word = WORDS[usize::try_from((x >> 33) % 24).unwrap_or(0)];
        if !s.is_empty() {
            s.push(if (x >> 20).is_multiple_of(11) {
                '.'
            } else {
                ' '
            });
            if s.ends_with('.') {
                s.push(' ');
            }
        }
        s.push_str(word);
    }
    s.truncate(len.saturating_sub(1));
    let mut s = s.trim_end().to_owned();
    if len > 0 {
        s.push('.');
    }
    s
}

/// One subscriber's copy of the digest, exactly as the worker builds it: the floor sends
/// these bytes N times.
async fn sample_message(app: &App, digest_id: &str) -> Result<(Envelope, Arc<[u8]>)> {
    let digest = app
        .store
        .digest(digest_id)
        .await
        .context("loading the digest")?
        .context("the digest vanished")?;
    let token = Token::generate();
    let (content, list) = app
        .composer()
        .digest(
            &DigestContent::from(&digest),
            Some("Reader 0"),
            token.as_str(),
        )
        .context("rendering the digest")?;
    let delivery_id = uuid::Uuid::now_v7().to_string();
    let letter = Letter {
        delivery_id: &delivery_id,
        to_email: "reader0@example.com",
        to_name: Some("Reader 0"),
        content: &content,
        list: Some(&list),
        return_path: None,
    };
    // smtp-sink offers 8BITMIME, so the worker's connections build for it (`true`).
    let (envelope, bytes) =
        mailer::build(&app.config.from, &letter, true).context("building the message")?;
    // Signed as the worker signs it, so the floors send what the pipeline sends.
    let bytes = match &app.signer {
        Some(signer) => signer.sign(&bytes).context("signing the message")?,
        None => bytes,
    };
    println!(
        "message: {} items, HTML {:.1} KB, text {:.1} KB, {:.1} KB on the wire ({} bytes)",
        digest.items.len(),
        content.html.to_text().len() as f64 / 1024.0,
        content.text.to_text().len() as f64 / 1024.0,
        bytes.len() as f64 / 1024.0,
        bytes.len()
    );
    Ok((envelope, bytes.into()))
}

struct PipelineFigures {
    seconds: f64,
    p50_ms: i64,
    /// From the fan-out's end to the first message sent: in a short run, the worker's start
    /// and first claim are a visible part of the whole.
    first_sent_ms: i64,
    /// When the first message was sent (ms since the epoch): the delay from the digest's due
    /// instant to it is what a subscriber at the head of the list waits (issue 23: 100 ms).
    first_sent_at: i64,
    /// When the last message was sent (ms since the epoch): where the headline's clock stops.
    last_sent_at: i64,
    /// When the fan-out had written every delivery (ms since the epoch).
    fanned_out_at: i64,
    p99_ms: i64,
    peak_rss_kb: u64,
    cpu_seconds: f64,
    /// `postgres_cpu_seconds()` when the worker was done, before it was stopped.
    db_cpu_seconds: f64,
}

/// The `squeeze` child process that sends (`squeeze worker`, or on SQLite `squeeze serve`),
/// with the settings of the bench process, logging to a file in the run's folder.
struct Worker {
    process: Reaped,
    log_path: PathBuf,
    start: WorkerStart,
}

/// Where the sending process was when the digest fell due.
#[derive(Clone, Copy, PartialEq)]
enum WorkerStart {
    /// `squeeze worker` started after the fan-out: its start counts.
    AfterFanOut,
    /// `squeeze worker` waiting on LISTEN before the fan-out (PostgreSQL).
    Waiting,
    /// `squeeze serve`, whose scheduler fans out and wakes its own worker (SQLite).
    Serving,
}

impl Worker {
    fn start(args: &Args, dir: &Path, url: &str, port: u16) -> Result<Self> {
        let (process, log_path) = squeeze_process(args, dir, url, port, &["worker"], "worker")?;
        // For attaching a profiler: perf record -g -p <pid>.
        println!("worker: pid {}, log {}", process.0.id(), log_path.display());
        Ok(Self {
            process,
            log_path,
            start: WorkerStart::AfterFanOut,
        })
    }

    /// `squeeze serve` on a free port: scheduler, worker and web server in one process, as
    /// SQLite runs in production.
    fn serve(args: &Args, dir: &Path, url: &str, port: u16) -> Result<Self> {
        let bind = format!("127.0.0.1:{}", free_port()?);
        let (process, log_path) =
            squeeze_process(args, dir, url, port, &["serve", "--bind", &bind], "serve")?;
        println!(
            "worker: squeeze serve pid {}, log {}",
            process.0.id(),
            log_path.display()
        );
        Ok(Self {
            process,
            log_path,
            start: WorkerStart::Serving,
        })
    }

    fn when_started(&self) -> &'static str {
        match self.start {
            WorkerStart::AfterFanOut => "the worker process starts after it",
            WorkerStart::Waiting => "the worker was waiting for work before it",
            WorkerStart::Serving => "squeeze serve fans out and sends in one process",
        }
    }

    /// Waits until the worker (PostgreSQL only) listens for the fan-out's notification:
    /// until more than `before` sessions do (see `listeners`).
    async fn wait_listening(mut self, url: &str, before: i64) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.process.0.try_wait()? {
                bail!(
                    "the worker exited early ({status}); its log:\n{}",
                    tail(&self.log_path)
                );
            }
            if listeners(url).await? > before {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the worker did not LISTEN within 30 s; its log:\n{}",
                tail(&self.log_path)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.start = WorkerStart::Waiting;
        Ok(self)
    }
}

/// A `squeeze` child process (`subcommand`: `worker`, or `serve --bind …`) with the settings
/// of the bench process and `port`'s sink as its relay, logging to `<log_name>.log` in the
/// run's folder.
fn squeeze_process(
    args: &Args,
    dir: &Path,
    url: &str,
    port: u16,
    subcommand: &[&str],
    log_name: &str,
) -> Result<(Reaped, PathBuf)> {
    let exe = std::env::current_exe()
        .context("locating squeeze-bench")?
        .with_file_name("squeeze");
    ensure!(
        exe.exists(),
        "{} is missing: build both binaries with `cargo build --release --bins`",
        exe.display()
    );
    let log_path = dir.join(format!("{log_name}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = match &args.worker_wrapper {
        Some(w) => {
            let mut parts = w.split_whitespace();
            let mut c = child_command(parts.next().context("--worker-wrapper is empty")?);
            c.args(parts).arg(&exe);
            c
        }
        None => child_command(&exe),
    };
    cmd.args(subcommand);
    // Only the settings below count: none inherited from the caller's environment.
    without_squeeze_env(&mut cmd);
    for (k, v) in settings(args, url, dir) {
        cmd.env(format!("SQUEEZE_{}", k.to_uppercase()), v);
    }
    cmd.env("SQUEEZE_SMTP_URL", format!("smtp://127.0.0.1:{port}"))
        .env("SQUEEZE_CONFIG", dir.join("bench.toml"))
        // The product's default, unless the caller asks for more (e.g. sqlx::query=debug
        // logs every statement with its duration; see --keep-dir).
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "squeeze=info,warn".into()),
        )
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let process = Reaped(
        cmd.spawn()
            .with_context(|| format!("starting {}", exe.display()))?,
    );
    Ok((process, log_path))
}

/// Sessions of this PostgreSQL database whose last statement was a LISTEN for new work: a
/// worker's notification listener, once it is up.
async fn listeners(url: &str) -> Result<i64> {
    let mut conn = AnyConnection::connect(url).await?;
    let count = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE $1",
    )
    .bind(format!("LISTEN%{WORK_CHANNEL}%"))
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(count)
}

/// Runs the worker until nothing is queued or sending, samples its peak RSS and CPU
/// time while it is still alive, stops it with SIGTERM, and reads the outcome from the rows.
async fn pipeline(
    worker: Worker,
    args: &Args,
    url: &str,
    fanned_out_at: Option<i64>,
    digest_id: &str,
) -> Result<PipelineFigures> {
    let n = args.subscribers;
    let Worker {
        process: mut worker,
        log_path,
        ..
    } = worker;
    let pid = worker.0.id();

    let mut conn = AnyConnection::connect(url).await?;
    // Generous, but bounded: a worker that stops making progress fails the run.
    let deadline = Instant::now() + Duration::from_secs(120 + n / 100);
    loop {
        if let Some(status) = worker.0.try_wait()? {
            bail!(
                "the worker exited early ({status}); its log:\n{}",
                tail(&log_path)
            );
        }
        // Whether the fan-out is still to finish or a delivery is left queued or claimed, not
        // how many: counting, 20 times a second, would take CPU from the processes measured.
        let busy: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM delivery_queue)
                           OR EXISTS (SELECT 1 FROM queued_chunks)
                           OR EXISTS (SELECT 1 FROM claims)
                           OR EXISTS (SELECT 1 FROM digests
                                      WHERE id = $1 AND fanned_out_at IS NULL)
                      THEN 1 ELSE 0 END",
        )
        .bind(digest_id)
        .fetch_one(&mut conn)
        .await?;
        if busy == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "deliveries still unsent at the deadline; worker log:\n{}",
            tail(&log_path)
        );
        tokio::time::sleep(POLL).await;
    }
    // Sampled before the stop: afterwards /proc/<pid> is gone.
    let peak_rss_kb = peak_rss_kb(pid)?;
    let cpu_seconds = cpu_seconds(pid)?;
    let db_cpu_seconds = postgres_cpu_seconds();
    let status = worker.terminate(Duration::from_secs(40)).await?;
    ensure!(
        status.success(),
        "the worker exited with {status} on SIGTERM; its log:\n{}",
        tail(&log_path)
    );

    // The digest's own deliveries (`--history` keeps past digests' beside it).
    let by_status: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, COUNT(*) FROM deliveries WHERE digest_id = $1
         GROUP BY status ORDER BY status",
    )
    .bind(digest_id)
    .fetch_all(&mut conn)
    .await?;
    let sent = by_status
        .iter()
        .find(|(s, _)| s == "sent")
        .map_or(0, |(_, c)| *c);
    ensure!(
        u64::try_from(sent).ok() == Some(n),
        "not every delivery was sent: {by_status:?}; worker log:\n{}",
        tail(&log_path)
    );
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT created_at, sent_at FROM deliveries WHERE digest_id = $1 AND status = 'sent'",
    )
    .bind(digest_id)
    .fetch_all(&mut conn)
    .await?;
    // Where this process did not fan out itself, the scheduler's row says when it finished.
    let fanned_out_at = match fanned_out_at {
        Some(at) => at,
        None => sqlx::query_scalar::<_, i64>("SELECT fanned_out_at FROM digests WHERE id = $1")
            .bind(digest_id)
            .fetch_one(&mut conn)
            .await
            .context("reading when the fan-out finished")?,
    };
    conn.close().await?;
    let last_sent = rows.iter().map(|(_, s)| *s).max().context("no sent rows")?;
    let first_sent = rows.iter().map(|(_, s)| *s).min().context("no sent rows")?;
    let mut latencies: Vec<i64> = rows.iter().map(|(c, s)| s - c).collect();
    latencies.sort_unstable();
    // From the fan-out's end or, if a waiting worker started before the fan-out returned
    // (PostgreSQL: it commits, then refreshes the queue's statistics), the first message.
    // At least a millisecond, so a tiny N cannot divide by zero.
    let seconds = ((last_sent - fanned_out_at.min(first_sent)).max(1)) as f64 / 1000.0;
    Ok(PipelineFigures {
        seconds,
        p50_ms: percentile(&latencies, 50),
        first_sent_ms: first_sent - fanned_out_at,
        fanned_out_at,
        first_sent_at: first_sent,
        last_sent_at: last_sent,
        p99_ms: percentile(&latencies, 99),
        peak_rss_kb,
        cpu_seconds,
        db_cpu_seconds,
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: usize) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// The SMTP client of a floor run.
#[derive(Clone, Copy, Debug)]
enum FloorClient {
    /// lettre's `send` (the floor issue #7 names): MAIL, RCPT, DATA and the content one
    /// round trip each.
    Lettre,
    /// The worker's own SMTP code (`mail::Sender`: pipelined commands, the content in one
    /// write), without database or rendering: what the rest of the pipeline costs on top.
    Squeeze,
}

impl FloorClient {
    fn name(self) -> &'static str {
        match self {
            Self::Lettre => "lettre's client",
            Self::Squeeze => "Squeeze's sender",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Lettre => "lettre's client alone (AsyncSmtpConnection::send)",
            Self::Squeeze => {
                "Squeeze's sender alone (the worker's SMTP code, no database, no rendering)"
            }
        }
    }
}

/// N copies of the same message over `concurrency` TCP_NODELAY connections (as Squeeze opens
/// them), no database and no rendering. Returns seconds.
async fn floor(
    client: FloorClient,
    port: u16,
    concurrency: u32,
    n: u64,
    envelope: &Envelope,
    message: &Arc<[u8]>,
) -> Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (next, envelope, message) = (next.clone(), envelope.clone(), message.clone());
        tasks.spawn(async move {
            let more = || next.fetch_add(1, Ordering::Relaxed) < n;
            match client {
                FloorClient::Lettre => lettre_floor(port, more, &envelope, &message).await,
                FloorClient::Squeeze => squeeze_floor(port, more, &envelope, &message).await,
            }
        });
    }
    let mut sent = 0;
    let mut done = None;
    while let Some(joined) = tasks.join_next().await {
        sent += joined.context("floor task panicked")??;
        if sent == n {
            done = Some(started.elapsed());
        }
    }
    let done = done.with_context(|| format!("floor sent {sent} of {n} messages"))?;
    Ok(done.as_secs_f64().max(1e-3))
}

/// One connection's share of a floor run through lettre's client; returns messages sent.
async fn lettre_floor(
    port: u16,
    more: impl Fn() -> bool,
    envelope: &Envelope,
    message: &[u8],
) -> Result<u64> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .context("floor: connecting to smtp-sink")?;
    tcp.set_nodelay(true).context("floor: TCP_NODELAY")?;
    let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &ClientId::default())
        .await
        .context("floor: SMTP greeting")?;
    let mut sent = 0u64;
    while more() {
        tokio::time::timeout(SEND_TIMEOUT, conn.send(envelope, message))
            .await
            .context("floor: send timed out")?
            .context("floor: send")?;
        sent += 1;
    }
    // Politeness only; the figures are already taken.
    let _ = tokio::time::timeout(SEND_TIMEOUT, conn.quit()).await;
    Ok(sent)
}

/// One connection's share of a floor run through the worker's own sender.
async fn squeeze_floor(
    port: u16,
    more: impl Fn() -> bool,
    envelope: &Envelope,
    message: &[u8],
) -> Result<u64> {
    let settings = SmtpSettings::from_url(&format!("smtp://127.0.0.1:{port}"))
        .map_err(|e| anyhow!("floor: smtp-sink URL: {e}"))?;
    let mut sender = mailer::Transport::smtp(settings, SEND_TIMEOUT).sender();
    let mut sent = 0u64;
    while more() {
        sender
            .send("floor", envelope, message)
            .await
            .map_err(|e| anyhow!("floor: send: {e:?}"))?;
        sent += 1;
    }
    sender.close().await;
    Ok(sent)
}

/// The message without the `DKIM-Signature` lines the worker put in front of it.
fn unsigned_part(message: &[u8]) -> &[u8] {
    let mut rest = message;
    while rest.starts_with(b"DKIM-Signature:") {
        // A signature header runs until a line that does not start with whitespace.
        let mut end = 0;
        while let Some(i) = rest[end..].windows(2).position(|w| w == b"\r\n") {
            end += i + 2;
            if !rest[end..].starts_with(b" ") && !rest[end..].starts_with(b"\t") {
                break;
            }
        }
        if end == 0 {
            break;
        }
        rest = &rest[end..];
    }
    rest
}

/// Postfix's smtp-sink on 127.0.0.1, stopped when dropped or when this process dies.
struct Sink {
    port: u16,
    /// The smtp-sink process itself, for CPU figures.
    pid: u32,
    /// Our end of the watcher's stdin: dropping it stops the sink.
    guard: Option<std::process::ChildStdin>,
    watcher: Reaped,
}

impl Sink {
    async fn start(path: Option<&Path>, dir: &Path) -> Result<Self> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => installed_sink()?,
        };
        let port = free_port()?;
        let log_path = dir.join("smtp-sink.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        // smtp-sink drops root for `-u nobody`, and the kernel forgets a parent-death signal
        // when a process changes its user; so a small shell watches instead: it starts the
        // sink, says its pid, and kills it once its stdin (a pipe from this process) reaches
        // end of file, which happens however the benchmark ends, SIGKILL included.
        let user: &[&str] = if running_as_root() {
            &["-u", "nobody"] // smtp-sink refuses to keep root privileges
        } else {
            &[]
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#""$@" </dev/null >/dev/null & s=$!; echo "$s"; read -r _; kill "$s" 2>/dev/null; wait "$s""#)
            .arg("smtp-sink")
            .arg(&path)
            .args(user)
            // Backlog 1000: never the reason a connection waits.
            .arg(format!("127.0.0.1:{port}"))
            .arg("1000")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = Reaped(
            cmd.spawn()
                .with_context(|| format!("starting {}", path.display()))?,
        );
        let guard = child
            .0
            .stdin
            .take()
            .context("no pipe to the sink's watcher")?;
        let said = child
            .0
            .stdout
            .take()
            .context("no pipe from the sink's watcher")?;
        let mut line = String::new();
        BufReader::new(said)
            .read_line(&mut line)
            .context("reading the sink's pid")?;
        let pid: u32 = line
            .trim()
            .parse()
            .with_context(|| format!("the sink's watcher said {line:?}, not a pid"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.0.try_wait()? {
                bail!("smtp-sink exited at once ({status}):\n{}", tail(&log_path));
            }
            // The watcher outlives a sink that failed to start; /proc tells.
            ensure!(
                Path::new(&format!("/proc/{pid}")).exists(),
                "smtp-sink exited at once:\n{}",
                tail(&log_path)
            );
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "smtp-sink does not listen on 127.0.0.1:{port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            port,
            pid,
            guard: Some(guard),
            watcher: child,
        })
    }
}

impl Drop for Sink {
    /// Closing the pipe makes the watcher stop the sink and exit; `Reaped` then finds it gone
    /// (or, if it hangs, kills it).
    fn drop(&mut self) {
        drop(self.guard.take());
        for _ in 0..100 {
            if !matches!(self.watcher.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Where scripts/smtp-sink.sh puts the wrapper; runs the script when it is not there yet.
fn installed_sink() -> Result<PathBuf> {
    let output = Command::new("bash")
        .arg(INSTALL_SINK)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {INSTALL_SINK}"))?;
    ensure!(
        output.status.success(),
        "{INSTALL_SINK} failed ({}); pass --smtp-sink PATH to use another smtp-sink",
        output.status
    );
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    ensure!(!path.is_empty(), "{INSTALL_SINK} printed no path");
    Ok(PathBuf::from(path))
}

/// A port the kernel just had free. Another process could take it before smtp-sink binds
/// it; then the start fails loudly, it does not measure the wrong server.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            == Some("0")
    })
}

/// VmHWM: the process's peak resident set, in kB.
fn peak_rss_kb(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmHWM in {path}"))
}

/// utime + stime of the process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    stat_seconds(pid, &[11, 12])
}

/// utime + stime + cutime + cstime (its waited-for children's), in seconds.
fn cpu_seconds_with_children(pid: u32) -> Result<f64> {
    stat_seconds(pid, &[11, 12, 13, 14])
}

/// The sum of some tick fields of /proc/<pid>/stat, in seconds; `fields` index the fields
/// after the command name, so 11 and 12 are utime and stime (fields 14 and 15 of proc(5)).
fn stat_seconds(pid: u32, fields_wanted: &[usize]) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces; fields are counted after its ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("unexpected {path}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0], so utime (14) and stime (15) are fields[11] and [12].
    let mut ticks = 0u64;
    for &i in fields_wanted {
        let v: u64 = fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("unexpected {path}"))?;
        ticks += v;
    }
    Ok(ticks as f64 / clock_ticks() as f64)
}

/// The whole machine's busy CPU time, to tell how much of a phase's CPU went to processes
/// the benchmark does not account for (a build running beside it makes figures noisy).
struct Busy {
    seconds: f64,
    own: f64,
    at: Instant,
}

impl Busy {
    fn sample() -> Result<Self> {
        Ok(Self {
            seconds: machine_busy_seconds()?,
            own: cpu_seconds(std::process::id())?,
            at: Instant::now(),
        })
    }

    /// A line saying how busy the machine was since `self`, and how much of that was neither
    /// `accounted` (the measured processes) nor this benchmark process.
    fn others(&self, accounted: f64) -> Result<String> {
        let busy = machine_busy_seconds()? - self.seconds;
        let own = cpu_seconds(std::process::id())? - self.own;
        let wall = self.at.elapsed().as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let others = (busy - accounted - own).max(0.0);
        Ok(format!(
            "  machine: {busy:.1} of {:.1} CPU-seconds busy; other processes {others:.1} s{}",
            wall * cores as f64,
            if others > 0.1 * busy {
                " (noisy: something else was running)"
            } else {
                ""
            }
        ))
    }
}

/// Busy CPU time of the whole machine (all CPUs) from /proc/stat, in seconds.
fn machine_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let cpu = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    Ok(busy as f64 / clock_ticks() as f64)
}

/// CPU seconds used so far by every process named `postgres` on this machine (the server
/// and its backends; other clients' work included), with their reaped children's, so a
/// backend that exits moves its time into the postmaster's instead of losing it. 0 when
/// none can be read.
fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        // A backend may exit between listing and reading: it simply does not count.
        .filter_map(|pid| cpu_seconds_with_children(pid).ok())
        .sum()
}

/// sysconf(_SC_CLK_TCK) without unsafe code; 100 on Linux in practice.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::File::open("/proc/cpuinfo")
        .ok()
        .and_then(|f| {
            BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .find_map(|l| {
                    l.strip_prefix("model name")
                        .and_then(|r| r.split_once(':'))
                        .map(|(_, m)| m.trim().to_owned())
                })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or_else(String::new, |kb| {
            format!(", {:.0} GB RAM", kb as f64 / 1024.0 / 1024.0)
        });
    format!("nproc {nproc}, {model}{memory}")
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
