//! The studio's digests: the list and a new draft, a digest's page (edit, preview, test,
//! schedule, send now, cancel, pause, resume).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::context;

use super::{blank, field, field_errors, fields};
use crate::domain::clock::now_ms;
use crate::domain::digest::{Change, DigestAction};
use crate::domain::test_send::TestAddresses;
use crate::domain::{ItemSelection, NewDigest};
use crate::http::{AppState, HttpError, RowId, page};
use crate::service::{PreviewFormat, ServiceError};

const DIGEST_FIELDS: [&str; 2] = ["subject", "intro"];

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

pub(super) async fn digests(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let csrf = session!(s, headers);
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

pub(super) async fn create_digest(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    let f = fields(&body);
    let (typed, parsed) = digest_form(&f);
    let created = match parsed {
        Ok(d) => s.editor.create_digest(&d, now_ms()).await,
        Err(inv) => Err(inv.into()),
    };
    match created {
        Ok(d) => Ok(Redirect::to(&format!("/admin/digests/{}", d.id)).into_response()),
        Err(e) => {
            let errors = field_errors(e)?;
            let csrf = field(&f, "csrf").to_owned();
            digests_page(&s, csrf, StatusCode::UNPROCESSABLE_ENTITY, errors, typed).await
        }
    }
}

/// A digest form as posted: the subject and intro as typed (shown again with the errors)
/// and what the form parses to. One reading for creating and editing.
fn digest_form(f: &[(String, String)]) -> (Typed, Result<NewDigest, crate::domain::Invalid>) {
    let (subject, intro) = (field(f, "subject"), field(f, "intro"));
    let parsed = NewDigest::parse(subject, Some(intro), ItemSelection::Ids(chosen_items(f)));
    let typed = Typed::from([("subject", subject.to_owned()), ("intro", intro.to_owned())]);
    (typed, parsed)
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
    // The Cancel button, where the one rule lets it do something (a sending digest too).
    let may_cancel = matches!(
        digest.status.decide(DigestAction::Cancel, None),
        Ok(Change::To(_))
    );
    page(
        s,
        status,
        "studio_digest.html.j2",
        context! { csrf, items => &digest.items, pending, digest, html, text, timezone, stats, tests, errors, values, may_cancel, nav => "digests" },
    )
}

pub(super) async fn digest(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let csrf = session!(s, headers);
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

pub(super) async fn edit_digest(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    let f = fields(&body);
    let (typed, parsed) = digest_form(&f);
    let edited = match parsed {
        Ok(d) => s.editor.edit_digest(&id, &d, now_ms()).await.map(|_| ()),
        Err(inv) => Err(inv.into()),
    };
    after(&s, &id, &f, edited, typed).await
}

pub(super) async fn send_test(
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

pub(super) async fn send_now(
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

pub(super) async fn schedule(
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

pub(super) async fn cancel(
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

pub(super) async fn pause(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    s.editor.pause(&id, "paused by an editor", now_ms()).await?;
    Ok(back_to(&fields(&body), &id).into_response())
}

pub(super) async fn resume(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    s.editor.resume(&id, now_ms()).await?;
    Ok(back_to(&fields(&body), &id).into_response())
}
