//! The one declaration of every setting: its key, default, documentation and parser.
//!
//! `TABLE` drives everything else: the keys squeeze.toml may hold, the `SQUEEZE_*` variables
//! read, the global `--flags` the CLI generates (with this documentation as their help), the
//! defaults, the validation, and the error sentence (`setting `key` = "value" (from …) is
//! invalid: <the parser's problem>.`). The entries are in the order they are checked, so the
//! first bad setting reported is the same as before the table existed.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use url::Url;

use super::values::{
    boolean, dns_name, duration, is_in_memory, list_id_ok, non_empty, parse_domain_rates,
    parse_nonzero, parse_share, parse_size, retention, token,
};
use super::{DatabaseKind, LogFormat};
use crate::mail::dkim::DkimKey;
use crate::mail::settings::{SmtpSettings, read_certificates};

/// One setting: in squeeze.toml as `key`, in the environment as `SQUEEZE_<KEY>`, on the
/// command line as `--key-with-dashes`.
pub struct Setting {
    pub key: &'static str,
    /// What the flag's value looks like in `--help`.
    pub value_name: &'static str,
    /// Parsed when no layer sets a value; `None`: unset, or derived from other settings (the
    /// documentation says from which).
    pub default: Option<&'static str>,
    /// Never echoed in error messages.
    pub secret: bool,
    pub doc: &'static str,
    /// Checks the value and keeps it in the draft; `Err` is the problem, said in a phrase.
    pub(super) parse: fn(&str, &mut Draft) -> Result<(), String>,
}

impl Setting {
    /// `--key-with-dashes`, without the dashes in front.
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    pub fn env_var(&self) -> String {
        format!("SQUEEZE_{}", self.key.to_ascii_uppercase())
    }
}

/// Values parsed so far; `Config::finish` turns it into a `Config`, filling the derived
/// defaults (`public_url` from `bind`, `burst` from `rate`, `list_id` from `from`).
#[derive(Default)]
pub(super) struct Draft {
    pub database: Option<(String, DatabaseKind)>,
    pub bind: Option<SocketAddr>,
    pub public_url: Option<Url>,
    pub smtp: Option<SmtpSettings>,
    pub smtp_ca: Option<Vec<u8>>,
    pub outbox: Option<PathBuf>,
    pub from: Option<Mailbox>,
    pub admin_token: Option<String>,
    pub rate: Option<NonZeroU32>,
    pub burst: Option<NonZeroU32>,
    pub concurrency: Option<NonZeroUsize>,
    pub templates: Option<PathBuf>,
    pub confirmation_ttl: Option<Duration>,
    pub welcome: Option<bool>,
    pub subscribe_per_minute: Option<Option<NonZeroU32>>,
    pub smtp_timeout: Option<Duration>,
    pub lease: Option<Duration>,
    pub http_header_timeout: Option<Duration>,
    pub http_idle_timeout: Option<Duration>,
    pub http_max_connections: Option<NonZeroUsize>,
    pub shutdown_timeout: Option<Duration>,
    pub list_id: Option<String>,
    pub unsubscribe_mailto: Option<String>,
    pub missed_grace: Option<Duration>,
    pub digest_ttl: Option<Duration>,
    pub fanout_chunk: Option<NonZeroU32>,
    pub delivery_retention: Option<Option<Duration>>,
    pub domain_rates: Option<Vec<(String, NonZeroU32)>>,
    pub throttle_cooldown: Option<Duration>,
    pub retry_initial: Option<Duration>,
    pub retry_max: Option<Duration>,
    pub pause_threshold: Option<f64>,
    pub pause_window: Option<usize>,
    pub metrics_token: Option<String>,
    pub log_format: Option<LogFormat>,
    pub import_max_bytes: Option<u64>,
    pub dkim_selector: Option<String>,
    pub dkim_key: Option<DkimKey>,
    pub dkim_second_selector: Option<String>,
    pub dkim_second_key: Option<DkimKey>,
    pub dkim_domain: Option<String>,
    pub postal_address: Option<String>,
    pub archive: Option<bool>,
    pub feed_interval: Option<Duration>,
    pub feed_timeout: Option<Duration>,
    pub feed_max_bytes: Option<u64>,
    pub feed_allow_private: Option<bool>,
    pub bounce_address: Option<String>,
    pub bounce_secret: Option<String>,
    pub inbound_max_bytes: Option<u64>,
    pub complaint_pause_rate: Option<f64>,
    pub complaint_pause_min: Option<i64>,
    pub doctor_nameserver: Option<SocketAddr>,
    pub mailgun_signing_key: Option<String>,
    pub postmark_webhook_user: Option<String>,
    pub postmark_webhook_password: Option<String>,
    pub sendgrid_public_key: Option<crate::inbound::webhooks::sendgrid::PublicKey>,
    pub ses_topic_arn: Option<Vec<String>>,
    pub ses_sns_cert_url_override: Option<url::Url>,
}

/// The settings, in the order they are checked.
pub const TABLE: &[Setting] = &[
    Setting {
        key: "database_url",
        value_name: "URL",
        default: Some("sqlite://squeeze.db"),
        secret: false,
        doc: "Database URL; the scheme picks the backend (sqlite:// or postgres://)",
        parse: |v, d| {
            let kind = if v.starts_with("sqlite:") {
                DatabaseKind::Sqlite
            } else if v.starts_with("postgres://") || v.starts_with("postgresql://") {
                DatabaseKind::Postgres
            } else {
                return Err(
                    "the scheme must be sqlite:// (embedded) or postgres:// (scale-out)".into(),
                );
            };
            if kind == DatabaseKind::Sqlite && is_in_memory(v) {
                return Err(
                    "an in-memory SQLite database lives and dies with one connection, \
                     so every request would fail; use a file such as sqlite://squeeze.db"
                        .into(),
                );
            }
            d.database = Some((v.to_owned(), kind));
            Ok(())
        },
    },
    Setting {
        key: "bind",
        value_name: "ADDR",
        default: Some("127.0.0.1:8080"),
        secret: false,
        doc: "Address the HTTP server listens on",
        parse: |v, d| {
            d.bind =
                Some(v.parse().map_err(|_| {
                    "expected an IP address and port, like 127.0.0.1:8080".to_owned()
                })?);
            Ok(())
        },
    },
    Setting {
        key: "http_header_timeout",
        value_name: "DURATION",
        default: Some("10s"),
        secret: false,
        doc: "How long a client may take to send a request's headers before its connection is closed",
        parse: |v, d| {
            d.http_header_timeout = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "http_idle_timeout",
        value_name: "DURATION",
        default: Some("60s"),
        secret: false,
        doc: "How long a keep-alive connection may sit idle (nothing read or written) before it is closed",
        parse: |v, d| {
            d.http_idle_timeout = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "http_max_connections",
        value_name: "N",
        default: Some("10000"),
        secret: false,
        doc: "Most HTTP connections open at once; further clients wait to be accepted (1-1000000; keep it under the file limit, ulimit -n)",
        parse: |v, d| {
            d.http_max_connections = Some(
                v.parse::<NonZeroUsize>()
                    .ok()
                    .filter(|n| n.get() <= 1_000_000)
                    .ok_or("expected a whole number from 1 to 1000000")?,
            );
            Ok(())
        },
    },
    Setting {
        key: "public_url",
        value_name: "URL",
        default: None,
        secret: false,
        doc: "Base URL of links in emails and pages [default: http://<bind>]",
        parse: |v, d| {
            d.public_url = Some(
                Url::parse(v)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .ok_or("expected an http:// or https:// URL")?,
            );
            Ok(())
        },
    },
    Setting {
        key: "smtp_url",
        value_name: "URL",
        default: None,
        secret: true,
        doc: "SMTP relay: smtp://host:25, smtp://user:pass@host:587?tls=required, \
              ?tls=opportunistic, smtps://user:pass@host:465 [default: .eml files in outbox]",
        parse: |v, d| {
            d.smtp = Some(SmtpSettings::from_url(v)?);
            Ok(())
        },
    },
    Setting {
        key: "smtp_ca_file",
        value_name: "PEM_FILE",
        default: None,
        secret: false,
        doc: "PEM file of extra root certificates to trust for the relay's TLS",
        parse: |v, d| {
            d.smtp_ca = Some(read_certificates(Path::new(v))?);
            Ok(())
        },
    },
    Setting {
        key: "from",
        value_name: "MAILBOX",
        default: Some("Squeeze <newsletter@squeeze.localhost>"),
        secret: false,
        doc: "From mailbox of every email; its display name is the list's name on pages",
        parse: |v, d| {
            if v.chars().any(char::is_control) {
                return Err("it contains a control character".into());
            }
            d.from =
                Some(v.parse().map_err(|e| {
                    format!("expected a mailbox like `News <news@example.com>` ({e})")
                })?);
            Ok(())
        },
    },
    Setting {
        key: "admin_token",
        value_name: "TOKEN",
        default: None,
        secret: true,
        doc: "Bearer token (16+ characters) for the admin API and dashboard; unset disables them",
        parse: |v, d| {
            d.admin_token = Some(token(v)?);
            Ok(())
        },
    },
    Setting {
        key: "rate",
        value_name: "PER_SECOND",
        default: Some("50"),
        secret: false,
        doc: "Messages per second, across all senders of the process",
        parse: |v, d| {
            d.rate = Some(
                parse_nonzero(v)
                    .ok_or("expected a whole number of messages per second, at least 1")?,
            );
            Ok(())
        },
    },
    Setting {
        key: "burst",
        value_name: "N",
        default: None,
        secret: false,
        doc: "Messages that may go out at once before `rate` paces them [default: rate]",
        parse: |v, d| {
            d.burst = Some(parse_nonzero(v).ok_or("expected a whole number, at least 1")?);
            Ok(())
        },
    },
    Setting {
        key: "concurrency",
        value_name: "N",
        default: Some("4"),
        secret: false,
        doc: "SMTP connections, i.e. messages on the wire at once (1-1000)",
        parse: |v, d| {
            d.concurrency = Some(
                v.parse::<NonZeroUsize>()
                    .ok()
                    .filter(|n| n.get() <= 1000)
                    .ok_or("expected a whole number from 1 to 1000")?,
            );
            Ok(())
        },
    },
    Setting {
        key: "templates",
        value_name: "DIR",
        default: Some("./templates"),
        secret: false,
        doc: "Folder of email and page templates",
        parse: |v, d| {
            let templates = PathBuf::from(v);
            if !templates.is_dir() {
                return Err("no such folder".into());
            }
            d.templates = Some(templates);
            Ok(())
        },
    },
    Setting {
        key: "subscribe_per_minute",
        value_name: "N",
        default: Some("10"),
        secret: false,
        doc: "Sign-up requests per client IP per minute; 0 turns the limit off",
        parse: |v, d| {
            d.subscribe_per_minute = Some(
                v.parse::<u32>()
                    .map(NonZeroU32::new)
                    .map_err(|_| "expected a whole number (0: no limit)")?,
            );
            Ok(())
        },
    },
    Setting {
        key: "list_id",
        value_name: "LIST_ID",
        default: None,
        secret: false,
        doc: "The List-Id header of digests (RFC 2919), e.g. `News <news.example.com>` \
              [default: <from name> <<from user>.<from domain>>]",
        parse: |v, d| {
            if !list_id_ok(v) {
                return Err("expected `Name <id.example.com>` on one line: a dot-atom \
                     with at least one dot between `<` and `>` (RFC 2919)"
                    .into());
            }
            d.list_id = Some(v.to_owned());
            Ok(())
        },
    },
    Setting {
        key: "unsubscribe_mailto",
        value_name: "ADDRESS",
        default: None,
        secret: false,
        doc: "An address offered as <mailto:…> in List-Unsubscribe besides the one-click URL",
        parse: |v, d| {
            let a = crate::domain::EmailAddress::parse(v).map_err(|e| e.to_string())?;
            d.unsubscribe_mailto = Some(format!("mailto:{a}?subject=unsubscribe"));
            Ok(())
        },
    },
    Setting {
        key: "domain_rates",
        value_name: "DOMAIN=RATE,…",
        default: None,
        secret: false,
        doc: "Per-recipient-domain limits, messages per second: gmail.com=20, outlook.com=10",
        parse: |v, d| {
            d.domain_rates = Some(parse_domain_rates(v)?);
            Ok(())
        },
    },
    Setting {
        key: "pause_threshold",
        value_name: "SHARE",
        default: Some("20%"),
        secret: false,
        doc: "A digest pauses itself when more than this share of its last `pause_window` \
              attempts failed permanently or at the connection level",
        parse: |v, d| {
            d.pause_threshold = Some(parse_share(v).ok_or("expected a share such as 20% or 0.2")?);
            Ok(())
        },
    },
    Setting {
        key: "pause_window",
        value_name: "N",
        default: Some("200"),
        secret: false,
        doc: "How many recent attempts of a digest `pause_threshold` looks at (10-100000)",
        parse: |v, d| {
            d.pause_window = Some(
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (10..=100_000).contains(n))
                    .ok_or("expected a whole number from 10 to 100000")?,
            );
            Ok(())
        },
    },
    Setting {
        key: "metrics_token",
        value_name: "TOKEN",
        default: None,
        secret: true,
        doc: "A token (16+ characters) that may read /metrics besides the admin token",
        parse: |v, d| {
            d.metrics_token = Some(token(v)?);
            Ok(())
        },
    },
    Setting {
        key: "log_format",
        value_name: "text|json",
        default: Some("text"),
        secret: false,
        doc: "text (human-readable) or json (one JSON object a line)",
        parse: |v, d| {
            d.log_format = Some(match v {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err("expected text or json".into()),
            });
            Ok(())
        },
    },
    Setting {
        key: "retry_initial",
        value_name: "DURATION",
        default: Some("30s"),
        secret: false,
        doc: "First retry delay after a transient failure; it doubles each attempt",
        parse: |v, d| {
            d.retry_initial = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "retry_max",
        value_name: "DURATION",
        default: Some("30m"),
        secret: false,
        doc: "Longest retry delay, with up to 25% jitter",
        parse: |v, d| {
            d.retry_max = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "throttle_cooldown",
        value_name: "DURATION",
        default: Some("30s"),
        secret: false,
        doc: "How long a domain that answered 421, 451 or 454 is left alone",
        parse: |v, d| {
            d.throttle_cooldown = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "missed_grace",
        value_name: "DURATION",
        default: Some("6h"),
        secret: false,
        doc: "A digest (or one wave of a digest delivered at each subscriber's time) whose send time passed while nothing ran is still sent within this window",
        parse: |v, d| {
            d.missed_grace = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "digest_ttl",
        value_name: "DURATION",
        default: Some("24h"),
        secret: false,
        doc: "How long a one-off digest's deliveries are retried when there is no daily schedule",
        parse: |v, d| {
            d.digest_ttl = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "fanout_chunk",
        value_name: "N",
        default: Some("5000"),
        secret: false,
        doc: "Subscribers per fan-out chunk (1-1000000): each chunk of a digest's deliveries commits on its own, so sending starts on the first while the rest is written",
        parse: |v, d| {
            d.fanout_chunk = Some(
                v.parse::<NonZeroU32>()
                    .ok()
                    .filter(|n| n.get() <= 1_000_000)
                    .ok_or("expected a whole number from 1 to 1000000")?,
            );
            Ok(())
        },
    },
    Setting {
        key: "delivery_retention",
        value_name: "DURATION",
        default: Some("90d"),
        secret: false,
        doc: "How long each delivery's own record is kept (0: for ever): older ones of finished digests are deleted, their digest's counts kept in a roll-up, so every statistic stays the same",
        parse: |v, d| {
            d.delivery_retention = Some(retention(v)?);
            Ok(())
        },
    },
    Setting {
        key: "outbox",
        value_name: "DIR",
        default: Some("./outbox"),
        secret: false,
        doc: "Folder for .eml files when no SMTP relay is set",
        parse: |v, d| {
            d.outbox = Some(PathBuf::from(v));
            Ok(())
        },
    },
    Setting {
        key: "confirmation_ttl",
        value_name: "DURATION",
        default: Some("48h"),
        secret: false,
        doc: "How long a confirmation link stays valid",
        parse: |v, d| {
            d.confirmation_ttl = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "welcome",
        value_name: "BOOL",
        default: Some("true"),
        secret: false,
        doc: "Send a welcome email (templates welcome.*) once a subscriber confirms",
        parse: |v, d| {
            d.welcome = Some(boolean(v)?);
            Ok(())
        },
    },
    Setting {
        key: "smtp_timeout",
        value_name: "DURATION",
        default: Some("30s"),
        secret: false,
        doc: "Timeout for connecting and for each message's SMTP exchange",
        parse: |v, d| {
            d.smtp_timeout = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "lease",
        value_name: "DURATION",
        default: Some("5m"),
        secret: false,
        doc: "Last resort for a worker that heartbeats but makes no progress: how long its claims last after its last progress (a dead worker's claims are taken over within seconds); at least twice smtp_timeout",
        parse: |v, d| {
            d.lease = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "shutdown_timeout",
        value_name: "DURATION",
        default: Some("30s"),
        secret: false,
        doc: "How long a stopping worker waits for messages on the wire",
        parse: |v, d| {
            d.shutdown_timeout = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "import_max_bytes",
        value_name: "SIZE",
        default: Some("100MB"),
        secret: false,
        doc: "Largest CSV `subscribers import` reads (e.g. 100MB, 512KB); larger files are refused",
        parse: |v, d| {
            d.import_max_bytes = Some(parse_size(v).ok_or("expected a size like 100MB or 512KB")?);
            Ok(())
        },
    },
    Setting {
        key: "dkim_selector",
        value_name: "SELECTOR",
        default: None,
        secret: false,
        doc: "DKIM selector of `dkim_key`: its public key is published at \
              <selector>._domainkey.<dkim_domain>",
        parse: |v, d| {
            d.dkim_selector = Some(dns_name(v)?);
            Ok(())
        },
    },
    Setting {
        key: "dkim_key",
        value_name: "PEM_FILE",
        default: None,
        secret: false,
        doc: "Private key (PEM: RSA of 2048+ bits, or Ed25519) that signs every email (DKIM); \
              unset: nothing is signed",
        parse: |v, d| {
            d.dkim_key = Some(DkimKey::load(Path::new(v))?);
            Ok(())
        },
    },
    Setting {
        key: "dkim_second_selector",
        value_name: "SELECTOR",
        default: None,
        secret: false,
        doc: "Selector of `dkim_second_key`",
        parse: |v, d| {
            d.dkim_second_selector = Some(dns_name(v)?);
            Ok(())
        },
    },
    Setting {
        key: "dkim_second_key",
        value_name: "PEM_FILE",
        default: None,
        secret: false,
        doc: "A second key of the other algorithm (Ed25519 beside RSA, or RSA beside Ed25519): \
              every email then carries both signatures (dual signing)",
        parse: |v, d| {
            d.dkim_second_key = Some(DkimKey::load(Path::new(v))?);
            Ok(())
        },
    },
    Setting {
        key: "dkim_domain",
        value_name: "DOMAIN",
        default: None,
        secret: false,
        doc: "The signing domain (d=); must align with the From domain (DMARC relaxed) \
              [default: the From domain]",
        parse: |v, d| {
            d.dkim_domain = Some(dns_name(v)?.to_ascii_lowercase());
            Ok(())
        },
    },
    Setting {
        key: "postal_address",
        value_name: "TEXT",
        default: None,
        secret: false,
        doc: "The sender's physical postal address, shown in every digest's footer (CAN-SPAM)",
        parse: |v, d| {
            let v = v.trim();
            if v.chars().any(char::is_control) || v.len() > 300 {
                return Err("expected one line of at most 300 characters".into());
            }
            d.postal_address = Some(v.to_owned()).filter(|v| !v.is_empty());
            Ok(())
        },
    },
    Setting {
        key: "archive",
        value_name: "BOOL",
        default: Some("true"),
        secret: false,
        doc: "Publish sent digests at /archive (pages and an Atom feed) and put a \"View in \
              browser\" link in every digest email",
        parse: |v, d| {
            d.archive = Some(boolean(v)?);
            Ok(())
        },
    },
    Setting {
        key: "feed_interval",
        value_name: "DURATION",
        default: Some("15m"),
        secret: false,
        doc: "How often each feed is polled for new entries",
        parse: |v, d| {
            d.feed_interval = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "feed_timeout",
        value_name: "DURATION",
        default: Some("10s"),
        secret: false,
        doc: "Timeout for fetching one feed, body included",
        parse: |v, d| {
            d.feed_timeout = Some(duration(v)?);
            Ok(())
        },
    },
    Setting {
        key: "feed_max_bytes",
        value_name: "SIZE",
        default: Some("5MB"),
        secret: false,
        doc: "Largest feed read (e.g. 5MB), counted after decompression; larger ones fail",
        parse: |v, d| {
            d.feed_max_bytes = Some(parse_size(v).ok_or("expected a size like 5MB or 512KB")?);
            Ok(())
        },
    },
    Setting {
        key: "feed_allow_private",
        value_name: "BOOL",
        default: Some("false"),
        secret: false,
        doc: "Allow feeds on loopback, private and link-local addresses (refused by default so editors cannot make the server fetch internal URLs)",
        parse: |v, d| {
            d.feed_allow_private = Some(boolean(v)?);
            Ok(())
        },
    },
    Setting {
        key: "bounce_address",
        value_name: "ADDRESS",
        default: None,
        secret: false,
        doc: "Envelope sender of every email, as bounces+<token>@domain (VERP), so bounces name their delivery; unset: the From address",
        parse: |v, d| {
            let v = v.trim();
            let fits = v.parse::<lettre::Address>().is_ok()
                && !v.contains('+')
                && v.rsplit_once('@').is_some_and(|(_, dom)| dom.contains('.'));
            if !fits {
                return Err(
                    "expected an address like bounces@bounce.example.com, without a `+`".into(),
                );
            }
            d.bounce_address = Some(v.to_owned());
            Ok(())
        },
    },
    Setting {
        key: "bounce_secret",
        value_name: "SECRET",
        default: None,
        secret: true,
        doc: "Key of the MAC in each VERP token (at least 32 characters); required with bounce_address",
        parse: |v, d| {
            if v.len() < crate::domain::bounce::MIN_SECRET {
                return Err(format!(
                    "use at least {} characters",
                    crate::domain::bounce::MIN_SECRET
                ));
            }
            d.bounce_secret = Some(v.to_owned());
            Ok(())
        },
    },
    Setting {
        key: "inbound_max_bytes",
        value_name: "SIZE",
        default: Some("10MB"),
        secret: false,
        doc: "Largest message `squeeze inbound` reads; a larger one is ignored (logged, exit 0)",
        parse: |v, d| {
            d.inbound_max_bytes = Some(parse_size(v).ok_or("expected a size like 10MB or 512KB")?);
            Ok(())
        },
    },
    Setting {
        key: "complaint_pause_rate",
        value_name: "SHARE",
        default: Some("0.003"),
        secret: false,
        doc: "A digest pauses itself when complaints exceed this share of its delivered emails (0.003 or 0.3%; 0 disables)",
        parse: |v, d| {
            let zero = v.trim().trim_end_matches('%').trim().parse::<f64>() == Ok(0.0);
            d.complaint_pause_rate = Some(if zero {
                0.0
            } else {
                parse_share(v).ok_or("expected a share like 0.003 or 0.3%, or 0")?
            });
            Ok(())
        },
    },
    Setting {
        key: "complaint_pause_min",
        value_name: "COUNT",
        default: Some("1000"),
        secret: false,
        doc: "Delivered emails a digest needs before its complaint rate can pause it",
        parse: |v, d| {
            d.complaint_pause_min = Some(
                v.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or("expected a whole number, 0 or more")?,
            );
            Ok(())
        },
    },
    Setting {
        key: "doctor_nameserver",
        value_name: "ADDR",
        default: None,
        secret: false,
        doc: "DNS server `squeeze doctor` asks, as ip:port over UDP and TCP [default: the system resolver]",
        parse: |v, d| {
            d.doctor_nameserver =
                Some(v.trim().parse().map_err(|_| {
                    "expected an IP address and port, like 127.0.0.1:53".to_owned()
                })?);
            Ok(())
        },
    },
    Setting {
        key: "mailgun_signing_key",
        value_name: "KEY",
        default: None,
        secret: true,
        doc: "Mailgun's HTTP webhook signing key; turns on POST /webhooks/mailgun (unset: 404)",
        parse: |v, d| {
            d.mailgun_signing_key = Some(non_empty(v)?);
            Ok(())
        },
    },
    Setting {
        key: "postmark_webhook_user",
        value_name: "USER",
        default: None,
        secret: false,
        doc: "User name in the Postmark webhook URL's HTTP Basic auth; with postmark_webhook_password turns on POST /webhooks/postmark",
        parse: |v, d| {
            let v = non_empty(v)?;
            if v.contains(':') {
                return Err("a Basic auth user name cannot contain `:`".into());
            }
            d.postmark_webhook_user = Some(v);
            Ok(())
        },
    },
    Setting {
        key: "postmark_webhook_password",
        value_name: "PASSWORD",
        default: None,
        secret: true,
        doc: "Password in the Postmark webhook URL's HTTP Basic auth (at least 16 characters)",
        parse: |v, d| {
            if v.len() < 16 {
                return Err("use at least 16 characters".into());
            }
            d.postmark_webhook_password = Some(v.to_owned());
            Ok(())
        },
    },
    Setting {
        key: "sendgrid_public_key",
        value_name: "KEY",
        default: None,
        secret: false,
        doc: "SendGrid's Signed Event Webhook verification key (base64, as SendGrid shows it); turns on POST /webhooks/sendgrid (unset: 404)",
        parse: |v, d| {
            d.sendgrid_public_key = Some(crate::inbound::webhooks::sendgrid::PublicKey::parse(v)?);
            Ok(())
        },
    },
    Setting {
        key: "ses_topic_arn",
        value_name: "ARN[,ARN...]",
        default: None,
        secret: false,
        doc: "The SNS topics (comma-separated ARNs) whose SES bounces and complaints are heard; turns on POST /webhooks/ses (unset: 404)",
        parse: |v, d| {
            let topics: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            if topics.is_empty() {
                return Err("expected one or more SNS topic ARNs, comma-separated".into());
            }
            if let Some(bad) = topics
                .iter()
                .find(|t| !t.starts_with("arn:aws") || t.split(':').count() != 6)
            {
                return Err(format!(
                    "`{bad}` is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
                ));
            }
            d.ses_topic_arn = Some(topics);
            Ok(())
        },
    },
    Setting {
        key: "ses_sns_cert_url_override",
        value_name: "URL",
        default: None,
        secret: false,
        doc: "FOR TESTS ONLY: fetch SNS signing certificates from this base URL (http allowed) and confirm subscriptions only on its host, instead of sns.<region>.amazonaws.com",
        parse: |v, d| {
            let mut url = url::Url::parse(v.trim()).map_err(|e| format!("expected a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err("expected an http or https URL".into());
            }
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            d.ses_sns_cert_url_override = Some(url);
            Ok(())
        },
    },
];
/// Every key, for code that needs only the names (the README test, the file check).
pub const KEYS: [&str; TABLE.len()] = {
    let mut keys = [""; TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        keys[i] = TABLE[i].key;
        i += 1;
    }
    keys
};
