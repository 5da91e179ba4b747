//! How the worker sends: pace (rate, burst, connections, per-domain rates, the cooldown of a
//! throttling domain), retries, its claims' lease and shutdown, and when a digest pauses itself
//! (failures, complaints).

use std::num::NonZeroUsize;

use super::Setting;
use crate::config::values::{duration, parse_domain_rates, parse_nonzero, parse_share};

pub(super) const RATE: Setting = Setting {
    key: "rate",
    value_name: "PER_SECOND",
    default: Some("50"),
    secret: false,
    doc: "Messages per second, across all senders of the process",
    parse: |v, d| {
        d.rate = Some(
            parse_nonzero(v).ok_or("expected a whole number of messages per second, at least 1")?,
        );
        Ok(())
    },
};

pub(super) const BURST: Setting = Setting {
    key: "burst",
    value_name: "N",
    default: None,
    secret: false,
    doc: "Messages that may go out at once before `rate` paces them [default: rate]",
    parse: |v, d| {
        d.burst = Some(parse_nonzero(v).ok_or("expected a whole number, at least 1")?);
        Ok(())
    },
};

pub(super) const CONCURRENCY: Setting = Setting {
    key: "concurrency",
    value_name: "N",
    default: Some("4"),
    secret: false,
    doc: "SMTP connections, i.e. messages on the wire at once (1-1000)",
    parse: |v, d| {
        d.concurrency = Some(
            v.parse::<NonZeroUsize>()
                .ok()
                .filter(|n| n.get() <= 1000)
                .ok_or("expected a whole number from 1 to 1000")?,
        );
        Ok(())
    },
};

pub(super) const DOMAIN_RATES: Setting = Setting {
    key: "domain_rates",
    value_name: "DOMAIN=RATE,…",
    default: None,
    secret: false,
    doc: "Per-recipient-domain limits, messages per second: gmail.com=20, outlook.com=10",
    parse: |v, d| {
        d.domain_rates = Some(parse_domain_rates(v)?);
        Ok(())
    },
};

pub(super) const THROTTLE_COOLDOWN: Setting = Setting {
    key: "throttle_cooldown",
    value_name: "DURATION",
    default: Some("30s"),
    secret: false,
    doc: "How long a domain that answered 421, 451 or 454 is left alone",
    parse: |v, d| {
        d.throttle_cooldown = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const RETRY_INITIAL: Setting = Setting {
    key: "retry_initial",
    value_name: "DURATION",
    default: Some("30s"),
    secret: false,
    doc: "First retry delay after a transient failure; it doubles each attempt",
    parse: |v, d| {
        d.retry_initial = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const RETRY_MAX: Setting = Setting {
    key: "retry_max",
    value_name: "DURATION",
    default: Some("30m"),
    secret: false,
    doc: "Longest retry delay, with up to 25% jitter",
    parse: |v, d| {
        d.retry_max = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const LEASE: Setting = Setting {
    key: "lease",
    value_name: "DURATION",
    default: Some("5m"),
    secret: false,
    doc: "Last resort for a worker that heartbeats but makes no progress: how long its claims last after its last progress (a dead worker's claims are taken over within seconds); at least twice smtp_timeout",
    parse: |v, d| {
        d.lease = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const SHUTDOWN_TIMEOUT: Setting = Setting {
    key: "shutdown_timeout",
    value_name: "DURATION",
    default: Some("30s"),
    secret: false,
    doc: "How long a stopping worker waits for messages on the wire",
    parse: |v, d| {
        d.shutdown_timeout = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const PAUSE_THRESHOLD: Setting = Setting {
    key: "pause_threshold",
    value_name: "SHARE",
    default: Some("20%"),
    secret: false,
    doc: "A digest pauses itself when more than this share of its last `pause_window` \
          attempts failed permanently or at the connection level",
    parse: |v, d| {
        d.pause_threshold = Some(parse_share(v).ok_or("expected a share such as 20% or 0.2")?);
        Ok(())
    },
};

pub(super) const PAUSE_WINDOW: Setting = Setting {
    key: "pause_window",
    value_name: "N",
    default: Some("200"),
    secret: false,
    doc: "How many recent attempts of a digest `pause_threshold` looks at (10-100000)",
    parse: |v, d| {
        d.pause_window = Some(
            v.parse::<usize>()
                .ok()
                .filter(|n| (10..=100_000).contains(n))
                .ok_or("expected a whole number from 10 to 100000")?,
        );
        Ok(())
    },
};

pub(super) const COMPLAINT_PAUSE_RATE: Setting = Setting {
    key: "complaint_pause_rate",
    value_name: "SHARE",
    default: Some("0.003"),
    secret: false,
    doc: "A digest pauses itself when complaints exceed this share of its delivered emails (0.003 or 0.3%; 0 disables)",
    parse: |v, d| {
        let zero = v.trim().trim_end_matches('%').trim().parse::<f64>() == Ok(0.0);
        d.complaint_pause_rate = Some(if zero {
            0.0
        } else {
            parse_share(v).ok_or("expected a share like 0.003 or 0.3%, or 0")?
        });
        Ok(())
    },
};

pub(super) const COMPLAINT_PAUSE_MIN: Setting = Setting {
    key: "complaint_pause_min",
    value_name: "COUNT",
    default: Some("1000"),
    secret: false,
    doc: "Delivered emails a digest needs before its complaint rate can pause it",
    parse: |v, d| {
        d.complaint_pause_min = Some(
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or("expected a whole number, 0 or more")?,
        );
        Ok(())
    },
};
