//! Statistics and events.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::clock::now_ms;
use crate::http::error::ErrorBody;
use crate::http::{AppState, HttpError, RowId};
use crate::service::reporting::{DigestStats, Event, Overall};

#[derive(Serialize, ToSchema)]
struct EventList {
    events: Vec<Event>,
}

/// The latest 100 events (scheduler and delivery notes), newest first.
#[utoipa::path(get, path = "/api/events", tag = "reporting",
    responses((status = 200, description = "The events", body = EventList)))]
pub(super) async fn list_events(State(s): State<AppState>) -> Result<Response, HttpError> {
    let events = s.reporting.events(100).await?;
    Ok(Json(EventList { events }).into_response())
}

/// Overall delivery statistics.
#[utoipa::path(get, path = "/api/stats", tag = "reporting",
    responses((status = 200, description = "The statistics", body = Overall)))]
pub(super) async fn overall_stats(State(s): State<AppState>) -> Result<Response, HttpError> {
    Ok(Json(s.reporting.overall(now_ms()).await?).into_response())
}

/// One digest's delivery statistics.
#[utoipa::path(get, path = "/api/digests/{id}/stats", tag = "reporting", params(("id" = String, Path, description = "The digest's id")),
    responses(
        (status = 200, description = "The statistics", body = DigestStats),
        (status = 404, description = "No such digest", body = ErrorBody),
    ))]
pub(super) async fn digest_stats(
    State(s): State<AppState>,
    RowId(id): RowId,
) -> Result<Response, HttpError> {
    match s.reporting.digest(&id).await? {
        Some(stats) => Ok(Json(stats).into_response()),
        None => Err(HttpError::NotFound(format!("no digest with id {id}"))),
    }
}
