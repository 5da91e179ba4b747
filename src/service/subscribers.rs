//! The subscribers as operators handle them: CSV import (double opt-in, or confirmed with
//! documented consent), CSV export with consent evidence, listing, and erasure.

use super::{ServiceError, ServiceResult};
use std::io::{self, Read};

use crate::domain::SubscriberStatus;
use crate::domain::clock::{Millis, to_rfc3339};
use crate::domain::spreadsheet;
use crate::domain::subscriber::SignUpOutcome;
use crate::domain::timezone;
use crate::store::{ImportRow, SignUp, Store, SubscriberRow};

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
    /// The subscriber's own zone; blank or unknown is the list's.
    #[serde(default)]
    timezone: Option<String>,
}

/// The longest line an import accepts: a row is an address and a name, a few hundred bytes;
/// a longer line is not a subscriber list (or has lost its line ends).
pub const IMPORT_MAX_LINE: usize = 64 * 1024;

/// Said when a signal stopped an import while the file was being read.
pub const IMPORT_STOPPED: &str = "stopped by a signal while reading the file; nothing was imported";

/// What `GET /api/subscribers/{email}` shows.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SubscriberHistory {
    pub subscriber: SubscriberRow,
    pub deliveries: Vec<crate::store::HistoryRow>,
    pub bounces: Vec<crate::store::BounceEventRow>,
}

#[derive(Clone)]
pub struct Subscribers {
    store: Store,
    import_max_bytes: u64,
}

/// A reader that refuses more than `max_bytes` in all or a line over [`IMPORT_MAX_LINE`], and
/// stops when `stop` says so: the CSV parser reads through it in small blocks.
struct Bounded<'a, R> {
    inner: R,
    max_bytes: u64,
    read: u64,
    line: u64,
    line_len: usize,
    stop: &'a (dyn Fn() -> bool + Sync),
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if (self.stop)() {
            return Err(io::Error::other(IMPORT_STOPPED));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.max_bytes {
            return Err(io::Error::other(format!(
                "the file is larger than import_max_bytes ({} bytes); nothing was imported",
                self.max_bytes
            )));
        }
        for &b in buf.get(..n).unwrap_or_default() {
            if b == b'\n' {
                self.line += 1;
                self.line_len = 0;
            } else {
                self.line_len += 1;
                if self.line_len > IMPORT_MAX_LINE {
                    return Err(io::Error::other(format!(
                        "line {} is longer than {} KB, so this is not a subscriber list; \
                         nothing was imported",
                        self.line + 1,
                        IMPORT_MAX_LINE / 1024
                    )));
                }
            }
        }
        Ok(n)
    }
}

impl Subscribers {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            import_max_bytes: 100 << 20,
        }
    }

    /// The largest file an import reads (`import_max_bytes`).
    #[must_use]
    pub fn with_import_max_bytes(mut self, max: u64) -> Self {
        self.import_max_bytes = max;
        self
    }

    pub fn import_max_bytes(&self) -> u64 {
        self.import_max_bytes
    }

    /// Imports a CSV with an `email` column and optional `name` and `timezone` columns (a
    /// blank or unknown zone is the list's). Every row is
    /// checked first: if any is invalid, nothing is imported and the error lists the lines.
    /// `confirmed`: the operator vouches for consent, the rows become confirmed subscribers;
    /// otherwise each address gets a confirmation email (double opt-in). Known addresses are
    /// never changed: an unsubscribed person is not re-subscribed by an import.
    ///
    /// Validate, then write: the whole file is read and checked before the first write, with
    /// at most `import_max_bytes` read and no line over [`IMPORT_MAX_LINE`]; `stop` (a signal)
    /// is asked while reading, so an import stopped then has written nothing. Once writing has
    /// begun it runs to its end.
    pub async fn import_csv<R: Read>(
        &self,
        reader: R,
        confirmed: bool,
        source: &str,
        now: Millis,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> ServiceResult<ImportReport> {
        let invalid = |m: String| super::invalid("file", m);
        let mut rows = Vec::new();
        let mut problems = Vec::new();
        let reader = Bounded {
            inner: reader,
            max_bytes: self.import_max_bytes,
            read: 0,
            line: 0,
            line_len: 0,
            stop,
        };
        let mut csv = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(reader);
        for (i, record) in csv.deserialize::<CsvRow>().enumerate() {
            let line = i + 2; // 1-based, after the header
            let row = match record {
                Ok(r) => r,
                Err(e) => {
                    if let csv::ErrorKind::Io(io) = e.kind() {
                        return Err(invalid(io.to_string()));
                    }
                    problems.push(format!("line {line}: {e}"));
                    continue;
                }
            };
            let email = crate::domain::EmailAddress::parse(&row.email);
            let name = crate::domain::SubscriberName::parse(row.name.as_deref().unwrap_or(""));
            let timezone = timezone::subscriber_zone(row.timezone.as_deref());
            match (email, name) {
                (Ok(email), Ok(name)) => rows.push(ImportRow {
                    email,
                    name,
                    timezone,
                }),
                (Err(e), _) => problems.push(format!("line {line}: {e}")),
                (_, Err(e)) => problems.push(format!("line {line}: {e}")),
            }
        }
        drop(csv);
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
            for ImportRow {
                email,
                name,
                timezone,
            } in rows
            {
                let signup = SignUp {
                    email,
                    name,
                    ip: None,
                    user_agent: Some(source.to_owned()),
                    timezone,
                };
                let outcome = self.store.sign_up(&signup, now).await?;
                if outcome == SignUpOutcome::ConfirmationQueued {
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
    ) -> ServiceResult<u64> {
        let io = ServiceError::output;
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
            "timezone",
        ])
        .map_err(io)?;
        let mut after: Option<String> = None;
        let mut n = 0;
        loop {
            let page = self.list(status, 1000, after.as_deref()).await?;
            for s in &page {
                let confirmed = s.confirmed_at.map(to_rfc3339).unwrap_or_default();
                let row = [
                    s.email.as_str(),
                    s.name.as_deref().unwrap_or(""),
                    s.status.as_str(),
                    &to_rfc3339(s.created_at),
                    &confirmed,
                    &to_rfc3339(s.consent_at),
                    s.consent_ip.as_deref().unwrap_or(""),
                    s.consent_user_agent.as_deref().unwrap_or(""),
                    s.timezone.as_deref().unwrap_or(""),
                ];
                out.write_record(row.iter().map(|c| spreadsheet::cell(c).into_owned()))
                    .map_err(io)?;
                n += 1;
            }
            match page.last() {
                Some(last) if page.len() == 1000 => after = Some(last.id.clone()),
                _ => break,
            }
        }
        out.flush().map_err(ServiceError::output)?;
        Ok(n)
    }

    /// A subscriber with their deliveries and the bounces and complaints heard about them.
    pub async fn history(&self, email: &str) -> ServiceResult<SubscriberHistory> {
        let email = crate::domain::EmailAddress::parse(email)
            .map_err(|e| crate::domain::digest::invalid("email", e.to_string()))?;
        let Some(subscriber) = self.store.subscriber_by_email(email.as_str()).await? else {
            return Err(ServiceError::NotFound(format!(
                "no subscriber with the address {email}"
            )));
        };
        let deliveries = self.store.history_of(&subscriber.id).await?;
        let bounces = self.store.bounce_events_of(&subscriber.id).await?;
        Ok(SubscriberHistory {
            subscriber,
            deliveries,
            bounces,
        })
    }

    /// Erases a subscriber and everything about them.
    pub async fn forget(&self, email: &str) -> ServiceResult<()> {
        let email = crate::domain::EmailAddress::parse(email)
            .map_err(|e| crate::domain::digest::invalid("email", e.to_string()))?;
        if self.store.forget(email.as_str()).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!(
                "no subscriber with the address {email}"
            )))
        }
    }

    pub async fn list(
        &self,
        status: Option<&str>,
        limit: u32,
        after: Option<&str>,
    ) -> ServiceResult<Vec<SubscriberRow>> {
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
