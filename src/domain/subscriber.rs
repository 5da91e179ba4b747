//! Subscriber state and the optional display name.

use std::fmt;
use std::str::FromStr;

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
    fn status_round_trips() {
        for s in SubscriberStatus::ALL {
            assert_eq!(s.as_str().parse::<SubscriberStatus>(), Ok(s));
        }
        assert!("gone".parse::<SubscriberStatus>().is_err());
    }

    #[test]
    fn names_are_optional_bounded_and_single_line() {
        assert_eq!(SubscriberName::parse("  "), Ok(None));
        assert_eq!(
            SubscriberName::parse(" Ada ").map(|n| n.map(|n| n.0)),
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
