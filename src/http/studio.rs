//! The editor's studio under /admin: items, digests (create, edit a draft, preview, send a
//! test, schedule, cancel, pause, resume) and the daily schedule, as server-rendered pages with plain forms. Behind the dashboard's
//! login; every state-changing form passes the dashboard's one check (`checked_form`: the
//! session's CSRF token and the same-origin guard). GET never changes state.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use minijinja::context;

use super::dashboard::{checked_form, disabled, session_id};
use super::{AppState, HttpError, RowId, page};
use crate::domain::clock::now_ms;
use crate::domain::test_send::TestAddresses;
use crate::domain::{DailySchedule, ItemSelection, NewDigest, NewItem};
use crate::service::{PreviewFormat, ServiceError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/items", get(items).post(add_item))
        .route("/admin/items/{id}/delete", post(delete_item))
        .route("/admin/items/{id}", get(edit_item).post(update_item))
        .route("/admin/digests", get(digests).post(create_digest))
        .route("/admin/digests/{id}", get(digest))
        .route("/admin/digests/{id}/edit", post(edit_digest))
        .route("/admin/digests/{id}/test", post(send_test))
        .route("/admin/digests/{id}/send-now", post(send_now))
        .route("/admin/digests/{id}/schedule", post(schedule))
        .route("/admin/digests/{id}/cancel", post(cancel))
        .route("/admin/digests/{id}/pause", post(pause))
        .route("/admin/digests/{id}/resume", post(resume))
        .route("/admin/schedule", get(schedule_page).post(set_schedule))
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

const ITEM_FIELDS: [&str; 4] = ["title", "url", "summary", "source"];
const DIGEST_FIELDS: [&str; 2] = ["subject", "intro"];

/// Empty values for a fresh form.
fn blank(names: &[&'static str]) -> BTreeMap<&'static str, String> {
    names.iter().map(|n| (*n, String::new())).collect()
}

/// The live session's CSRF token, or the answer to give instead (the login page, or the
/// page that says the studio is off).
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

/// Runs `$form` only after the dashboard's check of a state-changing form.
macro_rules! checked {
    ($s:expr, $headers:expr, $body:expr) => {
        if let Err(refused) = checked_form(&$s, &$headers, &$body).await? {
            return Ok(refused.answer(&$s));
        }
    };
}

/// A rule the editor broke, as `{field: message}` for the page; any other error goes on.
fn field_errors(e: ServiceError) -> Result<BTreeMap<&'static str, String>, HttpError> {
    match e {
        ServiceError::Invalid(inv) => Ok(BTreeMap::from([(inv.field, inv.message)])),
        other => Err(other.into()),
    }
}

async fn items_page(
    s: &AppState,
    csrf: String,
    status: StatusCode,
    errors: BTreeMap<&'static str, String>,
    values: BTreeMap<&'static str, String>,
) -> Result<Response, HttpError> {
    let pending = s.editor.list_items(Some("pending")).await?;
    let used = s.editor.list_items(Some("used")).await?;
    page(
        s,
        status,
        "studio_items.html.j2",
        context! { csrf, pending, used, errors, values, nav => "items" },
    )
}

async fn items(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, HttpError> {
    let csrf = match logged_in(&s, &headers).await? {
        Ok(csrf) => csrf,
        Err(answer) => return Ok(answer),
    };
    items_page(
        &s,
        csrf,
        StatusCode::OK,
        BTreeMap::new(),
        blank(&ITEM_FIELDS),
    )
    .await
}

/// An item form as posted: the fields as typed (shown again with the errors) and what they
/// parse to. One reading for adding and editing.
struct ItemForm {
    values: BTreeMap<&'static str, String>,
    parsed: Result<NewItem, crate::domain::Invalid>,
    csrf: String,
}

fn item_form(body: &[u8]) -> ItemForm {
    let f = fields(body);
    let values: BTreeMap<&'static str, String> = ITEM_FIELDS
        .iter()
        .map(|&name| (name, field(&f, name).to_owned()))
        .collect();
    let value = |name: &str| values.get(name).map_or("", String::as_str);
    let parsed = NewItem::parse(
        value("title"),
        value("url"),
        value("summary"),
        Some(value("source")),
    );
    ItemForm {
        parsed,
        csrf: field(&f, "csrf").to_owned(),
        values,
    }
}

async fn add_item(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    let form = item_form(&body);
    let added = match &form.parsed {
        Ok(item) => s.editor.add_item(item, now_ms()).await.map(|_| ()),
        Err(inv) => Err(inv.clone().into()),
    };
    match added {
        Ok(()) => Ok(Redirect::to("/admin/items").into_response()),
        Err(e) => {
            let errors = field_errors(e)?;
            items_page(
                &s,
                form.csrf,
                StatusCode::UNPROCESSABLE_ENTITY,
                errors,
                form.values,
            )
            .await
        }
    }
}

async fn edit_form(
    s: &AppState,
    id: &str,
    csrf: String,
    status: StatusCode,
    errors: BTreeMap<&'static str, String>,
    values: BTreeMap<&'static str, String>,
) -> Result<Response, HttpError> {
    page(
        s,
        status,
        "studio_item.html.j2",
        context! { csrf, id, errors, values, nav => "items" },
    )
}

async fn edit_item(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let csrf = match logged_in(&s, &headers).await? {
        Ok(csrf) => csrf,
        Err(answer) => return Ok(answer),
    };
    let item = s.editor.pending_item(&id).await?;
    let values = BTreeMap::from([
        ("title", item.title),
        ("url", item.url),
        ("summary", item.summary),
        ("source", item.source.unwrap_or_default()),
    ]);
    edit_form(&s, &id, csrf, StatusCode::OK, BTreeMap::new(), values).await
}

async fn update_item(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    let form = item_form(&body);
    let updated = match &form.parsed {
        Ok(item) => s.editor.update_item(&id, item).await,
        Err(inv) => Err(inv.clone().into()),
    };
    match updated {
        Ok(()) => Ok(Redirect::to("/admin/items").into_response()),
        Err(e) => {
            let errors = field_errors(e)?;
            edit_form(
                &s,
                &id,
                form.csrf,
                StatusCode::UNPROCESSABLE_ENTITY,
                errors,
                form.values,
            )
            .await
        }
    }
}

async fn delete_item(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    s.editor.delete_item(&id).await?;
    Ok(Redirect::to("/admin/items").into_response())
}

async fn digests_page(
    s: &AppState,
    csrf: String,
    status: StatusCode,
    errors: BTreeMap<&'static str, String>,
    values: BTreeMap<&'static str, String>,
) -> Result<Response, HttpError> {
    let pending = s.editor.list_items(Some("pending")).await?;
    let all = s.editor.list_digests().await?;
    let (sent, open): (Vec<_>, Vec<_>) = all.into_iter().partition(|d| d.status.as_str() == "sent");
    page(
        s,
        status,
        "studio_digests.html.j2",
        context! { csrf, pending, open, sent, errors, values, nav => "digests" },
    )
}

async fn digests(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, HttpError> {
    let csrf = match logged_in(&s, &headers).await? {
        Ok(csrf) => csrf,
        Err(answer) => return Ok(answer),
    };
    digests_page(
        &s,
        csrf,
        StatusCode::OK,
        BTreeMap::new(),
        blank(&DIGEST_FIELDS),
    )
    .await
}

/// The chosen items (`item` checkboxes), in the order of their `position.<id>` fields (ties
/// and blanks keep the list's order).
fn chosen_items(f: &[(String, String)]) -> Vec<String> {
    let mut chosen: Vec<(i64, usize, String)> = f
        .iter()
        .filter(|(k, _)| k == "item")
        .enumerate()
        .map(|(i, (_, id))| {
            let position = field(f, &format!("position.{id}"))
                .trim()
                .parse()
                .unwrap_or(i64::MAX);
            (position, i, id.clone())
        })
        .collect();
    chosen.sort();
    chosen.into_iter().map(|(_, _, id)| id).collect()
}

async fn create_digest(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    let f = fields(&body);
    let (subject, intro) = (field(&f, "subject"), field(&f, "intro"));
    let created = match NewDigest::parse(subject, Some(intro), ItemSelection::Ids(chosen_items(&f)))
    {
        Ok(d) => s.editor.create_digest(&d, now_ms()).await,
        Err(inv) => Err(inv.into()),
    };
    match created {
        Ok(d) => Ok(Redirect::to(&format!("/admin/digests/{}", d.id)).into_response()),
        Err(e) => {
            let errors = field_errors(e)?;
            let values =
                BTreeMap::from([("subject", subject.to_owned()), ("intro", intro.to_owned())]);
            let csrf = field(&f, "csrf").to_owned();
            digests_page(&s, csrf, StatusCode::UNPROCESSABLE_ENTITY, errors, values).await
        }
    }
}

/// What the digest page's forms show: as stored, or as the editor typed them (with errors).
type Typed = BTreeMap<&'static str, String>;

async fn digest_page(
    s: &AppState,
    id: &str,
    csrf: String,
    status: StatusCode,
    errors: BTreeMap<&'static str, String>,
    typed: Typed,
) -> Result<Response, HttpError> {
    let digest = s.editor.digest(id).await?;
    let html = s.editor.preview(id, PreviewFormat::Html).await?;
    let text = s.editor.preview(id, PreviewFormat::Text).await?;
    let timezone = s.editor.list_timezone().await?.name().to_owned();
    let stats = s.reporting.digest(id).await?;
    let tests = s.editor.test_sends(id).await?;
    // The edit form offers the digest's items first (ticked, in order), then the pending ones.
    let pending = if digest.status.as_str() == "draft" {
        s.editor.list_items(Some("pending")).await?
    } else {
        Vec::new()
    };
    let mut values = BTreeMap::from([
        ("subject", digest.subject.clone()),
        ("intro", digest.intro.clone().unwrap_or_default()),
        ("addresses", String::new()),
    ]);
    values.extend(typed);
    page(
        s,
        status,
        "studio_digest.html.j2",
        context! { csrf, items => &digest.items, pending, digest, html, text, timezone, stats, tests, errors, values, nav => "digests" },
    )
}

async fn digest(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let csrf = match logged_in(&s, &headers).await? {
        Ok(csrf) => csrf,
        Err(answer) => return Ok(answer),
    };
    digest_page(&s, &id, csrf, StatusCode::OK, BTreeMap::new(), Typed::new()).await
}

/// Back to the digest's page after a change, or the page again with the editor's mistake
/// next to its field (and what they typed, `typed`); any other error goes on.
async fn after(
    s: &AppState,
    id: &str,
    f: &[(String, String)],
    done: crate::service::ServiceResult<()>,
    typed: Typed,
) -> Result<Response, HttpError> {
    match done {
        Ok(()) => Ok(Redirect::to(&format!("/admin/digests/{id}")).into_response()),
        Err(e) => {
            let errors = field_errors(e)?;
            let csrf = field(f, "csrf").to_owned();
            digest_page(s, id, csrf, StatusCode::UNPROCESSABLE_ENTITY, errors, typed).await
        }
    }
}

async fn edit_digest(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    let f = fields(&body);
    let (subject, intro) = (field(&f, "subject"), field(&f, "intro"));
    let edited = match NewDigest::parse(subject, Some(intro), ItemSelection::Ids(chosen_items(&f)))
    {
        Ok(d) => s.editor.edit_digest(&id, &d, now_ms()).await.map(|_| ()),
        Err(inv) => Err(inv.into()),
    };
    let typed = Typed::from([("subject", subject.to_owned()), ("intro", intro.to_owned())]);
    after(&s, &id, &f, edited, typed).await
}

async fn send_test(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    let f = fields(&body);
    let typed_addresses = field(&f, "addresses");
    let sent = match TestAddresses::parse_typed(typed_addresses) {
        Ok(to) => s.editor.send_test(&id, &to, now_ms()).await.map(|_| ()),
        Err(inv) => Err(inv.into()),
    };
    let typed = Typed::from([("addresses", typed_addresses.to_owned())]);
    match sent {
        // Too many tests at once is the editor's to wait out: said next to the field.
        Err(ServiceError::Limited {
            message,
            retry_after,
        }) => {
            let errors = BTreeMap::from([(
                "addresses",
                format!("must wait: {message}; try again in {retry_after} seconds"),
            )]);
            let csrf = field(&f, "csrf").to_owned();
            digest_page(&s, &id, csrf, StatusCode::TOO_MANY_REQUESTS, errors, typed).await
        }
        other => after(&s, &id, &f, other, typed).await,
    }
}

async fn send_now(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    let f = fields(&body);
    let done = s.editor.schedule(&id, "now", Utc::now()).await.map(|_| ());
    after(&s, &id, &f, done, Typed::new()).await
}

async fn schedule(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    let f = fields(&body);
    let done = s
        .editor
        .schedule_local(&id, field(&f, "send_at"), Utc::now())
        .await
        .map(|_| ());
    after(&s, &id, &f, done, Typed::new()).await
}

async fn cancel(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    s.editor.cancel(&id, now_ms()).await?;
    Ok(Redirect::to(&format!("/admin/digests/{id}")).into_response())
}

/// Where a pause or resume goes back to: the dashboard when its form says so (a fixed
/// choice, never a URL from the form), else the digest's page.
fn back_to(f: &[(String, String)], id: &str) -> Redirect {
    match field(f, "back") {
        "dashboard" => Redirect::to("/admin"),
        _ => Redirect::to(&format!("/admin/digests/{id}")),
    }
}

async fn pause(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    s.editor.pause(&id, "paused by an editor", now_ms()).await?;
    Ok(back_to(&fields(&body), &id).into_response())
}

async fn resume(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    s.editor.resume(&id, now_ms()).await?;
    Ok(back_to(&fields(&body), &id).into_response())
}

async fn schedule_page(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let csrf = match logged_in(&s, &headers).await? {
        Ok(csrf) => csrf,
        Err(answer) => return Ok(answer),
    };
    schedule_form(&s, csrf, StatusCode::OK, BTreeMap::new(), None).await
}

async fn schedule_form(
    s: &AppState,
    csrf: String,
    status: StatusCode,
    errors: BTreeMap<&'static str, String>,
    typed: Option<BTreeMap<&'static str, String>>,
) -> Result<Response, HttpError> {
    let schedule = s.editor.schedule_view(Utc::now()).await?;
    let values = typed.unwrap_or_else(|| match &schedule {
        Some(v) => BTreeMap::from([
            ("time", v.time.clone()),
            ("timezone", v.timezone.clone()),
            ("enabled", if v.enabled { "on" } else { "" }.to_owned()),
            ("deliver_at", v.deliver_at.to_owned()),
        ]),
        None => BTreeMap::from([
            ("time", "07:00".to_owned()),
            ("timezone", "UTC".to_owned()),
            ("enabled", "on".to_owned()),
            ("deliver_at", "list".to_owned()),
        ]),
    });
    page(
        s,
        status,
        "studio_schedule.html.j2",
        context! { csrf, schedule, values, errors, nav => "schedule" },
    )
}

async fn set_schedule(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    let f = fields(&body);
    let (time, timezone) = (field(&f, "time"), field(&f, "timezone"));
    let enabled = !field(&f, "enabled").is_empty();
    // No field (an older page) is the list's clock.
    let deliver_at = match field(&f, "deliver_at") {
        "" => "list",
        d => d,
    };
    let parsed = DailySchedule::parse(time, timezone, enabled)
        .and_then(|d| crate::domain::DeliverAt::parse(deliver_at).map(|at| d.with_deliver_at(at)));
    let set = match parsed {
        Ok(d) => s.editor.set_schedule(&d, Utc::now()).await.map(|_| ()),
        Err(inv) => Err(inv.into()),
    };
    match set {
        Ok(()) => Ok(Redirect::to("/admin/schedule").into_response()),
        Err(e) => {
            let errors = field_errors(e)?;
            let typed = BTreeMap::from([
                ("time", time.to_owned()),
                ("timezone", timezone.to_owned()),
                ("enabled", if enabled { "on" } else { "" }.to_owned()),
                ("deliver_at", deliver_at.to_owned()),
            ]);
            let csrf = field(&f, "csrf").to_owned();
            schedule_form(
                &s,
                csrf,
                StatusCode::UNPROCESSABLE_ENTITY,
                errors,
                Some(typed),
            )
            .await
        }
    }
}
