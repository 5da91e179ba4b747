//! One inbound message -> a report: RFC 3464 delivery status notifications, RFC 5965 ARF
//! feedback reports, and the common non-standard bounce texts that carry an enhanced status
//! code. MIME is mail-parser's; the report fields are read here. Nothing in a message can
//! make this panic, loop or allocate past a bound: the caller caps the input, mail-parser
//! never panics (its promise), nested messages are followed to a fixed depth, and each scan
//! here is linear with its own cap.

use mail_parser::{Message, MessageParser, MimeHeaders as _, PartType};

use crate::domain::bounce::{self, Report, ReportKind};
use crate::domain::clock::Millis;

/// How deep nested messages (message/rfc822 inside a report inside …) are followed.
const MAX_DEPTH: usize = 4;
/// How much of a text part the non-standard scan reads.
const MAX_SCAN: usize = 64 * 1024;
/// The longest field value kept (a diagnostic, an address).
const MAX_FIELD: usize = 1000;

/// What a message says, as far as Squeeze cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The report, with `verp_token` unset (the caller knows the bounce address); `None`:
    /// not a bounce or a complaint.
    pub report: Option<Report>,
    /// The addresses the message was sent to (To, Delivered-To, X-Original-To,
    /// Envelope-To): where a VERP token is.
    pub addressed_to: Vec<String>,
}

/// Parses one message. `source` names where it came from (`inbound`).
pub fn parse(raw: &[u8], source: &str, now: Millis) -> Parsed {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Parsed {
            report: None,
            addressed_to: Vec::new(),
        };
    };
    let addressed_to = addressed_to(&message);
    let mut found = Found::default();
    walk(&message, 0, &mut found);
    if found.kind.is_none() {
        scan_text(&message, &mut found);
    }
    let report = found.kind.map(|kind| Report {
        kind,
        status: found.status.clone(),
        action: found.action.clone(),
        diagnostic: found.diagnostic.clone(),
        recipient: found.recipient.clone(),
        message_id: found.message_id.clone(),
        verp_token: None,
        received_at: now,
        source: source.to_owned(),
    });
    Parsed {
        report,
        addressed_to,
    }
}

#[derive(Default)]
struct Found {
    kind: Option<ReportKind>,
    status: Option<String>,
    action: Option<String>,
    diagnostic: Option<String>,
    recipient: Option<String>,
    message_id: Option<String>,
    /// The returned message's To, used when no report field names the recipient.
    returned_to: Option<String>,
}

fn addressed_to(message: &Message<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for h in message.headers() {
        let name = h.name();
        let wanted = ["To", "Delivered-To", "X-Original-To", "Envelope-To", "Cc"]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name));
        if !wanted {
            continue;
        }
        if let Some(addr) = h.value().as_address() {
            out.extend(addr.iter().filter_map(|a| a.address()).map(cap));
        } else if let Some(t) = h.value().as_text() {
            out.extend(t.split(',').map(|a| cap(strip_angle(a))));
        }
        if out.len() > 20 {
            break;
        }
    }
    out
}

fn walk(message: &Message<'_>, depth: usize, found: &mut Found) {
    if depth > MAX_DEPTH {
        return;
    }
    for part in &message.parts {
        let (ctype, subtype) = match part.content_type() {
            Some(ct) => (
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or("").to_ascii_lowercase(),
            ),
            None => (String::new(), String::new()),
        };
        match (ctype.as_str(), subtype.as_str()) {
            ("message" | "text", "delivery-status" | "global-delivery-status") => {
                delivery_status(part.contents(), found);
            }
            ("message", "feedback-report") => feedback_report(part.contents(), found),
            ("text", "rfc822-headers" | "global-headers") => {
                if let Some(headers) = MessageParser::default().parse_headers(part.contents()) {
                    returned(&headers, found);
                }
            }
            _ => {}
        }
        if let PartType::Message(inner) = &part.body {
            // The returned message (or, in ARF, the complained-about one).
            if found.kind.is_some() && found.message_id.is_none() {
                returned(inner, found);
            }
            if found.kind.is_none() {
                walk(inner, depth + 1, found);
            }
        }
    }
    if found.recipient.is_none() {
        found.recipient = found.returned_to.clone();
    }
}

/// The headers of the returned message: its Message-ID and To.
fn returned(message: &Message<'_>, found: &mut Found) {
    if found.message_id.is_none() {
        found.message_id = message.message_id().map(cap);
    }
    if found.returned_to.is_none() {
        found.returned_to = message
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(cap);
    }
}

/// `Name: value` fields in blocks separated by blank lines, folded lines unfolded.
fn field_blocks(body: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_SCAN)]);
    let mut blocks = vec![Vec::<(String, String)>::new()];
    for line in text.lines() {
        let Some(block) = blocks.last_mut() else {
            break;
        };
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(Vec::new());
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = block.last_mut()
                && value.len() < MAX_FIELD
            {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            block.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        if blocks.len() > 100 {
            break;
        }
    }
    blocks
}

fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `rfc822; someone@example.com` -> `someone@example.com`; `smtp; 550 …` -> `550 …`.
fn after_type(value: &str) -> &str {
    value.split_once(';').map_or(value, |(_, v)| v).trim()
}

/// RFC 3464: the per-message block, then one block per recipient. The first recipient that
/// failed (else the first with a status) is the one reported.
fn delivery_status(body: &[u8], found: &mut Found) {
    let blocks = field_blocks(body);
    let recipients: Vec<&Vec<(String, String)>> = blocks
        .iter()
        .filter(|b| field(b, "final-recipient").is_some() || field(b, "status").is_some())
        .collect();
    let chosen = recipients
        .iter()
        .find(|b| field(b, "action").is_some_and(|a| a.eq_ignore_ascii_case("failed")))
        .or_else(|| recipients.first());
    let Some(block) = chosen else {
        return;
    };
    found.kind = Some(ReportKind::Bounce);
    found.action = field(block, "action").map(|a| a.trim().to_ascii_lowercase());
    found.status = field(block, "status")
        .and_then(|s| s.split_whitespace().next())
        .filter(|s| bounce::is_status(s))
        .map(str::to_owned);
    found.diagnostic = field(block, "diagnostic-code").map(|d| cap(after_type(d)));
    found.recipient = field(block, "final-recipient")
        .or_else(|| field(block, "original-recipient"))
        .map(|r| cap(strip_angle(after_type(r))));
    if found.status.is_none() {
        // Some relays write only the diagnostic: its enhanced code is the status.
        found.status = found.diagnostic.as_deref().and_then(find_status);
    }
}

/// RFC 5965: `Feedback-Type: abuse` (or fraud, virus, other) is a complaint; `not-spam` and
/// `auth-failure` reports are not about the subscriber.
fn feedback_report(body: &[u8], found: &mut Found) {
    let blocks = field_blocks(body);
    let fields: Vec<(String, String)> = blocks.into_iter().flatten().collect();
    let Some(feedback_type) = field(&fields, "feedback-type").map(str::to_ascii_lowercase) else {
        return;
    };
    if matches!(feedback_type.as_str(), "not-spam" | "auth-failure") {
        return;
    }
    found.kind = Some(ReportKind::Complaint);
    found.diagnostic = Some(cap(&format!("feedback-type {feedback_type}")));
    found.recipient = field(&fields, "original-rcpt-to")
        .or_else(|| field(&fields, "removal-recipient"))
        .map(|r| cap(strip_angle(r)));
}

/// A bounce without a report part: the text says what happened with an enhanced status
/// code somewhere (qmail, old Exchange, Yahoo, many others).
fn scan_text(message: &Message<'_>, found: &mut Found) {
    if !looks_like_bounce(message) {
        return;
    }
    for part in message.text_bodies() {
        let Some(text) = part.text_contents() else {
            continue;
        };
        let text = &text[..floor_char(text, MAX_SCAN)];
        for line in text.lines() {
            if let Some(status) = find_status(line) {
                found.kind = Some(ReportKind::Bounce);
                found.status = Some(status);
                found.diagnostic = Some(cap(line.trim()));
                found.recipient = find_address(line).or_else(|| first_address(text));
                break;
            }
        }
        if found.kind.is_some() {
            break;
        }
    }
    // The returned message, attached or quoted.
    for part in &message.parts {
        if let PartType::Message(inner) = &part.body {
            returned(inner, found);
            break;
        }
    }
    if found.recipient.is_none() {
        found.recipient = found.returned_to.clone();
    }
}

/// From a mailer daemon or postmaster, or a subject that says the mail did not arrive.
fn looks_like_bounce(message: &Message<'_>) -> bool {
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or("")
        .to_ascii_lowercase();
    let subject = message.subject().unwrap_or("").to_ascii_lowercase();
    from.starts_with("mailer-daemon")
        || from.starts_with("postmaster")
        || from.starts_with("mail-daemon")
        || [
            "undeliver",
            "delivery fail",
            "failure notice",
            "returned mail",
            "delivery status",
            "not delivered",
            "could not be delivered",
        ]
        .iter()
        .any(|w| subject.contains(w))
}

/// The first enhanced status code (`5.1.1`, `4.2.2`) standing alone in `text`.
pub fn find_status(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|w| w.trim_end_matches('.'))
        .find(|w| bounce::is_status(w))
        .map(str::to_owned)
}

/// The first `something@domain` in `text`.
fn find_address(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || "<>()[]\"',;:".contains(c))
        .map(|w| w.trim_end_matches('.'))
        .find(|w| {
            w.len() <= 254
                && w.rsplit_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        })
        .map(str::to_owned)
}

fn first_address(text: &str) -> Option<String> {
    text.lines().take(200).find_map(find_address)
}

fn strip_angle(s: &str) -> &str {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
}

fn floor_char(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0)
}

/// A value no longer than `MAX_FIELD`, on one line.
fn cap(s: &str) -> String {
    let s = &s[..floor_char(s, MAX_FIELD)];
    s.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_code_is_found_only_standing_alone() {
        assert_eq!(
            find_status("550 5.1.1 user unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            find_status("#5.2.2 mailbox full.").as_deref(),
            Some("5.2.2")
        );
        assert_eq!(find_status("version 15.1.2 of something"), None);
        assert_eq!(find_status("192.168.5.1.1"), None);
        assert_eq!(find_status("no code"), None);
    }

    #[test]
    fn a_minimal_dsn_gives_its_fields() {
        let raw = b"From: MAILER-DAEMON@example.net\r\n\
To: bounces+abc@bounce.example.com\r\n\
Subject: Undelivered Mail\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\
\r\n\
--B\r\n\
Content-Type: text/plain\r\n\
\r\n\
It failed.\r\n\
--B\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.net\r\n\
\r\n\
Final-Recipient: rfc822; Gone@Example.org\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\
\r\n\
--B\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
Message-ID: <d-1@example.com>\r\n\
To: gone@example.org\r\n\
\r\n\
--B--\r\n";
        let p = parse(raw, "inbound", 7);
        let r = p.report.expect("a report");
        assert_eq!(r.kind, ReportKind::Bounce);
        assert_eq!(r.status.as_deref(), Some("5.1.1"));
        assert_eq!(r.action.as_deref(), Some("failed"));
        assert_eq!(r.recipient.as_deref(), Some("Gone@Example.org"));
        assert_eq!(r.message_id.as_deref(), Some("d-1@example.com"));
        assert_eq!(r.diagnostic.as_deref(), Some("550 5.1.1 no such user"));
        assert_eq!(p.addressed_to, ["bounces+abc@bounce.example.com"]);
    }
}
