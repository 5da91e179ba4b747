//! Typed configuration: defaults < squeeze.toml < SQUEEZE_* environment < command-line flags.
//! Everything is validated here, once, so the rest of the program only sees good values.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use url::Url;

use crate::domain::RetryPolicy;

/// Every setting's key: in squeeze.toml as is, as the environment variable `SQUEEZE_<KEY>` and
/// as the flag `--key-with-dashes`. Defaults and meanings: the README's configuration table
/// (a test keeps the two in step).
pub const SETTINGS: &[&str] = &[
    "database_url",
    "bind",
    "public_url",
    "smtp_url",
    "outbox",
    "from",
    "admin_token",
    "rate",
    "burst",
    "concurrency",
    "templates",
    "confirmation_ttl",
    "subscribe_per_minute",
    "smtp_timeout",
    "lease",
    "shutdown_timeout",
    "list_id",
    "unsubscribe_mailto",
    "missed_grace",
    "digest_ttl",
    "domain_rates",
    "throttle_cooldown",
    "retry_initial",
    "retry_max",
    "pause_threshold",
    "pause_window",
    "metrics_token",
    "log_format",
    "smtp_ca_file",
];

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
    fn setting(key: &str, value: &str, source: &Source, problem: impl fmt::Display) -> Self {
        let shown = if matches!(key, "admin_token" | "smtp_url" | "metrics_token") {
            "<hidden>".to_owned()
        } else {
            format!("{value:?}")
        };
        Self(format!(
            "setting `{key}` = {shown} (from {source}) is invalid: {problem}."
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain SMTP (a local relay).
    None,
    /// STARTTLS when the server offers it.
    Opportunistic,
    /// STARTTLS or fail.
    Required,
    /// TLS from the first byte (smtps://, port 465).
    Implicit,
}

#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Name sent in EHLO (the URL's path, as in lettre's URL form).
    pub hello_name: Option<String>,
    /// Extra trusted root certificates (PEM), for a relay with a private CA.
    pub extra_roots_pem: Option<Vec<u8>>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl SmtpSettings {
    /// lettre's URL form: `smtp://[user:pass@]host[:port][/ehlo-name][?tls=required|opportunistic]`
    /// or `smtps://…` for implicit TLS.
    pub fn from_url(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None) => (SmtpSecurity::None, 25),
            ("smtp", Some("required")) => (SmtpSecurity::Required, 587),
            ("smtp", Some("opportunistic")) => (SmtpSecurity::Opportunistic, 587),
            ("smtps", None) => (SmtpSecurity::Implicit, 465),
            ("smtp" | "smtps", Some(other)) => {
                return Err(format!(
                    "tls={other} is not understood; use tls=required or tls=opportunistic"
                ));
            }
            (scheme, _) => {
                return Err(format!(
                    "scheme {scheme}:// is not supported; use smtp:// or smtps://"
                ));
            }
        };
        let decode =
            |s: &str| percent_decode(s).ok_or_else(|| "credentials are not valid UTF-8".to_owned());
        let username = (!url.username().is_empty())
            .then(|| decode(url.username()))
            .transpose()?;
        let password = url.password().map(decode).transpose()?;
        if password.is_some() && username.is_none() {
            return Err("a password is given without a user name".into());
        }
        let path = url.path().trim_matches('/');
        Ok(Self {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            username,
            password,
            hello_name: (!path.is_empty()).then(|| path.to_owned()),
            extra_roots_pem: None,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

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
    pub subscribe_per_minute: Option<NonZeroU32>,
    pub smtp_timeout: Duration,
    pub lease: Duration,
    pub shutdown_timeout: Duration,
    /// RFC 2919 List-Id header value, e.g. `News <news.example.com>`.
    pub list_id: String,
    /// `mailto:` URI offered in List-Unsubscribe besides the one-click URL.
    pub unsubscribe_mailto: Option<String>,
    /// A digest whose send time passed while nothing ran is still sent within this window.
    pub missed_grace: Duration,
    /// How long a one-off digest's deliveries are retried (daily ones: until the next).
    pub digest_ttl: Duration,
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
        for key in SETTINGS {
            let var = format!("SQUEEZE_{}", key.to_ascii_uppercase());
            match std::env::var(&var) {
                Ok(v) => {
                    values.insert((*key).to_owned(), (v, Source::Env(var)));
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

    fn from_values(values: &BTreeMap<String, (String, Source)>) -> Result<Self, ConfigError> {
        let get = |key: &str| -> Option<(&str, &Source)> {
            values
                .get(key)
                .map(|(v, s)| (v.as_str(), s))
                .filter(|(v, _)| !v.is_empty())
        };
        let default = Source::Default;
        let value = |key: &'static str, fallback: &'static str| -> (&str, &Source) {
            get(key).unwrap_or((fallback, &default))
        };
        let bad = |key: &str, (v, s): (&str, &Source), problem: &dyn fmt::Display| {
            ConfigError::setting(key, v, s, problem)
        };

        let db = value("database_url", "sqlite://squeeze.db");
        let database_kind = if db.0.starts_with("sqlite:") {
            DatabaseKind::Sqlite
        } else if db.0.starts_with("postgres://") || db.0.starts_with("postgresql://") {
            DatabaseKind::Postgres
        } else {
            return Err(bad(
                "database_url",
                db,
                &"the scheme must be sqlite:// (embedded) or postgres:// (scale-out)",
            ));
        };

        let b = value("bind", "127.0.0.1:8080");
        let bind: SocketAddr = b.0.parse().map_err(|_| {
            bad(
                "bind",
                b,
                &"expected an IP address and port, like 127.0.0.1:8080",
            )
        })?;

        let default_public = format!("http://{bind}");
        let p = get("public_url").unwrap_or((&default_public, &default));
        let public_url = Url::parse(p.0)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| bad("public_url", p, &"expected an http:// or https:// URL"))?;

        let mut smtp = get("smtp_url")
            .map(|s| SmtpSettings::from_url(s.0).map_err(|e| bad("smtp_url", s, &e)))
            .transpose()?;
        if let Some(ca) = get("smtp_ca_file") {
            let pem =
                read_certificates(Path::new(ca.0)).map_err(|e| bad("smtp_ca_file", ca, &e))?;
            if let Some(s) = smtp.as_mut() {
                s.extra_roots_pem = Some(pem);
            }
        }

        let f = value("from", "Squeeze <newsletter@squeeze.localhost>");
        if f.0.chars().any(char::is_control) {
            return Err(bad("from", f, &"it contains a control character"));
        }
        let from: Mailbox = f.0.parse().map_err(|e| {
            bad(
                "from",
                f,
                &format!("expected a mailbox like `News <news@example.com>` ({e})"),
            )
        })?;

        let admin_token = match get("admin_token") {
            Some(t) if t.0.len() < 16 => {
                return Err(bad("admin_token", t, &"use at least 16 characters"));
            }
            other => other.map(|t| t.0.to_owned()),
        };

        let r = value("rate", "50");
        let rate = parse_nonzero(r.0).ok_or_else(|| {
            bad(
                "rate",
                r,
                &"expected a whole number of messages per second, at least 1",
            )
        })?;
        let burst = match get("burst") {
            Some(bv) => parse_nonzero(bv.0)
                .ok_or_else(|| bad("burst", bv, &"expected a whole number, at least 1"))?,
            None => rate,
        };
        let c = value("concurrency", "4");
        let concurrency =
            c.0.parse::<NonZeroUsize>()
                .ok()
                .filter(|n| n.get() <= 1000)
                .ok_or_else(|| bad("concurrency", c, &"expected a whole number from 1 to 1000"))?;

        let t = value("templates", "./templates");
        let templates = PathBuf::from(t.0);
        if !templates.is_dir() {
            return Err(bad("templates", t, &"no such folder"));
        }

        let s = value("subscribe_per_minute", "10");
        let subscribe_per_minute = s.0.parse::<u32>().map(NonZeroU32::new).map_err(|_| {
            bad(
                "subscribe_per_minute",
                s,
                &"expected a whole number (0: no limit)",
            )
        })?;

        let duration = |key: &'static str, fallback: &'static str| {
            let d = value(key, fallback);
            humantime::parse_duration(d.0)
                .ok()
                .filter(|v| !v.is_zero())
                .ok_or_else(|| bad(key, d, &"expected a duration like 30s, 5m or 48h"))
        };

        let list_id = match get("list_id") {
            Some(l) => {
                let ok = !l.0.chars().any(char::is_control)
                    && l.0.len() <= 200
                    && l.0.trim_end().ends_with('>')
                    && l.0.contains('<');
                if !ok {
                    return Err(bad(
                        "list_id",
                        l,
                        &"expected `Name <id.example.com>` on one line",
                    ));
                }
                l.0.to_owned()
            }
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
        let unsubscribe_mailto = get("unsubscribe_mailto")
            .map(|m| {
                crate::domain::EmailAddress::parse(m.0)
                    .map(|a| format!("mailto:{a}?subject=unsubscribe"))
                    .map_err(|e| bad("unsubscribe_mailto", m, &e))
            })
            .transpose()?;

        let domain_rates = match get("domain_rates") {
            Some(d) => parse_domain_rates(d.0).map_err(|e| bad("domain_rates", d, &e))?,
            None => Vec::new(),
        };
        let p = value("pause_threshold", "20%");
        let pause_threshold = parse_share(p.0)
            .ok_or_else(|| bad("pause_threshold", p, &"expected a share such as 20% or 0.2"))?;
        let w = value("pause_window", "200");
        let pause_window =
            w.0.parse::<usize>()
                .ok()
                .filter(|n| (10..=100_000).contains(n))
                .ok_or_else(|| {
                    bad(
                        "pause_window",
                        w,
                        &"expected a whole number from 10 to 100000",
                    )
                })?;
        let metrics_token = match get("metrics_token") {
            Some(t) if t.0.len() < 16 => {
                return Err(bad("metrics_token", t, &"use at least 16 characters"));
            }
            other => other.map(|t| t.0.to_owned()),
        };
        let l = value("log_format", "text");
        let log_format = match l.0 {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(bad("log_format", l, &"expected text or json")),
        };
        let retry = RetryPolicy::builder()
            .initial(duration("retry_initial", "30s")?)
            .max(duration("retry_max", "30m")?)
            .build();

        Ok(Self {
            metrics_token,
            log_format,
            domain_rates,
            throttle_cooldown: duration("throttle_cooldown", "30s")?,
            retry,
            pause_threshold,
            pause_window,
            list_id,
            unsubscribe_mailto,
            missed_grace: duration("missed_grace", "6h")?,
            digest_ttl: duration("digest_ttl", "24h")?,
            database_url: db.0.to_owned(),
            database_kind,
            bind,
            public_url,
            smtp,
            outbox: PathBuf::from(value("outbox", "./outbox").0),
            from,
            admin_token,
            rate,
            burst,
            concurrency,
            templates,
            confirmation_ttl: duration("confirmation_ttl", "48h")?,
            subscribe_per_minute,
            smtp_timeout: duration("smtp_timeout", "30s")?,
            lease: duration("lease", "5m")?,
            shutdown_timeout: duration("shutdown_timeout", "30s")?,
        })
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

/// Reads a PEM file that must hold at least one certificate.
fn read_certificates(path: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it ({e})"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("it is not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err("it holds no PEM certificate".into());
    }
    Ok(pem)
}

/// `gmail.com=20, outlook.com=10` (messages per second per domain).
fn parse_domain_rates(s: &str) -> Result<Vec<(String, NonZeroU32)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (domain, rate) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` should look like example.com=20"))?;
            let domain = domain.trim().to_ascii_lowercase();
            if domain.is_empty() || !domain.contains('.') || domain.contains(char::is_whitespace) {
                return Err(format!("`{domain}` is not a domain"));
            }
            let rate = parse_nonzero(rate.trim().trim_end_matches("/s")).ok_or_else(|| {
                format!("the rate for {domain} must be a whole number, at least 1")
            })?;
            Ok((domain, rate))
        })
        .collect()
}

/// `20%` or `0.2`.
fn parse_share(s: &str) -> Option<f64> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => s.parse::<f64>().ok()?,
    };
    (v > 0.0 && v <= 1.0).then_some(v)
}

fn parse_nonzero(s: &str) -> Option<NonZeroU32> {
    s.trim().parse().ok()
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
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut values = BTreeMap::new();
        values.insert(
            "templates".to_owned(),
            (
                concat!(env!("CARGO_MANIFEST_DIR"), "/templates").to_owned(),
                Source::Default,
            ),
        );
        for (k, v) in pairs {
            values.insert(
                (*k).to_owned(),
                (
                    (*v).to_owned(),
                    Source::Env(format!("SQUEEZE_{}", k.to_uppercase())),
                ),
            );
        }
        Config::from_values(&values)
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = load(&[]).expect("defaults are valid");
        assert_eq!(c.database_kind, DatabaseKind::Sqlite);
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_url.as_str(), "http://127.0.0.1:8080/");
        assert!(c.smtp.is_none());
        assert_eq!(c.burst, c.rate);
        assert_eq!(c.confirmation_ttl, Duration::from_secs(48 * 3600));
    }

    #[test]
    fn bad_values_name_the_setting_and_its_source() {
        let cases = [
            ("rate", "0", "`rate`"),
            ("database_url", "mysql://x", "scheme"),
            ("bind", "localhost", "`bind`"),
            ("smtp_url", "http://relay", "smtp://"),
            ("smtp_url", "smtp://relay?tls=maybe", "tls=maybe"),
            ("from", "not an address", "`from`"),
            ("admin_token", "short", "16"),
            ("confirmation_ttl", "soon", "duration"),
            ("templates", "/no/such/folder", "no such folder"),
            ("domain_rates", "gmail.com", "example.com=20"),
            ("domain_rates", "gmail.com=0", "at least 1"),
            ("pause_threshold", "150%", "share"),
            ("pause_window", "3", "10 to 100000"),
            ("retry_initial", "0s", "duration"),
        ];
        for (key, value, expected) in cases {
            let err = load(&[(key, value)]).expect_err(key).to_string();
            assert!(err.contains(expected), "{key}: {err}");
            assert!(err.contains("SQUEEZE_"), "{key}: {err}");
        }
    }

    #[test]
    fn domain_rates_and_shares_parse() {
        let c = load(&[
            ("domain_rates", "Gmail.com=20, outlook.com=10/s"),
            ("pause_threshold", "25%"),
        ])
        .expect("valid");
        let rates: Vec<(String, u32)> = c
            .domain_rates
            .iter()
            .map(|(d, r)| (d.clone(), r.get()))
            .collect();
        assert_eq!(
            rates,
            vec![("gmail.com".to_owned(), 20), ("outlook.com".to_owned(), 10)]
        );
        assert!((c.pause_threshold - 0.25).abs() < 1e-9);
    }

    #[test]
    fn secrets_are_not_echoed() {
        let err = load(&[("admin_token", "tiny-secret")]).expect_err("too short");
        assert!(!err.to_string().contains("tiny-secret"));
    }

    #[test]
    fn smtp_urls_follow_lettre_forms() {
        let s = SmtpSettings::from_url("smtp://user%40x:p%3Ass@relay.example:2525/helo.example")
            .expect("valid");
        assert_eq!((s.host.as_str(), s.port), ("relay.example", 2525));
        assert_eq!(s.security, SmtpSecurity::None);
        assert_eq!(s.username.as_deref(), Some("user@x"));
        assert_eq!(s.password.as_deref(), Some("p:ss"));
        assert_eq!(s.hello_name.as_deref(), Some("helo.example"));
        let s = SmtpSettings::from_url("smtps://relay.example").expect("valid");
        assert_eq!((s.security, s.port), (SmtpSecurity::Implicit, 465));
        let s = SmtpSettings::from_url("smtp://relay.example?tls=required").expect("valid");
        assert_eq!((s.security, s.port), (SmtpSecurity::Required, 587));
    }

    #[test]
    fn the_readme_documents_every_setting() {
        let readme = include_str!("../README.md");
        for key in SETTINGS {
            assert!(
                readme.contains(&format!("| `{key}` |")),
                "README lacks {key}"
            );
        }
    }

    #[test]
    fn links_keep_the_public_path() {
        let c = load(&[("public_url", "https://news.example.com/squeeze/")]).expect("valid");
        assert_eq!(
            c.link("/confirm", "abc"),
            "https://news.example.com/squeeze/confirm?token=abc"
        );
    }
}
