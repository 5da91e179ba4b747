//! The configuration's tests: layers, defaults, errors that name the setting, the README
//! kept in step with the table.

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
    assert!(c.welcome, "the welcome email is on by default");
    assert!(!load(&[("welcome", "false")]).expect("valid").welcome);
    assert!(c.archive, "the archive is on by default");
    assert!(!load(&[("archive", "false")]).expect("valid").archive);
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
        ("welcome", "maybe", "true or false"),
        ("templates", "/no/such/folder", "no such folder"),
        ("domain_rates", "gmail.com", "example.com=20"),
        ("domain_rates", "gmail.com=0", "at least 1"),
        ("pause_threshold", "150%", "share"),
        ("pause_window", "3", "10 to 100000"),
        ("retry_initial", "0s", "duration"),
        (
            "database_url",
            "sqlite::memory:",
            "every request would fail",
        ),
        ("database_url", "sqlite://x.db?mode=memory", "in-memory"),
        ("list_id", "<>", "RFC 2919"),
        ("list_id", "News <news>", "RFC 2919"),
        ("list_id", "News <news..example.com>", "RFC 2919"),
        ("admin_token", " test-admin-token-0123456789", "whitespace"),
        ("metrics_token", "metrics-token-0123456789\n", "whitespace"),
        ("import_max_bytes", "lots", "100MB"),
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
    let readme = include_str!("../../README.md");
    for key in SETTINGS {
        assert!(
            readme.contains(&format!("| `{key}` |")),
            "README lacks {key}"
        );
    }
}

#[test]
fn the_table_declares_each_setting_once_and_the_readme_shows_its_default() {
    let readme = include_str!("../../README.md");
    for (i, s) in TABLE.iter().enumerate() {
        assert!(
            TABLE[i + 1..].iter().all(|t| t.key != s.key),
            "{} twice",
            s.key
        );
        assert!(!s.doc.is_empty() && !s.value_name.is_empty(), "{}", s.key);
        if let Some(default) = s.default {
            assert!(
                readme.contains(&format!("| `{}` | `{default}` |", s.key)),
                "README's default for {} is not {default}",
                s.key
            );
        }
    }
    let secret: Vec<&str> = TABLE.iter().filter(|s| s.secret).map(|s| s.key).collect();
    assert_eq!(
        secret,
        [
            "smtp_url",
            "admin_token",
            "metrics_token",
            "bounce_secret",
            "mailgun_signing_key",
            "postmark_webhook_password"
        ]
    );
    assert_eq!(SETTINGS.len(), TABLE.len());
}

#[test]
fn a_bounce_address_needs_its_secret_and_the_secret_is_never_shown() {
    let secret = "a-bounce-secret-of-at-least-32-characters";
    let ok = load(&[
        ("bounce_address", "bounces@bounce.example.com"),
        ("bounce_secret", secret),
    ])
    .expect("valid");
    assert!(ok.bounce.is_some());
    assert!(
        !format!("{ok:?}").contains(secret),
        "Debug shows the secret"
    );
    let err = load(&[("bounce_address", "bounces@bounce.example.com")])
        .expect_err("no secret")
        .to_string();
    assert!(err.contains("`bounce_secret`"), "{err}");
    let err = load(&[
        ("bounce_address", "bounces@bounce.example.com"),
        ("bounce_secret", "short-secret"),
    ])
    .expect_err("short")
    .to_string();
    assert!(
        err.contains("at least 32") && !err.contains("short-secret"),
        "{err}"
    );
    let err = load(&[("bounce_secret", secret)])
        .expect_err("no address")
        .to_string();
    assert!(
        err.contains("`bounce_address`") && !err.contains(secret),
        "{err}"
    );
    assert!(load(&[("bounce_address", "bounces+x@bounce.example.com")]).is_err());
    assert!(load(&[]).expect("defaults").bounce.is_none());
}

#[test]
fn a_bad_secret_is_named_but_not_shown() {
    for key in ["smtp_url", "metrics_token"] {
        let err = load(&[(key, "ftp://tiny")]).expect_err(key).to_string();
        assert!(err.contains(&format!("`{key}` = <hidden>")), "{err}");
        assert!(!err.contains("tiny"), "{err}");
    }
}

#[test]
fn an_empty_value_means_the_default_and_derived_defaults_follow_their_source() {
    let c = load(&[("rate", ""), ("from", "News <news@example.com>")]).expect("valid");
    assert_eq!(c.rate.get(), 50);
    assert_eq!(c.burst.get(), 50);
    assert_eq!(c.list_id, "News <news.example.com>");
    let c = load(&[("rate", "7"), ("bind", "0.0.0.0:9000")]).expect("valid");
    assert_eq!(c.burst.get(), 7);
    assert_eq!(c.public_url.as_str(), "http://0.0.0.0:9000/");
}

#[test]
fn what_cannot_work_together_is_refused_and_what_is_risky_is_warned_about() {
    let err = load(&[("retry_initial", "10m"), ("retry_max", "1m")])
        .expect_err("initial above max")
        .to_string();
    assert!(err.contains("`retry_initial` (10m)") && err.contains("`retry_max` (1m)"));
    let err = load(&[("smtp_url", "smtp://relay.example")])
        .expect_err("a relay without a public URL")
        .to_string();
    assert!(
        err.contains("links in real mail would point at http://127.0.0.1:8080"),
        "{err}"
    );
    let plain = load(&[
        ("smtp_url", "smtp://relay.example"),
        ("public_url", "http://news.example.com"),
    ])
    .expect("valid");
    assert!(plain.warnings().iter().any(|w| w.contains("RFC 8058")));
    assert!(
        plain
            .warnings()
            .iter()
            .any(|w| w.contains("postal_address"))
    );
    let https = load(&[
        ("smtp_url", "smtp://relay.example"),
        ("public_url", "https://news.example.com"),
        ("postal_address", "1 Main St, Springfield"),
    ])
    .expect("valid");
    assert!(https.warnings().is_empty());
    assert!(load(&[]).expect("outbox").warnings().is_empty(), "no relay");
    let c = load(&[
        ("list_id", "News <news.example.com>"),
        ("import_max_bytes", "2KB"),
    ])
    .expect("valid");
    assert_eq!(c.import_max_bytes, 2048);
    assert_eq!(load(&[]).expect("defaults").import_max_bytes, 100 << 20);
    assert!(values::list_id_ok("<a.b>") && values::list_id_ok("\"My list\" <x+y.z>"));
}

#[test]
fn the_ses_settings_parse_and_the_test_override_is_warned_of() {
    let c = load(&[(
        "ses_topic_arn",
        " arn:aws:sns:us-east-1:123456789012:a, arn:aws:sns:eu-west-1:123456789012:b ",
    )])
    .expect("valid");
    assert_eq!(
        c.ses_topic_arn,
        [
            "arn:aws:sns:us-east-1:123456789012:a",
            "arn:aws:sns:eu-west-1:123456789012:b"
        ]
    );
    assert!(c.warnings().is_empty());
    assert!(load(&[]).expect("defaults").ses_topic_arn.is_empty());
    for bad in [" , ", "my-topic", "arn:aws:sns:us-east-1:a"] {
        assert!(load(&[("ses_topic_arn", bad)]).is_err(), "{bad:?}");
    }
    let c = load(&[("ses_sns_cert_url_override", "http://127.0.0.1:9/certs")]).expect("valid");
    assert_eq!(
        c.ses_sns_cert_url_override.as_ref().map(url::Url::as_str),
        Some("http://127.0.0.1:9/certs/")
    );
    assert!(c.warnings().iter().any(|w| w.contains("for tests only")));
    assert!(load(&[("ses_sns_cert_url_override", "ftp://x/")]).is_err());
}

#[test]
fn links_keep_the_public_path() {
    let c = load(&[("public_url", "https://news.example.com/squeeze/")]).expect("valid");
    assert_eq!(
        c.link("/confirm", "abc"),
        "https://news.example.com/squeeze/confirm?token=abc"
    );
}
