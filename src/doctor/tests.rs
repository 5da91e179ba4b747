use super::*;
use crate::mail::dkim::{DkimKey, SigningKey, generate_ed25519};

fn answers(entries: &[(&str, &[&str])]) -> Answers {
    entries
        .iter()
        .map(|(name, records)| {
            let txt = if records.is_empty() {
                Txt::None
            } else {
                Txt::Records(records.iter().map(|r| (*r).to_owned()).collect())
            };
            ((*name).to_owned(), txt)
        })
        .collect()
}

fn key() -> DkimKey {
    DkimKey::from_pem(generate_ed25519().expect("keygen").as_bytes()).expect("a key")
}

fn setup(dkim: Option<DkimSettings>) -> Setup {
    Setup {
        from_domain: "news.example.com".into(),
        envelope_domain: "news.example.com".into(),
        dkim,
        public_url: url::Url::parse("https://news.example.com/").expect("url"),
        postal_address: Some("1 Main St".into()),
        real_relay: true,
    }
}

fn dkim_settings(domain: &str, key: &DkimKey) -> DkimSettings {
    DkimSettings {
        domain: domain.into(),
        keys: vec![SigningKey {
            selector: "s1".into(),
            key: key.clone(),
        }],
    }
}

#[test]
fn spf_passes_on_one_record_ending_in_fail_or_softfail_and_follows_redirects() {
    let a = answers(&[(
        "d.test",
        &["google-site-verification=x", "v=spf1 ip4:192.0.2.1 -all"],
    )]);
    assert_eq!(check_spf("d.test", &a).result, Verdict::Pass);
    let a = answers(&[
        ("d.test", &["v=spf1 redirect=_spf.d.test"]),
        ("_spf.d.test", &["v=spf1 include:relay.test ~all"]),
        ("relay.test", &["v=spf1 a mx -all"]),
    ]);
    let c = check_spf("d.test", &a);
    assert_eq!(c.result, Verdict::Pass, "{c:?}");
    assert!(c.detail.contains("4 of 10"), "{}", c.detail);
}

#[test]
fn spf_fails_when_missing_doubled_broken_or_open_and_warns_when_neutral() {
    let missing = check_spf("d.test", &answers(&[("d.test", &["other"])]));
    assert_eq!(missing.result, Verdict::Fail);
    assert!(missing.fix.contains("v=spf1"));
    let two = check_spf(
        "d.test",
        &answers(&[("d.test", &["v=spf1 -all", "v=spf1 mx -all"])]),
    );
    assert_eq!(two.result, Verdict::Fail);
    assert!(two.detail.contains("permerror"));
    let open = check_spf("d.test", &answers(&[("d.test", &["v=spf1 +all"])]));
    assert_eq!(open.result, Verdict::Fail);
    let neutral = check_spf("d.test", &answers(&[("d.test", &["v=spf1 ?all"])]));
    assert_eq!(neutral.result, Verdict::Warn);
    let no_all = check_spf("d.test", &answers(&[("d.test", &["v=spf1 mx"])]));
    assert_eq!(no_all.result, Verdict::Warn);
    let dangling = check_spf(
        "d.test",
        &answers(&[("d.test", &["v=spf1 include:gone.test -all"])]),
    );
    assert_eq!(dangling.result, Verdict::Fail);
    let err = Answers::from([("d.test".to_owned(), Txt::Error("timeout".into()))]);
    assert_eq!(check_spf("d.test", &err).result, Verdict::Fail);
}

#[test]
fn spf_counts_lookups_through_includes_and_fails_past_ten() {
    let mut a = answers(&[("d.test", &["v=spf1 include:a.test include:b.test mx -all"])]);
    a.extend(answers(&[
        ("a.test", &["v=spf1 a mx ptr exists:x.test -all"]),
        ("b.test", &["v=spf1 a mx a:c.test -all"]),
    ]));
    // 2 includes + mx + 4 + 3 = 10: at the limit.
    assert_eq!(check_spf("d.test", &a).result, Verdict::Pass);
    a.extend(answers(&[(
        "b.test",
        &["v=spf1 a mx a:c.test a:e.test -all"],
    )]));
    let c = check_spf("d.test", &a);
    assert_eq!(c.result, Verdict::Fail);
    assert!(c.detail.starts_with("11 DNS lookups"), "{}", c.detail);
}

#[test]
fn dkim_passes_on_the_published_key_and_fails_on_another_a_revoked_or_a_missing_one() {
    let k = key();
    let settings = dkim_settings("example.com", &k);
    let record = k.txt_record();
    // Long keys come in several strings; the probe joins them.
    let ok = check_dkim(
        Some(&settings),
        &answers(&[("s1._domainkey.example.com", &[&record])]),
    );
    assert_eq!(ok[0].result, Verdict::Pass, "{ok:?}");
    let other = key().txt_record();
    let wrong = check_dkim(
        Some(&settings),
        &answers(&[("s1._domainkey.example.com", &[&other])]),
    );
    assert_eq!(wrong[0].result, Verdict::Fail);
    assert!(wrong[0].fix.contains(&record));
    let revoked = check_dkim(
        Some(&settings),
        &answers(&[("s1._domainkey.example.com", &["v=DKIM1; k=ed25519; p="])]),
    );
    assert!(revoked[0].detail.contains("revoked"));
    let p = record.rsplit("p=").next().unwrap_or_default().to_owned();
    let wrong_k = check_dkim(
        Some(&settings),
        &answers(&[("s1._domainkey.example.com", &[&format!("v=DKIM1; p={p}")])]),
    );
    assert!(wrong_k[0].detail.contains("k=rsa"), "{wrong_k:?}");
    let missing = check_dkim(Some(&settings), &Answers::new());
    assert_eq!(missing[0].result, Verdict::Fail);
    let unconfigured = check_dkim(None, &Answers::new());
    assert_eq!(unconfigured[0].result, Verdict::Fail);
    assert!(unconfigured[0].fix.contains("squeeze dkim keygen"));
}

#[test]
fn dmarc_falls_back_to_the_organisational_domain_and_judges_policy_and_alignment() {
    let k = key();
    let s = setup(Some(dkim_settings("example.com", &k)));
    let a = answers(&[("_dmarc.example.com", &["v=DMARC1; p=reject"])]);
    let c = check_dmarc(&s, &a);
    assert!(c.iter().all(|c| c.result == Verdict::Pass), "{c:?}");
    let none = check_dmarc(
        &s,
        &answers(&[("_dmarc.news.example.com", &["v=DMARC1; p=none"])]),
    );
    assert_eq!(none[0].result, Verdict::Warn);
    let strict = check_dmarc(
        &s,
        &answers(&[("_dmarc.example.com", &["v=DMARC1; p=reject; adkim=s"])]),
    );
    assert_eq!(strict[1].result, Verdict::Fail);
    assert!(strict[1].fix.contains("dkim_domain = \"news.example.com\""));
    assert_eq!(strict[2].result, Verdict::Pass);
    let missing = check_dmarc(&s, &Answers::new());
    assert_eq!(missing[0].result, Verdict::Fail);
    assert!(
        missing[0]
            .detail
            .contains("_dmarc.news.example.com or _dmarc.example.com")
    );
}

#[test]
fn https_unsubscribe_and_postal_address_verdicts() {
    let url = |u: &str| url::Url::parse(u).expect("url");
    assert_eq!(
        check_public_url(&url("https://a.test/")).result,
        Verdict::Pass
    );
    assert_eq!(
        check_public_url(&url("http://a.test/")).result,
        Verdict::Fail
    );
    assert_eq!(
        check_public_url(&url("http://127.0.0.1:8080/")).result,
        Verdict::Warn
    );
    assert_eq!(
        check_public_url(&url("http://localhost/")).result,
        Verdict::Warn
    );
    assert_eq!(check_unsubscribe("u", &Ok(404)).result, Verdict::Pass);
    assert_eq!(check_unsubscribe("u", &Ok(502)).result, Verdict::Fail);
    assert_eq!(check_unsubscribe("u", &Ok(403)).result, Verdict::Fail);
    assert_eq!(check_unsubscribe("u", &Ok(200)).result, Verdict::Warn);
    assert_eq!(
        check_unsubscribe("u", &Err("cannot connect".into())).result,
        Verdict::Fail
    );
    assert_eq!(check_postal_address(None, true).result, Verdict::Fail);
    assert_eq!(check_postal_address(None, false).result, Verdict::Warn);
    assert_eq!(
        check_postal_address(Some("1 Main St"), true).result,
        Verdict::Pass
    );
}

#[test]
fn the_envelope_domain_is_the_from_domain_until_a_bounce_address_is_set() {
    assert_eq!(envelope_domain("Example.com", None), "example.com");
    assert_eq!(
        envelope_domain("example.com", Some("bounce.example.com")),
        "bounce.example.com"
    );
}
