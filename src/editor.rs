//! The editors' operations — items, digests, schedule, subscribers — shared by the admin API
//! and the CLI so both behave the same.

use chrono::{DateTime, Utc};

use crate::compose::{Composer, DigestContent};
use crate::domain::clock::{Millis, to_rfc3339};
use crate::domain::{DailySchedule, Invalid, ItemSelection, NewDigest, NewItem, SubscriberStatus};
use crate::render::Rendered;
use crate::store::{DigestRow, ItemRow, Store, StoreError, StoredSchedule, SubscriberRow};

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

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// New subscribers (confirmed import), or confirmations queued (pending import).
    pub added: u64,
    /// Rows whose address was already known and left as it was.
    pub unchanged: u64,
}

#[derive(serde::Deserialize)]
struct CsvRow {
    email: String,
    #[serde(default)]
    name: Option<String>,
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
            .preview(&DigestContent::from(digest))
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

    /// Imports a CSV with an `email` column and an optional `name` column. Every row is
    /// checked first: if any is invalid, nothing is imported and the error lists the lines.
    /// `confirmed`: the operator vouches for consent, the rows become confirmed subscribers;
    /// otherwise each address gets a confirmation email (double opt-in). Known addresses are
    /// never changed: an unsubscribed person is not re-subscribed by an import.
    pub async fn import_csv<R: std::io::Read>(
        &self,
        reader: R,
        confirmed: bool,
        source: &str,
        now: Millis,
    ) -> EditorResult<ImportReport> {
        let invalid = |m: String| EditorError::Invalid(crate::domain::digest::invalid("file", m));
        let mut rows = Vec::new();
        let mut problems = Vec::new();
        let mut csv = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(reader);
        for (i, record) in csv.deserialize::<CsvRow>().enumerate() {
            let line = i + 2; // 1-based, after the header
            let row = match record {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("line {line}: {e}"));
                    continue;
                }
            };
            let email = crate::domain::EmailAddress::parse(&row.email);
            let name = crate::domain::SubscriberName::parse(row.name.as_deref().unwrap_or(""));
            match (email, name) {
                (Ok(e), Ok(n)) => rows.push((e, n)),
                (Err(e), _) => problems.push(format!("line {line}: {e}")),
                (_, Err(e)) => problems.push(format!("line {line}: {e}")),
            }
        }
        if !problems.is_empty() {
            let shown: Vec<_> = problems.iter().take(10).cloned().collect();
            let more = problems.len().saturating_sub(10);
            return Err(invalid(format!(
                "{} rows are not valid, so nothing was imported: {}{}",
                problems.len(),
                shown.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            )));
        }
        let mut report = ImportReport::default();
        if confirmed {
            for chunk in rows.chunks(1000) {
                let added = self.store.import_confirmed(chunk, source, now).await?;
                report.added += added;
                report.unchanged += chunk.len() as u64 - added;
            }
        } else {
            for (email, name) in rows {
                let signup = crate::store::SignUp {
                    email,
                    name,
                    ip: None,
                    user_agent: Some(source.to_owned()),
                };
                let outcome = self.store.sign_up(&signup, now).await?;
                if outcome == crate::domain::subscriber::SignUpOutcome::ConfirmationQueued {
                    report.added += 1;
                } else {
                    report.unchanged += 1;
                }
            }
        }
        Ok(report)
    }

    /// Writes subscribers (all, or of one status) as CSV, with their consent evidence.
    pub async fn export_csv<W: std::io::Write>(
        &self,
        writer: W,
        status: Option<&str>,
    ) -> EditorResult<u64> {
        let io = |e: csv::Error| {
            EditorError::Store(StoreError::Corrupt(format!("cannot write CSV: {e}")))
        };
        let mut out = csv::Writer::from_writer(writer);
        out.write_record([
            "email",
            "name",
            "status",
            "created_at",
            "confirmed_at",
            "consent_at",
            "consent_ip",
            "consent_user_agent",
        ])
        .map_err(io)?;
        let mut after: Option<String> = None;
        let mut n = 0;
        loop {
            let page = self
                .list_subscribers(status, 1000, after.as_deref())
                .await?;
            for s in &page {
                let confirmed = s.confirmed_at.map(to_rfc3339).unwrap_or_default();
                out.write_record([
                    s.email.as_str(),
                    s.name.as_deref().unwrap_or(""),
                    s.status.as_str(),
                    &to_rfc3339(s.created_at),
                    &confirmed,
                    &to_rfc3339(s.consent_at),
                    s.consent_ip.as_deref().unwrap_or(""),
                    s.consent_user_agent.as_deref().unwrap_or(""),
                ])
                .map_err(io)?;
                n += 1;
            }
            match page.last() {
                Some(last) if page.len() == 1000 => after = Some(last.id.clone()),
                _ => break,
            }
        }
        out.flush().map_err(|e| {
            EditorError::Store(StoreError::Corrupt(format!("cannot write CSV: {e}")))
        })?;
        Ok(n)
    }

    /// Erases a subscriber and everything about them.
    pub async fn forget(&self, email: &str) -> EditorResult<()> {
        let email = crate::domain::EmailAddress::parse(email)
            .map_err(|e| crate::domain::digest::invalid("email", e.to_string()))?;
        if self.store.forget(email.as_str()).await? {
            Ok(())
        } else {
            Err(EditorError::NotFound(format!(
                "no subscriber with the address {email}"
            )))
        }
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
