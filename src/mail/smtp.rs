//! The SMTP client: connections Squeeze opens itself with TCP_NODELAY (DESIGN.md, "SMTP
//! connections"), implicit TLS or STARTTLS, AUTH, pipelining (RFC 2920), and a new
//! connection after one breaks. lettre's client drives the protocol over them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::Sender;
use super::settings::{SmtpSecurity, SmtpSettings};
use crate::domain::delivery::SendFailure;

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

/// An open SMTP session, and whether its server takes pipelined commands (RFC 2920).
pub struct Connection {
    smtp: AsyncSmtpConnection,
    pipelining: bool,
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
            return Err(failure(&e));
        }
        Ok(())
    }
}

fn unsupported(extension: &str, needed_for: &str) -> SendFailure {
    SendFailure::connection(format!(
        "the SMTP server does not offer {extension}, needed for {needed_for}"
    ))
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

/// lettre's error as a failure: its reply code, when the server replied, and its text. What
/// that means is decided once, in `domain::smtp::classify`.
fn failure(e: &lettre::transport::smtp::Error) -> SendFailure {
    SendFailure {
        code: e.status().map(u16::from),
        text: e.to_string(),
    }
}

impl SmtpTransport {
    /// Prepares TLS for the relay once; connections are opened by each sender.
    pub fn new(settings: SmtpSettings, timeout: Duration) -> Self {
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
        Self {
            settings,
            timeout,
            hello,
            tls: Arc::new(tls),
            starttls,
            eight_bit: AtomicBool::new(false),
        }
    }

    /// `host:port`, for the logs.
    pub fn describe(&self) -> String {
        format!("smtp {}:{}", self.settings.host, self.settings.port)
    }

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

/// One sender task's way to the relay: at most one connection, opened on first use and again
/// after it breaks.
pub struct SmtpSender {
    transport: Arc<SmtpTransport>,
    conn: Option<Box<Connection>>,
}

impl SmtpSender {
    pub fn new(transport: Arc<SmtpTransport>) -> Self {
        Self {
            transport,
            conn: None,
        }
    }
}

impl Sender for SmtpSender {
    async fn send(
        &mut self,
        _delivery_id: &str,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> Result<(), SendFailure> {
        let mut c = match self.conn.take() {
            Some(c) if !c.smtp.has_broken() => c,
            _ => self
                .transport
                .connect()
                .await
                .map(Box::new)
                .map_err(|text| {
                    // Connecting, greeting, TLS and AUTH problems are the relay's (or the
                    // configuration's), never the recipient's: always worth a retry.
                    SendFailure::connection(text)
                })?,
        };
        match tokio::time::timeout(self.transport.timeout, c.transact(envelope, bytes)).await {
            Ok(Ok(())) => {
                self.conn = Some(c);
                Ok(())
            }
            Ok(Err(e)) => {
                if !c.smtp.has_broken() {
                    self.conn = Some(c);
                }
                Err(e)
            }
            Err(_) => {
                // Mid-transaction state is unknown after a timeout: drop the connection.
                Err(SendFailure::connection(format!(
                    "timed out after {}s waiting for the SMTP server",
                    self.transport.timeout.as_secs()
                )))
            }
        }
    }

    /// Whether the message about to be sent may carry 8-bit text: the relay of this sender's
    /// connection offers 8BITMIME (without a connection, as it did when last connected to).
    /// Should the next connection not offer it after all, the send fails as a transient
    /// error and the retry is built for that relay.
    fn takes_eight_bit(&self) -> bool {
        match &self.conn {
            Some(c) if !c.smtp.has_broken() => c
                .smtp
                .server_info()
                .supports_feature(Extension::EightBitMime),
            _ => self.transport.eight_bit.load(Ordering::Relaxed),
        }
    }

    /// Says QUIT politely on shutdown.
    async fn close(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = tokio::time::timeout(self.transport.timeout, c.smtp.quit()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use lettre::Address;

    use super::*;

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
}
