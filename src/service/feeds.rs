//! The feeds use case: editors add, list and remove feeds; the poller (started with the
//! scheduler) fetches each every `feed_interval` and turns new entries into pending items,
//! which the daily digest takes like any other.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::leading::every_while_leading;
use super::{ServiceError, ServiceResult};
use crate::domain::clock::Millis;
use crate::feeds::{self, FetchSettings, Fetched, Fetcher, Validators};
use crate::store::{FeedRow, SeenEntry, Store};

/// A feed failing for this long is flagged (`failing: true`).
pub const FAILING_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The first poll of a feed takes only entries this recent.
pub const FIRST_POLL_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// A feed as editors see it: its state, and whether it has been failing for a day.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct FeedView {
    #[serde(flatten)]
    pub feed: FeedRow,
    pub failing: bool,
}

impl FeedView {
    fn new(feed: FeedRow, now: Millis) -> Self {
        let failing = feed
            .failing_since
            .is_some_and(|since| now - since >= FAILING_AFTER.as_millis() as i64);
        Self { feed, failing }
    }
}

/// What one poll of one feed did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Polled {
    pub id: String,
    pub url: String,
    /// Items made by this poll.
    pub new_items: usize,
    /// `true` for a `304 Not Modified`.
    pub not_modified: bool,
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct Feeds {
    store: Store,
    fetcher: Fetcher,
    interval: Duration,
}

impl Feeds {
    pub fn new(store: Store, settings: FetchSettings, interval: Duration) -> ServiceResult<Self> {
        let fetcher =
            Fetcher::new(settings).map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        Ok(Self {
            store,
            fetcher,
            interval,
        })
    }

    pub async fn add(&self, url: &str, now: Millis) -> ServiceResult<FeedView> {
        let url = crate::domain::digest::http_url(url)?;
        Ok(FeedView::new(self.store.add_feed(&url, now).await?, now))
    }

    pub async fn list(&self, now: Millis) -> ServiceResult<Vec<FeedView>> {
        Ok(self
            .store
            .list_feeds()
            .await?
            .into_iter()
            .map(|f| FeedView::new(f, now))
            .collect())
    }

    pub async fn remove(&self, id: &str) -> ServiceResult<()> {
        Ok(self.store.delete_feed(id).await?)
    }

    /// Polls every feed now, whatever its interval (`squeeze feeds poll`).
    pub async fn poll_all(&self, now: DateTime<Utc>) -> ServiceResult<Vec<Polled>> {
        let feeds = self.store.list_feeds().await?;
        self.poll(feeds, now).await
    }

    /// Polls the feeds last polled at least `feed_interval` ago.
    pub async fn poll_due(&self, now: DateTime<Utc>) -> ServiceResult<Vec<Polled>> {
        let before = now.timestamp_millis() - self.interval.as_millis() as i64;
        let feeds = self.store.due_feeds(before).await?;
        self.poll(feeds, now).await
    }

    async fn poll(&self, feeds: Vec<FeedRow>, now: DateTime<Utc>) -> ServiceResult<Vec<Polled>> {
        let mut done = Vec::with_capacity(feeds.len());
        for feed in feeds {
            done.push(self.poll_one(&feed, now).await?);
        }
        Ok(done)
    }

    /// Fetches and reads one feed and records the outcome; a feed's own trouble is its
    /// `last_error`, only database trouble is an `Err`.
    async fn poll_one(&self, feed: &FeedRow, now: DateTime<Utc>) -> ServiceResult<Polled> {
        let at = now.timestamp_millis();
        let mut polled = Polled {
            id: feed.id.clone(),
            url: feed.url.clone(),
            new_items: 0,
            not_modified: false,
            error: None,
        };
        let validators = Validators {
            etag: feed.etag.clone(),
            last_modified: feed.last_modified.clone(),
        };
        let fetched = self.fetcher.fetch(&feed.url, &validators).await;
        let outcome = match fetched {
            Ok(Fetched::NotModified) => {
                polled.not_modified = true;
                self.store.record_feed_unchanged(&feed.id, at).await?;
                return Ok(polled);
            }
            Ok(Fetched::Body { bytes, validators }) => {
                feeds::parse(&bytes, &feed.url).map(|parsed| (parsed, validators))
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok((parsed, validators)) => {
                let since = feed.last_success_at.is_none().then(|| {
                    now - chrono::Duration::from_std(FIRST_POLL_WINDOW).unwrap_or_default()
                });
                let read = feeds::read(&parsed, now, since);
                let entries: Vec<SeenEntry<'_>> = read
                    .entries
                    .iter()
                    .map(|c| SeenEntry {
                        key: &c.key,
                        item: c.item.as_ref(),
                    })
                    .collect();
                polled.new_items = self
                    .store
                    .record_feed_read(
                        &feed.id,
                        read.title.as_deref(),
                        validators.etag.as_deref(),
                        validators.last_modified.as_deref(),
                        &entries,
                        at,
                    )
                    .await?;
                info!(feed = %feed.url, new_items = polled.new_items, "feed polled");
            }
            Err(e) => {
                warn!(feed = %feed.url, error = %e, "feed poll failed");
                self.store.record_feed_failure(&feed.id, &e, at).await?;
                polled.error = Some(e);
            }
        }
        Ok(polled)
    }

    /// The poller: every so often (a tenth of `feed_interval`, between 1 s and 5 s: asking
    /// which feeds are due is one cheap query, and a feed an editor just added is due at
    /// once, so its first items arrive within seconds, not at the next minute), polls the
    /// feeds that are due, until `shutdown`; only while `leading` says this node holds
    /// the scheduler role, so an installation of several processes on PostgreSQL polls
    /// each feed once (the scheduler's advisory lock decides which node).
    pub async fn run(self, shutdown: CancellationToken, leading: watch::Receiver<bool>) {
        let tick = (self.interval / 10).clamp(Duration::from_secs(1), Duration::from_secs(5));
        let this = &self;
        every_while_leading(tick, shutdown, leading, || async move {
            if let Err(e) = this.poll_due(Utc::now()).await {
                warn!(error = %e, "feed poller: the database refused; trying again");
            }
        })
        .await;
    }
}
