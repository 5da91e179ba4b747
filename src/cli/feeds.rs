//! `squeeze feeds …`: the feeds whose new entries become pending items.

use chrono::Utc;
use clap::Subcommand;

use super::print_json;
use crate::domain::clock::{now_ms, to_rfc3339};
use crate::service::{FeedView, Feeds, ServiceResult};

#[derive(Subcommand)]
pub enum FeedsCommand {
    /// Add a feed (an http(s) URL of RSS, Atom or JSON Feed).
    Add { url: String },
    /// List feeds with their state: last success, last error, consecutive failures.
    List {
        /// Print JSON (the same shape as GET /api/feeds).
        #[arg(long)]
        json: bool,
    },
    /// Remove a feed (the items it made stay).
    Remove { id: String },
    /// Poll every feed now, whatever `feed_interval` says.
    Poll,
}

pub(super) async fn run(feeds: &Feeds, c: FeedsCommand) -> ServiceResult<()> {
    match c {
        FeedsCommand::Add { url } => println!("{}", feeds.add(&url, now_ms()).await?.feed.id),
        FeedsCommand::List { json: true } => {
            print_json(&serde_json::json!({ "feeds": feeds.list(now_ms()).await? }))
        }
        FeedsCommand::List { json: false } => print_feeds(&feeds.list(now_ms()).await?),
        FeedsCommand::Remove { id } => {
            feeds.remove(&id).await?;
            println!("removed {id}");
        }
        FeedsCommand::Poll => {
            for p in feeds.poll_all(Utc::now()).await? {
                match (&p.error, p.not_modified) {
                    (Some(e), _) => println!("{}  failed: {e}", p.url),
                    (None, true) => println!("{}  not modified", p.url),
                    (None, false) => println!("{}  {} new items", p.url, p.new_items),
                }
            }
        }
    }
    Ok(())
}

fn print_feeds(feeds: &[FeedView]) {
    println!(
        "{:<36}  {:<24}  {:>8}  {:<7}  URL / LAST ERROR",
        "ID", "LAST SUCCESS", "FAILURES", "FAILING"
    );
    for f in feeds {
        let r = &f.feed;
        println!(
            "{:<36}  {:<24}  {:>8}  {:<7}  {}",
            r.id,
            r.last_success_at
                .map(to_rfc3339)
                .unwrap_or_else(|| "never".into()),
            r.consecutive_failures,
            if f.failing { "yes" } else { "no" },
            r.url
        );
        if let Some(e) = &r.last_error
            && r.consecutive_failures > 0
        {
            println!("{:<36}  last error: {e}", "");
        }
    }
}
