//! A sender that sends nothing: it records what it was given and answers with scripted
//! results, so the worker's handling of each outcome is tested without a socket.

use std::collections::VecDeque;

use lettre::address::Envelope;

use super::Sender;
use crate::domain::delivery::SendFailure;

/// One message as the stub received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub delivery_id: String,
    pub envelope: Envelope,
    pub bytes: Vec<u8>,
}

/// Records every message and answers each with the next scripted result (`Ok` once the
/// script is used up).
#[derive(Debug, Default)]
pub struct StubSender {
    pub sent: Vec<Sent>,
    pub script: VecDeque<Result<(), SendFailure>>,
    /// What `takes_eight_bit` answers.
    pub eight_bit: bool,
    pub closed: bool,
}

impl StubSender {
    /// A stub that answers `results` in turn, then `Ok`.
    pub fn answering(results: impl IntoIterator<Item = Result<(), SendFailure>>) -> Self {
        Self {
            script: results.into_iter().collect(),
            ..Self::default()
        }
    }
}

impl Sender for StubSender {
    async fn send(
        &mut self,
        delivery_id: &str,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> Result<(), SendFailure> {
        self.sent.push(Sent {
            delivery_id: delivery_id.to_owned(),
            envelope: envelope.clone(),
            bytes: bytes.to_vec(),
        });
        self.script.pop_front().unwrap_or(Ok(()))
    }

    fn takes_eight_bit(&self) -> bool {
        self.eight_bit
    }

    async fn close(&mut self) {
        self.closed = true;
    }
}
