//! An SMTP server on 127.0.0.1 for tests: records what it receives and injects faults on demand
//! (refusing greetings, 4xx/5xx at RCPT, dropping the connection during DATA, stalling).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Received {
    pub at: std::time::Instant,
    /// Whether the session was encrypted (STARTTLS or implicit TLS).
    pub tls: bool,
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    pub auth_user: Option<String>,
    /// Whether RCPT had already arrived when MAIL was read: the client pipelined (RFC 2920).
    pub pipelined: bool,
    /// What followed the address in MAIL FROM, e.g. `BODY=8BITMIME`.
    pub mail_params: String,
}

impl Received {
    pub fn parsed(&self) -> mailparse::ParsedMail<'_> {
        mailparse::parse_mail(&self.data).expect("received message is valid MIME")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.parsed()
            .headers
            .iter()
            .find(|h| h.get_key_ref().eq_ignore_ascii_case(name))
            .map(|h| h.get_value())
    }

    /// The decoded body of the first part with this content type.
    pub fn part(&self, ctype: &str) -> Option<String> {
        fn find(m: &mailparse::ParsedMail<'_>, ctype: &str) -> Option<String> {
            if m.ctype.mimetype == ctype {
                return m.get_body().ok();
            }
            m.subparts.iter().find_map(|p| find(p, ctype))
        }
        find(&self.parsed(), ctype)
    }

    pub fn text(&self) -> String {
        self.part("text/plain").unwrap_or_default()
    }

    /// The first link in the text part that starts with `prefix`.
    pub fn link(&self, prefix: &str) -> Option<String> {
        let text = self.text();
        let start = text.find(prefix)?;
        let link: String = text[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '>')
            .collect();
        Some(link)
    }
}

#[derive(Default)]
pub struct Faults {
    /// Answer the next N connections with `421` and close.
    pub refuse_greetings: usize,
    /// Replies for RCPT TO:<addr>, used one per attempt before the default 250.
    pub rcpt_replies: HashMap<String, VecDeque<String>>,
    /// Replies for RCPT TO:<addr>, every time.
    pub rcpt_always: HashMap<String, String>,
    /// Close the connection after reading the next N message bodies, without answering.
    pub drop_after_data: usize,
    /// Accept connections and then never answer.
    pub stall: bool,
    /// Require AUTH PLAIN/LOGIN with these credentials.
    pub credentials: Option<(String, String)>,
    /// Wait this long before answering each message body (messages stay "on the wire").
    pub data_delay: Option<Duration>,
    /// Do not offer PIPELINING in the EHLO reply (it is offered by default, as Postfix does).
    pub no_pipelining: bool,
    /// Refuse every EHLO after a session's first (with 502, staying in the same state).
    pub refuse_repeated_ehlo: bool,
    /// Do not offer 8BITMIME in the EHLO reply (offered by default, as Postfix does).
    pub no_8bitmime: bool,
}

/// One RCPT TO as the server saw it, and what it answered.
#[derive(Debug, Clone)]
pub struct RcptAttempt {
    pub at: std::time::Instant,
    pub rcpt: String,
    pub reply: String,
}

/// How the server offers TLS.
#[derive(Clone)]
pub enum Tls {
    None,
    /// Advertises STARTTLS.
    Starttls(tokio_rustls::TlsAcceptor),
    /// TLS from the first byte (smtps).
    Implicit(tokio_rustls::TlsAcceptor),
}

/// A self-signed certificate for `localhost`: the acceptor, and the PEM a client must trust.
pub fn localhost_tls() -> (tokio_rustls::TlsAcceptor, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let pem = cert.cert.pem();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .expect("server config");
    (
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
        pem,
    )
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    rcpts: Mutex<Vec<RcptAttempt>>,
    faults: Mutex<Faults>,
    connections: Mutex<usize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
pub struct SmtpServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl SmtpServer {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Self {
        Self::start_with(addr, Tls::None).await
    }

    pub async fn start_with(addr: &str, tls: Tls) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind test SMTP server");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, tls) = (s.clone(), tls.clone());
                tokio::spawn(async move {
                    *lock(&s.connections) += 1;
                    let _ = match tls {
                        Tls::Implicit(acceptor) => match acceptor.accept(stream).await {
                            Ok(t) => session(Box::new(t), s, None, true, true).await,
                            Err(_) => Ok(()),
                        },
                        Tls::Starttls(acceptor) => {
                            session(Box::new(stream), s, Some(acceptor), false, true).await
                        }
                        Tls::None => session(Box::new(stream), s, None, false, true).await,
                    };
                });
            }
        });
        Self {
            addr,
            shared,
            task: Arc::new(task),
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Stops accepting connections (existing sessions end when their peers go).
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.shared.faults)
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    pub fn count(&self) -> usize {
        lock(&self.shared.received).len()
    }

    pub fn rcpt_attempts(&self) -> Vec<RcptAttempt> {
        lock(&self.shared.rcpts).clone()
    }

    pub fn connections(&self) -> usize {
        *lock(&self.shared.connections)
    }

    pub fn to(&self, rcpt: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|m| m.rcpts.iter().any(|r| r == rcpt))
            .collect()
    }

    /// Waits until `n` messages arrived, then for [`SETTLE`] more, and panics unless exactly
    /// `n` are there: a duplicate or a stray send fails the test. Panics after `timeout` if
    /// fewer than `n` came.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_for_at_least(n, timeout).await;
        tokio::time::sleep(SETTLE).await;
        let got = self.received();
        assert_eq!(
            got.len(),
            n,
            "expected exactly {n} messages at the SMTP server, got {} (duplicates or strays)",
            got.len()
        );
        got
    }

    /// Waits until at least `n` messages arrived, or panics after `timeout`: for a point in a
    /// run that is still sending (pause it, kill the worker), where more are expected.
    pub async fn wait_for_at_least(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} messages at the SMTP server within {timeout:?}, got {}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How long [`SmtpServer::wait_for`] waits after the expected count for anything more: a
/// message sent twice at once (two claims of one delivery, a resend on the same connection)
/// arrives within it. A resend after a failure waits for the worker's next poll (up to a
/// second): [`crate::TestApp::wait_all_sent`] catches those.
pub const SETTLE: Duration = Duration::from_millis(150);

fn addr_of(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].to_owned()
}

/// One SMTP session. `starttls`: offered and not yet used; `encrypted`: TLS is on; `greet`:
/// false after STARTTLS, where the client speaks first (EHLO again).
async fn session(
    stream: Box<dyn Io>,
    shared: Arc<Shared>,
    starttls: Option<tokio_rustls::TlsAcceptor>,
    encrypted: bool,
    greet: bool,
) -> std::io::Result<()> {
    let (read, write) = tokio::io::split(stream);
    // Replies are buffered and sent when the client has nothing more waiting, so a pipelined
    // group gets its replies in one write, as Postfix sends them (RFC 2920, 3.2).
    let mut write = tokio::io::BufWriter::new(write);
    let mut reader = BufReader::new(read);
    let (stall, refuse) = {
        let mut f = lock(&shared.faults);
        let refuse = f.refuse_greetings > 0;
        if refuse {
            f.refuse_greetings -= 1;
        }
        (f.stall, refuse)
    };
    if stall {
        // Hold the connection open and never answer, until the test ends.
        std::future::pending::<()>().await;
    }
    if refuse {
        write.write_all(b"421 4.3.2 try again later\r\n").await?;
        write.flush().await?;
        return Ok(());
    }
    if greet {
        write.write_all(b"220 test-smtp ESMTP\r\n").await?;
    }
    let mut from = String::new();
    let mut rcpts = Vec::new();
    let mut auth_user: Option<String> = None;
    let mut pipelined = false;
    let mut mail_params = String::new();
    let mut ehlo_seen = false;
    let mut line = String::new();
    loop {
        if reader.buffer().is_empty() {
            write.flush().await?;
        }
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let needs_auth = lock(&shared.faults).credentials.clone();
        if upper.starts_with("EHLO") && ehlo_seen && lock(&shared.faults).refuse_repeated_ehlo {
            write
                .write_all(b"502 5.5.2 Command not recognized\r\n")
                .await?;
        } else if upper.starts_with("EHLO") {
            ehlo_seen = true;
            let offer = if starttls.is_some() {
                "250-STARTTLS\r\n"
            } else {
                ""
            };
            let pipelining = if lock(&shared.faults).no_pipelining {
                ""
            } else {
                "250-PIPELINING\r\n"
            };
            let eight_bit = if lock(&shared.faults).no_8bitmime {
                ""
            } else {
                "250-8BITMIME\r\n"
            };
            let reply = format!(
                "250-test-smtp\r\n{pipelining}{eight_bit}250-SMTPUTF8\r\n{offer}250 AUTH PLAIN LOGIN\r\n"
            );
            write.write_all(reply.as_bytes()).await?;
        } else if upper == "STARTTLS" && starttls.is_some() {
            write.write_all(b"220 2.0.0 Ready to start TLS\r\n").await?;
            write.flush().await?;
            let plain = reader.into_inner().unsplit(write.into_inner());
            let Some(acceptor) = starttls else {
                return Ok(());
            };
            let tls = acceptor.accept(plain).await?;
            return Box::pin(session(Box::new(tls), shared, None, true, false)).await;
        } else if upper.starts_with("HELO") {
            write.write_all(b"250 test-smtp\r\n").await?;
        } else if upper.starts_with("AUTH PLAIN") {
            let mut arg = cmd.get(11..).unwrap_or("").trim().to_owned();
            if arg.is_empty() {
                write.write_all(b"334 \r\n").await?;
                write.flush().await?;
                line.clear();
                reader.read_line(&mut line).await?;
                arg = line.trim().to_owned();
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(arg)
                .unwrap_or_default();
            let parts: Vec<String> = decoded
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            let (user, pass) = (
                parts.get(1).cloned().unwrap_or_default(),
                parts.get(2).cloned().unwrap_or_default(),
            );
            if needs_auth
                .as_ref()
                .is_none_or(|(u, p)| *u == user && *p == pass)
            {
                auth_user = Some(user);
                write
                    .write_all(b"235 2.7.0 Authentication successful\r\n")
                    .await?;
            } else {
                write
                    .write_all(b"535 5.7.8 Authentication credentials invalid\r\n")
                    .await?;
            }
        } else if upper.starts_with("MAIL FROM") {
            if needs_auth.is_some() && auth_user.is_none() {
                write
                    .write_all(b"530 5.7.0 Authentication required\r\n")
                    .await?;
                continue;
            }
            from = addr_of(&cmd);
            mail_params = cmd
                .split_once('>')
                .map_or("", |(_, rest)| rest.trim())
                .to_owned();
            rcpts.clear();
            pipelined = !reader.buffer().is_empty();
            write.write_all(b"250 2.1.0 Ok\r\n").await?;
        } else if upper.starts_with("RCPT TO") {
            let rcpt = addr_of(&cmd);
            let reply = {
                let mut f = lock(&shared.faults);
                f.rcpt_always
                    .get(&rcpt)
                    .cloned()
                    .or_else(|| f.rcpt_replies.get_mut(&rcpt).and_then(VecDeque::pop_front))
            };
            let answer = reply.unwrap_or_else(|| "250 2.1.5 Ok".to_owned());
            lock(&shared.rcpts).push(RcptAttempt {
                at: std::time::Instant::now(),
                rcpt: rcpt.clone(),
                reply: answer.clone(),
            });
            if answer.starts_with('2') {
                rcpts.push(rcpt);
            }
            write.write_all(format!("{answer}\r\n").as_bytes()).await?;
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                write
                    .write_all(b"554 5.5.1 No valid recipients\r\n")
                    .await?;
                continue;
            }
            write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            write.flush().await?;
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if reader.read_until(b'\n', &mut l).await? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                let body = if l.starts_with(b"..") {
                    &l[1..]
                } else {
                    &l[..]
                };
                data.extend_from_slice(body);
            }
            let drop_now = {
                let mut f = lock(&shared.faults);
                let d = f.drop_after_data > 0;
                if d {
                    f.drop_after_data -= 1;
                }
                d
            };
            if drop_now {
                return Ok(());
            }
            let delay = lock(&shared.faults).data_delay;
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            lock(&shared.received).push(Received {
                at: std::time::Instant::now(),
                tls: encrypted,
                from: from.clone(),
                rcpts: std::mem::take(&mut rcpts),
                data,
                auth_user: auth_user.clone(),
                pipelined,
                mail_params: mail_params.clone(),
            });
            write.write_all(b"250 2.0.0 Ok: queued\r\n").await?;
        } else if upper == "RSET" {
            rcpts.clear();
            write.write_all(b"250 2.0.0 Ok\r\n").await?;
        } else if upper == "NOOP" {
            write.write_all(b"250 2.0.0 Ok\r\n").await?;
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            write.flush().await?;
            return Ok(());
        } else {
            write
                .write_all(b"502 5.5.2 Command not recognized\r\n")
                .await?;
        }
    }
}
