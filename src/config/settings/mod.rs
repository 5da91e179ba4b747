//! The one declaration of every setting: its key, default, documentation and parser.
//!
//! `TABLE` drives everything else: the keys squeeze.toml may hold, the `SQUEEZE_*` variables
//! read, the global `--flags` the CLI generates (with this documentation as their help), the
//! defaults, the validation, and the error sentence (`setting `key` = "value" (from …) is
//! invalid: <the parser's problem>.`). The entries are in the order they are checked, so the
//! first bad setting reported is the same as before the table existed.
//!
//! Each setting is a `const` in the file of its concern (process, server, relay, sending,
//! digests, subscribers, dkim, feeds, inbound); `TABLE` below is the one list of them and so
//! the one order: of checking (the first error), of `--help`, of `KEYS`.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use url::Url;

use super::{DatabaseKind, LogFormat};
use crate::mail::dkim::DkimKey;
use crate::mail::settings::SmtpSettings;

mod digests;
mod dkim;
mod feeds;
mod inbound;
mod process;
mod relay;
mod sending;
mod server;
mod subscribers;

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

/// The settings, in the order they are checked: this list, not the files the entries live in,
/// decides which bad setting is reported first and the order of `--help`.
pub const TABLE: &[Setting] = &[
    process::DATABASE_URL,
    server::BIND,
    server::HTTP_HEADER_TIMEOUT,
    server::HTTP_IDLE_TIMEOUT,
    server::HTTP_MAX_CONNECTIONS,
    server::PUBLIC_URL,
    relay::SMTP_URL,
    relay::SMTP_CA_FILE,
    relay::FROM,
    server::ADMIN_TOKEN,
    sending::RATE,
    sending::BURST,
    sending::CONCURRENCY,
    process::TEMPLATES,
    subscribers::SUBSCRIBE_PER_MINUTE,
    digests::LIST_ID,
    digests::UNSUBSCRIBE_MAILTO,
    sending::DOMAIN_RATES,
    sending::PAUSE_THRESHOLD,
    sending::PAUSE_WINDOW,
    server::METRICS_TOKEN,
    process::LOG_FORMAT,
    sending::RETRY_INITIAL,
    sending::RETRY_MAX,
    sending::THROTTLE_COOLDOWN,
    digests::MISSED_GRACE,
    digests::DIGEST_TTL,
    digests::FANOUT_CHUNK,
    digests::DELIVERY_RETENTION,
    relay::OUTBOX,
    subscribers::CONFIRMATION_TTL,
    subscribers::WELCOME,
    relay::SMTP_TIMEOUT,
    sending::LEASE,
    sending::SHUTDOWN_TIMEOUT,
    subscribers::IMPORT_MAX_BYTES,
    dkim::DKIM_SELECTOR,
    dkim::DKIM_KEY,
    dkim::DKIM_SECOND_SELECTOR,
    dkim::DKIM_SECOND_KEY,
    dkim::DKIM_DOMAIN,
    digests::POSTAL_ADDRESS,
    digests::ARCHIVE,
    feeds::FEED_INTERVAL,
    feeds::FEED_TIMEOUT,
    feeds::FEED_MAX_BYTES,
    feeds::FEED_ALLOW_PRIVATE,
    relay::BOUNCE_ADDRESS,
    relay::BOUNCE_SECRET,
    inbound::INBOUND_MAX_BYTES,
    sending::COMPLAINT_PAUSE_RATE,
    sending::COMPLAINT_PAUSE_MIN,
    process::DOCTOR_NAMESERVER,
    inbound::MAILGUN_SIGNING_KEY,
    inbound::POSTMARK_WEBHOOK_USER,
    inbound::POSTMARK_WEBHOOK_PASSWORD,
    inbound::SENDGRID_PUBLIC_KEY,
    inbound::SES_TOPIC_ARN,
    inbound::SES_SNS_CERT_URL_OVERRIDE,
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
