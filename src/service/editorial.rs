//! The editors' use cases: items, digests (create, preview, schedule, cancel, pause, resume)
//! and the daily schedule, shared by the admin API, the dashboard and the CLI.

use chrono::{DateTime, Utc};

use super::{ServiceError, ServiceResult};
use crate::compose::{Composer, DigestContent};
use crate::domain::clock::Millis;
use crate::domain::{DailySchedule, Invalid, ItemSelection, NewDigest, NewItem};
use crate::render::Rendered;
use crate::store::{DigestRow, ItemRow, Store, StoreError, StoredSchedule};

/// A digest as editors write it, in JSON (API) or TOML/JSON (CLI file):
/// `{"subject", "intro"?, "items": ["id", …] | "pending"}`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DigestRequest {
    #[schema(example = "This week in Rust")]
    pub subject: String,
    #[schema(example = "Hello! Here is what happened.")]
    pub intro: Option<String>,
    /// Item ids, or `"pending"`: every pending item.
    #[schema(example = "pending")]
    pub items: ItemsField,
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ItemsField {
    Ids(Vec<String>),
    Word(String),
}

impl DigestRequest {
    pub fn parse(self) -> Result<NewDigest, Invalid> {
        let items = match self.items {
            ItemsField::Ids(ids) => ItemSelection::Ids(ids),
            ItemsField::Word(w) if w == "pending" => ItemSelection::Pending,
            ItemsField::Word(_) => {
                return Err(crate::domain::digest::invalid(
                    "items",
                    "must be a list of item ids or \"pending\"",
                ));
            }
        };
        NewDigest::parse(&self.subject, self.intro.as_deref(), items)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewFormat {
    Html,
    Text,
}

/// The daily schedule as editors see it, with its next firing.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub time: String,
    pub timezone: String,
    pub enabled: bool,
    pub next_run: Option<String>,
    pub last_handled_date: Option<String>,
}

impl ScheduleView {
    fn new(s: &StoredSchedule, now: DateTime<Utc>) -> Self {
        Self {
            time: s.schedule.time_str(),
            timezone: s.schedule.timezone.name().to_owned(),
            enabled: s.schedule.enabled,
            next_run: s
                .schedule
                .enabled
                .then(|| s.schedule.next_after(now).to_rfc3339()),
            last_handled_date: s.last_date.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Editor {
    store: Store,
    composer: Composer,
}

impl Editor {
    pub fn new(store: Store, composer: Composer) -> Self {
        Self { store, composer }
    }

    pub async fn add_item(&self, item: &NewItem, now: Millis) -> ServiceResult<ItemRow> {
        Ok(self.store.add_item(item, now).await?)
    }

    pub async fn list_items(&self, status: Option<&str>) -> ServiceResult<Vec<ItemRow>> {
        if let Some(s) = status
            && !matches!(s, "pending" | "used")
        {
            return Err(crate::domain::digest::invalid("status", "must be pending or used").into());
        }
        Ok(self.store.list_items(status).await?)
    }

    pub async fn update_item(&self, id: &str, item: &NewItem) -> ServiceResult<()> {
        Ok(self.store.update_item(id, item).await?)
    }

    /// A pending item, for its edit form.
    pub async fn pending_item(&self, id: &str) -> ServiceResult<ItemRow> {
        self.store
            .list_items(Some("pending"))
            .await?
            .into_iter()
            .find(|i| i.id == id)
            .ok_or_else(|| ServiceError::NotFound(format!("no pending item with id {id}")))
    }

    pub async fn delete_item(&self, id: &str) -> ServiceResult<()> {
        Ok(self.store.delete_item(id).await?)
    }

    pub async fn create_digest(&self, d: &NewDigest, now: Millis) -> ServiceResult<DigestRow> {
        Ok(self.store.create_digest(d, None, now).await?)
    }

    pub async fn digest(&self, id: &str) -> ServiceResult<DigestRow> {
        self.store
            .digest(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no digest with id {id}")))
    }

    pub async fn list_digests(&self) -> ServiceResult<Vec<DigestRow>> {
        Ok(self.store.list_digests(100).await?)
    }

    /// The HTML or text a sample subscriber would receive.
    pub async fn preview(&self, id: &str, format: PreviewFormat) -> ServiceResult<String> {
        let rendered = self.render_sample(&self.digest(id).await?)?;
        Ok(match format {
            PreviewFormat::Html => rendered.html,
            PreviewFormat::Text => rendered.text,
        })
    }

    fn render_sample(&self, digest: &DigestRow) -> ServiceResult<Rendered> {
        self.composer
            .preview(&DigestContent::from(digest))
            .map(|(r, _)| r)
            .map_err(|e| ServiceError::Template(e.to_string()))
    }

    /// Schedules at `send_at` ("now" or RFC 3339, not in the past), after checking that the
    /// digest renders: a template error never reaches the send stage.
    pub async fn schedule(
        &self,
        id: &str,
        send_at: &str,
        now: DateTime<Utc>,
    ) -> ServiceResult<DigestRow> {
        let at = crate::domain::digest::parse_send_at(send_at, now)?;
        let digest = self.digest(id).await?;
        self.render_sample(&digest)?;
        self.store
            .schedule_digest(id, at.timestamp_millis(), now.timestamp_millis())
            .await?;
        self.digest(id).await
    }

    /// The list's timezone: the daily schedule's, UTC while there is none.
    pub async fn list_timezone(&self) -> ServiceResult<chrono_tz::Tz> {
        Ok(self
            .store
            .schedule()
            .await?
            .map_or(chrono_tz::Tz::UTC, |s| s.schedule.timezone))
    }

    /// Schedules at a wall time typed in a browser (`datetime-local`), read in the list's
    /// timezone.
    pub async fn schedule_local(
        &self,
        id: &str,
        local: &str,
        now: DateTime<Utc>,
    ) -> ServiceResult<DigestRow> {
        let tz = self.list_timezone().await?;
        let at = crate::domain::digest::parse_local_send_at(local, tz, now)?;
        self.schedule(id, &at.to_rfc3339(), now).await
    }

    pub async fn cancel(&self, id: &str, now: Millis) -> ServiceResult<DigestRow> {
        self.store.cancel_digest(id, now).await?;
        self.digest(id).await
    }

    pub async fn pause(&self, id: &str, reason: &str, now: Millis) -> ServiceResult<DigestRow> {
        self.store.pause_digest(id, reason, now).await?;
        self.digest(id).await
    }

    pub async fn resume(&self, id: &str, now: Millis) -> ServiceResult<DigestRow> {
        self.store.resume_digest(id, now).await?;
        self.digest(id).await
    }

    pub async fn schedule_view(&self, now: DateTime<Utc>) -> ServiceResult<Option<ScheduleView>> {
        Ok(self
            .store
            .schedule()
            .await?
            .map(|s| ScheduleView::new(&s, now)))
    }

    /// Sets the daily schedule. The firing already due when it is set does not go out at
    /// once: the first digest is the next one.
    pub async fn set_schedule(
        &self,
        s: &DailySchedule,
        now: DateTime<Utc>,
    ) -> ServiceResult<ScheduleView> {
        let (handled, _) = s.latest_due(now);
        self.store
            .put_schedule(s, &handled.to_string(), now.timestamp_millis())
            .await?;
        self.schedule_view(now)
            .await?
            .ok_or_else(|| ServiceError::Store(StoreError::Corrupt("schedule vanished".into())))
    }
}
