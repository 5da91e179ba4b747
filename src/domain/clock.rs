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

/// A duration as people read it in emails and pages: minutes under an hour (or when it is not
/// a whole number of hours), whole days from two days on, hours otherwise. "Expires in 0
/// hours" for a 30-minute link was the reason this exists.
pub fn for_people(d: Duration) -> String {
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    let minutes = d.as_secs().div_ceil(60).max(1);
    if minutes < 60 || !minutes.is_multiple_of(60) {
        return plural(minutes, "minute");
    }
    let hours = minutes / 60;
    if hours >= 48 && hours.is_multiple_of(24) {
        plural(hours / 24, "day")
    } else {
        plural(hours, "hour")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people_are_minutes_under_an_hour_and_days_when_whole() {
        let s = Duration::from_secs;
        for (d, said) in [
            (s(30 * 60), "30 minutes"),
            (s(60), "1 minute"),
            (s(1), "1 minute"),
            (s(0), "1 minute"),
            (s(89), "2 minutes"),
            (s(90 * 60), "90 minutes"),
            (s(3600), "1 hour"),
            (s(24 * 3600), "24 hours"),
            (s(36 * 3600), "36 hours"),
            (s(48 * 3600), "2 days"),
            (s(7 * 24 * 3600), "7 days"),
            (s(50 * 3600), "50 hours"),
        ] {
            assert_eq!(for_people(d), said, "{d:?}");
        }
    }

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
