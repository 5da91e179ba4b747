//! Items and feeds: the raw material of digests.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, ApiQuery};
use crate::domain::NewItem;
use crate::domain::clock::now_ms;
use crate::http::error::ErrorBody;
use crate::http::{AppState, HttpError, RowId};
use crate::service::{FeedView, Item, ServiceError};

/// A news item for the next digest.
#[derive(Deserialize, ToSchema)]
pub(super) struct ItemBody {
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
pub(super) async fn add_item(
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
pub(super) struct StatusQuery {
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
pub(super) async fn list_items(
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
pub(super) async fn delete_item(
    State(s): State<AppState>,
    RowId(id): RowId,
) -> Result<Response, HttpError> {
    s.editor.delete_item(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A feed to poll.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedBody {
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
pub(super) async fn add_feed(
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
pub(super) async fn list_feeds(State(s): State<AppState>) -> Result<Response, HttpError> {
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
pub(super) async fn delete_feed(
    State(s): State<AppState>,
    RowId(id): RowId,
) -> Result<Response, HttpError> {
    s.feeds.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
