//! `squeeze dkim keygen`: a new DKIM private key in a file only its owner can read, and the
//! DNS TXT record that publishes its public half.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use crate::config::Config;
use crate::mail::dkim::{self, DkimKey, MIN_RSA_BITS};

#[derive(Subcommand)]
pub enum DkimCommand {
    /// Write a new private key (mode 0600, never over an existing file) and print the DNS
    /// TXT record to publish at <selector>._domainkey.<domain>.
    Keygen {
        /// The selector the key is published under (`s=`), e.g. `2026a`.
        #[arg(long)]
        selector: String,
        /// The signing domain [default: `dkim_domain`, else the From domain].
        #[arg(long)]
        domain: Option<String>,
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: KeyAlgorithm,
        /// RSA key size (2048 or more; ignored for Ed25519).
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Where to write the key [default: ./dkim-<selector>.pem].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum KeyAlgorithm {
    Rsa,
    Ed25519,
}

pub fn run(command: DkimCommand, config: &Config) -> ExitCode {
    let DkimCommand::Keygen {
        selector,
        domain,
        algorithm,
        bits,
        out,
    } = command;
    let domain = domain
        .or_else(|| config.dkim.as_ref().map(|d| d.domain.clone()))
        .unwrap_or_else(|| config.from.email.domain().to_ascii_lowercase());
    let out = out.unwrap_or_else(|| PathBuf::from(format!("dkim-{selector}.pem")));
    match keygen(&selector, &domain, algorithm, bits, &out) {
        Ok(record) => {
            println!(
                "Wrote {} (mode 0600). Publish this DNS record:\n",
                out.display()
            );
            println!("{record}");
            println!(
                "\nThen set dkim_selector = \"{selector}\" and dkim_key = \"{}\" (or \
                 dkim_second_selector / dkim_second_key for a second key).",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("squeeze: {e}.");
            ExitCode::from(2)
        }
    }
}

fn keygen(
    selector: &str,
    domain: &str,
    algorithm: KeyAlgorithm,
    bits: usize,
    out: &Path,
) -> Result<String, String> {
    let valid = |v: &str| {
        !v.is_empty()
            && v.split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    if !valid(selector) {
        return Err(format!(
            "--selector {selector:?} is not a DNS name (letters, digits and `-`, joined by dots)"
        ));
    }
    if !valid(domain) {
        return Err(format!("--domain {domain:?} is not a DNS name"));
    }
    if out.exists() {
        return Err(format!(
            "{} already exists; it is never overwritten (choose another --out, or remove it)",
            out.display()
        ));
    }
    let pem = match algorithm {
        KeyAlgorithm::Ed25519 => dkim::generate_ed25519()?,
        KeyAlgorithm::Rsa => rsa_pem(bits)?,
    };
    let key = DkimKey::from_pem(pem.as_bytes())?;
    write_private(out, pem.as_bytes())?;
    Ok(zone_line(
        &format!("{selector}._domainkey.{domain}."),
        &key.txt_record(),
    ))
}

/// A new RSA key from `openssl genpkey`: ring signs with RSA but cannot make RSA keys, and the
/// one Rust crate that can (`rsa`) carries RUSTSEC-2023-0071 with no fix. The key comes back
/// on openssl's stdout, so the file is written here, 0600, never over another.
fn rsa_pem(bits: usize) -> Result<String, String> {
    if !(MIN_RSA_BITS..=4096).contains(&bits) {
        return Err(format!(
            "--bits {bits}: RSA keys for DKIM are {MIN_RSA_BITS} to 4096 bits"
        ));
    }
    let output = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            &format!("rsa_keygen_bits:{bits}"),
        ])
        .output()
        .map_err(|e| {
            format!(
                "cannot run openssl to make an RSA key ({e}); install openssl, or use \
                 --algorithm ed25519"
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "openssl could not make an RSA key: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| "openssl printed something that is not PEM".into())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{} already exists; it is never overwritten", path.display())
        } else {
            format!("cannot create {}: {e}", path.display())
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The record as a zone-file line; a TXT string holds at most 255 octets, so a long value (an
/// RSA key) is split into several strings, which DNS joins back into one value.
pub fn zone_line(name: &str, value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!("{name} IN TXT ( {} )", strings.join(" "))
}
