//! Backfill: what `POST /api/routines/{routineId}/backfill` asks of the store and gets back.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{engine::tasks::JobSpec, model::Run, store::runs::dispatch_job};

/// A past range to re-run.
#[derive(Debug, Clone, Copy)]
pub struct BackfillRange {
    /// Start (included).
    pub from: DateTime<Utc>,
    /// End (excluded), not after now.
    pub to: DateTime<Utc>,
    /// Only this schedule trigger of the routine (enabled or not); else every enabled one.
    pub trigger_id: Option<Uuid>,
}

/// What a backfill created.
#[derive(Debug, Clone)]
pub struct Backfilled {
    /// The new runs, oldest nominal time first.
    pub runs: Vec<Run>,
    /// Fires of the range that already had a run (made by the scheduler or an earlier
    /// backfill), left as they were.
    pub existing: usize,
}

/// The dispatch jobs of a backfill's new runs, all due now and enqueued oldest fire first, so
/// the queue (which takes due jobs by due time, then id) dispatches them in that order.
pub(crate) fn backfill_jobs(run_ids: &[Uuid], now: DateTime<Utc>) -> Vec<JobSpec> {
    run_ids
        .iter()
        .map(|id| dispatch_job(*id, now, None))
        .collect()
}
