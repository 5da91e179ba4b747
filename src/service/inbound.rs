//! Bounces and complaints heard after sending: the one entry point for every intake (the
//! MTA's pipe, `squeeze inbound`, and provider webhooks). Matches a report to a delivery,
//! asks the rules (`domain::bounce`) what it means, records it once, and pauses a digest
//! whose complaints (or policy rejections) pass their rate.

use tracing::{info, warn};

use super::{ServiceError, ServiceResult};
use crate::domain::bounce::{self, BounceKind, Report, Verp};
use crate::domain::clock::{Millis, now_ms};
use crate::domain::email;
use crate::store::{BounceRecorded, BounceTarget, DigestHealth, Store};

/// What the intake needs of the configuration.
#[derive(Debug, Clone)]
pub struct InboundSettings {
    pub verp: Option<Verp>,
    /// Complaint share of a digest's delivered mail past which it pauses (0: never), once it
    /// delivered at least `complaint_pause_min`.
    pub complaint_pause_rate: f64,
    pub complaint_pause_min: i64,
    /// The same for policy rejections heard after sending (the worker's auto-pause
    /// threshold and window).
    pub policy_pause_rate: f64,
    pub policy_pause_min: i64,
}

/// What became of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Matched to a delivery (by `verp`, `message_id` or `recipient`) and recorded.
    Matched {
        kind: BounceKind,
        by: &'static str,
        /// The subscriber's new status, if it changed.
        subscriber: Option<&'static str>,
        /// The digest paused because of it, with the reason.
        paused: Option<String>,
    },
    /// Matched nothing (or carried a forged token): kept as an unmatched event.
    Unmatched { kind: BounceKind },
    /// Recorded before (the same delivery and kind): counted once.
    Duplicate,
    /// Nothing to act on (a delay warning, a success notice).
    Ignored,
}

impl Recorded {
    /// In a few words: `matched hard by verp`, `unmatched soft`, `duplicate`, `ignored`.
    pub fn summary(&self) -> String {
        match self {
            Self::Matched { kind, by, .. } => format!("matched {} by {by}", kind.as_str()),
            Self::Unmatched { kind } => format!("unmatched {}", kind.as_str()),
            Self::Duplicate => "duplicate".into(),
            Self::Ignored => "ignored".into(),
        }
    }
}

#[derive(Clone)]
pub struct Inbound {
    store: Store,
    settings: InboundSettings,
}

impl Inbound {
    pub fn new(store: Store, settings: InboundSettings) -> Self {
        Self { store, settings }
    }

    /// The VERP token among the addresses a message was sent to, if any is ours.
    pub fn token_in<'a>(&self, addresses: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let verp = self.settings.verp.as_ref()?;
        addresses
            .into_iter()
            .find_map(|a| verp.token_in(a))
            .map(str::to_owned)
    }

    /// One message as an MTA hands it over (already within the size cap): parsed, and
    /// recorded when it is a bounce or a complaint. `recipient`: the address it was sent to,
    /// as the MTA says (besides its To/Delivered-To headers), where a VERP token is.
    pub async fn receive(&self, raw: &[u8], recipient: Option<&str>) -> ServiceResult<Recorded> {
        let parsed = crate::inbound::parse(raw, "inbound", now_ms());
        let Some(mut report) = parsed.report else {
            return Ok(Recorded::Ignored);
        };
        report.verp_token = self.token_in(
            recipient
                .into_iter()
                .chain(parsed.addressed_to.iter().map(String::as_str)),
        );
        self.record(report).await
    }

    /// Matches, decides and records one report: the entry point of every intake (the
    /// MTA's pipe through [`Inbound::receive`], provider webhooks directly).
    pub async fn record(&self, report: Report) -> ServiceResult<Recorded> {
        let kind = bounce::classify(&report);
        if kind == BounceKind::Ignored {
            return Ok(Recorded::Ignored);
        }
        let target = match self.find(&report).await? {
            Found::Target(t, by) => Some((t, by)),
            Found::Nothing | Found::Forged => None,
        };
        let now = now_ms();
        let recorded = self
            .store
            .record_bounce(&report, kind, target.as_ref().map(|(t, by)| (t, *by)), now)
            .await
            .map_err(ServiceError::from)?;
        let (subscriber, digest) = match recorded {
            BounceRecorded::Duplicate => return Ok(Recorded::Duplicate),
            BounceRecorded::Recorded { subscriber, digest } => (subscriber, digest),
        };
        let Some((_, by)) = target else {
            info!(kind = kind.as_str(), "unmatched report kept");
            return Ok(Recorded::Unmatched { kind });
        };
        let paused = match digest {
            Some(h) => self.watch_digest(&h, kind, &report, now).await?,
            None => None,
        };
        Ok(Recorded::Matched {
            kind,
            by,
            subscriber,
            paused,
        })
    }

    /// A provider's signed call, already verified: refused (`Ok(None)`) when its token was
    /// seen before (a replay, here or on another process: the token is kept in the
    /// database until `token_expires_at`), otherwise its reports recorded. A call whose
    /// recording fails gives its token back, so the provider's retry is heard.
    pub async fn record_signed(
        &self,
        provider: &str,
        token: &str,
        token_expires_at: Millis,
        reports: Vec<Report>,
    ) -> ServiceResult<Option<Vec<Recorded>>> {
        let first = self
            .store
            .first_use_of_webhook_token(provider, token, token_expires_at, now_ms())
            .await
            .map_err(ServiceError::from)?;
        if !first {
            warn!(provider, "a webhook call replayed: refused");
            return Ok(None);
        }
        match self.record_all(reports).await {
            Ok(done) => Ok(Some(done)),
            Err(e) => {
                if let Err(forget) = self.store.forget_webhook_token(provider, token).await {
                    warn!(provider, error = %forget, "could not give a webhook token back");
                }
                Err(e)
            }
        }
    }

    /// Gives back the token of a signed call taken by [`Self::record_signed`] whose
    /// follow-up failed (an SNS subscription not confirmed), so the provider's retry is
    /// heard.
    pub async fn forget_signed(&self, provider: &str, token: &str) {
        if let Err(e) = self.store.forget_webhook_token(provider, token).await {
            warn!(provider, error = %e, "could not give a webhook token back");
        }
    }

    /// Records each report in turn (a provider's call may carry several).
    pub async fn record_all(&self, reports: Vec<Report>) -> ServiceResult<Vec<Recorded>> {
        let mut done = Vec::with_capacity(reports.len());
        for r in reports {
            done.push(self.record(r).await?);
        }
        Ok(done)
    }

    /// In order: the VERP token, the returned Message-ID, the recipient's address.
    async fn find(&self, report: &Report) -> ServiceResult<Found> {
        if let Some(token) = &report.verp_token {
            let Some(verp) = &self.settings.verp else {
                return Ok(Found::Forged);
            };
            let Some(id) = verp.verify(token) else {
                warn!("a report to a VERP address whose token does not verify: kept unmatched");
                return Ok(Found::Forged);
            };
            if let Some(t) = self.store.bounce_target(&id).await? {
                return Ok(Found::Target(t, "verp"));
            }
        }
        if let Some(id) = report
            .message_id
            .as_deref()
            .and_then(delivery_of_message_id)
            && let Some(t) = self.store.bounce_target(id).await?
        {
            return Ok(Found::Target(t, "message_id"));
        }
        if let Some(r) = &report.recipient
            && let Some(t) = self.store.bounce_target_by_email(&email::key(r)).await?
        {
            return Ok(Found::Target(t, "recipient"));
        }
        Ok(Found::Nothing)
    }

    /// Pauses the digest when its complaints, or its policy rejections, pass their rate.
    async fn watch_digest(
        &self,
        h: &DigestHealth,
        kind: BounceKind,
        report: &Report,
        now: i64,
    ) -> ServiceResult<Option<String>> {
        let s = &self.settings;
        let reason = match kind {
            BounceKind::Complaint
                if bounce::rate_exceeded(
                    h.complaints,
                    h.delivered,
                    s.complaint_pause_rate,
                    s.complaint_pause_min,
                ) =>
            {
                bounce::complaint_pause_reason(h.complaints, h.delivered, s.complaint_pause_rate)
            }
            BounceKind::Policy
                if bounce::rate_exceeded(
                    h.policy,
                    h.delivered,
                    s.policy_pause_rate,
                    s.policy_pause_min,
                ) =>
            {
                let last = report
                    .status
                    .clone()
                    .or_else(|| report.diagnostic.clone())
                    .unwrap_or_default();
                bounce::policy_pause_reason(h.policy, h.delivered, &last)
            }
            _ => return Ok(None),
        };
        self.store
            .pause_digest(&h.digest_id, &reason, now)
            .await
            .map_err(ServiceError::from)?;
        self.store
            .add_event("auto_pause", Some(&h.digest_id), &reason, now)
            .await
            .map_err(ServiceError::from)?;
        warn!(digest_id = %h.digest_id, %reason, "digest paused");
        Ok(Some(reason))
    }
}

enum Found {
    Target(BounceTarget, &'static str),
    Nothing,
    Forged,
}

/// `<delivery-id@domain>` (Squeeze's Message-ID, `mail::message::message_id`) -> the id.
fn delivery_of_message_id(message_id: &str) -> Option<&str> {
    let m = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let (id, _) = m.split_once('@')?;
    (!id.is_empty() && id.len() <= 64).then_some(id)
}
