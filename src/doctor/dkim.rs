//! DKIM: a key record per configured key, with its `k=` and `p=` tags read here.

use std::collections::BTreeMap;

use super::{Answers, Check, Txt};
use crate::mail::dkim::DkimSettings;

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
