//! The doctor's I/O: TXT lookups through hickory-resolver (the system resolver, or
//! `doctor_nameserver` over UDP and TCP) and the one-click POST. No verdicts here.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use super::{Answers, Setup, Txt, dkim_name, dmarc_names, spf_targets};
use crate::domain::token::Token;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A resolver at `nameserver`, or the system's.
pub fn resolver(nameserver: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let builder = match nameserver {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
            Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's resolver configuration ({e})"))?,
    };
    let mut builder = builder;
    builder.options_mut().timeout = TIMEOUT;
    builder.options_mut().attempts = 2;
    builder
        .build()
        .map_err(|e| format!("cannot start the DNS resolver ({e})"))
}

/// The TXT records at `name`, each record's strings joined.
pub async fn txt(resolver: &TokioResolver, name: &str) -> Txt {
    // Fully qualified: no search domains appended.
    match resolver.txt_lookup(format!("{name}.")).await {
        Ok(lookup) => {
            let records: Vec<String> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect();
            if records.is_empty() {
                Txt::None
            } else {
                Txt::Records(records)
            }
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Txt::None,
        Err(e) => Txt::Error(e.to_string()),
    }
}

/// Every TXT answer the DNS checks judge: the envelope domain's SPF and every include and
/// redirect under it (at most a few dozen names: past the limit the count fails anyway), the
/// DKIM key records, the DMARC records.
pub async fn answers(resolver: &TokioResolver, setup: &Setup) -> Answers {
    let mut answers = Answers::new();
    let mut queue = vec![setup.envelope_domain.clone()];
    while let Some(name) = queue.pop() {
        if answers.contains_key(&name) || answers.len() > 40 {
            continue;
        }
        let found = txt(resolver, &name).await;
        if let Txt::Records(rs) = &found {
            for r in rs {
                queue.extend(spf_targets(r));
            }
        }
        answers.insert(name, found);
    }
    let mut names: Vec<String> = dmarc_names(&setup.from_domain);
    if let Some(d) = &setup.dkim {
        names.extend(d.keys.iter().map(|k| dkim_name(&k.selector, &d.domain)));
    }
    for name in names {
        if let std::collections::btree_map::Entry::Vacant(e) = answers.entry(name) {
            let found = txt(resolver, e.key()).await;
            e.insert(found);
        }
    }
    answers
}

/// The one-click unsubscribe URL with a well-formed token nobody holds (a fresh random one),
/// so the POST changes nothing.
pub fn unsubscribe_url(public_url: &url::Url) -> String {
    let base = public_url.as_str().trim_end_matches('/');
    format!("{base}/unsubscribe?token={}", Token::generate().as_str())
}

/// POSTs RFC 8058's body to `url`: the status, or what went wrong.
pub async fn one_click(url: &str) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client ({e})"))?;
    let response = client
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {}s", TIMEOUT.as_secs())
            } else if e.is_connect() {
                "cannot connect".to_owned()
            } else {
                e.to_string()
            }
        })?;
    Ok(response.status().as_u16())
}
