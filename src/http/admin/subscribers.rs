//! Subscribers: the list a page at a time, one's history, erasure.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiQuery;
use crate::http::error::ErrorBody;
use crate::http::{AppState, HttpError, RowId};
use crate::service::Subscriber;
use crate::service::subscribers::SubscriberHistory;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SubscribersQuery {
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
pub(super) async fn list_subscribers(
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

/// A subscriber, their deliveries and the bounces and complaints heard about them.
#[utoipa::path(get, path = "/api/subscribers/{email}", tag = "subscribers", params(("email" = String, Path, description = "The subscriber's address")),
    responses(
        (status = 200, description = "The subscriber's history", body = SubscriberHistory),
        (status = 404, description = "No such subscriber", body = ErrorBody),
        (status = 422, description = "Not an email address", body = ErrorBody),
    ))]
pub(super) async fn subscriber_history(
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
pub(super) async fn forget_subscriber(
    State(s): State<AppState>,
    RowId(email): RowId,
) -> Result<Response, HttpError> {
    s.subscribers.forget(&email).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
