//! The `squeeze` command: parses arguments, builds the configuration, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use squeeze::app::{App, Roles};
use squeeze::config::{Config, Layer, LogFormat};
use squeeze::domain::clock::{now_ms, to_rfc3339};
use squeeze::domain::{DailySchedule, NewItem};
use squeeze::editor::{DigestRequest, Editor, EditorError, EditorResult, PreviewFormat};
use squeeze::store::{DigestRow, ItemRow};
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc's malloc: the worker allocates and frees small buffers for every
/// email, and the profile showed glibc's malloc at about 12% of its CPU; with mimalloc the
/// 4.4 KB benchmark sends ~7% more per second for ~9% less CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "squeeze", version, about = "Newsletter delivery pipeline")]
struct Cli {
    /// Configuration file (default: ./squeeze.toml when present; also SQUEEZE_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Command,
}

/// Every setting as a flag; each beats squeeze.toml and SQUEEZE_* (see the README).
#[derive(Args)]
struct Settings {
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[arg(long, global = true, value_name = "ADDR")]
    bind: Option<String>,
    #[arg(long, global = true, value_name = "URL")]
    public_url: Option<String>,
    #[arg(long, global = true, value_name = "URL")]
    smtp_url: Option<String>,
    #[arg(long, global = true, value_name = "DIR")]
    outbox: Option<String>,
    #[arg(long, global = true, value_name = "MAILBOX")]
    from: Option<String>,
    #[arg(long, global = true, value_name = "TOKEN")]
    admin_token: Option<String>,
    #[arg(long, global = true, value_name = "PER_SECOND")]
    rate: Option<String>,
    #[arg(long, global = true, value_name = "N")]
    burst: Option<String>,
    #[arg(long, global = true, value_name = "N")]
    concurrency: Option<String>,
    #[arg(long, global = true, value_name = "DIR")]
    templates: Option<String>,
    #[arg(long, global = true, value_name = "DURATION")]
    confirmation_ttl: Option<String>,
    #[arg(long, global = true, value_name = "N")]
    subscribe_per_minute: Option<String>,
    #[arg(long, global = true, value_name = "DURATION")]
    smtp_timeout: Option<String>,
    #[arg(long, global = true, value_name = "DURATION")]
    lease: Option<String>,
    #[arg(long, global = true, value_name = "DURATION")]
    shutdown_timeout: Option<String>,
    #[arg(long, global = true, value_name = "LIST_ID")]
    list_id: Option<String>,
    #[arg(long, global = true, value_name = "ADDRESS")]
    unsubscribe_mailto: Option<String>,
    #[arg(long, global = true, value_name = "DURATION")]
    missed_grace: Option<String>,
    #[arg(long, global = true, value_name = "DURATION")]
    digest_ttl: Option<String>,
    #[arg(long, global = true, value_name = "DOMAIN=RATE,…")]
    domain_rates: Option<String>,
    #[arg(long, global = true, value_name = "DURATION")]
    throttle_cooldown: Option<String>,
    #[arg(long, global = true, value_name = "DURATION")]
    retry_initial: Option<String>,
    #[arg(long, global = true, value_name = "DURATION")]
    retry_max: Option<String>,
    #[arg(long, global = true, value_name = "SHARE")]
    pause_threshold: Option<String>,
    #[arg(long, global = true, value_name = "N")]
    pause_window: Option<String>,
    #[arg(long, global = true, value_name = "TOKEN")]
    metrics_token: Option<String>,
    #[arg(long, global = true, value_name = "text|json")]
    log_format: Option<String>,
    #[arg(long, global = true, value_name = "PEM_FILE")]
    smtp_ca_file: Option<String>,
}

impl Settings {
    fn into_layer(self) -> Layer {
        let pairs = [
            ("database_url", self.database_url),
            ("bind", self.bind),
            ("public_url", self.public_url),
            ("smtp_url", self.smtp_url),
            ("outbox", self.outbox),
            ("from", self.from),
            ("admin_token", self.admin_token),
            ("rate", self.rate),
            ("burst", self.burst),
            ("concurrency", self.concurrency),
            ("templates", self.templates),
            ("confirmation_ttl", self.confirmation_ttl),
            ("subscribe_per_minute", self.subscribe_per_minute),
            ("smtp_timeout", self.smtp_timeout),
            ("lease", self.lease),
            ("shutdown_timeout", self.shutdown_timeout),
            ("list_id", self.list_id),
            ("unsubscribe_mailto", self.unsubscribe_mailto),
            ("missed_grace", self.missed_grace),
            ("digest_ttl", self.digest_ttl),
            ("domain_rates", self.domain_rates),
            ("throttle_cooldown", self.throttle_cooldown),
            ("retry_initial", self.retry_initial),
            ("retry_max", self.retry_max),
            ("pause_threshold", self.pause_threshold),
            ("pause_window", self.pause_window),
            ("metrics_token", self.metrics_token),
            ("log_format", self.log_format),
            ("smtp_ca_file", self.smtp_ca_file),
        ];
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect()
    }
}

#[derive(Subcommand)]
enum Command {
    /// Web server, scheduler and worker in one process (the embedded default).
    Serve {
        /// Serve HTTP only; run `squeeze worker` processes to send.
        #[arg(long)]
        no_worker: bool,
    },
    /// Send queued mail until stopped (SIGTERM/SIGINT finish what is on the wire).
    Worker,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// News items, the raw material of digests.
    #[command(subcommand)]
    Items(ItemsCommand),
    /// Create, preview and schedule digests.
    #[command(subcommand)]
    Digest(DigestCommand),
    /// The daily schedule.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Who the digest reaches.
    #[command(subcommand)]
    Subscribers(SubscribersCommand),
    /// Delivery statistics: overall, or of one digest.
    Stats {
        /// Print JSON (the same shape as GET /api/stats and /api/digests/{id}/stats).
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "ID")]
        digest: Option<String>,
    },
}

#[derive(Subcommand)]
enum ItemsCommand {
    /// Add an item (http(s) URL; HTML in fields is shown as text).
    Add {
        #[arg(long)]
        title: String,
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "")]
        summary: String,
        #[arg(long)]
        source: Option<String>,
    },
    /// List items (default: all).
    List {
        #[arg(long, value_parser = ["pending", "used"])]
        status: Option<String>,
    },
    /// Delete a pending item.
    Delete { id: String },
}

#[derive(Subcommand)]
enum DigestCommand {
    /// Create a draft from a TOML or JSON file: subject, intro (optional), items = [ids] or "pending".
    Create {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// List digests, newest first.
    List,
    /// Show one digest with its items.
    Show { id: String },
    /// Print what a sample subscriber would receive (HTML, or --text).
    Preview {
        id: String,
        #[arg(long)]
        text: bool,
    },
    /// Schedule a digest: --at <RFC 3339 time> or --now.
    Schedule {
        id: String,
        #[arg(
            long,
            value_name = "TIME",
            conflicts_with = "now",
            required_unless_present = "now"
        )]
        at: Option<String>,
        #[arg(long)]
        now: bool,
    },
    /// Cancel a digest before it is sent; its items become pending again.
    Cancel { id: String },
    /// Pause a scheduled or sending digest.
    Pause {
        id: String,
        #[arg(long, default_value = "paused by an editor")]
        reason: String,
    },
    /// Resume a paused digest where it stopped.
    Resume { id: String },
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Send a digest of the pending items every day at a local time.
    Set {
        /// Local time, HH:MM.
        #[arg(long, value_name = "HH:MM")]
        daily: String,
        /// IANA time zone, such as Europe/Madrid.
        #[arg(long, value_name = "ZONE")]
        tz: String,
        /// Keep the schedule but stop sending.
        #[arg(long)]
        disable: bool,
    },
    /// Show the daily schedule and its next run.
    Show,
}

#[derive(Subcommand)]
enum SubscribersCommand {
    /// Import a CSV with `email` and optional `name` columns. Without --confirmed each
    /// address gets a confirmation email (double opt-in); known addresses are never changed.
    Import {
        file: PathBuf,
        /// The list's consent is already documented: add the rows as confirmed subscribers.
        #[arg(long)]
        confirmed: bool,
    },
    /// Write subscribers with their consent evidence as CSV to standard output.
    Export {
        #[arg(long, value_parser = ["pending", "confirmed", "unsubscribed", "bounced"])]
        status: Option<String>,
    },
    /// Erase a subscriber and everything about them (right to erasure).
    Forget { email: String },
    /// List subscribers, oldest first.
    List {
        #[arg(long, value_parser = ["pending", "confirmed", "unsubscribed", "bounced"])]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), cli.settings.into_layer()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("squeeze: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("squeeze: cannot start the async runtime: {e}.");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(cli.command, config))
}

async fn run(command: Command, config: Config) -> ExitCode {
    let bind = config.bind;
    let app = match App::start(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("squeeze: {e}.");
            return ExitCode::from(e.exit_code());
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let store = app.store.clone();
    let result = match command {
        Command::Migrate => {
            println!("database is up to date");
            Ok(())
        }
        Command::Items(c) => return editor_exit(items(&app.editor(), c).await),
        Command::Digest(c) => return editor_exit(digest(&app.editor(), c).await),
        Command::Schedule(c) => return editor_exit(schedule(&app.editor(), c).await),
        Command::Subscribers(c) => return editor_exit(subscribers(&app.editor(), c).await),
        Command::Stats { json, digest } => return editor_exit(stats(&app, json, digest).await),
        Command::Worker => app.worker().run(shutdown).await,
        Command::Serve { no_worker } => match tokio::net::TcpListener::bind(bind).await {
            Ok(listener) => {
                let roles = Roles {
                    scheduler: true,
                    worker: !no_worker,
                };
                app.serve(listener, roles, shutdown).await
            }
            Err(e) => {
                eprintln!("squeeze: cannot listen on {bind} (setting `bind`): {e}.");
                return ExitCode::from(1);
            }
        },
    };
    store.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("squeeze: {e:#}.");
            ExitCode::from(1)
        }
    }
}

/// Editors' mistakes (bad input, unknown id, broken template) exit 2; conflicts with the
/// current state and database trouble exit 1.
fn editor_exit(result: EditorResult<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("squeeze: {e}.");
            match e {
                EditorError::Invalid(_) | EditorError::NotFound(_) | EditorError::Template(_) => {
                    ExitCode::from(2)
                }
                EditorError::Conflict(_) | EditorError::Store(_) => ExitCode::from(1),
            }
        }
    }
}

fn print_items(items: &[ItemRow]) {
    println!("{:<36}  {:<7}  TITLE", "ID", "STATUS");
    for i in items {
        println!("{:<36}  {:<7}  {}", i.id, i.status, i.title);
    }
}

fn print_digest(d: &DigestRow) {
    println!("id:         {}", d.id);
    println!("subject:    {}", d.subject);
    println!("status:     {}", d.status);
    if let Some(at) = d.send_at {
        println!("send at:    {}", to_rfc3339(at));
    }
    if let Some(n) = d.recipients {
        println!("recipients: {n}");
    }
    if let Some(r) = &d.paused_reason {
        println!("paused:     {r}");
    }
    if let Some(n) = &d.note {
        println!("note:       {n}");
    }
    for (i, item) in d.items.iter().enumerate() {
        println!("  {}. {} <{}>", i + 1, item.title, item.url);
    }
}

async fn items(editor: &Editor, c: ItemsCommand) -> EditorResult<()> {
    match c {
        ItemsCommand::Add {
            title,
            url,
            summary,
            source,
        } => {
            let item = NewItem::parse(&title, &url, &summary, source.as_deref())?;
            let row = editor.add_item(&item, now_ms()).await?;
            println!("{}", row.id);
        }
        ItemsCommand::List { status } => print_items(&editor.list_items(status.as_deref()).await?),
        ItemsCommand::Delete { id } => {
            editor.delete_item(&id).await?;
            println!("deleted {id}");
        }
    }
    Ok(())
}

async fn digest(editor: &Editor, c: DigestCommand) -> EditorResult<()> {
    match c {
        DigestCommand::Create { file } => {
            let request = read_digest_file(&file)?;
            let d = editor.create_digest(&request.parse()?, now_ms()).await?;
            print_digest(&d);
        }
        DigestCommand::List => {
            println!(
                "{:<36}  {:<9}  {:<25}  {:>10}  SUBJECT",
                "ID", "STATUS", "SEND AT", "RECIPIENTS"
            );
            for d in editor.list_digests().await? {
                let at = d.send_at.map(to_rfc3339).unwrap_or_default();
                let n = d.recipients.map(|n| n.to_string()).unwrap_or_default();
                println!(
                    "{:<36}  {:<9}  {:<25}  {:>10}  {}",
                    d.id, d.status, at, n, d.subject
                );
            }
        }
        DigestCommand::Show { id } => print_digest(&editor.digest(&id).await?),
        DigestCommand::Preview { id, text } => {
            let format = if text {
                PreviewFormat::Text
            } else {
                PreviewFormat::Html
            };
            print!("{}", editor.preview(&id, format).await?);
        }
        DigestCommand::Schedule { id, at, now } => {
            let when = if now {
                "now".to_owned()
            } else {
                at.unwrap_or_default()
            };
            print_digest(&editor.schedule(&id, &when, Utc::now()).await?);
        }
        DigestCommand::Cancel { id } => print_digest(&editor.cancel(&id, now_ms()).await?),
        DigestCommand::Pause { id, reason } => {
            let reason = squeeze::domain::digest::line("reason", &reason, 500)?;
            print_digest(&editor.pause(&id, &reason, now_ms()).await?);
        }
        DigestCommand::Resume { id } => print_digest(&editor.resume(&id, now_ms()).await?),
    }
    Ok(())
}

/// TOML unless the file name ends in `.json`.
fn read_digest_file(path: &std::path::Path) -> EditorResult<DigestRequest> {
    let invalid = |m: String| EditorError::Invalid(squeeze::domain::digest::invalid("file", m));
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_str(&text)
            .map_err(|e| invalid(format!("{} is not a valid digest: {e}", path.display())))
    } else {
        toml::from_str(&text).map_err(|e| {
            invalid(format!(
                "{} is not a valid digest: {}",
                path.display(),
                e.message()
            ))
        })
    }
}

async fn schedule(editor: &Editor, c: ScheduleCommand) -> EditorResult<()> {
    let view = match c {
        ScheduleCommand::Set { daily, tz, disable } => {
            let s = DailySchedule::parse(&daily, &tz, !disable)?;
            Some(editor.set_schedule(&s, Utc::now()).await?)
        }
        ScheduleCommand::Show => editor.schedule_view(Utc::now()).await?,
    };
    match view {
        Some(v) => {
            println!(
                "daily at {} {} ({})",
                v.time,
                v.timezone,
                if v.enabled { "enabled" } else { "disabled" }
            );
            if let Some(next) = v.next_run {
                println!("next run: {next}");
            }
        }
        None => println!(
            "no daily schedule; set one with `squeeze schedule set --daily 07:00 --tz Europe/Madrid`"
        ),
    }
    Ok(())
}

async fn subscribers(editor: &Editor, c: SubscribersCommand) -> EditorResult<()> {
    match c {
        SubscribersCommand::List { status, limit } => {
            println!("{:<36}  {:<12}  EMAIL", "ID", "STATUS");
            for s in editor
                .list_subscribers(status.as_deref(), limit, None)
                .await?
            {
                println!("{:<36}  {:<12}  {}", s.id, s.status, s.email);
            }
        }
        SubscribersCommand::Import { file, confirmed } => {
            let reader = std::fs::File::open(&file).map_err(|e| {
                EditorError::Invalid(squeeze::domain::digest::invalid(
                    "file",
                    format!("cannot read {}: {e}", file.display()),
                ))
            })?;
            let source = format!("import of {}", file.display());
            let r = editor
                .import_csv(reader, confirmed, &source, now_ms())
                .await?;
            let what = if confirmed {
                "added as confirmed"
            } else {
                "sent a confirmation email"
            };
            println!(
                "{} {what}, {} already known and left unchanged",
                r.added, r.unchanged
            );
        }
        SubscribersCommand::Export { status } => {
            let n = editor
                .export_csv(std::io::stdout().lock(), status.as_deref())
                .await?;
            eprintln!("exported {n} subscribers");
        }
        SubscribersCommand::Forget { email } => {
            editor.forget(&email).await?;
            println!("forgot {email}");
        }
    }
    Ok(())
}

async fn stats(app: &App, json: bool, digest: Option<String>) -> EditorResult<()> {
    match digest {
        Some(id) => {
            let d = squeeze::stats::digest(&app.store, &id)
                .await?
                .ok_or_else(|| EditorError::NotFound(format!("no digest with id {id}")))?;
            if json {
                print_json(&d);
            } else {
                print_digest_stats(&d);
            }
        }
        None => {
            let o = squeeze::stats::overall(&app.store, now_ms()).await?;
            if json {
                print_json(&o);
            } else {
                print_overall(&o);
            }
        }
    }
    Ok(())
}

/// Pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("squeeze: cannot encode JSON: {e}."),
    }
}

fn print_digest_stats(d: &squeeze::stats::DigestStats) {
    let row = |k: &str, v: String| println!("{k:<13}{v}");
    row("digest", format!("{}  {}", d.id, d.subject));
    row("status", d.status.clone());
    if let Some(r) = &d.paused_reason {
        row("paused", r.clone());
    }
    row("recipients", d.recipients.to_string());
    let c = &d.deliveries;
    for (k, v) in [
        ("sent", c.sent),
        ("queued", c.queued),
        ("retrying", c.retrying),
        ("sending", c.sending),
        ("failed", c.failed),
        ("bounced", c.bounced),
        ("suppressed", c.suppressed),
    ] {
        row(k, v.to_string());
    }
    row("progress", format!("{:.1}%", d.progress * 100.0));
    if let Some(t) = d.throughput_per_second {
        row("throughput", format!("{t} msg/s"));
    }
    if let (Some(p50), Some(p95)) = (d.latency.p50_ms, d.latency.p95_ms) {
        row("latency", format!("p50 {p50} ms, p95 {p95} ms"));
    }
    if !d.reply_codes.is_empty() {
        let codes: Vec<String> = d
            .reply_codes
            .iter()
            .map(|r| format!("{} ×{}", r.code, r.count))
            .collect();
        row("reply codes", codes.join(", "));
    }
    for (k, v) in [("started", &d.started_at), ("finished", &d.finished_at)] {
        if let Some(v) = v {
            row(k, v.clone());
        }
    }
}

fn print_overall(o: &squeeze::stats::Overall) {
    let row = |k: &str, v: String| println!("{k:<15}{v}");
    println!("subscribers");
    for (status, n) in &o.subscribers {
        println!("  {status:<15}{n}");
    }
    if let Some(r) = o.confirmation_rate {
        row("confirmation rate (30 days)", format!(" {:.1}%", r * 100.0));
    }
    let last = o.last_30_days.last();
    if let Some(d) = last {
        row(
            "today",
            format!(
                "{} sign-ups, {} confirmations, {} unsubscribes",
                d.signups, d.confirmations, d.unsubscribes
            ),
        );
    }
    row("queue depth", o.queue.depth.to_string());
    row(
        "oldest due",
        format!("{:.1} s", o.queue.oldest_due_age_seconds),
    );
    row("workers alive", o.workers_alive.to_string());
    if let Some(d) = &o.current_digest {
        println!();
        print_digest_stats(d);
    }
}

async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    token.cancel();
}

/// Human-readable logs by default, JSON lines with `log_format = json`; `RUST_LOG` filters.
fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("squeeze=info,warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
