//! The `squeeze` binary: exit codes and one-sentence errors for bad configuration.

use std::path::Path;
use std::process::{Command, Output};

const TEMPLATES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");

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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_configuration_exits_2_with_one_sentence_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    /// Arguments, environment, and what the error sentence must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &["migrate"],
            &[("SQUEEZE_RATE", "0")],
            &["`rate`", "SQUEEZE_RATE", "at least 1"],
        ),
        (&["migrate"], &[("SQUEEZE_RATE", "fast")], &["`rate`"]),
        (
            &["migrate", "--database-url", "mysql://db/x"],
            &[],
            &["`database_url`", "--database-url", "sqlite://"],
        ),
        (
            &["migrate"],
            &[("SQUEEZE_TEMPLATES", "/no/such/dir")],
            &["`templates`", "no such folder"],
        ),
        (
            &["migrate"],
            &[("SQUEEZE_SMTP_URL", "http://relay.example")],
            &["`smtp_url`", "smtp://"],
        ),
        (
            &["migrate"],
            &[("SQUEEZE_SMTP_URL", "not a url")],
            &["`smtp_url`", "not a URL"],
        ),
        (&["migrate"], &[("SQUEEZE_BIND", "everywhere")], &["`bind`"]),
        (
            &["migrate"],
            &[("SQUEEZE_PUBLIC_URL", "ftp://x")],
            &["`public_url`"],
        ),
        (&["migrate"], &[("SQUEEZE_FROM", "nobody")], &["`from`"]),
        (
            &["migrate"],
            &[("SQUEEZE_CONCURRENCY", "0")],
            &["`concurrency`"],
        ),
        (
            &["migrate"],
            &[("SQUEEZE_CONFIRMATION_TTL", "forever")],
            &["`confirmation_ttl`"],
        ),
        (
            &["migrate"],
            &[("SQUEEZE_DATABASE_URL", "sqlite::memory:")],
            &["`database_url`", "in-memory", "every request would fail"],
        ),
        (
            &["migrate"],
            &[("SQUEEZE_DATABASE_URL", "sqlite://:memory:")],
            &["`database_url`", "in-memory"],
        ),
        (
            &["migrate"],
            &[("SQUEEZE_LIST_ID", "<>")],
            &["`list_id`", "RFC 2919"],
        ),
        (
            &["migrate"],
            &[("SQUEEZE_LIST_ID", "News <news>")],
            &["`list_id`", "RFC 2919"],
        ),
        (
            &["migrate"],
            &[
                ("SQUEEZE_RETRY_INITIAL", "10m"),
                ("SQUEEZE_RETRY_MAX", "1m"),
            ],
            &["`retry_initial`", "`retry_max`", "longer"],
        ),
        (
            &["migrate"],
            &[("SQUEEZE_SMTP_URL", "smtp://relay.example:2525")],
            &[
                "`public_url`",
                "links in real mail would point at http://127.0.0.1:8080",
            ],
        ),
        (
            &["migrate"],
            &[("SQUEEZE_ADMIN_TOKEN", " test-admin-token-0123456789 ")],
            &["`admin_token` = <hidden>", "whitespace"],
        ),
        (
            &["migrate"],
            &[("SQUEEZE_ADMIN_TOKEN", "test-admin-token-0123456789\t")],
            &["`admin_token`", "whitespace"],
        ),
        (
            &["migrate", "--config", "missing.toml"],
            &[],
            &["missing.toml"],
        ),
    ];
    for (args, env, needles) in cases {
        let out = squeeze(dir.path(), args, env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        for n in *needles {
            assert!(
                err.contains(n),
                "{args:?} {env:?}: expected {n:?} in {err:?}"
            );
        }
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(
        !dir.path().join("squeeze.db").exists(),
        "nothing is created on bad config"
    );
}

#[test]
fn config_file_layers_are_checked_and_flags_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("squeeze.toml"), "rate = 0\n").expect("write");
    let out = squeeze(dir.path(), &["migrate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("squeeze.toml"), "{}", stderr(&out));
    // The environment beats the file, the flag beats the environment.
    let out = squeeze(dir.path(), &["migrate"], &[("SQUEEZE_RATE", "5")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = squeeze(
        dir.path(),
        &["migrate", "--rate", "0"],
        &[("SQUEEZE_RATE", "5")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--rate"));

    std::fs::write(dir.path().join("squeeze.toml"), "speed = 3\n").expect("write");
    let out = squeeze(dir.path(), &["migrate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown setting `speed`"));

    std::fs::write(dir.path().join("squeeze.toml"), "rate = [\n").expect("write");
    let out = squeeze(dir.path(), &["migrate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not valid TOML"));
}

/// A lease shorter than one message's SMTP exchange (connect, then send: `smtp_timeout`
/// each) would hand a live worker's claim to another worker while its message is on the wire.
#[test]
fn a_lease_under_twice_the_smtp_timeout_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = squeeze(
        dir.path(),
        &["migrate"],
        &[("SQUEEZE_LEASE", "1ms"), ("SQUEEZE_SMTP_TIMEOUT", "30s")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("setting `lease` = 1ms is shorter than twice `smtp_timeout` (30s)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    let out = squeeze(
        dir.path(),
        &["migrate"],
        &[("SQUEEZE_LEASE", "10s"), ("SQUEEZE_SMTP_TIMEOUT", "5s")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_broken_template_stops_start_up_with_its_name_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).expect("mkdir");
    for entry in std::fs::read_dir(TEMPLATES).expect("templates") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), templates.join(entry.file_name())).expect("copy");
    }
    std::fs::write(templates.join("confirmation.txt.j2"), "Hi\n{{ name }\n").expect("break it");
    let out = squeeze(
        dir.path(),
        &["migrate"],
        &[("SQUEEZE_TEMPLATES", "templates")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("confirmation.txt.j2") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn migrate_creates_the_database_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = squeeze(dir.path(), &["migrate"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.path().join("squeeze.db").exists());
    // Migrating again is a no-op.
    assert_eq!(
        squeeze(dir.path(), &["migrate"], &[]).status.code(),
        Some(0)
    );
    assert_eq!(
        squeeze(dir.path(), &["frobnicate"], &[]).status.code(),
        Some(2)
    );
    assert_eq!(
        squeeze(dir.path(), &["serve", "--bogus"], &[])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn an_address_in_use_is_a_runtime_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = squeeze(dir.path(), &["serve", "--bind", &addr], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("`bind`"));
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn editors_work_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| squeeze(dir.path(), args, &[]);

    let out = run(&[
        "items",
        "add",
        "--title",
        "Rust <b>2.0</b>",
        "--url",
        "https://example.com/r",
        "--summary",
        "Big news",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let item_id = stdout(&out).trim().to_owned();
    let out = run(&[
        "items",
        "add",
        "--title",
        "Bad",
        "--url",
        "javascript:alert(1)",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("url"), "{}", stderr(&out));
    let out = run(&["items", "list", "--status", "pending"]);
    assert!(stdout(&out).contains(&item_id));

    std::fs::write(
        dir.path().join("digest.toml"),
        "subject = \"Monday\"\nintro = \"Hello\"\nitems = \"pending\"\n",
    )
    .expect("write");
    let out = run(&["digest", "create", "--file", "digest.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let digest_id = stdout(&out)
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("id:"))
        .expect("id line")
        .trim()
        .to_owned();
    assert!(stdout(&out).contains("status:     draft"));

    let out = run(&["digest", "preview", &digest_id, "--text"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("Rust <b>2.0</b>") && stdout(&out).contains("Sample Subscriber"));
    let out = run(&["digest", "preview", &digest_id]);
    assert!(stdout(&out).contains("Rust &lt;b&gt;2.0&lt;&#x2f;b&gt;"));

    let out = run(&[
        "digest",
        "schedule",
        &digest_id,
        "--at",
        "2001-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("in the past"), "{}", stderr(&out));
    let out = run(&["digest", "schedule", &digest_id]);
    assert_eq!(out.status.code(), Some(2), "--at or --now is required");
    let out = run(&["digest", "schedule", &digest_id, "--now"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("scheduled"));
    let out = run(&["digest", "pause", &digest_id, "--reason", "wrong subject"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("status:     paused") && stdout(&out).contains("wrong subject"));
    let out = run(&["digest", "resume", &digest_id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("status:     scheduled"));
    // A draft beside the scheduled one: statuses of different lengths, one column.
    let out = run(&[
        "items",
        "add",
        "--title",
        "Later",
        "--url",
        "https://example.com/l",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&["digest", "create", "--file", "digest.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&["digest", "list"]);
    assert!(stdout(&out).contains(&digest_id) && stdout(&out).contains("Monday"));
    let listing = stdout(&out);
    let mut lines = listing.lines();
    let header = lines.next().expect("a header");
    let subject_at = header.find("SUBJECT").expect("a SUBJECT column");
    for line in lines {
        assert_eq!(
            line.get(subject_at..subject_at + 1).map(|c| c != " "),
            Some(true),
            "every subject starts under SUBJECT:\n{listing}"
        );
        assert_eq!(
            line.get(subject_at - 2..subject_at),
            Some("  "),
            "two spaces before it:\n{listing}"
        );
    }
    let out = run(&["digest", "cancel", "no-such-digest"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no digest with id no-such-digest"));

    std::fs::write(
        dir.path().join("bad.json"),
        "{\"subject\": \"x\", \"items\": 3}",
    )
    .expect("write");
    let out = run(&["digest", "create", "--file", "bad.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.json"));

    let out = run(&[
        "schedule",
        "set",
        "--daily",
        "07:00",
        "--tz",
        "Europe/Madrid",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&["schedule", "show"]);
    assert!(
        stdout(&out).contains("daily at 07:00 Europe/Madrid (enabled)")
            && stdout(&out).contains("next run:")
    );
    let out = run(&["schedule", "set", "--daily", "07:00", "--tz", "Mars/Base"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("timezone"));
}

#[test]
fn each_subscribers_morning_is_set_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| squeeze(dir.path(), args, &[]);
    let out = run(&[
        "items",
        "add",
        "--title",
        "Morning",
        "--url",
        "https://example.com/m",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(
        dir.path().join("digest.toml"),
        "subject = \"Morning\"\nitems = \"pending\"\n",
    )
    .expect("write");
    let out = run(&["digest", "create", "--file", "digest.toml"]);
    let digest_id = stdout(&out)
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("id:"))
        .expect("id line")
        .trim()
        .to_owned();
    let out = run(&["digest", "schedule", &digest_id, "--local-time", "07:00"]);
    assert_eq!(out.status.code(), Some(2), "--date goes with --local-time");
    let out = run(&[
        "digest",
        "schedule",
        &digest_id,
        "--local-time",
        "7am",
        "--date",
        "2027-01-15",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("local_time"), "{}", stderr(&out));
    let out = run(&[
        "digest",
        "schedule",
        &digest_id,
        "--local-time",
        "07:00",
        "--date",
        "2027-01-15",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("status:     scheduled")
            && stdout(&out).contains("at 07:00 on 2027-01-15 in each subscriber's own zone"),
        "{}",
        stdout(&out)
    );

    let out = run(&[
        "schedule",
        "set",
        "--daily",
        "07:00",
        "--tz",
        "Europe/Madrid",
        "--deliver-at",
        "subscriber",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("daily at 07:00 Europe/Madrid in each subscriber's own zone"),
        "{}",
        stdout(&out)
    );
    let out = run(&[
        "schedule",
        "set",
        "--daily",
        "07:00",
        "--tz",
        "Europe/Madrid",
        "--deliver-at",
        "reader",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("deliver_at"), "{}", stderr(&out));
}

#[test]
fn every_setting_is_also_a_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    for key in squeeze::config::SETTINGS {
        let flag = format!("--{}", key.replace('_', "-"));
        let out = squeeze(dir.path(), &["migrate", &flag, "definitely not valid"], &[]);
        let err = stderr(&out);
        assert!(
            !err.contains("unexpected argument"),
            "{flag} is not a flag: {err}"
        );
    }
}

#[test]
fn subscribers_import_export_and_forget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| squeeze(dir.path(), args, &[]);
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");

    write(
        "people.csv",
        "email,name\nAda@Example.com,Ada Lovelace\nbob@example.com,\n",
    );
    let out = run(&["subscribers", "import", "people.csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 sent a confirmation email"),
        "{}",
        stdout(&out)
    );
    let out = run(&["subscribers", "import", "people.csv", "--confirmed"]);
    assert!(
        stdout(&out).contains("0 added as confirmed, 2 already known"),
        "known addresses are left alone"
    );

    write(
        "bad.csv",
        "email\nok@example.com\nnot-an-address\nx@y.z\r\nBcc: a@b.c\n",
    );
    let out = run(&["subscribers", "import", "bad.csv", "--confirmed"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("line 3") && stderr(&out).contains("nothing was imported"),
        "{}",
        stderr(&out)
    );
    let out = run(&["subscribers", "list"]);
    assert!(
        !stdout(&out).contains("ok@example.com"),
        "an invalid file imports nothing"
    );

    write("confirmed.csv", "email\ncarol@example.com\n");
    let out = run(&["subscribers", "import", "confirmed.csv", "--confirmed"]);
    assert!(stdout(&out).contains("1 added as confirmed"));
    let out = run(&["subscribers", "export"]);
    assert_eq!(out.status.code(), Some(0));
    let csv = stdout(&out);
    assert!(csv.starts_with("email,name,status,"));
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.contains("Ada@example.com,Ada Lovelace,pending"));
    assert!(
        csv.lines()
            .any(|l| l.starts_with("carol@example.com,,confirmed,")
                && l.ends_with("import of confirmed.csv,")),
        "{csv}"
    );
    let out = run(&["subscribers", "export", "--status", "confirmed"]);
    assert_eq!(stdout(&out).lines().count(), 2);

    let out = run(&["subscribers", "forget", "carol@example.com"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&["subscribers", "forget", "carol@example.com"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no subscriber with the address carol@example.com"));
    assert!(!stdout(&run(&["subscribers", "export"])).contains("carol"));
}

#[test]
fn a_relay_with_a_plain_http_public_url_starts_with_a_warning_about_rfc_8058() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = squeeze(
        dir.path(),
        &["migrate"],
        &[
            ("SQUEEZE_SMTP_URL", "smtp://relay.example:2525"),
            ("SQUEEZE_PUBLIC_URL", "http://news.example.com"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("WARN") && err.contains("RFC 8058") && err.contains("https"),
        "{err}"
    );
    let out = squeeze(
        dir.path(),
        &["migrate"],
        &[
            ("SQUEEZE_SMTP_URL", "smtp://relay.example:2525"),
            ("SQUEEZE_PUBLIC_URL", "https://news.example.com"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("RFC 8058"), "{}", stderr(&out));
}

#[test]
fn exported_cells_that_a_spreadsheet_would_run_get_a_leading_quote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| squeeze(dir.path(), args, &[]);
    std::fs::write(
        dir.path().join("people.csv"),
        "email,name\nada@example.com,\"=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\"\n\
         bob@example.com,@SUM(A1)\n",
    )
    .expect("write");
    let out = run(&["subscribers", "import", "people.csv", "--confirmed"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&["subscribers", "export"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let csv = stdout(&out);
    assert!(
        csv.contains("ada@example.com,\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\""),
        "{csv}"
    );
    assert!(csv.contains("bob@example.com,'@SUM(A1),confirmed"), "{csv}");
    assert!(
        !csv.lines()
            .any(|l| l.split(',').any(|c| c.starts_with('='))),
        "{csv}"
    );
}

#[test]
fn import_refuses_a_directory_an_oversized_file_and_an_endless_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], env: &[(&str, &str)]| squeeze(dir.path(), args, env);
    std::fs::create_dir(dir.path().join("folder.csv")).expect("mkdir");
    let out = run(&["subscribers", "import", "folder.csv"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("folder.csv is a directory, not a CSV file"),
        "{}",
        stderr(&out)
    );

    let mut big = String::from("email\n");
    for i in 0..200 {
        big.push_str(&format!("person{i}@example.com\n"));
    }
    std::fs::write(dir.path().join("big.csv"), &big).expect("write");
    let out = run(
        &["subscribers", "import", "big.csv", "--confirmed"],
        &[("SQUEEZE_IMPORT_MAX_BYTES", "1KB")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("more than import_max_bytes (1024 bytes)"),
        "{}",
        stderr(&out)
    );

    let long = format!("email,name\nada@example.com,{}\n", "x".repeat(70 * 1024));
    std::fs::write(dir.path().join("long.csv"), long).expect("write");
    let out = run(&["subscribers", "import", "long.csv", "--confirmed"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("line 2 is longer than 64 KB"),
        "{}",
        stderr(&out)
    );
    let out = run(&["subscribers", "list"], &[]);
    assert!(
        !stdout(&out).contains("@example.com"),
        "nothing imported: {}",
        stdout(&out)
    );
}

#[test]
fn sigterm_during_an_import_exits_promptly_and_imports_nothing() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = squeeze(dir.path(), &["migrate"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    {
        let file = std::fs::File::create(dir.path().join("huge.csv")).expect("create");
        let mut w = std::io::BufWriter::new(file);
        writeln!(w, "email,name").expect("write");
        for i in 0..2_000_000 {
            writeln!(w, "person{i}@example.com,Person {i}").expect("write");
        }
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_squeeze"));
    cmd.current_dir(dir.path())
        .args(["subscribers", "import", "huge.csv", "--confirmed"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("SQUEEZE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("SQUEEZE_TEMPLATES", TEMPLATES)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "still reading the file"
    );
    let sent = std::time::Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            sent.elapsed() < std::time::Duration::from_secs(3),
            "the import ignored SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    assert!(!status.success(), "{status:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing was imported"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = squeeze(dir.path(), &["subscribers", "list", "--limit", "5"], &[]);
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "only the header: {}",
        stdout(&out)
    );
}
