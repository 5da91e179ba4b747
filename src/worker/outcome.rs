//! Deciding the outcome: pure functions from what happened to what is recorded.

use crate::domain::clock::{Millis, ms};
use crate::domain::delivery::{Outcome, SendFailure};
use crate::domain::smtp::Verdict;
use crate::domain::{DeliveryKind, RetryPolicy, SubscriberStatus};
use crate::store::ClaimedDelivery;

/// The re-check before anything is spent on a delivery: whoever left after it was queued is
/// not mailed (`Suppressed`), and one past its deadline fails.
pub(super) fn recheck(d: &ClaimedDelivery, now: Millis) -> Option<Outcome> {
    let wanted = match d.kind {
        DeliveryKind::Confirmation => SubscriberStatus::Pending,
        // A test's recipient is the editor's address, taken as confirmed: they asked for it.
        DeliveryKind::Digest | DeliveryKind::Welcome | DeliveryKind::Test => {
            SubscriberStatus::Confirmed
        }
    };
    if d.subscriber_status != wanted {
        return Some(Outcome::Suppressed {
            reason: format!("subscriber is {}", d.subscriber_status),
        });
    }
    if now > d.expires_at {
        return Some(Outcome::Failed {
            code: None,
            error: "expired before it could be sent".into(),
            bounce: false,
        });
    }
    None
}

/// A transient failure: due again after the retry policy's delay for this attempt (`unit`
/// is the jitter's random number in `[0, 1)`), or failed when that would be past the
/// delivery's deadline.
pub(super) fn retry_or_fail(
    d: &ClaimedDelivery,
    retry: &RetryPolicy,
    unit: f64,
    now: Millis,
    code: Option<u16>,
    error: String,
) -> Outcome {
    let run_at = now + ms(retry.delay(d.attempts, unit));
    if run_at > d.expires_at {
        Outcome::Failed {
            code,
            error: format!("gave up after {} attempts: {error}", d.attempts),
            bounce: false,
        }
    } else {
        Outcome::Retry {
            run_at,
            code,
            error,
        }
    }
}

/// What a failed send becomes, by its verdict: transient ones are retried (until the
/// deadline), permanent ones fail at once, a hard bounce marks the subscriber bounced.
pub(super) fn after_failure(
    d: &ClaimedDelivery,
    failure: SendFailure,
    verdict: Verdict,
    retry: &RetryPolicy,
    unit: f64,
    now: Millis,
) -> Outcome {
    let SendFailure { code, text } = failure;
    if verdict.is_permanent() {
        Outcome::Failed {
            code,
            error: text,
            bounce: verdict.is_bounce(),
        }
    } else {
        // Transient, or a failure that claims a positive reply (no relay sends one): the
        // message may not have gone, so it is tried again.
        retry_or_fail(d, retry, unit, now, code, text)
    }
}
