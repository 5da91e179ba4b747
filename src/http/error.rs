//! One error type for every handler: client mistakes get a precise message and a 4xx; server
//! faults are logged with their cause and answered with a generic 500. The answer is JSON
//! (`{"error", "field"}`); for a browser, `http::error_pages` turns it into a page in the
//! site's layout, from the [`ErrorPage`] each answer carries.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::service::ServiceError;

/// Every error answer's body: what went wrong, and for a 422 the field at fault.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, as a sentence for a person.
    pub error: String,
    /// The request field at fault (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub field: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{field}: {message}")]
    Unprocessable {
        field: &'static str,
        message: String,
    },
    #[error("too many requests; try again in {retry_after} seconds")]
    TooManyRequests { retry_after: u64 },
    /// A use case's own limit, in its words.
    #[error("{message}; try again in {retry_after} seconds")]
    Limited { message: String, retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl HttpError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } | Self::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }
}

/// Each kind of service failure, by name, to its answer.
impl From<ServiceError> for HttpError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(i) => Self::Unprocessable {
                field: i.field,
                message: i.message,
            },
            ServiceError::NotFound(m) => Self::NotFound(m),
            ServiceError::Conflict(m) => Self::Conflict(m),
            ServiceError::Limited {
                message,
                retry_after,
            } => Self::Limited {
                message,
                retry_after,
            },
            ServiceError::Template(m) => Self::Unprocessable {
                field: "template",
                message: m,
            },
            // Every connection stayed busy for the whole acquire timeout (on SQLite: the
            // write turn, behind a very long write): a transient state, not a fault.
            ServiceError::Busy(_) => {
                Self::Unavailable("the database is busy; try again in a minute".into())
            }
            // A full disk, a file gone, a server away: the service says which.
            ServiceError::Unavailable(m) => Self::Unavailable(m),
            ServiceError::Store(e) => Self::internal(e),
        }
    }
}

impl From<crate::render::RenderError> for HttpError {
    fn from(e: crate::render::RenderError) -> Self {
        Self::Internal(e.into())
    }
}

/// What a browser is shown instead of an error's JSON: carried as a response extension.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    pub message: String,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if let Self::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let body = ErrorBody {
            error: self.to_string(),
            field: match &self {
                Self::Unprocessable { field, .. } => Some(field),
                _ => None,
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        response.extensions_mut().insert(ErrorPage {
            message: self.to_string(),
        });
        if let Self::TooManyRequests { retry_after } | Self::Limited { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if let Self::Unauthorized(_) = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_database_is_a_503_and_editors_mistakes_name_their_field() {
        let busy = HttpError::from(ServiceError::Busy("pool timed out".into()));
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            busy.to_string(),
            "the database is busy; try again in a minute"
        );
        let full = HttpError::from(ServiceError::Unavailable(
            "the database cannot be written: disk full".into(),
        ));
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            full.to_string(),
            "the database cannot be written: disk full"
        );
        let invalid = HttpError::from(crate::service::invalid("status", "must be pending"));
        assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(invalid.to_string(), "status: must be pending");
        let template = HttpError::from(ServiceError::Template("line 3".into()));
        assert_eq!(template.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let missing = HttpError::from(ServiceError::NotFound("no digest with id x".into()));
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            HttpError::from(ServiceError::Conflict("sent".into())).status(),
            StatusCode::CONFLICT
        );
    }
}
