//! Postmark's bounce and spam-complaint webhooks: one JSON record per call
//! (`RecordType` `Bounce` or `SpamComplaint`), authenticated by the HTTP Basic credentials
//! written into the webhook URL (`https://user:password@news.example.com/webhooks/postmark`).
//! <https://postmarkapp.com/developer/webhooks/bounce-webhook>

use base64::Engine as _;
use serde_json::Value;
use subtle::ConstantTimeEq as _;

use super::{Refused, address, status_in, str_at, text};
use crate::domain::bounce::{Report, ReportKind};
use crate::domain::clock::Millis;

/// Whether an `Authorization` header carries these Basic credentials (compared in constant
/// time: both the user and the password, whatever the first mismatch).
pub fn authorized(header: Option<&str>, user: &str, password: &str) -> Result<(), Refused> {
    let header = header.ok_or(Refused::Unauthenticated("the call carries no credentials"))?;
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
        .ok_or(Refused::Unauthenticated("expected HTTP Basic credentials"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| Refused::Unauthenticated("the Basic credentials are not base64"))?;
    let expected = format!("{user}:{password}");
    if bool::from(decoded.ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(Refused::Unauthenticated("wrong credentials"))
    }
}

/// One record -> a report; `None` for a record that asks nothing of the rules (an
/// auto-responder, a subscription change, a delivery).
pub fn parse(body: &[u8], now: Millis) -> Result<Option<Report>, Refused> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Refused::Malformed(format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(Refused::Malformed("the body is not a JSON object".into()));
    }
    let record_type = str_at(&v, &["RecordType"]);
    let bounce_type = str_at(&v, &["Type"]).unwrap_or("");
    let details = text(str_at(&v, &["Details"]));
    let description = text(str_at(&v, &["Description"]));
    let base = Report {
        kind: ReportKind::Bounce,
        status: None,
        action: Some("failed".into()),
        diagnostic: [details.clone(), description]
            .into_iter()
            .flatten()
            .reduce(|a, b| format!("{a} ({b})")),
        recipient: address(str_at(&v, &["Email"])),
        // Postmark's MessageID is its own, not the Message-ID header: matching goes by
        // the address.
        message_id: None,
        verp_token: None,
        received_at: now,
        source: "postmark".into(),
    };
    if base.recipient.is_none() {
        return Err(Refused::Malformed("the record has no `Email`".into()));
    }
    if record_type == Some("SpamComplaint") || bounce_type == "SpamComplaint" {
        return Ok(Some(Report {
            kind: ReportKind::Complaint,
            action: None,
            ..base
        }));
    }
    if record_type.is_some_and(|t| t != "Bounce") {
        return Ok(None);
    }
    let said = details.as_deref().and_then(status_in);
    // Postmark's type decides the class; the receiver's status, where it gave one, the
    // detail (the rules in `domain::bounce` decide what it means).
    let status = match bounce_type {
        "HardBounce" | "BadEmailAddress" => said
            .filter(|s| s.starts_with('5'))
            .unwrap_or_else(|| "5.1.1".into()),
        "SoftBounce" | "Transient" | "DnsError" => said
            .filter(|s| s.starts_with('4'))
            .unwrap_or_else(|| "4.0.0".into()),
        "Blocked" | "DMARCPolicy" | "SpamNotification" => said
            .filter(|s| s.starts_with("5.7.") || s.starts_with("4.7."))
            .unwrap_or_else(|| "5.7.1".into()),
        _ => return Ok(None),
    };
    Ok(Some(Report {
        status: Some(status),
        ..base
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::bounce::{BounceKind, classify};

    fn basic(s: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    #[test]
    fn only_the_right_basic_credentials_pass() {
        let (u, p) = ("postmark", "a-long-webhook-password");
        assert!(authorized(Some(&basic("postmark:a-long-webhook-password")), u, p).is_ok());
        for wrong in [
            basic("postmark:a-long-webhook-passworD"),
            basic("postmark:"),
            basic("Postmark:a-long-webhook-password"),
            "Bearer a-long-webhook-password".into(),
            "Basic ***".into(),
        ] {
            assert!(authorized(Some(&wrong), u, p).is_err(), "{wrong}");
        }
        assert!(authorized(None, u, p).is_err());
    }

    #[test]
    fn bounce_types_and_complaints_become_what_the_rules_expect() {
        let rec = |t: &str, record: &str, details: &str| {
            format!(
                r#"{{"RecordType": "{record}", "Type": "{t}", "Email": "john@example.com",
                    "Details": "{details}", "MessageID": "883953f4"}}"#
            )
        };
        let kind = |b: String| {
            parse(b.as_bytes(), 0)
                .expect("parses")
                .map(|r| classify(&r))
        };
        assert_eq!(
            kind(rec("HardBounce", "Bounce", "Test bounce details")),
            Some(BounceKind::Hard)
        );
        assert_eq!(
            kind(rec("SoftBounce", "Bounce", "mailbox full")),
            Some(BounceKind::Soft)
        );
        assert_eq!(
            kind(rec(
                "HardBounce",
                "Bounce",
                "smtp;550 5.7.26 unauthenticated"
            )),
            Some(BounceKind::Policy),
            "the receiver's status decides: a DMARC rejection is the sender's problem"
        );
        assert_eq!(kind(rec("Blocked", "Bounce", "")), Some(BounceKind::Policy));
        assert_eq!(
            kind(rec("SpamComplaint", "SpamComplaint", "")),
            Some(BounceKind::Complaint)
        );
        assert_eq!(kind(rec("AutoResponder", "Bounce", "")), None);
        assert_eq!(kind(rec("", "Delivery", "")), None);
    }

    #[test]
    fn malformed_records_are_refused_as_malformed() {
        for b in [&b"nope"[..], b"[1]", br#"{"Type": "HardBounce"}"#] {
            assert!(matches!(parse(b, 0), Err(Refused::Malformed(_))), "{b:?}");
        }
    }
}
