//! Turns intent into deliveries: fires the daily schedule, fans out due digests, queues each
//! wave of a digest delivered at each subscriber's time when it comes due, marks missed ones
//! (digests, waves), and closes finished ones. `tick(now)` takes the time as an argument, so
//! tests drive it with any clock and never sleep. `run` ticks at least once a second, and
//! sooner when something falls due before that (`TickReport::next_due`) or when an editor
//! schedules or resumes in this process (`Store::schedule_wake`).

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, error, info, info_span, warn};

use crate::domain::clock::ms;
use crate::domain::digest::past_grace;
use crate::domain::timezone::{local_instant, wave_zones, waves};
use crate::domain::{DeliverAt, ItemSelection, NewDigest};
use crate::store::{DigestRow, PlannedWave, Store, StoreError, StoreResult, StoredSchedule};

/// The longest the scheduler sleeps between ticks: how soon a node notices it lost or may
/// take the scheduler role, a fan-out cut short is continued, finished digests are closed,
/// and a digest scheduled on another node (or by another process) is seen.
const TICK: Duration = Duration::from_secs(1);

/// What one tick did; for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// The daily digest created for a local date, if one was due.
    pub daily_created: Option<String>,
    /// Digests fanned out, with the number of deliveries each got.
    pub fanned_out: Vec<(String, u64)>,
    pub missed: Vec<String>,
    /// Waves (digest, zone) queued at their due time, with how many deliveries each.
    pub waves_opened: Vec<(String, String, u64)>,
    /// Waves (digest, zone) seen only beyond the grace window: not sent late.
    pub waves_missed: Vec<(String, String)>,
    pub finished: Vec<String>,
    /// When something next falls due after this tick's `now`: a scheduled digest, a waiting
    /// wave, or the daily schedule's next firing. `run` wakes then if it is before its tick.
    pub next_due: Option<DateTime<Utc>>,
}

#[derive(Clone)]
pub struct Scheduler {
    store: Store,
    grace: Duration,
    digest_ttl: Duration,
    /// Subscribers per fan-out chunk (`fanout_chunk`).
    fan_out_chunk: u32,
    /// The longest `run` sleeps between ticks (`TICK`).
    tick: Duration,
    /// Told whether this node holds the scheduler role, for what runs only on the one
    /// scheduler of an installation (the feed poller).
    leading: Option<tokio::sync::watch::Sender<bool>>,
}

impl Scheduler {
    pub fn new(store: Store, grace: Duration, digest_ttl: Duration) -> Self {
        Self {
            store,
            grace,
            digest_ttl,
            fan_out_chunk: 5000,
            tick: TICK,
            leading: None,
        }
    }

    /// Fans out `n` subscribers per chunk (each its own transaction).
    #[must_use]
    pub fn with_fan_out_chunk(mut self, n: u32) -> Self {
        self.fan_out_chunk = n.max(1);
        self
    }

    /// Sleeps at most `tick` between ticks instead of a second (tests: a long tick shows
    /// that what falls due is not left waiting for it).
    #[must_use]
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Says on `leading` whether this node holds the scheduler role, as it changes.
    #[must_use]
    pub fn with_leading(mut self, leading: tokio::sync::watch::Sender<bool>) -> Self {
        self.leading = Some(leading);
        self
    }

    /// Ticks every second while this node holds the scheduler role, and in between at the
    /// moment something falls due (a digest, a wave, the daily schedule: `TickReport::
    /// next_due`), or at once when an editor schedules or resumes a digest or changes the
    /// daily schedule in this process (`Store::schedule_wake`); otherwise keeps trying to
    /// take the role, so another node takes over within a second or two of the leader dying.
    /// A digest due between two ticks used to wait for the next one: on average half a
    /// second of its first message's delay (BENCHMARKS.md, issue 23).
    pub async fn run(self, shutdown: CancellationToken) {
        let schedule_wake = self.store.schedule_wake();
        let mut leadership = None;
        while !shutdown.is_cancelled() {
            match &mut leadership {
                None => match self.store.try_lead().await {
                    Ok(Some(l)) => {
                        info!("this node is now the scheduler");
                        leadership = Some(l);
                    }
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "cannot take the scheduler role"),
                },
                Some(l) => {
                    if !self.store.still_leading(l).await {
                        warn!("lost the scheduler role (database connection closed)");
                        leadership = None;
                    }
                }
            }
            if let Some(tx) = &self.leading {
                tx.send_if_modified(|was| {
                    let now = leadership.is_some();
                    std::mem::replace(was, now) != now
                });
            }
            let mut next_due = None;
            if leadership.is_some() {
                match self.tick(Utc::now()).await {
                    Ok(report) => next_due = report.next_due,
                    Err(e) => error!(error = %e, "scheduler tick failed; trying again"),
                }
            }
            // Until the next due time by the wall clock (the tick may have taken a while), if
            // that is sooner than the tick.
            let wait = next_due.map_or(self.tick, |due| {
                (due - Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .min(self.tick)
            });
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = schedule_wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        if let Some(tx) = &self.leading {
            tx.send_replace(false);
        }
    }

    pub async fn tick(&self, now: DateTime<Utc>) -> StoreResult<TickReport> {
        let (daily_created, next_daily) = self.daily(now).await?;
        let mut report = TickReport {
            daily_created,
            ..TickReport::default()
        };
        let now_ms = now.timestamp_millis();
        // A fan-out cut short (the process stopped, or a chunk failed) goes on from its
        // cursor, on whichever node holds the scheduler role now.
        for id in self.store.unfinished_fan_outs().await? {
            let n = self
                .store
                .continue_fan_out(&id, now_ms, self.fan_out_chunk)
                .instrument(info_span!("digest_run", digest_id = %id))
                .await?;
            if n > 0 {
                info!(digest_id = %id, recipients = n, "fan-out continued from its cursor");
                report.fanned_out.push((id, n));
            }
        }
        for digest in self.store.due_digests(now_ms).await? {
            if digest.local_time.is_some() {
                self.fan_out_by_zone(&digest, now, &mut report).await?;
                continue;
            }
            let send_at = digest.send_at.unwrap_or(now_ms);
            let late = now_ms - send_at;
            let due = DateTime::from_timestamp_millis(send_at).unwrap_or(now);
            if past_grace(due, now, self.grace) {
                let note = format!(
                    "not sent: its time passed {} min ago while nothing was running, beyond the {} min grace window",
                    late / 60_000,
                    self.grace.as_secs() / 60
                );
                if self.store.mark_missed(&digest.id, &note, now_ms).await? {
                    warn!(digest_id = %digest.id, "{note}");
                    self.store
                        .add_event("missed", Some(&digest.id), &note, now_ms)
                        .await?;
                    report.missed.push(digest.id);
                }
                continue;
            }
            let expires_at = self.expiry(send_at).await?;
            let span = info_span!("digest_run", digest_id = %digest.id);
            let fanned = self
                .store
                .fan_out(&digest.id, expires_at, now_ms, self.fan_out_chunk)
                .instrument(span.clone())
                .await?;
            if let Some(n) = fanned {
                span.in_scope(|| info!(recipients = n, "digest fanned out"));
                self.store
                    .add_event(
                        "fan_out",
                        Some(&digest.id),
                        &format!("queued for {n} confirmed subscribers"),
                        now_ms,
                    )
                    .await?;
                report.fanned_out.push((digest.id, n));
            }
        }
        self.open_waves(now, &mut report).await?;
        for id in self.store.finish_digests(now_ms).await? {
            info!(digest_id = %id, "digest sent");
            report.finished.push(id);
        }
        let next = self.store.next_due_digest_or_wave(now_ms).await?;
        report.next_due = next
            .and_then(DateTime::from_timestamp_millis)
            .into_iter()
            .chain(next_daily)
            .min();
        Ok(report)
    }

    /// The zones of the confirmed subscribers, the list's `list` among them, and the wave of
    /// each stored zone name (`domain::timezone::wave_zones`).
    async fn zones(&self, list: Tz) -> StoreResult<(Vec<Tz>, Vec<(String, String)>)> {
        Ok(wave_zones(list, &self.store.subscriber_zones().await?))
    }

    /// A digest delivered at each subscriber's time whose first wave has come: its waves
    /// (one per zone: `domain::timezone::waves`), each expiring at the next day's time in its
    /// zone for a daily digest (an old digest is never delivered after a newer one), or
    /// `digest_ttl` after its due time for a one-off; all its deliveries made at once, each
    /// wave queued when due (`open_waves`). Missed as a whole only when even its last wave is
    /// beyond the grace window.
    async fn fan_out_by_zone(
        &self,
        digest: &DigestRow,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> StoreResult<()> {
        let now_ms = now.timestamp_millis();
        let corrupt = |what: &str| StoreError::Corrupt(format!("digest {}: {what}", digest.id));
        let date = digest
            .local_date
            .as_deref()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .ok_or_else(|| corrupt("its local_date is not a date"))?;
        let time = digest
            .local_time
            .as_deref()
            .and_then(|t| NaiveTime::parse_from_str(t, "%H:%M").ok())
            .ok_or_else(|| corrupt("its local_time is not HH:MM"))?;
        let schedule = self.store.schedule().await?;
        let list = schedule.as_ref().map_or(Tz::UTC, |s| s.schedule.timezone);
        let daily = digest.daily_date.is_some() && schedule.is_some_and(|s| s.schedule.enabled);
        let (zones, members) = self.zones(list).await?;
        let next_day = date.succ_opt().unwrap_or(date);
        let planned: Vec<PlannedWave> = waves(zones, date, time)
            .into_iter()
            .map(|(tz, due)| PlannedWave {
                timezone: tz.name().to_owned(),
                due_at: due.timestamp_millis(),
                expires_at: if daily {
                    local_instant(tz, next_day, time).timestamp_millis()
                } else {
                    due.timestamp_millis() + ms(self.digest_ttl)
                },
            })
            .collect();
        let last = planned.iter().map(|w| w.due_at).max().unwrap_or(now_ms);
        if past_grace(
            DateTime::from_timestamp_millis(last).unwrap_or(now),
            now,
            self.grace,
        ) {
            let note = format!(
                "not sent: even its last wave's time ({}) passed while nothing was running, beyond the {} min grace window",
                crate::domain::clock::to_rfc3339(last),
                self.grace.as_secs() / 60
            );
            if self.store.mark_missed(&digest.id, &note, now_ms).await? {
                warn!(digest_id = %digest.id, "{note}");
                self.store
                    .add_event("missed", Some(&digest.id), &note, now_ms)
                    .await?;
                report.missed.push(digest.id.clone());
            }
            return Ok(());
        }
        let span = info_span!("digest_run", digest_id = %digest.id);
        let fanned = self
            .store
            .fan_out_waves(&digest.id, list.name(), &planned, &members, now_ms)
            .instrument(span.clone())
            .await?;
        if let Some(n) = fanned {
            span.in_scope(|| {
                info!(
                    recipients = n,
                    waves = planned.len(),
                    "digest fanned out in waves"
                )
            });
            self.store
                .add_event(
                    "fan_out",
                    Some(&digest.id),
                    &format!(
                        "made for {n} confirmed subscribers, each at {} on {date} in their own time zone",
                        time.format("%H:%M")
                    ),
                    now_ms,
                )
                .await?;
            report.fanned_out.push((digest.id.clone(), n));
        }
        Ok(())
    }

    /// Each wave whose time has come goes into the queue, due at its time; one seen only
    /// beyond the grace window (nothing was running) is missed, the other waves unaffected.
    async fn open_waves(&self, now: DateTime<Utc>, report: &mut TickReport) -> StoreResult<()> {
        let now_ms = now.timestamp_millis();
        for (id, zone, due_ms) in self.store.due_waves(now_ms).await? {
            let due = DateTime::from_timestamp_millis(due_ms).unwrap_or(now);
            if past_grace(due, now, self.grace) {
                let note = format!(
                    "the {zone} wave was not sent: its time ({}) passed {} min ago while nothing was running, beyond the {} min grace window",
                    crate::domain::clock::to_rfc3339(due_ms),
                    (now_ms - due_ms) / 60_000,
                    self.grace.as_secs() / 60
                );
                if self
                    .store
                    .miss_wave(&id, &zone, &note, now_ms)
                    .await?
                    .is_some()
                {
                    warn!(digest_id = %id, "{note}");
                    self.store
                        .add_event("wave_missed", Some(&id), &note, now_ms)
                        .await?;
                    report.waves_missed.push((id, zone));
                }
            } else if let Some(n) = self.store.open_wave(&id, &zone, due_ms).await? {
                info!(digest_id = %id, timezone = %zone, recipients = n, "wave due");
                report.waves_opened.push((id, zone, n));
            }
        }
        Ok(())
    }

    /// Deliveries give up when the next daily digest is due, or after `digest_ttl` when
    /// there is no daily schedule: an old digest is never delivered after a newer one.
    async fn expiry(&self, send_at: i64) -> StoreResult<i64> {
        let schedule = self.store.schedule().await?;
        Ok(match schedule {
            Some(s) if s.schedule.enabled => {
                let at = DateTime::from_timestamp_millis(send_at).unwrap_or_default();
                s.schedule.next_after(at).timestamp_millis()
            }
            _ => send_at + ms(self.digest_ttl),
        })
    }

    /// The daily schedule's part of a tick: its latest firing handled (`fire_daily`) and its
    /// next firing after `now`; nothing without an enabled schedule.
    async fn daily(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<(Option<String>, Option<DateTime<Utc>>)> {
        let Some(stored) = self.store.schedule().await? else {
            return Ok((None, None));
        };
        let s = &stored.schedule;
        if !s.enabled {
            return Ok((None, None));
        }
        // Delivering at each subscriber's time, the day's digest is made (its content frozen)
        // when the earliest zone's time comes: the first wave.
        let zones = match s.deliver_at {
            DeliverAt::List => Vec::new(),
            DeliverAt::Subscriber => self.zones(s.timezone).await?.0,
        };
        let created = self.fire_daily(&stored, &zones, now).await?;
        Ok((created, Some(s.next_after_among(now, &zones))))
    }

    /// The daily schedule's latest firing, if not handled yet: a digest of the pending items,
    /// or a recorded reason why nothing was sent. Only the latest firing is considered, so a
    /// process that was down for days sends at most one digest, never a backlog.
    async fn fire_daily(
        &self,
        stored: &StoredSchedule,
        zones: &[Tz],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<String>> {
        let s = &stored.schedule;
        let (date, fire) = s.latest_due_among(now, zones);
        let date_str = date.to_string();
        if stored.last_date.as_deref() >= Some(date_str.as_str()) {
            return Ok(None);
        }
        let now_ms = now.timestamp_millis();
        if !self.store.take_daily_date(&date_str, now_ms).await? {
            return Ok(None); // another scheduler handled it
        }
        // Missed as a whole only when even its last wave is beyond the grace window; the
        // waves already beyond it are missed one by one (`open_waves`).
        let last = s.last_fire(date, zones);
        if past_grace(last, now, self.grace) {
            let note = format!(
                "daily digest for {date_str} not sent: its time ({}) passed while nothing was running, beyond the grace window",
                last.to_rfc3339()
            );
            warn!("{note}");
            self.store
                .add_event("daily_missed", None, &note, now_ms)
                .await?;
            return Ok(None);
        }
        // The date alone: the From name already says which list it is, and the body's
        // heading shows the list's name above the subject.
        let subject = date.format("%A %-d %B %Y").to_string();
        let new = NewDigest {
            subject,
            intro: None,
            items: ItemSelection::Pending,
        };
        match self
            .store
            .create_digest(&new, Some(&date_str), now_ms)
            .await
        {
            Ok(d) => {
                match s.deliver_at {
                    DeliverAt::List => {
                        self.store
                            .schedule_digest(&d.id, fire.timestamp_millis(), now_ms)
                            .await?;
                    }
                    DeliverAt::Subscriber => {
                        self.store
                            .schedule_digest_waves(
                                &d.id,
                                fire.timestamp_millis(),
                                &date_str,
                                &s.time_str(),
                                now_ms,
                            )
                            .await?;
                    }
                }
                let msg = format!(
                    "daily digest for {date_str} created with {} items",
                    d.item_count
                );
                info!(digest_id = %d.id, "{msg}");
                self.store
                    .add_event("daily", Some(&d.id), &msg, now_ms)
                    .await?;
                Ok(Some(date_str))
            }
            Err(StoreError::Conflict(_)) => {
                let msg =
                    format!("daily digest for {date_str} not sent: there were no pending items");
                info!("{msg}");
                self.store
                    .add_event("daily_empty", None, &msg, now_ms)
                    .await?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
