//! The `squeeze` command: parses arguments, builds the configuration, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use squeeze::app::{App, Roles};
use squeeze::config::{Config, Layer};
use tokio_util::sync::CancellationToken;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let config = match Config::load(cli.config.as_deref(), cli.settings.into_layer()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("squeeze: {e}");
            return ExitCode::from(2);
        }
    };
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

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("squeeze=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
