//! `squeeze doctor`: the verdicts on the sending setup, from what the probes found.
//!
//! Everything here is pure: it judges DNS answers and HTTP outcomes that `probe` gathered
//! (the only I/O of this room) into one `Check` per point, each pass, warn or fail with its
//! fix. Records are parsed by mail-auth (SPF and DMARC); DKIM's key records only need their
//! `k=` and `p=` tags, which mail-auth parses into a verifying key it does not give back, so
//! those two tags are read here.

pub mod probe;

use std::collections::BTreeMap;

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::dmarc::{Alignment, Dmarc, Policy};
use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf};
use serde::Serialize;

use crate::domain::dmarc::{aligned_relaxed, aligned_strict};
use crate::mail::dkim::DkimSettings;

/// RFC 7208, 4.6.4: at most 10 terms that cause DNS lookups, counted through includes and
/// redirects.
pub const SPF_LOOKUP_LIMIT: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub result: Verdict,
    pub detail: String,
    /// What to do; empty on a pass.
    pub fix: String,
}

impl Check {
    fn new(check: impl Into<String>, result: Verdict, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            result,
            detail: detail.into(),
            fix: String::new(),
        }
    }

    fn pass(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(check, Verdict::Pass, detail)
    }

    fn warn(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Verdict::Warn, detail).with_fix(fix)
    }

    fn fail(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Verdict::Fail, detail).with_fix(fix)
    }

    fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = fix.into();
        self
    }
}

/// What the setup is, from the configuration.
#[derive(Debug, Clone)]
pub struct Setup {
    pub from_domain: String,
    /// The domain of the SMTP envelope sender (`MAIL FROM`), which SPF checks.
    pub envelope_domain: String,
    pub dkim: Option<DkimSettings>,
    pub public_url: url::Url,
    pub postal_address: Option<String>,
    /// Whether `smtp_url` sends real mail (else it goes to the outbox).
    pub real_relay: bool,
}

/// The envelope sender's domain. Squeeze sends with the From address as envelope sender, so
/// today this is the From domain; a `bounce_address` setting would be the one change here.
pub fn envelope_domain(from_domain: &str, bounce_domain: Option<&str>) -> String {
    bounce_domain.unwrap_or(from_domain).to_ascii_lowercase()
}

/// The answer to one TXT query: each record's strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txt {
    Records(Vec<String>),
    /// NXDOMAIN or no TXT records.
    None,
    /// A timeout, SERVFAIL, a refused connection: said in a phrase.
    Error(String),
}

/// TXT answers by name (lower case, no trailing dot), as the probe found them.
pub type Answers = BTreeMap<String, Txt>;

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

/// The name of a DKIM key record.
pub fn dkim_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}").to_ascii_lowercase()
}

/// The tags of a DKIM key record (RFC 6376 3.6.1), whitespace removed from values.
fn dkim_tags(record: &str) -> BTreeMap<String, String> {
    record
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.chars().filter(|c| !c.is_whitespace()).collect(),
            )
        })
        .collect()
}

/// One check per configured key: its record exists, names the key's algorithm and publishes
/// its public half.
pub fn check_dkim(dkim: Option<&DkimSettings>, answers: &Answers) -> Vec<Check> {
    use base64::Engine as _;
    let Some(dkim) = dkim else {
        return vec![Check::fail(
            "DKIM",
            "DKIM is not configured: nothing Squeeze sends is signed, and Gmail, Yahoo and Microsoft reject unsigned bulk mail",
            "run `squeeze dkim keygen --selector <s>`, publish the record it prints, and set dkim_selector and dkim_key",
        )];
    };
    dkim.keys
        .iter()
        .map(|k| {
            let name = dkim_name(&k.selector, &dkim.domain);
            let check = format!("DKIM {}", k.selector);
            let expected = k.key.txt_record();
            let publish = format!("publish a TXT record at {name}: {expected}");
            let records = match answers.get(&name).cloned().unwrap_or(Txt::None) {
                Txt::Error(e) => {
                    return Check::fail(
                        check,
                        format!("the TXT lookup of {name} failed: {e}"),
                        "check the domain's DNS servers (or doctor_nameserver)",
                    );
                }
                Txt::None => Vec::new(),
                Txt::Records(rs) => rs,
            };
            let keys: Vec<_> = records
                .iter()
                .map(|r| dkim_tags(r))
                .filter(|t| t.contains_key("p"))
                .collect();
            let tags = match keys.as_slice() {
                [one] => one,
                [] => {
                    return Check::fail(check, format!("no DKIM key record at {name}"), publish);
                }
                _ => {
                    return Check::fail(
                        check,
                        format!("{} DKIM key records at {name}: verifiers pick one", keys.len()),
                        format!("keep only one: {expected}"),
                    );
                }
            };
            let p = tags.get("p").map(String::as_str).unwrap_or_default();
            if p.is_empty() {
                return Check::fail(
                    check,
                    format!("the key at {name} is revoked (empty p=)"),
                    publish,
                );
            }
            let k_tag = tags.get("k").map(String::as_str).unwrap_or("rsa");
            let algorithm = k.key.algorithm().dns_name();
            if !k_tag.eq_ignore_ascii_case(algorithm) {
                return Check::fail(
                    check,
                    format!("the record at {name} says k={k_tag}, the key is {algorithm}"),
                    publish,
                );
            }
            match base64::engine::general_purpose::STANDARD.decode(p) {
                Ok(bytes) if bytes == k.key.public_key() => Check::pass(
                    check,
                    format!("{name} publishes the public half of dkim key ({algorithm})"),
                ),
                Ok(_) => Check::fail(
                    check,
                    format!("the p= at {name} is another key than the one configured: every signature fails"),
                    publish,
                ),
                Err(_) => Check::fail(
                    check,
                    format!("the p= at {name} is not base64"),
                    publish,
                ),
            }
        })
        .collect()
}

/// Where the DMARC record was looked for: `_dmarc.<from>`, then the organisational domain's.
pub fn dmarc_names(from_domain: &str) -> Vec<String> {
    let from = from_domain.to_ascii_lowercase();
    let org = crate::domain::dmarc::organisational_domain(&from);
    let mut names = vec![format!("_dmarc.{from}")];
    if org != from {
        names.push(format!("_dmarc.{org}"));
    }
    names
}

fn is_dmarc(record: &str) -> bool {
    let r = record.trim_start();
    r.len() >= 8 && r[..8].eq_ignore_ascii_case("v=DMARC1")
}

/// The DMARC record's policy and the alignment of the DKIM and envelope domains with From.
pub fn check_dmarc(setup: &Setup, answers: &Answers) -> Vec<Check> {
    const NAME: &str = "DMARC";
    let mut found = None;
    for name in dmarc_names(&setup.from_domain) {
        match answers.get(&name).cloned().unwrap_or(Txt::None) {
            Txt::Error(e) => {
                return vec![Check::fail(
                    NAME,
                    format!("the TXT lookup of {name} failed: {e}"),
                    "check the domain's DNS servers (or doctor_nameserver)",
                )];
            }
            Txt::None => continue,
            Txt::Records(rs) => {
                let rs: Vec<String> = rs.into_iter().filter(|r| is_dmarc(r)).collect();
                if !rs.is_empty() {
                    found = Some((name, rs));
                    break;
                }
            }
        }
    }
    let publish = format!(
        "publish a TXT record at _dmarc.{}: v=DMARC1; p=quarantine; rua=mailto:<you>",
        setup.from_domain
    );
    let Some((name, records)) = found else {
        return vec![Check::fail(
            NAME,
            format!(
                "no DMARC record at {}",
                dmarc_names(&setup.from_domain).join(" or ")
            ),
            publish,
        )];
    };
    if records.len() > 1 {
        return vec![Check::fail(
            NAME,
            format!(
                "{} DMARC records at {name}: receivers ignore them all",
                records.len()
            ),
            "keep one",
        )];
    }
    let dmarc = match Dmarc::parse(records[0].as_bytes()) {
        Ok(d) => d,
        Err(e) => {
            return vec![Check::fail(
                NAME,
                format!("the DMARC record at {name} does not parse ({e})"),
                publish,
            )];
        }
    };
    let policy = match dmarc.p {
        Policy::Unspecified => Check::fail(
            NAME,
            format!("the DMARC record at {name} has no p= policy"),
            publish,
        ),
        Policy::None => Check::warn(
            NAME,
            format!("{name}: p=none: Gmail and Yahoo accept it, but it protects nothing"),
            "once reports show your mail aligns, raise it to p=quarantine or p=reject",
        ),
        Policy::Quarantine => Check::pass(NAME, format!("{name}: p=quarantine")),
        Policy::Reject => Check::pass(NAME, format!("{name}: p=reject")),
    };
    let mut checks = vec![policy];
    let from = &setup.from_domain;
    let aligns = |mode: &Alignment, domain: &str| match mode {
        Alignment::Strict => aligned_strict(domain, from),
        Alignment::Relaxed => aligned_relaxed(domain, from),
    };
    let mode_name = |mode: &Alignment| match mode {
        Alignment::Strict => "strict",
        Alignment::Relaxed => "relaxed",
    };
    checks.push(match &setup.dkim {
        None => Check::fail(
            "DMARC DKIM alignment",
            "nothing is signed, so DKIM cannot align",
            "configure DKIM (see the DKIM check)",
        ),
        Some(d) if aligns(&dmarc.adkim, &d.domain) => Check::pass(
            "DMARC DKIM alignment",
            format!(
                "d={} aligns with From {from} ({})",
                d.domain,
                mode_name(&dmarc.adkim)
            ),
        ),
        Some(d) => Check::fail(
            "DMARC DKIM alignment",
            format!(
                "d={} does not align with From {from} under adkim={}",
                d.domain,
                mode_name(&dmarc.adkim)
            ),
            format!("set dkim_domain = \"{from}\" (and publish its key), or adkim=r in the record"),
        ),
    });
    let envelope = &setup.envelope_domain;
    checks.push(if aligns(&dmarc.aspf, envelope) {
        Check::pass(
            "DMARC SPF alignment",
            format!(
                "envelope {envelope} aligns with From {from} ({})",
                mode_name(&dmarc.aspf)
            ),
        )
    } else {
        Check::fail(
            "DMARC SPF alignment",
            format!(
                "envelope {envelope} does not align with From {from} under aspf={}",
                mode_name(&dmarc.aspf)
            ),
            format!("send with an envelope sender at {from}, or aspf=r in the record"),
        )
    });
    checks
}

/// `public_url` is https: RFC 8058 one-click needs an https URL, and Gmail wants it.
pub fn check_public_url(url: &url::Url) -> Check {
    const NAME: &str = "public_url https";
    if url.scheme() == "https" {
        return Check::pass(NAME, url.as_str());
    }
    let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    let detail = format!(
        "{url} is plain {}: unsubscribe links must be https (RFC 8058)",
        url.scheme()
    );
    let fix = "serve Squeeze behind TLS and set public_url = \"https://…\"";
    if local {
        Check::warn(NAME, format!("{detail}; fine for a local test"), fix)
    } else {
        Check::fail(NAME, detail, fix)
    }
}

/// What a POST of one-click unsubscribe with an unknown token got.
pub fn check_unsubscribe(url: &str, outcome: &Result<u16, String>) -> Check {
    const NAME: &str = "one-click unsubscribe";
    match outcome {
        Err(e) => Check::fail(
            NAME,
            format!("POST {url} failed: {e}"),
            "make public_url reach a running `squeeze serve`",
        ),
        // What Squeeze answers for a well-formed token it does not know.
        Ok(404) => Check::pass(
            NAME,
            format!("POST {url} answers as Squeeze does (404 for an unknown token)"),
        ),
        Ok(s) if *s >= 500 => Check::fail(
            NAME,
            format!("POST {url} answered {s}"),
            "look at the server's log; mailbox providers will get this error",
        ),
        Ok(s) if (200..300).contains(s) => Check::warn(
            NAME,
            format!("POST {url} answered {s} for an unknown token, where Squeeze answers 404"),
            "check that public_url points at Squeeze and not at another site",
        ),
        Ok(s) => Check::fail(
            NAME,
            format!("POST {url} answered {s}: a one-click POST would not unsubscribe"),
            "let POST /unsubscribe through to Squeeze (no login, redirect or origin check in front)",
        ),
    }
}

/// CAN-SPAM asks commercial mail for a physical postal address: a fail when real mail goes
/// out without one, a warning when mail only goes to the outbox.
pub fn check_postal_address(postal_address: Option<&str>, real_relay: bool) -> Check {
    const NAME: &str = "postal_address";
    let fix = "set postal_address = \"<street, city, country>\"";
    match postal_address {
        Some(a) => Check::pass(NAME, a),
        None if real_relay => Check::fail(
            NAME,
            "unset while smtp_url sends real mail: CAN-SPAM asks commercial mail for the sender's postal address",
            fix,
        ),
        None => Check::warn(
            NAME,
            "unset (mail goes to the outbox now; real mail needs it under CAN-SPAM)",
            fix,
        ),
    }
}

/// Every DNS verdict, in the report's order.
pub fn dns_checks(setup: &Setup, answers: &Answers) -> Vec<Check> {
    let mut checks = vec![check_spf(&setup.envelope_domain, answers)];
    checks.extend(check_dkim(setup.dkim.as_ref(), answers));
    checks.extend(check_dmarc(setup, answers));
    checks
}

/// Whether the report has a fail (the command then exits 1).
pub fn any_fail(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.result == Verdict::Fail)
}

#[cfg(test)]
mod tests;
