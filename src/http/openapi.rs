//! The OpenAPI 3.1 document: its header (info, security schemes, tags) here; its paths from
//! the handlers' `#[utoipa::path]`, gathered by `http::documented`; and [`complete`], the
//! answers that layers and extractors give every route of a kind, added once here rather
//! than repeated on each handler.

use std::sync::LazyLock;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response as DocResponse};

use super::error::ErrorBody;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Squeeze",
        description = "The HTTP API of Squeeze, a newsletter delivery pipeline: the editors' and \
            operators' API under /api (bearer admin token), the subscribers' public routes, the \
            providers' bounce and complaint webhooks, and the health check. The pages for \
            browsers (the archive, the dashboard and studio under /admin) and /metrics are not \
            described here. Error answers are `{\"error\", \"field\"?}` JSON for JSON clients \
            and pages for browsers.",
        license(name = "MIT"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "items", description = "News items, the raw material of digests"),
        (name = "feeds", description = "Feeds whose new entries become pending items"),
        (name = "digests", description = "Digests: create, preview, schedule, pause, cancel"),
        (name = "schedule", description = "The daily digest"),
        (name = "subscribers", description = "Who the digest reaches"),
        (name = "reporting", description = "Statistics and events"),
        (name = "public", description = "What subscribers meet: sign-up, confirmation, manage, unsubscribe"),
        (name = "webhooks", description = "Providers' bounce and complaint webhooks; 404 until configured"),
        (name = "operations", description = "Health and this document"),
    )
)]
pub(super) struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin token (SQUEEZE_ADMIN_TOKEN)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "postmark_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("The Postmark webhook's user and password"))
                    .build(),
            ),
        );
    }
}

const BEARER: &str = "bearer";
const DOCUMENT_PATH: &str = "/api/openapi.json";

/// This document (no token needed).
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub(super) async fn document() -> Response {
    static JSON: LazyLock<Result<String, String>> =
        LazyLock::new(|| super::openapi().to_pretty_json().map_err(|e| e.to_string()));
    match &*JSON {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json.as_str()).into_response(),
        Err(e) => super::HttpError::internal(anyhow::anyhow!("cannot encode the document: {e}"))
            .into_response(),
    }
}

/// The answers every route of a kind shares, from the layers and extractors that give them:
/// - the admin API (`admin::require_admin`): the bearer scheme, 401 (no or wrong token), 429
///   (the wrong-token throttle), 503 (the API is off, or the database busy or unavailable);
/// - every route but the health check and this document: 503 when the database is busy or
///   unavailable;
/// - a route with a body: 413 over the body limit; with a JSON body (`ApiJson`): 400 (not
///   JSON, or not the shape) and 415 (not sent as JSON);
/// - a route with query parameters (`ApiQuery`): 400 when they do not parse;
/// - the public routes: an error answer is JSON for JSON clients and a page for browsers
///   (`http::error_pages`), so each JSON error is also `text/html`.
pub(super) fn complete(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let admin = path.starts_with("/api/") && path != DOCUMENT_PATH;
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            if admin {
                op.security
                    .get_or_insert_with(Vec::new)
                    .push(SecurityRequirement::new(BEARER, Vec::<String>::new()));
                answer(
                    op,
                    StatusCode::UNAUTHORIZED,
                    "No admin token, or a wrong one",
                );
                answer(
                    op,
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many wrong tokens from this address; see Retry-After",
                );
                answer(
                    op,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The admin API is off (no admin token set), or the database is busy or unavailable",
                );
            } else if path != "/healthz" && path != DOCUMENT_PATH {
                answer(
                    op,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database is busy or unavailable",
                );
            }
            if let Some(body) = &op.request_body {
                let json = body.content.contains_key("application/json");
                answer(op, StatusCode::PAYLOAD_TOO_LARGE, "The body is too large");
                if json {
                    answer(
                        op,
                        StatusCode::BAD_REQUEST,
                        "The body is not JSON, or not of this shape",
                    );
                    answer(
                        op,
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "The body is not sent as JSON",
                    );
                }
            }
            let has_query = op
                .parameters
                .iter()
                .flatten()
                .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query));
            if has_query {
                answer(
                    op,
                    StatusCode::BAD_REQUEST,
                    "A query parameter does not parse",
                );
            }
            if op
                .tags
                .as_ref()
                .is_some_and(|t| t.iter().any(|t| t == "public"))
            {
                pages_too(op);
            }
        }
    }
}

/// Adds `status` answered with the error body, unless the handler documents it already.
fn answer(op: &mut Operation, status: StatusCode, description: &str) {
    let code = status.as_u16().to_string();
    if op.responses.responses.contains_key(&code) {
        return;
    }
    let response = DocResponse::builder()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody")))),
        )
        .build();
    op.responses.responses.insert(code, RefOr::T(response));
}

/// An error answered as JSON to JSON clients is a page for browsers.
fn pages_too(op: &mut Operation) {
    for (code, response) in op.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let error = code.starts_with('4') || code.starts_with('5');
        if error
            && response.content.contains_key("application/json")
            && !response.content.contains_key("text/html")
        {
            response.content.insert(
                "text/html".to_owned(),
                Content::new(Some(RefOr::T(
                    utoipa::openapi::schema::Object::with_type(utoipa::openapi::Type::String)
                        .into(),
                ))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::OpenApi as _;

    #[test]
    fn every_admin_route_has_the_bearer_scheme_and_its_guards_answers() {
        let doc = super::super::openapi();
        let items = doc.paths.paths.get("/api/items").expect("documented");
        let post = items.post.as_ref().expect("POST /api/items");
        assert!(post.security.as_ref().is_some_and(|s| !s.is_empty()));
        for code in ["201", "400", "401", "413", "415", "422", "429", "503"] {
            assert!(post.responses.responses.contains_key(code), "{code}");
        }
        let own = doc.paths.paths.get(DOCUMENT_PATH).expect("documented");
        assert!(own.get.as_ref().is_some_and(|g| g.security.is_none()));
        assert_eq!(ApiDoc::openapi().info.title, "Squeeze");
    }
}
