//! The editor's studio under /admin: items, digests (create, edit a draft, preview, send a
//! test, schedule, cancel, pause, resume) and the daily schedule, as server-rendered pages with plain forms. Behind the dashboard's
//! login; every state-changing form passes the dashboard's one check (`checked_form`: the
//! session's CSRF token and the same-origin guard). GET never changes state.
//!
//! Here: the routes and what the pages share (reading a form, the session, the check); the
//! pages in studio/: items.rs, digests.rs, schedule.rs.

use std::collections::BTreeMap;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use minijinja::context;

use super::dashboard::{disabled, session_id};
use super::{AppState, HttpError, page};
use crate::domain::clock::now_ms;
use crate::service::ServiceError;

/// Runs `$form` only after the dashboard's check of a state-changing form.
macro_rules! checked {
    ($s:expr, $headers:expr, $body:expr) => {
        if let Err(refused) = $crate::http::dashboard::checked_form(&$s, &$headers, &$body).await? {
            return Ok(refused.answer(&$s));
        }
    };
}

/// The live session's CSRF token; without one, returns the answer to give instead (the
/// login page, or the page that says the studio is off).
macro_rules! session {
    ($s:expr, $headers:expr) => {
        match $crate::http::studio::logged_in(&$s, &$headers).await? {
            Ok(csrf) => csrf,
            Err(answer) => return Ok(answer),
        }
    };
}

mod digests;
mod items;
mod schedule;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/items", get(items::items).post(items::add_item))
        .route("/admin/items/{id}/delete", post(items::delete_item))
        .route(
            "/admin/items/{id}",
            get(items::edit_item).post(items::update_item),
        )
        .route(
            "/admin/digests",
            get(digests::digests).post(digests::create_digest),
        )
        .route("/admin/digests/{id}", get(digests::digest))
        .route("/admin/digests/{id}/edit", post(digests::edit_digest))
        .route("/admin/digests/{id}/test", post(digests::send_test))
        .route("/admin/digests/{id}/send-now", post(digests::send_now))
        .route("/admin/digests/{id}/schedule", post(digests::schedule))
        .route("/admin/digests/{id}/cancel", post(digests::cancel))
        .route("/admin/digests/{id}/pause", post(digests::pause))
        .route("/admin/digests/{id}/resume", post(digests::resume))
        .route(
            "/admin/schedule",
            get(schedule::schedule_page).post(schedule::set_schedule),
        )
}

/// The form's fields, by name, in the order sent (a name may repeat).
fn fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Empty values for a fresh form.
fn blank(names: &[&'static str]) -> BTreeMap<&'static str, String> {
    names.iter().map(|n| (*n, String::new())).collect()
}

/// The live session's CSRF token, or the answer to give instead (the login page, or the
/// page that says the studio is off). Pages ask it through `session!`.
async fn logged_in(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<Result<String, Response>, HttpError> {
    if s.settings.admin_token.is_none() {
        return Ok(Err(disabled(s)?));
    }
    let csrf = match session_id(headers) {
        Some(id) => s.sessions.csrf(&id, now_ms()).await?,
        None => None,
    };
    match csrf {
        Some(csrf) => Ok(Ok(csrf)),
        None => Ok(Err(page(
            s,
            StatusCode::UNAUTHORIZED,
            "admin_login.html.j2",
            context! {},
        )?)),
    }
}

/// A rule the editor broke, as `{field: message}` for the page; any other error goes on.
fn field_errors(e: ServiceError) -> Result<BTreeMap<&'static str, String>, HttpError> {
    match e {
        ServiceError::Invalid(inv) => Ok(BTreeMap::from([(inv.field, inv.message)])),
        other => Err(other.into()),
    }
}
