//! Retention, paced by the scheduler's leader (one process deletes; see
//! [`nexus_shared::engine::retention`] for what goes). A batch starts only while nothing
//! time-critical is near: no schedule fire is due to be prepared within
//! [`Settings::retention_quiet`] and no queued job is waiting for a worker (a burst is being
//! dispatched). After a batch that found more, the loop rests as long as the batch took, so
//! retention uses at most half of one database connection's time; when nothing is left, it
//! looks again a minute later.

use std::{sync::Arc, time::Instant};

use chrono::TimeDelta;
use nexus_shared::store::{PurgeReport, StoreError};
use tokio::sync::watch;

use crate::scheduler::Scheduler;

/// What one retention step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionStep {
    /// Retention is off (`NEXUS_RETENTION_DAYS=0`).
    Off,
    /// This instance does not lead.
    NotLeading,
    /// A fire is near or jobs are waiting: nothing was deleted.
    Busy,
    /// One batch, with what it deleted.
    Purged(PurgeReport),
}

impl Scheduler {
    /// One retention step at the clock's now: a batch, unless retention is off, this instance
    /// does not lead, or the database has time-critical work near (see the module).
    ///
    /// # Errors
    /// The database failed.
    pub async fn retention_once(&self) -> Result<RetentionStep, StoreError> {
        let Some(days) = self.settings.retention_days else {
            return Ok(RetentionStep::Off);
        };
        if !self.is_leader() {
            return Ok(RetentionStep::NotLeading);
        }
        let now = self.store.clock().now();
        let quiet = TimeDelta::from_std(self.settings.lookahead + self.settings.retention_quiet)
            .unwrap_or(TimeDelta::seconds(15));
        if let Some(next) = self.store.next_fire_at().await?
            && next - now < quiet
        {
            return Ok(RetentionStep::Busy);
        }
        if self.store.jobs_waiting().await? {
            return Ok(RetentionStep::Busy);
        }
        let started = Instant::now();
        let report = self
            .store
            .purge_history(days, self.settings.retention_batch)
            .await?;
        metrics::histogram!("nexus_retention_batch_seconds")
            .record(started.elapsed().as_secs_f64());
        for (kind, rows) in report.by_kind() {
            metrics::counter!("nexus_retention_deleted_total", "kind" => kind).increment(rows);
        }
        if report.total() > 0 {
            tracing::info!(
                rows = report.total(),
                issues = report.issues,
                runs = report.runs,
                activity = report.activity,
                "retention deleted expired history"
            );
        }
        Ok(RetentionStep::Purged(report))
    }

    /// Retention steps until `stop` turns true (see the module for the pacing).
    pub(crate) async fn retention_loop(&self, mut stop: watch::Receiver<bool>) {
        if self.settings.retention_days.is_none() {
            return;
        }
        let clock = Arc::clone(self.store.clock());
        let mut terms = self.term.subscribe();
        while !*stop.borrow() {
            terms.borrow_and_update();
            let started = Instant::now();
            let rest = match self.retention_once().await {
                Ok(RetentionStep::Purged(report)) if report.more => {
                    TimeDelta::from_std(started.elapsed())
                        .unwrap_or(TimeDelta::seconds(1))
                        .max(TimeDelta::milliseconds(50))
                }
                Ok(RetentionStep::Busy) => TimeDelta::seconds(1),
                Ok(RetentionStep::NotLeading) => {
                    // Until this instance leads (again).
                    tokio::select! {
                        _ = terms.changed() => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                    continue;
                }
                Ok(RetentionStep::Purged(_) | RetentionStep::Off) => TimeDelta::minutes(1),
                Err(e) => {
                    tracing::warn!(error = %e, "retention batch failed; trying again later");
                    TimeDelta::seconds(10)
                }
            };
            let until = clock.now() + rest;
            tokio::select! {
                () = clock.sleep_until(until) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
    }
}
