//! `squeeze schedule …`: the daily schedule.

use chrono::Utc;
use clap::Subcommand;

use crate::domain::{DailySchedule, DeliverAt};
use crate::service::{Editor, ServiceResult};

#[derive(Subcommand)]
pub enum ScheduleCommand {
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
        /// Whose clock: `list` (everyone at that time in ZONE, the default) or `subscriber`
        /// (everyone at that time in their own zone, one wave per zone).
        #[arg(long, value_name = "list|subscriber", default_value = "list")]
        deliver_at: String,
    },
    /// Show the daily schedule and its next run.
    Show,
}

pub(super) async fn run(editor: &Editor, c: ScheduleCommand) -> ServiceResult<()> {
    let view = match c {
        ScheduleCommand::Set {
            daily,
            tz,
            disable,
            deliver_at,
        } => {
            let s = DailySchedule::parse(&daily, &tz, !disable)?
                .with_deliver_at(DeliverAt::parse(&deliver_at)?);
            Some(editor.set_schedule(&s, Utc::now()).await?)
        }
        ScheduleCommand::Show => editor.schedule_view(Utc::now()).await?,
    };
    match view {
        Some(v) => {
            let clock = match v.deliver_at {
                "subscriber" => " in each subscriber's own zone (the list's for those without)",
                _ => "",
            };
            println!(
                "daily at {} {}{clock} ({})",
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
