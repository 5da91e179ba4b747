//! The editors' and operators' API under `/api`, behind the admin token.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{AppState, HttpError, guard};
use crate::domain::clock::now_ms;
use crate::domain::test_send::TestAddresses;
use crate::domain::{DailySchedule, DeliverAt, NewItem};
use crate::service::{DigestRequest, PreviewFormat, ServiceError, TestRequest};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/items", post(add_item).get(list_items))
        .route("/api/items/{id}", delete(delete_item))
        .route("/api/feeds", post(add_feed).get(list_feeds))
        .route("/api/feeds/{id}", delete(delete_feed))
        .route("/api/digests", post(create_digest).get(list_digests))
        .route("/api/digests/{id}", get(get_digest).put(edit_digest))
        .route("/api/digests/{id}/test", post(send_test))
        .route("/api/digests/{id}/preview", get(preview))
        .route("/api/digests/{id}/schedule", post(schedule))
        .route("/api/digests/{id}/cancel", post(cancel))
        .route("/api/digests/{id}/pause", post(pause))
        .route("/api/digests/{id}/resume", post(resume))
        .route("/api/schedule", get(get_schedule).put(put_schedule))
        .route("/api/subscribers", get(list_subscribers))
        .route(
            "/api/subscribers/{email}",
            get(subscriber_history).delete(forget_subscriber),
        )
        .route("/api/events", get(list_events))
        .route("/api/stats", get(overall_stats))
        .route("/api/digests/{id}/stats", get(digest_stats))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

/// Whether `given` is the configured admin token, compared in constant time (both sides are
/// hashed first, so not even the length leaks).
pub fn token_matches(expected: &str, given: &str) -> bool {
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.ct_eq(&b).into()
}

pub const DISABLED: &str =
    "the admin API is disabled: set SQUEEZE_ADMIN_TOKEN (at least 16 characters) to enable it";

async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    let Some(expected) = state.settings.admin_token.as_deref() else {
        return Err(HttpError::Unavailable(DISABLED.into()));
    };
    let ip = guard::client_ip(request.extensions());
    state
        .throttle
        .check(ip)
        .map_err(|retry_after| HttpError::TooManyRequests { retry_after })?;
    match guard::bearer(request.headers()) {
        Some(token) if token_matches(expected, token) => Ok(next.run(request).await),
        Some(_) => {
            state
                .throttle
                .failed(ip)
                .map_err(|retry_after| HttpError::TooManyRequests { retry_after })?;
            Err(HttpError::Unauthorized("the admin token is wrong".into()))
        }
        None => Err(HttpError::Unauthorized(
            "send the admin token as `Authorization: Bearer <token>`".into(),
        )),
    }
}

/// JSON body whose rejections are answered in our error format, with serde's precise reason.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(HttpError::UnsupportedMediaType(
                "send the body as application/json".into(),
            )),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(HttpError::PayloadTooLarge {
                    limit: super::BODY_LIMIT,
                })
            }
            Err(JsonRejection::JsonDataError(e)) => Err(HttpError::BadRequest(format!(
                "the JSON does not fit: {}",
                e.body_text()
            ))),
            Err(e) => Err(HttpError::BadRequest(format!(
                "invalid JSON body: {}",
                e.body_text()
            ))),
        }
    }
}

#[derive(Deserialize)]
struct ItemBody {
    title: String,
    url: String,
    #[serde(default)]
    summary: String,
    source: Option<String>,
}

async fn add_item(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<ItemBody>,
) -> Result<Response, HttpError> {
    let item = NewItem::parse(&b.title, &b.url, &b.summary, b.source.as_deref())
        .map_err(ServiceError::from)?;
    let row = s.editor.add_item(&item, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

#[derive(Deserialize)]
struct StatusQuery {
    status: Option<String>,
}

async fn list_items(
    State(s): State<AppState>,
    Query(q): Query<StatusQuery>,
) -> Result<Response, HttpError> {
    let items = s.editor.list_items(q.status.as_deref()).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

async fn delete_item(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    s.editor.delete_item(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedBody {
    url: String,
}

async fn add_feed(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<FeedBody>,
) -> Result<Response, HttpError> {
    let feed = s.feeds.add(&b.url, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(feed)).into_response())
}

async fn list_feeds(State(s): State<AppState>) -> Result<Response, HttpError> {
    Ok(Json(json!({ "feeds": s.feeds.list(now_ms()).await? })).into_response())
}

async fn delete_feed(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    s.feeds.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn create_digest(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<DigestRequest>,
) -> Result<Response, HttpError> {
    let new = b.parse().map_err(ServiceError::from)?;
    let digest = s.editor.create_digest(&new, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(digest)).into_response())
}

async fn list_digests(State(s): State<AppState>) -> Result<Response, HttpError> {
    Ok(Json(json!({ "digests": s.editor.list_digests().await? })).into_response())
}

async fn get_digest(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    Ok(Json(s.editor.digest(&id).await?).into_response())
}

/// Rewrites a draft: 200 with the digest; 409 once it is no longer a draft.
async fn edit_digest(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<DigestRequest>,
) -> Result<Response, HttpError> {
    let d = b.parse_edit().map_err(ServiceError::from)?;
    Ok(Json(s.editor.edit_digest(&id, &d, now_ms()).await?).into_response())
}

/// Queues a test to up to five addresses: 202 with how many were queued.
async fn send_test(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<TestRequest>,
) -> Result<Response, HttpError> {
    let to = TestAddresses::parse(&b.addresses).map_err(ServiceError::from)?;
    let queued = s.editor.send_test(&id, &to, now_ms()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": queued }))).into_response())
}

#[derive(Deserialize)]
struct PreviewQuery {
    format: Option<String>,
}

async fn preview(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PreviewQuery>,
) -> Result<Response, HttpError> {
    let format = match q.format.as_deref() {
        None | Some("html") => PreviewFormat::Html,
        Some("text") => PreviewFormat::Text,
        Some(_) => {
            return Err(HttpError::Unprocessable {
                field: "format",
                message: "must be html or text".into(),
            });
        }
    };
    let body = s.editor.preview(&id, format).await?;
    let content_type = match format {
        PreviewFormat::Html => "text/html; charset=utf-8",
        PreviewFormat::Text => "text/plain; charset=utf-8",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// `{"send_at"}` (everyone at that moment) or `{"local_time", "date"}` (each subscriber at
/// that time on that date in their own zone).
#[derive(Deserialize)]
struct ScheduleBody {
    send_at: Option<String>,
    local_time: Option<String>,
    date: Option<String>,
}

async fn schedule(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ScheduleBody>,
) -> Result<Response, HttpError> {
    let now = Utc::now();
    let digest = match (b.send_at, b.local_time, b.date) {
        (Some(at), None, None) => s.editor.schedule(&id, &at, now).await?,
        (None, Some(time), Some(date)) => s.editor.schedule_waves(&id, &time, &date, now).await?,
        (None, Some(_), None) => {
            return Err(HttpError::Unprocessable {
                field: "date",
                message: "is needed with local_time: the local date, such as 2026-12-02".into(),
            });
        }
        (None, None, Some(_)) => {
            return Err(HttpError::Unprocessable {
                field: "local_time",
                message: "is needed with date: the local time, such as 07:00".into(),
            });
        }
        (None, None, None) => {
            return Err(HttpError::Unprocessable {
                field: "send_at",
                message: "give send_at (\"now\" or an RFC 3339 time), or local_time and date"
                    .into(),
            });
        }
        (Some(_), _, _) => {
            return Err(HttpError::Unprocessable {
                field: "send_at",
                message: "give either send_at, or local_time and date, not both".into(),
            });
        }
    };
    Ok(Json(digest).into_response())
}

async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, HttpError> {
    Ok(Json(s.editor.cancel(&id, now_ms()).await?).into_response())
}

#[derive(Deserialize, Default)]
struct PauseBody {
    reason: Option<String>,
}

async fn pause(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    // The body is optional: an empty POST pauses with a default reason.
    let body: PauseBody = if body.iter().all(u8::is_ascii_whitespace) {
        PauseBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| HttpError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let reason = body
        .reason
        .map(|r| crate::domain::digest::line("reason", &r, 500))
        .transpose()
        .map_err(ServiceError::from)?
        .unwrap_or_else(|| "paused by an editor".into());
    Ok(Json(s.editor.pause(&id, &reason, now_ms()).await?).into_response())
}

async fn resume(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, HttpError> {
    Ok(Json(s.editor.resume(&id, now_ms()).await?).into_response())
}

async fn get_schedule(State(s): State<AppState>) -> Result<Response, HttpError> {
    match s.editor.schedule_view(Utc::now()).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(HttpError::NotFound(
            "no daily schedule is set; PUT /api/schedule with {\"time\", \"timezone\", \"enabled\"}".into(),
        )),
    }
}

#[derive(Deserialize)]
struct ScheduleSetBody {
    time: String,
    timezone: String,
    #[serde(default = "yes")]
    enabled: bool,
    /// `list` (the default) or `subscriber`.
    deliver_at: Option<String>,
}

fn yes() -> bool {
    true
}

async fn put_schedule(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<ScheduleSetBody>,
) -> Result<Response, HttpError> {
    let deliver_at = b
        .deliver_at
        .as_deref()
        .map(DeliverAt::parse)
        .transpose()
        .map_err(ServiceError::from)?
        .unwrap_or_default();
    let schedule = DailySchedule::parse(&b.time, &b.timezone, b.enabled)
        .map_err(ServiceError::from)?
        .with_deliver_at(deliver_at);
    Ok(Json(s.editor.set_schedule(&schedule, Utc::now()).await?).into_response())
}

#[derive(Deserialize)]
struct SubscribersQuery {
    status: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

async fn list_subscribers(
    State(s): State<AppState>,
    Query(q): Query<SubscribersQuery>,
) -> Result<Response, HttpError> {
    let limit = q.limit.unwrap_or(100);
    let page = s
        .subscribers
        .list(q.status.as_deref(), limit, q.after.as_deref())
        .await?;
    let next = (page.len() == limit.clamp(1, 1000) as usize)
        .then(|| page.last().map(|p| p.id.clone()))
        .flatten();
    Ok(Json(json!({ "subscribers": page, "next_after": next })).into_response())
}

async fn list_events(State(s): State<AppState>) -> Result<Response, HttpError> {
    Ok(Json(json!({ "events": s.reporting.events(100).await? })).into_response())
}

async fn overall_stats(State(s): State<AppState>) -> Result<Response, HttpError> {
    Ok(Json(s.reporting.overall(now_ms()).await?).into_response())
}

async fn digest_stats(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    match s.reporting.digest(&id).await? {
        Some(stats) => Ok(Json(stats).into_response()),
        None => Err(HttpError::NotFound(format!("no digest with id {id}"))),
    }
}

/// A subscriber, their deliveries and the bounces and complaints heard about them.
async fn subscriber_history(
    State(s): State<AppState>,
    Path(email): Path<String>,
) -> Result<Response, HttpError> {
    Ok(Json(s.subscribers.history(&email).await?).into_response())
}

/// Right to erasure: the subscriber and everything about them.
async fn forget_subscriber(
    State(s): State<AppState>,
    Path(email): Path<String>,
) -> Result<Response, HttpError> {
    s.subscribers.forget(&email).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
