//! Provider webhooks: each provider's call, verified the provider's way and turned into
//! `domain::bounce::Report`s. Pure: no store, no Config, no clock of their own (the caller
//! passes the time); `http::webhooks` calls them and hands the reports to
//! `service::Inbound::record`.

pub mod mailgun;
pub mod postmark;
pub mod sendgrid;
pub mod ses;

/// Why a call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not from the provider: no signature, a wrong one, stale, or wrong credentials (401).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Authentic framing but a body that is not the provider's JSON (400).
    #[error("{0}")]
    Malformed(String),
}

/// A string field of a JSON object, if present and a string.
fn str_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    let mut v = v;
    for key in path {
        v = v.get(key)?;
    }
    v.as_str()
}

/// An address from a provider, trimmed and bounded; `None` when empty.
fn address(s: Option<&str>) -> Option<String> {
    let s = s?.trim().trim_start_matches('<').trim_end_matches('>');
    (!s.is_empty() && s.len() <= 320).then(|| s.to_owned())
}

/// Text from a provider kept for operators, bounded.
fn text(s: Option<&str>) -> Option<String> {
    let s = s?.trim();
    if s.is_empty() {
        return None;
    }
    Some(s.chars().take(1000).collect())
}

/// The first enhanced status code (`5.1.1`) in a text.
fn status_in(s: &str) -> Option<String> {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|w| crate::domain::bounce::is_status(w))
        .map(str::to_owned)
}
