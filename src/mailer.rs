//! Builds MIME messages and owns the way out: SMTP over connections Squeeze opens itself
//! (TCP_NODELAY, see DESIGN.md), or `.eml` files in the outbox folder.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::Address;
use lettre::address::Envelope;
use lettre::message::header::{self, ContentTransferEncoding, HeaderName, HeaderValue, Headers};
use lettre::message::{Body, Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{Config, SmtpSecurity, SmtpSettings};
use crate::domain::delivery::{SendFailure, is_bounce};
use crate::render::Rendered;

/// Headers that make a message a list message (RFC 2369, RFC 8058).
#[derive(Debug, Clone)]
pub struct ListHeaders {
    pub list_id: String,
    pub unsubscribe_url: String,
    pub unsubscribe_mailto: Option<String>,
}

/// One message for one recipient, ready to be turned into bytes.
#[derive(Debug)]
pub struct Letter<'a> {
    pub delivery_id: &'a str,
    pub to_email: &'a str,
    pub to_name: Option<&'a str>,
    pub content: &'a Content,
    pub list: Option<&'a ListHeaders>,
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

impl From<Rendered> for Content {
    fn from(r: Rendered) -> Self {
        Self {
            subject: r.subject,
            text: PartBody::Text(r.text),
            html: PartBody::Text(r.html),
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
    let envelope = Envelope::new(Some(from.email.clone()), vec![to_addr.clone()])?;
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

/// Header lines are folded before the word that would take a line past this many characters
/// (lettre's choice; RFC 5322 asks for 78 at most).
const HEADER_LINE: usize = 76;

/// Appends the header line `name: value` exactly as lettre encodes it. A value of printable
/// ASCII has nothing to encode, and lettre writes it as it is, folded: so does this, without
/// lettre's per-word encoder (BENCHMARKS.md, item 26). Anything else goes through lettre:
/// RFC 2047 for non-ASCII, and no CR or LF ever reaching the wire as a line break.
fn push_header(head: &mut String, name: &'static str, value: &str) {
    if !printable_ascii(value) {
        let mut encoded = Headers::new();
        encoded.insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str(name),
            value.to_owned(),
        ));
        // Writing to a String cannot fail.
        let _ = write!(head, "{encoded}");
        return;
    }
    head.push_str(name);
    head.push_str(": ");
    push_folded(head, value, name.len() + ": ".len(), false);
    head.push_str("\r\n");
}

thread_local! {
    /// The last subject on this thread that needed lettre's encoder, and the line it wrote.
    static ENCODED_SUBJECT: std::cell::RefCell<(String, String)> =
        const { std::cell::RefCell::new((String::new(), String::new())) };
}

/// A header value that lettre writes as it is (folded): nothing in it to encode.
fn printable_ascii(value: &str) -> bool {
    value.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// The `Subject:` line. One that is not printable ASCII (a dash, an emoji) is encoded once
/// and reused while the subject stays the same: every email of a digest has the same one,
/// unless it names the subscriber, and lettre's RFC 2047 encoder costs ~3,000 instructions.
fn push_subject(head: &mut String, subject: &str) {
    if printable_ascii(subject) {
        push_header(head, "Subject", subject);
        return;
    }
    ENCODED_SUBJECT.with_borrow_mut(|(last, line)| {
        if last != subject {
            line.clear();
            push_header(line, "Subject", subject);
            subject.clone_into(last);
        }
        head.push_str(line);
    });
}

/// A `From:` or `To:` line with one mailbox, exactly as lettre's typed header writes it: the
/// address as it is, after a display name that is written plain (one word of letters, digits,
/// `-_.`), or quoted and folded (several such words). Any other name goes through lettre,
/// which escapes it or encodes it (RFC 2047).
fn push_mailbox_header(head: &mut String, name: &'static str, mailbox: &Mailbox) {
    let address: &str = mailbox.email.as_ref();
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let quotable = |n: &str| n.bytes().all(|b| plain(b) || b == b' ');
    match mailbox.name.as_deref() {
        _ if !address.is_ascii() => {}
        None => {
            for part in [name, ": ", address, "\r\n"] {
                head.push_str(part);
            }
            return;
        }
        Some(display) if !display.is_empty() && display.bytes().all(plain) => {
            for part in [name, ": ", display, " <", address, ">\r\n"] {
                head.push_str(part);
            }
            return;
        }
        Some(display) if !display.is_empty() && quotable(display) => {
            head.push_str(name);
            head.push_str(": \"");
            push_folded(head, display, name.len() + ": \"".len(), true);
            for part in ["\" <", address, ">\r\n"] {
                head.push_str(part);
            }
            return;
        }
        Some(_) => {}
    }
    let mut encoded = Headers::new();
    match name {
        "From" => encoded.set(header::From::from(Mailboxes::from(mailbox.clone()))),
        _ => encoded.set(header::To::from(Mailboxes::from(mailbox.clone()))),
    }
    // Writing to a String cannot fail.
    let _ = write!(head, "{encoded}");
}

/// Writes printable ASCII `text` onto a header line already `line` characters long, folded
/// as lettre folds: before a word that would take the line past `HEADER_LINE`, where a space
/// precedes it and a word has been written on the line (`word_on_line`, at the start).
fn push_folded(head: &mut String, text: &str, mut line: usize, mut word_on_line: bool) {
    // Spaces not written yet: a fold goes before them, so they start the next line.
    let mut spaces = 0;
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(' ') {
            spaces += 1;
            rest = after;
            continue;
        }
        let (word, after) = rest.split_at(rest.find(' ').unwrap_or(rest.len()));
        if word_on_line && spaces > 0 && line + spaces + word.len() > HEADER_LINE {
            head.push_str("\r\n");
            line = 0;
        }
        head.extend(std::iter::repeat_n(' ', spaces));
        head.push_str(word);
        line += spaces + word.len();
        spaces = 0;
        word_on_line = true;
        rest = after;
    }
    head.extend(std::iter::repeat_n(' ', spaces));
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

/// Where mail goes: chosen once from the configuration.
#[derive(Clone, Debug)]
pub enum Transport {
    Smtp(Arc<SmtpTransport>),
    Outbox(PathBuf),
}

pub struct SmtpTransport {
    settings: SmtpSettings,
    timeout: Duration,
    hello: ClientId,
    /// For implicit TLS (smtps://), over our own TCP connection.
    tls: Arc<rustls::ClientConfig>,
    /// For STARTTLS, through lettre's upgrade; both trust the same roots.
    starttls: Option<TlsParameters>,
    /// Whether the relay offered 8BITMIME when last connected to: what a sender that has no
    /// connection yet builds for (none until the first connection: every relay takes 7bit).
    eight_bit: AtomicBool,
}

impl std::fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTransport")
            .field("settings", &self.settings)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub fn from_config(config: &Config) -> Self {
        match &config.smtp {
            Some(settings) => Self::smtp(settings.clone(), config.smtp_timeout),
            None => Self::Outbox(config.outbox.clone()),
        }
    }

    pub fn smtp(settings: SmtpSettings, timeout: Duration) -> Self {
        let hello = match &settings.hello_name {
            Some(n) => ClientId::Domain(n.clone()),
            None => ClientId::default(),
        };
        let extra: Vec<rustls::pki_types::CertificateDer<'static>> = settings
            .extra_roots_pem
            .as_deref()
            .map(|pem| {
                use rustls::pki_types::pem::PemObject as _;
                rustls::pki_types::CertificateDer::pem_slice_iter(pem)
                    .filter_map(Result::ok)
                    .collect()
            })
            .unwrap_or_default();
        let mut roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // The configuration checked these parse; a rejected one simply is not trusted.
        let _ = roots.add_parsable_certificates(extra);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        // The ring provider always supports the default versions; if that ever changes, fall
        // back to the builder's own choice rather than refusing to start.
        let tls = tls.unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        let mut params = TlsParameters::builder(settings.host.clone());
        if let Some(cert) = settings
            .extra_roots_pem
            .as_deref()
            .and_then(|pem| Certificate::from_pem(pem).ok())
        {
            params = params.add_root_certificate(cert);
        }
        let starttls = params.build().ok();
        Self::Smtp(Arc::new(SmtpTransport {
            settings,
            timeout,
            hello,
            tls: Arc::new(tls),
            starttls,
            eight_bit: AtomicBool::new(false),
        }))
    }

    /// Creates the outbox folder, so a bad path fails at start rather than on the first send.
    pub async fn prepare(&self) -> io::Result<()> {
        match self {
            Self::Outbox(dir) => tokio::fs::create_dir_all(dir).await,
            Self::Smtp(_) => Ok(()),
        }
    }

    /// One sender per concurrent task: each owns at most one SMTP connection.
    pub fn sender(&self) -> Sender {
        match self {
            Self::Smtp(t) => Sender::Smtp {
                transport: t.clone(),
                conn: None,
            },
            Self::Outbox(dir) => Sender::Outbox(dir.clone()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Smtp(t) => format!("smtp {}:{}", t.settings.host, t.settings.port),
            Self::Outbox(dir) => format!("outbox folder {}", dir.display()),
        }
    }
}

pub enum Sender {
    Smtp {
        transport: Arc<SmtpTransport>,
        conn: Option<Box<Connection>>,
    },
    Outbox(PathBuf),
}

/// An open SMTP session, and whether its server takes pipelined commands (RFC 2920).
pub struct Connection {
    smtp: AsyncSmtpConnection,
    pipelining: bool,
}

impl Sender {
    /// Whether the message about to be sent may carry 8-bit text: the relay of this sender's
    /// connection offers 8BITMIME (without a connection, as it did when last connected to).
    /// Should the next connection not offer it after all, the send fails as a transient
    /// error and the retry is built for that relay.
    pub fn takes_eight_bit(&self) -> bool {
        match self {
            Self::Outbox(_) => true,
            Self::Smtp { transport, conn } => match conn {
                Some(c) if !c.smtp.has_broken() => c
                    .smtp
                    .server_info()
                    .supports_feature(Extension::EightBitMime),
                _ => transport.eight_bit.load(Ordering::Relaxed),
            },
        }
    }

    /// Sends one message. The connection is opened on first use and again after it breaks.
    pub async fn send(
        &mut self,
        delivery_id: &str,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> Result<(), SendFailure> {
        match self {
            Self::Outbox(dir) => {
                write_eml(dir, delivery_id, bytes)
                    .await
                    .map_err(|e| SendFailure::Transient {
                        code: None,
                        text: format!("cannot write to outbox {}: {e}", dir.display()),
                    })
            }
            Self::Smtp { transport, conn } => {
                let mut c = match conn.take() {
                    Some(c) if !c.smtp.has_broken() => c,
                    _ => transport.connect().await.map(Box::new).map_err(|text| {
                        // Connecting, greeting, TLS and AUTH problems are the relay's (or the
                        // configuration's), never the recipient's: always worth a retry.
                        SendFailure::Transient { code: None, text }
                    })?,
                };
                match tokio::time::timeout(transport.timeout, c.transact(envelope, bytes)).await {
                    Ok(Ok(())) => {
                        *conn = Some(c);
                        Ok(())
                    }
                    Ok(Err(e)) => {
                        if !c.smtp.has_broken() {
                            *conn = Some(c);
                        }
                        Err(e)
                    }
                    Err(_) => {
                        // Mid-transaction state is unknown after a timeout: drop the connection.
                        Err(SendFailure::Transient {
                            code: None,
                            text: format!(
                                "timed out after {}s waiting for the SMTP server",
                                transport.timeout.as_secs()
                            ),
                        })
                    }
                }
            }
        }
    }

    /// Says QUIT politely on shutdown.
    pub async fn close(&mut self) {
        if let Self::Smtp { transport, conn } = self
            && let Some(mut c) = conn.take()
        {
            let _ = tokio::time::timeout(transport.timeout, c.smtp.quit()).await;
        }
    }
}

impl Connection {
    /// One message: what lettre's `send` does, in half the round trips and writes. When the
    /// server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write and their
    /// replies are read in order; the content goes dot-stuffed, with its closing dot, in one
    /// more (lettre writes that dot on its own and stuffs the content a byte at a time).
    /// Replies are checked as lettre checks them: the first refusal ends the session
    /// (QUIT, close), and the next message opens a new one.
    async fn transact(&mut self, envelope: &Envelope, message: &[u8]) -> Result<(), SendFailure> {
        let smtp = &mut self.smtp;
        let mut parameters = Vec::new();
        let addresses = envelope.from().into_iter().chain(envelope.to());
        if !addresses.map(AsRef::<str>::as_ref).all(str::is_ascii) {
            if !smtp.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(unsupported("SMTPUTF8", "a non-ASCII address"));
            }
            parameters.push(MailParameter::SmtpUtfEight);
        }
        if !message.is_ascii() {
            if !smtp.server_info().supports_feature(Extension::EightBitMime) {
                return Err(unsupported("8BITMIME", "non-ASCII content"));
            }
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = Mail::new(envelope.from().cloned(), parameters);
        let rcpts: Vec<Rcpt> = envelope
            .to()
            .iter()
            .map(|to| Rcpt::new(to.clone(), Vec::new()))
            .collect();
        let outcome = async {
            if self.pipelining {
                // The replies come back in order, so the first refusal read is the first made.
                smtp.command(Pipelined(&mail, &rcpts)).await?;
                for _ in 0..=rcpts.len() {
                    smtp.read_response().await?;
                }
            } else {
                smtp.command(&mail).await?;
                for rcpt in &rcpts {
                    smtp.command(rcpt).await?;
                }
                smtp.command(Data).await?;
            }
            match std::str::from_utf8(message) {
                Ok(text) => smtp.command(DotStuffed(text)).await,
                // Never from `build`; lettre's own encoder takes any bytes.
                Err(_) => smtp.message(message).await,
            }
        }
        .await;
        if let Err(e) = outcome {
            smtp.abort().await;
            return Err(classify(&e));
        }
        Ok(())
    }
}

fn unsupported(extension: &str, needed_for: &str) -> SendFailure {
    SendFailure::Transient {
        code: None,
        text: format!("the SMTP server does not offer {extension}, needed for {needed_for}"),
    }
}

/// MAIL, each RCPT and DATA as one group of pipelined commands (DATA must end a group).
struct Pipelined<'a>(&'a Mail, &'a [Rcpt]);

impl std::fmt::Display for Pipelined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        for rcpt in self.1 {
            write!(f, "{rcpt}")?;
        }
        write!(f, "{Data}")
    }
}

/// Message content as the DATA phase carries it (RFC 5321, 4.5.2): a line that starts with a
/// dot gets one more, and a line holding a lone dot ends it.
struct DotStuffed<'a>(&'a str);

impl std::fmt::Display for DotStuffed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0;
        if text.starts_with('.') {
            f.write_str(".")?;
        }
        let mut from = 0;
        for at in memchr::memmem::find_iter(text.as_bytes(), b"\r\n.") {
            // Up to and including the CRLF, then the extra dot; the line's own dot follows.
            f.write_str(&text[from..at + 2])?;
            f.write_str(".")?;
            from = at + 2;
        }
        f.write_str(&text[from..])?;
        f.write_str(if text.ends_with("\r\n") || text.is_empty() {
            ".\r\n"
        } else {
            "\r\n.\r\n"
        })
    }
}

/// Maps lettre's error to retry or give up, in this one place.
fn classify(e: &lettre::transport::smtp::Error) -> SendFailure {
    let code = e.status().map(u16::from);
    let text = e.to_string();
    if e.is_permanent() {
        let bounce = code.is_some_and(|c| {
            let reply = text.split_once(": ").map_or("", |(_, r)| r);
            is_bounce(c, reply)
        });
        SendFailure::Permanent { code, text, bounce }
    } else {
        // 4xx, timeouts, network and protocol trouble: transient.
        SendFailure::Transient { code, text }
    }
}

impl SmtpTransport {
    async fn connect(&self) -> Result<Connection, String> {
        let s = &self.settings;
        let server = format!("{}:{}", s.host, s.port);
        let attempt = async {
            let tcp = TcpStream::connect((s.host.as_str(), s.port))
                .await
                .map_err(|e| format!("cannot connect to {server}: {e}"))?;
            // The reason Squeeze opens its own connections: lettre never sets this, and Nagle
            // then holds the final "." of every message for a 40 ms delayed ACK.
            tcp.set_nodelay(true)
                .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
            let mut conn = if s.security == SmtpSecurity::Implicit {
                let name = rustls::pki_types::ServerName::try_from(s.host.clone())
                    .map_err(|e| format!("{}: not a TLS server name: {e}", s.host))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {server} failed: {e}"))?;
                AsyncSmtpConnection::connect_with_transport(Box::new(TlsTcp(tls)), &self.hello)
                    .await
            } else {
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await
            }
            .map_err(|e| format!("SMTP greeting from {server} failed: {e}"))?;
            let starttls = match s.security {
                SmtpSecurity::Required => true,
                SmtpSecurity::Opportunistic => conn.can_starttls(),
                SmtpSecurity::None | SmtpSecurity::Implicit => false,
            };
            if starttls {
                let params = self
                    .starttls
                    .clone()
                    .ok_or_else(|| format!("TLS setup for {server} failed"))?;
                conn.starttls(params, &self.hello)
                    .await
                    .map_err(|e| format!("STARTTLS with {server} failed: {e}"))?;
            }
            // lettre keeps only the EHLO keywords it acts on, and PIPELINING is not one of
            // them: ask once more (before AUTH, which a new EHLO might reset). A server that
            // refuses the repeat stays where it was (RFC 5321, 4.1.4): no pipelining then.
            let pipelining = match conn.command(Ehlo::new(self.hello.clone())).await {
                Ok(ehlo) => ehlo.message().any(|line| {
                    line.split_whitespace()
                        .next()
                        .is_some_and(|k| k.eq_ignore_ascii_case("PIPELINING"))
                }),
                Err(_) => false,
            };
            if let (Some(user), Some(pass)) = (&s.username, &s.password) {
                let creds = Credentials::new(user.clone(), pass.clone());
                conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
                    .await
                    .map_err(|e| format!("SMTP AUTH at {server} failed: {e}"))?;
            }
            self.eight_bit.store(
                conn.server_info().supports_feature(Extension::EightBitMime),
                Ordering::Relaxed,
            );
            Ok(Connection {
                smtp: conn,
                pipelining,
            })
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "timed out after {}s connecting to {server}",
                    self.timeout.as_secs()
                ))
            })
    }
}

/// Writes `<delivery id>.eml` atomically; a re-send overwrites instead of duplicating.
async fn write_eml(dir: &Path, delivery_id: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{delivery_id}.eml.tmp"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, dir.join(format!("{delivery_id}.eml"))).await
}

/// A TLS stream lettre can drive: `connect_with_transport` wants an `AsyncTokioStream`.
#[derive(Debug)]
struct TlsTcp(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for TlsTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
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
    fn content_is_dot_stuffed_and_closed_by_a_lone_dot() {
        let stuffed = |text: &str| DotStuffed(text).to_string();
        assert_eq!(
            stuffed("a\r\n.\r\n..b\r\nc.d\r\n"),
            "a\r\n..\r\n...b\r\nc.d\r\n.\r\n"
        );
        assert_eq!(stuffed(".first\r\nlast"), "..first\r\nlast\r\n.\r\n");
        assert_eq!(
            stuffed("ends with a dot\r\n."),
            "ends with a dot\r\n..\r\n.\r\n"
        );
        assert_eq!(stuffed(""), ".\r\n");
        // A bare LF is no line break on the wire: lettre does not stuff after it either.
        assert_eq!(stuffed("a\n.b\r\n"), "a\n.b\r\n.\r\n");
    }

    #[test]
    fn pipelined_commands_end_with_data() {
        let from: Address = "news@squeeze.example".parse().expect("address");
        let to: Address = "reader@example.com".parse().expect("address");
        let mail = Mail::new(Some(from), Vec::new());
        let group = Pipelined(&mail, &[Rcpt::new(to, Vec::new())]).to_string();
        assert_eq!(
            group,
            "MAIL FROM:<news@squeeze.example>\r\nRCPT TO:<reader@example.com>\r\nDATA\r\n"
        );
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

    /// The fast path for printable ASCII must write exactly what lettre writes: the same
    /// folds, the same spaces. Checked over every value of up to four words from a set of
    /// lengths around the fold, with runs of spaces between, before and after them.
    #[test]
    fn headers_are_written_as_lettre_encodes_them() {
        let words: Vec<String> = [1, 9, 30, 45, 58, 66, 70, 71, 76, 90]
            .iter()
            .map(|&n| "x".repeat(n))
            .chain(
                [
                    "=?utf-8?q?x?=",
                    "<https://e.example/u?t=ab>,",
                    "Zoë",
                    "tab\there",
                ]
                .map(String::from),
            )
            .collect();
        let lettre = |name: &'static str, value: &str| {
            let mut h = Headers::new();
            h.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value.to_owned(),
            ));
            h.to_string()
        };
        let mut values = vec![String::new()];
        for _ in 0..3 {
            let mut longer = Vec::new();
            for v in &values {
                for w in &words {
                    for sep in [" ", "  "] {
                        longer.push(format!("{v}{sep}{w}"));
                    }
                }
            }
            values.extend(longer);
        }
        let mut checked = 0;
        for v in &values {
            for value in [v.trim_start().to_owned(), v.clone(), format!("{v}  ")] {
                for name in ["Subject", "List-Unsubscribe"] {
                    let mut ours = String::new();
                    push_header(&mut ours, name, &value);
                    assert_eq!(ours, lettre(name, &value), "{name}: {value:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
        // A line break in a value never starts a header of its own.
        let mut injected = String::new();
        push_header(&mut injected, "Subject", "Hi\r\nBcc: evil@example.com");
        assert!(!injected.contains("\r\nBcc"), "{injected:?}");
    }

    /// A subject encoded once and reused must be the subject of the email at hand: the same
    /// line as lettre writes, through changes of subject, back and forth, and to ASCII.
    #[test]
    fn each_subject_line_is_its_own_subject_encoded() {
        let lettre = |value: &str| {
            let mut h = Headers::new();
            h.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("Subject"),
                value.to_owned(),
            ));
            h.to_string()
        };
        let subjects = [
            "Montag — die Woche 🍊",
            "Montag — die Woche 🍊",
            "Hi Zoë — your digest",
            "Montag — die Woche 🍊",
            "Plain ASCII",
            "Hi Ünal — your digest",
            "Hi Ünal — your digest",
        ];
        for subject in subjects {
            let mut ours = String::new();
            push_subject(&mut ours, subject);
            assert_eq!(ours, lettre(subject), "{subject}");
        }
    }

    /// From and To lines must be what lettre's typed headers write, for every kind of
    /// display name: none, one plain word, several words (quoted, folded when long), and the
    /// ones lettre escapes or encodes.
    #[test]
    fn mailbox_headers_are_written_as_lettre_encodes_them() {
        let names: Vec<Option<String>> = [
            None,
            Some(""),
            Some("Ada"),
            Some("ada.lovelace-1_x"),
            Some("Ada Lovelace"),
            Some(" Ada  Lovelace "),
            Some("Freshly Squeezed"),
            Some("Zoë Ünal"),
            Some("O'Brien, Pat"),
            Some("say \"hi\""),
            Some("back\\slash"),
        ]
        .into_iter()
        .map(|n| n.map(String::from))
        .chain((1..=12).map(|n| Some(vec!["Wordy"; n * 3].join(" "))))
        .chain([Some("x".repeat(80)), Some(format!("a {}", "y".repeat(75)))])
        // Two words whose line ends on either side of the fold, for both header names.
        .chain((60..=75).map(|n| Some(format!("n {}", "m".repeat(n)))))
        .collect();
        let addresses = [
            "ada@example.org",
            "a.very.long.local.part.for.folding.tests@subdomain.example-newsletters.org",
        ];
        for header in ["From", "To"] {
            for name in &names {
                for address in addresses {
                    let mailbox = Mailbox::new(name.clone(), address.parse().expect("address"));
                    let mut theirs = Headers::new();
                    match header {
                        "From" => theirs.set(header::From::from(Mailboxes::from(mailbox.clone()))),
                        _ => theirs.set(header::To::from(Mailboxes::from(mailbox.clone()))),
                    }
                    let mut ours = String::new();
                    push_mailbox_header(&mut ours, header, &mailbox);
                    assert_eq!(ours, theirs.to_string(), "{header}: {name:?} <{address}>");
                }
            }
        }
    }

    #[test]
    fn builds_a_list_message_with_the_contract_headers() {
        let from: Mailbox = "News <news@example.com>".parse().expect("mailbox");
        let list = ListHeaders {
            list_id: "News <news.example.com>".into(),
            unsubscribe_url: "https://example.com/unsubscribe?token=abc".into(),
            unsubscribe_mailto: Some("mailto:unsub@example.com".into()),
        };
        let c = content();
        let letter = Letter {
            delivery_id: "0190-abc",
            to_email: "ada@example.org",
            to_name: Some("Ada\r\nBcc: evil@x.com"),
            content: &c,
            list: Some(&list),
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
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("Date: "));
        assert!(
            !text.contains("Bcc"),
            "a name with CR/LF must not become a header"
        );
    }
}
