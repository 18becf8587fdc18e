//! Runs: what accepting a run takes and returns, a run row as both backends read it, the
//! dispatch job of a run, and the answer to a repeated idempotency key.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::StoreResult;
pub use crate::engine::tasks::{DISPATCH_MAX_ATTEMPTS, DISPATCH_RUN};
use crate::{
    engine::{refusal::Refusal, tasks::Task},
    model::{
        Delivery, IdempotencyKey, Run, RunSource, RunStatus, SigningMode, TriggerKind, TriggerRef,
    },
    queue::JobSpec,
};

/// A fire to accept.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// What created it.
    pub source: RunSource,
    /// The trigger, when one fired.
    pub trigger_id: Option<Uuid>,
    /// Payload (a JSON object).
    pub payload: serde_json::Map<String, Value>,
    /// Idempotency key.
    pub idempotency_key: Option<IdempotencyKey>,
    /// Trace context of the request.
    pub trace_context: Option<Value>,
    /// For a signed webhook call, its signature: remembered with the run, in its transaction.
    pub signature: Option<CallSignature>,
}

/// The signature of a signed webhook call. Accepting the call remembers it (a unique key per
/// trigger, in the run's own transaction); a call whose signature is remembered is a replay.
#[derive(Debug, Clone)]
pub struct CallSignature {
    /// The MAC the call carried.
    pub mac: Vec<u8>,
    /// Until when it is remembered (Unix seconds): until its own timestamp has left the
    /// trigger's replay window (a call dated ahead is remembered longer, so it cannot be sent
    /// again once the memory would otherwise have ended).
    pub remember_until: i64,
}

/// A webhook trigger as its public endpoint needs it.
#[derive(Clone)]
pub struct WebhookTrigger {
    /// The trigger's id.
    pub id: Uuid,
    /// Its routine.
    pub routine_id: Uuid,
    /// Its company.
    pub company_id: Uuid,
    /// How calls authenticate.
    pub signing_mode: SigningMode,
    /// Accepted clock skew and how long signatures are remembered.
    pub replay_window_sec: i32,
    /// The secret, as shown to the user.
    pub secret: String,
    /// The secret a rotation replaced, while its grace period lasts, and until when.
    pub previous: Option<(String, DateTime<Utc>)>,
    /// The secret as stored (sealed): with the signing mode and replay window, what an
    /// acceptance compares with the trigger's row, so that a caller holding an older read of
    /// the trigger (a cache) cannot accept a call the current trigger would refuse.
    pub(crate) sealed: Vec<u8>,
}

impl WebhookTrigger {
    /// The secrets that authenticate a call at `now`: the current one, and the one a rotation
    /// replaced while its grace period lasts.
    pub fn secrets_at(&self, now: DateTime<Utc>) -> impl Iterator<Item = &str> {
        let previous = self
            .previous
            .as_ref()
            .filter(|(_, until)| *until > now)
            .map(|(secret, _)| secret.as_str());
        std::iter::once(self.secret.as_str()).chain(previous)
    }

    /// Whether the stored trigger still has these credentials and this signing mode and window.
    pub(crate) fn is_current(&self, sealed: &[u8], signing_mode: SigningMode, window: i32) -> bool {
        self.sealed == sealed
            && self.signing_mode == signing_mode
            && self.replay_window_sec == window
    }
}

impl std::fmt::Debug for WebhookTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTrigger")
            .field("id", &self.id)
            .field("signing_mode", &self.signing_mode)
            .finish_non_exhaustive()
    }
}

/// An accepted fire: the run, and whether it was an earlier run returned for a repeated
/// idempotency key.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The run.
    pub run: Run,
    /// `true` when the key had been accepted before and nothing was created.
    pub replayed: bool,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    pub(crate) id: Uuid,
    pub(crate) company_id: Uuid,
    pub(crate) routine_id: Uuid,
    pub(crate) trigger_id: Option<Uuid>,
    pub(crate) trigger_kind: Option<TriggerKind>,
    pub(crate) trigger_label: Option<String>,
    pub(crate) source: RunSource,
    pub(crate) status: RunStatus,
    pub(crate) reason: Option<String>,
    pub(crate) scheduled_for: Option<DateTime<Utc>>,
    pub(crate) catch_up: bool,
    pub(crate) missed: Option<Value>,
    pub(crate) triggered_at: DateTime<Utc>,
    pub(crate) completed_at: Option<DateTime<Utc>>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) payload: Value,
    pub(crate) linked_issue_id: Option<Uuid>,
    pub(crate) coalesced_into_run_id: Option<Uuid>,
    pub(crate) heartbeat_run_id: Option<Uuid>,
    pub(crate) failure_reason: Option<String>,
}

impl From<RunRow> for Run {
    fn from(row: RunRow) -> Self {
        let trigger = match (row.trigger_id, row.trigger_kind) {
            (Some(id), Some(kind)) => Some(TriggerRef {
                id,
                kind,
                label: row.trigger_label.unwrap_or_default(),
            }),
            _ => None,
        };
        Self {
            id: row.id,
            company_id: row.company_id,
            routine_id: row.routine_id,
            trigger_id: row.trigger_id,
            trigger,
            source: row.source,
            status: row.status,
            reason: row.reason,
            scheduled_for: row.scheduled_for,
            catch_up: row.catch_up,
            missed: row.missed,
            triggered_at: row.triggered_at,
            completed_at: row.completed_at,
            delivery: Delivery::of(row.source, row.idempotency_key.as_deref(), &row.payload),
            idempotency_key: row.idempotency_key,
            payload: row.payload,
            linked_issue_id: row.linked_issue_id,
            coalesced_into_run_id: row.coalesced_into_run_id,
            heartbeat_run_id: row.heartbeat_run_id,
            failure_reason: row.failure_reason,
        }
    }
}
/// The dispatch job of a run.
pub(crate) fn dispatch_job(
    run_id: Uuid,
    now: DateTime<Utc>,
    trace_context: Option<Value>,
) -> JobSpec {
    JobSpec {
        task: Task::DispatchRun { run_id },
        run_at: now,
        max_attempts: DISPATCH_MAX_ATTEMPTS,
        trace_context,
    }
}

/// A repeated idempotency key: the run it created, when the payload is the same.
pub(crate) fn replay(
    existing: Run,
    payload: &serde_json::Map<String, Value>,
) -> StoreResult<Accepted> {
    if existing.payload.as_object() == Some(payload) {
        Ok(Accepted {
            run: existing,
            replayed: true,
        })
    } else {
        Err(Refusal::IdempotencyKeyReused.into())
    }
}
