//! The sign step: DKIM signatures are made off the async runtime's threads, in the blocking
//! pool, so an RSA signature (~0.8 ms of CPU) never stalls the tasks that talk SMTP, and
//! signatures for several senders are made at once on every core.

use crate::mail::dkim::Signer;

/// `bytes` signed by every key of `signer`; `Err` is why not, said for the delivery's record.
pub(super) async fn sign(signer: &Signer, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let signer = signer.clone();
    tokio::task::spawn_blocking(move || signer.sign(&bytes))
        .await
        .map_err(|e| format!("the signing task ended: {e}"))?
        .map_err(|e| e.to_string())
}
