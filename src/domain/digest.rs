//! Items, digests and the daily schedule: validation and time rules, no I/O.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;

/// A field an editor got wrong, and why; the HTTP edge answers 422 with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

pub fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

/// Single-line text: trimmed, 1..=max characters, no control characters (so it can never
/// break a header such as Subject).
pub fn line(field: &'static str, value: &str, max: usize) -> Result<String, Invalid> {
    let v = value.trim();
    if v.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "must be one line without control characters",
        ));
    }
    if v.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    Ok(v.to_owned())
}

/// Multi-line text: newlines and tabs allowed, other control characters not.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<String, Invalid> {
    let v = value.trim();
    if v.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(invalid(field, "must not contain control characters"));
    }
    if v.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    // Any line end becomes LF: a CR of its own (old Mac text) would reach SMTP as a bare CR.
    Ok(v.replace("\r\n", "\n").replace('\r', "\n"))
}

/// A news item as an editor submits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    pub title: String,
    pub url: String,
    pub summary: String,
    pub source: Option<String>,
}

impl NewItem {
    pub fn parse(
        title: &str,
        url: &str,
        summary: &str,
        source: Option<&str>,
    ) -> Result<Self, Invalid> {
        let title = line("title", title, 200)?;
        let url = http_url(url)?;
        let summary = text("summary", summary, 2000)?;
        let source = match source.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => Some(line("source", s, 100)?),
            None => None,
        };
        Ok(Self {
            title,
            url,
            summary,
            source,
        })
    }
}

/// An http(s) URL of at most 2048 characters, as the url crate writes it (the `url` field).
pub fn http_url(raw: &str) -> Result<String, Invalid> {
    let raw = raw.trim();
    if raw.len() > 2048 {
        return Err(invalid("url", "must be at most 2048 characters"));
    }
    let url = url::Url::parse(raw).map_err(|e| invalid("url", format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid("url", "must be an http:// or https:// URL"));
    }
    Ok(url.into())
}

/// What an editor writes to create a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDigest {
    pub subject: String,
    pub intro: Option<String>,
    pub items: ItemSelection,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemSelection {
    /// These items, in this order.
    Ids(Vec<String>),
    /// Every pending item, oldest first.
    Pending,
}

impl NewDigest {
    pub fn parse(
        subject: &str,
        intro: Option<&str>,
        items: ItemSelection,
    ) -> Result<Self, Invalid> {
        let subject = line("subject", subject, 200)?;
        let intro = match intro.map(|i| text("intro", i, 5000)).transpose()? {
            Some(i) if !i.is_empty() => Some(i),
            _ => None,
        };
        if let ItemSelection::Ids(ids) = &items {
            if ids.is_empty() {
                return Err(invalid("items", "a digest needs at least one item"));
            }
            if ids.len() > 100 {
                return Err(invalid("items", "a digest takes at most 100 items"));
            }
            // An id with a control character (a NUL, say) names no item, and PostgreSQL's
            // text cannot even hold it: refused here, not a failed statement (a 500).
            if let Some(bad) = ids.iter().find(|id| !super::id::may_name_a_row(id)) {
                return Err(invalid(
                    "items",
                    format!("{bad:?} is not an item's id (it holds a control character)"),
                ));
            }
        }
        Ok(Self {
            subject,
            intro,
            items,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestStatus {
    Draft,
    Scheduled,
    Sending,
    Paused,
    Sent,
    Cancelled,
    /// Its send time passed while nothing ran, beyond the grace window.
    Missed,
}

impl DigestStatus {
    pub const ALL: [Self; 7] = [
        Self::Draft,
        Self::Scheduled,
        Self::Sending,
        Self::Paused,
        Self::Sent,
        Self::Cancelled,
        Self::Missed,
    ];

    /// Whether a digest in this status is public in the archive: once it has gone out
    /// (while it is being delivered, so the first email's "View in browser" link works, and
    /// after). Drafts, scheduled, paused, cancelled and missed digests never are.
    pub fn in_archive(self) -> bool {
        matches!(self, Self::Sending | Self::Sent)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Scheduled => "scheduled",
            Self::Sending => "sending",
            Self::Paused => "paused",
            Self::Sent => "sent",
            Self::Cancelled => "cancelled",
            Self::Missed => "missed",
        }
    }
}

/// Why a delivery of a cancelled digest was not sent (the store suppresses what was queued,
/// the worker what was claimed) and the note on its cancelled waves.
pub const CANCELLED: &str = "cancelled by an editor";

/// What an editor, the scheduler or a worker asks of a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAction {
    Schedule,
    Cancel,
    Pause,
    Resume,
    /// The scheduler makes its deliveries (its send time has come).
    FanOut,
    /// The scheduler gives up on it: its send time passed beyond the grace window.
    Miss,
    /// Nothing of it is left to send.
    Finish,
    /// An editor rewrites its subject, introduction or items (a draft stays a draft).
    Edit,
    /// An editor mails it to a few addresses of their own, as a test (its status stays).
    SendTest,
}

/// What an allowed action does to a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It moves to this status (`Resume` moves back to the status it was paused from).
    To(DigestStatus),
    /// Asked again after it was done: nothing to do, and no error (idempotent).
    Unchanged,
}

impl DigestStatus {
    /// The one rule of which digest may do what. `paused_from` is where a paused digest
    /// resumes to (`scheduled` when unknown). A refusal says why, for the editor.
    pub fn decide(
        self,
        action: DigestAction,
        paused_from: Option<DigestStatus>,
    ) -> Result<Change, String> {
        use DigestAction as A;
        use DigestStatus as S;
        let refuse = |what: &str| Err(format!("{self}; only {what}"));
        match (action, self) {
            (A::Schedule, S::Draft | S::Scheduled) => Ok(Change::To(S::Scheduled)),
            (A::Schedule, _) => refuse("a draft or scheduled digest can be scheduled"),
            (A::Cancel, S::Cancelled) => Ok(Change::Unchanged),
            // A sending one stops: what is queued is never sent, what was sent stays sent.
            (A::Cancel, S::Draft | S::Scheduled | S::Sending | S::Paused) => {
                Ok(Change::To(S::Cancelled))
            }
            (A::Cancel, _) => refuse(
                "a digest not yet sent (draft, scheduled, sending or paused) can be cancelled",
            ),
            (A::Pause, S::Paused) => Ok(Change::Unchanged),
            (A::Pause, S::Scheduled | S::Sending) => Ok(Change::To(S::Paused)),
            (A::Pause, _) => refuse("a scheduled or sending digest can be paused"),
            (A::Resume, S::Paused) => Ok(Change::To(match paused_from {
                Some(from @ (S::Scheduled | S::Sending)) => from,
                _ => S::Scheduled,
            })),
            (A::Resume, S::Scheduled | S::Sending | S::Sent) => Ok(Change::Unchanged),
            (A::Resume, _) => refuse("a paused digest can be resumed"),
            (A::FanOut, S::Scheduled) => Ok(Change::To(S::Sending)),
            (A::Miss, S::Scheduled) => Ok(Change::To(S::Missed)),
            (A::Finish, S::Sending) => Ok(Change::To(S::Sent)),
            (A::FanOut | A::Miss, _) => refuse("a scheduled digest can be sent or missed"),
            (A::Finish, _) => refuse("a sending digest can finish"),
            (A::Edit, S::Draft) => Ok(Change::Unchanged),
            (A::Edit, _) => refuse("a draft can be edited (cancel it to start over)"),
            // A cancelled digest gave its items back: there is nothing left to test.
            (A::SendTest, S::Cancelled) => refuse("a digest that was not cancelled can be tested"),
            (A::SendTest, _) => Ok(Change::Unchanged),
        }
    }

    /// Whether this digest's items are still the editor's to change (before sending).
    pub fn before_sending(self) -> bool {
        matches!(self, Self::Draft | Self::Scheduled)
    }

    /// Whether cancelling a digest in this status gives its items back to the pending
    /// ones: it never went out (a draft, a scheduled digest, or one paused before its
    /// time; `paused_from` as in `decide`). One that went out keeps them: its archive
    /// page, its sent emails and its statistics still show them.
    pub fn cancel_gives_items_back(self, paused_from: Option<DigestStatus>) -> bool {
        match self {
            Self::Paused => paused_from != Some(Self::Sending),
            other => other.before_sending(),
        }
    }
}

impl fmt::Display for DigestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DigestStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown digest status {s:?}"))
    }
}

/// For rows decoded with `#[sqlx(try_from = "String")]`.
impl TryFrom<String> for DigestStatus {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// When a digest should go out: a moment, or "now".
pub fn parse_send_at(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Invalid> {
    if raw.trim().eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    let at = DateTime::parse_from_rfc3339(raw.trim())
        .map_err(|_| {
            invalid(
                "send_at",
                "must be \"now\" or an RFC 3339 time such as 2026-12-01T07:00:00+01:00",
            )
        })?
        .with_timezone(&Utc);
    // A minute of slack for clocks and round trips; anything older is a mistake.
    if at < now - Duration::minutes(1) {
        return Err(invalid("send_at", "is in the past"));
    }
    Ok(at)
}

/// A browser's `datetime-local` value ("2026-12-03T07:00", seconds optional) read as a wall
/// time in the list's timezone `tz` by the one DST rule (`timezone::local_instant`: a time
/// the clocks skip goes at the first valid minute after it, a repeated one goes once); not in
/// the past (a minute of slack, as `parse_send_at`).
pub fn parse_local_send_at(
    raw: &str,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, Invalid> {
    let raw = raw.trim();
    let naive = chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| {
            invalid(
                "send_at",
                "must be a date and time such as 2026-12-03T07:00",
            )
        })?;
    let at = super::timezone::local_instant(tz, naive.date(), naive.time());
    if at < now - Duration::minutes(1) {
        return Err(invalid("send_at", "is in the past"));
    }
    Ok(at)
}

/// Whose clock a digest goes out by: the list's (everyone at once, at the time in the
/// schedule's zone) or each subscriber's own (one wave per zone, at the time in that zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliverAt {
    #[default]
    List,
    Subscriber,
}

impl DeliverAt {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Subscriber => "subscriber",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw.trim() {
            "list" => Ok(Self::List),
            "subscriber" => Ok(Self::Subscriber),
            _ => Err(invalid("deliver_at", "must be \"list\" or \"subscriber\"")),
        }
    }
}

/// Whether something due at `due` and seen only at `now` is beyond the grace window: then it
/// is not sent late (a digest is missed, a wave of it is missed). The one missed-grace rule.
pub fn past_grace(due: DateTime<Utc>, now: DateTime<Utc>, grace: std::time::Duration) -> bool {
    (now - due).to_std().is_ok_and(|late| late > grace)
}

/// A one-off digest delivered at `local_time` ("07:00") on `date` ("2026-12-02") in each
/// subscriber's own zone. Refused when that time has passed in every zone on earth.
pub fn parse_local_delivery(
    local_time: &str,
    date: &str,
    now: DateTime<Utc>,
) -> Result<(NaiveDate, NaiveTime), Invalid> {
    let time = NaiveTime::parse_from_str(local_time.trim(), "%H:%M").map_err(|_| {
        invalid(
            "local_time",
            "must be HH:MM on a 24-hour clock, such as 07:00",
        )
    })?;
    let date = NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d")
        .map_err(|_| invalid("date", "must be a date such as 2026-12-02"))?;
    // The westernmost zones are UTC-12: later than that, nobody has that morning left.
    let last = date.and_time(time).and_utc() + Duration::hours(12);
    if last < now - Duration::minutes(1) {
        return Err(invalid(
            "date",
            "is in the past: that time has passed in every time zone",
        ));
    }
    Ok((date, time))
}

/// The editors' daily schedule: a wall-clock time in a named time zone, delivered by the
/// list's clock or by each subscriber's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailySchedule {
    pub time: NaiveTime,
    pub timezone: Tz,
    pub enabled: bool,
    pub deliver_at: DeliverAt,
}

impl DailySchedule {
    pub fn parse(time: &str, timezone: &str, enabled: bool) -> Result<Self, Invalid> {
        let time = NaiveTime::parse_from_str(time.trim(), "%H:%M")
            .map_err(|_| invalid("time", "must be HH:MM on a 24-hour clock, such as 07:00"))?;
        let timezone: Tz = timezone.trim().parse().map_err(|_| {
            invalid(
                "timezone",
                "must be an IANA time zone name such as Europe/Madrid or UTC",
            )
        })?;
        Ok(Self {
            time,
            timezone,
            enabled,
            deliver_at: DeliverAt::List,
        })
    }

    #[must_use]
    pub fn with_deliver_at(mut self, deliver_at: DeliverAt) -> Self {
        self.deliver_at = deliver_at;
        self
    }

    pub fn time_str(&self) -> String {
        self.time.format("%H:%M").to_string()
    }

    /// The instant the digest of local day `date` fires. A time that does not exist that day
    /// (spring forward) fires at the first valid minute after it; a time that exists twice
    /// (fall back) fires once, at the first.
    pub fn fire_time(&self, date: NaiveDate) -> DateTime<Utc> {
        super::timezone::local_instant(self.timezone, date, self.time)
    }

    /// When the digest of local day `date` fires: the schedule's time in its zone, or,
    /// delivering at each subscriber's time, the earliest of the subscribers' `zones` (and the
    /// list's): the first wave, when the day's content is frozen.
    pub fn first_fire(&self, date: NaiveDate, zones: &[Tz]) -> DateTime<Utc> {
        self.wave_times(date, zones)
            .fold(self.fire_time(date), DateTime::min)
    }

    /// When the last wave of local day `date` is due (the list's time, delivering by its
    /// clock).
    pub fn last_fire(&self, date: NaiveDate, zones: &[Tz]) -> DateTime<Utc> {
        self.wave_times(date, zones)
            .fold(self.fire_time(date), DateTime::max)
    }

    /// The instants the waves of `zones` are due on local day `date`: none when delivering
    /// by the list's clock.
    fn wave_times<'a>(
        &'a self,
        date: NaiveDate,
        zones: &'a [Tz],
    ) -> impl Iterator<Item = DateTime<Utc>> + 'a {
        let zones = match self.deliver_at {
            DeliverAt::List => &[][..],
            DeliverAt::Subscriber => zones,
        };
        zones
            .iter()
            .map(move |tz| super::timezone::local_instant(*tz, date, self.time))
    }

    /// The latest firing at or before `now`, with its local date: the only one that may
    /// still be sent (older ones are never caught up, so daily digests cannot pile up).
    pub fn latest_due(&self, now: DateTime<Utc>) -> (NaiveDate, DateTime<Utc>) {
        self.latest_due_among(now, &[])
    }

    /// `latest_due` whose firing is the first wave among `zones` (`first_fire`). Local
    /// dates differ by at most two days between zones, so five candidates around the list's
    /// today cover them.
    pub fn latest_due_among(&self, now: DateTime<Utc>, zones: &[Tz]) -> (NaiveDate, DateTime<Utc>) {
        let today = now.with_timezone(&self.timezone).date_naive();
        let mut fallback = (today, self.first_fire(today, zones));
        for offset in [2, 1, 0, -1, -2] {
            let Some(date) = today.checked_add_signed(Duration::days(offset)) else {
                continue;
            };
            let t = self.first_fire(date, zones);
            if t <= now {
                return (date, t);
            }
            fallback = (date, t);
        }
        fallback
    }

    /// The next firing strictly after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.next_after_among(now, &[])
    }

    /// `next_after` whose firing is the first wave among `zones` (`first_fire`).
    pub fn next_after_among(&self, now: DateTime<Utc>, zones: &[Tz]) -> DateTime<Utc> {
        let start = now.with_timezone(&self.timezone).date_naive();
        let mut date = start.checked_sub_signed(Duration::days(2)).unwrap_or(start);
        loop {
            let t = self.first_fire(date, zones);
            if t > now {
                return t;
            }
            match date.succ_opt() {
                Some(d) => date = d,
                None => return t,
            }
        }
    }
}

#[cfg(test)]
mod tests;
