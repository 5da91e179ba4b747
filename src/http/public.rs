//! What a subscriber meets: the sign-up form, confirmation (a GET shows the button, the POST
//! confirms), their manage page (name, data export) and one-click unsubscribe.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use minijinja::context;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::ApiQuery;
use super::error::ErrorBody;
use super::{AppState, BODY_LIMIT, HttpError, page, same_origin, wants_json};
use crate::domain::clock::now_ms;
use crate::domain::timezone::subscriber_zone;
use crate::domain::{EmailAddress, SubscriberName, Token};
use crate::service::signup::{ConfirmOutcome, SignUp, Subscriber, UnsubscribeOutcome};

const MAX_USER_AGENT: usize = 512;

/// The documented routes (from each handler's `#[utoipa::path]`) and the two pages that are
/// not API: the sign-up form and its script (listed in `http::PAGES`).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/", get(index))
        // test_send::PAGE, written out: the route-parity test reads the paths as literals.
        .route("/test-email", get(test_email).post(test_email))
        .route("/assets/timezone.js", get(timezone_script))
        .routes(routes!(subscribe))
        .routes(routes!(confirm_page, confirm))
        .routes(routes!(manage_page, manage))
        .routes(routes!(export))
        .routes(routes!(unsubscribe_page, unsubscribe))
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

/// A sign-up, as JSON or as the form's fields.
#[derive(Debug, Deserialize, ToSchema)]
struct SubscribeRequest {
    #[schema(example = "reader@example.com")]
    email: String,
    #[serde(default)]
    #[schema(example = "Ada")]
    name: Option<String>,
    /// The browser's zone (the form's hidden field) or a JSON client's.
    #[serde(default)]
    #[schema(example = "Europe/Paris")]
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

/// What a JSON client is told of a sign-up, whatever the address's state.
#[derive(Serialize, ToSchema)]
struct SignUpAccepted {
    /// Always `accepted`.
    status: &'static str,
    message: &'static str,
}

/// Signs up an address: a confirmation email is sent (double opt-in). The answer is the same
/// whatever the address's state. JSON clients (by `Accept` or a JSON body) get JSON; a form
/// post gets a page.
#[utoipa::path(post, path = "/subscribe", tag = "public",
    request_body(content(
        (SubscribeRequest = "application/json"),
        (SubscribeRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 202, description = "Accepted: a confirmation link is on its way if the address can receive it",
            content((SignUpAccepted = "application/json"), (String = "text/html"))),
        (status = 422, description = "The address or name is not acceptable", body = ErrorBody),
        (status = 429, description = "Too many sign-ups from this address; see Retry-After", body = ErrorBody),
    ))]
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
            Json(SignUpAccepted {
                status: "accepted",
                message: "If this address can receive the newsletter, a confirmation link is on its way.",
            }),
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TokenQuery {
    /// The token from the email's link.
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
#[utoipa::path(get, path = "/confirm", tag = "public", params(TokenQuery),
    responses(
        (status = 200, description = "The confirm button, or: already confirmed", body = String, content_type = "text/html"),
        (status = 400, description = "No token, or not a token", body = String, content_type = "text/html"),
        (status = 404, description = "The link is unknown or expired", body = String, content_type = "text/html"),
    ))]
async fn confirm_page(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TokenQuery>,
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
#[utoipa::path(post, path = "/confirm", tag = "public", params(TokenQuery),
    responses(
        (status = 200, description = "Confirmed (idempotent)", body = String, content_type = "text/html"),
        (status = 400, description = "No token, or not a token", body = String, content_type = "text/html"),
        (status = 403, description = "Not sent from the list's own pages (Origin or Referer)", body = ErrorBody),
        (status = 404, description = "The link is unknown or expired", body = String, content_type = "text/html"),
    ))]
async fn confirm(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TokenQuery>,
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

/// The manage page's form.
#[derive(Debug, Deserialize, ToSchema)]
struct ManageForm {
    /// The new name; blank clears it.
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
#[utoipa::path(get, path = "/manage", tag = "public", params(TokenQuery),
    responses(
        (status = 200, description = "The subscriber's page", body = String, content_type = "text/html"),
        (status = 400, description = "No token, or not a token", body = String, content_type = "text/html"),
        (status = 404, description = "Unknown token", body = String, content_type = "text/html"),
    ))]
async fn manage_page(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TokenQuery>,
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
#[utoipa::path(post, path = "/manage", tag = "public", params(TokenQuery),
    request_body(content = ManageForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Saved", body = String, content_type = "text/html"),
        (status = 400, description = "No token, not a token, or not a form", body = String, content_type = "text/html"),
        (status = 403, description = "Not sent from the list's own pages (Origin or Referer)", body = ErrorBody),
        (status = 404, description = "Unknown token", body = String, content_type = "text/html"),
        (status = 422, description = "The name is not acceptable", body = String, content_type = "text/html"),
    ))]
async fn manage(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TokenQuery>,
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
#[utoipa::path(get, path = "/manage/export", tag = "public", params(TokenQuery),
    responses(
        (status = 200, description = "Everything kept about the subscriber, as a download", body = Object),
        (status = 400, description = "No token, or not a token", body = String, content_type = "text/html"),
        (status = 404, description = "Unknown token", body = String, content_type = "text/html"),
    ))]
async fn export(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TokenQuery>,
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
#[utoipa::path(get, path = "/unsubscribe", tag = "public", params(TokenQuery),
    responses(
        (status = 200, description = "The unsubscribe button", body = String, content_type = "text/html"),
        (status = 400, description = "No token, or not a token", body = String, content_type = "text/html"),
        (status = 404, description = "Unknown token", body = String, content_type = "text/html"),
    ))]
async fn unsubscribe_page(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TokenQuery>,
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

/// RFC 8058's one-click body, for the document: the handler takes any body.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
struct OneClick {
    #[serde(rename = "List-Unsubscribe")]
    #[schema(example = "One-Click")]
    list_unsubscribe: Option<String>,
}

/// RFC 8058 one-click: the POST itself is the request, whatever its body (the standard
/// `List-Unsubscribe=One-Click`, form-encoded or multipart, or the page's button). Answers
/// 200 with a page, never a redirect; idempotent.
#[utoipa::path(post, path = "/unsubscribe", tag = "public", params(TokenQuery),
    request_body(description = "Any body: RFC 8058's `List-Unsubscribe=One-Click`, or none",
        content = Option<OneClick>, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Unsubscribed (idempotent)", body = String, content_type = "text/html"),
        (status = 400, description = "No token, or not a token", body = String, content_type = "text/html"),
        (status = 404, description = "Unknown token", body = String, content_type = "text/html"),
    ))]
async fn unsubscribe(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TokenQuery>,
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

#[cfg(test)]
mod tests {
    /// The route is written out for the route-parity test; the links in test emails use the
    /// constant.
    #[test]
    fn the_test_email_route_is_where_test_emails_link() {
        assert_eq!(crate::domain::test_send::PAGE, "/test-email");
    }
}
