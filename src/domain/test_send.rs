//! Test sends: the few addresses an editor mails a digest to before it goes out, and the
//! rules around them (how many at once, how often, how long the queue tries, the subject).

use std::time::Duration;

use super::clock::Millis;
use super::digest::{Invalid, invalid};
use super::email::EmailAddress;

/// Never more addresses than this in one request.
pub const MAX_ADDRESSES: usize = 5;
/// At most this many test requests per digest within [`WINDOW`].
pub const REQUESTS_PER_WINDOW: i64 = 3;
pub const WINDOW: Duration = Duration::from_secs(60);
/// A test not sent within this is of no use to anyone: it fails instead of retrying for days.
pub const DEADLINE: Duration = Duration::from_secs(3600);
/// What a test's subject starts with, so no one takes it for the real thing.
pub const SUBJECT_PREFIX: &str = "[Test] ";

/// The page a test's unsubscribe and manage links (and List-Unsubscribe) lead to: it says
/// the email was a test and changes nothing (no subscriber's token is ever in a test).
pub const PAGE: &str = "/test-email";

/// The field an address mistake is reported under (the API's and the studio form's).
const FIELD: &str = "addresses";

/// One to [`MAX_ADDRESSES`] valid addresses, each once (by `EmailAddress::key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestAddresses(Vec<EmailAddress>);

impl TestAddresses {
    /// Addresses as the API takes them, one per entry.
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Self, Invalid> {
        let raw: Vec<&str> = raw
            .iter()
            .map(|a| a.as_ref().trim())
            .filter(|a| !a.is_empty())
            .collect();
        if raw.is_empty() {
            return Err(invalid(
                FIELD,
                "needs at least one address to send the test to",
            ));
        }
        if raw.len() > MAX_ADDRESSES {
            return Err(invalid(
                FIELD,
                format!(
                    "takes at most {MAX_ADDRESSES} addresses at once ({} given)",
                    raw.len()
                ),
            ));
        }
        let mut out: Vec<EmailAddress> = Vec::with_capacity(raw.len());
        for a in raw {
            let parsed = EmailAddress::parse(a)
                .map_err(|e| invalid(FIELD, format!("{a:?} is not valid: {e}")))?;
            if !out.iter().any(|o| o.key() == parsed.key()) {
                out.push(parsed);
            }
        }
        Ok(Self(out))
    }

    /// Addresses as typed in one field: separated by commas, semicolons or white space.
    pub fn parse_typed(typed: &str) -> Result<Self, Invalid> {
        let parts: Vec<&str> = typed
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .collect();
        Self::parse(&parts)
    }

    pub fn addresses(&self) -> &[EmailAddress] {
        &self.0
    }
}

/// Whether another test request of a digest may go now, given how many it had in the last
/// [`WINDOW`] and when the oldest of those was: `Err(seconds to wait)` when not.
pub fn may_request(recent: i64, oldest: Option<Millis>, now: Millis) -> Result<(), u64> {
    if recent < REQUESTS_PER_WINDOW {
        return Ok(());
    }
    let window = i64::try_from(WINDOW.as_millis()).unwrap_or(i64::MAX);
    let free_at = oldest.unwrap_or(now).saturating_add(window);
    let wait_ms = u64::try_from(free_at.saturating_sub(now)).unwrap_or(0);
    Err(wait_ms.div_ceil(1000).max(1))
}

/// A test's subject: the digest's, marked.
pub fn subject(subject: &str) -> String {
    format!("{SUBJECT_PREFIX}{subject}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_to_five_valid_addresses_each_once() {
        let t = TestAddresses::parse_typed("a@x.org, b@x.org  C@X.ORG;c@x.org").expect("valid");
        let got: Vec<&str> = t.addresses().iter().map(EmailAddress::as_str).collect();
        assert_eq!(got, ["a@x.org", "b@x.org", "C@x.org"]);
        let six = TestAddresses::parse(&["a@x.o", "b@x.o", "c@x.o", "d@x.o", "e@x.o", "f@x.o"])
            .expect_err("six");
        assert_eq!(six.field, "addresses");
        assert!(six.message.contains("at most 5"), "{}", six.message);
        assert!(TestAddresses::parse_typed("  ,").is_err());
    }

    #[test]
    fn a_bad_address_is_named() {
        let e = TestAddresses::parse(&["ok@example.com", "not-an-address"]).expect_err("bad");
        assert_eq!(e.field, "addresses");
        assert!(
            e.message.starts_with("\"not-an-address\" is not valid: "),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_few_requests_a_minute() {
        assert_eq!(may_request(0, None, 1_000), Ok(()));
        assert_eq!(may_request(2, Some(0), 1_000), Ok(()));
        assert_eq!(may_request(3, Some(0), 1_000), Err(59));
        assert_eq!(may_request(3, Some(0), 59_999), Err(1));
        assert_eq!(subject("Monday"), "[Test] Monday");
    }
}
