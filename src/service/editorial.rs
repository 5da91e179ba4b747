//! The editors' use cases: items, digests (create, preview, schedule, cancel, pause, resume)
//! and the daily schedule, shared by the admin API, the dashboard and the CLI.

use chrono::{DateTime, Utc};

use super::{ServiceError, ServiceResult};
use crate::compose::{Composer, DigestContent};
use crate::domain::clock::Millis;
use crate::domain::test_send::{self, TestAddresses};
use crate::domain::timezone::{local_instant, wave_zones};
use crate::domain::{DailySchedule, DeliverAt, Invalid, ItemSelection, NewDigest, NewItem};
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

    /// The same for an edit, which names its items in their new order.
    pub fn parse_edit(self) -> Result<NewDigest, Invalid> {
        let d = self.parse()?;
        if d.items == ItemSelection::Pending {
            return Err(crate::domain::digest::invalid(
                "items",
                "an edit lists its item ids in order (\"pending\" is only for a new digest)",
            ));
        }
        Ok(d)
    }
}

/// The addresses of a test send, in JSON: `{"addresses": ["a@example.com", …]}`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    pub addresses: Vec<String>,
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
    /// `list` (everyone at `time` in `timezone`) or `subscriber` (everyone at `time` in their
    /// own zone, one wave per zone).
    pub deliver_at: &'static str,
    /// The next firing: delivering at each subscriber's time, the first wave (the earliest
    /// zone's), when the day's digest is made.
    pub next_run: Option<String>,
    pub last_handled_date: Option<String>,
}

impl ScheduleView {
    fn new(s: &StoredSchedule, zones: &[chrono_tz::Tz], now: DateTime<Utc>) -> Self {
        Self {
            time: s.schedule.time_str(),
            timezone: s.schedule.timezone.name().to_owned(),
            enabled: s.schedule.enabled,
            deliver_at: s.schedule.deliver_at.as_str(),
            next_run: s
                .schedule
                .enabled
                .then(|| s.schedule.next_after_among(now, zones).to_rfc3339()),
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

    /// The latest digests, each delivered at its subscribers' own time with its waves.
    pub async fn list_digests(&self) -> ServiceResult<Vec<DigestRow>> {
        let mut digests = self.store.list_digests(100).await?;
        for d in digests.iter_mut().filter(|d| d.local_time.is_some()) {
            d.waves = self.store.waves(&d.id).await?;
        }
        Ok(digests)
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

    /// Schedules delivery at `local_time` ("07:00") on `date` ("2026-12-02") in each
    /// subscriber's own zone (the list's for those without one): it fans out when the
    /// earliest zone's time comes, each zone's wave queued at its own time.
    pub async fn schedule_waves(
        &self,
        id: &str,
        local_time: &str,
        date: &str,
        now: DateTime<Utc>,
    ) -> ServiceResult<DigestRow> {
        let (date, time) = crate::domain::digest::parse_local_delivery(local_time, date, now)?;
        let digest = self.digest(id).await?;
        self.render_sample(&digest)?;
        let list = self.list_timezone().await?;
        let (zones, _) = wave_zones(list, &self.store.subscriber_zones().await?);
        let first = zones
            .iter()
            .map(|tz| local_instant(*tz, date, time))
            .min()
            .unwrap_or(now);
        self.store
            .schedule_digest_waves(
                id,
                first.timestamp_millis(),
                &date.to_string(),
                &time.format("%H:%M").to_string(),
                now.timestamp_millis(),
            )
            .await?;
        self.digest(id).await
    }

    /// The zones of the confirmed subscribers and the list's, when `s` delivers at each
    /// subscriber's time; none otherwise.
    async fn zones_for(&self, s: &DailySchedule) -> ServiceResult<Vec<chrono_tz::Tz>> {
        Ok(match s.deliver_at {
            DeliverAt::List => Vec::new(),
            DeliverAt::Subscriber => {
                wave_zones(s.timezone, &self.store.subscriber_zones().await?).0
            }
        })
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

    /// Rewrites a draft (`DigestAction::Edit`: 409 once it is scheduled or sent), after
    /// checking that it renders as it will be.
    pub async fn edit_digest(
        &self,
        id: &str,
        d: &NewDigest,
        now: Millis,
    ) -> ServiceResult<DigestRow> {
        self.store.edit_digest(id, d, now).await?;
        let digest = self.digest(id).await?;
        self.render_sample(&digest)?;
        Ok(digest)
    }

    /// Queues a test of the digest to each address (a draft, a scheduled digest, any not
    /// cancelled), sent by the worker as any email but counted toward nothing; a few
    /// requests a minute per digest (`domain::test_send`).
    pub async fn send_test(
        &self,
        id: &str,
        to: &TestAddresses,
        now: Millis,
    ) -> ServiceResult<usize> {
        self.render_sample(&self.digest(id).await?)?;
        let expires_at = now + crate::domain::clock::ms(test_send::DEADLINE);
        match self
            .store
            .queue_test(id, to.addresses(), expires_at, now)
            .await?
        {
            Ok(()) => Ok(to.addresses().len()),
            Err(retry_after) => Err(ServiceError::Limited {
                message: format!(
                    "at most {} test sends of a digest a minute",
                    test_send::REQUESTS_PER_WINDOW
                ),
                retry_after,
            }),
        }
    }

    /// The latest tests of a digest: (address, delivery status), newest first.
    pub async fn test_sends(&self, id: &str) -> ServiceResult<Vec<(String, String)>> {
        Ok(self.store.test_sends(id).await?)
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
        let Some(s) = self.store.schedule().await? else {
            return Ok(None);
        };
        let zones = self.zones_for(&s.schedule).await?;
        Ok(Some(ScheduleView::new(&s, &zones, now)))
    }

    /// Sets the daily schedule. The firing already due when it is set does not go out at
    /// once: the first digest is the next one.
    pub async fn set_schedule(
        &self,
        s: &DailySchedule,
        now: DateTime<Utc>,
    ) -> ServiceResult<ScheduleView> {
        let zones = self.zones_for(s).await?;
        let (handled, _) = s.latest_due_among(now, &zones);
        self.store
            .put_schedule(s, &handled.to_string(), now.timestamp_millis())
            .await?;
        self.schedule_view(now)
            .await?
            .ok_or_else(|| ServiceError::Store(StoreError::Corrupt("schedule vanished".into())))
    }
}
