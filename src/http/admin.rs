//! The editors' and operators' API under `/api`, behind the admin token.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, HttpError, guard};

mod digests;
mod items;
mod reporting;
mod schedule;
mod subscribers;

/// The API's routes, each registered from its handler's `#[utoipa::path]` (path, method,
/// parameters, bodies, answers): what is served is what is documented. Handlers that share a
/// path share one `routes!`. The admin token's check is layered on in `http::documented`.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(items::add_item, items::list_items))
        .routes(routes!(items::delete_item))
        .routes(routes!(items::add_feed, items::list_feeds))
        .routes(routes!(items::delete_feed))
        .routes(routes!(digests::create_digest, digests::list_digests))
        .routes(routes!(digests::get_digest, digests::edit_digest))
        .routes(routes!(digests::send_test))
        .routes(routes!(digests::preview))
        .routes(routes!(digests::schedule))
        .routes(routes!(digests::cancel))
        .routes(routes!(digests::pause))
        .routes(routes!(digests::resume))
        .routes(routes!(schedule::get_schedule, schedule::put_schedule))
        .routes(routes!(subscribers::list_subscribers))
        .routes(routes!(
            subscribers::subscriber_history,
            subscribers::forget_subscriber
        ))
        .routes(routes!(reporting::list_events))
        .routes(routes!(reporting::overall_stats))
        .routes(routes!(reporting::digest_stats))
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
