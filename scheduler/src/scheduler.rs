//! The scheduler loop: keep leadership, and while leading fire what is due (preparing the fires
//! of the next few seconds, see [`Settings::lookahead`]), then sleep until the earliest
//! `next_run_at` less the lookahead — or until a trigger change is announced, or leadership
//! changes.
//! There is no fixed polling interval; the longest sleep is a minute, a safety net only.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use nexus_shared::{
    Store,
    store::{FireReport, Leadership, Refusal, SchedulerStorage, StoreError, Topic, UpkeepReport},
};
use tokio::sync::{Notify, watch};

use crate::leader::LeaderLock;

/// Tunables of the scheduler.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A fire handled later than this after its nominal time is missed.
    pub misfire_grace: Duration,
    /// How far ahead of its nominal time a fire is prepared (its run written and its dispatch
    /// job due at that time), so that a burst of fires costs only their dispatch when it comes.
    pub lookahead: Duration,
    /// Triggers per fire transaction.
    pub batch: i64,
    /// Longest sleep between passes.
    pub max_sleep: Duration,
    /// `NEXUS_RETENTION_DAYS`: finished history older than this many days is deleted by the
    /// leader (`None`: kept for ever). See [`crate::retention`].
    pub retention_days: Option<u32>,
    /// Rows of each kind one retention batch deletes at most.
    pub retention_batch: i64,
    /// A retention batch starts only if no fire is due to be prepared within this time.
    pub retention_quiet: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            misfire_grace: Duration::from_secs(60),
            lookahead: Duration::from_secs(5),
            batch: 500,
            max_sleep: Duration::from_secs(60),
            retention_days: None,
            retention_batch: nexus_shared::engine::retention::BATCH,
            retention_quiet: Duration::from_secs(10),
        }
    }
}

/// Leadership as the fire loop sees it: the term and when it lapses, on the injected clock.
#[derive(Debug, Clone)]
pub(crate) struct Term {
    leadership: Leadership,
    valid_until: DateTime<Utc>,
}

/// What one leadership step ([`Scheduler::lead_once`]) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadStep {
    /// Took office with a new epoch.
    TookOffice(i64),
    /// Still leading: the lease was renewed.
    Renewed(i64),
    /// Another instance holds the lease (this one stood down if it was leading).
    Following,
    /// Redis (or the database, for the epoch) did not answer: not leading.
    Unreachable,
}

/// A scheduler instance.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub(crate) store: Arc<dyn SchedulerStorage>,
    lock: LeaderLock,
    pub(crate) settings: Settings,
    pub(crate) term: watch::Sender<Option<Term>>,
    /// Whether the last leadership step could not reach Redis (logged once per outage).
    unreachable: Arc<std::sync::atomic::AtomicBool>,
}

impl Scheduler {
    /// A scheduler over `store`, leading through `lock`.
    #[must_use]
    pub fn new(store: Store, lock: LeaderLock, settings: Settings) -> Self {
        let (term, _) = watch::channel(None);
        Self {
            store: store.scheduler(),
            lock,
            settings,
            term,
            unreachable: Arc::default(),
        }
    }

    /// Whether this instance currently leads: it holds a term that has not lapsed by the
    /// injected clock.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.leadership().is_some()
    }

    /// The leadership this instance currently holds, if its term has not lapsed.
    #[must_use]
    pub fn leadership(&self) -> Option<Leadership> {
        let now = self.store.clock().now();
        self.term
            .borrow()
            .as_ref()
            .filter(|t| t.valid_until > now)
            .map(|t| t.leadership.clone())
    }

    /// One fire pass as `leadership`: everything due by the clock's now plus the lookahead.
    ///
    /// # Errors
    /// Deposed (a newer epoch has written), or the database failed.
    pub async fn fire_once(&self, leadership: &Leadership) -> Result<FireReport, StoreError> {
        self.upkeep_once(leadership).await?;
        let grace =
            TimeDelta::from_std(self.settings.misfire_grace).unwrap_or(TimeDelta::seconds(60));
        let started = Instant::now();
        let span = tracing::info_span!("fire_pass", epoch = leadership.epoch);
        let pass = self
            .store
            .fire_due(leadership, grace, self.lookahead(), self.settings.batch);
        let report = tracing::Instrument::instrument(pass, span).await?;
        metrics::histogram!("nexus_scheduler_pass_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("nexus_fires_total", "outcome" => "dispatched")
            .increment(report.dispatched as u64);
        metrics::counter!("nexus_fires_total", "outcome" => "missed")
            .increment(report.missed_fires as u64);
        for lateness in &report.lateness {
            metrics::histogram!("nexus_fire_lateness_seconds")
                .record(lateness.as_seconds_f64().max(0.0));
        }
        if report.triggers > 0 {
            tracing::info!(
                triggers = report.triggers,
                dispatched = report.dispatched,
                prepared = report.prepared,
                missed = report.missed_fires,
                "fired due schedules"
            );
        }
        Ok(report)
    }

    /// The upkeep as `leadership`: paused routines whose `pausedUntil` came resume, runs whose
    /// `runTimeoutSec` ran out time out. [`Scheduler::fire_once`] begins with it.
    ///
    /// # Errors
    /// Deposed, or the database failed.
    pub async fn upkeep_once(&self, leadership: &Leadership) -> Result<UpkeepReport, StoreError> {
        let report = self.store.upkeep(leadership, self.settings.batch).await?;
        if report.timed_out > 0 {
            tracing::info!(runs = report.timed_out, "runs timed out");
        }
        if report.resumed > 0 {
            metrics::counter!("nexus_routines_resumed_total").increment(report.resumed);
            tracing::info!(
                routines = report.resumed,
                "paused routines resumed on schedule"
            );
        }
        Ok(report)
    }

    fn lookahead(&self) -> TimeDelta {
        TimeDelta::from_std(self.settings.lookahead).unwrap_or(TimeDelta::zero())
    }

    /// Runs leadership and firing until `stop` turns true, then releases leadership.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let changed = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(
            Arc::clone(&self.store),
            Arc::clone(&changed),
            stop.clone(),
        ));
        let leadership = tokio::spawn(self.clone().lead(stop.clone()));
        let retention = {
            let scheduler = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move { scheduler.retention_loop(stop).await })
        };
        self.fire_loop(&changed, stop).await;
        drop(leadership.await);
        drop(retention.await);
        listener.abort();
    }

    async fn fire_loop(&self, changed: &Notify, mut stop: watch::Receiver<bool>) {
        let mut terms = self.term.subscribe();
        while !*stop.borrow() {
            let current = terms.borrow_and_update().clone();
            let now = self.store.clock().now();
            let Some(term) = current.filter(|t| t.valid_until > now) else {
                tokio::select! {
                    _ = terms.changed() => {}
                    _ = stop.wait_for(|s| *s) => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            };
            match self.fire_once(&term.leadership).await {
                Ok(_) => {}
                Err(StoreError::Refused(deposed @ Refusal::Deposed { .. })) => {
                    tracing::warn!(%deposed, "standing down: another scheduler leads");
                    self.stand_down();
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fire pass failed; retrying shortly");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                    continue;
                }
            }
            let now = self.store.clock().now();
            let ceiling = now
                + TimeDelta::from_std(self.settings.max_sleep).unwrap_or(TimeDelta::seconds(60));
            let next = match (
                self.store.next_fire_at().await,
                self.store.next_upkeep_at().await,
            ) {
                (Ok(fire), Ok(upkeep)) => {
                    let fire = fire.map_or(ceiling, |t| (t - self.lookahead()).min(ceiling));
                    upkeep.map_or(fire, |t| t.min(fire))
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "reading the next fire time failed");
                    now + TimeDelta::seconds(1)
                }
            };
            let clock = Arc::clone(self.store.clock());
            tokio::select! {
                () = clock.sleep_until(next) => {}
                () = changed.notified() => {}
                _ = terms.changed() => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
    }

    /// Keeps trying to lead; renews while leading; stands down when renewal fails. One step
    /// every `ttl / 3` of the injected clock — or of real time, whichever comes first: the
    /// lease it renews is measured in real time (by Redis, or by this process without Redis),
    /// so a clock held still in a test must not let it lapse.
    async fn lead(self, mut stop: watch::Receiver<bool>) {
        let interval = self.lock.ttl() / 3;
        let step = TimeDelta::from_std(interval).unwrap_or(TimeDelta::seconds(1));
        let clock = Arc::clone(self.store.clock());
        while !*stop.borrow() {
            let next = clock.now() + step;
            self.lead_once().await;
            tokio::select! {
                () = clock.sleep_until(next) => {}
                () = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        if self.term.borrow().is_some() {
            self.stand_down();
            match self.lock.release().await {
                Ok(_) => tracing::info!("leadership released"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not release leadership; it expires with its lease");
                }
            }
        }
    }

    /// One leadership step, as [`Scheduler::run`] takes every `ttl / 3`: a follower tries to
    /// take the lease (with an epoch above the database's), a leader renews it; a leader whose
    /// renewal fails, or that cannot reach Redis, stands down at once. A term lasts `ttl` from
    /// the step that won or renewed it, on the injected clock.
    pub async fn lead_once(&self) -> LeadStep {
        let attempt = self.store.clock().now();
        let leading = self.term.borrow().is_some();
        let result = if leading {
            self.lock.renew().await.map(|held| held.then_some(None))
        } else {
            // Without the database's epoch a new term could not fire anyway.
            let floor = match self.store.scheduler_epoch().await {
                Ok(floor) => floor,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the scheduler epoch failed; not leading yet");
                    return LeadStep::Unreachable;
                }
            };
            self.lock.try_acquire(floor).await.map(|won| won.map(Some))
        };
        match result {
            Ok(outcome) => {
                if self
                    .unreachable
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::info!("Redis is reachable again");
                }
                match outcome {
                    Some(None) => self.extend(attempt),
                    Some(Some(epoch)) => {
                        self.take_office(epoch, attempt);
                        LeadStep::TookOffice(epoch)
                    }
                    None => {
                        if leading {
                            tracing::warn!(
                                "leadership lost: the lease is held by another scheduler"
                            );
                            self.stand_down();
                        }
                        LeadStep::Following
                    }
                }
            }
            Err(e) => {
                if !self
                    .unreachable
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(error = %e, "Redis is unreachable: not leading, not firing");
                }
                if leading {
                    self.stand_down();
                }
                LeadStep::Unreachable
            }
        }
    }

    fn take_office(&self, epoch: i64, attempt: DateTime<Utc>) {
        let leadership = Leadership {
            epoch,
            leader_id: self.lock.id().to_owned(),
        };
        tracing::info!(epoch, "became the scheduler leader");
        metrics::counter!("nexus_scheduler_leadership_changes_total").increment(1);
        metrics::gauge!("nexus_scheduler_is_leader").set(1.0);
        self.term.send_replace(Some(Term {
            leadership,
            valid_until: attempt + self.ttl(),
        }));
    }

    /// Extends the term; wakes the fire loop only if the term had lapsed (it waits for a
    /// renewal then), since nothing else it acts on has changed.
    fn extend(&self, attempt: DateTime<Utc>) -> LeadStep {
        let until = attempt + self.ttl();
        let mut epoch = 0;
        self.term.send_if_modified(|term| {
            let Some(term) = term else { return false };
            let lapsed = term.valid_until <= attempt;
            term.valid_until = until;
            epoch = term.leadership.epoch;
            lapsed
        });
        LeadStep::Renewed(epoch)
    }

    fn ttl(&self) -> TimeDelta {
        TimeDelta::from_std(self.lock.ttl()).unwrap_or(TimeDelta::seconds(10))
    }

    fn stand_down(&self) {
        if self.term.send_replace(None).is_some() {
            tracing::info!("stood down as scheduler leader");
            metrics::counter!("nexus_scheduler_leadership_changes_total").increment(1);
        }
        metrics::gauge!("nexus_scheduler_is_leader").set(0.0);
    }
}

/// Wakes the fire loop on every announced trigger change; reconnects after failures.
async fn listen(
    store: Arc<dyn SchedulerStorage>,
    changed: Arc<Notify>,
    stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let listening = async {
            let mut announcements = store.subscribe(Topic::Triggers).await?;
            loop {
                announcements.recv().await?;
                changed.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), StoreError>(())
        };
        if let Err(e) = listening.await {
            tracing::warn!(error = %e, "trigger-change notifications interrupted; relying on the wake-up ceiling");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
