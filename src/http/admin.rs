//! The editors' and operators' API under `/api`, behind the admin token.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{AppState, HttpError, RowId, guard};
use crate::domain::clock::now_ms;
use crate::domain::test_send::TestAddresses;
use crate::domain::{DailySchedule, DeliverAt, NewItem};
use crate::service::reporting::{DigestStats, Event, Overall};
use crate::service::subscribers::SubscriberHistory;
use crate::service::{
    Digest, DigestRequest, FeedView, Item, PreviewFormat, ScheduleView, ServiceError, Subscriber,
    TestRequest,
};

/// The API's routes, each registered from its handler's `#[utoipa::path]` (path, method,
/// parameters, bodies, answers): what is served is what is documented. Handlers that share a
/// path share one `routes!`. The admin token's check is layered on in `http::documented`.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_item, list_items))
        .routes(routes!(delete_item))
        .routes(routes!(add_feed, list_feeds))
        .routes(routes!(delete_feed))
        .routes(routes!(create_digest, list_digests))
        .routes(routes!(get_digest, edit_digest))
        .routes(routes!(send_test))
        .routes(routes!(preview))
        .routes(routes!(schedule))
        .routes(routes!(cancel))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(get_schedule, put_schedule))
        .routes(routes!(list_subscribers))
        .routes(routes!(subscriber_history, forget_subscriber))
        .routes(routes!(list_events))
        .routes(routes!(overall_stats))
        .routes(routes!(digest_stats))
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

pub(super) async fn require_admin(
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

/// Query parameters whose rejections are answered in our error format (400), not axum's text.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(e) => Err(HttpError::BadRequest(format!(
                "the query parameters do not parse: {}",
                e.body_text()
            ))),
        }
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

/// A news item for the next digest.
#[derive(Deserialize, ToSchema)]
struct ItemBody {
    /// One line, at most 200 characters.
    #[schema(example = "Rust 1.95 is out", max_length = 200)]
    title: String,
    /// http or https.
    #[schema(example = "https://blog.rust-lang.org/")]
    url: String,
    /// At most 2000 characters.
    #[serde(default)]
    #[schema(example = "What is new in this release.", max_length = 2000)]
    summary: String,
    #[schema(example = "The Rust blog")]
    source: Option<String>,
}

/// Adds a news item (pending until a digest takes it).
#[utoipa::path(post, path = "/api/items", tag = "items", request_body = ItemBody,
    responses(
        (status = 201, description = "The item, pending", body = Item),
        (status = 422, description = "A field is not acceptable", body = ErrorBody),
    ))]
async fn add_item(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<ItemBody>,
) -> Result<Response, HttpError> {
    let item = NewItem::parse(&b.title, &b.url, &b.summary, b.source.as_deref())
        .map_err(ServiceError::from)?;
    let row = s.editor.add_item(&item, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StatusQuery {
    /// `pending` or `used`; all when absent.
    status: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct ItemList {
    items: Vec<Item>,
}

/// The news items, newest first.
#[utoipa::path(get, path = "/api/items", tag = "items", params(StatusQuery),
    responses(
        (status = 200, description = "The items", body = ItemList),
        (status = 422, description = "`status` is neither pending nor used", body = ErrorBody),
    ))]
async fn list_items(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<StatusQuery>,
) -> Result<Response, HttpError> {
    let items = s.editor.list_items(q.status.as_deref()).await?;
    Ok(Json(ItemList { items }).into_response())
}

/// Deletes a pending item.
#[utoipa::path(delete, path = "/api/items/{id}", tag = "items",
    params(("id" = String, Path, description = "The item's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such item", body = ErrorBody),
        (status = 409, description = "The item is in a digest already", body = ErrorBody),
    ))]
async fn delete_item(State(s): State<AppState>, RowId(id): RowId) -> Result<Response, HttpError> {
    s.editor.delete_item(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A feed to poll.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct FeedBody {
    /// http or https.
    #[schema(example = "https://blog.rust-lang.org/feed.xml")]
    url: String,
}

/// Adds an RSS or Atom feed whose new entries become pending items.
#[utoipa::path(post, path = "/api/feeds", tag = "feeds", request_body = FeedBody,
    responses(
        (status = 201, description = "The feed", body = FeedView),
        (status = 409, description = "The feed is there already", body = ErrorBody),
        (status = 422, description = "The URL is not acceptable", body = ErrorBody),
    ))]
async fn add_feed(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<FeedBody>,
) -> Result<Response, HttpError> {
    let feed = s.feeds.add(&b.url, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(feed)).into_response())
}

#[derive(Serialize, ToSchema)]
struct FeedList {
    feeds: Vec<FeedView>,
}

/// The feeds and their state.
#[utoipa::path(get, path = "/api/feeds", tag = "feeds",
    responses((status = 200, description = "The feeds", body = FeedList)))]
async fn list_feeds(State(s): State<AppState>) -> Result<Response, HttpError> {
    let feeds = s.feeds.list(now_ms()).await?;
    Ok(Json(FeedList { feeds }).into_response())
}

/// Stops polling a feed (its items stay).
#[utoipa::path(delete, path = "/api/feeds/{id}", tag = "feeds",
    params(("id" = String, Path, description = "The feed's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such feed", body = ErrorBody),
    ))]
async fn delete_feed(State(s): State<AppState>, RowId(id): RowId) -> Result<Response, HttpError> {
    s.feeds.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Creates a draft digest of the given items (or every pending one).
#[utoipa::path(post, path = "/api/digests", tag = "digests", request_body = DigestRequest,
    responses(
        (status = 201, description = "The draft", body = Digest),
        (status = 404, description = "An item does not exist", body = ErrorBody),
        (status = 409, description = "An item is in another digest", body = ErrorBody),
        (status = 422, description = "A field is not acceptable", body = ErrorBody),
    ))]
async fn create_digest(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<DigestRequest>,
) -> Result<Response, HttpError> {
    let new = b.parse().map_err(ServiceError::from)?;
    let digest = s.editor.create_digest(&new, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(digest)).into_response())
}

#[derive(Serialize, ToSchema)]
struct DigestList {
    digests: Vec<Digest>,
}

/// The latest 100 digests, newest first.
#[utoipa::path(get, path = "/api/digests", tag = "digests",
    responses((status = 200, description = "The digests", body = DigestList)))]
async fn list_digests(State(s): State<AppState>) -> Result<Response, HttpError> {
    let digests = s.editor.list_digests().await?;
    Ok(Json(DigestList { digests }).into_response())
}

/// One digest with its items.
#[utoipa::path(get, path = "/api/digests/{id}", tag = "digests", params(("id" = String, Path, description = "The digest's id")),
    responses(
        (status = 200, description = "The digest", body = Digest),
        (status = 404, description = "No such digest", body = ErrorBody),
    ))]
async fn get_digest(State(s): State<AppState>, RowId(id): RowId) -> Result<Response, HttpError> {
    Ok(Json(s.editor.digest(&id).await?).into_response())
}

/// Rewrites a draft's subject, introduction and items (in their new order).
#[utoipa::path(put, path = "/api/digests/{id}", tag = "digests", params(("id" = String, Path, description = "The digest's id")),
    request_body = DigestRequest,
    responses(
        (status = 200, description = "The edited draft", body = Digest),
        (status = 404, description = "No such digest, or an item does not exist", body = ErrorBody),
        (status = 409, description = "The digest is no longer a draft, or an item is in another digest", body = ErrorBody),
        (status = 422, description = "A field is not acceptable", body = ErrorBody),
    ))]
async fn edit_digest(
    State(s): State<AppState>,
    RowId(id): RowId,
    ApiJson(b): ApiJson<DigestRequest>,
) -> Result<Response, HttpError> {
    let d = b.parse_edit().map_err(ServiceError::from)?;
    Ok(Json(s.editor.edit_digest(&id, &d, now_ms()).await?).into_response())
}

/// How many test emails were queued.
#[derive(Serialize, ToSchema)]
struct TestQueued {
    queued: usize,
}

/// Queues a test of the digest as it is now to one to five addresses (counted nowhere).
#[utoipa::path(post, path = "/api/digests/{id}/test", tag = "digests", params(("id" = String, Path, description = "The digest's id")),
    request_body = TestRequest,
    responses(
        (status = 202, description = "Queued", body = TestQueued),
        (status = 404, description = "No such digest", body = ErrorBody),
        (status = 409, description = "The digest is cancelled", body = ErrorBody),
        (status = 422, description = "An address is not acceptable, or more than five", body = ErrorBody),
    ))]
async fn send_test(
    State(s): State<AppState>,
    RowId(id): RowId,
    ApiJson(b): ApiJson<TestRequest>,
) -> Result<Response, HttpError> {
    let to = TestAddresses::parse(&b.addresses).map_err(ServiceError::from)?;
    let queued = s.editor.send_test(&id, &to, now_ms()).await?;
    Ok((StatusCode::ACCEPTED, Json(TestQueued { queued })).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PreviewQuery {
    /// `html` (the default) or `text`.
    format: Option<String>,
}

/// The digest rendered for a sample subscriber.
#[utoipa::path(get, path = "/api/digests/{id}/preview", tag = "digests",
    params(("id" = String, Path, description = "The digest's id"), PreviewQuery),
    responses(
        (status = 200, description = "The rendered digest", content(
            (String = "text/html"),
            (String = "text/plain"),
        )),
        (status = 404, description = "No such digest", body = ErrorBody),
        (status = 422, description = "Unknown format, or the template does not render", body = ErrorBody),
    ))]
async fn preview(
    State(s): State<AppState>,
    RowId(id): RowId,
    ApiQuery(q): ApiQuery<PreviewQuery>,
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

/// When to send: `send_at` (everyone at that moment), or `local_time` and `date` (each
/// subscriber at that time on that date in their own zone).
#[derive(Deserialize, ToSchema)]
struct ScheduleBody {
    /// An RFC 3339 time, or `now`.
    #[schema(example = "now")]
    send_at: Option<String>,
    /// A local time, HH:MM, with `date`.
    #[schema(example = "07:00")]
    local_time: Option<String>,
    /// A local date, YYYY-MM-DD, with `local_time`.
    #[schema(example = "2026-12-02")]
    date: Option<String>,
}

/// Schedules a draft (or reschedules a scheduled digest).
#[utoipa::path(post, path = "/api/digests/{id}/schedule", tag = "digests", params(("id" = String, Path, description = "The digest's id")),
    request_body = ScheduleBody,
    responses(
        (status = 200, description = "The scheduled digest", body = Digest),
        (status = 404, description = "No such digest", body = ErrorBody),
        (status = 409, description = "The digest is past scheduling", body = ErrorBody),
        (status = 422, description = "`send_at` is not acceptable, or the template does not render", body = ErrorBody),
    ))]
async fn schedule(
    State(s): State<AppState>,
    RowId(id): RowId,
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

/// Cancels a digest that has not finished sending.
#[utoipa::path(post, path = "/api/digests/{id}/cancel", tag = "digests", params(("id" = String, Path, description = "The digest's id")),
    responses(
        (status = 200, description = "The cancelled digest", body = Digest),
        (status = 404, description = "No such digest", body = ErrorBody),
        (status = 409, description = "The digest cannot be cancelled now", body = ErrorBody),
    ))]
async fn cancel(State(s): State<AppState>, RowId(id): RowId) -> Result<Response, HttpError> {
    Ok(Json(s.editor.cancel(&id, now_ms()).await?).into_response())
}

/// Why the digest is paused (optional: the body may be empty).
#[derive(Deserialize, Default, ToSchema)]
struct PauseBody {
    /// One line, at most 500 characters.
    #[schema(example = "checking a link", max_length = 500)]
    reason: Option<String>,
}

/// Pauses a sending digest.
#[utoipa::path(post, path = "/api/digests/{id}/pause", tag = "digests", params(("id" = String, Path, description = "The digest's id")),
    request_body(content = Option<PauseBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The paused digest", body = Digest),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 404, description = "No such digest", body = ErrorBody),
        (status = 409, description = "The digest is not sending", body = ErrorBody),
        (status = 422, description = "The reason is not acceptable", body = ErrorBody),
    ))]
async fn pause(
    State(s): State<AppState>,
    RowId(id): RowId,
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

/// Resumes a paused digest.
#[utoipa::path(post, path = "/api/digests/{id}/resume", tag = "digests", params(("id" = String, Path, description = "The digest's id")),
    responses(
        (status = 200, description = "The digest, sending again", body = Digest),
        (status = 404, description = "No such digest", body = ErrorBody),
        (status = 409, description = "The digest is not paused", body = ErrorBody),
    ))]
async fn resume(State(s): State<AppState>, RowId(id): RowId) -> Result<Response, HttpError> {
    Ok(Json(s.editor.resume(&id, now_ms()).await?).into_response())
}

/// The daily schedule and its next run.
#[utoipa::path(get, path = "/api/schedule", tag = "schedule",
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 404, description = "No daily schedule is set", body = ErrorBody),
    ))]
async fn get_schedule(State(s): State<AppState>) -> Result<Response, HttpError> {
    match s.editor.schedule_view(Utc::now()).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(HttpError::NotFound(
            "no daily schedule is set; PUT /api/schedule with {\"time\", \"timezone\", \"enabled\"}".into(),
        )),
    }
}

/// The daily digest's time of day in a zone.
#[derive(Deserialize, ToSchema)]
struct ScheduleSetBody {
    /// `HH:MM`, 24-hour.
    #[schema(example = "07:00")]
    time: String,
    /// An IANA zone name.
    #[schema(example = "Europe/Madrid")]
    timezone: String,
    /// Defaults to true.
    #[serde(default = "yes")]
    #[schema(default = true)]
    enabled: bool,
    /// `list` (the default) or `subscriber`.
    deliver_at: Option<String>,
}

fn yes() -> bool {
    true
}

/// Sets the daily schedule.
#[utoipa::path(put, path = "/api/schedule", tag = "schedule", request_body = ScheduleSetBody,
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 422, description = "The time or zone is not acceptable", body = ErrorBody),
    ))]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SubscribersQuery {
    /// Only subscribers in this status (`pending`, `confirmed`, `unsubscribed`, ...).
    status: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// The last id of the previous page (its `next_after`).
    after: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct SubscriberPage {
    subscribers: Vec<Subscriber>,
    /// Pass as `after` for the next page; null on the last.
    next_after: Option<String>,
}

/// Subscribers, a page at a time, in id order.
#[utoipa::path(get, path = "/api/subscribers", tag = "subscribers", params(SubscribersQuery),
    responses(
        (status = 200, description = "A page of subscribers", body = SubscriberPage),
        (status = 400, description = "A query parameter is not well-formed", body = ErrorBody),
        (status = 422, description = "Unknown status", body = ErrorBody),
    ))]
async fn list_subscribers(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<SubscribersQuery>,
) -> Result<Response, HttpError> {
    if let Some(after) = &q.after
        && !crate::domain::id::may_name_a_row(after)
    {
        return Err(HttpError::Unprocessable {
            field: "after",
            message: "is not a subscriber id (pass a page's next_after)".into(),
        });
    }
    let limit = q.limit.unwrap_or(100);
    let page = s
        .subscribers
        .list(q.status.as_deref(), limit, q.after.as_deref())
        .await?;
    let next = (page.len() == limit.clamp(1, 1000) as usize)
        .then(|| page.last().map(|p| p.id.clone()))
        .flatten();
    Ok(Json(SubscriberPage {
        subscribers: page,
        next_after: next,
    })
    .into_response())
}

#[derive(Serialize, ToSchema)]
struct EventList {
    events: Vec<Event>,
}

/// The latest 100 events (scheduler and delivery notes), newest first.
#[utoipa::path(get, path = "/api/events", tag = "reporting",
    responses((status = 200, description = "The events", body = EventList)))]
async fn list_events(State(s): State<AppState>) -> Result<Response, HttpError> {
    let events = s.reporting.events(100).await?;
    Ok(Json(EventList { events }).into_response())
}

/// Overall delivery statistics.
#[utoipa::path(get, path = "/api/stats", tag = "reporting",
    responses((status = 200, description = "The statistics", body = Overall)))]
async fn overall_stats(State(s): State<AppState>) -> Result<Response, HttpError> {
    Ok(Json(s.reporting.overall(now_ms()).await?).into_response())
}

/// One digest's delivery statistics.
#[utoipa::path(get, path = "/api/digests/{id}/stats", tag = "reporting", params(("id" = String, Path, description = "The digest's id")),
    responses(
        (status = 200, description = "The statistics", body = DigestStats),
        (status = 404, description = "No such digest", body = ErrorBody),
    ))]
async fn digest_stats(State(s): State<AppState>, RowId(id): RowId) -> Result<Response, HttpError> {
    match s.reporting.digest(&id).await? {
        Some(stats) => Ok(Json(stats).into_response()),
        None => Err(HttpError::NotFound(format!("no digest with id {id}"))),
    }
}

/// A subscriber, their deliveries and the bounces and complaints heard about them.
#[utoipa::path(get, path = "/api/subscribers/{email}", tag = "subscribers", params(("email" = String, Path, description = "The subscriber's address")),
    responses(
        (status = 200, description = "The subscriber's history", body = SubscriberHistory),
        (status = 404, description = "No such subscriber", body = ErrorBody),
        (status = 422, description = "Not an email address", body = ErrorBody),
    ))]
async fn subscriber_history(
    State(s): State<AppState>,
    RowId(email): RowId,
) -> Result<Response, HttpError> {
    Ok(Json(s.subscribers.history(&email).await?).into_response())
}

/// Right to erasure: the subscriber and everything about them.
#[utoipa::path(delete, path = "/api/subscribers/{email}", tag = "subscribers", params(("email" = String, Path, description = "The subscriber's address")),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 404, description = "No such subscriber", body = ErrorBody),
        (status = 422, description = "Not an email address", body = ErrorBody),
    ))]
async fn forget_subscriber(
    State(s): State<AppState>,
    RowId(email): RowId,
) -> Result<Response, HttpError> {
    s.subscribers.forget(&email).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
