//! Operators' pages: the web dashboard (login form, a session kept in the database behind an
//! HttpOnly cookie, CSRF-checked forms: `guard`) and /metrics.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde::Serialize;

use super::admin::{DISABLED, token_matches};
use super::{AppState, HttpError, RowId, guard, page};
use crate::domain::clock::{now_ms, to_rfc3339};

const COOKIE: &str = "squeeze_session";
/// A dashboard session lasts 12 hours.
const SESSION_MS: i64 = 12 * 3600 * 1000;
/// How many minutes the "sent per minute" chart covers.
const CHART_MINUTES: i64 = 180;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/admin", get(dashboard))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/digests/{id}/pause", post(pause))
        .route("/admin/digests/{id}/resume", post(resume))
}

/// `/metrics` answers to the admin token or the separate metrics token, never to nobody:
/// subscriber counts are business data. Wrong tokens count toward the admin throttle.
async fn metrics(
    State(s): State<AppState>,
    ext: Extensions,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let tokens: Vec<&str> = [
        s.settings.admin_token.as_deref(),
        s.settings.metrics_token.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    if tokens.is_empty() {
        return Err(HttpError::Unavailable(
            "metrics are disabled: set SQUEEZE_METRICS_TOKEN or SQUEEZE_ADMIN_TOKEN".into(),
        ));
    }
    let ip = guard::client_ip(&ext);
    let too_many = |retry_after| HttpError::TooManyRequests { retry_after };
    s.throttle.check(ip).map_err(too_many)?;
    match guard::bearer(&headers) {
        Some(g) if tokens.iter().any(|t| token_matches(t, g)) => {
            let body = s.reporting.metrics(now_ms()).await?;
            Ok((
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                body,
            )
                .into_response())
        }
        given => {
            if given.is_some() {
                s.throttle.failed(ip).map_err(too_many)?;
            }
            Err(HttpError::Unauthorized(
                "send the metrics or admin token as `Authorization: Bearer <token>`".into(),
            ))
        }
    }
}

/// The session id the browser sent in its cookie.
pub(super) fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

fn cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let c = format!(
        "{COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The page that says the dashboard is off (no admin token configured).
pub(super) fn disabled(state: &AppState) -> Result<Response, HttpError> {
    page(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        "admin_login.html.j2",
        context! { error => DISABLED },
    )
}

/// 403 with a page: the form did not come from the dashboard (another site, or a stale page).
fn forbidden(state: &AppState) -> Result<Response, HttpError> {
    let error = format!(
        "This form did not come from this dashboard (its security token or its origin does \
         not match {}), so nothing was changed. Open the dashboard again and retry.",
        state.settings.public_origin
    );
    page(
        state,
        StatusCode::FORBIDDEN,
        "admin_login.html.j2",
        context! { error },
    )
}

/// 429 with a page and `Retry-After`: too many wrong tokens.
fn throttled(state: &AppState, retry_after: u64) -> Result<Response, HttpError> {
    let error = format!("Too many wrong tokens; try again in {retry_after} seconds.");
    let mut response = page(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        "admin_login.html.j2",
        context! { error },
    )?;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    Ok(response)
}

/// A form field from an `application/x-www-form-urlencoded` body (read by hand so that a
/// forged post with no body or another content type still gets the 403 page).
pub(super) fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn login(
    State(s): State<AppState>,
    ext: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let Some(expected) = s.settings.admin_token.as_deref() else {
        return disabled(&s);
    };
    if !guard::same_origin(&headers, &s.settings.public_origin) {
        return forbidden(&s);
    }
    let ip = guard::client_ip(&ext);
    if let Err(wait) = s.throttle.check(ip) {
        return throttled(&s, wait);
    }
    let given = form_field(&body, "token").unwrap_or_default();
    if !token_matches(expected, given.trim()) {
        if let Err(wait) = s.throttle.failed(ip) {
            return throttled(&s, wait);
        }
        return page(
            &s,
            StatusCode::UNAUTHORIZED,
            "admin_login.html.j2",
            context! { error => "That is not the admin token." },
        );
    }
    let now = now_ms();
    let id = s.sessions.create(now, now + SESSION_MS).await?;
    let mut response = Redirect::to("/admin").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&s, &id, SESSION_MS / 1000));
    Ok(response)
}

/// Why a dashboard form was refused.
pub(super) enum Refused {
    Disabled,
    NotLoggedIn,
    Forged,
}

impl Refused {
    pub(super) fn answer(self, s: &AppState) -> Response {
        let page = match self {
            Self::Disabled => disabled(s),
            Self::NotLoggedIn => Err(HttpError::Unauthorized("log in at /admin first".into())),
            Self::Forged => forbidden(s),
        };
        page.unwrap_or_else(IntoResponse::into_response)
    }
}

/// A state-changing dashboard form: the live session's id, once its CSRF token and origin
/// check out; the outer error is a database fault.
pub(super) async fn checked_form(
    s: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Result<String, Refused>, HttpError> {
    if s.settings.admin_token.is_none() {
        return Ok(Err(Refused::Disabled));
    }
    let Some(id) = session_id(headers) else {
        return Ok(Err(Refused::NotLoggedIn));
    };
    let Some(expected) = s.sessions.csrf(&id, now_ms()).await? else {
        return Ok(Err(Refused::NotLoggedIn));
    };
    let csrf = form_field(body, "csrf").unwrap_or_default();
    if !guard::same_origin(headers, &s.settings.public_origin) || !token_matches(&expected, &csrf) {
        return Ok(Err(Refused::Forged));
    }
    Ok(Ok(id))
}

/// Ends the session on the server, so the old cookie opens nothing any more.
async fn logout(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let id = match checked_form(&s, &headers, &body).await? {
        Ok(id) => id,
        Err(refused) => return Ok(refused.answer(&s)),
    };
    s.sessions.end(&id).await?;
    let mut response = Redirect::to("/admin").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&s, "", 0));
    Ok(response)
}

/// One bar of an inline SVG chart, laid out here so the template stays simple.
#[derive(Serialize)]
struct Bar {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    n: i64,
    label: String,
}

/// What a chart's axes say: the top of the value axis, the first and last labels of the
/// other.
#[derive(Serialize)]
struct Axis {
    max: i64,
    first: String,
    last: String,
}

impl Axis {
    fn of(values: &[(String, i64)]) -> Self {
        let label = |v: Option<&(String, i64)>| v.map(|(l, _)| l.clone()).unwrap_or_default();
        Self {
            max: values.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1),
            first: label(values.first()),
            last: label(values.last()),
        }
    }
}

fn bars(values: &[(String, i64)], width: f64, height: f64) -> Vec<Bar> {
    let max = values.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1) as f64;
    let w = width / values.len().max(1) as f64;
    values
        .iter()
        .enumerate()
        .map(|(i, (label, n))| {
            let h = (*n as f64 / max) * (height - 4.0);
            Bar {
                x: i as f64 * w,
                y: height - h,
                w: (w - 1.0).max(1.0),
                h,
                n: *n,
                label: label.clone(),
            }
        })
        .collect()
}

async fn dashboard(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, HttpError> {
    if s.settings.admin_token.is_none() {
        return disabled(&s);
    }
    let now = now_ms();
    let csrf = match session_id(&headers) {
        Some(id) => s.sessions.csrf(&id, now).await?,
        None => None,
    };
    let Some(csrf) = csrf else {
        return page(
            &s,
            StatusCode::UNAUTHORIZED,
            "admin_login.html.j2",
            context! {},
        );
    };
    let overall = s.reporting.overall(now).await?;
    let activity = s.reporting.activity(now, CHART_MINUTES).await?;
    let first_minute = now.div_euclid(60_000) - CHART_MINUTES + 1;
    let per_minute: Vec<(String, i64)> = activity
        .sent_per_minute
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let at = to_rfc3339((first_minute + i as i64) * 60_000);
            (at[11..16].to_owned(), *n)
        })
        .collect();
    let growth: Vec<(String, i64)> = overall
        .last_30_days
        .iter()
        .map(|d| (d.date.clone(), d.signups))
        .collect();
    let sending = overall
        .current_digest
        .as_ref()
        .is_some_and(|d| d.status == "sending");
    let sent_last_hour: i64 = activity.sent_per_minute.iter().rev().take(60).sum();
    let feeds = s.feeds.list(now).await?;
    page(
        &s,
        StatusCode::OK,
        "admin.html.j2",
        context! {
            overall,
            failures => activity.recent_failures,
            feeds,
            minute_bars => bars(&per_minute, 720.0, 120.0),
            minute_axis => Axis::of(&per_minute),
            growth_bars => bars(&growth, 600.0, 80.0),
            growth_axis => Axis::of(&growth),
            sent_last_hour,
            refresh => sending,
            now => to_rfc3339(now),
            csrf,
        },
    )
}

async fn digest_action(
    s: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    act: impl std::future::Future<Output = crate::service::ServiceResult<crate::service::Digest>>,
) -> Result<Response, HttpError> {
    if let Err(refused) = checked_form(s, headers, body).await? {
        return Ok(refused.answer(s));
    }
    act.await?;
    Ok(Redirect::to("/admin").into_response())
}

async fn pause(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let editor = s.editor.clone();
    digest_action(&s, &headers, &body, async move {
        editor
            .pause(&id, "paused from the dashboard", now_ms())
            .await
    })
    .await
}

async fn resume(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let editor = s.editor.clone();
    digest_action(&s, &headers, &body, async move {
        editor.resume(&id, now_ms()).await
    })
    .await
}
