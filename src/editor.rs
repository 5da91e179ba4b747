//! The editors' operations — items, digests, schedule, subscribers — shared by the admin API
//! and the CLI so both behave the same.

use chrono::{DateTime, Utc};

use crate::compose::Composer;
use crate::domain::{DailySchedule, Invalid, ItemSelection, NewDigest, NewItem, SubscriberStatus};
use crate::render::Rendered;
use crate::store::{DigestRow, ItemRow, Millis, Store, StoreError, StoredSchedule, SubscriberRow};

#[derive(Debug, thiserror::Error)]
pub enum EditorError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A template failed to render this digest: fix the template, then preview again.
    #[error("the digest does not render: {0}")]
    Template(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for EditorError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Self::NotFound(m),
            StoreError::Conflict(m) => Self::Conflict(m),
            other => Self::Store(other),
        }
    }
}

pub type EditorResult<T> = Result<T, EditorError>;

/// A digest as editors write it, in JSON (API) or TOML/JSON (CLI file):
/// `{"subject", "intro"?, "items": ["id", …] | "pending"}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestRequest {
    pub subject: String,
    pub intro: Option<String>,
    pub items: ItemsField,
}

#[derive(Debug, serde::Deserialize)]
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
#[derive(Debug, Clone, serde::Serialize)]
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

    pub async fn add_item(&self, item: &NewItem, now: Millis) -> EditorResult<ItemRow> {
        Ok(self.store.add_item(item, now).await?)
    }

    pub async fn list_items(&self, status: Option<&str>) -> EditorResult<Vec<ItemRow>> {
        if let Some(s) = status
            && !matches!(s, "pending" | "used")
        {
            return Err(crate::domain::digest::invalid("status", "must be pending or used").into());
        }
        Ok(self.store.list_items(status).await?)
    }

    pub async fn delete_item(&self, id: &str) -> EditorResult<()> {
        Ok(self.store.delete_item(id).await?)
    }

    pub async fn create_digest(&self, d: &NewDigest, now: Millis) -> EditorResult<DigestRow> {
        Ok(self.store.create_digest(d, None, now).await?)
    }

    pub async fn digest(&self, id: &str) -> EditorResult<DigestRow> {
        self.store
            .digest(id)
            .await?
            .ok_or_else(|| EditorError::NotFound(format!("no digest with id {id}")))
    }

    pub async fn list_digests(&self) -> EditorResult<Vec<DigestRow>> {
        Ok(self.store.list_digests(100).await?)
    }

    /// The HTML or text a sample subscriber would receive.
    pub async fn preview(&self, id: &str, format: PreviewFormat) -> EditorResult<String> {
        let rendered = self.render_sample(&self.digest(id).await?)?;
        Ok(match format {
            PreviewFormat::Html => rendered.html,
            PreviewFormat::Text => rendered.text,
        })
    }

    fn render_sample(&self, digest: &DigestRow) -> EditorResult<Rendered> {
        self.composer
            .preview(digest)
            .map(|(r, _)| r)
            .map_err(|e| EditorError::Template(e.to_string()))
    }

    /// Schedules at `send_at` ("now" or RFC 3339, not in the past), after checking that the
    /// digest renders: a template error never reaches the send stage.
    pub async fn schedule(
        &self,
        id: &str,
        send_at: &str,
        now: DateTime<Utc>,
    ) -> EditorResult<DigestRow> {
        let at = crate::domain::digest::parse_send_at(send_at, now)?;
        let digest = self.digest(id).await?;
        self.render_sample(&digest)?;
        self.store
            .schedule_digest(id, at.timestamp_millis(), now.timestamp_millis())
            .await?;
        self.digest(id).await
    }

    pub async fn cancel(&self, id: &str, now: Millis) -> EditorResult<DigestRow> {
        self.store.cancel_digest(id, now).await?;
        self.digest(id).await
    }

    pub async fn pause(&self, id: &str, reason: &str, now: Millis) -> EditorResult<DigestRow> {
        self.store.pause_digest(id, reason, now).await?;
        self.digest(id).await
    }

    pub async fn resume(&self, id: &str, now: Millis) -> EditorResult<DigestRow> {
        self.store.resume_digest(id, now).await?;
        self.digest(id).await
    }

    pub async fn schedule_view(&self, now: DateTime<Utc>) -> EditorResult<Option<ScheduleView>> {
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
    ) -> EditorResult<ScheduleView> {
        let (handled, _) = s.latest_due(now);
        self.store
            .put_schedule(s, &handled.to_string(), now.timestamp_millis())
            .await?;
        self.schedule_view(now)
            .await?
            .ok_or_else(|| EditorError::Store(StoreError::Corrupt("schedule vanished".into())))
    }

    pub async fn list_subscribers(
        &self,
        status: Option<&str>,
        limit: u32,
        after: Option<&str>,
    ) -> EditorResult<Vec<SubscriberRow>> {
        let status = status
            .map(|s| s.parse::<SubscriberStatus>())
            .transpose()
            .map_err(|_| {
                crate::domain::digest::invalid(
                    "status",
                    "must be pending, confirmed, unsubscribed or bounced",
                )
            })?;
        Ok(self
            .store
            .list_subscribers(status, limit.clamp(1, 1000), after)
            .await?)
    }
}
