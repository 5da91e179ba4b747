//! The outbox: each message as `<delivery id>.eml` in a folder, when no SMTP relay is set.

use std::io;
use std::path::{Path, PathBuf};

use lettre::address::Envelope;

use super::Sender;
use crate::domain::delivery::SendFailure;

/// Writes each message into the outbox folder.
#[derive(Debug, Clone)]
pub struct OutboxSender {
    dir: PathBuf,
}

impl OutboxSender {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

impl Sender for OutboxSender {
    async fn send(
        &mut self,
        delivery_id: &str,
        _envelope: &Envelope,
        bytes: &[u8],
    ) -> Result<(), SendFailure> {
        write_eml(&self.dir, delivery_id, bytes).await.map_err(|e| {
            SendFailure::connection(format!(
                "cannot write to outbox {}: {e}",
                self.dir.display()
            ))
        })
    }
}

/// Writes `<delivery id>.eml` atomically; a re-send overwrites instead of duplicating.
async fn write_eml(dir: &Path, delivery_id: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{delivery_id}.eml.tmp"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, dir.join(format!("{delivery_id}.eml"))).await
}
