//! The `squeeze` binary (and other programs) as child processes: started with none of the
//! caller's `SQUEEZE_*` settings, stopped with SIGTERM, and never left behind.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};

use crate::{TEMPLATES, TestDb};

/// Removes every `SQUEEZE_*` variable of this process from `cmd`'s environment, so only the
/// settings the caller gives count.
pub fn without_squeeze_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SQUEEZE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `squeeze` (at `bin`, e.g. `env!("CARGO_BIN_EXE_squeeze")`) as a child process, for crash and
/// signal tests: in the database's folder, with its URL and the templates, logging to
/// `squeeze.log` there.
pub fn spawn_squeeze(
    bin: &Path,
    args: &[&str],
    database: &TestDb,
    env: &[(&str, String)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(database.dir().join("squeeze.log"))
        .expect("log file");
    let mut cmd = Command::new(bin);
    without_squeeze_env(&mut cmd)
        .args(args)
        .current_dir(database.dir())
        .env("SQUEEZE_DATABASE_URL", database.url())
        .env("SQUEEZE_TEMPLATES", TEMPLATES)
        .env("SQUEEZE_FROM", "Squeeze Test <news@squeeze.test>")
        // With a relay set, Squeeze refuses to start without a public URL.
        .env("SQUEEZE_PUBLIC_URL", "http://127.0.0.1:8080")
        .env("RUST_LOG", "squeeze=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn squeeze")
}

/// Sends SIGTERM (the graceful stop) to the process `pid`.
pub fn sigterm(pid: u32) -> anyhow::Result<()> {
    let pid = pid.to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .context("running kill -TERM")?;
    ensure!(sent.success(), "kill -TERM {pid} failed");
    Ok(())
}

/// Sends SIGTERM (graceful stop) to a child; panics if it cannot.
pub fn terminate(child: &Child) {
    sigterm(child.id()).unwrap_or_else(|e| panic!("{e:#}"));
}

/// Waits for a child to exit, up to `timeout`; panics if it does not.
pub async fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "process did not exit within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A command for a child that must not outlive its parent. [`Reaped`] covers errors and
/// Ctrl-C; when the parent itself is killed (a CI timeout's SIGKILL) only the kernel can help:
/// util-linux's `setpriv --pdeathsig KILL` asks it to kill the child with its parent, then
/// execs the program, so the pid stays the program's (as /proc sampling needs).
pub fn child_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if Path::new(SETPRIV).exists() {
        let mut c = Command::new(SETPRIV);
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A child process that is killed (SIGKILL) if still running when dropped: an error or
/// Ctrl-C anywhere leaves no child behind.
pub struct Reaped(pub Child);

impl Reaped {
    /// SIGTERM (the graceful stop), then waits up to `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let pid = self.0.id();
        sigterm(pid)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "process {pid} still running {timeout:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}
