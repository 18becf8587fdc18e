//! Schedule fires: the leader a fire pass runs for, and the dispatch jobs of the fires a batch
//! wrote.

use super::runs::dispatch_job;
use crate::{
    engine::fires::{FireWindow, InsertedFire},
    queue::JobSpec,
};

/// The leader performing a fire pass.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// Its fencing token (the epoch from Redis `INCR`).
    pub epoch: i64,
    /// Its instance id.
    pub leader_id: String,
}

/// The dispatch jobs of the runs a batch inserted, each due when its fire takes effect.
pub(crate) fn dispatch_jobs(window: &FireWindow, inserted: &[InsertedFire]) -> Vec<JobSpec> {
    inserted
        .iter()
        .map(|(id, fire_at, _, _)| dispatch_job(*id, window.effective(*fire_at), None))
        .collect()
}
