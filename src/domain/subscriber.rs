//! Subscriber state and the optional display name.

use std::fmt;
use std::str::FromStr;

use super::clock::{Millis, ms};

/// Where a subscriber stands. Only `Confirmed` subscribers ever receive a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriberStatus {
    /// Signed up, confirmation not yet clicked.
    Pending,
    Confirmed,
    Unsubscribed,
    /// A permanent failure said the mailbox does not exist; never mailed again.
    Bounced,
}

impl SubscriberStatus {
    pub const ALL: [Self; 4] = [
        Self::Pending,
        Self::Confirmed,
        Self::Unsubscribed,
        Self::Bounced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Unsubscribed => "unsubscribed",
            Self::Bounced => "bounced",
        }
    }
}

impl fmt::Display for SubscriberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubscriberStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown subscriber status {s:?}"))
    }
}

/// For rows decoded with `#[sqlx(try_from = "String")]`.
impl TryFrom<String> for SubscriberStatus {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A pending address gets at most one confirmation email per this interval.
pub const RESEND_CONFIRMATION_AFTER: std::time::Duration = std::time::Duration::from_secs(10 * 60);
/// A confirmation email not sent within this time is given up (its link would be stale).
pub const CONFIRMATION_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3600);
/// A welcome email not sent within this time of the confirmation is given up (it would no
/// longer read as a welcome).
pub const WELCOME_DEADLINE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What a sign-up for an address already known does. The HTTP answer is the same for all of
/// them (no address enumeration); this is for the store, logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignUpOutcome {
    /// New address, or a returning one that had unsubscribed: pending, confirmation queued.
    ConfirmationQueued,
    /// Pending and a confirmation was queued less than the re-send interval ago.
    RecentlyQueued,
    AlreadyConfirmed,
    /// A hard-bounced address is never mailed again.
    Bounced,
}

/// The sign-up rule for a known address: confirmed and bounced subscribers are left as they
/// are (a repeat sign-up never demotes anyone); a pending or departed one gets a new
/// confirmation, at most one per [`RESEND_CONFIRMATION_AFTER`].
pub fn sign_up_again(
    status: SubscriberStatus,
    confirmation_queued_at: Option<Millis>,
    now: Millis,
) -> SignUpOutcome {
    match status {
        SubscriberStatus::Confirmed => SignUpOutcome::AlreadyConfirmed,
        SubscriberStatus::Bounced => SignUpOutcome::Bounced,
        SubscriberStatus::Pending | SubscriberStatus::Unsubscribed => {
            if confirmation_queued_at.is_some_and(|t| now - t < ms(RESEND_CONFIRMATION_AFTER)) {
                SignUpOutcome::RecentlyQueued
            } else {
                SignUpOutcome::ConfirmationQueued
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed,
    /// The link was used before, and the subscriber is confirmed: same friendly page.
    AlreadyConfirmed,
    /// Expired, used by someone no longer pending, or never issued: offer a new link.
    Invalid,
}

/// The confirmation rule for a link that was issued: a confirmed subscriber sees the same
/// friendly page again; an unused, unexpired link confirms a pending subscriber; anything
/// else (used, expired, or the subscriber left or bounced since: an old link must not
/// re-enrol) is invalid.
pub fn confirm_link(
    status: SubscriberStatus,
    used: bool,
    expires_at: Millis,
    now: Millis,
) -> ConfirmOutcome {
    match (used, status) {
        (_, SubscriberStatus::Confirmed) => ConfirmOutcome::AlreadyConfirmed,
        (false, SubscriberStatus::Pending) if now < expires_at => ConfirmOutcome::Confirmed,
        _ => ConfirmOutcome::Invalid,
    }
}

const MAX_NAME_CHARS: usize = 100;

/// A subscriber's name as they typed it: trimmed, at most 100 characters, no control characters
/// (so it can never break a header line). It is text, escaped wherever it is rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is longer than {MAX_NAME_CHARS} characters")]
    TooLong,
    #[error("the name contains a control character or line break")]
    ControlCharacter,
}

impl SubscriberName {
    /// `Ok(None)` for a blank name: the name is optional.
    pub fn parse(input: &str) -> Result<Option<Self>, NameError> {
        let s = input.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if s.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        if s.chars().count() > MAX_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        Ok(Some(Self(s.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_sign_up_never_demotes_and_resends_at_most_every_ten_minutes() {
        use SignUpOutcome as O;
        use SubscriberStatus as S;
        let now = 100 * 60_000;
        let recent = Some(now - ms(RESEND_CONFIRMATION_AFTER) + 1);
        let old = Some(now - ms(RESEND_CONFIRMATION_AFTER));
        for queued in [None, recent, old] {
            assert_eq!(
                sign_up_again(S::Confirmed, queued, now),
                O::AlreadyConfirmed
            );
            assert_eq!(sign_up_again(S::Bounced, queued, now), O::Bounced);
        }
        for status in [S::Pending, S::Unsubscribed] {
            assert_eq!(sign_up_again(status, recent, now), O::RecentlyQueued);
            assert_eq!(sign_up_again(status, old, now), O::ConfirmationQueued);
            assert_eq!(sign_up_again(status, None, now), O::ConfirmationQueued);
        }
    }

    #[test]
    fn a_link_confirms_only_a_pending_subscriber_once_and_before_it_expires() {
        use ConfirmOutcome as O;
        use SubscriberStatus as S;
        let (now, later) = (1_000, 2_000);
        assert_eq!(confirm_link(S::Pending, false, later, now), O::Confirmed);
        assert_eq!(
            confirm_link(S::Pending, false, now, now),
            O::Invalid,
            "expired"
        );
        assert_eq!(
            confirm_link(S::Pending, true, later, now),
            O::Invalid,
            "used"
        );
        for used in [false, true] {
            assert_eq!(
                confirm_link(S::Confirmed, used, now, later),
                O::AlreadyConfirmed
            );
            assert_eq!(confirm_link(S::Unsubscribed, used, later, now), O::Invalid);
            assert_eq!(confirm_link(S::Bounced, used, later, now), O::Invalid);
        }
    }

    #[test]
    fn a_pending_address_is_mailed_at_most_every_ten_minutes_and_for_an_hour() {
        // The promise in README ("at most one confirmation per 10 minutes"), and the window in
        // which a queued confirmation is still worth sending.
        assert_eq!(
            RESEND_CONFIRMATION_AFTER,
            std::time::Duration::from_secs(600)
        );
        assert_eq!(CONFIRMATION_DEADLINE, std::time::Duration::from_secs(3600));
    }

    #[test]
    fn status_round_trips() {
        for s in SubscriberStatus::ALL {
            assert_eq!(s.as_str().parse::<SubscriberStatus>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str(), "shown as stored");
        }
        assert!("gone".parse::<SubscriberStatus>().is_err());
    }

    #[test]
    fn names_are_optional_bounded_and_single_line() {
        assert_eq!(SubscriberName::parse("  "), Ok(None));
        assert_eq!(
            SubscriberName::parse(" Ada ").map(|n| n.map(|n| n.as_str().to_owned())),
            Ok(Some("Ada".to_owned()))
        );
        assert_eq!(
            SubscriberName::parse("Ada\r\nBcc: x@y.z"),
            Err(NameError::ControlCharacter)
        );
        assert_eq!(
            SubscriberName::parse(&"é".repeat(101)),
            Err(NameError::TooLong)
        );
        assert!(SubscriberName::parse(&"é".repeat(100)).is_ok());
    }
}
