//! DKIM signing (RFC 6376; Ed25519-SHA256 from RFC 8463): the keys read from PEM files, and
//! the one signer every message passes through on its way out.
//!
//! The canonicalisation (relaxed/relaxed) and the signature are mail-auth's, over ring; this
//! file only loads keys, decides what is signed (`SIGNED_HEADERS`), and puts the
//! `DKIM-Signature` lines in front of the message Squeeze wrote.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, Done};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// What every signature covers, in the order of `h=`. From is named twice: a message has one
/// From, so the second names a From that is absent, and a From added on the way (a second,
/// forged one) breaks the signature (RFC 6376, 8.15). Headers a message lacks (List-Id in a
/// confirmation) are signed as absent, so they cannot be added either. No `l=`: the whole body
/// is signed.
pub const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
];

/// The smallest RSA key accepted: what Gmail, Yahoo and Microsoft ask for (and RFC 8301's
/// floor is 1024; 2048 is what they verify without complaint).
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    /// The `k=` tag of the DNS record.
    pub fn dns_name(self) -> &'static str {
        match self {
            Self::Rsa => "rsa",
            Self::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa => "RSA-SHA256",
            Self::Ed25519 => "Ed25519-SHA256",
        })
    }
}

/// A private key read from a PEM file: RSA (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`,
/// 2048 bits or more) or Ed25519 (PKCS#8, as `openssl genpkey -algorithm ed25519` and
/// `squeeze dkim keygen` write it).
#[derive(Clone)]
pub struct DkimKey {
    /// The private key's DER (PKCS#1 or PKCS#8), from which each signer builds its own key.
    der: Arc<PrivateKeyDer<'static>>,
    /// The `p=` of the DNS record: for RSA the SubjectPublicKeyInfo DER (what `openssl rsa
    /// -pubout` prints), for Ed25519 the raw 32-byte key (RFC 8463).
    public: Vec<u8>,
    algorithm: Algorithm,
}

impl fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DkimKey({})", self.algorithm)
    }
}

impl DkimKey {
    /// Reads and checks a PEM file; `Err` says what is wrong in a phrase.
    pub fn load(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read the key file ({e})"))?;
        Self::from_pem(&pem)
    }

    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
            "no PEM private key in it (expected `-----BEGIN PRIVATE KEY-----` or \
             `-----BEGIN RSA PRIVATE KEY-----`)"
                .to_owned()
        })?;
        if let PrivateKeyDer::Pkcs8(p8) = &der
            && let Ok(pair) =
                ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(p8.secret_pkcs8_der())
        {
            use ring::signature::KeyPair as _;
            let public = pair.public_key().as_ref().to_vec();
            return Ok(Self {
                der: Arc::new(der.clone_key()),
                public,
                algorithm: Algorithm::Ed25519,
            });
        }
        let ring_pair = match &der {
            PrivateKeyDer::Pkcs1(p1) => ring::rsa::KeyPair::from_der(p1.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(p8) => ring::rsa::KeyPair::from_pkcs8(p8.secret_pkcs8_der()),
            _ => return Err("it holds an EC key; DKIM takes RSA or Ed25519".into()),
        }
        .map_err(|e| match e.to_string().as_str() {
            "TooSmall" => format!("the RSA key is too short; use {MIN_RSA_BITS} bits or more"),
            other => format!("it is not a usable RSA or Ed25519 private key ({other})"),
        })?;
        let bits = ring_pair.public().modulus_len() * 8;
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "the RSA key has {bits} bits; use {MIN_RSA_BITS} bits or more"
            ));
        }
        let public = spki_rsa(ring_pair.public().as_ref());
        // mail-auth reads it the same way; ask it now, so signing cannot fail on the key.
        RsaKey::<Sha256>::from_key_der(der.clone_key())
            .map_err(|e| format!("the RSA key is not usable ({e})"))?;
        Ok(Self {
            der: Arc::new(der),
            public,
            algorithm: Algorithm::Rsa,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn txt_record(&self) -> String {
        use base64::Engine as _;
        let p = base64::engine::general_purpose::STANDARD.encode(&self.public);
        format!("v=DKIM1; k={}; p={p}", self.algorithm.dns_name())
    }

    /// The public key as the DNS record's `p=` holds it.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }
}

/// A new Ed25519 key as a PKCS#8 PEM file's text (ring generates it).
pub fn generate_ed25519() -> Result<String, String> {
    let der = Ed25519Key::generate_pkcs8().map_err(|e| e.to_string())?;
    let key = PrivatePkcs8KeyDer::from(der);
    Ok(pem("PRIVATE KEY", key.secret_pkcs8_der()))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Wraps a PKCS#1 RSAPublicKey (what ring gives) in a SubjectPublicKeyInfo: the `p=` that
/// every verifier reads (RFC 6376, 3.6.1).
fn spki_rsa(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier: rsaEncryption, NULL parameters.
    const ALG: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x00];
    bit_string.extend_from_slice(pkcs1);
    let mut inner = ALG.to_vec();
    der_push(&mut inner, 0x03, &bit_string);
    let mut out = Vec::with_capacity(inner.len() + 4);
    der_push(&mut out, 0x30, &inner);
    out
}

fn der_push(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
}

/// One key and the selector its public half is published under.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub selector: String,
    pub key: DkimKey,
}

/// What `app` gives the worker when DKIM is configured: the signing domain (`d=`) and one or
/// two keys (two: dual signing, RSA and Ed25519, each its own `DKIM-Signature`).
#[derive(Debug, Clone)]
pub struct DkimSettings {
    pub domain: String,
    pub keys: Vec<SigningKey>,
}

/// Signs messages; cheap to clone and shared by every sender (its keys are `Sync`).
#[derive(Clone)]
pub struct Signer {
    signers: Arc<Vec<OneSigner>>,
}

enum OneSigner {
    Rsa(mail_auth::dkim::DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(mail_auth::dkim::DkimSigner<Ed25519Key, Done>),
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({} keys)", self.signers.len())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot sign the message: {0}")]
pub struct SignError(String);

impl Signer {
    pub fn new(settings: &DkimSettings) -> Result<Self, String> {
        fn finish<T: mail_auth::common::crypto::SigningKey>(
            key: T,
            domain: &str,
            selector: &str,
        ) -> mail_auth::dkim::DkimSigner<T, Done> {
            mail_auth::dkim::DkimSigner::from_key(key)
                .domain(domain)
                .selector(selector)
                .headers(SIGNED_HEADERS)
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed)
        }
        let mut signers = Vec::with_capacity(settings.keys.len());
        for k in &settings.keys {
            let (domain, selector) = (settings.domain.as_str(), k.selector.as_str());
            let der = k.key.der.clone_key();
            signers.push(match k.key.algorithm {
                Algorithm::Rsa => {
                    let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| e.to_string())?;
                    OneSigner::Rsa(finish(key, domain, selector))
                }
                Algorithm::Ed25519 => {
                    let PrivateKeyDer::Pkcs8(p8) = der else {
                        return Err("an Ed25519 key is PKCS#8".into());
                    };
                    let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
                        .map_err(|e| e.to_string())?;
                    OneSigner::Ed25519(finish(key, domain, selector))
                }
            });
        }
        Ok(Self {
            signers: Arc::new(signers),
        })
    }

    /// `message` with one `DKIM-Signature` line per key in front of it. Never returns the
    /// message unsigned: an error is the caller's to turn into a failed send.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut out = Vec::with_capacity(message.len() + 512 * self.signers.len());
        for s in self.signers.iter() {
            let signature = match s {
                OneSigner::Rsa(s) => s.sign(message),
                OneSigner::Ed25519(s) => s.sign(message),
            }
            .map_err(|e| SignError(e.to_string()))?;
            signature.write_header(&mut out);
        }
        out.extend_from_slice(message);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_ed25519_key_loads_and_publishes_its_32_byte_public_key() {
        use base64::Engine as _;
        let pem = generate_ed25519().expect("generate");
        let key = DkimKey::from_pem(pem.as_bytes()).expect("loads");
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        let record = key.txt_record();
        let p = record
            .strip_prefix("v=DKIM1; k=ed25519; p=")
            .expect("record");
        let public = base64::engine::general_purpose::STANDARD
            .decode(p)
            .expect("base64");
        assert_eq!(public.len(), 32);
    }

    #[test]
    fn what_is_not_a_key_is_refused_with_a_phrase() {
        for (pem, expected) in [
            (&b"hello"[..], "no PEM private key"),
            (
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "not a usable",
            ),
        ] {
            let err = DkimKey::from_pem(pem).expect_err("refused");
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn a_signed_message_gets_one_signature_per_key_in_front_and_is_otherwise_unchanged() {
        let key = |selector: &str| SigningKey {
            selector: selector.into(),
            key: DkimKey::from_pem(generate_ed25519().expect("key").as_bytes()).expect("key"),
        };
        let signer = Signer::new(&DkimSettings {
            domain: "example.com".into(),
            keys: vec![key("a"), key("b")],
        })
        .expect("signer");
        let message = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n";
        let signed = signer.sign(message).expect("signed");
        assert!(signed.ends_with(message));
        let head = String::from_utf8_lossy(&signed[..signed.len() - message.len()]).into_owned();
        assert_eq!(head.matches("DKIM-Signature: ").count(), 2, "{head}");
        assert!(head.contains("s=a;") && head.contains("s=b;"), "{head}");
        let unfolded = head.replace("\r\n\t", "");
        let h = unfolded
            .split("h=")
            .nth(1)
            .and_then(|h| h.split(';').next())
            .expect("h=");
        let names: Vec<&str> = h.split(':').collect();
        assert_eq!(names.iter().filter(|n| **n == "From").count(), 2, "{h}");
        for name in SIGNED_HEADERS {
            assert!(names.contains(&name), "{name} in {h}");
        }
        assert!(!unfolded.contains(" l="), "{unfolded}");
    }
}
