//! Provider webhooks for bounces and complaints: each provider's call, authenticated the
//! provider's way (`inbound::webhooks`), becomes reports for `service::Inbound`. Each route
//! answers 404 until its credentials are set; a forged, unsigned, stale or replayed call 401
//! and changes nothing; a body over [`WEBHOOK_BODY_LIMIT`] 413; a body that is not the
//! provider's JSON 400.

use axum::Json;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{AppState, HttpError};
use crate::domain::bounce::Report;
use crate::domain::clock::{Millis, now_ms};
use crate::inbound::webhooks::{Refused, mailgun, postmark, sendgrid, ses};
use crate::service::Recorded;
use crate::service::sns::Sns;

/// Largest webhook body accepted (a provider's event is a few kilobytes).
pub const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;

/// The webhooks' credentials; `None` turns that webhook off (404).
#[derive(Clone, Default)]
pub struct WebhookSettings {
    pub mailgun_signing_key: Option<String>,
    /// Postmark's HTTP Basic user and password.
    pub postmark: Option<(String, String)>,
    /// SendGrid's Signed Event Webhook verification key.
    pub sendgrid: Option<sendgrid::PublicKey>,
    /// Amazon SES through SNS.
    pub ses: Option<SesWebhook>,
}

/// The SES webhook: the SNS topics heard, and where certificates come from.
#[derive(Clone, Debug)]
pub struct SesWebhook {
    /// The allowed `TopicArn`s.
    pub topics: Vec<String>,
    /// For tests only: fetch certificates from this base (and confirm subscriptions on
    /// its host) instead of SNS.
    pub cert_url_override: Option<url::Url>,
    pub sns: Sns,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("mailgun", &self.mailgun_signing_key.is_some())
            .field("postmark", &self.postmark.is_some())
            .field("sendgrid", &self.sendgrid.is_some())
            .field("ses", &self.ses.is_some())
            .finish()
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(mailgun_call))
        .routes(routes!(postmark_call))
        .routes(routes!(sendgrid_call))
        .routes(routes!(ses_call))
        .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
}

fn off() -> HttpError {
    HttpError::NotFound("no such page".into())
}

fn read(body: Result<Bytes, BytesRejection>) -> Result<Bytes, HttpError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::PayloadTooLarge {
                limit: WEBHOOK_BODY_LIMIT,
            }
        } else {
            HttpError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })
}

fn refused(provider: &str, r: Refused) -> HttpError {
    match r {
        Refused::Unauthenticated(why) => {
            tracing::warn!(provider, why, "webhook call refused");
            HttpError::Unauthorized(format!("{provider} webhook: {why}"))
        }
        Refused::Malformed(why) => HttpError::BadRequest(format!("{provider} webhook: {why}")),
    }
}

/// What a webhook call recorded.
#[derive(Serialize, ToSchema)]
struct RecordedAnswer {
    /// One line per report: what it was and what it changed.
    recorded: Vec<String>,
}

/// Records a signed call's reports, once: a call whose token was taken before is a replay,
/// refused with 401 before anything is recorded.
async fn record_once(
    state: &AppState,
    provider: &str,
    token: &str,
    token_expires_at: Millis,
    reports: Vec<Report>,
) -> Result<Vec<Recorded>, HttpError> {
    state
        .inbound
        .record_signed(provider, token, token_expires_at, reports)
        .await?
        .ok_or_else(|| {
            HttpError::Unauthorized(format!("{provider} webhook: this call was received before"))
        })
}

fn answer(recorded: &[Recorded]) -> Response {
    let recorded = recorded.iter().map(Recorded::summary).collect();
    (StatusCode::OK, Json(RecordedAnswer { recorded })).into_response()
}

/// Mailgun: the signature is in the body; each token is accepted once.
#[utoipa::path(post, path = "/webhooks/mailgun", tag = "webhooks",
    request_body(content = Object, description = "Mailgun's event webhook JSON (`signature`, `event-data`)"),
    responses(
        (status = 200, description = "Verified; the reports recorded", body = RecordedAnswer),
        (status = 400, description = "Not the provider's JSON", body = ErrorBody),
        (status = 401, description = "Forged, unsigned, stale or replayed: nothing changed", body = ErrorBody),
        (status = 404, description = "This webhook is not configured", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 503, description = "The database is busy or unavailable", body = ErrorBody),
    ))]
async fn mailgun_call(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let Some(key) = state.webhooks.mailgun_signing_key.as_deref() else {
        return Err(off());
    };
    let body = read(body)?;
    let call = mailgun::verify(&body, key, now_ms()).map_err(|r| refused("mailgun", r))?;
    let reports = call.report.into_iter().collect();
    let recorded = record_once(
        &state,
        "mailgun",
        &call.token,
        call.token_expires_at,
        reports,
    );
    Ok(answer(&recorded.await?))
}

/// Postmark: HTTP Basic credentials from the webhook URL, then one record.
#[utoipa::path(post, path = "/webhooks/postmark", tag = "webhooks",
    request_body(content = Object, description = "Postmark's bounce or spam complaint webhook JSON"),
    security(("postmark_basic" = [])),
    responses(
        (status = 200, description = "Verified; the reports recorded", body = RecordedAnswer),
        (status = 400, description = "Not the provider's JSON", body = ErrorBody),
        (status = 401, description = "Forged, unsigned, stale or replayed: nothing changed", body = ErrorBody),
        (status = 404, description = "This webhook is not configured", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 503, description = "The database is busy or unavailable", body = ErrorBody),
    ))]
async fn postmark_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let Some((user, password)) = state.webhooks.postmark.as_ref() else {
        return Err(off());
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(r) = postmark::authorized(auth, user, password) {
        let mut response = refused("postmark", r).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"webhooks\""),
        );
        return Ok(response);
    }
    let body = read(body)?;
    let report = postmark::parse(&body, now_ms()).map_err(|r| refused("postmark", r))?;
    let recorded = state
        .inbound
        .record_all(report.into_iter().collect())
        .await?;
    Ok(answer(&recorded))
}

const SENDGRID_SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
const SENDGRID_TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";

/// SendGrid: ECDSA over the timestamp header and the raw body; each signed call once.
#[utoipa::path(post, path = "/webhooks/sendgrid", tag = "webhooks",
    request_body(content = Vec<Object>, description = "SendGrid's Event Webhook JSON (an array of events)"),
    params(
        ("X-Twilio-Email-Event-Webhook-Signature" = Option<String>, Header, description = "The ECDSA signature, base64"),
        ("X-Twilio-Email-Event-Webhook-Timestamp" = Option<String>, Header, description = "Seconds since the epoch, signed with the body"),
    ),
    responses(
        (status = 200, description = "Verified; the reports recorded", body = RecordedAnswer),
        (status = 400, description = "Not the provider's JSON", body = ErrorBody),
        (status = 401, description = "Forged, unsigned, stale or replayed: nothing changed", body = ErrorBody),
        (status = 404, description = "This webhook is not configured", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 503, description = "The database is busy or unavailable", body = ErrorBody),
    ))]
async fn sendgrid_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let Some(key) = state.webhooks.sendgrid.as_ref() else {
        return Err(off());
    };
    let body = read(body)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let call = sendgrid::verify(
        key,
        header(SENDGRID_SIGNATURE),
        header(SENDGRID_TIMESTAMP),
        &body,
        now_ms(),
    )
    .map_err(|r| refused("sendgrid", r))?;
    let recorded = record_once(
        &state,
        "sendgrid",
        &call.token,
        call.token_expires_at,
        call.reports,
    );
    Ok(answer(&recorded.await?))
}

/// Amazon SES through SNS: the topic allowed, the certificate from an SNS host, the RSA
/// signature, an hour's freshness, each MessageId once; a SubscriptionConfirmation is
/// confirmed by GET of its SubscribeURL, a Notification's bounces and complaints recorded.
#[utoipa::path(post, path = "/webhooks/ses", tag = "webhooks",
    request_body(content = Object, description = "An SNS message (Notification or SubscriptionConfirmation)"),
    responses(
        (status = 200, description = "Verified; the reports recorded", body = RecordedAnswer),
        (status = 400, description = "Not the provider's JSON", body = ErrorBody),
        (status = 401, description = "Forged, unsigned, stale or replayed: nothing changed", body = ErrorBody),
        (status = 404, description = "This webhook is not configured", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 503, description = "The database is busy or unavailable, or the SubscribeURL could not be fetched (SNS retries)", body = ErrorBody),
    ))]
async fn ses_call(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let Some(ses) = state.webhooks.ses.as_ref() else {
        return Err(off());
    };
    let body = read(body)?;
    let refuse = |r| refused("ses", r);
    let message = ses::parse(&body).map_err(refuse)?;
    message.topic_allowed(&ses.topics).map_err(refuse)?;
    let override_base = ses.cert_url_override.as_ref();
    let cert_url = ses::cert_url(&message.signing_cert_url, override_base).map_err(refuse)?;
    let pem = ses.sns.certificate(&cert_url).await.map_err(|why| {
        tracing::warn!(provider = "ses", why, "webhook call refused");
        HttpError::Unauthorized(format!("ses webhook: {why}"))
    })?;
    message.verify(&pem).map_err(refuse)?;
    let expires_at = message.fresh(now_ms()).map_err(refuse)?;
    let confirm = match (message.kind, message.subscribe_url.as_deref()) {
        (ses::Kind::SubscriptionConfirmation, Some(url)) => {
            Some(ses::subscribe_url(url, override_base).map_err(refuse)?)
        }
        _ => None,
    };
    let reports = message.reports(now_ms());
    let recorded = record_once(&state, "ses", &message.message_id, expires_at, reports).await?;
    if let Some(url) = confirm {
        if let Err(why) = ses.sns.confirm(&url).await {
            tracing::warn!(provider = "ses", why, "SNS subscription not confirmed");
            state
                .inbound
                .forget_signed("ses", &message.message_id)
                .await;
            return Err(HttpError::Unavailable(format!("ses webhook: {why}")));
        }
        tracing::info!(topic = message.topic_arn, "SNS subscription confirmed");
    }
    Ok(answer(&recorded))
}
