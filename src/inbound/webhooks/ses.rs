//! Amazon SES through SNS: an SNS message (`SubscriptionConfirmation`, `Notification`,
//! `UnsubscribeConfirmation`) signed by SNS with RSA (SignatureVersion 1: SHA1withRSA, 2:
//! SHA256withRSA) over the canonical string AWS documents, under the certificate at
//! `SigningCertURL`. This module checks the URLs, builds the canonical string, verifies
//! with the certificate's key (x509-parser, ring) and turns an SES bounce or complaint into
//! reports; fetching the certificate is the caller's.
//! <https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html>
//! <https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html>

use base64::Engine as _;
use ring::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
};
use serde_json::Value;
use url::Url;

use super::{Refused, address, str_at, text};
use crate::domain::bounce::{Report, ReportKind, is_status};
use crate::domain::clock::Millis;

/// How far a message's `Timestamp` may be from now, either way (AWS suggests an hour).
pub const FRESH_SECS: i64 = 60 * 60;
/// Most recipients one SES event may carry.
const MAX_RECIPIENTS: usize = 100;

/// An SNS message's `Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SubscriptionConfirmation,
    Notification,
    UnsubscribeConfirmation,
}

/// An SNS message, parsed but not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub kind: Kind,
    pub message_id: String,
    pub topic_arn: String,
    pub signing_cert_url: String,
    /// `SubscribeURL` (confirmations only).
    pub subscribe_url: Option<String>,
    message: String,
    subject: Option<String>,
    timestamp: String,
    token: Option<String>,
    signature: String,
    version: String,
}

/// Parses an SNS message; `Malformed` when it is not one.
pub fn parse(body: &[u8]) -> Result<Envelope, Refused> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Refused::Malformed(format!("the body is not JSON: {e}")))?;
    let field = |k: &str| str_at(&v, &[k]).map(str::to_owned);
    let need = |k: &'static str| {
        field(k).ok_or_else(|| Refused::Malformed(format!("the SNS message lacks `{k}`")))
    };
    let kind = match need("Type")?.as_str() {
        "SubscriptionConfirmation" => Kind::SubscriptionConfirmation,
        "Notification" => Kind::Notification,
        "UnsubscribeConfirmation" => Kind::UnsubscribeConfirmation,
        other => {
            return Err(Refused::Malformed(format!(
                "unknown SNS message Type `{}`",
                other.chars().take(40).collect::<String>()
            )));
        }
    };
    let (subscribe_url, token) = if kind == Kind::Notification {
        (None, None)
    } else {
        (Some(need("SubscribeURL")?), Some(need("Token")?))
    };
    let (Some(signature), Some(version), Some(signing_cert_url)) = (
        field("Signature"),
        field("SignatureVersion"),
        field("SigningCertURL"),
    ) else {
        return Err(Refused::Unauthenticated("the SNS message is not signed"));
    };
    Ok(Envelope {
        kind,
        message_id: need("MessageId")?,
        topic_arn: need("TopicArn")?,
        signing_cert_url,
        subscribe_url,
        message: need("Message")?,
        subject: field("Subject"),
        timestamp: need("Timestamp")?,
        token,
        signature,
        version,
    })
}

/// `sns.<region>.amazonaws.com` or `sns.<region>.amazonaws.com.cn`.
fn is_sns_host(host: &str) -> bool {
    let region = host
        .strip_prefix("sns.")
        .and_then(|h| {
            h.strip_suffix(".amazonaws.com")
                .or_else(|| h.strip_suffix(".amazonaws.com.cn"))
        })
        .unwrap_or("");
    !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Where to fetch the signing certificate from: `SigningCertURL` only when it is https on
/// an SNS host with a path ending `.pem`; with `override_base` (tests only) the same file
/// name under that base instead.
pub fn cert_url(signing_cert_url: &str, override_base: Option<&Url>) -> Result<Url, Refused> {
    let url = Url::parse(signing_cert_url)
        .map_err(|_| Refused::Unauthenticated("SigningCertURL is not a URL"))?;
    let ok = url.scheme() == "https"
        && url.host_str().is_some_and(is_sns_host)
        && url.port().is_none()
        && url.username().is_empty()
        && url.query().is_none()
        && url.path().ends_with(".pem");
    if !ok {
        return Err(Refused::Unauthenticated(
            "SigningCertURL is not an https .pem on an sns.<region>.amazonaws.com host",
        ));
    }
    match override_base {
        None => Ok(url),
        Some(base) => base
            .join(url.path().trim_start_matches('/'))
            .map_err(|_| Refused::Unauthenticated("SigningCertURL has no usable path")),
    }
}

/// Whether `SubscribeURL` may be called: https on an SNS host; with `override_base`, on
/// the override's host and port instead.
pub fn subscribe_url(url: &str, override_base: Option<&Url>) -> Result<Url, Refused> {
    let url = Url::parse(url).map_err(|_| Refused::Unauthenticated("SubscribeURL is not a URL"))?;
    let ok = match override_base {
        None => {
            url.scheme() == "https"
                && url.host_str().is_some_and(is_sns_host)
                && url.port().is_none()
        }
        Some(base) => {
            url.host_str() == base.host_str()
                && url.port_or_known_default() == base.port_or_known_default()
        }
    };
    if ok && url.username().is_empty() {
        Ok(url)
    } else {
        Err(Refused::Unauthenticated(
            "SubscribeURL is not https on an sns.<region>.amazonaws.com host",
        ))
    }
}

impl Envelope {
    /// The string SNS signs: `Key\nValue\n` for each signed key, in the documented order.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: &str| {
            out.push_str(k);
            out.push('\n');
            out.push_str(v);
            out.push('\n');
        };
        line("Message", &self.message);
        line("MessageId", &self.message_id);
        match self.kind {
            Kind::Notification => {
                if let Some(s) = &self.subject {
                    line("Subject", s);
                }
            }
            Kind::SubscriptionConfirmation | Kind::UnsubscribeConfirmation => {
                line("SubscribeURL", self.subscribe_url.as_deref().unwrap_or(""));
            }
        }
        line("Timestamp", &self.timestamp);
        if let Some(t) = &self.token {
            line("Token", t);
        }
        line("TopicArn", &self.topic_arn);
        line(
            "Type",
            match self.kind {
                Kind::SubscriptionConfirmation => "SubscriptionConfirmation",
                Kind::Notification => "Notification",
                Kind::UnsubscribeConfirmation => "UnsubscribeConfirmation",
            },
        );
        out
    }

    /// The topic must be one of `allowed`.
    pub fn topic_allowed(&self, allowed: &[String]) -> Result<(), Refused> {
        if allowed.contains(&self.topic_arn) {
            Ok(())
        } else {
            Err(Refused::Unauthenticated(
                "the message is from another SNS topic",
            ))
        }
    }

    /// Verifies the signature with the RSA key of `cert_pem` (the PEM at SigningCertURL).
    pub fn verify(&self, cert_pem: &[u8]) -> Result<(), Refused> {
        let algorithm = match self.version.as_str() {
            "1" => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &RSA_PKCS1_2048_8192_SHA256,
            _ => return Err(Refused::Unauthenticated("unknown SignatureVersion")),
        };
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem)
            .map_err(|_| Refused::Unauthenticated("the signing certificate is not a PEM"))?;
        let cert = pem
            .parse_x509()
            .map_err(|_| Refused::Unauthenticated("the signing certificate does not parse"))?;
        let key = &cert.public_key().subject_public_key.data;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(self.signature.trim())
            .map_err(|_| Refused::Unauthenticated("the signature is not base64"))?;
        UnparsedPublicKey::new(algorithm, key.as_ref())
            .verify(self.canonical().as_bytes(), &sig)
            .map_err(|_| Refused::Unauthenticated("the signature does not verify"))
    }

    /// The timestamp must be within [`FRESH_SECS`] of `now`; gives when the MessageId may
    /// be forgotten (the message could no longer pass this check by then).
    pub fn fresh(&self, now: Millis) -> Result<Millis, Refused> {
        let at = chrono::DateTime::parse_from_rfc3339(&self.timestamp)
            .map_err(|_| Refused::Unauthenticated("the Timestamp is not an ISO 8601 time"))?
            .timestamp_millis();
        if (now - at).abs() > FRESH_SECS * 1000 {
            return Err(Refused::Unauthenticated(
                "the Timestamp is more than an hour away",
            ));
        }
        Ok(at + (FRESH_SECS + 60) * 1000)
    }

    /// A Notification's SES bounce or complaint as reports; anything else (another kind of
    /// event, a message that is not SES's JSON) none.
    pub fn reports(&self, now: Millis) -> Vec<Report> {
        if self.kind != Kind::Notification {
            return Vec::new();
        }
        let Ok(event) = serde_json::from_str::<Value>(&self.message) else {
            return Vec::new();
        };
        reports(&event, now)
    }
}

/// The `Message-ID` among `mail.headers`, when SES was asked to include them.
fn message_id(event: &Value) -> Option<String> {
    event
        .pointer("/mail/headers")?
        .as_array()?
        .iter()
        .find(|h| str_at(h, &["name"]).is_some_and(|n| n.eq_ignore_ascii_case("message-id")))
        .and_then(|h| address(str_at(h, &["value"])))
}

fn reports(event: &Value, now: Millis) -> Vec<Report> {
    let kind = str_at(event, &["notificationType"]).or_else(|| str_at(event, &["eventType"]));
    let base = Report {
        kind: ReportKind::Bounce,
        status: None,
        action: None,
        diagnostic: None,
        recipient: None,
        message_id: message_id(event),
        verp_token: None,
        received_at: now,
        source: "ses".into(),
    };
    let list = |path: &str| -> Vec<Value> {
        event
            .pointer(path)
            .and_then(Value::as_array)
            .map(|a| a.iter().take(MAX_RECIPIENTS).cloned().collect())
            .unwrap_or_default()
    };
    match kind {
        Some("Bounce") => {
            let permanent = str_at(event, &["bounce", "bounceType"]) == Some("Permanent");
            list("/bounce/bouncedRecipients")
                .iter()
                .map(|r| {
                    let given = str_at(r, &["status"]).filter(|s| is_status(s));
                    let status = if permanent {
                        given
                            .filter(|s| *s != "5.0.0" && s.starts_with('5'))
                            .map_or_else(|| "5.1.1".to_owned(), str::to_owned)
                    } else {
                        // Transient and Undetermined: soft, whatever the code says.
                        given
                            .filter(|s| s.starts_with('4') || *s == "5.2.2")
                            .map_or_else(|| "4.0.0".to_owned(), str::to_owned)
                    };
                    Report {
                        status: Some(status),
                        action: text(str_at(r, &["action"])).or(Some("failed".into())),
                        diagnostic: text(str_at(r, &["diagnosticCode"])),
                        recipient: address(str_at(r, &["emailAddress"])),
                        ..base.clone()
                    }
                })
                .collect()
        }
        Some("Complaint") => list("/complaint/complainedRecipients")
            .iter()
            .map(|r| Report {
                kind: ReportKind::Complaint,
                diagnostic: text(str_at(event, &["complaint", "complaintFeedbackType"])),
                recipient: address(str_at(r, &["emailAddress"])),
                ..base.clone()
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::bounce::{BounceKind, classify};

    fn notification(message: &str, subject: Option<&str>) -> Envelope {
        Envelope {
            kind: Kind::Notification,
            message_id: "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324".into(),
            topic_arn: "arn:aws:sns:us-west-2:123456789012:MyTopic".into(),
            signing_cert_url: String::new(),
            subscribe_url: None,
            message: message.into(),
            subject: subject.map(str::to_owned),
            timestamp: "2012-05-02T00:54:06.655Z".into(),
            token: None,
            signature: String::new(),
            version: "1".into(),
        }
    }

    #[test]
    fn the_canonical_string_is_the_documented_keys_in_order() {
        assert_eq!(
            notification("hi", Some("My First Message")).canonical(),
            "Message\nhi\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\nSubject\nMy First \
             Message\nTimestamp\n2012-05-02T00:54:06.655Z\nTopicArn\narn:aws:sns:us-west-2:\
             123456789012:MyTopic\nType\nNotification\n"
        );
        assert!(!notification("hi", None).canonical().contains("Subject"));
        let confirm = Envelope {
            kind: Kind::SubscriptionConfirmation,
            subscribe_url: Some("https://sns.us-west-2.amazonaws.com/?Action=X".into()),
            token: Some("2336412f37".into()),
            ..notification("You have chosen", Some("ignored"))
        };
        assert_eq!(
            confirm.canonical(),
            "Message\nYou have chosen\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
             SubscribeURL\nhttps://sns.us-west-2.amazonaws.com/?Action=X\nTimestamp\n\
             2012-05-02T00:54:06.655Z\nToken\n2336412f37\nTopicArn\narn:aws:sns:us-west-2:\
             123456789012:MyTopic\nType\nSubscriptionConfirmation\n"
        );
    }

    #[test]
    fn certificates_come_only_from_an_sns_host_over_https() {
        let good = "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem";
        assert!(cert_url(good, None).is_ok());
        assert!(cert_url("https://sns.cn-north-1.amazonaws.com.cn/a.pem", None).is_ok());
        for bad in [
            "http://sns.us-west-2.amazonaws.com/a.pem",
            "https://sns.us-west-2.amazonaws.com.evil.example/a.pem",
            "https://evil.example/sns.us-west-2.amazonaws.com/a.pem",
            "https://sns.amazonaws.com/a.pem",
            "https://sns.us-west-2.amazonaws.com/a.txt",
            "https://sns.us.west.amazonaws.com/a.pem",
            "https://sns.us-west-2.amazonaws.com:8443/a.pem",
            "not a url",
        ] {
            assert!(cert_url(bad, None).is_err(), "{bad}");
        }
        let base = Url::parse("http://127.0.0.1:9/certs/").expect("url");
        assert_eq!(
            cert_url(good, Some(&base)).expect("ok").as_str(),
            "http://127.0.0.1:9/certs/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
        );
        assert!(cert_url("https://evil.example/a.pem", Some(&base)).is_err());
        assert!(subscribe_url("https://sns.eu-west-1.amazonaws.com/?Action=C", None).is_ok());
        assert!(subscribe_url("https://evil.example/?Action=C", None).is_err());
        assert!(subscribe_url("http://127.0.0.1:9/?Action=C", Some(&base)).is_ok());
        assert!(subscribe_url("http://127.0.0.1:10/?Action=C", Some(&base)).is_err());
    }

    #[test]
    fn ses_bounces_and_complaints_become_reports_matched_by_the_original_message_id() {
        let sample = |n: &str| {
            std::fs::read_to_string(format!(
                "{}/tests/samples/webhooks/{n}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("sample")
        };
        let bounce = notification(&sample("ses-bounce.json"), None).reports(7);
        assert_eq!(bounce.len(), 1);
        assert_eq!(classify(&bounce[0]), BounceKind::Hard);
        assert_eq!(bounce[0].recipient.as_deref(), Some("jane@example.com"));
        assert_eq!(bounce[0].message_id.as_deref(), Some("custom-message-ID"));
        let transient = sample("ses-bounce.json").replace("Permanent", "Transient");
        let soft = notification(&transient, None).reports(7);
        assert_eq!(classify(&soft[0]), BounceKind::Soft);
        let undetermined = sample("ses-bounce.json").replace("Permanent", "Undetermined");
        assert_eq!(
            classify(&notification(&undetermined, None).reports(7)[0]),
            BounceKind::Soft
        );
        let complaint = notification(&sample("ses-complaint.json"), None).reports(7);
        assert_eq!(complaint.len(), 1);
        assert_eq!(classify(&complaint[0]), BounceKind::Complaint);
        assert_eq!(
            complaint[0].recipient.as_deref(),
            Some("richard@example.com")
        );
        assert_eq!(complaint[0].message_id, None);
        assert!(notification("not json", None).reports(7).is_empty());
        assert!(
            notification(r#"{"notificationType":"Delivery"}"#, None)
                .reports(7)
                .is_empty()
        );
    }

    #[test]
    fn stale_or_unparsable_timestamps_are_refused() {
        let n = notification("x", None);
        let at = 1_335_920_046_655;
        assert!(n.fresh(at).is_ok());
        assert!(n.fresh(at + 3_600_000).is_ok());
        assert!(n.fresh(at + 3_601_000).is_err());
        assert!(n.fresh(at - 3_601_000).is_err());
        let bad = Envelope {
            timestamp: "yesterday".into(),
            ..n
        };
        assert!(bad.fresh(at).is_err());
    }
}
