//! `squeeze subscribers …`: who the digest reaches.

use std::path::PathBuf;

use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use super::invalid_file;
use super::table::{Align, Table};
use crate::domain::clock::now_ms;
use crate::service::{ServiceResult, Subscribers};

#[derive(Subcommand)]
pub enum SubscribersCommand {
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

/// `shutdown` is cancelled by SIGTERM or SIGINT: an import still reading its file stops.
pub(super) async fn run(
    subscribers: &Subscribers,
    c: SubscribersCommand,
    shutdown: &CancellationToken,
) -> ServiceResult<()> {
    match c {
        SubscribersCommand::List { status, limit } => {
            let mut t = Table::new(&[
                ("ID", Align::Left),
                ("STATUS", Align::Left),
                ("EMAIL", Align::Left),
            ]);
            for s in subscribers.list(status.as_deref(), limit, None).await? {
                t.row(vec![s.id, s.status.to_string(), s.email]);
            }
            t.print();
        }
        SubscribersCommand::Import { file, confirmed } => {
            let cannot_read = |e| invalid_file(format!("cannot read {}: {e}", file.display()));
            let meta = std::fs::metadata(&file).map_err(cannot_read)?;
            if meta.is_dir() {
                return Err(invalid_file(format!(
                    "{} is a directory, not a CSV file",
                    file.display()
                )));
            }
            let max = subscribers.import_max_bytes();
            if meta.is_file() && meta.len() > max {
                return Err(invalid_file(format!(
                    "{} is {} bytes, more than import_max_bytes ({max} bytes); split it or \
                     raise import_max_bytes",
                    file.display(),
                    meta.len()
                )));
            }
            let reader = std::io::BufReader::new(std::fs::File::open(&file).map_err(cannot_read)?);
            let source = format!("import of {}", file.display());
            let stop = || shutdown.is_cancelled();
            let r = subscribers
                .import_csv(reader, confirmed, &source, now_ms(), &stop)
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
            let n = subscribers
                .export_csv(std::io::stdout().lock(), status.as_deref())
                .await?;
            eprintln!("exported {n} subscribers");
        }
        SubscribersCommand::Forget { email } => {
            subscribers.forget(&email).await?;
            println!("forgot {email}");
        }
    }
    Ok(())
}
