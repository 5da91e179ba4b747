//! The studio's daily schedule page.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::context;

use super::{field, field_errors, fields};
use crate::domain::DailySchedule;
use crate::http::{AppState, HttpError, page};

pub(super) async fn schedule_page(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let csrf = session!(s, headers);
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

pub(super) async fn set_schedule(
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
