//! Retention: which finished history is old enough to delete (`NEXUS_RETENTION_DAYS`), decided
//! once for both backends. The backends delete it in small batches (see
//! `store/<backend>/retention.rs`); the scheduler's leader paces the batches.
//!
//! History older than the *cutoff* (now less the retention period) goes in these units:
//!
//! - **A closed issue with everything that hangs off it**: the issue (`done` or `cancelled`,
//!   last changed before the cutoff), its events, its heartbeat runs and every run linked to it
//!   (the run that opened it and the runs coalesced or skipped into it). It stays while any of
//!   these is unfinished, while one of its runs is its routine's newest run or was triggered in
//!   the last 24 hours, and while another issue or a routine names it as their parent.
//! - **A run that never had an issue** (missed fires, runs that failed before dispatch): once
//!   finished before the cutoff, triggered more than 24 hours ago, and not its routine's newest.
//! - **Activity entries** created before the cutoff.
//! - **Notifications** created before the cutoff and `delivered` or `failed`.
//! - **Dead jobs** that died before the cutoff.
//!
//! Never deleted: anything unfinished (open issues keep their whole history, including their
//! finished heartbeat runs), each routine's newest run (its `lastRun`), routines, triggers,
//! agents and the catalog, and anything a uniqueness guarantee depends on within its time —
//! idempotency keys and delivery ids live on their runs, which are kept for at least 24 hours;
//! remembered signatures have their own expiry.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

/// Rows of one kind one batch deletes at most.
pub const BATCH: i64 = 500;

/// How long a run (with its idempotency key or the sender's delivery id) is kept whatever the
/// retention: the contract keeps keys for at least 24 hours.
pub const KEYS_KEPT: TimeDelta = TimeDelta::hours(24);

/// The instant before which finished history may go, for a retention of `days` at `now`
/// (never later than [`KEYS_KEPT`] before now).
#[must_use]
pub fn cutoff(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    (now - TimeDelta::days(i64::from(days))).min(now - KEYS_KEPT)
}

/// What one batch deleted, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// Issues (each with its events, heartbeat runs and linked runs).
    pub issues: u64,
    /// Their issue events.
    pub issue_events: u64,
    /// Heartbeat runs.
    pub heartbeat_runs: u64,
    /// Runs (linked to a deleted issue, or never linked to one).
    pub runs: u64,
    /// Activity entries.
    pub activity: u64,
    /// Notifications.
    pub notifications: u64,
    /// Dead jobs.
    pub jobs: u64,
    /// Whether a kind filled its batch, so more may be waiting.
    pub more: bool,
}

/// Whether a batch that deleted `rows` of a kind filled its `limit`, so more may be waiting.
#[must_use]
pub fn fills(rows: u64, limit: i64) -> bool {
    i64::try_from(rows).unwrap_or(i64::MAX) >= limit
}

impl std::ops::AddAssign for PurgeReport {
    fn add_assign(&mut self, other: Self) {
        self.issues += other.issues;
        self.issue_events += other.issue_events;
        self.heartbeat_runs += other.heartbeat_runs;
        self.runs += other.runs;
        self.activity += other.activity;
        self.notifications += other.notifications;
        self.jobs += other.jobs;
        self.more |= other.more;
    }
}

impl PurgeReport {
    /// Rows deleted, all kinds together.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.issues
            + self.issue_events
            + self.heartbeat_runs
            + self.runs
            + self.activity
            + self.notifications
            + self.jobs
    }

    /// Each kind with its count, for metrics and logs.
    #[must_use]
    pub fn by_kind(&self) -> [(&'static str, u64); 7] {
        [
            ("issues", self.issues),
            ("issue_events", self.issue_events),
            ("heartbeat_runs", self.heartbeat_runs),
            ("runs", self.runs),
            ("activity", self.activity),
            ("notifications", self.notifications),
            ("jobs", self.jobs),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_the_period_before_now_and_never_within_a_day() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .expect("time")
            .to_utc();
        assert_eq!(cutoff(now, 30), now - TimeDelta::days(30));
        assert_eq!(cutoff(now, 1), now - TimeDelta::hours(24));
        assert_eq!(cutoff(now, 0), now - KEYS_KEPT);
    }
}
