//! DMARC: the From domain's (or its organisational domain's) policy, and alignment.

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::dmarc::{Alignment, Dmarc, Policy};

use super::{Answers, Check, Setup, Txt};
use crate::domain::dmarc::{aligned_relaxed, aligned_strict};

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
