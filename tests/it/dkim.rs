//! DKIM: every email Squeeze sends is signed, and the signatures are checked by dkimpy (a
//! verifier that shares no code with the signer) on the bytes the real SMTP server received;
//! `squeeze dkim keygen`; a bad key stops start-up.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::helpers::smtp::Received;
use crate::helpers::{Options, SmtpServer, TEMPLATES, TestApp, WAIT};

/// The Python that has dkimpy (and PyNaCl for Ed25519): `SQUEEZE_TEST_PYTHON`, else the
/// `.venv` that .ci/run makes.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SQUEEZE_TEST_PYTHON") {
        return p.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// Why the verifier cannot run here, if it cannot: then the test skips, except under CI.
fn verifier_missing() -> Option<String> {
    let python = python();
    let found = Command::new(&python)
        .args(["-c", "import dkim, nacl"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return None;
    }
    let why = format!(
        "no dkimpy at {}: run `python3 -m venv .venv && .venv/bin/pip install dkimpy pynacl \
         dnslib` (as .ci/run does), or set SQUEEZE_TEST_PYTHON",
        python.display()
    );
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "the DKIM verification test must run under CI=true: {why}"
    );
    Some(why)
}

/// The DNS the verifier is given: TXT value by name.
type Records = BTreeMap<String, String>;

/// dkimpy's verdict on each `DKIM-Signature` of `message`, in order.
fn dkimpy(message: &[u8], records: &Records, dir: &Path) -> Vec<bool> {
    use std::io::Write as _;
    let keys = dir.join("dns.json");
    std::fs::write(&keys, serde_json::to_vec(records).expect("json")).expect("write keys");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dkim/verify.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg(&keys)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the verifier");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(message)
        .expect("message to the verifier");
    let out = child.wait_with_output().expect("verifier");
    assert!(
        out.status.success(),
        "verifier: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("verifier JSON");
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r.as_bool().expect("bool"))
        .collect()
}

fn squeeze(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_squeeze"));
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("SQUEEZE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("SQUEEZE_TEMPLATES", TEMPLATES);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run squeeze")
}

/// Runs `squeeze dkim keygen` and returns the record it prints, as (name, TXT value).
fn keygen(dir: &Path, selector: &str, algorithm: &str, file: &str) -> (String, String) {
    let out = squeeze(
        dir,
        &[
            "dkim",
            "keygen",
            "--selector",
            selector,
            "--domain",
            "example.com",
            "--algorithm",
            algorithm,
            "--out",
            file,
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "keygen: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains(" IN TXT "))
        .unwrap_or_else(|| panic!("no TXT record in {stdout}"));
    let (name, rest) = line.split_once(" IN TXT ").expect("record");
    // The value is split into quoted strings of at most 255 octets; DNS joins them.
    let value: String = rest.split('"').skip(1).step_by(2).collect();
    (name.to_owned(), value)
}

struct Keys {
    dir: tempfile::TempDir,
    records: Records,
    settings: Vec<(String, String)>,
}

/// An RSA key and an Ed25519 key, both configured (dual signing), and their DNS records.
fn dual_keys() -> Keys {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut records = Records::new();
    for (selector, algorithm, file) in [("s-rsa", "rsa", "rsa.pem"), ("s-ed", "ed25519", "ed.pem")]
    {
        let (name, value) = keygen(dir.path(), selector, algorithm, file);
        assert_eq!(name, format!("{selector}._domainkey.example.com."));
        records.insert(name, value);
    }
    let path = |f: &str| dir.path().join(f).display().to_string();
    let settings = vec![
        ("from".into(), "Zoë Digest <news@example.com>".into()),
        ("dkim_selector".into(), "s-rsa".into()),
        ("dkim_key".into(), path("rsa.pem")),
        ("dkim_second_selector".into(), "s-ed".into()),
        ("dkim_second_key".into(), path("ed.pem")),
        (
            "postal_address".into(),
            "Zoë Digest, 1 Main St, Springfield".into(),
        ),
    ];
    Keys {
        dir,
        records,
        settings,
    }
}

/// A header block's `DKIM-Signature` tags, unfolded, by algorithm.
fn signatures(m: &Received) -> Vec<String> {
    let text = String::from_utf8_lossy(&m.data).into_owned();
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .replace("\r\n\t", " ");
    let head = head.replace("\r\n ", " ");
    head.lines()
        .filter(|l| l.starts_with("DKIM-Signature:"))
        .map(str::to_owned)
        .collect()
}

fn assert_signed_and_verified(m: &Received, keys: &Keys, what: &str) {
    let sigs = signatures(m);
    assert_eq!(sigs.len(), 2, "{what}: one RSA and one Ed25519 signature");
    assert!(sigs.iter().any(|s| s.contains("a=rsa-sha256")), "{what}");
    assert!(
        sigs.iter().any(|s| s.contains("a=ed25519-sha256")),
        "{what}"
    );
    for s in &sigs {
        assert!(s.contains("c=relaxed/relaxed"), "{what}: {s}");
        assert!(!s.contains(" l="), "{what}: no body length limit: {s}");
        assert!(s.contains("d=example.com"), "{what}: {s}");
        let h = s
            .split("h=")
            .nth(1)
            .and_then(|h| h.split(';').next())
            .expect("h=")
            .replace(' ', "");
        let signed: Vec<String> = h.split(':').map(|n| n.to_ascii_lowercase()).collect();
        assert_eq!(
            signed.iter().filter(|n| *n == "from").count(),
            2,
            "{what}: From signed twice: {h}"
        );
        for name in [
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
            "list-id",
            "list-unsubscribe",
            "list-unsubscribe-post",
            "feedback-id",
        ] {
            assert!(signed.iter().any(|n| n == name), "{what}: {name} in {h}");
        }
    }
    assert_eq!(
        dkimpy(&m.data, &keys.records, keys.dir.path()),
        [true, true],
        "{what}: dkimpy verifies both signatures:\n{}",
        String::from_utf8_lossy(&m.data)
    );
}

/// The encodings of a message's body parts.
fn encodings(m: &Received) -> Vec<String> {
    m.parsed()
        .subparts
        .iter()
        .filter_map(|p| {
            p.headers.iter().find(|h| {
                h.get_key_ref()
                    .eq_ignore_ascii_case("Content-Transfer-Encoding")
            })
        })
        .map(|h| h.get_value().to_ascii_lowercase())
        .collect()
}

async fn send_digest(
    app: &TestApp,
    subject: &str,
    intro: &str,
    title: &str,
    summary: &str,
) -> String {
    let (status, item) = app
        .post_json(
            "/api/items",
            json!({ "title": title, "url": "https://example.com/a?b=1&c=2", "summary": summary }),
        )
        .await;
    assert!(status.is_success(), "{item}");
    let (status, digest) = app
        .post_json(
            "/api/digests",
            json!({ "subject": subject, "intro": intro, "items": [item["id"]] }),
        )
        .await;
    assert!(status.is_success(), "{digest}");
    let id = digest["id"].as_str().expect("id").to_owned();
    let (status, body) = app.schedule_now(&id).await;
    assert!(status.is_success(), "{body}");
    id
}

/// Every email of a run: a confirmation to a subscriber with a non-ASCII name, and digests
/// with a long non-ASCII (folded) subject and lines that start with a dot, in 8bit when the
/// relay offers 8BITMIME and quoted-printable or base64 when it does not.
#[tokio::test]
async fn every_email_carries_rsa_and_ed25519_signatures_that_dkimpy_verifies() {
    if let Some(why) = verifier_missing() {
        eprintln!("skipping the DKIM verification test: {why}");
        return;
    }
    let keys = dual_keys();
    let mut seen = HashSet::new();
    for eight_bit in [true, false] {
        let smtp = SmtpServer::start().await;
        smtp.faults().no_8bitmime = !eight_bit;
        let app = TestApp::spawn_with(Options {
            smtp_url: Some(smtp.url()),
            scheduler: true,
            settings: keys.settings.clone(),
            ..Options::default()
        })
        .await;
        let res = app
            .subscribe_json(json!({ "email": "jurgen@example.org", "name": "Jürgen Ünal-Øster" }))
            .await;
        assert!(res.status().is_success());
        let confirmation = smtp.wait_for(1, WAIT).await.remove(0);
        assert_signed_and_verified(&confirmation, &keys, "confirmation");
        app.subscribe_confirmed(&smtp, "ada@example.org").await;
        let before = smtp.count();

        let subject = "Frisch gepresst — Montag: eine Betreffzeile, lang genug, um über mehr als eine Kopfzeile gefaltet zu werden";
        let intro = ".A line that starts with a dot.\n\n..and one with two.";
        let latin = send_digest(&app, subject, intro, "Grüße aus Köln", "Kurz & bündig.").await;
        // The long subject is a multi-line folded header.
        // Mostly non-ASCII: without 8BITMIME lettre picks base64 for it.
        let japanese = "日本語のニュースです。これは長い要約です。".repeat(40);
        let cjk_intro = format!("{intro}\n\n{japanese}");
        let cjk = send_digest(&app, "ニュース", &cjk_intro, "東京のニュース", &japanese).await;
        let got = app.wait_all_sent(&smtp, before + 2).await;
        let digests: Vec<&Received> = got[before..].iter().collect();
        for m in &digests {
            let what = format!("digest (8BITMIME offered: {eight_bit})");
            assert_signed_and_verified(m, &keys, &what);
            let text = String::from_utf8_lossy(&m.data);
            let feedback = m.header("Feedback-ID").expect("Feedback-ID");
            if feedback.starts_with(latin.as_str()) {
                // In 8bit and in quoted-printable (base64 has no dots).
                assert!(
                    text.contains("\r\n.A line") && text.contains("\r\n..and"),
                    "{what}: lines starting with a dot, dot-stuffed on the wire: {text}"
                );
            }
            let subject_line = text
                .split("\r\n")
                .position(|l| l.starts_with("Subject: "))
                .expect("Subject");
            let lines: Vec<&str> = text.split("\r\n").collect();
            assert!(
                lines[subject_line]
                    .to_ascii_lowercase()
                    .contains("=?utf-8?"),
                "{what}: RFC 2047 subject: {}",
                lines[subject_line]
            );
            assert!(
                [&latin, &cjk]
                    .iter()
                    .any(|id| feedback == format!("{id}:news.example.com:digest:example.com")),
                "{feedback}"
            );
            if feedback.starts_with(latin.as_str()) {
                assert!(
                    lines[subject_line + 1].starts_with(' '),
                    "{what}: the long subject is folded over several lines"
                );
            }
            for part in ["text/plain", "text/html"] {
                assert!(
                    m.part(part).expect(part).contains("1 Main St, Springfield"),
                    "{what}: postal address in the {part} part"
                );
            }
            seen.extend(encodings(m));
        }
        // The negative cases, on a message the verifier accepted as received.
        let m = digests[0];
        let body_at = m.data.len() - 40;
        let mut changed_body = m.data.clone();
        changed_body[body_at] = if changed_body[body_at] == b'x' {
            b'y'
        } else {
            b'x'
        };
        let text = String::from_utf8_lossy(&m.data).into_owned();
        let changed_subject = text.replacen("Subject: ", "Subject: Re: ", 1);
        let added_from = format!("From: Security Team <security@example.com>\r\n{text}");
        for (what, bytes) in [
            ("one changed body byte", changed_body),
            ("a changed signed header", changed_subject.into_bytes()),
            ("an added From", added_from.into_bytes()),
        ] {
            assert_eq!(
                dkimpy(&bytes, &keys.records, keys.dir.path()),
                [false, false],
                "{what} must fail verification"
            );
        }
        app.stop().await;
    }
    for encoding in ["8bit", "quoted-printable", "base64"] {
        assert!(seen.contains(encoding), "covered {encoding}: {seen:?}");
    }
}

/// The key file is the one thing DKIM needs that a typo can break: each mistake stops start-up
/// with one sentence naming the setting, exit 2, before anything is sent unsigned.
#[test]
fn a_missing_short_or_malformed_dkim_key_stops_start_up_with_one_sentence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(out.status.success());
        out.stdout
    };
    let short = write(
        "short.pem",
        &openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
        ]),
    );
    let ec = write(
        "ec.pem",
        &openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ]),
    );
    let garbage = write(
        "garbage.pem",
        b"-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n",
    );
    let text = write("text.pem", b"hello");
    let (_, _) = keygen(dir.path(), "ok", "ed25519", "ed.pem");
    let (_, _) = keygen(dir.path(), "rsa", "rsa", "rsa.pem");
    let ed = dir.path().join("ed.pem").display().to_string();
    let rsa = dir.path().join("rsa.pem").display().to_string();
    let missing = dir.path().join("nope.pem").display().to_string();
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("SQUEEZE_DKIM_SELECTOR", "s"),
                ("SQUEEZE_DKIM_KEY", &missing),
            ],
            &["`dkim_key`", "cannot read the key file"],
        ),
        (
            vec![("SQUEEZE_DKIM_SELECTOR", "s"), ("SQUEEZE_DKIM_KEY", &short)],
            &["`dkim_key`", "too short", "2048"],
        ),
        (
            vec![("SQUEEZE_DKIM_SELECTOR", "s"), ("SQUEEZE_DKIM_KEY", &ec)],
            &["`dkim_key`", "RSA or Ed25519"],
        ),
        (
            vec![
                ("SQUEEZE_DKIM_SELECTOR", "s"),
                ("SQUEEZE_DKIM_KEY", &garbage),
            ],
            &["`dkim_key`"],
        ),
        (
            vec![("SQUEEZE_DKIM_SELECTOR", "s"), ("SQUEEZE_DKIM_KEY", &text)],
            &["`dkim_key`", "no PEM private key"],
        ),
        (vec![("SQUEEZE_DKIM_KEY", &ed)], &["`dkim_selector`"]),
        (vec![("SQUEEZE_DKIM_SELECTOR", "s")], &["`dkim_key`"]),
        (
            vec![
                ("SQUEEZE_DKIM_SELECTOR", "bad selector!"),
                ("SQUEEZE_DKIM_KEY", &ed),
            ],
            &["`dkim_selector`", "DNS name"],
        ),
        (
            vec![
                ("SQUEEZE_DKIM_SELECTOR", "s"),
                ("SQUEEZE_DKIM_KEY", &ed),
                ("SQUEEZE_FROM", "n@news.example.com"),
                ("SQUEEZE_DKIM_DOMAIN", "example.net"),
            ],
            &["`dkim_domain`", "align", "example.net"],
        ),
        (
            vec![
                ("SQUEEZE_DKIM_SELECTOR", "s"),
                ("SQUEEZE_DKIM_KEY", &ed),
                ("SQUEEZE_DKIM_SECOND_SELECTOR", "t"),
                ("SQUEEZE_DKIM_SECOND_KEY", &ed),
            ],
            &["`dkim_second_key`", "one RSA and one Ed25519"],
        ),
    ];
    for (env, expected) in &cases {
        let out = squeeze(dir.path(), &["migrate"], env);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{env:?}: one sentence: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        for e in *expected {
            assert!(err.contains(e), "{env:?}: {e:?} in {err}");
        }
    }
    // The same keys, well configured (and aligned through a subdomain), start.
    let out = squeeze(
        dir.path(),
        &["migrate"],
        &[
            ("SQUEEZE_FROM", "n@news.example.com"),
            ("SQUEEZE_DKIM_DOMAIN", "example.com"),
            ("SQUEEZE_DKIM_SELECTOR", "rsa"),
            ("SQUEEZE_DKIM_KEY", &rsa),
            ("SQUEEZE_DKIM_SECOND_SELECTOR", "ok"),
            ("SQUEEZE_DKIM_SECOND_KEY", &ed),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dkim_keygen_writes_an_owner_only_key_prints_its_record_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    for (algorithm, k) in [("ed25519", "k=ed25519"), ("rsa", "k=rsa")] {
        let file = format!("{algorithm}.pem");
        let (name, value) = keygen(dir.path(), "2026a", algorithm, &file);
        assert_eq!(name, "2026a._domainkey.example.com.");
        assert!(value.starts_with(&format!("v=DKIM1; {k}; p=")), "{value}");
        let path = dir.path().join(&file);
        let mode = std::fs::metadata(&path).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{algorithm}: owner-only");
        let before = std::fs::read(&path).expect("key");
        let again = squeeze(
            dir.path(),
            &[
                "dkim",
                "keygen",
                "--selector",
                "2026b",
                "--algorithm",
                algorithm,
                "--out",
                &file,
            ],
            &[],
        );
        let err = String::from_utf8_lossy(&again.stderr);
        assert_eq!(again.status.code(), Some(2), "{err}");
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&path).expect("key"), before, "untouched");
    }
    let short = squeeze(
        dir.path(),
        &[
            "dkim",
            "keygen",
            "--selector",
            "x",
            "--bits",
            "1024",
            "--out",
            "x.pem",
        ],
        &[],
    );
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("2048"));
    assert!(!dir.path().join("x.pem").exists());
}

/// CAN-SPAM asks commercial mail for a postal address: with a real relay and none set, start-up
/// says so (and starts); with one set, or with the outbox, it does not.
#[test]
fn a_real_relay_without_a_postal_address_warns_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A relay needs a public URL (links in real mail), https so that nothing else warns.
    let relay = ("SQUEEZE_SMTP_URL", "smtp://127.0.0.1:1");
    let public = ("SQUEEZE_PUBLIC_URL", "https://news.example.com");
    for (env, warns) in [
        (vec![relay, public], true),
        (
            vec![
                relay,
                public,
                ("SQUEEZE_POSTAL_ADDRESS", "1 Main St, Springfield"),
            ],
            false,
        ),
        (vec![], false),
    ] {
        let out = squeeze(dir.path(), &["migrate"], &env);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{env:?}: {err}");
        assert_eq!(err.contains("postal_address"), warns, "{env:?}: {err}");
    }
}
