//! Digests: create, edit, test, preview, schedule, cancel, pause, resume.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, ApiQuery};
use crate::domain::clock::now_ms;
use crate::domain::test_send::TestAddresses;
use crate::http::error::ErrorBody;
use crate::http::{AppState, HttpError, RowId};
use crate::service::{Digest, DigestRequest, PreviewFormat, ServiceError, TestRequest};

/// Creates a draft digest of the given items (or every pending one).
#[utoipa::path(post, path = "/api/digests", tag = "digests", request_body = DigestRequest,
    responses(
        (status = 201, description = "The draft", body = Digest),
        (status = 404, description = "An item does not exist", body = ErrorBody),
        (status = 409, description = "An item is in another digest", body = ErrorBody),
        (status = 422, description = "A field is not acceptable", body = ErrorBody),
    ))]
pub(super) async fn create_digest(
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
pub(super) async fn list_digests(State(s): State<AppState>) -> Result<Response, HttpError> {
    let digests = s.editor.list_digests().await?;
    Ok(Json(DigestList { digests }).into_response())
}

/// One digest with its items.
#[utoipa::path(get, path = "/api/digests/{id}", tag = "digests", params(("id" = String, Path, description = "The digest's id")),
    responses(
        (status = 200, description = "The digest", body = Digest),
        (status = 404, description = "No such digest", body = ErrorBody),
    ))]
pub(super) async fn get_digest(
    State(s): State<AppState>,
    RowId(id): RowId,
) -> Result<Response, HttpError> {
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
pub(super) async fn edit_digest(
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
pub(super) async fn send_test(
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
pub(super) struct PreviewQuery {
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
pub(super) async fn preview(
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
pub(super) struct ScheduleBody {
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
pub(super) async fn schedule(
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

/// Cancels a digest not yet sent: a draft or scheduled one (its items become pending again),
/// or one sending or paused, which stops: every delivery not yet claimed is suppressed
/// ("cancelled by an editor"), its fan-out writes no more (`fan_out` is `stopped`), its waves
/// not yet opened are cancelled, and a claimed email not yet on the wire is not sent; what
/// was sent stays sent and counted, and it keeps its items. Cancelling a cancelled digest
/// again changes nothing (200).
#[utoipa::path(post, path = "/api/digests/{id}/cancel", tag = "digests", params(("id" = String, Path, description = "The digest's id")),
    responses(
        (status = 200, description = "The cancelled digest", body = Digest),
        (status = 404, description = "No such digest", body = ErrorBody),
        (status = 409, description = "The digest was sent or missed: there is nothing to cancel", body = ErrorBody),
    ))]
pub(super) async fn cancel(
    State(s): State<AppState>,
    RowId(id): RowId,
) -> Result<Response, HttpError> {
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
pub(super) async fn pause(
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
pub(super) async fn resume(
    State(s): State<AppState>,
    RowId(id): RowId,
) -> Result<Response, HttpError> {
    Ok(Json(s.editor.resume(&id, now_ms()).await?).into_response())
}
