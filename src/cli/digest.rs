//! `squeeze digest …`: create, preview and schedule digests.

use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::Subcommand;

use super::invalid_file;
use super::table::{Align, Table};
use crate::domain::clock::{now_ms, to_rfc3339};
use crate::service::Digest;
use crate::service::{DigestRequest, Editor, PreviewFormat, ServiceResult};

#[derive(Subcommand)]
pub enum DigestCommand {
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
    /// Schedule a digest: --at <RFC 3339 time>, --now, or --local-time HH:MM --date
    /// YYYY-MM-DD (each subscriber at that time on that date in their own zone).
    Schedule {
        id: String,
        #[arg(
            long,
            value_name = "TIME",
            conflicts_with_all = ["now", "local_time"],
            required_unless_present_any = ["now", "local_time"]
        )]
        at: Option<String>,
        #[arg(long, conflicts_with = "local_time")]
        now: bool,
        #[arg(long, value_name = "HH:MM", requires = "date")]
        local_time: Option<String>,
        #[arg(long, value_name = "YYYY-MM-DD", requires = "local_time")]
        date: Option<String>,
    },
    /// Cancel a digest: before it is sent its items become pending again; a sending or
    /// paused one stops (what is not yet sent never is; what was sent stays counted).
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

pub(super) async fn run(editor: &Editor, c: DigestCommand) -> ServiceResult<()> {
    match c {
        DigestCommand::Create { file } => {
            let request = read_digest_file(&file)?;
            let d = editor.create_digest(&request.parse()?, now_ms()).await?;
            print_digest(&d);
        }
        DigestCommand::List => {
            let mut t = Table::new(&[
                ("ID", Align::Left),
                ("STATUS", Align::Left),
                ("SEND AT", Align::Left),
                ("RECIPIENTS", Align::Right),
                ("SUBJECT", Align::Left),
            ]);
            let digests = editor.list_digests().await?;
            for d in &digests {
                let at = d.send_at.map(to_rfc3339).unwrap_or_default();
                let n = d.recipients.map(|n| n.to_string()).unwrap_or_default();
                t.row(vec![
                    d.id.clone(),
                    d.status.to_string(),
                    at,
                    n,
                    d.subject.clone(),
                ]);
            }
            t.print();
            for d in digests.iter().filter(|d| !d.waves.is_empty()) {
                println!("\nwaves of {}:", d.id);
                print_waves(&d.waves);
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
        DigestCommand::Schedule {
            id,
            local_time: Some(time),
            date: Some(date),
            ..
        } => print_digest(&editor.schedule_waves(&id, &time, &date, Utc::now()).await?),
        DigestCommand::Schedule { id, at, now, .. } => {
            let when = if now {
                "now".to_owned()
            } else {
                at.unwrap_or_default()
            };
            print_digest(&editor.schedule(&id, &when, Utc::now()).await?);
        }
        DigestCommand::Cancel { id } => print_digest(&editor.cancel(&id, now_ms()).await?),
        DigestCommand::Pause { id, reason } => {
            let reason = crate::domain::digest::line("reason", &reason, 500)?;
            print_digest(&editor.pause(&id, &reason, now_ms()).await?);
        }
        DigestCommand::Resume { id } => print_digest(&editor.resume(&id, now_ms()).await?),
    }
    Ok(())
}

fn print_digest(d: &Digest) {
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
    if let (Some(time), Some(date)) = (&d.local_time, &d.local_date) {
        println!("delivered:  at {time} on {date} in each subscriber's own zone");
    }
    if !d.waves.is_empty() {
        print_waves(&d.waves);
    }
    for (i, item) in d.items.iter().enumerate() {
        println!("  {}. {} <{}>", i + 1, item.title, item.url);
    }
}

/// A digest's waves, one per zone, earliest first (`squeeze digest list`, `show`, `stats`).
pub(super) fn print_waves(waves: &[crate::service::Wave]) {
    let mut t = Table::new(&[
        ("TIMEZONE", Align::Left),
        ("DUE AT", Align::Left),
        ("DUE AT (UTC)", Align::Left),
        ("RECIPIENTS", Align::Right),
        ("SENT", Align::Right),
        ("STATE", Align::Left),
    ]);
    for w in waves {
        t.row(vec![
            w.timezone.clone(),
            w.due_at.clone(),
            to_rfc3339(w.due_at_utc),
            w.recipients.to_string(),
            w.sent.to_string(),
            w.state.clone(),
        ]);
    }
    t.print();
}

/// TOML unless the file name ends in `.json`.
fn read_digest_file(path: &Path) -> ServiceResult<DigestRequest> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid_file(format!("cannot read {}: {e}", path.display())))?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_str(&text)
            .map_err(|e| invalid_file(format!("{} is not a valid digest: {e}", path.display())))
    } else {
        toml::from_str(&text).map_err(|e| {
            invalid_file(format!(
                "{} is not a valid digest: {}",
                path.display(),
                e.message()
            ))
        })
    }
}
