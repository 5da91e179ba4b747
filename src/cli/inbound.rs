//! `squeeze inbound`: one message on standard input, from an MTA's pipe transport (Postfix
//! `pipe`, an alias, Exim): a bounce or a complaint is matched and recorded. Exit codes are
//! the MTA's (sysexits): 0 processed or deliberately ignored, 75 (EX_TEMPFAIL) when the
//! database is unavailable or busy so the MTA tries again, 2 for a bad configuration.

use std::io::Read as _;
use std::process::ExitCode;

use tracing::{info, warn};

use crate::app::App;
use crate::config::Config;
use crate::service::{Recorded, ServiceError};

/// EX_TEMPFAIL (sysexits.h): the MTA keeps the message and tries again.
const TEMPFAIL: u8 = 75;

#[derive(clap::Args)]
pub struct InboundArgs {
    /// The address the message was sent to (Postfix pipe: `${original_recipient}`); also
    /// ORIGINAL_RECIPIENT or RECIPIENT, as Postfix's pipe sets them.
    #[arg(long, value_name = "ADDRESS")]
    recipient: Option<String>,
}

pub async fn run(args: InboundArgs, config: Config) -> ExitCode {
    let max = config.inbound_max_bytes;
    let mut raw = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(max.saturating_add(1))
        .read_to_end(&mut raw);
    if let Err(e) = read {
        eprintln!("squeeze: cannot read the message on standard input: {e}.");
        return ExitCode::from(TEMPFAIL);
    }
    if raw.len() as u64 > max {
        // Drain the rest, so the MTA sees it taken; a bounce is never this big.
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        warn!(max, "inbound message over inbound_max_bytes: ignored");
        eprintln!("squeeze: the message is larger than inbound_max_bytes ({max} bytes): ignored.");
        return ExitCode::SUCCESS;
    }
    let recipient = args
        .recipient
        .or_else(|| std::env::var("ORIGINAL_RECIPIENT").ok())
        .or_else(|| std::env::var("RECIPIENT").ok());
    let app = match App::start(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("squeeze: {e}.");
            return ExitCode::from(match e {
                crate::app::StartError::Store(_) => TEMPFAIL,
                other => other.exit_code(),
            });
        }
    };
    let result = app.inbound().receive(&raw, recipient.as_deref()).await;
    app.close().await;
    match result {
        Ok(r) => {
            match &r {
                Recorded::Matched {
                    kind,
                    by,
                    subscriber,
                    paused,
                } => info!(
                    kind = kind.as_str(),
                    by,
                    ?subscriber,
                    ?paused,
                    "report recorded"
                ),
                Recorded::Unmatched { kind } => info!(kind = kind.as_str(), "report unmatched"),
                Recorded::Duplicate => info!("report recorded before: counted once"),
                Recorded::Ignored => info!("report needs nothing done: ignored"),
            }
            println!("{}", outcome_word(&r));
            ExitCode::SUCCESS
        }
        Err(e @ (ServiceError::Busy(_) | ServiceError::Unavailable(_))) => {
            eprintln!("squeeze: {e}.");
            ExitCode::from(TEMPFAIL)
        }
        Err(e) => {
            eprintln!("squeeze: {e}.");
            ExitCode::from(1)
        }
    }
}

/// One word on standard output: what became of the message.
fn outcome_word(r: &Recorded) -> String {
    r.summary()
}
