//! Operators' pages: the web dashboard (login form, HttpOnly cookie) and /metrics.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use hmac::{Hmac, Mac as _};
use minijinja::context;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::admin::{DISABLED, token_matches};
use super::{AppState, HttpError, page};
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
/// subscriber counts are business data.
async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, HttpError> {
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
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
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
        _ => Err(HttpError::Unauthorized(
            "send the metrics or admin token as `Authorization: Bearer <token>`".into(),
        )),
    }
}

type HmacSha256 = Hmac<Sha256>;

fn signature(admin_token: &str, expires: i64) -> Option<Vec<u8>> {
    let mut mac = HmacSha256::new_from_slice(admin_token.as_bytes()).ok()?;
    mac.update(format!("squeeze-dashboard:{expires}").as_bytes());
    Some(mac.finalize().into_bytes().to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A session cookie value: its expiry and an HMAC of it keyed by the admin token, so it cannot
/// be forged without the token and dies when the token changes.
fn session_value(admin_token: &str, now: i64) -> Option<String> {
    let expires = now + SESSION_MS;
    Some(format!(
        "{expires}.{}",
        hex(&signature(admin_token, expires)?)
    ))
}

fn session_valid(admin_token: &str, headers: &HeaderMap, now: i64) -> bool {
    let Some(value) = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.to_owned())
    else {
        return false;
    };
    let Some((expires, sig)) = value.split_once('.') else {
        return false;
    };
    let Ok(expires) = expires.parse::<i64>() else {
        return false;
    };
    if expires <= now {
        return false;
    }
    let Ok(mut mac) = HmacSha256::new_from_slice(admin_token.as_bytes()) else {
        return false;
    };
    mac.update(format!("squeeze-dashboard:{expires}").as_bytes());
    let given: Option<Vec<u8>> = (0..sig.len())
        .step_by(2)
        .map(|i| {
            sig.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    given.is_some_and(|g| mac.verify_slice(&g).is_ok())
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
fn disabled(state: &AppState) -> Result<Response, HttpError> {
    page(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        "admin_login.html.j2",
        context! { error => DISABLED },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(s): State<AppState>, Form(f): Form<LoginForm>) -> Result<Response, HttpError> {
    let Some(expected) = s.settings.admin_token.as_deref() else {
        return disabled(&s);
    };
    if !token_matches(expected, f.token.trim()) {
        return page(
            &s,
            StatusCode::UNAUTHORIZED,
            "admin_login.html.j2",
            context! { error => "That is not the admin token." },
        );
    }
    let value = session_value(expected, now_ms())
        .ok_or_else(|| HttpError::internal(anyhow::anyhow!("cannot sign a session")))?;
    let mut response = Redirect::to("/admin").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&s, &value, SESSION_MS / 1000));
    Ok(response)
}

async fn logout(State(s): State<AppState>) -> Response {
    let mut response = Redirect::to("/admin").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&s, "", 0));
    response
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
    let Some(token) = s.settings.admin_token.as_deref() else {
        return disabled(&s);
    };
    let now = now_ms();
    if !session_valid(token, &headers, now) {
        return page(
            &s,
            StatusCode::UNAUTHORIZED,
            "admin_login.html.j2",
            context! {},
        );
    }
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
    page(
        &s,
        StatusCode::OK,
        "admin.html.j2",
        context! {
            overall,
            failures => activity.recent_failures,
            minute_bars => bars(&per_minute, 720.0, 120.0),
            growth_bars => bars(&growth, 600.0, 80.0),
            sent_last_hour,
            refresh => sending,
            now => to_rfc3339(now),
        },
    )
}

async fn digest_action(
    s: &AppState,
    headers: &HeaderMap,
    act: impl std::future::Future<Output = crate::service::ServiceResult<crate::service::Digest>>,
) -> Result<Response, HttpError> {
    let Some(token) = s.settings.admin_token.as_deref() else {
        return disabled(s);
    };
    if !session_valid(token, headers, now_ms()) {
        return Err(HttpError::Unauthorized("log in at /admin first".into()));
    }
    act.await?;
    Ok(Redirect::to("/admin").into_response())
}

async fn pause(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let editor = s.editor.clone();
    digest_action(&s, &headers, async move {
        editor
            .pause(&id, "paused from the dashboard", now_ms())
            .await
    })
    .await
}

async fn resume(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let editor = s.editor.clone();
    digest_action(
        &s,
        &headers,
        async move { editor.resume(&id, now_ms()).await },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_signed_and_expire() {
        let token = "admin-token-0123456789";
        let now = 1_000_000;
        let value = session_value(token, now).expect("signed");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={value}")).expect("header"),
        );
        assert!(session_valid(token, &headers, now));
        assert!(
            !session_valid(token, &headers, now + SESSION_MS + 1),
            "expired"
        );
        assert!(
            !session_valid("another-admin-token-00", &headers, now),
            "token changed"
        );
        let (exp, sig) = value.split_once('.').expect("shape");
        let forged = format!("{}.{sig}", exp.parse::<i64>().expect("exp") + 1000);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}={forged}")).expect("header"),
        );
        assert!(!session_valid(token, &headers, now), "forged expiry");
    }
}
