//! Typed configuration: defaults < squeeze.toml < SQUEEZE_* environment < command-line flags.
//! Everything is validated here, once, so the rest of the program only sees good values.
//!
//! Each setting is declared once, in `settings::TABLE`: key, default, documentation and a
//! parser (a plain table rather than a layering crate such as figment: the layers are four
//! string maps, every value arrives as text from a flag or a variable anyway, and the error
//! sentence that names the key, its value and its source is ours to keep word for word).
//! The CLI generates its global flags from the same table.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use url::Url;

use crate::domain::RetryPolicy;
use crate::domain::liveness::shortest_lease;
use crate::mail::dkim::{DkimKey, DkimSettings, SigningKey};

mod settings;
mod values;

#[cfg(test)]
use crate::mail::settings::SmtpSecurity;
use crate::mail::settings::SmtpSettings;
pub use settings::{Setting, TABLE};

/// Every setting's key: in squeeze.toml as is, as the environment variable `SQUEEZE_<KEY>` and
/// as the flag `--key-with-dashes`. Defaults and meanings: `TABLE`, and the README's
/// configuration table (a test keeps the two in step).
pub const SETTINGS: &[&str] = &settings::KEYS;

/// Where a value came from, so an error can say what to edit.
#[derive(Debug, Clone)]
enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("the default"),
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Env(v) => write!(f, "environment variable {v}"),
            Self::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

/// A bad setting: one sentence that names it, where it was set, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn setting(
        setting: &Setting,
        value: &str,
        source: &Source,
        problem: impl fmt::Display,
    ) -> Self {
        let key = setting.key;
        let shown = if setting.secret {
            "<hidden>".to_owned()
        } else {
            format!("{value:?}")
        };
        Self(format!(
            "setting `{key}` = {shown} (from {source}) is invalid: {problem}."
        ))
    }
}

use crate::store::DatabaseKind;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub database_kind: DatabaseKind,
    pub bind: SocketAddr,
    pub public_url: Url,
    pub smtp: Option<SmtpSettings>,
    pub outbox: PathBuf,
    pub from: Mailbox,
    pub admin_token: Option<String>,
    pub rate: NonZeroU32,
    pub burst: NonZeroU32,
    pub concurrency: NonZeroUsize,
    pub templates: PathBuf,
    pub confirmation_ttl: Duration,
    /// Whether confirming queues a welcome email.
    pub welcome: bool,
    pub subscribe_per_minute: Option<NonZeroU32>,
    pub smtp_timeout: Duration,
    pub lease: Duration,
    pub http_header_timeout: Duration,
    pub http_idle_timeout: Duration,
    pub http_max_connections: NonZeroUsize,
    pub shutdown_timeout: Duration,
    /// RFC 2919 List-Id header value, e.g. `News <news.example.com>`.
    pub list_id: String,
    /// `mailto:` URI offered in List-Unsubscribe besides the one-click URL.
    pub unsubscribe_mailto: Option<String>,
    /// A digest whose send time passed while nothing ran is still sent within this window.
    pub missed_grace: Duration,
    /// How long a delivery's record is kept; `None`: for ever.
    pub delivery_retention: Option<Duration>,
    /// How long a one-off digest's deliveries are retried (daily ones: until the next).
    pub digest_ttl: Duration,
    /// Subscribers per fan-out chunk, each its own transaction.
    pub fanout_chunk: NonZeroU32,
    /// Per-recipient-domain limits, messages per second, paced evenly.
    pub domain_rates: Vec<(String, NonZeroU32)>,
    /// How long a domain that answered 421/451/454 is left alone.
    pub throttle_cooldown: Duration,
    pub retry: RetryPolicy,
    /// Share of failed attempts (permanent, or connection-level) in a digest's last
    /// `pause_window` attempts beyond which the digest pauses itself.
    pub pause_threshold: f64,
    pub pause_window: usize,
    /// A token that may read /metrics (besides the admin token), for Prometheus.
    pub metrics_token: Option<String>,
    pub log_format: LogFormat,
    /// Largest CSV file `subscribers import` reads.
    pub import_max_bytes: u64,
    /// DKIM signing: the domain and the key(s); `None`: nothing is signed.
    pub dkim: Option<DkimSettings>,
    /// The sender's postal address, in every digest's footer.
    pub postal_address: Option<String>,
    /// Whether sent digests are published at /archive (and emails link to their page).
    pub archive: bool,
    /// How often each feed is polled; each fetch's timeout; the largest body (decoded).
    pub feed_interval: Duration,
    pub feed_timeout: Duration,
    pub feed_max_bytes: u64,
    /// Whether feeds may be fetched from loopback, private and link-local addresses.
    pub feed_allow_private: bool,
    /// The VERP return path (bounce address and secret); `None`: the From address.
    pub bounce: Option<crate::domain::bounce::Verp>,
    /// Largest message `squeeze inbound` reads.
    pub inbound_max_bytes: u64,
    /// Provider webhooks' credentials; each `None` turns its webhook off.
    pub mailgun_signing_key: Option<String>,
    /// Postmark's HTTP Basic user and password.
    pub postmark_webhook: Option<(String, String)>,
    /// SendGrid's Signed Event Webhook key.
    pub sendgrid_public_key: Option<crate::inbound::webhooks::sendgrid::PublicKey>,
    /// SNS topics whose SES events are heard (empty: the SES webhook is off).
    pub ses_topic_arn: Vec<String>,
    /// For tests only: where SNS certificates are fetched from instead.
    pub ses_sns_cert_url_override: Option<url::Url>,
    /// Complaint share of a digest's delivered mail past which it pauses (0: never), once
    /// it delivered at least `complaint_pause_min`.
    pub complaint_pause_rate: f64,
    pub complaint_pause_min: i64,
    /// The DNS server `squeeze doctor` asks; `None`: the system resolver.
    pub doctor_nameserver: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Raw `key -> value` pairs from one layer.
pub type Layer = Vec<(String, String)>;

impl Config {
    /// Loads all layers. `file` is the `--config` flag's value: an explicit file must exist;
    /// otherwise `./squeeze.toml` is read when present.
    pub fn load(file: Option<&Path>, flags: Layer) -> Result<Self, ConfigError> {
        let mut values: BTreeMap<String, (String, Source)> = BTreeMap::new();
        let (path, required) = match file {
            Some(p) => (p.to_path_buf(), true),
            None => match std::env::var_os("SQUEEZE_CONFIG") {
                Some(p) => (PathBuf::from(p), true),
                None => (PathBuf::from("squeeze.toml"), false),
            },
        };
        if required || path.exists() {
            for (k, v) in read_file(&path)? {
                values.insert(k, (v, Source::File(path.clone())));
            }
        }
        for setting in TABLE {
            let var = setting.env_var();
            match std::env::var(&var) {
                Ok(v) => {
                    values.insert(setting.key.to_owned(), (v, Source::Env(var)));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(ConfigError(format!(
                        "environment variable {var} is not valid UTF-8."
                    )));
                }
                Err(std::env::VarError::NotPresent) => {}
            }
        }
        for (k, v) in flags {
            let flag = format!("--{}", k.replace('_', "-"));
            values.insert(k, (v, Source::Flag(flag)));
        }
        Self::from_values(&values)
    }

    /// Parses every setting in `TABLE` order from its layered value (or its default), then
    /// fills the defaults derived from other settings. The first bad setting is the error.
    fn from_values(values: &BTreeMap<String, (String, Source)>) -> Result<Self, ConfigError> {
        let mut draft = settings::Draft::default();
        for setting in TABLE {
            let given = values
                .get(setting.key)
                .map(|(v, s)| (v.as_str(), s))
                .filter(|(v, _)| !v.is_empty());
            let (value, source) = match (given, setting.default) {
                (Some(given), _) => given,
                (None, Some(default)) => (default, &Source::Default),
                (None, None) => continue,
            };
            (setting.parse)(value, &mut draft)
                .map_err(|problem| ConfigError::setting(setting, value, source, problem))?;
        }
        Self::finish(draft)
    }

    /// The draft of a full pass over `TABLE`: every setting with a default is there.
    fn finish(d: settings::Draft) -> Result<Self, ConfigError> {
        let missing = |key: &str| ConfigError(format!("setting `{key}` has no value."));
        let (database_url, database_kind) = d.database.ok_or_else(|| missing("database_url"))?;
        let bind = d.bind.ok_or_else(|| missing("bind"))?;
        if d.smtp.is_some() && d.public_url.is_none() {
            return Err(ConfigError(format!(
                "setting `public_url` is unset while `smtp_url` sends real mail: links in real \
                 mail would point at http://{bind}; set public_url to the address subscribers \
                 reach, such as https://news.example.com."
            )));
        }
        let public_url = match d.public_url {
            Some(u) => u,
            None => {
                let default_public = format!("http://{bind}");
                Url::parse(&default_public).map_err(|_| {
                    ConfigError(format!(
                        "setting `public_url` = {default_public:?} (from {}) is invalid: \
                         expected an http:// or https:// URL.",
                        Source::Default
                    ))
                })?
            }
        };
        let mut smtp = d.smtp;
        if let (Some(s), Some(pem)) = (smtp.as_mut(), d.smtp_ca) {
            s.extra_roots_pem = Some(pem);
        }
        let from = d.from.ok_or_else(|| missing("from"))?;
        let rate = d.rate.ok_or_else(|| missing("rate"))?;
        let list_id = match d.list_id {
            Some(l) => l,
            None => {
                let name = from
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "Squeeze".into());
                let name: String = name
                    .chars()
                    .filter(|c| !matches!(c, '<' | '>' | '"'))
                    .collect();
                format!("{name} <{}.{}>", from.email.user(), from.email.domain())
            }
        };
        let retry_initial = d.retry_initial.ok_or_else(|| missing("retry_initial"))?;
        let retry_max = d.retry_max.ok_or_else(|| missing("retry_max"))?;
        if retry_initial > retry_max {
            return Err(ConfigError(format!(
                "setting `retry_initial` ({}) is longer than `retry_max` ({}): the first retry \
                 delay cannot exceed the longest one; lower retry_initial or raise retry_max.",
                humantime::format_duration(retry_initial),
                humantime::format_duration(retry_max)
            )));
        }
        let smtp_timeout = d.smtp_timeout.ok_or_else(|| missing("smtp_timeout"))?;
        let lease = d.lease.ok_or_else(|| missing("lease"))?;
        if lease < shortest_lease(smtp_timeout) {
            return Err(ConfigError(format!(
                "setting `lease` = {lease:?} is shorter than twice `smtp_timeout` ({smtp_timeout:?}): \
                 connecting and sending one message may take that long, and a live worker's claim \
                 would be taken over while its message is on the wire."
            )));
        }
        let dkim = dkim_settings(
            &from,
            d.dkim_domain,
            [
                ("dkim_selector", "dkim_key", d.dkim_selector, d.dkim_key),
                (
                    "dkim_second_selector",
                    "dkim_second_key",
                    d.dkim_second_selector,
                    d.dkim_second_key,
                ),
            ],
        )?;
        let bounce = match (d.bounce_address, d.bounce_secret) {
            (None, None) => None,
            (Some(address), Some(secret)) => Some(
                crate::domain::bounce::Verp::new(&address, &secret)
                    .map_err(|e| ConfigError(format!("setting `bounce_address`: {e}.")))?,
            ),
            (Some(_), None) => {
                return Err(ConfigError(
                    "setting `bounce_address` is set but `bounce_secret` is not: give a secret of \
                     at least 32 characters that keys the VERP tokens."
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError(
                    "setting `bounce_secret` is set but `bounce_address` is not: set the address \
                     bounces go to, or remove the secret."
                        .into(),
                ));
            }
        };
        let postmark_webhook = match (d.postmark_webhook_user, d.postmark_webhook_password) {
            (None, None) => None,
            (Some(user), Some(password)) => Some((user, password)),
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError(
                    "settings `postmark_webhook_user` and `postmark_webhook_password` go \
                     together: set both (the Basic auth in the Postmark webhook URL), or neither."
                        .into(),
                ));
            }
        };
        let retry = RetryPolicy::builder()
            .initial(retry_initial)
            .max(retry_max)
            .build();
        Ok(Self {
            database_url,
            database_kind,
            bind,
            public_url,
            smtp,
            outbox: d.outbox.ok_or_else(|| missing("outbox"))?,
            from,
            admin_token: d.admin_token,
            rate,
            burst: d.burst.unwrap_or(rate),
            concurrency: d.concurrency.ok_or_else(|| missing("concurrency"))?,
            templates: d.templates.ok_or_else(|| missing("templates"))?,
            confirmation_ttl: d
                .confirmation_ttl
                .ok_or_else(|| missing("confirmation_ttl"))?,
            welcome: d.welcome.ok_or_else(|| missing("welcome"))?,
            subscribe_per_minute: d
                .subscribe_per_minute
                .ok_or_else(|| missing("subscribe_per_minute"))?,
            smtp_timeout,
            lease,
            http_header_timeout: d
                .http_header_timeout
                .ok_or_else(|| missing("http_header_timeout"))?,
            http_idle_timeout: d
                .http_idle_timeout
                .ok_or_else(|| missing("http_idle_timeout"))?,
            http_max_connections: d
                .http_max_connections
                .ok_or_else(|| missing("http_max_connections"))?,
            shutdown_timeout: d
                .shutdown_timeout
                .ok_or_else(|| missing("shutdown_timeout"))?,
            list_id,
            unsubscribe_mailto: d.unsubscribe_mailto,
            missed_grace: d.missed_grace.ok_or_else(|| missing("missed_grace"))?,
            delivery_retention: d
                .delivery_retention
                .ok_or_else(|| missing("delivery_retention"))?,
            digest_ttl: d.digest_ttl.ok_or_else(|| missing("digest_ttl"))?,
            fanout_chunk: d.fanout_chunk.ok_or_else(|| missing("fanout_chunk"))?,
            domain_rates: d.domain_rates.unwrap_or_default(),
            throttle_cooldown: d
                .throttle_cooldown
                .ok_or_else(|| missing("throttle_cooldown"))?,
            retry,
            pause_threshold: d
                .pause_threshold
                .ok_or_else(|| missing("pause_threshold"))?,
            pause_window: d.pause_window.ok_or_else(|| missing("pause_window"))?,
            metrics_token: d.metrics_token,
            log_format: d.log_format.ok_or_else(|| missing("log_format"))?,
            import_max_bytes: d
                .import_max_bytes
                .ok_or_else(|| missing("import_max_bytes"))?,
            dkim,
            postal_address: d.postal_address,
            archive: d.archive.ok_or_else(|| missing("archive"))?,
            feed_interval: d.feed_interval.ok_or_else(|| missing("feed_interval"))?,
            feed_timeout: d.feed_timeout.ok_or_else(|| missing("feed_timeout"))?,
            feed_max_bytes: d.feed_max_bytes.ok_or_else(|| missing("feed_max_bytes"))?,
            feed_allow_private: d
                .feed_allow_private
                .ok_or_else(|| missing("feed_allow_private"))?,
            bounce,
            inbound_max_bytes: d
                .inbound_max_bytes
                .ok_or_else(|| missing("inbound_max_bytes"))?,
            mailgun_signing_key: d.mailgun_signing_key,
            postmark_webhook,
            sendgrid_public_key: d.sendgrid_public_key,
            ses_topic_arn: d.ses_topic_arn.unwrap_or_default(),
            ses_sns_cert_url_override: d.ses_sns_cert_url_override,
            complaint_pause_rate: d
                .complaint_pause_rate
                .ok_or_else(|| missing("complaint_pause_rate"))?,
            complaint_pause_min: d
                .complaint_pause_min
                .ok_or_else(|| missing("complaint_pause_min"))?,
            doctor_nameserver: d.doctor_nameserver,
        })
    }

    /// What is valid but probably a mistake, one sentence each, for the log at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.smtp.is_some() && self.public_url.scheme() == "http" {
            out.push(format!(
                "public_url {} is plain http while smtp_url sends real mail: one-click \
                 List-Unsubscribe (RFC 8058) and the large mailbox providers expect https links",
                self.public_url
            ));
        }
        if self.smtp.is_some() && self.postal_address.is_none() {
            out.push(
                "no `postal_address`: commercial mail should show the sender's postal address \
                 (CAN-SPAM); set it to show it in every digest's footer"
                    .to_owned(),
            );
        }
        if let Some(url) = &self.ses_sns_cert_url_override {
            out.push(format!(
                "ses_sns_cert_url_override is set ({url}): SNS signing certificates are fetched \
                 from there instead of sns.<region>.amazonaws.com; this is for tests only and \
                 lets whoever serves that URL forge SES bounces and complaints"
            ));
        }
        out
    }
    /// `public_url` joined with a path such as `/confirm`.
    pub fn link(&self, path: &str, token: &str) -> String {
        let mut url = self.public_url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url.query_pairs_mut().clear().append_pair("token", token);
        url.into()
    }
}

/// The DKIM settings from their parts: each key needs its selector (and the other way round),
/// a second key is of the other algorithm, and the signing domain aligns with the From domain.
fn dkim_settings(
    from: &Mailbox,
    domain: Option<String>,
    pairs: [(&str, &str, Option<String>, Option<DkimKey>); 2],
) -> Result<Option<DkimSettings>, ConfigError> {
    let mut keys = Vec::new();
    for (selector_key, key_key, selector, key) in pairs {
        match (selector, key) {
            (Some(selector), Some(key)) => keys.push(SigningKey { selector, key }),
            (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError(format!(
                    "setting `{selector_key}` is set but `{key_key}` is not: give the key file it names."
                )));
            }
            (None, Some(_)) => {
                return Err(ConfigError(format!(
                    "setting `{key_key}` is set but `{selector_key}` is not: give the selector its public key is published under."
                )));
            }
        }
    }
    match keys.as_slice() {
        [] if domain.is_some() => {
            return Err(ConfigError(
                "setting `dkim_domain` is set but `dkim_key` is not: give the key that signs for it."
                    .into(),
            ));
        }
        [] => return Ok(None),
        [_, second] if keys[0].key.algorithm() == second.key.algorithm() => {
            return Err(ConfigError(format!(
                "setting `dkim_second_key` is a second {} key: dual signing takes one RSA and one Ed25519 key.",
                second.key.algorithm()
            )));
        }
        _ => {}
    }
    let from_domain = from.email.domain().to_ascii_lowercase();
    let domain = domain.unwrap_or_else(|| from_domain.clone());
    if !crate::domain::dmarc::aligned_relaxed(&domain, &from_domain) {
        return Err(ConfigError(format!(
            "setting `dkim_domain` = {domain:?} does not align with the From domain {from_domain:?}: \
             DMARC (relaxed alignment) needs both under the same organisational domain."
        )));
    }
    Ok(Some(DkimSettings { domain, keys }))
}

fn read_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}.", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError(format!(
            "config file {} is not valid TOML: {}.",
            path.display(),
            e.message()
        ))
    })?;
    let mut out = Vec::new();
    for (key, v) in table {
        if !SETTINGS.contains(&key.as_str()) {
            return Err(ConfigError(format!(
                "config file {} has an unknown setting `{key}`; known settings are listed in the README.",
                path.display()
            )));
        }
        let v = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            // domain_rates = { "gmail.com" = 20 }
            toml::Value::Table(t) => t
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            _ => {
                return Err(ConfigError(format!(
                    "config file {}: setting `{key}` must be a string or a number.",
                    path.display()
                )));
            }
        };
        out.push((key, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
