//! Fetching a feed: the HTTP rules.
//!
//! - http and https only, on the first URL and on every redirect hop; at most
//!   [`MAX_REDIRECTS`] redirects;
//! - unless `allow_private`, every address a host resolves to must be public (not loopback,
//!   private, link-local, unspecified, multicast, shared or broadcast): the resolver checks
//!   them all and hands the HTTP client only the addresses it checked, so the connection goes
//!   to a checked address (a second DNS answer cannot swap it: DNS rebinding); a literal
//!   address in a URL is checked the same way, on every hop;
//! - one timeout for the whole exchange, body included;
//! - a size cap on the body as decoded (gzip and deflate are decoded as they stream, and the
//!   decoded bytes are counted), so a small compressed bomb is cut off at the cap;
//! - conditional GET: the last `ETag` and `Last-Modified` are sent back; `304` is
//!   [`Fetched::NotModified`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use url::Url;

pub const MAX_REDIRECTS: usize = 5;

/// What the feed settings say about fetching.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub timeout: Duration,
    pub max_bytes: u64,
    pub allow_private: bool,
}

/// The validators a server gave with its last answer, sent back for a conditional GET.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Debug)]
pub enum Fetched {
    /// `304 Not Modified`: nothing new since the validators.
    NotModified,
    Body {
        bytes: Vec<u8>,
        validators: Validators,
    },
}

/// Why a feed could not be fetched, said so an editor can act on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("the feed is larger than {0} bytes")]
    TooLarge(u64),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("the server answered {0}")]
    Status(u16),
    #[error("{0}")]
    Network(String),
}

/// Whether an address is one a feed may be fetched from without `feed_allow_private`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                // 100.64.0.0/10, carrier-grade NAT (shared address space)
                || (a == 100 && (b & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7, unique local
                || (first & 0xfe00) == 0xfc00
                // fe80::/10, link-local
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The scheme, and a literal address in the host, of a URL the fetcher is asked to go to.
fn check_url(url: &Url, allow_private: bool) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Refused(format!(
            "{url} is not an http:// or https:// URL"
        )));
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(FetchError::Refused(format!("{url} has no host"))),
    };
    match literal {
        Some(ip) if !allow_private && !is_public(ip) => Err(refused_address(ip)),
        _ => Ok(()),
    }
}

fn refused_address(ip: IpAddr) -> FetchError {
    FetchError::Refused(format!(
        "{ip} is a loopback, private, link-local or otherwise non-public address \
         (set feed_allow_private = true to allow it)"
    ))
}

/// Resolves a host and checks every address; the client connects only to what it returns.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                let e: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(refused_address(bad.ip()));
                return Err(e);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for feeds, built once; cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    settings: FetchSettings,
}

impl Fetcher {
    pub fn new(settings: FetchSettings) -> Result<Self, FetchError> {
        let allow_private = settings.allow_private;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            // `previous` holds the first URL and every hop followed so far.
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(FetchError::TooManyRedirects);
            }
            match check_url(attempt.url(), allow_private) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config())
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .redirect(redirects)
            // No proxy from the environment: it would connect to an address nobody checked.
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!(
                "Squeeze/",
                env!("CARGO_PKG_VERSION"),
                " (feed poller)"
            ))
            .build()
            .map_err(|e| FetchError::Network(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client, settings })
    }

    /// GETs `url`, conditionally on `validators`, under the rules above.
    pub async fn fetch(&self, url: &str, validators: &Validators) -> Result<Fetched, FetchError> {
        let parsed = Url::parse(url).map_err(|e| FetchError::Refused(format!("{url}: {e}")))?;
        check_url(&parsed, self.settings.allow_private)?;
        let mut request = self.client.get(parsed).header(
            reqwest::header::ACCEPT,
            "application/rss+xml, application/atom+xml, application/feed+json, \
             application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5",
        );
        if let Some(etag) = &validators.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &validators.last_modified {
            request = request.header(IF_MODIFIED_SINCE, lm);
        }
        let mut response = request.send().await.map_err(|e| self.classify(e))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let max = self.settings.max_bytes;
        if response.content_length().is_some_and(|n| n > max) {
            return Err(FetchError::TooLarge(max));
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let validators = Validators {
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        };
        // The chunks are the decoded bytes: counting them caps what decompression makes.
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(e))? {
            if (bytes.len() + chunk.len()) as u64 > max {
                return Err(FetchError::TooLarge(max));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body { bytes, validators })
    }

    /// Says a reqwest error the way an editor can act on it: our own refusals (from the
    /// resolver or the redirect policy) as they are, a timeout as a timeout.
    fn classify(&self, e: reqwest::Error) -> FetchError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if let Some(ours) = s.downcast_ref::<FetchError>() {
                return ours.clone();
            }
            source = s.source();
        }
        if e.is_timeout() {
            return FetchError::Timeout(self.settings.timeout);
        }
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        FetchError::Network(message)
    }
}

/// Public roots (webpki-roots) over ring, the provider the rest of Squeeze uses.
fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(roots.clone())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn urls_other_than_http_or_to_private_literals_are_refused() {
        let url = |s: &str| Url::parse(s).expect("url");
        assert!(check_url(&url("file:///etc/passwd"), true).is_err());
        assert!(check_url(&url("ftp://example.com/feed"), true).is_err());
        assert!(check_url(&url("http://127.0.0.1/feed"), false).is_err());
        assert!(check_url(&url("http://[::1]/feed"), false).is_err());
        assert!(check_url(&url("http://127.0.0.1/feed"), true).is_ok());
        assert!(check_url(&url("https://example.com/feed"), false).is_ok());
    }
}
