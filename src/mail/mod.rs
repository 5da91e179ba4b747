//! The way out: the message (`message`: MIME and headers), the SMTP client (`smtp`:
//! connections with TCP_NODELAY, TLS, pipelining), the outbox (`outbox`: `.eml` files), and
//! the one `Sender` trait they share with a recording `stub` for tests.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::address::Envelope;

use crate::domain::delivery::SendFailure;
use settings::SmtpSettings;

pub mod dkim;
mod header;
pub mod message;
pub mod outbox;
pub mod settings;
pub mod smtp;
pub mod stub;

pub use message::{
    BuildError, Content, Letter, ListHeaders, MAX_LINE, PartBody, build, fits_eight_bit,
    fits_seven_bit, message_id,
};
pub use outbox::OutboxSender;
pub use smtp::{SmtpSender, SmtpTransport};

/// A way to hand one built message to the world, one at a time (each sender task owns one).
/// In the spirit of lettre's `send_raw(&Envelope, &[u8])`; `delivery_id` names the message
/// (the outbox's file name).
pub trait Sender {
    /// Sends one message; what a failure means is asked of `SendFailure::verdict`.
    fn send(
        &mut self,
        delivery_id: &str,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> impl Future<Output = Result<(), SendFailure>> + Send;

    /// Whether the message about to be sent may carry 8-bit text (8BITMIME).
    fn takes_eight_bit(&self) -> bool {
        true
    }

    /// Ends politely (QUIT) on shutdown.
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Where mail goes: chosen once, at start.
#[derive(Clone, Debug)]
pub enum Transport {
    Smtp(Arc<SmtpTransport>),
    Outbox(PathBuf),
}

impl Transport {
    pub fn smtp(settings: SmtpSettings, timeout: Duration) -> Self {
        Self::Smtp(Arc::new(SmtpTransport::new(settings, timeout)))
    }

    /// Creates the outbox folder, so a bad path fails at start rather than on the first send.
    pub async fn prepare(&self) -> io::Result<()> {
        match self {
            Self::Outbox(dir) => tokio::fs::create_dir_all(dir).await,
            Self::Smtp(_) => Ok(()),
        }
    }

    /// One sender per concurrent task: each owns at most one SMTP connection.
    pub fn sender(&self) -> TransportSender {
        match self {
            Self::Smtp(t) => TransportSender::Smtp(SmtpSender::new(t.clone())),
            Self::Outbox(dir) => TransportSender::Outbox(OutboxSender::new(dir.clone())),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Smtp(t) => t.describe(),
            Self::Outbox(dir) => format!("outbox folder {}", dir.display()),
        }
    }
}

/// The sender a `Transport` makes: an enum, so the worker's senders are one concrete type
/// with no boxing or dynamic dispatch per message.
pub enum TransportSender {
    Smtp(SmtpSender),
    Outbox(OutboxSender),
}

impl Sender for TransportSender {
    async fn send(
        &mut self,
        delivery_id: &str,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> Result<(), SendFailure> {
        match self {
            Self::Smtp(s) => s.send(delivery_id, envelope, bytes).await,
            Self::Outbox(s) => s.send(delivery_id, envelope, bytes).await,
        }
    }

    fn takes_eight_bit(&self) -> bool {
        match self {
            Self::Smtp(s) => s.takes_eight_bit(),
            Self::Outbox(s) => s.takes_eight_bit(),
        }
    }

    async fn close(&mut self) {
        match self {
            Self::Smtp(s) => s.close().await,
            Self::Outbox(s) => s.close().await,
        }
    }
}
