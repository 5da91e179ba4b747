//! The one classification of an SMTP reply or connection error: what every part that cares
//! (the worker's outcome, the per-domain cool-down, the auto-pause) asks, decided here once.

/// What a reply (or the lack of one) means for the message and for the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// A positive reply (2xx, 3xx).
    Sent,
    /// A 4xx reply that is not "slow down": try again later.
    RetryLater,
    /// 421, 451 or 454: the relay or domain asks us to slow down; try again later, and leave
    /// the domain alone for a while.
    Throttle,
    /// A 5xx reply that is neither a hard bounce nor a policy rejection.
    PermanentFailure,
    /// A 5xx reply that says the address does not exist: the subscriber is bounced.
    HardBounce,
    /// A 5xx reply with an enhanced code 5.7.x (security or policy: spam, relaying denied).
    PolicyRejection,
    /// No reply at all: connecting, greeting, TLS, AUTH, a timeout, a broken connection, a
    /// missing extension, an outbox that cannot be written. Transient.
    ConnectionTrouble,
}

/// Classifies a reply code (with the reply's text, after the code) or, with `code` `None`,
/// a failure that got no reply.
///
/// 4xx, timeouts and connection errors are transient; 5xx is permanent; a 5xx whose enhanced
/// status code is 5.1.x (bad destination mailbox or address), or a 550/551/553 that says the
/// user is unknown, is a hard bounce; 421/451/454 is a throttle.
pub fn classify(code: Option<u16>, text: &str) -> Verdict {
    let Some(code) = code else {
        return Verdict::ConnectionTrouble;
    };
    match code {
        200..=399 => Verdict::Sent,
        421 | 451 | 454 => Verdict::Throttle,
        500..=599 if is_hard_bounce(code, text) => Verdict::HardBounce,
        500..=599 if enhanced_class(text).is_some_and(|e| e.starts_with("5.7.")) => {
            Verdict::PolicyRejection
        }
        500..=599 => Verdict::PermanentFailure,
        // 4xx, and anything no server should send: worth another try later.
        _ => Verdict::RetryLater,
    }
}

impl Verdict {
    /// Worth another try later (until the delivery's deadline).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::RetryLater | Self::Throttle | Self::ConnectionTrouble
        )
    }

    /// Retrying will not help: the delivery fails at once.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            Self::PermanentFailure | Self::HardBounce | Self::PolicyRejection
        )
    }

    /// The address is dead: the subscriber becomes `bounced`.
    pub fn is_bounce(self) -> bool {
        self == Self::HardBounce
    }

    /// The recipient's domain asks us to slow down: it cools down.
    pub fn is_throttle(self) -> bool {
        self == Self::Throttle
    }

    /// Whether this attempt counts against a digest's health (auto-pause): permanent failures
    /// and connection-level trouble do, a 4xx reply does not.
    pub fn counts_against_health(self) -> bool {
        self.is_permanent() || self == Self::ConnectionTrouble
    }
}

/// The reply's enhanced status code (RFC 3463), when its first word looks like one.
fn enhanced_class(text: &str) -> Option<&str> {
    text.split_whitespace()
        .next()
        .filter(|w| w.len() >= 4 && w.as_bytes()[1] == b'.')
}

/// A 5xx reply whose enhanced status code is 5.1.x, or a bare 550/551/553 "user unknown".
fn is_hard_bounce(code: u16, text: &str) -> bool {
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
    use super::Verdict::*;
    use super::*;

    #[test]
    fn no_reply_is_connection_trouble_whatever_the_text() {
        for text in ["", "timed out after 30s", "5.1.1 user unknown", "550 no"] {
            assert_eq!(classify(None, text), ConnectionTrouble, "{text:?}");
        }
    }

    #[test]
    fn positive_replies_are_sent() {
        for code in [200, 250, 251, 354, 399] {
            assert_eq!(classify(Some(code), "ok"), Sent, "{code}");
        }
    }

    #[test]
    fn throttle_codes_and_only_those() {
        for code in [421, 451, 454] {
            assert_eq!(classify(Some(code), "4.7.0 slow down"), Throttle, "{code}");
            assert_eq!(
                classify(Some(code), "5.1.1 user unknown"),
                Throttle,
                "{code}"
            );
        }
        for code in [400, 420, 422, 450, 452, 453, 455, 499] {
            assert_eq!(classify(Some(code), "try later"), RetryLater, "{code}");
        }
    }

    #[test]
    fn a_4xx_is_never_a_bounce_even_with_user_unknown_text() {
        assert_eq!(classify(Some(450), "4.1.1 user unknown"), RetryLater);
        assert_eq!(classify(Some(452), "5.1.1 user unknown"), RetryLater);
    }

    #[test]
    fn the_enhanced_code_5_1_alone_is_a_hard_bounce() {
        // No "user unknown" wording at all: the enhanced code decides, whatever the 5xx.
        for code in [550, 551, 552, 553, 554, 500, 599] {
            assert_eq!(
                classify(Some(code), "5.1.1 <x@y.z>: Recipient address rejected"),
                HardBounce,
                "{code}"
            );
        }
        assert_eq!(classify(Some(550), "5.1.10 Recipient null MX"), HardBounce);
        assert_eq!(classify(Some(553), "5.1.3 Bad address syntax"), HardBounce);
        // Only the first word counts.
        assert_eq!(
            classify(Some(554), "Rejected: 5.1.1 appears later"),
            PermanentFailure
        );
    }

    #[test]
    fn user_unknown_wording_is_a_hard_bounce_only_for_550_551_553() {
        for phrase in [
            "User unknown",
            "unknown user",
            "No such user here",
            "mailbox does not exist",
            "Requested action not taken: mailbox unavailable",
        ] {
            for code in [550, 551, 553] {
                assert_eq!(classify(Some(code), phrase), HardBounce, "{code} {phrase}");
            }
            for code in [552, 554] {
                assert_eq!(
                    classify(Some(code), phrase),
                    PermanentFailure,
                    "{code} {phrase}"
                );
            }
        }
    }

    #[test]
    fn policy_rejections_are_5xx_with_an_enhanced_5_7_code() {
        assert_eq!(
            classify(Some(550), "5.7.1 Message rejected as spam"),
            PolicyRejection
        );
        assert_eq!(classify(Some(554), "5.7.26 DMARC"), PolicyRejection);
        assert_eq!(classify(Some(552), "5.2.2 Mailbox full"), PermanentFailure);
        assert_eq!(classify(Some(554), "Transaction failed"), PermanentFailure);
        assert_eq!(classify(Some(500), ""), PermanentFailure);
    }

    #[test]
    fn a_reply_of_short_words_is_classified_without_looking_past_them() {
        // A relay may answer with a single character or a bare code: no enhanced code there,
        // and nothing to index past its end.
        for text in ["x", "5", "5.", "ok 5.7.1"] {
            assert_eq!(classify(Some(554), text), PermanentFailure, "{text:?}");
            assert_eq!(classify(Some(450), text), RetryLater, "{text:?}");
        }
    }

    #[test]
    fn each_verdict_is_exactly_one_of_sent_transient_or_permanent() {
        let all = [
            Sent,
            RetryLater,
            Throttle,
            PermanentFailure,
            HardBounce,
            PolicyRejection,
            ConnectionTrouble,
        ];
        for v in all {
            let kinds = [v == Sent, v.is_transient(), v.is_permanent()];
            assert_eq!(kinds.iter().filter(|k| **k).count(), 1, "{v:?}");
        }
        let bounce: Vec<_> = all.iter().map(|v| v.is_bounce()).collect();
        assert_eq!(bounce, [false, false, false, false, true, false, false]);
        let throttle: Vec<_> = all.iter().map(|v| v.is_throttle()).collect();
        assert_eq!(throttle, [false, false, true, false, false, false, false]);
        // Auto-pause counts permanent failures and connection trouble, never a 4xx reply.
        let health: Vec<_> = all.iter().map(|v| v.counts_against_health()).collect();
        assert_eq!(health, [false, false, false, true, true, true, true]);
    }

    #[test]
    fn every_code_class_lands_where_the_rule_says() {
        for code in 0..=999u16 {
            let v = classify(Some(code), "no enhanced code here");
            let expected = match code {
                200..=399 => Sent,
                421 | 451 | 454 => Throttle,
                500..=599 => PermanentFailure,
                _ => RetryLater,
            };
            assert_eq!(v, expected, "{code}");
        }
    }
}
