//! A delivery: one message to one subscriber, and the states it moves through.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryKind {
    /// The double opt-in email.
    Confirmation,
    /// One digest to one confirmed subscriber.
    Digest,
}

impl DeliveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmation => "confirmation",
            Self::Digest => "digest",
        }
    }
}

impl FromStr for DeliveryKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "confirmation" => Ok(Self::Confirmation),
            "digest" => Ok(Self::Digest),
            other => Err(format!("unknown delivery kind {other:?}")),
        }
    }
}

/// `queued -> sending -> sent | queued (retry) | failed`, or `suppressed` when the subscriber
/// no longer wants (or can take) the message at send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Queued,
    Sending,
    Sent,
    Failed,
    Suppressed,
}

impl DeliveryStatus {
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Sending,
        Self::Sent,
        Self::Failed,
        Self::Suppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Suppressed => "suppressed",
        }
    }

    /// Final states are never left again: this is what makes a delivery at-most-once.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Sent | Self::Failed | Self::Suppressed)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown delivery status {s:?}"))
    }
}

/// Why a send did not succeed, classified once at the SMTP boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// 4xx, timeouts, refused or reset connections: worth another try later.
    Transient { code: Option<u16>, text: String },
    /// 5xx: retrying will not help. `bounce` when the mailbox itself does not exist (5.1.x).
    Permanent {
        code: Option<u16>,
        text: String,
        bounce: bool,
    },
}

impl SendFailure {
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Transient { code, .. } | Self::Permanent { code, .. } => *code,
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Self::Transient { text, .. } | Self::Permanent { text, .. } => text,
        }
    }
}

/// A 5xx reply whose enhanced status code is 5.1.x (bad destination mailbox or address), or a
/// bare 550/551/553 "user unknown", means the address is dead.
pub fn is_bounce(code: u16, text: &str) -> bool {
    let enhanced_5_1 = text
        .split_whitespace()
        .next()
        .is_some_and(|w| w.starts_with("5.1."));
    enhanced_5_1 || (matches!(code, 550 | 551 | 553) && mentions_unknown_user(text))
}

fn mentions_unknown_user(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "user unknown",
        "unknown user",
        "no such user",
        "does not exist",
        "mailbox unavailable",
    ]
    .iter()
    .any(|p| t.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_final_states_are_final() {
        for s in DeliveryStatus::ALL {
            assert_eq!(s.as_str().parse::<DeliveryStatus>(), Ok(s));
        }
        assert!(DeliveryStatus::Sent.is_final());
        assert!(!DeliveryStatus::Sending.is_final());
        assert!(!DeliveryStatus::Queued.is_final());
    }

    #[test]
    fn recognises_hard_bounces() {
        assert!(is_bounce(550, "5.1.1 <x@y.z>: Recipient address rejected"));
        assert!(is_bounce(
            550,
            "Requested action not taken: mailbox unavailable"
        ));
        assert!(!is_bounce(550, "5.7.1 Message rejected as spam"));
        assert!(!is_bounce(552, "5.2.2 Mailbox full"));
    }
}
