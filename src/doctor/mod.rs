//! `squeeze doctor`: the verdicts on the sending setup, from what the probes found.
//!
//! Everything here is pure: it judges DNS answers and HTTP outcomes that `probe` gathered
//! (the only I/O of this room) into one `Check` per point, each pass, warn or fail with its
//! fix. Records are parsed by mail-auth (SPF and DMARC); DKIM's key records only need their
//! `k=` and `p=` tags, which mail-auth parses into a verifying key it does not give back, so
//! those two tags are read here.

mod dkim;
mod dmarc;
pub mod probe;
mod spf;
mod web;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::mail::dkim::DkimSettings;

pub use dkim::{check_dkim, dkim_name};
pub use dmarc::{check_dmarc, dmarc_names};
pub use spf::{SPF_LOOKUP_LIMIT, check_spf, spf_targets};
pub use web::{check_postal_address, check_public_url, check_unsubscribe};

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
