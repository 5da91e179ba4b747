//! `squeeze doctor` end to end: the command against a real DNS server (dnslib, started here
//! on 127.0.0.1 over UDP and TCP, serving zones the tests write) and a live `squeeze serve`,
//! with a real key from `squeeze dkim keygen`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};

use crate::helpers::{Options, TEMPLATES, TestApp};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SQUEEZE_TEST_PYTHON") {
        return p.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// Why the DNS server cannot run here, if it cannot: the test then skips, except under CI.
fn dnslib_missing() -> Option<String> {
    let python = python();
    let found = Command::new(&python)
        .args(["-c", "import dnslib"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return None;
    }
    let why = format!(
        "no dnslib at {}: run `python3 -m venv .venv && .venv/bin/pip install dnslib==0.9.25` \
         (as .ci/run does), or set SQUEEZE_TEST_PYTHON",
        python.display()
    );
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "the doctor tests must run under CI=true: {why}"
    );
    eprintln!("skipping: {why}");
    Some(why)
}

/// The DNS server and the zone file it reads on every query.
struct Dns {
    child: Child,
    zone: PathBuf,
    port: u16,
}

impl Dns {
    fn start(dir: &Path, zone: &Value) -> Self {
        let path = dir.join("zone.json");
        std::fs::write(&path, zone.to_string()).expect("write zone");
        let mut child = Command::new(python())
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/doctor/dns.py"))
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start dns.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the port");
        let port = line.trim().parse().expect("a port number");
        Self {
            child,
            zone: path,
            port,
        }
    }

    fn serve(&self, zone: &Value) {
        std::fs::write(&self.zone, zone.to_string()).expect("write zone");
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// `squeeze dkim keygen` for example.com: the key file and its record's strings.
fn keygen(dir: &Path, selector: &str) -> (PathBuf, Vec<String>) {
    let file = dir.join(format!("{selector}.pem"));
    let out = squeeze(
        dir,
        &[
            "dkim",
            "keygen",
            "--selector",
            selector,
            "--domain",
            "example.com",
            "--out",
            file.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "keygen: {stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains(" IN TXT "))
        .unwrap_or_else(|| panic!("no TXT record in {stdout}"));
    let (_, rest) = line.split_once(" IN TXT ").expect("record");
    // An RSA-2048 record is more than one 255-octet string: served as such.
    let strings: Vec<String> = rest
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(strings.len() > 1, "{line}");
    (file, strings)
}

/// The report, by check name: (result, detail, fix).
struct Report {
    code: i32,
    checks: Vec<Value>,
}

impl Report {
    fn result(&self, check: &str) -> &str {
        self.get(check)["result"].as_str().expect("result")
    }

    fn get(&self, check: &str) -> &Value {
        self.checks
            .iter()
            .find(|c| c["check"] == check)
            .unwrap_or_else(|| panic!("no check {check} in {:#?}", self.checks))
    }
}

struct Setup {
    dir: tempfile::TempDir,
    dns: Dns,
    dkim_record: Vec<String>,
    env: Vec<(String, String)>,
}

fn good_zone(dkim: &[String]) -> Value {
    json!({
        "example.com": [["v=spf1 ip4:192.0.2.1 -all"], ["google-site-verification=abc"]],
        "s1._domainkey.example.com": [dkim],
        "_dmarc.example.com": [["v=DMARC1; p=reject; rua=mailto:dmarc@example.com"]],
    })
}

impl Setup {
    fn new(public_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, dkim_record) = keygen(dir.path(), "s1");
        let dns = Dns::start(dir.path(), &good_zone(&dkim_record));
        let env = vec![
            ("SQUEEZE_FROM".into(), "News <news@example.com>".into()),
            ("SQUEEZE_PUBLIC_URL".into(), public_url.into()),
            ("SQUEEZE_DKIM_SELECTOR".into(), "s1".into()),
            ("SQUEEZE_DKIM_KEY".into(), key.display().to_string()),
            (
                "SQUEEZE_POSTAL_ADDRESS".into(),
                "1 Main St, Springfield".into(),
            ),
            (
                "SQUEEZE_DOCTOR_NAMESERVER".into(),
                format!("127.0.0.1:{}", dns.port),
            ),
        ];
        Self {
            dir,
            dns,
            dkim_record,
            env,
        }
    }

    fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    fn unset(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    fn doctor(&self) -> Report {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let out = squeeze(self.dir.path(), &["doctor", "--json"], &env);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let checks: Vec<Value> = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "doctor --json: {e}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Report {
            code: out.status.code().expect("an exit code"),
            checks,
        }
    }

    fn zone(&self, patch: Value) {
        let mut zone = good_zone(&self.dkim_record);
        for (k, v) in patch.as_object().expect("object") {
            if v.is_null() {
                zone.as_object_mut().expect("object").remove(k);
            } else {
                zone[k] = v.clone();
            }
        }
        self.dns.serve(&zone);
    }
}

async fn live_app() -> TestApp {
    TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_setup_passes_and_the_one_click_post_reaches_the_live_server() {
    if dnslib_missing().is_some() {
        return;
    }
    let app = live_app().await;
    let setup = Setup::new(&app.url);
    let report = tokio::task::spawn_blocking(move || setup.doctor())
        .await
        .expect("doctor");
    for c in &report.checks {
        // The live test server is plain http on 127.0.0.1: a warning, not a fail.
        let expected = if c["check"] == "public_url https" {
            "warn"
        } else {
            "pass"
        };
        assert_eq!(c["result"], expected, "{c:#}");
    }
    assert_eq!(report.code, 0, "{:#?}", report.checks);
    for check in [
        "SPF",
        "DKIM s1",
        "DMARC",
        "DMARC DKIM alignment",
        "one-click unsubscribe",
    ] {
        report.get(check);
    }
}

#[test]
fn dns_mistakes_each_fail_or_warn_with_their_fix() {
    if dnslib_missing().is_some() {
        return;
    }
    // A dead port: the unsubscribe check fails on every run here, so only the DNS checks are
    // read (and the exit code is 1 throughout).
    let setup = Setup::new("http://127.0.0.1:9/");
    let report = setup.doctor();
    assert_eq!(report.result("SPF"), "pass");
    assert_eq!(report.result("DKIM s1"), "pass");
    let unsubscribe = report.get("one-click unsubscribe");
    assert_eq!(unsubscribe["result"], "fail", "{unsubscribe:#}");
    assert_eq!(report.code, 1);

    // Another key's record at the selector.
    let (_, other) = keygen(setup.dir.path(), "other");
    setup.zone(json!({ "s1._domainkey.example.com": [other] }));
    let dkim = setup.doctor().get("DKIM s1").clone();
    assert_eq!(dkim["result"], "fail", "{dkim:#}");
    assert!(
        dkim["fix"]
            .as_str()
            .unwrap_or("")
            .contains("s1._domainkey.example.com")
    );

    // No SPF.
    setup.zone(json!({ "example.com": [["google-site-verification=abc"]] }));
    let spf = setup.doctor().get("SPF").clone();
    assert_eq!(spf["result"], "fail", "{spf:#}");
    assert!(spf["fix"].as_str().unwrap_or("").contains("v=spf1"));

    // Two SPF records: a permerror.
    setup.zone(json!({ "example.com": [["v=spf1 -all"], ["v=spf1 mx -all"]] }));
    let spf = setup.doctor().get("SPF").clone();
    assert_eq!(spf["result"], "fail", "{spf:#}");
    assert!(
        spf["detail"]
            .as_str()
            .unwrap_or("")
            .contains("2 SPF records")
    );

    // 2 includes + 5 + 5 = 12 lookups.
    setup.zone(json!({
        "example.com": [["v=spf1 include:a.example.net include:b.example.net -all"]],
        "a.example.net": [["v=spf1 a mx ptr exists:x.example.net a:y.example.net -all"]],
        "b.example.net": [["v=spf1 a mx ptr exists:x.example.net a:y.example.net -all"]],
    }));
    let spf = setup.doctor().get("SPF").clone();
    assert_eq!(spf["result"], "fail", "{spf:#}");
    assert!(
        spf["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("12 DNS lookups"),
        "{spf:#}"
    );

    // A redirect is followed, and its -all ends the policy.
    setup.zone(json!({
        "example.com": [["v=spf1 redirect=_spf.example.net"]],
        "_spf.example.net": [["v=spf1 ip4:192.0.2.0/24 ", "-all"]],
    }));
    let spf = setup.doctor().get("SPF").clone();
    assert_eq!(spf["result"], "pass", "{spf:#}");

    // p=none: a warning.
    setup.zone(json!({ "_dmarc.example.com": [["v=DMARC1; p=none"]] }));
    let dmarc = setup.doctor().get("DMARC").clone();
    assert_eq!(dmarc["result"], "warn", "{dmarc:#}");
}

#[test]
fn with_a_bounce_address_spf_is_checked_at_the_bounce_domain() {
    if dnslib_missing().is_some() {
        return;
    }
    let mut setup = Setup::new("http://127.0.0.1:9/");
    setup.set("SQUEEZE_BOUNCE_ADDRESS", "bounces@bounce.example.com");
    setup.set("SQUEEZE_BOUNCE_SECRET", "0123456789abcdef0123456789abcdef");
    // The From domain's SPF is good, but mail leaves with the bounce domain's envelope.
    let spf = setup.doctor().get("SPF").clone();
    assert_eq!(spf["result"], "fail", "{spf:#}");
    assert!(
        spf["detail"]
            .as_str()
            .unwrap_or("")
            .contains("bounce.example.com"),
        "{spf:#}"
    );
    setup.zone(json!({ "bounce.example.com": [["v=spf1 ip4:192.0.2.1 -all"]] }));
    let spf = setup.doctor().get("SPF").clone();
    assert_eq!(spf["result"], "pass", "{spf:#}");
}

#[test]
fn strict_dkim_alignment_that_the_setup_misses_fails() {
    if dnslib_missing().is_some() {
        return;
    }
    let mut setup = Setup::new("http://127.0.0.1:9/");
    // From a subdomain, signed for the organisational domain: relaxed alignment only.
    setup.set("SQUEEZE_FROM", "News <news@news.example.com>");
    setup.set("SQUEEZE_DKIM_DOMAIN", "example.com");
    let spf = json!([["v=spf1 -all"]]);
    setup.zone(json!({ "news.example.com": spf.clone() }));
    let report = setup.doctor();
    assert_eq!(report.result("DMARC DKIM alignment"), "pass");
    assert_eq!(
        report.result("DMARC"),
        "pass",
        "the organisational domain's record"
    );
    setup.zone(json!({
        "news.example.com": spf,
        "_dmarc.example.com": [["v=DMARC1; p=reject; adkim=s"]],
    }));
    let report = setup.doctor();
    let alignment = report.get("DMARC DKIM alignment");
    assert_eq!(alignment["result"], "fail", "{alignment:#}");
    assert!(
        alignment["fix"]
            .as_str()
            .unwrap_or("")
            .contains("dkim_domain = \"news.example.com\""),
        "{alignment:#}"
    );
    assert_eq!(report.code, 1);
}

#[test]
fn http_public_url_missing_postal_address_and_missing_dkim_are_reported() {
    if dnslib_missing().is_some() {
        return;
    }
    let mut setup = Setup::new("http://news.example.com:9/");
    setup.set("SQUEEZE_PUBLIC_URL", "http://127.0.0.2:9/");
    setup.unset("SQUEEZE_POSTAL_ADDRESS");
    let report = setup.doctor();
    assert_eq!(report.result("public_url https"), "fail");
    assert_eq!(report.result("postal_address"), "warn", "outbox only");
    setup.set("SQUEEZE_SMTP_URL", "smtp://127.0.0.1:9");
    assert_eq!(
        setup.doctor().result("postal_address"),
        "fail",
        "a real relay"
    );
    setup.unset("SQUEEZE_DKIM_SELECTOR");
    setup.unset("SQUEEZE_DKIM_KEY");
    let dkim = setup.doctor().get("DKIM").clone();
    assert_eq!(dkim["result"], "fail");
    assert!(
        dkim["fix"]
            .as_str()
            .unwrap_or("")
            .contains("squeeze dkim keygen")
    );
}
