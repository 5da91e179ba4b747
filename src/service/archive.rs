//! The public archive: sent digests as web pages and an Atom feed, for anyone, with nothing
//! of any subscriber in them. Off (`archive = false`): every answer is "not found".

use super::{ServiceError, ServiceResult};
use crate::compose::{Composer, DigestContent, archive_path};
use crate::domain::clock::{Millis, to_rfc3339};
use crate::store::{DigestRow, Store};

/// Digests on one page of the archive's listing, and in the feed.
pub const PER_PAGE: u32 = 20;

#[derive(Clone)]
pub struct Archive {
    store: Store,
    composer: Composer,
}

/// A digest as the archive lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub id: String,
    pub subject: String,
    /// The page's path (`/archive/<id>`) and its absolute address.
    pub path: String,
    pub url: String,
    /// When it went out: RFC 3339, and the date people read (UTC).
    pub sent_at: String,
    pub date: String,
    pub item_count: i64,
}

/// One page of the listing (`page` counts from 1).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListPage {
    pub digests: Vec<Listed>,
    pub page: u64,
    pub prev: Option<u64>,
    pub next: Option<u64>,
}

/// One sent digest as a web page: its subject, date and body (intro and items, rendered by
/// the template the email includes, for no one).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    #[serde(flatten)]
    pub listed: Listed,
    pub intro: Option<String>,
    pub body_html: String,
}

impl Archive {
    pub fn new(store: Store, composer: Composer) -> Self {
        Self { store, composer }
    }

    fn check_on(&self) -> ServiceResult<()> {
        if self.composer.archive_on() {
            Ok(())
        } else {
            Err(ServiceError::NotFound(
                "the archive is not published".into(),
            ))
        }
    }

    fn listed(&self, d: &DigestRow) -> Listed {
        let at: Millis = d.started_at.or(d.finished_at).unwrap_or(d.created_at);
        let sent_at = to_rfc3339(at);
        let path = archive_path(&d.id);
        Listed {
            id: d.id.clone(),
            subject: d.subject.clone(),
            url: self.composer.page_link(&path),
            path,
            date: sent_at.get(..10).unwrap_or(&sent_at).to_owned(),
            sent_at,
            item_count: d.item_count,
        }
    }

    /// Page `page` (from 1) of the sent digests, newest first; a page past the last is not
    /// found (the first always exists, empty before anything is sent).
    pub async fn list(&self, page: u64) -> ServiceResult<ListPage> {
        self.check_on()?;
        let page = page.max(1);
        let offset = (page - 1).saturating_mul(u64::from(PER_PAGE));
        let mut rows = self.store.archived_digests(PER_PAGE + 1, offset).await?;
        if rows.is_empty() && page > 1 {
            return Err(ServiceError::NotFound(format!(
                "the archive has no page {page}"
            )));
        }
        let more = rows.len() > PER_PAGE as usize;
        rows.truncate(PER_PAGE as usize);
        Ok(ListPage {
            digests: rows.iter().map(|d| self.listed(d)).collect(),
            page,
            prev: (page > 1).then(|| page - 1),
            next: more.then(|| page + 1),
        })
    }

    /// One sent digest's page; a digest that has not gone out is as unknown as a wrong id.
    pub async fn digest(&self, id: &str) -> ServiceResult<Published> {
        self.check_on()?;
        let unknown = || ServiceError::NotFound(format!("there is no digest {id} in the archive"));
        let d = self.store.digest(id).await?.ok_or_else(unknown)?;
        if !d.status.in_archive() {
            return Err(unknown());
        }
        self.published(&d)
    }

    fn published(&self, d: &DigestRow) -> ServiceResult<Published> {
        let body_html = self
            .composer
            .digest_body(&DigestContent::from(d))
            .map_err(|e| ServiceError::Template(e.to_string()))?;
        Ok(Published {
            listed: self.listed(d),
            intro: d.intro.clone(),
            body_html,
        })
    }

    /// The newest sent digests with their bodies, for the Atom feed, and the feed's own
    /// address.
    pub async fn feed(&self) -> ServiceResult<(Vec<Published>, String)> {
        self.check_on()?;
        let mut out = Vec::new();
        for listed in self.store.archived_digests(PER_PAGE, 0).await? {
            // The listing leaves the items out; the feed carries each digest whole.
            if let Some(d) = self.store.digest(&listed.id).await? {
                out.push(self.published(&d)?);
            }
        }
        Ok((out, self.composer.page_link("/archive/feed.xml")))
    }

    /// The archive's own address (the feed's alternate link).
    pub fn home(&self) -> String {
        self.composer.page_link("/archive")
    }
}
