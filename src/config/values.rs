//! The value parsers the settings share: booleans, durations, sizes, shares, tokens, DNS
//! names, per-domain rates, the List-Id and the database URL's in-memory forms. Each says
//! its problem in a phrase, which `config` puts in the setting's error sentence.

use std::num::NonZeroU32;
use std::time::Duration;

/// `true`/`false` (also yes/no, on/off, 1/0).
pub(super) fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

const DURATION: &str = "expected a duration like 30s, 5m or 48h";

/// A non-zero duration such as `30s`.
pub(super) fn duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| DURATION.to_owned())
}

/// A duration such as `90d`, or `0`: for ever (`None`).
pub(super) fn retention(v: &str) -> Result<Option<Duration>, String> {
    if v.trim() == "0" {
        return Ok(None);
    }
    duration(v.trim())
        .map(Some)
        .map_err(|_| "expected a duration like 90d or 2w, or 0 to keep everything".to_owned())
}

/// A token that guards something: at least 16 characters.
pub(super) fn token(v: &str) -> Result<String, String> {
    if v.trim() != v {
        return Err("it begins or ends with whitespace, which no login or \
                    `Authorization` header can send; remove it"
            .into());
    }
    if v.len() < 16 {
        return Err("use at least 16 characters".into());
    }
    Ok(v.to_owned())
}

/// `sqlite::memory:`, `sqlite://:memory:` or `?mode=memory`: a database that exists only
/// inside one connection of the pool.
pub(super) fn is_in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    path == ":memory:"
        || path.is_empty()
        || query
            .split('&')
            .any(|kv| kv.eq_ignore_ascii_case("mode=memory"))
}

/// RFC 2919: `[phrase] "<" list-label "." list-id-namespace ">"`, where what is between the
/// angle brackets is a dot-atom (RFC 5322 atext, dot-separated, no empty atom) with at least
/// one dot; on one line, at most 200 characters (it is a header value).
pub(super) fn list_id_ok(v: &str) -> bool {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let v = v.trim();
    if v.len() > 200 || v.chars().any(char::is_control) {
        return false;
    }
    let Some((phrase, id)) = v.strip_suffix('>').and_then(|v| v.rsplit_once('<')) else {
        return false;
    };
    !phrase.contains(['<', '>'])
        && id.contains('.')
        && id.split('.').all(|a| !a.is_empty() && a.chars().all(atext))
}

/// A value that is not blank, trimmed.
pub(super) fn non_empty(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() {
        return Err("expected a value, not an empty one".into());
    }
    Ok(v.to_owned())
}

/// A DNS name (a selector or a domain): dot-separated labels of letters, digits and `-`.
pub(super) fn dns_name(v: &str) -> Result<String, String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if v.len() > 253 || !v.split('.').all(label_ok) {
        return Err(
            "expected a DNS name: labels of letters, digits and `-`, joined by dots".into(),
        );
    }
    Ok(v.to_owned())
}

/// `gmail.com=20, outlook.com=10` (messages per second per domain).
pub(super) fn parse_domain_rates(s: &str) -> Result<Vec<(String, NonZeroU32)>, String> {
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
pub(super) fn parse_share(s: &str) -> Option<f64> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => s.parse::<f64>().ok()?,
    };
    (v > 0.0 && v <= 1.0).then_some(v)
}

/// `1048576`, `512KB`, `100MB`, `1GB` (powers of 1024), at least one byte.
pub(super) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "K" => 1 << 10,
        "MB" | "M" => 1 << 20,
        "GB" | "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor).filter(|n| *n > 0)
}

pub(super) fn parse_nonzero(s: &str) -> Option<NonZeroU32> {
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_is_a_duration_or_zero_for_ever() {
        assert_eq!(retention("90d"), Ok(Some(Duration::from_secs(90 * 86_400))));
        assert_eq!(retention("0"), Ok(None));
        assert!(retention("soon").is_err());
        assert!(retention("-1d").is_err());
    }
}
