//! The studio's items page: the pending and used items, adding, editing and deleting one.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;

use super::{blank, field, field_errors, fields};
use crate::domain::NewItem;
use crate::domain::clock::now_ms;
use crate::http::{AppState, HttpError, RowId, page};

const ITEM_FIELDS: [&str; 4] = ["title", "url", "summary", "source"];

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

pub(super) async fn items(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let csrf = session!(s, headers);
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

pub(super) async fn add_item(
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

pub(super) async fn edit_item(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let csrf = session!(s, headers);
    let item = s.editor.pending_item(&id).await?;
    let values = BTreeMap::from([
        ("title", item.title),
        ("url", item.url),
        ("summary", item.summary),
        ("source", item.source.unwrap_or_default()),
    ]);
    edit_form(&s, &id, csrf, StatusCode::OK, BTreeMap::new(), values).await
}

pub(super) async fn update_item(
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

pub(super) async fn delete_item(
    State(s): State<AppState>,
    RowId(id): RowId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    checked!(s, headers, body);
    s.editor.delete_item(&id).await?;
    Ok(Redirect::to("/admin/items").into_response())
}
