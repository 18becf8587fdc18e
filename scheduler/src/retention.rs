//! Retention, paced by the scheduler's leader (one process deletes; see
//! [`nexus_shared::engine::retention`] for what goes). A batch starts only while nothing
//! time-critical is near: no schedule fire is due to be prepared within
//! [`Settings::retention_quiet`] and no queued job is waiting for a worker (a burst is being
//! dispatched). After a batch that found more, the loop rests [`REST_PER_BATCH`] times as long
//! as the batch took, so retention uses at most a tenth of one database connection's time;
//! when nothing is left, it looks again a minute later.
//!
//! Why a tenth: a batch costs the burst nothing while it runs (none runs near a fire), but
//! what it writes does — every deleted row is in the write-ahead log, and the log's volume
//! decides when Postgres checkpoints. Deleting as fast as half a connection allows (5,000
//! fires a second beside 5 million, docs/benchmarks.md § 13) wrote a checkpoint's worth of log
//! every 30 s, so checkpoints ran during the bursts and each burst after one wrote its index
//! pages whole into the log again. A tenth still deletes several times faster than 10,000
//! routines a minute make history.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::TimeDelta;
use nexus_shared::store::{PurgeReport, StoreError};
use tokio::sync::watch;

use crate::scheduler::Scheduler;

/// After a batch that found more, the loop rests this many times as long as the batch took.
pub(crate) const REST_PER_BATCH: u32 = 9;

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
                Ok(RetentionStep::Purged(report)) if report.more => rest_after(started.elapsed()),
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

/// The rest after a batch that took `took` and found more: [`REST_PER_BATCH`] times as long,
/// at least 50 ms, at most a minute (the look when nothing is left).
#[must_use]
pub(crate) fn rest_after(took: Duration) -> TimeDelta {
    TimeDelta::from_std(took.saturating_mul(REST_PER_BATCH))
        .unwrap_or(TimeDelta::minutes(1))
        .clamp(TimeDelta::milliseconds(50), TimeDelta::minutes(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_followed_by_nine_times_its_length_of_rest_within_bounds() {
        assert_eq!(
            rest_after(Duration::from_millis(46)),
            TimeDelta::milliseconds(414)
        );
        assert_eq!(rest_after(Duration::ZERO), TimeDelta::milliseconds(50));
        assert_eq!(rest_after(Duration::from_secs(10)), TimeDelta::minutes(1));
        assert_eq!(rest_after(Duration::MAX), TimeDelta::minutes(1));
    }
}
