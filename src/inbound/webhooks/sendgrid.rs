//! SendGrid's signed Event Webhook: a JSON array of events, signed with ECDSA P-256 over
//! SHA-256 of the `X-Twilio-Email-Event-Webhook-Timestamp` header followed by the raw body;
//! the base64 DER signature in `X-Twilio-Email-Event-Webhook-Signature`, the public key the
//! base64 DER SubjectPublicKeyInfo SendGrid shows. Verified with ring.
//! <https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features>

use base64::Engine as _;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{Refused, address, str_at, text};
use crate::domain::bounce::{Report, ReportKind, is_status};
use crate::domain::clock::Millis;

/// How far a call's timestamp may be from now, either way.
pub const FRESH_SECS: i64 = 5 * 60;
/// Most events one call may carry.
const MAX_EVENTS: usize = 1000;

/// The DER header of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, a BIT
/// STRING of 66 bytes): what precedes the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// SendGrid's verification key: the uncompressed P-256 point.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(Vec<u8>);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublicKey(P-256)")
    }
}

impl PublicKey {
    /// From the base64 DER SPKI SendGrid shows (the PEM's body, with or without its
    /// armour and line breaks). `Err` says what is wrong, in a phrase.
    pub fn parse(s: &str) -> Result<Self, String> {
        let b64: String = s
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "expected the base64 public key SendGrid shows".to_owned())?;
        match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) if point.len() == 65 && point[0] == 0x04 => Ok(Self(point.to_vec())),
            _ => Err("expected an ECDSA P-256 public key (SubjectPublicKeyInfo, DER)".into()),
        }
    }
}

/// A verified call: a token for "this call, once" and its reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// SHA-256 of what was signed (ECDSA signatures are malleable; the signed bytes are not).
    pub token: String,
    pub token_expires_at: Millis,
    pub reports: Vec<Report>,
}

/// Verifies and parses one call; `now` in milliseconds since the epoch.
pub fn verify(
    key: &PublicKey,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: Millis,
) -> Result<Call, Refused> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return Err(Refused::Unauthenticated(
            "the call lacks its signature or timestamp header",
        ));
    };
    let sig = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| Refused::Unauthenticated("the signature is not base64"))?;
    let timestamp = timestamp.trim();
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &key.0)
        .verify(&signed, &sig)
        .map_err(|_| Refused::Unauthenticated("the signature does not verify"))?;
    let secs: i64 = timestamp
        .parse()
        .map_err(|_| Refused::Unauthenticated("the timestamp is not a number"))?;
    if (now.div_euclid(1000) - secs).abs() > FRESH_SECS {
        return Err(Refused::Unauthenticated(
            "the timestamp is more than 5 minutes away",
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Refused::Malformed(format!("the body is not JSON: {e}")))?;
    let events = v
        .as_array()
        .ok_or_else(|| Refused::Malformed("the body is not a JSON array of events".into()))?;
    if events.len() > MAX_EVENTS {
        return Err(Refused::Malformed(format!(
            "more than {MAX_EVENTS} events in one call"
        )));
    }
    let token = Sha256::digest(&signed)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Call {
        token,
        token_expires_at: (secs + FRESH_SECS + 60).saturating_mul(1000),
        reports: events.iter().filter_map(|e| report(e, now)).collect(),
    })
}

/// `bounce`, `dropped` (of a bounced or invalid address, or one that complained),
/// `deferred` and `spamreport` -> a report; anything else `None`.
fn report(e: &Value, now: Millis) -> Option<Report> {
    let event = str_at(e, &["event"])?;
    let reason = text(str_at(e, &["reason"]));
    let response = text(str_at(e, &["response"]));
    let given = str_at(e, &["status"]).filter(|s| is_status(s));
    let base = Report {
        kind: ReportKind::Bounce,
        status: None,
        action: Some("failed".into()),
        diagnostic: reason.clone().or(response),
        recipient: address(str_at(e, &["email"])),
        message_id: address(str_at(e, &["smtp-id"])),
        verp_token: None,
        received_at: now,
        source: "sendgrid".into(),
    };
    let status = match event {
        "spamreport" => {
            return Some(Report {
                kind: ReportKind::Complaint,
                action: None,
                ..base
            });
        }
        // SendGrid's `blocked` bounces are the receiver refusing the sender; its own
        // classification is in `type` (`bounce` or `blocked`).
        "bounce" if str_at(e, &["type"]) == Some("blocked") => given
            .filter(|s| s.starts_with("5.7.") || s.starts_with("4.7."))
            .map_or_else(|| "5.7.1".to_owned(), str::to_owned),
        // SendGrid's `5.0.0` says only "permanent"; a bounce event is of the address.
        "bounce" => given
            .filter(|s| *s != "5.0.0" && s.starts_with('5'))
            .map_or_else(|| "5.1.1".to_owned(), str::to_owned),
        "dropped" => match reason.as_deref() {
            Some("Bounced Address" | "Invalid") => "5.1.1".to_owned(),
            Some("Spam Reporting Address") => {
                return Some(Report {
                    kind: ReportKind::Complaint,
                    action: None,
                    ..base
                });
            }
            _ => return None,
        },
        "deferred" => given
            .filter(|s| s.starts_with('4'))
            .map_or_else(|| "4.0.0".to_owned(), str::to_owned),
        _ => return None,
    };
    Some(Report {
        status: Some(status),
        ..base
    })
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};

    use super::*;
    use crate::domain::bounce::{BounceKind, classify};

    const NOW: Millis = 1_513_299_569_000;

    fn keys() -> (EcdsaKeyPair, PublicKey, SystemRandom) {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        let shown = base64::engine::general_purpose::STANDARD.encode(spki);
        let key = PublicKey::parse(&shown).expect("parses");
        (pair, key, rng)
    }

    fn sign(pair: &EcdsaKeyPair, rng: &SystemRandom, ts: &str, body: &str) -> String {
        let sig = pair
            .sign(rng, format!("{ts}{body}").as_bytes())
            .expect("sign");
        base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
    }

    const EVENTS: &str = r#"[
        {"email":"a@example.com","timestamp":1513299569,"smtp-id":"<id-1@squeeze.test>",
         "event":"bounce","reason":"500 unknown recipient","status":"5.0.0"},
        {"email":"b@example.com","event":"dropped","reason":"Bounced Address","status":"5.0.0"},
        {"email":"c@example.com","event":"deferred","response":"400 try again later"},
        {"email":"d@example.com","event":"spamreport"},
        {"email":"e@example.com","event":"bounce","type":"blocked","status":"5.7.1"},
        {"email":"f@example.com","event":"delivered"},
        {"email":"g@example.com","event":"dropped","reason":"Unsubscribed Address"}
    ]"#;

    #[test]
    fn a_signed_call_becomes_one_report_per_bounce_or_complaint() {
        let (pair, key, rng) = keys();
        let ts = "1513299569";
        let sig = sign(&pair, &rng, ts, EVENTS);
        let call = verify(&key, Some(&sig), Some(ts), EVENTS.as_bytes(), NOW).expect("ok");
        let kinds: Vec<_> = call
            .reports
            .iter()
            .map(|r| (r.recipient.clone().unwrap_or_default(), classify(r)))
            .collect();
        let expect = |e: &str, k| (e.to_owned(), k);
        assert_eq!(
            kinds,
            [
                expect("a@example.com", BounceKind::Hard),
                expect("b@example.com", BounceKind::Hard),
                expect("c@example.com", BounceKind::Soft),
                expect("d@example.com", BounceKind::Complaint),
                expect("e@example.com", BounceKind::Policy),
            ]
        );
        assert_eq!(
            call.reports[0].message_id.as_deref(),
            Some("id-1@squeeze.test")
        );
        // The same signed bytes, the same token; other bytes, another.
        let again = verify(&key, Some(&sig), Some(ts), EVENTS.as_bytes(), NOW).expect("ok");
        assert_eq!(again.token, call.token);
    }

    #[test]
    fn forged_unsigned_tampered_and_stale_calls_are_refused() {
        let (pair, key, rng) = keys();
        let (_, other_key, _) = keys();
        let ts = "1513299569";
        let sig = sign(&pair, &rng, ts, EVENTS);
        let refused = |r: Result<Call, Refused>| matches!(r, Err(Refused::Unauthenticated(_)));
        assert!(refused(verify(
            &other_key,
            Some(&sig),
            Some(ts),
            EVENTS.as_bytes(),
            NOW
        )));
        assert!(refused(verify(
            &key,
            None,
            Some(ts),
            EVENTS.as_bytes(),
            NOW
        )));
        assert!(refused(verify(
            &key,
            Some(&sig),
            None,
            EVENTS.as_bytes(),
            NOW
        )));
        assert!(refused(verify(
            &key,
            Some(&sig),
            Some("1513299570"),
            EVENTS.as_bytes(),
            NOW
        )));
        let tampered = EVENTS.replace("spamreport", "delivered");
        assert!(refused(verify(
            &key,
            Some(&sig),
            Some(ts),
            tampered.as_bytes(),
            NOW
        )));
        assert!(refused(verify(
            &key,
            Some("%%%"),
            Some(ts),
            EVENTS.as_bytes(),
            NOW
        )));
        assert!(refused(verify(
            &key,
            Some(&sig),
            Some(ts),
            EVENTS.as_bytes(),
            NOW + 301_000
        )));
        // Signed but not an array of events: malformed.
        let sig = sign(&pair, &rng, ts, "{}");
        assert!(matches!(
            verify(&key, Some(&sig), Some(ts), b"{}", NOW),
            Err(Refused::Malformed(_))
        ));
    }

    #[test]
    fn only_a_p256_spki_is_a_key() {
        assert!(PublicKey::parse("not base64!").is_err());
        assert!(PublicKey::parse("AAAA").is_err());
        let (_, key, _) = keys();
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&key.0);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(spki)
        );
        assert_eq!(PublicKey::parse(&pem), Ok(key));
    }
}
