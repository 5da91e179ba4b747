//! What a subscriber meets: the sign-up form, confirmation (a GET shows the button, the POST
//! confirms), their manage page (name, data export) and one-click unsubscribe.

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

use super::{AppState, BODY_LIMIT, HttpError, page, same_origin, wants_json};
use crate::domain::clock::now_ms;
use crate::domain::timezone::subscriber_zone;
use crate::domain::{EmailAddress, SubscriberName, Token, test_send};
use crate::service::signup::{ConfirmOutcome, SignUp, Subscriber, UnsubscribeOutcome};

const MAX_USER_AGENT: usize = 512;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/subscribe", post(subscribe))
        .route("/confirm", get(confirm_page).post(confirm))
        .route("/manage", get(manage_page).post(manage))
        .route("/manage/export", get(export))
        .route("/unsubscribe", get(unsubscribe_page).post(unsubscribe))
        .route(test_send::PAGE, get(test_email).post(test_email))
        .route("/assets/timezone.js", get(timezone_script))
}

/// The sign-up form's one script (a file, not inline: the pages' Content Security Policy
/// allows `script-src 'self'` only).
async fn timezone_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("assets/timezone.js"),
    )
        .into_response()
}

/// Where a test email's unsubscribe and manage links (and its List-Unsubscribe, which a
/// mail client may POST to) lead: a page that says it was a test, for GET and POST alike;
/// nothing changes, since a test carries no subscriber's token.
async fn test_email(State(state): State<AppState>) -> Result<Response, HttpError> {
    page(
        &state,
        StatusCode::OK,
        "unsubscribe.html.j2",
        context! { state => "test" },
    )
}

async fn index(State(state): State<AppState>) -> Result<Response, HttpError> {
    page(&state, StatusCode::OK, "index.html.j2", context! {})
}

#[derive(Debug, Deserialize)]
struct SubscribeRequest {
    email: String,
    #[serde(default)]
    name: Option<String>,
    /// The browser's zone (the form's hidden field) or a JSON client's.
    #[serde(default)]
    timezone: Option<String>,
}

/// A sign-up's fields once they are known to be well-formed.
struct NewSubscriber {
    email: EmailAddress,
    name: Option<SubscriberName>,
    /// An unknown zone is the list's (`None`), never a refused sign-up.
    timezone: Option<chrono_tz::Tz>,
}

/// The edge converts: a well-formed address and name, or the field at fault and why.
impl TryFrom<&SubscribeRequest> for NewSubscriber {
    type Error = (&'static str, String);

    fn try_from(request: &SubscribeRequest) -> Result<Self, Self::Error> {
        let email = EmailAddress::parse(&request.email).map_err(|e| ("email", e.to_string()))?;
        let name = SubscriberName::parse(request.name.as_deref().unwrap_or(""))
            .map_err(|e| ("name", e.to_string()))?;
        let timezone = subscriber_zone(request.timezone.as_deref());
        Ok(Self {
            email,
            name,
            timezone,
        })
    }
}

/// A refused sign-up: JSON for JSON clients; for a browser, the form again with the reason
/// next to the field at fault and what they typed (escaped on render), with the same status.
fn refuse_sign_up(
    state: &AppState,
    json_client: bool,
    error: HttpError,
    typed: Option<SubscribeRequest>,
) -> Result<Response, HttpError> {
    if json_client || error.status().is_server_error() {
        return Err(error);
    }
    let status = error.status();
    let (field, message) = match &error {
        HttpError::Unprocessable { field, message } => {
            (*field, format!("Please check the {field}: {message}."))
        }
        HttpError::TooManyRequests { retry_after } => (
            "",
            format!(
                "Too many sign-ups from your address; please try again in {retry_after} seconds."
            ),
        ),
        other => ("", format!("The sign-up could not be read: {other}.")),
    };
    let typed = typed.unwrap_or(SubscribeRequest {
        email: String::new(),
        name: None,
        timezone: None,
    });
    let mut response = page(
        state,
        status,
        "index.html.j2",
        context! {
            error => message,
            error_field => field,
            email => typed.email,
            name => typed.name.unwrap_or_default(),
        },
    )?;
    if let HttpError::TooManyRequests { retry_after } = error {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after.into());
    }
    Ok(response)
}

async fn subscribe(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let ip = peer.ip();
    let json_client = wants_json(&headers);
    if let Err(e) = check_rate(&state, ip) {
        return refuse_sign_up(&state, json_client, e, None);
    }
    let request = match read_sign_up(&headers, body) {
        Ok(r) => r,
        Err(e) => return refuse_sign_up(&state, json_client, e, None),
    };
    let NewSubscriber {
        email,
        name,
        timezone,
    } = match NewSubscriber::try_from(&request) {
        Ok(v) => v,
        Err((field, message)) => {
            let e = HttpError::Unprocessable { field, message };
            return refuse_sign_up(&state, json_client, e, Some(request));
        }
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
        timezone,
    };
    let outcome = state.signup.subscribe(&signup, now_ms()).await?;
    tracing::debug!(?outcome, "sign-up");

    // The same answer whatever the address's state: the form must not reveal who is subscribed.
    match json_client {
        true => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "accepted",
                "message": "If this address can receive the newsletter, a confirmation link is on its way.",
            })),
        )
            .into_response()),
        false => page(&state, StatusCode::ACCEPTED, "subscribed.html.j2", context! {}),
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
) -> Result<SubscribeRequest, HttpError> {
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
        "application/json" => serde_json::from_slice(&body)
            .map_err(|e| HttpError::BadRequest(format!("invalid JSON body: {e}"))),
        "application/x-www-form-urlencoded" => serde_urlencoded::from_bytes(&body)
            .map_err(|e| HttpError::BadRequest(format!("invalid form body: {e}"))),
        _ => Err(HttpError::UnsupportedMediaType(
            "send the sign-up as application/json or application/x-www-form-urlencoded".into(),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn confirm_invalid(state: &AppState, status: StatusCode) -> Result<Response, HttpError> {
    page(
        state,
        status,
        "confirm.html.j2",
        context! { state => "invalid", valid_for => &state.settings.confirmation_valid_for },
    )
}

fn confirmed(state: &AppState) -> Result<Response, HttpError> {
    page(
        state,
        StatusCode::OK,
        "confirm.html.j2",
        context! { state => "confirmed" },
    )
}

/// GET (and HEAD) of the link in the confirmation email changes nothing: mail filters fetch
/// every link of every message, so this shows the one button that confirms (a POST to the
/// same address). A link that can no longer confirm says so as before.
async fn confirm_page(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> Result<Response, HttpError> {
    let Some(token) = q.token.as_deref().and_then(|t| Token::parse(t).ok()) else {
        return confirm_invalid(&state, StatusCode::BAD_REQUEST);
    };
    match state.signup.confirmation_status(&token, now_ms()).await? {
        ConfirmOutcome::Confirmed => page(
            &state,
            StatusCode::OK,
            "confirm.html.j2",
            context! { state => "ask", action => format!("?token={}", token.as_str()) },
        ),
        ConfirmOutcome::AlreadyConfirmed => confirmed(&state),
        ConfirmOutcome::Invalid => confirm_invalid(&state, StatusCode::NOT_FOUND),
    }
}

/// The button's POST confirms; again, the same page (idempotent).
async fn confirm(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    _body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    same_origin(&state, &headers)?;
    let Some(token) = q.token.as_deref().and_then(|t| Token::parse(t).ok()) else {
        return confirm_invalid(&state, StatusCode::BAD_REQUEST);
    };
    match state.signup.confirm(&token, now_ms()).await? {
        ConfirmOutcome::Confirmed | ConfirmOutcome::AlreadyConfirmed => confirmed(&state),
        ConfirmOutcome::Invalid => confirm_invalid(&state, StatusCode::NOT_FOUND),
    }
}

#[derive(Debug, Deserialize)]
struct ManageForm {
    #[serde(default)]
    name: Option<String>,
}

/// The manage page for the subscriber whose token this is, with an optional notice or error.
fn manage_view(
    state: &AppState,
    status: StatusCode,
    token: &Token,
    s: &Subscriber,
    extra: minijinja::Value,
) -> Result<Response, HttpError> {
    let t = token.as_str();
    page(
        state,
        status,
        "manage.html.j2",
        context! {
            state => "show",
            email => &s.email,
            name => s.name.as_deref().unwrap_or(""),
            status => s.status.as_str(),
            action => format!("?token={t}"),
            export_url => format!("manage/export?token={t}"),
            unsubscribe_action => format!("unsubscribe?token={t}"),
            ..extra
        },
    )
}

/// The subscriber's own page, by the token of every email's links: GET shows it.
async fn manage_page(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> Result<Response, HttpError> {
    let Some(token) = unsubscribe_token(&q) else {
        return invalid_unsubscribe(&state, StatusCode::BAD_REQUEST);
    };
    match state.signup.subscriber_by_token(&token).await? {
        Some(s) => manage_view(&state, StatusCode::OK, &token, &s, context! {}),
        None => invalid_unsubscribe(&state, StatusCode::NOT_FOUND),
    }
}

/// The manage page's form: changes the name (blank clears it).
async fn manage(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    same_origin(&state, &headers)?;
    let Some(token) = unsubscribe_token(&q) else {
        return invalid_unsubscribe(&state, StatusCode::BAD_REQUEST);
    };
    let Some(subscriber) = state.signup.subscriber_by_token(&token).await? else {
        return invalid_unsubscribe(&state, StatusCode::NOT_FOUND);
    };
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::PayloadTooLarge { limit: BODY_LIMIT }
        } else {
            HttpError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })?;
    let form: ManageForm = serde_urlencoded::from_bytes(&body)
        .map_err(|e| HttpError::BadRequest(format!("invalid form body: {e}")))?;
    let typed = form.name.unwrap_or_default();
    let name = match SubscriberName::parse(&typed) {
        Ok(name) => name,
        Err(e) => {
            let mut shown = subscriber;
            shown.name = Some(typed);
            return manage_view(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                &token,
                &shown,
                context! { error => format!("Please check the name: {e}.") },
            );
        }
    };
    if !state.signup.rename(&token, name.as_ref(), now_ms()).await? {
        return invalid_unsubscribe(&state, StatusCode::NOT_FOUND);
    }
    let mut shown = subscriber;
    shown.name = name.map(|n| n.as_str().to_owned());
    let saved = match shown.name {
        Some(_) => "Your name is saved.",
        None => "Your name is removed.",
    };
    manage_view(&state, StatusCode::OK, &token, &shown, context! { saved })
}

/// What Squeeze keeps about the subscriber whose token this is, as a JSON download.
async fn export(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> Result<Response, HttpError> {
    let Some(token) = unsubscribe_token(&q) else {
        return invalid_unsubscribe(&state, StatusCode::BAD_REQUEST);
    };
    let Some(data) = state.signup.personal_data(&token, now_ms()).await? else {
        return invalid_unsubscribe(&state, StatusCode::NOT_FOUND);
    };
    let json = serde_json::to_vec_pretty(&data).map_err(HttpError::internal)?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"my-subscription-data.json\"",
            ),
        ],
        json,
    )
        .into_response())
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
