//! The daily digest's schedule.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use utoipa::ToSchema;

use super::ApiJson;
use crate::domain::{DailySchedule, DeliverAt};
use crate::http::error::ErrorBody;
use crate::http::{AppState, HttpError};
use crate::service::{ScheduleView, ServiceError};

/// The daily schedule and its next run.
#[utoipa::path(get, path = "/api/schedule", tag = "schedule",
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 404, description = "No daily schedule is set", body = ErrorBody),
    ))]
pub(super) async fn get_schedule(State(s): State<AppState>) -> Result<Response, HttpError> {
    match s.editor.schedule_view(Utc::now()).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(HttpError::NotFound(
            "no daily schedule is set; PUT /api/schedule with {\"time\", \"timezone\", \"enabled\"}".into(),
        )),
    }
}

/// The daily digest's time of day in a zone.
#[derive(Deserialize, ToSchema)]
pub(super) struct ScheduleSetBody {
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
pub(super) async fn put_schedule(
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
