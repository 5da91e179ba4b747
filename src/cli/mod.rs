//! The `squeeze` command line: the argument grammar, one module per command group, and the
//! exit codes (DESIGN.md: 2 for a mistake the operator can fix, 1 for trouble at runtime).
//!
//! The global setting flags are not written here: they are generated from the one
//! declaration of every setting, `config::TABLE`, on top of the derived grammar.

mod digest;
mod dkim;
mod doctor;
mod feeds;
mod inbound;
mod items;
mod schedule;
mod serve;
mod stats;
mod subscribers;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::app::App;
use crate::config::{Config, Layer, Setting, TABLE};
use crate::service::{ServiceError, ServiceResult};

#[derive(Parser)]
#[command(name = "squeeze", version, about = "Newsletter delivery pipeline")]
pub struct Cli {
    /// Configuration file (default: ./squeeze.toml when present; also SQUEEZE_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    Items(items::ItemsCommand),
    /// Feeds whose new entries become pending items.
    #[command(subcommand)]
    Feeds(feeds::FeedsCommand),
    /// Create, preview and schedule digests.
    #[command(subcommand)]
    Digest(digest::DigestCommand),
    /// The daily schedule.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Who the digest reaches.
    #[command(subcommand)]
    Subscribers(subscribers::SubscribersCommand),
    /// DKIM keys for the sending domain.
    #[command(subcommand)]
    Dkim(dkim::DkimCommand),
    /// Read one bounce or complaint on standard input (for an MTA's pipe transport).
    Inbound(inbound::InboundArgs),
    /// Check the sending setup (SPF, DKIM, DMARC, https, one-click unsubscribe, postal
    /// address): pass / warn / fail with the fix for each; exits 1 on any fail.
    Doctor {
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the HTTP API's OpenAPI 3.1 document (what GET /api/openapi.json serves; the copy
    /// in docs/openapi.json is made with `squeeze openapi > docs/openapi.json`).
    Openapi,
    /// Delivery statistics: overall, or of one digest.
    Stats {
        /// Print JSON (the same shape as GET /api/stats and /api/digests/{id}/stats).
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "ID")]
        digest: Option<String>,
    },
}

/// The derived grammar plus one global flag per setting; each beats squeeze.toml and
/// SQUEEZE_* (see the README).
fn command() -> clap::Command {
    TABLE.iter().fold(Cli::command(), |command, setting| {
        command.arg(flag(setting))
    })
}

fn flag(setting: &Setting) -> Arg {
    let help = match setting.default {
        Some(default) => format!("{} [default: {default}]", setting.doc),
        None => setting.doc.to_owned(),
    };
    // clap wants a `'static` long name; the table holds the key, and the short strings
    // live as long as the process anyway.
    let long: &'static str = Box::leak(setting.flag().into_boxed_str());
    Arg::new(setting.key)
        .long(long)
        .global(true)
        .value_name(setting.value_name)
        .help(help)
}

/// Parses the command line (exiting with clap's usage error, code 2, on a bad one) into the
/// command and the flags' configuration layer.
pub fn parse() -> (Cli, Layer) {
    let mut grammar = command();
    let matches = grammar.clone().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut grammar).exit());
    (cli, flags_layer(&matches))
}

/// The setting flags given, as a configuration layer.
fn flags_layer(matches: &clap::ArgMatches) -> Layer {
    TABLE
        .iter()
        .filter_map(|s| {
            matches
                .get_one::<String>(s.key)
                .map(|v| (s.key.to_owned(), v.clone()))
        })
        .collect()
}

/// Starts the application from `config` and runs `command` to its end.
pub async fn run(command: Command, config: Config) -> ExitCode {
    // Commands about the sending setup need no database.
    let command = match command {
        Command::Dkim(c) => return dkim::run(c, &config),
        // Reads its message before opening the database, and exits as an MTA expects.
        Command::Inbound(args) => return inbound::run(args, config).await,
        Command::Doctor { json } => return doctor::run(&config, json).await,
        Command::Openapi => return openapi(),
        other => other,
    };
    let bind = config.bind;
    let app = match App::start(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("squeeze: {e}.");
            return ExitCode::from(e.exit_code());
        }
    };
    // Every command, as before: SIGTERM and SIGINT cancel this instead of killing the process.
    let shutdown = serve::on_signal();
    match command {
        Command::Migrate => serve::migrate(app).await,
        Command::Worker => serve::worker(app, shutdown).await,
        Command::Serve { no_worker } => serve::serve(app, bind, no_worker, shutdown).await,
        Command::Items(c) => editor_exit(items::run(&app.editor(), c).await),
        Command::Feeds(c) => editor_exit(feeds::run(&app.feeds(), c).await),
        Command::Digest(c) => editor_exit(digest::run(&app.editor(), c).await),
        Command::Schedule(c) => editor_exit(schedule::run(&app.editor(), c).await),
        Command::Subscribers(c) => {
            editor_exit(subscribers::run(&app.subscribers(), c, &shutdown).await)
        }
        Command::Stats { json, digest } => {
            editor_exit(stats::run(&app.reporting(), json, digest).await)
        }
        Command::Dkim(_) | Command::Inbound(_) | Command::Doctor { .. } | Command::Openapi => {
            ExitCode::SUCCESS
        }
    }
}

/// The OpenAPI document on stdout, exactly as GET /api/openapi.json serves it.
fn openapi() -> ExitCode {
    match crate::http::openapi().to_pretty_json() {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("squeeze: cannot encode the OpenAPI document: {e}.");
            ExitCode::FAILURE
        }
    }
}

/// Editors' mistakes (bad input, unknown id, broken template) exit 2; conflicts with the
/// current state and database trouble exit 1.
fn editor_exit(result: ServiceResult<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("squeeze: {e}.");
            ExitCode::from(if e.is_request_mistake() { 2 } else { 1 })
        }
    }
}

/// Pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("squeeze: cannot encode JSON: {e}."),
    }
}

/// An editor's mistake about a file named on the command line.
fn invalid_file(message: String) -> ServiceError {
    crate::service::invalid("file", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own checks (no two flags with one name, every reference resolves), and every
    /// setting's flag in the help with its documentation.
    #[test]
    fn the_grammar_is_consistent_and_the_help_documents_every_setting() {
        let mut grammar = command();
        grammar.clone().debug_assert();
        let help = grammar.render_long_help().to_string();
        for s in TABLE {
            assert!(help.contains(&format!("--{}", s.flag())), "{}", s.key);
            assert!(help.contains(s.doc.split_whitespace().next().unwrap_or("")));
        }
    }

    #[test]
    fn setting_flags_become_the_flags_layer_wherever_they_stand() {
        let matches = command()
            .try_get_matches_from(["squeeze", "--rate", "5", "migrate", "--lease", "1m"])
            .expect("valid command line");
        let cli = Cli::from_arg_matches(&matches).expect("the derived part");
        assert!(matches!(cli.command, Command::Migrate));
        assert_eq!(
            flags_layer(&matches),
            [
                ("rate".to_owned(), "5".to_owned()),
                ("lease".to_owned(), "1m".to_owned())
            ]
        );
    }
}
