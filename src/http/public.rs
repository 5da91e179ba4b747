//! What a subscriber meets: the sign-up form, confirmation and one-click unsubscribe.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::{AppState, BODY_LIMIT, HttpError, page};
use crate::domain::clock::now_ms;
use crate::domain::{EmailAddress, SubscriberName, Token};
use crate::service::signup::{ConfirmOutcome, SignUp, UnsubscribeOutcome};

const MAX_USER_AGENT: usize = 512;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/subscribe", post(subscribe))
        .route("/confirm", get(confirm))
        .route("/unsubscribe", get(unsubscribe_page).post(unsubscribe))
}

async fn index(State(state): State<AppState>) -> Result<Response, HttpError> {
    page(&state, StatusCode::OK, "index.html.j2", context! {})
}

#[derive(Debug, Deserialize)]
struct SubscribeRequest {
    email: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Json,
    Form,
}

/// A sign-up's fields once they are known to be well-formed.
struct NewSubscriber {
    email: EmailAddress,
    name: Option<SubscriberName>,
}

/// The edge converts: a well-formed address and name, or the field at fault and why.
impl TryFrom<&SubscribeRequest> for NewSubscriber {
    type Error = (&'static str, String);

    fn try_from(request: &SubscribeRequest) -> Result<Self, Self::Error> {
        let email = EmailAddress::parse(&request.email).map_err(|e| ("email", e.to_string()))?;
        let name = SubscriberName::parse(request.name.as_deref().unwrap_or(""))
            .map_err(|e| ("name", e.to_string()))?;
        Ok(Self { email, name })
    }
}

async fn subscribe(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let ip = peer.ip();
    check_rate(&state, ip)?;
    let (format, request) = read_sign_up(&headers, body)?;
    let NewSubscriber { email, name } = match NewSubscriber::try_from(&request) {
        Ok(v) => v,
        Err((field, message)) if format == Format::Form => {
            // Show the form again, with the reason and what they typed (escaped on render).
            return page(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                "index.html.j2",
                context! {
                    error => format!("Please check the {field}: {message}."),
                    email => request.email,
                    name => request.name.unwrap_or_default(),
                },
            );
        }
        Err((field, message)) => return Err(HttpError::Unprocessable { field, message }),
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
    let signup = SignUp {
        email,
        name,
        ip: Some(ip.to_string()),
        user_agent,
    };
    let outcome = state.signup.subscribe(&signup, now_ms()).await?;
    tracing::debug!(?outcome, "sign-up");

    // The same answer whatever the address's state: the form must not reveal who is subscribed.
    match format {
        Format::Json => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "accepted",
                "message": "If this address can receive the newsletter, a confirmation link is on its way.",
            })),
        )
            .into_response()),
        Format::Form => page(&state, StatusCode::ACCEPTED, "subscribed.html.j2", context! {}),
    }
}

/// The per-IP sign-up limit, checked before the body is even read.
fn check_rate(state: &AppState, ip: IpAddr) -> Result<(), HttpError> {
    if let Some(limiter) = &state.signup_limiter
        && let Err(not_until) = limiter.check_key(&ip)
    {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        return Err(HttpError::TooManyRequests {
            retry_after: wait.as_secs().max(1),
        });
    }
    Ok(())
}

/// The body as JSON or as a form, by its content type.
fn read_sign_up(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Format, SubscribeRequest), HttpError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::PayloadTooLarge { limit: BODY_LIMIT }
        } else {
            HttpError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok((
            Format::Json,
            serde_json::from_slice(&body)
                .map_err(|e| HttpError::BadRequest(format!("invalid JSON body: {e}")))?,
        )),
        "application/x-www-form-urlencoded" => Ok((
            Format::Form,
            serde_urlencoded::from_bytes(&body)
                .map_err(|e| HttpError::BadRequest(format!("invalid form body: {e}")))?,
        )),
        _ => Err(HttpError::UnsupportedMediaType(
            "send the sign-up as application/json or application/x-www-form-urlencoded".into(),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn confirm(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> Result<Response, HttpError> {
    let valid_hours = state.settings.confirmation_valid_hours;
    let invalid = |status| {
        page(
            &state,
            status,
            "confirm.html.j2",
            context! { state => "invalid", valid_hours },
        )
    };
    let Some(token) = q.token.as_deref().and_then(|t| Token::parse(t).ok()) else {
        return invalid(StatusCode::BAD_REQUEST);
    };
    match state.signup.confirm(&token, now_ms()).await? {
        ConfirmOutcome::Confirmed | ConfirmOutcome::AlreadyConfirmed => page(
            &state,
            StatusCode::OK,
            "confirm.html.j2",
            context! { state => "confirmed", valid_hours },
        ),
        ConfirmOutcome::Invalid => invalid(StatusCode::NOT_FOUND),
    }
}

/// Unsubscribe tokens have the same shape as every token Squeeze issues.
fn unsubscribe_token(q: &TokenQuery) -> Option<Token> {
    q.token.as_deref().and_then(|t| Token::parse(t).ok())
}

fn invalid_unsubscribe(state: &AppState, status: StatusCode) -> Result<Response, HttpError> {
    page(
        state,
        status,
        "unsubscribe.html.j2",
        context! { state => "invalid" },
    )
}

/// GET never changes anything: mail scanners follow links.
async fn unsubscribe_page(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> Result<Response, HttpError> {
    let Some(token) = unsubscribe_token(&q) else {
        return invalid_unsubscribe(&state, StatusCode::BAD_REQUEST);
    };
    match state.signup.knows_unsubscribe_token(&token).await? {
        true => page(
            &state,
            StatusCode::OK,
            "unsubscribe.html.j2",
            context! { state => "ask", action => format!("?token={}", token.as_str()) },
        ),
        false => invalid_unsubscribe(&state, StatusCode::NOT_FOUND),
    }
}

/// RFC 8058 one-click: the POST itself is the request, whatever its body (the standard
/// `List-Unsubscribe=One-Click`, form-encoded or multipart, or the page's button). Answers
/// 200 with a page, never a redirect; idempotent.
async fn unsubscribe(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
    _body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let Some(token) = unsubscribe_token(&q) else {
        return invalid_unsubscribe(&state, StatusCode::BAD_REQUEST);
    };
    match state.signup.unsubscribe(&token, now_ms()).await? {
        UnsubscribeOutcome::Unsubscribed | UnsubscribeOutcome::AlreadyGone => page(
            &state,
            StatusCode::OK,
            "unsubscribe.html.j2",
            context! { state => "done" },
        ),
        UnsubscribeOutcome::UnknownToken => invalid_unsubscribe(&state, StatusCode::NOT_FOUND),
    }
}
