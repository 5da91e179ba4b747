//! Amazon SNS over the network, for the SES webhook: the signing certificates (fetched once
//! per URL, kept in memory) and the GET that confirms a subscription. Which URLs may be
//! fetched is decided by `inbound::webhooks::ses` before they reach here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use url::Url;

/// Largest certificate accepted (SNS's PEM is under 2 KiB).
const MAX_CERT_BYTES: usize = 16 * 1024;
/// Certificates kept; past this the cache starts again (SNS uses a handful).
const MAX_CACHED: usize = 32;

/// The SNS client: an HTTP client without redirects and the certificate cache.
#[derive(Clone)]
pub struct Sns {
    /// `None` when no client could be built (then nothing is fetched: every call is 401).
    client: Option<reqwest::Client>,
    certs: Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>>,
}

impl std::fmt::Debug for Sns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sns")
    }
}

impl Default for Sns {
    fn default() -> Self {
        Self::new()
    }
}

impl Sns {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| tracing::error!(error = %e, "no HTTP client for SNS certificates"))
            .ok();
        Self {
            client,
            certs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The PEM at `url`, from the cache or fetched; `Err` says why not, in a phrase.
    pub async fn certificate(&self, url: &Url) -> Result<Arc<Vec<u8>>, String> {
        if let Some(pem) = self.cached(url.as_str()) {
            return Ok(pem);
        }
        let res = self
            .client()?
            .get(url.clone())
            .send()
            .await
            .map_err(|e| format!("cannot fetch the signing certificate: {e}"))?;
        if !res.status().is_success() {
            return Err(format!(
                "the signing certificate's URL answered {}",
                res.status()
            ));
        }
        if res
            .content_length()
            .is_some_and(|n| n > MAX_CERT_BYTES as u64)
        {
            return Err("the signing certificate is too large".into());
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| format!("cannot read the signing certificate: {e}"))?;
        if body.len() > MAX_CERT_BYTES {
            return Err("the signing certificate is too large".into());
        }
        let pem = Arc::new(body.to_vec());
        if let Ok(mut certs) = self.certs.lock() {
            if certs.len() >= MAX_CACHED {
                certs.clear();
            }
            certs.insert(url.as_str().to_owned(), pem.clone());
        }
        Ok(pem)
    }

    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .as_ref()
            .ok_or_else(|| "no HTTP client could be built".to_owned())
    }

    fn cached(&self, url: &str) -> Option<Arc<Vec<u8>>> {
        self.certs.lock().ok()?.get(url).cloned()
    }

    /// Confirms a subscription: GET its `SubscribeURL`.
    pub async fn confirm(&self, url: &Url) -> Result<(), String> {
        let res = self
            .client()?
            .get(url.clone())
            .send()
            .await
            .map_err(|e| format!("cannot reach SubscribeURL: {e}"))?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(format!("SubscribeURL answered {}", res.status()))
        }
    }
}
