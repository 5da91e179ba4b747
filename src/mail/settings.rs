//! The SMTP relay setting: lettre's URL form, and the extra root certificates of a private CA.

use std::fmt;
use std::path::Path;

use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain SMTP (a local relay).
    None,
    /// STARTTLS when the server offers it.
    Opportunistic,
    /// STARTTLS or fail.
    Required,
    /// TLS from the first byte (smtps://, port 465).
    Implicit,
}

#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Name sent in EHLO (the URL's path, as in lettre's URL form).
    pub hello_name: Option<String>,
    /// Extra trusted root certificates (PEM), for a relay with a private CA.
    pub extra_roots_pem: Option<Vec<u8>>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl SmtpSettings {
    /// lettre's URL form: `smtp://[user:pass@]host[:port][/ehlo-name][?tls=required|opportunistic]`
    /// or `smtps://…` for implicit TLS.
    pub fn from_url(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None) => (SmtpSecurity::None, 25),
            ("smtp", Some("required")) => (SmtpSecurity::Required, 587),
            ("smtp", Some("opportunistic")) => (SmtpSecurity::Opportunistic, 587),
            ("smtps", None) => (SmtpSecurity::Implicit, 465),
            ("smtp" | "smtps", Some(other)) => {
                return Err(format!(
                    "tls={other} is not understood; use tls=required or tls=opportunistic"
                ));
            }
            (scheme, _) => {
                return Err(format!(
                    "scheme {scheme}:// is not supported; use smtp:// or smtps://"
                ));
            }
        };
        let decode =
            |s: &str| percent_decode(s).ok_or_else(|| "credentials are not valid UTF-8".to_owned());
        let username = (!url.username().is_empty())
            .then(|| decode(url.username()))
            .transpose()?;
        let password = url.password().map(decode).transpose()?;
        if password.is_some() && username.is_none() {
            return Err("a password is given without a user name".into());
        }
        let path = url.path().trim_matches('/');
        Ok(Self {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            username,
            password,
            hello_name: (!path.is_empty()).then(|| path.to_owned()),
            extra_roots_pem: None,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Reads a PEM file that must hold at least one certificate.
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it ({e})"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("it is not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err("it holds no PEM certificate".into());
    }
    Ok(pem)
}
