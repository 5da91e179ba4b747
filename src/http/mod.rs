//! HTTP: one router per resource, merged here, sharing one `AppState`.

mod admin;
mod archive;
mod connections;
mod dashboard;
mod error;
mod guard;
mod openapi;
mod public;
mod studio;
mod webhooks;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use error::ErrorPage;
pub use error::HttpError;

use crate::render::Renderer;
use crate::service::{
    AdminSessions, Archive, Editor, Feeds, Inbound, Reporting, Signup, Subscribers,
};
pub use connections::Connections;
pub use webhooks::{SesWebhook, WEBHOOK_BODY_LIMIT, WebhookSettings};

/// Largest request body accepted anywhere (a sign-up is a few hundred bytes).
pub const BODY_LIMIT: usize = 16 * 1024;

/// The few settings the handlers read; `app` fills them from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Guards the admin API and the dashboard; `None` turns both off.
    pub admin_token: Option<String>,
    /// May read /metrics besides the admin token.
    pub metrics_token: Option<String>,
    /// The public URL is https: the session cookie is `Secure`.
    pub secure_cookies: bool,
    /// How long a confirmation link stays valid, as pages say it ("30 minutes", "2 days").
    pub confirmation_valid_for: String,
    /// The public URL's origin (`https://news.example.com`): a subscriber's form posts must
    /// come from it.
    pub public_origin: String,
    /// Sign-up requests per client IP per minute; `None`: no limit.
    pub subscribe_per_minute: Option<NonZeroU32>,
}

/// What every page gets: its templates and the list's name.
#[derive(Clone)]
pub struct Pages {
    pub renderer: Arc<Renderer>,
    pub list_name: Arc<str>,
}

/// What every handler is given. Behind one `Arc`: axum clones the state for each request, and
/// cloning the services one by one (each with its store's pools and handles) was a tenth of
/// the server's CPU under a sign-up load (perf, scripts/bench-subscribe.sh).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
    pub editor: Editor,
    /// The public archive of sent digests.
    pub archive: Archive,
    pub feeds: Feeds,
    pub subscribers: Subscribers,
    pub signup: Signup,
    pub reporting: Reporting,
    pub pages: Pages,
    pub settings: Arc<Settings>,
    /// Bounces and complaints from the providers' webhooks, and their credentials.
    pub inbound: Inbound,
    pub webhooks: Arc<WebhookSettings>,
    pub signup_limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    /// Dashboard sessions (in the database) and the wrong-admin-token throttle.
    sessions: AdminSessions,
    throttle: Arc<guard::Throttle>,
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        editor: Editor,
        archive: Archive,
        feeds: Feeds,
        subscribers: Subscribers,
        signup: Signup,
        reporting: Reporting,
        pages: Pages,
        settings: Settings,
        sessions: AdminSessions,
        inbound: Inbound,
        webhooks: WebhookSettings,
    ) -> Self {
        let signup_limiter = settings
            .subscribe_per_minute
            .map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n))));
        Self(Arc::new(Services {
            editor,
            archive,
            feeds,
            subscribers,
            signup,
            reporting,
            pages,
            settings: Arc::new(settings),
            inbound,
            webhooks: Arc::new(webhooks),
            signup_limiter,
            sessions,
            throttle: Arc::default(),
        }))
    }
}

/// The routes that are served but deliberately not in the OpenAPI document: pages for
/// browsers (the sign-up form, the archive, the dashboard and the studio under /admin, with
/// their forms and assets) and the Prometheus text at /metrics. Everything else is API and
/// is registered from its handler's `#[utoipa::path]` with `routes!` (see `documented`); the
/// `openapi` integration test fails, naming the route, when a route is served that is in
/// neither.
pub const PAGES: &[&str] = &[
    "GET /",
    "GET /assets/timezone.js",
    "GET /test-email",
    "POST /test-email",
    "GET /archive",
    "GET /archive/feed.xml",
    "GET /archive/{id}",
    "GET /metrics",
    "GET /admin",
    "POST /admin/login",
    "POST /admin/logout",
    "GET /admin/items",
    "POST /admin/items",
    "POST /admin/items/{id}/delete",
    "GET /admin/items/{id}",
    "POST /admin/items/{id}",
    "GET /admin/digests",
    "POST /admin/digests",
    "GET /admin/digests/{id}",
    "POST /admin/digests/{id}/edit",
    "POST /admin/digests/{id}/test",
    "POST /admin/digests/{id}/send-now",
    "POST /admin/digests/{id}/schedule",
    "POST /admin/digests/{id}/cancel",
    "POST /admin/digests/{id}/pause",
    "POST /admin/digests/{id}/resume",
    "GET /admin/schedule",
    "POST /admin/schedule",
];

/// The documented routes, each registered from its handler's `#[utoipa::path]`: the router
/// serves them and the OpenAPI document describes them, from this one list. With a state,
/// the admin API gets its token check (the document needs none).
fn documented(state: Option<&AppState>) -> OpenApiRouter<AppState> {
    let admin = match state {
        Some(state) => admin::api().route_layer(middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        )),
        None => admin::api(),
    };
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(public::router())
        .merge(admin)
        .merge(webhooks::router())
        .routes(routes!(healthz))
        .routes(routes!(openapi::document))
}

/// The OpenAPI 3.1 document of every documented route, with the answers every route of a
/// kind shares (`openapi::complete`). `squeeze openapi` prints it; GET /api/openapi.json
/// serves it; docs/openapi.json is a copy that a test keeps current.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = documented(None).into_openapi();
    openapi::complete(&mut doc);
    doc
}

pub fn router(state: AppState) -> Router {
    let (api, _) = documented(Some(&state)).split_for_parts();
    api.merge(archive::router())
        .merge(dashboard::router())
        .merge(studio::router())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), error_pages))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then lets open requests finish; `conns` bounds how
/// long a connection may dawdle and how many may be open (`connections`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    conns: Connections,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Some(limiter) = state.signup_limiter.clone() {
        // Forget idle clients so the per-IP table does not grow without bound.
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => limiter.retain_recent(),
                }
            }
        });
    }
    connections::serve(listener, router(state), conns, shutdown).await
}

/// Renders a page template with what every page gets: the list's name and the sign-up
/// form's action.
fn page(
    state: &AppState,
    status: StatusCode,
    name: &str,
    ctx: minijinja::Value,
) -> Result<Response, HttpError> {
    let base = minijinja::context! {
        list_name => &*state.pages.list_name,
        subscribe_action => "/subscribe",
    };
    let html = state
        .pages
        .renderer
        .render(name, minijinja::context! { ..ctx, ..base })?;
    Ok((status, axum::response::Html(html)).into_response())
}

/// Whether the client asked for JSON: by `Accept` or by sending JSON. Everyone else (a
/// browser, a form post) is answered with pages.
fn wants_json(headers: &HeaderMap) -> bool {
    let has = |name, what: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains(what))
    };
    has(header::ACCEPT, "application/json") || has(header::CONTENT_TYPE, "json")
}

/// A subscriber's form posts (confirm, manage) must come from Squeeze's own pages, by the
/// same rule as the dashboard's (`guard::same_origin`); the token in the form's address is
/// the credential.
fn same_origin(state: &AppState, headers: &HeaderMap) -> Result<(), HttpError> {
    if guard::same_origin(headers, &state.settings.public_origin) {
        Ok(())
    } else {
        Err(HttpError::Forbidden(format!(
            "this form can only be sent from {}'s own pages at {}",
            state.pages.list_name, state.settings.public_origin
        )))
    }
}

/// A path's one `{id}` (or `{email}`): one that is not UTF-8, or that could name no row
/// (`domain::id::may_name_a_row`), is a 404 before any lookup.
struct RowId(String);

impl<S: Send + Sync> FromRequestParts<S> for RowId {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) if crate::domain::id::may_name_a_row(&id) => Ok(Self(id)),
            _ => Err(HttpError::NotFound(format!(
                "there is nothing at {}",
                parts.uri.path()
            ))),
        }
    }
}

async fn not_found(request: Request) -> HttpError {
    HttpError::NotFound(format!("there is no page at {}", request.uri().path()))
}

/// Errors for browsers: every error answer (an `HttpError`, or axum's own empty 404 and 405)
/// becomes a page in the site's layout, unless the client asked for JSON or the path is the
/// API's; JSON clients get `{"error"}` for axum's empty answers too. Answers with a body of
/// their own (the health check's text, a handler's page) are left as they are.
async fn error_pages(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let json_client = path.starts_with("/api/")
        || path.starts_with("/webhooks/")
        || path == "/metrics"
        || wants_json(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let message = match response.extensions().get::<ErrorPage>() {
        Some(_) if json_client => return response,
        Some(page) => page.message.clone(),
        None if response.headers().contains_key(header::CONTENT_TYPE) => return response,
        None if status == StatusCode::METHOD_NOT_ALLOWED => {
            "this address does not take that kind of request".to_owned()
        }
        None => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if json_client {
        let body = axum::Json(serde_json::json!({ "error": message }));
        return (parts, body).into_response();
    }
    let title = match status {
        StatusCode::NOT_FOUND => "Page not found",
        StatusCode::METHOD_NOT_ALLOWED => "Not allowed here",
        StatusCode::FORBIDDEN => "Refused",
        StatusCode::TOO_MANY_REQUESTS => "Too many requests",
        s if s.is_server_error() => "Something went wrong on our side",
        _ => "This request cannot be answered",
    };
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        "Please try again in a minute; if it keeps happening, tell the list's operator.".to_owned()
    } else {
        sentence(&message)
    };
    match page(
        &state,
        status,
        "error.html.j2",
        minijinja::context! { title, message },
    ) {
        Ok(page) => {
            let (page_parts, body) = page.into_parts();
            parts.headers.extend(page_parts.headers);
            Response::from_parts(parts, body)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot render the error page");
            (parts, message).into_response()
        }
    }
}

/// "there is no page at /x" as a sentence: "There is no page at /x."
fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    let mut s: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !s.ends_with(['.', '!', '?']) {
        s.push('.');
    }
    s
}

/// Whether the database takes writes: for load balancers and monitoring.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "`ok`", body = String, content_type = "text/plain"),
        (status = 503, description = "The database is unavailable, and why", body = String, content_type = "text/plain"),
    ))]
async fn healthz(State(state): State<AppState>) -> Response {
    match state.reporting.health().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        // The store logs when writes start and stop failing; a probe every second must not
        // repeat it.
        Err(e) => {
            tracing::debug!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("database unavailable: {e}\n"),
            )
                .into_response()
        }
    }
}

/// One span per request, carrying method and path — never the query string, which holds
/// tokens. Server errors are logged at warn level, everything else at debug.
async fn trace_request(request: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path()
    );
    let started = std::time::Instant::now();
    async move {
        let response = next.run(request).await;
        let status = response.status().as_u16();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if response.status().is_server_error() {
            tracing::warn!(status, ms, "request failed");
        } else {
            tracing::debug!(status, ms, "request");
        }
        response
    }
    .instrument(span)
    .await
}

/// Pages carry tokens in their URLs: never leak them through Referer, never cache them, never
/// let another site frame the unsubscribe button.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
