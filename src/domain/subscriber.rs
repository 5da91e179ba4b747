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

/// One row of a group of subscribers whose addresses differ only in case, as migration 0011
/// found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate {
    pub status: SubscriberStatus,
    pub confirmed_at: Option<Millis>,
    pub unsubscribed_at: Option<Millis>,
    pub created_at: Millis,
}

/// Which of a case-duplicate group stays the one subscriber (its id, consent evidence and
/// spelling of the address; the others' deliveries move to it, their rows go):
///
/// 1. a bounced one: the mailbox refused mail, whatever it was called;
/// 2. else the latest explicit choice: of the confirmed and unsubscribed rows, the one
///    confirmed or unsubscribed last (an unsubscribe after a confirmation is respected, a
///    confirmation after an unsubscribe too);
/// 3. else (all pending) the one created first.
///
/// Ties go to the one created first. Migration 0011 writes the same order in SQL; the
/// migration test checks the two agree.
pub fn merge_keeper(group: &[Duplicate]) -> Option<usize> {
    let rank = |d: &Duplicate| match d.status {
        SubscriberStatus::Bounced => 0,
        SubscriberStatus::Confirmed | SubscriberStatus::Unsubscribed => 1,
        SubscriberStatus::Pending => 2,
    };
    let chosen_at = |d: &Duplicate| match d.status {
        SubscriberStatus::Confirmed => d.confirmed_at.unwrap_or(0),
        SubscriberStatus::Unsubscribed => d.unsubscribed_at.unwrap_or(0),
        _ => 0,
    };
    group
        .iter()
        .enumerate()
        .min_by_key(|(_, d)| (rank(d), std::cmp::Reverse(chosen_at(d)), d.created_at))
        .map(|(i, _)| i)
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

    #[test]
    fn the_merge_keeps_a_bounce_else_the_latest_explicit_choice_else_the_first() {
        let d = |status, confirmed_at, unsubscribed_at, created_at| Duplicate {
            status,
            confirmed_at,
            unsubscribed_at,
            created_at,
        };
        use SubscriberStatus::{Bounced, Confirmed, Pending, Unsubscribed};
        // Confirmed beats pending, whichever came first.
        let group = [d(Pending, None, None, 1), d(Confirmed, Some(5), None, 2)];
        assert_eq!(merge_keeper(&group), Some(1));
        // An unsubscribe after the confirmation is the latest choice, and respected.
        let group = [
            d(Confirmed, Some(5), None, 1),
            d(Unsubscribed, None, Some(9), 2),
        ];
        assert_eq!(merge_keeper(&group), Some(1));
        // A confirmation after an unsubscribe is too.
        let group = [
            d(Unsubscribed, None, Some(3), 1),
            d(Confirmed, Some(7), None, 2),
            d(Pending, None, None, 3),
        ];
        assert_eq!(merge_keeper(&group), Some(1));
        // A bounce wins over everything: the mailbox is the same.
        let group = [d(Confirmed, Some(9), None, 1), d(Bounced, Some(2), None, 2)];
        assert_eq!(merge_keeper(&group), Some(1));
        // All pending: the first given.
        let group = [d(Pending, None, None, 4), d(Pending, None, None, 2)];
        assert_eq!(merge_keeper(&group), Some(1));
        assert_eq!(merge_keeper(&[]), None);
    }
}
