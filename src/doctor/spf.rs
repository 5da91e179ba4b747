//! SPF: the envelope domain's record, walked through its includes and redirects.

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf};

use super::{Answers, Check, Txt};

/// RFC 7208, 4.6.4: at most 10 terms that cause DNS lookups, counted through includes and
/// redirects.
pub const SPF_LOOKUP_LIMIT: usize = 10;

/// Whether a TXT record is an SPF record (RFC 7208, 4.5: `v=spf1` then a space or the end).
fn is_spf(record: &str) -> bool {
    let r = record.trim_start();
    r.len() >= 6
        && r[..6].eq_ignore_ascii_case("v=spf1")
        && r[6..].chars().next().is_none_or(|c| c == ' ')
}

/// The SPF records among `txt`.
fn spf_records(txt: &Txt) -> Vec<&str> {
    match txt {
        Txt::Records(rs) => rs
            .iter()
            .map(String::as_str)
            .filter(|r| is_spf(r))
            .collect(),
        _ => Vec::new(),
    }
}

fn literal(m: &Macro) -> Option<String> {
    match m {
        Macro::Literal(bytes) => Some(
            String::from_utf8_lossy(bytes)
                .trim_end_matches('.')
                .to_ascii_lowercase(),
        ),
        _ => None,
    }
}

/// The names an SPF record makes a verifier read TXT records of: its includes and its
/// redirect (only literal ones: a macro depends on the sender). The probe follows these.
pub fn spf_targets(record: &str) -> Vec<String> {
    let Ok(spf) = Spf::parse(record.as_bytes()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = spf
        .directives
        .iter()
        .filter_map(|d| match &d.mechanism {
            Mechanism::Include { macro_string } => literal(macro_string),
            _ => None,
        })
        .collect();
    names.extend(spf.redirect.as_ref().and_then(literal));
    names
}

/// What walking one domain's SPF found.
struct Walk {
    lookups: usize,
    /// The first problem that makes the whole record a permerror or temperror.
    error: Option<String>,
}

/// Counts the DNS-querying terms of `domain`'s SPF record and of every include and redirect
/// under it. `depth` stops a loop of includes (which would be over the limit anyway).
fn walk(domain: &str, answers: &Answers, depth: usize, w: &mut Walk) {
    if depth > SPF_LOOKUP_LIMIT + 1 || w.error.is_some() {
        return;
    }
    let txt = answers.get(domain).cloned().unwrap_or(Txt::None);
    if let Txt::Error(e) = &txt {
        w.error = Some(format!("the TXT lookup of {domain} failed ({e})"));
        return;
    }
    let records = spf_records(&txt);
    let record = match records.as_slice() {
        [one] => *one,
        [] => {
            w.error = Some(format!(
                "{domain} (included or redirected to) has no SPF record"
            ));
            return;
        }
        _ => {
            w.error = Some(format!("{domain} has {} SPF records", records.len()));
            return;
        }
    };
    let spf = match Spf::parse(record.as_bytes()) {
        Ok(spf) => spf,
        Err(e) => {
            w.error = Some(format!("the SPF record of {domain} does not parse ({e})"));
            return;
        }
    };
    for d in spf.directives.iter() {
        match &d.mechanism {
            Mechanism::Include { macro_string } => {
                w.lookups += 1;
                if let Some(name) = literal(macro_string) {
                    walk(&name, answers, depth + 1, w);
                }
            }
            Mechanism::A { .. }
            | Mechanism::Mx { .. }
            | Mechanism::Ptr { .. }
            | Mechanism::Exists { .. } => w.lookups += 1,
            _ => {}
        }
    }
    // RFC 7208 6.1: a redirect is ignored when the record has an `all`.
    let has_all = spf.directives.iter().any(|d| d.mechanism == Mechanism::All);
    if let Some(redirect) = spf.redirect.as_ref().filter(|_| !has_all) {
        w.lookups += 1;
        if let Some(name) = literal(redirect) {
            walk(&name, answers, depth + 1, w);
        }
    }
}

/// The `all` that ends `domain`'s policy, following redirects: `None` when there is none.
fn final_all(domain: &str, answers: &Answers, depth: usize) -> Option<(Qualifier, String)> {
    if depth > SPF_LOOKUP_LIMIT {
        return None;
    }
    let txt = answers.get(domain)?;
    let record = *spf_records(txt).first()?;
    let spf = Spf::parse(record.as_bytes()).ok()?;
    if let Some(d) = spf
        .directives
        .iter()
        .find(|d| d.mechanism == Mechanism::All)
    {
        return Some((d.qualifier.clone(), domain.to_owned()));
    }
    let target = spf.redirect.as_ref().and_then(literal)?;
    final_all(&target, answers, depth + 1)
}

const SPF_EXAMPLE: &str = "v=spf1 include:<your relay's SPF domain> -all";

/// The SPF check of the envelope domain.
pub fn check_spf(domain: &str, answers: &Answers) -> Check {
    const NAME: &str = "SPF";
    let txt = answers.get(domain).cloned().unwrap_or(Txt::None);
    if let Txt::Error(e) = &txt {
        return Check::fail(
            NAME,
            format!("the TXT lookup of {domain} failed: {e}"),
            "check the domain's DNS servers (or doctor_nameserver)",
        );
    }
    let records = spf_records(&txt);
    match records.len() {
        0 => {
            return Check::fail(
                NAME,
                format!("{domain} has no SPF record (no TXT record starting v=spf1)"),
                format!("publish a TXT record at {domain}: {SPF_EXAMPLE}"),
            );
        }
        1 => {}
        n => {
            return Check::fail(
                NAME,
                format!(
                    "{domain} has {n} SPF records: a permerror (RFC 7208 4.5), so SPF fails for every message"
                ),
                "merge them into one v=spf1 record",
            );
        }
    }
    if let Err(e) = Spf::parse(records[0].as_bytes()) {
        return Check::fail(
            NAME,
            format!(
                "the SPF record of {domain} does not parse ({e}): {}",
                records[0]
            ),
            format!("rewrite it, e.g. {SPF_EXAMPLE}"),
        );
    }
    let mut w = Walk {
        lookups: 0,
        error: None,
    };
    walk(domain, answers, 0, &mut w);
    if let Some(e) = w.error {
        return Check::fail(
            NAME,
            format!("{e}: a permerror, so SPF fails"),
            "fix or remove that include or redirect",
        );
    }
    if w.lookups > SPF_LOOKUP_LIMIT {
        return Check::fail(
            NAME,
            format!(
                "{} DNS lookups (include, a, mx, ptr, exists, redirect, counted through includes): over RFC 7208's limit of {SPF_LOOKUP_LIMIT}, a permerror",
                w.lookups
            ),
            "flatten includes into ip4:/ip6: terms or drop senders you no longer use",
        );
    }
    let lookups = format!("{} of {SPF_LOOKUP_LIMIT} DNS lookups", w.lookups);
    match final_all(domain, answers, 0) {
        Some((Qualifier::Fail, at)) => Check::pass(
            NAME,
            format!("{domain}: one record ending -all (at {at}); {lookups}"),
        ),
        Some((Qualifier::SoftFail, at)) => Check::pass(
            NAME,
            format!("{domain}: one record ending ~all (at {at}); {lookups}"),
        ),
        Some((Qualifier::Pass, _)) => Check::fail(
            NAME,
            format!("{domain}'s SPF ends in +all: every server on the Internet may send as you"),
            "end the record in -all (or ~all)",
        ),
        Some((Qualifier::Neutral, _)) => Check::warn(
            NAME,
            format!("{domain}'s SPF ends in ?all (neutral): it says nothing about other senders"),
            "end the record in -all (or ~all)",
        ),
        None => Check::warn(
            NAME,
            format!(
                "{domain}'s SPF has no `all` and no redirect: other senders get neutral, which protects nothing"
            ),
            "end the record in -all (or ~all)",
        ),
    }
}
