//! `squeeze stats`: delivery statistics as a table, or as the JSON of the admin API.

use super::print_json;
use crate::domain::clock::now_ms;
use crate::service::reporting::{DigestStats, Overall};
use crate::service::{Reporting, ServiceError, ServiceResult};

pub(super) async fn run(
    reporting: &Reporting,
    json: bool,
    digest: Option<String>,
) -> ServiceResult<()> {
    match digest {
        Some(id) => {
            let d = reporting
                .digest(&id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("no digest with id {id}")))?;
            if json {
                print_json(&d);
            } else {
                print_digest_stats(&d);
            }
        }
        None => {
            let o = reporting.overall(now_ms()).await?;
            if json {
                print_json(&o);
            } else {
                print_overall(&o);
            }
        }
    }
    Ok(())
}

fn print_digest_stats(d: &DigestStats) {
    let row = |k: &str, v: String| println!("{k:<13}{v}");
    row("digest", format!("{}  {}", d.id, d.subject));
    row("status", d.status.clone());
    if let Some(r) = &d.paused_reason {
        row("paused", r.clone());
    }
    row("recipients", d.recipients.to_string());
    if let Some(f) = &d.fan_out {
        row("fan-out", f.clone());
    }
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
    print_bounces(&d.bounces, row);
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
    if !d.waves.is_empty() {
        println!("waves");
        super::digest::print_waves(&d.waves);
    }
}

/// Bounces and complaints heard after sending, and the complaint rate.
fn print_bounces(b: &crate::service::reporting::Bounces, row: impl Fn(&str, String)) {
    row("hard bounces", b.hard_bounces.to_string());
    row("soft bounces", b.soft_bounces.to_string());
    row("policy", b.policy_rejections.to_string());
    row("complaints", b.complaints.to_string());
    if let Some(r) = b.complaint_rate {
        row("complaint rate", format!("{:.2}%", r * 100.0));
    }
}

fn print_overall(o: &Overall) {
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
    print_bounces(&o.bounces, row);
    row("unmatched", o.bounces.unmatched.to_string());
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
