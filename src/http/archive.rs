//! The public archive: `/archive` (sent digests, newest first, `?page=N`), `/archive/<id>`
//! (one digest as a web page) and `/archive/feed.xml` (Atom). All 404 with `archive = false`.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use minijinja::context;
use serde::Deserialize;

use super::{AppState, HttpError, RowId, page};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/archive", get(list))
        .route("/archive/feed.xml", get(feed))
        .route("/archive/{id}", get(digest))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<Response, HttpError> {
    let n = match q.page.as_deref().map(str::parse::<u64>) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            return Err(HttpError::BadRequest(
                "the page must be a whole number from 1".into(),
            ));
        }
    };
    let listing = state.archive.list(n).await?;
    page(
        &state,
        StatusCode::OK,
        "archive.html.j2",
        context! { listing, feed_url => "/archive/feed.xml" },
    )
}

async fn digest(State(state): State<AppState>, RowId(id): RowId) -> Result<Response, HttpError> {
    let digest = state.archive.digest(&id).await?;
    page(
        &state,
        StatusCode::OK,
        "archive_digest.html.j2",
        context! { digest, feed_url => "/archive/feed.xml" },
    )
}

async fn feed(State(state): State<AppState>) -> Result<Response, HttpError> {
    let (entries, self_url) = state.archive.feed().await?;
    let updated = entries
        .first()
        .map(|e| e.listed.sent_at.clone())
        .unwrap_or_else(|| crate::domain::clock::to_rfc3339(crate::domain::clock::now_ms()));
    let xml = state.pages.renderer.render(
        "archive_feed.xml.j2",
        context! {
            list_name => &*state.pages.list_name,
            entries,
            self_url,
            home_url => state.archive.home(),
            updated,
        },
    )?;
    let mut response = (StatusCode::OK, xml).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/atom+xml; charset=utf-8"),
    );
    Ok(response)
}
