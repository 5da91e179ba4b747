//! When a worker counts as alive: the one rule the worker's heartbeat, the rate sharing, the
//! reports and `/metrics` all follow.

use std::time::Duration;

/// How often a worker says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How recent a worker's last heartbeat must be for it to count as alive: three heartbeats,
/// so one late or lost heartbeat does not count a live worker out.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(6);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_survives_a_missed_heartbeat_but_not_two_more() {
        assert!(ALIVE_WITHIN > HEARTBEAT * 2);
        assert!(ALIVE_WITHIN <= HEARTBEAT * 3);
    }
}
