//! The message: MIME building, the Message-ID, and the choice between 7bit, 8bit and
//! lettre's encodings for each body part (the header lines: header.rs).

use std::borrow::Cow;
use std::fmt::Write as _;

use lettre::Address;
use lettre::address::Envelope;
use lettre::message::header::{self, ContentTransferEncoding, Headers};
use lettre::message::{Body, Mailbox};

use super::header::{push_header, push_mailbox_header, push_subject};

/// Headers that make a message a list message (RFC 2369, RFC 8058).
#[derive(Debug, Clone)]
pub struct ListHeaders {
    pub list_id: String,
    pub unsubscribe_url: String,
    pub unsubscribe_mailto: Option<String>,
    /// Gmail's feedback-loop header (digests only), inside the DKIM signature.
    pub feedback_id: Option<String>,
}

/// One message for one recipient, ready to be turned into bytes.
#[derive(Debug)]
pub struct Letter<'a> {
    pub delivery_id: &'a str,
    pub to_email: &'a str,
    pub to_name: Option<&'a str>,
    pub content: &'a Content,
    pub list: Option<&'a ListHeaders>,
    /// The envelope sender (VERP: `bounces+<token>@bounce.example.com`); `None`: the From
    /// address, as without a bounce address.
    pub return_path: Option<&'a str>,
}

/// What a message says: its subject and its two alternative bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub subject: String,
    pub text: PartBody,
    pub html: PartBody,
}

/// A body part: text still to be encoded, or text already fit to go as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartBody {
    Text(String),
    /// ASCII with CRLF line ends, no line over 998 octets, no NUL: valid `7bit` (RFC 2045).
    SevenBit(Vec<u8>),
    /// UTF-8 otherwise fit for `7bit`: valid `8bit` (RFC 2045), for a relay that offers
    /// 8BITMIME (RFC 6152); encoded for one that does not.
    EightBit(String),
}

impl PartBody {
    /// The text a reader sees (line ends as `\n`), whichever form the part is in.
    pub fn to_text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::SevenBit(b) => String::from_utf8_lossy(b).replace("\r\n", "\n"),
            Self::EightBit(t) => t.replace("\r\n", "\n"),
        }
    }
}

/// The longest line SMTP allows, without its CRLF (RFC 5321, 4.5.3.1.6).
pub const MAX_LINE: usize = 998;

/// Whether `text` can go as `7bit` once its line ends are CRLF.
pub fn fits_seven_bit(text: &str) -> bool {
    text.is_ascii() && fits_eight_bit(text)
}

/// Whether `text` can go as `8bit` once its line ends are CRLF: no NUL, no CR of its own, no
/// line over 998 octets.
pub fn fits_eight_bit(text: &str) -> bool {
    !text.contains(['\0', '\r']) && text.split('\n').all(|line| line.len() <= MAX_LINE)
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("recipient address {0:?} is not valid for SMTP")]
    Recipient(String),
    #[error("return path {0:?} is not valid for SMTP")]
    ReturnPath(String),
    #[error("cannot build the message: {0}")]
    Message(#[from] lettre::error::Error),
}

/// The Message-ID of a delivery: derived from its id, so a copy re-sent after a crash carries
/// the same Message-ID and receivers can tell it is the same message.
pub fn message_id(delivery_id: &str, from: &Mailbox) -> String {
    format!("<{delivery_id}@{}>", from.email.domain())
}

/// A multipart/alternative message with From, To, Subject, Date, Message-ID and, for list
/// mail, List-Id and one-click List-Unsubscribe headers.
///
/// lettre encodes the headers (RFC 2047, folding); the multipart body is written here, so a
/// body that is already fit for the wire is copied once instead of re-checked, re-encoded
/// and copied several times per email (the largest cost of building a digest email).
/// `eight_bit`: the relay takes 8-bit content (8BITMIME), so text that is not ASCII goes as
/// it is instead of quoted-printable or base64.
pub fn build(
    from: &Mailbox,
    letter: &Letter<'_>,
    eight_bit: bool,
) -> Result<(Envelope, Vec<u8>), BuildError> {
    let to_addr: Address = letter
        .to_email
        .parse()
        .map_err(|_| BuildError::Recipient(letter.to_email.to_owned()))?;
    let sender = match letter.return_path {
        Some(path) => path
            .parse::<Address>()
            .map_err(|_| BuildError::ReturnPath(path.to_owned()))?,
        None => from.email.clone(),
    };
    let envelope = Envelope::new(Some(sender), vec![to_addr.clone()])?;
    // A name with a control character cannot reach here (SubscriberName), but never let one
    // become a header: drop it rather than fail the message.
    let to_name = letter
        .to_name
        .filter(|n| !n.chars().any(char::is_control))
        .map(str::to_owned);
    let boundary: String = {
        use rand::Rng as _;
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(40)
            .map(char::from)
            .collect()
    };
    let mut head = String::with_capacity(1024);
    push_mailbox_header(&mut head, "From", from);
    push_mailbox_header(&mut head, "To", &Mailbox::new(to_name, to_addr));
    push_subject(&mut head, &letter.content.subject);
    push_header(
        &mut head,
        "Message-ID",
        &message_id(letter.delivery_id, from),
    );
    let mut date = Headers::new();
    date.set(header::Date::now());
    // Writing to a String cannot fail.
    let _ = write!(head, "{date}");
    if let Some(list) = letter.list {
        push_header(&mut head, "List-Id", &list.list_id);
        let unsubscribe = match &list.unsubscribe_mailto {
            Some(m) => format!("<{}>, <{m}>", list.unsubscribe_url),
            None => format!("<{}>", list.unsubscribe_url),
        };
        push_header(&mut head, "List-Unsubscribe", &unsubscribe);
        push_header(
            &mut head,
            "List-Unsubscribe-Post",
            "List-Unsubscribe=One-Click",
        );
        if let Some(feedback_id) = &list.feedback_id {
            push_header(&mut head, "Feedback-ID", feedback_id);
        }
    }
    push_header(&mut head, "MIME-Version", "1.0");
    push_header(
        &mut head,
        "Content-Type",
        &format!("multipart/alternative; boundary=\"{boundary}\""),
    );

    let text = wire_body(&letter.content.text, eight_bit);
    let html = wire_body(&letter.content.html, eight_bit);
    let mut out = Vec::with_capacity(1024 + text.1.len() + html.1.len());
    out.extend_from_slice(head.as_bytes());
    for (kind, (encoding, bytes)) in [("plain", text), ("html", html)] {
        out.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: text/{kind}; charset=utf-8\r\n\
                 Content-Transfer-Encoding: {encoding}\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok((envelope, out))
}

/// A body part's transfer encoding and encoded bytes. Text whose lines fit SMTP's limit goes
/// as it is: labelled `7bit` when ASCII, `8bit` when not and the relay takes it (lettre would
/// quoted-printable-encode any line over 76 characters, and any text that is not ASCII: for
/// every email, the largest cost of building one). Anything else gets lettre's choice
/// (quoted-printable or base64), which every relay accepts.
fn wire_body(part: &PartBody, eight_bit: bool) -> (ContentTransferEncoding, Cow<'_, [u8]>) {
    let encoded = |text: String| {
        let body = Body::new(text);
        (body.encoding(), Cow::Owned(body.into_vec()))
    };
    match part {
        PartBody::SevenBit(b) => (ContentTransferEncoding::SevenBit, Cow::Borrowed(b)),
        PartBody::EightBit(t) if eight_bit => (
            ContentTransferEncoding::EightBit,
            Cow::Borrowed(t.as_bytes()),
        ),
        PartBody::EightBit(t) => encoded(t.replace("\r\n", "\n")),
        PartBody::Text(t) if fits_seven_bit(t) || (eight_bit && fits_eight_bit(t)) => {
            let encoding = if t.is_ascii() {
                ContentTransferEncoding::SevenBit
            } else {
                ContentTransferEncoding::EightBit
            };
            (encoding, Cow::Owned(t.replace('\n', "\r\n").into_bytes()))
        }
        PartBody::Text(t) => encoded(t.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> Content {
        Content {
            subject: "Héllo digest".into(),
            html: PartBody::Text("<p>hi</p>".into()),
            text: PartBody::Text("hi".into()),
        }
    }

    #[test]
    fn bodies_go_as_they_are_when_the_relay_allows_and_are_encoded_otherwise() {
        let long = format!("<p>{}</p>\nnext line\n", "word ".repeat(60));
        for eight_bit in [false, true] {
            let part = PartBody::Text(long.clone());
            let (encoding, bytes) = wire_body(&part, eight_bit);
            assert_eq!(encoding, ContentTransferEncoding::SevenBit);
            assert_eq!(&bytes[..], long.replace('\n', "\r\n").as_bytes());
            let ready = PartBody::SevenBit(b"as it is\r\n".to_vec());
            assert_eq!(&wire_body(&ready, eight_bit).1[..], b"as it is\r\n");
        }
        let encoded = |part: PartBody, eight_bit: bool| {
            matches!(
                wire_body(&part, eight_bit).0,
                ContentTransferEncoding::QuotedPrintable | ContentTransferEncoding::Base64
            )
        };
        let text = |t: &str| PartBody::Text(t.to_owned());
        assert!(encoded(text("Zoë\n"), false), "non-ASCII, no 8BITMIME");
        assert!(
            encoded(PartBody::EightBit("Zoë\r\n".into()), false),
            "prepared 8bit, no 8BITMIME"
        );
        for eight_bit in [false, true] {
            assert!(encoded(text(&"x".repeat(1200)), eight_bit), "overlong line");
            assert!(encoded(text("ü\0\n"), eight_bit), "NUL");
        }
        let zoe = text("Zoë\n");
        let (encoding, bytes) = wire_body(&zoe, true);
        assert_eq!(
            (encoding, &bytes[..]),
            (ContentTransferEncoding::EightBit, "Zoë\r\n".as_bytes())
        );
        let prepared = PartBody::EightBit("Zoë\r\n".into());
        let (encoding, bytes) = wire_body(&prepared, true);
        assert_eq!(
            (encoding, &bytes[..]),
            (ContentTransferEncoding::EightBit, "Zoë\r\n".as_bytes())
        );
    }

    #[test]
    fn a_message_parses_back_to_what_was_written() {
        let from: Mailbox = "News <news@example.com>".parse().expect("mailbox");
        let content = Content {
            subject:
                "Zoë's digest: ünïcode and a long subject line that has to be folded somewhere"
                    .into(),
            text: PartBody::Text("Hello Zoë\nline two\n".into()),
            html: PartBody::EightBit("<p>ready — “set”</p>\r\n".into()),
        };
        let letter = Letter {
            delivery_id: "0190-abc",
            to_email: "zoe@example.org",
            to_name: Some("Zoë Ünal"),
            content: &content,
            list: None,
            return_path: None,
        };
        for eight_bit in [false, true] {
            let (_, bytes) = build(&from, &letter, eight_bit).expect("builds");
            assert_eq!(
                !bytes.is_ascii(),
                eight_bit,
                "8-bit text only where the relay takes it"
            );
            let parsed = mailparse::parse_mail(&bytes).expect("parses");
            let header = |name: &str| {
                parsed
                    .headers
                    .iter()
                    .find(|h| h.get_key().eq_ignore_ascii_case(name))
                    .map(|h| h.get_value())
                    .unwrap_or_default()
            };
            assert_eq!(header("Subject"), content.subject);
            assert!(header("To").contains("Zoë Ünal"), "{}", header("To"));
            assert_eq!(parsed.subparts.len(), 2);
            assert_eq!(
                parsed.subparts[0].get_body().expect("text"),
                "Hello Zoë\r\nline two\r\n"
            );
            assert_eq!(parsed.subparts[0].ctype.mimetype, "text/plain");
            assert_eq!(
                parsed.subparts[1].get_body().expect("html"),
                "<p>ready — “set”</p>\r\n"
            );
            assert_eq!(parsed.subparts[1].ctype.mimetype, "text/html");
        }
    }

    #[test]
    fn builds_a_list_message_with_the_contract_headers() {
        let from: Mailbox = "News <news@example.com>".parse().expect("mailbox");
        let list = ListHeaders {
            list_id: "News <news.example.com>".into(),
            unsubscribe_url: "https://example.com/unsubscribe?token=abc".into(),
            unsubscribe_mailto: Some("mailto:unsub@example.com".into()),
            feedback_id: Some("d1:news.example.com:digest:example.com".into()),
        };
        let c = content();
        let letter = Letter {
            delivery_id: "0190-abc",
            to_email: "ada@example.org",
            to_name: Some("Ada\r\nBcc: evil@x.com"),
            content: &c,
            list: Some(&list),
            return_path: None,
        };
        let (env, bytes) = build(&from, &letter, false).expect("builds");
        // Long headers are folded (RFC 5322); compare them unfolded.
        let text = String::from_utf8(bytes)
            .expect("ascii")
            .replace("\r\n ", " ");
        assert_eq!(env.to().len(), 1);
        assert!(
            text.contains("Message-ID: <0190-abc@example.com>"),
            "{text}"
        );
        assert!(text.contains("List-Unsubscribe: <https://example.com/unsubscribe?token=abc>, <mailto:unsub@example.com>"));
        assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
        assert!(text.contains("List-Id: News <news.example.com>"));
        assert!(text.contains("Feedback-ID: d1:news.example.com:digest:example.com\r\n"));
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("Date: "));
        assert!(
            !text.contains("Bcc"),
            "a name with CR/LF must not become a header"
        );
    }
}
