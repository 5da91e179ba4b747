//! Time zones of people: a subscriber's own zone (or none: the list's), and the one rule for
//! turning a wall-clock time on a local date into an instant, across daylight-saving changes.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A subscriber's zone as a browser, a JSON sign-up or a CSV row gave it. An unknown or blank
/// name is not a refused sign-up: it is `None`, the list's zone.
pub fn subscriber_zone(raw: Option<&str>) -> Option<Tz> {
    let raw = raw?.trim();
    if raw.is_empty() {
        return None;
    }
    raw.parse().ok()
}

/// The zones a digest delivered at each subscriber's time goes out in, from the zone names
/// confirmed subscribers stored (`None`, or a name that is no zone: the list's `list`): the
/// list's zone and each stored one, and what wave each stored name belongs to.
pub fn wave_zones(list: Tz, stored: &[Option<String>]) -> (Vec<Tz>, Vec<(String, String)>) {
    let mut zones = vec![list];
    let mut members = Vec::new();
    for name in stored.iter().flatten() {
        let tz = subscriber_zone(Some(name)).unwrap_or(list);
        zones.push(tz);
        members.push((name.clone(), tz.name().to_owned()));
    }
    (zones, members)
}

/// The instant `time` on local day `date` in `tz`. A time that does not exist that day
/// (spring forward) is the first valid minute after it; a time that exists twice (fall back)
/// is the first of the two, so it happens once.
pub fn local_instant(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let mut local = date.and_time(time);
    for _ in 0..(24 * 60) {
        if let Some(t) = tz.from_local_datetime(&local).earliest() {
            return t.with_timezone(&Utc);
        }
        local += Duration::minutes(1);
    }
    // No zone has a gap of a day; read the time as UTC rather than loop on.
    date.and_time(time).and_utc()
}

/// When each zone's delivery of the digest of local day `date` is due: `time` on `date` in
/// that zone, earliest first (one wave per zone; the first wave is when the digest's content
/// must be frozen). The scheduler's fan-out of a digest delivered at each subscriber's time
/// (`deliver_at = "subscriber"`, or a one-off `local_time`) makes these its waves.
pub fn waves(
    zones: impl IntoIterator<Item = Tz>,
    date: NaiveDate,
    time: NaiveTime,
) -> Vec<(Tz, DateTime<Utc>)> {
    let mut waves: Vec<_> = zones
        .into_iter()
        .map(|tz| (tz, local_instant(tz, date, time)))
        .collect();
    waves.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.name().cmp(b.0.name())));
    waves.dedup_by(|a, b| a.0 == b.0);
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: &str, date: &str, time: &str) -> String {
        let tz: Tz = tz.parse().expect("zone");
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("date");
        let time = NaiveTime::parse_from_str(time, "%H:%M").expect("time");
        local_instant(tz, date, time).to_rfc3339()
    }

    #[test]
    fn a_known_zone_is_kept_and_an_unknown_one_is_the_lists() {
        assert_eq!(
            subscriber_zone(Some(" Asia/Kolkata ")),
            Some(Tz::Asia__Kolkata)
        );
        assert_eq!(subscriber_zone(Some("Mars/Olympus_Mons")), None);
        assert_eq!(subscriber_zone(Some("")), None);
        assert_eq!(subscriber_zone(None), None);
    }

    #[test]
    fn the_wave_zones_are_the_lists_and_each_stored_one_with_unknown_names_in_the_lists() {
        let stored = [
            Some("Asia/Kolkata".to_owned()),
            None,
            Some("Mars/Olympus_Mons".to_owned()),
        ];
        let (zones, members) = wave_zones(Tz::Europe__Madrid, &stored);
        assert_eq!(
            zones,
            [Tz::Europe__Madrid, Tz::Asia__Kolkata, Tz::Europe__Madrid]
        );
        assert_eq!(
            members,
            [
                ("Asia/Kolkata".to_owned(), "Asia/Kolkata".to_owned()),
                ("Mars/Olympus_Mons".to_owned(), "Europe/Madrid".to_owned()),
            ]
        );
    }

    #[test]
    fn an_ordinary_day_is_the_zones_offset() {
        assert_eq!(
            at("Europe/Berlin", "2026-12-02", "07:00"),
            "2026-12-02T06:00:00+00:00"
        );
        assert_eq!(
            at("America/New_York", "2026-07-01", "07:00"),
            "2026-07-01T11:00:00+00:00"
        );
    }

    #[test]
    fn a_time_skipped_by_spring_forward_goes_at_the_first_valid_minute_after_it() {
        // Berlin: 02:00 CET becomes 03:00 CEST on 2026-03-29.
        assert_eq!(
            at("Europe/Berlin", "2026-03-29", "02:30"),
            "2026-03-29T01:00:00+00:00"
        );
        assert_eq!(
            at("Europe/Berlin", "2026-03-29", "03:00"),
            "2026-03-29T01:00:00+00:00"
        );
        // New York: 02:00 EST becomes 03:00 EDT on 2026-03-08.
        assert_eq!(
            at("America/New_York", "2026-03-08", "02:30"),
            "2026-03-08T07:00:00+00:00"
        );
    }

    #[test]
    fn a_time_repeated_by_fall_back_goes_once_at_the_first() {
        // Berlin: 03:00 CEST becomes 02:00 CET on 2026-10-25; 02:30 happens twice.
        assert_eq!(
            at("Europe/Berlin", "2026-10-25", "02:30"),
            "2026-10-25T00:30:00+00:00"
        );
        // New York: 02:00 EDT becomes 01:00 EST on 2026-11-01; 01:30 happens twice.
        assert_eq!(
            at("America/New_York", "2026-11-01", "01:30"),
            "2026-11-01T05:30:00+00:00"
        );
        // The day after, the zone's winter offset.
        assert_eq!(
            at("America/New_York", "2026-11-02", "01:30"),
            "2026-11-02T06:30:00+00:00"
        );
    }

    #[test]
    fn the_waves_of_a_day_go_earliest_first_across_the_dateline_and_a_us_clock_change() {
        let date = NaiveDate::from_ymd_opt(2026, 3, 8).expect("date"); // the US springs forward
        let time = NaiveTime::from_hms_opt(7, 0, 0).expect("time");
        let zones = [
            Tz::Europe__Madrid,
            Tz::America__Los_Angeles,
            Tz::Pacific__Kiritimati,
            Tz::Asia__Kolkata,
            Tz::Pacific__Chatham,
            Tz::Europe__Madrid,
        ];
        let got: Vec<_> = waves(zones, date, time)
            .into_iter()
            .map(|(tz, at)| (tz.name().to_owned(), at.to_rfc3339()))
            .collect();
        let want = [
            ("Pacific/Kiritimati", "2026-03-07T17:00:00+00:00"), // UTC+14
            ("Pacific/Chatham", "2026-03-07T17:15:00+00:00"),    // UTC+13:45 (summer)
            ("Asia/Kolkata", "2026-03-08T01:30:00+00:00"),       // UTC+5:30
            ("Europe/Madrid", "2026-03-08T06:00:00+00:00"),      // UTC+1
            ("America/Los_Angeles", "2026-03-08T14:00:00+00:00"), // PDT from 02:00 that day
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(z, t)| ((*z).to_owned(), (*t).to_owned()))
            .collect();
        assert_eq!(got, want);
    }
}
