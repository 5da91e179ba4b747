//! When a worker counts as alive: the one rule the worker's heartbeat, the rate sharing, the
//! takeover of claims, the reports and `/metrics` all follow.
//!
//! A claim belongs to the worker that made it. While that worker is alive (heartbeat within
//! `ALIVE_WITHIN`) nobody takes the claim over, however long its SMTP exchanges or its waits
//! for the rate limits take; once it is not, its claims go back to the queue. The lease is
//! the last resort for a worker that heartbeats but makes no progress (a wedged sender or
//! recorder): a live worker's heartbeat moves its claims' lease to its last progress plus
//! the lease, never further.

use std::time::Duration;

use super::clock::{Millis, ms};

/// How often a worker says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How recent a worker's last heartbeat must be for it to count as alive: three heartbeats,
/// so one late or lost heartbeat does not count a live worker out.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(6);

/// The oldest heartbeat of a live worker at `now`: a worker whose last heartbeat is older is
/// dead, and its claims may be taken over.
pub fn alive_since(now: Millis) -> Millis {
    now - ms(ALIVE_WITHIN)
}

/// How long a live worker's claims stay leased: `lease` after the last time it made progress
/// (a message handed to a sender, a rate-limit wait over, an SMTP exchange done, outcomes
/// written). A worker that heartbeats but never progresses loses its claims `lease` later.
pub fn lease_until(last_progress: Millis, lease: Duration) -> Millis {
    last_progress + ms(lease)
}

/// The shortest lease that can work: a message's SMTP exchange may take `smtp_timeout` to
/// connect and `smtp_timeout` again to send, without any progress in between.
pub fn shortest_lease(smtp_timeout: Duration) -> Duration {
    smtp_timeout * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_survives_a_missed_heartbeat_but_not_two_more() {
        assert!(ALIVE_WITHIN > HEARTBEAT * 2);
        assert!(ALIVE_WITHIN <= HEARTBEAT * 3);
    }

    #[test]
    fn a_dead_workers_claims_are_free_within_ten_seconds_of_its_death() {
        // Its last heartbeat was at most one HEARTBEAT before it died, and an idle worker
        // looks for work every second (worker::IDLE_POLL).
        let died = 100_000;
        let last_heartbeat = died - ms(HEARTBEAT);
        let freed = (died..).find(|now| alive_since(*now) > last_heartbeat);
        assert!(
            freed.is_some_and(|t| t - died + 1_000 <= 10_000),
            "{freed:?}"
        );
    }

    #[test]
    fn the_lease_runs_from_the_last_progress() {
        assert_eq!(lease_until(1_000, Duration::from_secs(5)), 6_000);
        assert_eq!(
            shortest_lease(Duration::from_secs(30)),
            Duration::from_secs(60)
        );
    }
}
