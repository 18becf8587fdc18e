//! Dispatch: what a wake-up delivery needs, and the audit entry of each dispatched run.

use std::collections::HashMap;

use serde_json::json;
use uuid::Uuid;

use super::NewActivity;
use crate::{
    engine::dispatch::{Outcome, PendingRun, RoutineRow},
    model::{Actor, HeartbeatRun, RunStatus},
    queue::Job,
};

/// The result of [`super::Storage::dispatch_jobs`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dispatched {
    /// The jobs whose lease the caller still held: dispatched and completed.
    pub held: Vec<Uuid>,
    /// The outcome of each run that was still `received` (others were left alone).
    pub outcomes: Vec<(Uuid, RunStatus)>,
}

/// The result of [`super::Storage::claim_and_dispatch`].
#[derive(Debug, Default, Clone)]
pub struct Taken {
    /// First attempts of `dispatch_run` jobs: their runs were dispatched and the jobs
    /// completed in the transaction that took them.
    pub dispatched: Vec<Job>,
    /// The outcome of each of their runs that was still `received`.
    pub outcomes: Vec<(Uuid, RunStatus)>,
    /// Every other job taken, claimed with a lease as [`super::Storage::claim_jobs`] claims: for the
    /// caller to handle.
    pub claimed: Vec<Job>,
}

impl Taken {
    /// How many jobs were taken.
    #[must_use]
    pub fn len(&self) -> usize {
        self.dispatched.len() + self.claimed.len()
    }

    /// Whether no job was due.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a wake-up delivery needs.
#[derive(Clone)]
pub struct WakeupDelivery {
    /// Where to POST.
    pub url: String,
    /// The agent's Standard Webhooks secret (`whsec_…`).
    pub secret: String,
    /// The heartbeat run announced.
    pub heartbeat_run: HeartbeatRun,
}

impl std::fmt::Debug for WakeupDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeupDelivery")
            .field("heartbeat_run", &self.heartbeat_run.id)
            .field("secret", &crate::crypto::Redacted)
            .finish_non_exhaustive()
    }
}
/// The `run.dispatched` audit entry of each run.
pub(crate) fn dispatch_entries<'a>(
    routines: &HashMap<Uuid, RoutineRow>,
    runs: &[PendingRun],
    outcomes: &[(Uuid, Outcome)],
    heartbeat_of: &[Option<Uuid>],
) -> Vec<NewActivity<'a>> {
    runs.iter()
        .zip(outcomes)
        .zip(heartbeat_of)
        .map(|((run, (_, outcome)), heartbeat_run_id)| NewActivity {
            company_id: routines[&run.routine_id].company_id,
            actor: Actor::System,
            action: "run.dispatched",
            entity_type: "routine_run",
            entity_id: run.id,
            details: json!({
                "routineId": run.routine_id,
                "status": outcome.status,
                "reason": outcome.reason,
                "issueId": outcome.linked_issue_id,
                "heartbeatRunId": heartbeat_run_id,
            }),
        })
        .collect()
}
