//! HTTP: one router per resource, merged here, sharing one `AppState`.

mod admin;
mod dashboard;
mod error;
mod public;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

pub use error::HttpError;

use crate::render::Renderer;
use crate::service::{Editor, Reporting, Signup, Subscribers};

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
    /// How long a confirmation link stays valid, as the confirmation page says it.
    pub confirmation_valid_hours: u64,
    /// Sign-up requests per client IP per minute; `None`: no limit.
    pub subscribe_per_minute: Option<NonZeroU32>,
}

/// What every page gets: its templates and the list's name.
#[derive(Clone)]
pub struct Pages {
    pub renderer: Arc<Renderer>,
    pub list_name: Arc<str>,
}

#[derive(Clone)]
pub struct AppState {
    pub editor: Editor,
    pub subscribers: Subscribers,
    pub signup: Signup,
    pub reporting: Reporting,
    pub pages: Pages,
    pub settings: Arc<Settings>,
    pub signup_limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
}

impl AppState {
    pub fn new(
        editor: Editor,
        subscribers: Subscribers,
        signup: Signup,
        reporting: Reporting,
        pages: Pages,
        settings: Settings,
    ) -> Self {
        let signup_limiter = settings
            .subscribe_per_minute
            .map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n))));
        Self {
            editor,
            subscribers,
            signup,
            reporting,
            pages,
            settings: Arc::new(settings),
            signup_limiter,
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(public::router())
        .merge(admin::router(state.clone()))
        .merge(dashboard::router())
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
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
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
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
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
