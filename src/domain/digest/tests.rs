//! Tests of the digest's rules: every state change, the daily schedule.

use super::*;

#[test]
fn a_local_send_at_is_read_in_the_lists_timezone() {
    use chrono::TimeZone;
    let now = Utc
        .with_ymd_and_hms(2026, 12, 1, 12, 0, 0)
        .single()
        .expect("valid");
    let paris: Tz = "Europe/Paris".parse().expect("valid");
    let at = parse_local_send_at("2026-12-03T07:00", paris, now).expect("valid");
    assert_eq!(
        at,
        Utc.with_ymd_and_hms(2026, 12, 3, 6, 0, 0)
            .single()
            .expect("valid")
    );
    assert_eq!(
        parse_local_send_at("2026-11-30T07:00", paris, now)
            .expect_err("refused")
            .message,
        "is in the past"
    );
    assert_eq!(
        parse_local_send_at("tomorrow", paris, now)
            .expect_err("refused")
            .field,
        "send_at"
    );
    // 02:30 does not exist in Paris that morning: the first valid minute, 03:00 CEST.
    assert_eq!(
        parse_local_send_at("2027-03-28T02:30", paris, now).expect("moved on"),
        Utc.with_ymd_and_hms(2027, 3, 28, 1, 0, 0)
            .single()
            .expect("valid")
    );
}

#[test]
fn only_digests_that_went_out_are_in_the_archive() {
    let public: Vec<_> = DigestStatus::ALL
        .into_iter()
        .filter(|s| s.in_archive())
        .collect();
    assert_eq!(public, [DigestStatus::Sending, DigestStatus::Sent]);
}

#[test]
fn the_digest_rule_allows_exactly_these_moves() {
    use DigestAction as A;
    use DigestStatus as S;
    let actions = [
        A::Schedule,
        A::Cancel,
        A::Pause,
        A::Resume,
        A::FanOut,
        A::Miss,
        A::Finish,
        A::Edit,
        A::SendTest,
    ];
    for action in actions {
        for from in DigestStatus::ALL {
            let got = from.decide(action, None);
            let want = match (action, from) {
                (A::Schedule, S::Draft | S::Scheduled) => Some(Change::To(S::Scheduled)),
                (A::Cancel, S::Draft | S::Scheduled | S::Sending | S::Paused) => {
                    Some(Change::To(S::Cancelled))
                }
                (A::Cancel, S::Cancelled) | (A::Pause, S::Paused) => Some(Change::Unchanged),
                (A::Pause, S::Scheduled | S::Sending) => Some(Change::To(S::Paused)),
                (A::Resume, S::Paused) => Some(Change::To(S::Scheduled)),
                (A::Resume, S::Scheduled | S::Sending | S::Sent) => Some(Change::Unchanged),
                (A::FanOut, S::Scheduled) => Some(Change::To(S::Sending)),
                (A::Miss, S::Scheduled) => Some(Change::To(S::Missed)),
                (A::Finish, S::Sending) => Some(Change::To(S::Sent)),
                (A::Edit, S::Draft) => Some(Change::Unchanged),
                (A::SendTest, s) if s != S::Cancelled => Some(Change::Unchanged),
                _ => None,
            };
            match want {
                Some(w) => assert_eq!(got, Ok(w), "{action:?} from {from}"),
                None => assert!(got.is_err(), "{action:?} from {from} must be refused"),
            }
        }
    }
}

#[test]
fn a_paused_digest_resumes_where_it_was_and_refusals_say_why() {
    let paused = DigestStatus::Paused;
    assert_eq!(
        paused.decide(DigestAction::Resume, Some(DigestStatus::Sending)),
        Ok(Change::To(DigestStatus::Sending))
    );
    assert_eq!(
        paused.decide(DigestAction::Resume, Some(DigestStatus::Draft)),
        Ok(Change::To(DigestStatus::Scheduled)),
        "a digest is only ever paused from scheduled or sending"
    );
    assert_eq!(
        DigestStatus::Sent.decide(DigestAction::Cancel, None),
        Err("sent; only a digest not yet sent (draft, scheduled, sending or paused) can be cancelled".into())
    );
    assert_eq!(
        DigestStatus::Sending.decide(DigestAction::Cancel, None),
        Ok(Change::To(DigestStatus::Cancelled)),
        "a digest that went out with a mistake can be stopped"
    );
    use DigestStatus as S;
    assert!(S::Scheduled.cancel_gives_items_back(None));
    assert!(S::Paused.cancel_gives_items_back(Some(S::Scheduled)));
    assert!(!S::Paused.cancel_gives_items_back(Some(S::Sending)));
    assert!(!S::Sending.cancel_gives_items_back(None));
    assert_eq!(
        DigestStatus::Draft.decide(DigestAction::Pause, None),
        Err("draft; only a scheduled or sending digest can be paused".into())
    );
    assert_eq!(
        DigestStatus::Missed.decide(DigestAction::Resume, None),
        Err("missed; only a paused digest can be resumed".into())
    );
    assert_eq!(
        DigestStatus::Sending.decide(DigestAction::Schedule, None),
        Err("sending; only a draft or scheduled digest can be scheduled".into())
    );
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

fn madrid(time: &str) -> DailySchedule {
    DailySchedule::parse(time, "Europe/Madrid", true).expect("valid")
}

#[test]
fn seven_local_is_seven_local_on_both_sides_of_a_dst_change() {
    let s = madrid("07:00");
    // Winter (CET, +01:00) and summer (CEST, +02:00).
    let before = s.fire_time(NaiveDate::from_ymd_opt(2026, 3, 28).expect("date"));
    let after = s.fire_time(NaiveDate::from_ymd_opt(2026, 3, 29).expect("date"));
    assert_eq!(before, utc("2026-03-28T06:00:00Z"));
    assert_eq!(after, utc("2026-03-29T05:00:00Z"));
    let autumn = s.fire_time(NaiveDate::from_ymd_opt(2026, 10, 25).expect("date"));
    assert_eq!(autumn, utc("2026-10-25T06:00:00Z"));
}

#[test]
fn a_time_that_does_not_exist_fires_at_the_first_valid_minute_after_it() {
    // 2026-03-29 02:00 -> 03:00 in Madrid: 02:30 does not exist.
    let s = madrid("02:30");
    let t = s.fire_time(NaiveDate::from_ymd_opt(2026, 3, 29).expect("date"));
    assert_eq!(t, utc("2026-03-29T01:00:00Z")); // 03:00 CEST
}

#[test]
fn a_repeated_hour_fires_once_at_its_first_occurrence() {
    // 2026-10-25 03:00 -> 02:00 in Madrid: 02:30 happens twice.
    let s = madrid("02:30");
    let day = NaiveDate::from_ymd_opt(2026, 10, 25).expect("date");
    assert_eq!(s.fire_time(day), utc("2026-10-25T00:30:00Z")); // 02:30 CEST
    // Between the two occurrences, the day's firing is already in the past: it is due
    // once, and the next one is tomorrow.
    let between = utc("2026-10-25T01:10:00Z");
    assert_eq!(s.latest_due(between).0, day);
    assert_eq!(s.next_after(between), utc("2026-10-26T01:30:00Z"));
}

#[test]
fn latest_due_is_today_after_the_time_and_yesterday_before_it() {
    let s = madrid("07:00");
    let (d, t) = s.latest_due(utc("2026-12-01T06:30:00Z"));
    assert_eq!(d, NaiveDate::from_ymd_opt(2026, 12, 1).expect("date"));
    assert_eq!(t, utc("2026-12-01T06:00:00Z"));
    let (d, _) = s.latest_due(utc("2026-12-01T05:30:00Z"));
    assert_eq!(d, NaiveDate::from_ymd_opt(2026, 11, 30).expect("date"));
}

#[test]
fn delivering_at_each_subscribers_time_the_day_fires_at_the_earliest_zones_morning() {
    let s = madrid("07:00").with_deliver_at(DeliverAt::Subscriber);
    let zones = [Tz::Pacific__Kiritimati, Tz::America__Los_Angeles];
    let day = NaiveDate::from_ymd_opt(2027, 3, 14).expect("date");
    // Kiritimati (UTC+14) first, the evening before in UTC; Los Angeles (PDT) last.
    assert_eq!(s.first_fire(day, &zones), utc("2027-03-13T17:00:00Z"));
    assert_eq!(s.last_fire(day, &zones), utc("2027-03-14T14:00:00Z"));
    // On the 13th at 17:00 UTC, the 14th's digest is due (it is 07:00 on the 14th in
    // Kiritimati); a minute before, the 13th's was the latest.
    assert_eq!(
        s.latest_due_among(utc("2027-03-13T17:00:00Z"), &zones),
        (day, utc("2027-03-13T17:00:00Z"))
    );
    assert_eq!(
        s.latest_due_among(utc("2027-03-13T16:59:00Z"), &zones).0,
        day.pred_opt().expect("date")
    );
    assert_eq!(
        s.next_after_among(utc("2027-03-13T16:59:00Z"), &zones),
        utc("2027-03-13T17:00:00Z")
    );
    // By the list's clock the zones do not matter.
    let list = madrid("07:00");
    assert_eq!(list.first_fire(day, &zones), utc("2027-03-14T06:00:00Z"));
    assert_eq!(list.last_fire(day, &zones), utc("2027-03-14T06:00:00Z"));
}

#[test]
fn deliver_at_grace_and_local_delivery_are_checked() {
    assert_eq!(DeliverAt::parse("subscriber"), Ok(DeliverAt::Subscriber));
    assert_eq!(DeliverAt::parse(" list "), Ok(DeliverAt::List));
    assert_eq!(
        DeliverAt::parse("reader").map_err(|e| e.field),
        Err("deliver_at")
    );
    let grace = std::time::Duration::from_secs(30 * 60);
    let due = utc("2027-01-15T06:00:00Z");
    assert!(!past_grace(due, utc("2027-01-15T06:30:00Z"), grace));
    assert!(past_grace(due, utc("2027-01-15T06:30:01Z"), grace));
    assert!(
        !past_grace(due, utc("2027-01-15T05:00:00Z"), grace),
        "early is not late"
    );
    let now = utc("2026-12-02T12:00:00Z");
    assert_eq!(
        parse_local_delivery("07:00", "2026-12-03", now),
        Ok((
            NaiveDate::from_ymd_opt(2026, 12, 3).expect("date"),
            NaiveTime::from_hms_opt(7, 0, 0).expect("time")
        ))
    );
    // 07:00 on the 2nd has passed in most zones, but not yet at UTC-12 (19:00 UTC).
    assert!(parse_local_delivery("07:00", "2026-12-02", now).is_ok());
    assert_eq!(
        parse_local_delivery("07:00", "2026-12-01", now).map_err(|e| e.field),
        Err("date")
    );
    assert_eq!(
        parse_local_delivery("7am", "2026-12-03", now).map_err(|e| e.field),
        Err("local_time")
    );
}

#[test]
fn schedule_and_send_at_validation() {
    assert!(DailySchedule::parse("7am", "UTC", true).is_err());
    assert!(DailySchedule::parse("25:00", "UTC", true).is_err());
    assert_eq!(
        DailySchedule::parse("07:00", "Mars/Olympus", true).map_err(|e| e.field),
        Err("timezone")
    );
    let now = utc("2026-12-01T10:00:00Z");
    assert_eq!(parse_send_at("now", now), Ok(now));
    assert_eq!(
        parse_send_at("2026-12-01T12:00:00+01:00", now),
        Ok(utc("2026-12-01T11:00:00Z"))
    );
    assert_eq!(
        parse_send_at("2026-11-30T10:00:00Z", now).map_err(|e| e.message),
        Err("is in the past".to_owned())
    );
    assert!(parse_send_at("tomorrow", now).is_err());
}

#[test]
fn items_and_digests_are_validated() {
    assert!(NewItem::parse("Rust 2.0", "https://example.com/a", "sum", None).is_ok());
    assert_eq!(
        NewItem::parse("x", "javascript:alert(1)", "", None).map_err(|e| e.field),
        Err("url")
    );
    assert_eq!(
        NewItem::parse("a\r\nBcc: x", "https://e.com", "", None).map_err(|e| e.field),
        Err("title")
    );
    assert_eq!(
        NewDigest::parse("Hi\nBcc: x@y.z", None, ItemSelection::Pending).map_err(|e| e.field),
        Err("subject")
    );
    assert_eq!(
        NewDigest::parse("Hi", None, ItemSelection::Ids(vec![])).map_err(|e| e.field),
        Err("items")
    );
    assert_eq!(
        NewDigest::parse("Hi", None, ItemSelection::Ids(vec!["a\u{0}b".into()]))
            .map_err(|e| e.field),
        Err("items")
    );
}

#[test]
fn every_kind_of_line_end_in_text_becomes_lf() {
    assert_eq!(
        text("summary", "Windows\r\nold Mac\rUnix\nend", 100).map_err(|e| e.field),
        Ok("Windows\nold Mac\nUnix\nend".to_owned())
    );
}
