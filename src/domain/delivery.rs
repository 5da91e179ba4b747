//! A delivery: one message to one subscriber, and the states it moves through.

use std::fmt;
use std::str::FromStr;

use super::clock::Millis;
use super::smtp::Verdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryKind {
    /// The double opt-in email.
    Confirmation,
    /// One digest to one confirmed subscriber.
    Digest,
    /// The email a subscriber gets once they have confirmed.
    Welcome,
    /// A digest sent to an editor's address as a test: no subscriber, counted toward nothing.
    Test,
}

impl DeliveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmation => "confirmation",
            Self::Digest => "digest",
            Self::Welcome => "welcome",
            Self::Test => "test",
        }
    }
}

impl FromStr for DeliveryKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "confirmation" => Ok(Self::Confirmation),
            "digest" => Ok(Self::Digest),
            "welcome" => Ok(Self::Welcome),
            "test" => Ok(Self::Test),
            other => Err(format!("unknown delivery kind {other:?}")),
        }
    }
}

/// For rows decoded with `#[sqlx(try_from = "String")]`.
impl TryFrom<String> for DeliveryKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
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

/// For rows decoded with `#[sqlx(try_from = "String")]`.
impl TryFrom<String> for DeliveryStatus {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl DeliveryStatus {
    /// The moves a delivery may make: claimed (`queued -> sending`), an outcome recorded
    /// (`sending -> anything but sending`), or suppressed while waiting (`queued ->
    /// suppressed`, when the subscriber leaves). Nothing leaves a final state.
    pub fn may_become(self, next: Self) -> bool {
        match (self, next) {
            (Self::Queued, Self::Sending | Self::Suppressed) => true,
            (Self::Sending, next) => next != Self::Sending,
            _ => false,
        }
    }
}

/// What became of one claimed delivery; the worker decides it, the store records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent,
    /// Transient failure: back to `queued`, due again at `run_at`.
    Retry {
        run_at: Millis,
        code: Option<u16>,
        error: String,
    },
    Failed {
        code: Option<u16>,
        error: String,
        /// The address does not exist: mark the subscriber `bounced`.
        bounce: bool,
    },
    Suppressed {
        reason: String,
    },
    /// Never started (shutdown): hand the claim back without counting an attempt.
    Released,
    /// Not attempted now (its domain is cooling down): due again at `run_at`, no attempt spent.
    Deferred {
        run_at: Millis,
    },
}

impl Outcome {
    /// The status a `sending` delivery moves to when this outcome is recorded.
    pub fn status(&self) -> DeliveryStatus {
        match self {
            Self::Sent => DeliveryStatus::Sent,
            Self::Retry { .. } | Self::Released | Self::Deferred { .. } => DeliveryStatus::Queued,
            Self::Failed { .. } => DeliveryStatus::Failed,
            Self::Suppressed { .. } => DeliveryStatus::Suppressed,
        }
    }

    /// When the delivery is due again, for an outcome that puts it back in the queue.
    pub fn due_again(&self, now: Millis) -> Option<Millis> {
        match self {
            Self::Retry { run_at, .. } | Self::Deferred { run_at } => Some(*run_at),
            Self::Released => Some(now),
            Self::Sent | Self::Failed { .. } | Self::Suppressed { .. } => None,
        }
    }

    /// The message was never attempted: the attempt counted when it was claimed is given back.
    pub fn gives_attempt_back(&self) -> bool {
        matches!(self, Self::Released | Self::Deferred { .. })
    }

    /// The address is dead: the subscriber becomes `bounced` and is mailed no more.
    pub fn bounces_subscriber(&self) -> bool {
        matches!(self, Self::Failed { bounce: true, .. })
    }
}

/// Why a send did not succeed: the reply code, when there was a reply, and the error as
/// people read it. What it means is asked of [`SendFailure::verdict`], decided in
/// [`super::smtp::classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// The SMTP reply code; `None` for connection trouble (connecting, TLS, AUTH, timeouts,
    /// a broken connection, an outbox that cannot be written).
    pub code: Option<u16>,
    /// The whole error, e.g. `permanent error (550): 5.1.1 <x@y.z>: Recipient address
    /// rejected`.
    pub text: String,
}

impl SendFailure {
    /// A failure that got no reply: connection-level trouble, always worth a retry.
    pub fn connection(text: String) -> Self {
        Self { code: None, text }
    }

    /// A refusal with its reply code. `text` is the whole error: what follows its first
    /// `": "` is the server's reply.
    pub fn reply(code: u16, text: String) -> Self {
        Self {
            code: Some(code),
            text,
        }
    }

    /// The server's reply text, after the error's own prefix (`"permanent error (550): "`).
    pub fn reply_text(&self) -> &str {
        self.text.split_once(": ").map_or("", |(_, r)| r)
    }

    /// What the failure means, from the one classification.
    pub fn verdict(&self) -> Verdict {
        super::smtp::classify(self.code, self.reply_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_stored_names() {
        for (kind, name) in [
            (DeliveryKind::Confirmation, "confirmation"),
            (DeliveryKind::Digest, "digest"),
            (DeliveryKind::Welcome, "welcome"),
            (DeliveryKind::Test, "test"),
        ] {
            assert_eq!(kind.as_str(), name);
            assert_eq!(name.parse::<DeliveryKind>(), Ok(kind));
        }
        assert!("newsletter".parse::<DeliveryKind>().is_err());
    }

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
    fn only_allowed_moves_are_allowed_and_final_states_are_never_left() {
        use DeliveryStatus::*;
        for from in DeliveryStatus::ALL {
            for to in DeliveryStatus::ALL {
                let allowed = matches!(
                    (from, to),
                    (Queued, Sending | Suppressed) | (Sending, Queued | Sent | Failed | Suppressed)
                );
                assert_eq!(from.may_become(to), allowed, "{from} -> {to}");
                if from.is_final() {
                    assert!(!from.may_become(to), "{from} is final");
                }
            }
        }
    }

    #[test]
    fn every_outcome_is_an_allowed_move_from_sending() {
        let all = [
            Outcome::Sent,
            Outcome::Retry {
                run_at: 5,
                code: Some(451),
                error: "later".into(),
            },
            Outcome::Failed {
                code: Some(550),
                error: "no".into(),
                bounce: true,
            },
            Outcome::Failed {
                code: Some(554),
                error: "no".into(),
                bounce: false,
            },
            Outcome::Suppressed {
                reason: "unsubscribed".into(),
            },
            Outcome::Released,
            Outcome::Deferred { run_at: 7 },
        ];
        for o in &all {
            assert!(DeliveryStatus::Sending.may_become(o.status()), "{o:?}");
        }
        let now = 1;
        let due: Vec<_> = all.iter().map(|o| o.due_again(now)).collect();
        assert_eq!(
            due,
            [None, Some(5), None, None, None, Some(now), Some(7)],
            "only what goes back to the queue is due again, at its own time"
        );
        let back: Vec<_> = all.iter().map(Outcome::gives_attempt_back).collect();
        assert_eq!(back, [false, false, false, false, false, true, true]);
        let bounced: Vec<_> = all.iter().map(Outcome::bounces_subscriber).collect();
        assert_eq!(bounced, [false, false, true, false, false, false, false]);
        for o in &all {
            assert_eq!(
                o.status() == DeliveryStatus::Queued,
                o.due_again(now).is_some(),
                "queued again exactly when due again: {o:?}"
            );
        }
    }

    #[test]
    fn a_failure_is_classified_by_its_code_and_the_reply_after_the_prefix() {
        let f = SendFailure::reply(
            550,
            "permanent error (550): 5.1.1 <x@y.z>: Recipient address rejected".into(),
        );
        assert_eq!(f.reply_text(), "5.1.1 <x@y.z>: Recipient address rejected");
        assert_eq!(f.verdict(), Verdict::HardBounce);
        let spam = SendFailure::reply(550, "permanent error (550): 5.7.1 spam".into());
        assert_eq!(spam.verdict(), Verdict::PolicyRejection);
        let later = SendFailure::reply(450, "transient error (450): 4.2.0 busy".into());
        assert_eq!(later.verdict(), Verdict::RetryLater);
        let gone = SendFailure::connection("cannot connect to x:25: refused".into());
        assert_eq!(gone.verdict(), Verdict::ConnectionTrouble);
    }
}
