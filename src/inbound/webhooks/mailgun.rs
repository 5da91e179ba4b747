//! Mailgun's webhooks (current, "v3"): a JSON body `{"signature": {timestamp, token,
//! signature}, "event-data": {...}}`, signed with HMAC-SHA256 of `timestamp` followed by
//! `token` under the webhook signing key, the signature in hex. The caller keeps each token
//! once (`service::Inbound::record_signed`); this module checks the MAC and the freshness.
//! <https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks>

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::{Refused, address, status_in, str_at, text};
use crate::domain::bounce::{Report, ReportKind};
use crate::domain::clock::Millis;

/// How far a call's timestamp may be from now, either way.
pub const FRESH_SECS: i64 = 5 * 60;

/// A verified call: its token (to be accepted once) and what it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub token: String,
    /// Until when the token must be remembered: past it, the timestamp is stale anyway.
    pub token_expires_at: Millis,
    /// The bounce or complaint; `None` for an event that is neither (delivered, opened…).
    pub report: Option<Report>,
}

/// Parses and verifies one call; `now` in milliseconds since the epoch.
pub fn verify(body: &[u8], signing_key: &str, now: Millis) -> Result<Call, Refused> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Refused::Malformed(format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(Refused::Malformed("the body is not a JSON object".into()));
    }
    let sig = v
        .get("signature")
        .ok_or(Refused::Unauthenticated("the call carries no signature"))?;
    let (Some(timestamp), Some(token), Some(signature)) = (
        field(sig, "timestamp"),
        str_at(sig, &["token"]),
        str_at(sig, &["signature"]),
    ) else {
        return Err(Refused::Unauthenticated(
            "the signature lacks its timestamp, token or signature",
        ));
    };
    if !mac_matches(signing_key, &timestamp, token, signature) {
        return Err(Refused::Unauthenticated("the signature does not verify"));
    }
    let secs: i64 = timestamp
        .parse()
        .map_err(|_| Refused::Unauthenticated("the timestamp is not a number"))?;
    let now_secs = now.div_euclid(1000);
    if (now_secs - secs).abs() > FRESH_SECS {
        return Err(Refused::Unauthenticated(
            "the timestamp is more than 5 minutes away",
        ));
    }
    if token.is_empty() || token.len() > 200 {
        return Err(Refused::Unauthenticated("the token is empty or too long"));
    }
    let data = v
        .get("event-data")
        .filter(|d| d.is_object())
        .ok_or_else(|| Refused::Malformed("the call has no `event-data` object".into()))?;
    Ok(Call {
        token: token.to_owned(),
        token_expires_at: (secs + FRESH_SECS + 60).saturating_mul(1000),
        report: report(data, now),
    })
}

/// The timestamp as Mailgun sends it: a string (or, in some payloads, a number).
fn field(sig: &Value, key: &str) -> Option<String> {
    match sig.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// HMAC-SHA256(key, timestamp || token) == hex signature, compared in constant time.
fn mac_matches(key: &str, timestamp: &str, token: &str, signature_hex: &str) -> bool {
    let Some(given) = hex(signature_hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.verify_slice(&given).is_ok()
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `failed` (permanent or temporary) and `complained` -> a report; anything else `None`.
fn report(data: &Value, now: Millis) -> Option<Report> {
    let event = str_at(data, &["event"])?;
    let recipient = address(str_at(data, &["recipient"]));
    let message_id = address(str_at(data, &["message", "headers", "message-id"]));
    let base = Report {
        kind: ReportKind::Bounce,
        status: None,
        action: Some("failed".into()),
        diagnostic: None,
        recipient,
        message_id,
        verp_token: None,
        received_at: now,
        source: "mailgun".into(),
    };
    match event {
        "complained" => Some(Report {
            kind: ReportKind::Complaint,
            action: None,
            diagnostic: Some("complained (Mailgun)".into()),
            ..base
        }),
        "failed" => {
            let ds = data.get("delivery-status");
            let message = ds.and_then(|d| text(str_at(d, &["message"])));
            let description = ds.and_then(|d| text(str_at(d, &["description"])));
            let code = ds.and_then(|d| d.get("code")).and_then(Value::as_i64);
            let enhanced = ds.and_then(|d| str_at(d, &["enhanced-code"]));
            let permanent = str_at(data, &["severity"]) != Some("temporary");
            let found = enhanced
                .map(str::to_owned)
                .filter(|s| crate::domain::bounce::is_status(s))
                .or_else(|| message.as_deref().and_then(status_in))
                .or_else(|| description.as_deref().and_then(status_in));
            // Mailgun's severity decides the class; the detail is the receiver's.
            let status = match (found, permanent) {
                (Some(s), true) if s.starts_with('5') => s,
                (Some(s), false) if s.starts_with('4') => s,
                (Some(s), true) => format!("5{}", &s[1..]),
                (Some(s), false) => format!("4{}", &s[1..]),
                (None, true) => "5.0.0".into(),
                (None, false) => "4.0.0".into(),
            };
            let diagnostic = [
                code.map(|c| c.to_string()),
                message,
                description,
                text(str_at(data, &["reason"])).map(|r| format!("(reason: {r})")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
            Some(Report {
                status: Some(status),
                diagnostic: (!diagnostic.is_empty()).then_some(diagnostic),
                ..base
            })
        }
        _ => None,
    }
}

/// Signs a call as Mailgun would: the hex signature of `timestamp` and `token`. For tests.
pub fn sign(key: &str, timestamp: &str, token: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::bounce::{BounceKind, classify};

    const KEY: &str = "key-test-signing-0123456789";
    const NOW: Millis = 1_770_920_772_000;

    fn body(event_data: &str, timestamp: &str, token: &str, signature: &str) -> Vec<u8> {
        format!(
            r#"{{"signature": {{"timestamp": "{timestamp}", "token": "{token}", "signature": "{signature}"}}, "event-data": {event_data}}}"#
        )
        .into_bytes()
    }

    fn signed(event_data: &str) -> Vec<u8> {
        let token = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123";
        body(
            event_data,
            "1770920772",
            token,
            &sign(KEY, "1770920772", token),
        )
    }

    const FAILED: &str = r#"{"event": "failed", "severity": "permanent", "reason": "bounce",
        "recipient": "alice@example.com",
        "message": {"headers": {"message-id": "abc@squeeze.test"}},
        "delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist",
            "description": ""}}"#;

    #[test]
    fn a_signed_permanent_failure_is_a_hard_bounce_of_its_recipient() {
        let call = verify(&signed(FAILED), KEY, NOW).expect("verifies");
        let r = call.report.expect("a report");
        assert_eq!(r.recipient.as_deref(), Some("alice@example.com"));
        assert_eq!(r.message_id.as_deref(), Some("abc@squeeze.test"));
        assert_eq!(r.status.as_deref(), Some("5.1.1"));
        assert_eq!(classify(&r), BounceKind::Hard);
        assert_eq!(r.source, "mailgun");
        assert_eq!(call.token_expires_at, (1_770_920_772 + 360) * 1000);
    }

    #[test]
    fn temporary_failures_are_soft_and_complaints_complaints_and_others_nothing() {
        let temp = FAILED.replace("permanent", "temporary");
        let r = verify(&signed(&temp), KEY, NOW).expect("ok").report;
        assert_eq!(r.map(|r| classify(&r)), Some(BounceKind::Soft));
        let c = verify(
            &signed(r#"{"event": "complained", "recipient": "bob@example.com"}"#),
            KEY,
            NOW,
        )
        .expect("ok")
        .report
        .expect("a report");
        assert_eq!(classify(&c), BounceKind::Complaint);
        let d = verify(&signed(r#"{"event": "delivered"}"#), KEY, NOW).expect("ok");
        assert_eq!(d.report, None);
    }

    #[test]
    fn forged_missing_and_stale_signatures_are_refused() {
        let token = "t0k3n-t0k3n-t0k3n";
        let forged = body(
            FAILED,
            "1770920772",
            token,
            &sign("other-key", "1770920772", token),
        );
        assert!(matches!(
            verify(&forged, KEY, NOW),
            Err(Refused::Unauthenticated(_))
        ));
        let tampered = body(FAILED, "1770920773", token, &sign(KEY, "1770920772", token));
        assert!(matches!(
            verify(&tampered, KEY, NOW),
            Err(Refused::Unauthenticated(_))
        ));
        let unsigned = format!(r#"{{"event-data": {FAILED}}}"#);
        assert!(matches!(
            verify(unsigned.as_bytes(), KEY, NOW),
            Err(Refused::Unauthenticated(_))
        ));
        let not_hex = body(FAILED, "1770920772", token, "zz");
        assert!(matches!(
            verify(&not_hex, KEY, NOW),
            Err(Refused::Unauthenticated(_))
        ));
        assert!(verify(&signed(FAILED), KEY, NOW + 300_000).is_ok());
        assert!(matches!(
            verify(&signed(FAILED), KEY, NOW + 301_000),
            Err(Refused::Unauthenticated(_))
        ));
        assert!(matches!(
            verify(&signed(FAILED), KEY, NOW - 301_000),
            Err(Refused::Unauthenticated(_))
        ));
    }

    #[test]
    fn malformed_bodies_are_malformed_not_a_panic() {
        for b in [&b"not json"[..], b"[]", b"{\"signature\": 1"] {
            assert!(
                matches!(verify(b, KEY, NOW), Err(Refused::Malformed(_))),
                "{b:?}"
            );
        }
        let no_data = body("1", "1770920772", "tok", &sign(KEY, "1770920772", "tok"));
        assert!(matches!(
            verify(&no_data, KEY, NOW),
            Err(Refused::Malformed(_))
        ));
    }
}
