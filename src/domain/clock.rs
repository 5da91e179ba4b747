//! The one clock: every time Squeeze stores or compares is milliseconds since the Unix epoch.

use std::time::Duration;

/// Milliseconds since the Unix epoch: how every time is stored.
pub type Millis = i64;

/// Now, in [`Millis`].
pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// A duration in [`Millis`], saturating (a duration too long for an `i64` is "forever").
pub fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 with milliseconds, in UTC: how times are shown in JSON, CSV and pages.
pub fn to_rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_convert_to_millis_and_saturate() {
        assert_eq!(ms(Duration::from_secs(2)), 2_000);
        assert_eq!(ms(Duration::from_millis(1)), 1);
        assert_eq!(ms(Duration::MAX), i64::MAX);
    }

    #[test]
    fn times_show_as_rfc3339_in_utc_with_millis() {
        assert_eq!(to_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(to_rfc3339(1_764_620_000_123), "2025-12-01T20:13:20.123Z");
    }

    #[test]
    fn now_is_after_this_code_was_written() {
        assert!(now_ms() > 1_764_620_000_000);
    }
}
