//! Storage: the interfaces the roles hold ([`Storage`], made of one narrow interface per role,
//! and the [`Store`] handle), and two backends side by side with the same file names —
//! [`PgStore`] in `pg/` (production) and [`SqliteStore`](sqlite::SqliteStore) in `sqlite/`
//! (the single-process mode). Every operation of a backend is one transaction that loads what
//! the rules need, asks the [`engine`](crate::engine), and writes the outcome, each mutation
//! recorded in the company's activity log in the same transaction. Neither backend imports the
//! other; what both need lives here, one module per area (`runs.rs`: what accepting a run
//! takes and returns, a run row as both read it, …).
//!
//! Invariants live in the schema (composite foreign keys scoped by company, unique keys for
//! fires and idempotency, checked enumerations); the backends turn their violations into
//! [`StoreError`]s the API can answer with.

mod activity;
mod agents;
mod auth;
mod backfill;
mod dispatch;
mod events;
mod fires;
mod handle;
mod heartbeats;
mod issues;
mod notifications;
mod pg;
mod routines;
mod runs;
pub mod sqlite;
mod storage;
mod system;
mod triggers;

use uuid::Uuid;

pub use self::{
    activity::NewActivity,
    agents::{AgentChanges, CreatedAgent, IssuedKey, UpdatedAgent, WakeupSpec},
    auth::{BoardToken, BoardTokenInfo},
    backfill::{BackfillRange, Backfilled},
    dispatch::{Dispatched, Taken, WakeupDelivery},
    events::{ChangeEvent, ChangeKind, EVENTS_KEPT, EventLogState},
    fires::Leadership,
    handle::Store,
    issues::{IssueFilter, NewIssue},
    notifications::{
        Attempt, ChannelChanges, CreatedChannel, MAX_CHANNELS_PER_COMPANY, MAX_NAMED_ROUTINES,
        NewChannel, Outgoing, RoutineSelector, UpkeepReport,
    },
    pg::{DEFAULT_MISFIRE_GRACE, JOBS_CHANNEL, PgStore, TRIGGERS_CHANNEL},
    routines::{NewRoutine, Pause, RoutineChanges, RoutineFilter},
    runs::{Accepted, CallSignature, DISPATCH_MAX_ATTEMPTS, DISPATCH_RUN, NewRun, WebhookTrigger},
    storage::{ApiStorage, Backend, SchedulerStorage, Storage, Subscription, Topic, WorkerStorage},
    system::{FireLateness, SchedulerLeader, quantile},
    triggers::{
        NewTrigger, NewTriggerKind, SecretMaterial, TriggerChanges, TriggerInRoutine, webhook_url,
    },
};
use crate::crypto::SecretBox;
pub use crate::engine::{
    fires::FireReport,
    refusal::{MAX_TRIGGERS_PER_ROUTINE, Refusal, RefusalKind},
    retention::PurgeReport,
    rotation::{MAX_ROTATION_GRACE_SEC, Rotation, WEBHOOK_SECRET_PREFIX},
    tasks::{DELIVER_WAKEUP, WAKEUP_MAX_ATTEMPTS},
};

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed row does not exist.
    #[error("not found")]
    NotFound,
    /// A referenced row does not exist in the company; `field` is the request field naming it.
    #[error("{field} does not name a resource of this company")]
    InvalidReference {
        /// The API field (camelCase) holding the reference.
        field: &'static str,
    },
    /// The rules refuse the operation.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Maps a foreign-key violation on one of the reference columns to the request field it came
    /// from; any other error passes through.
    pub(crate) fn from_reference_violation(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error
            && db.is_foreign_key_violation()
            && let Some(field) = db.constraint().and_then(reference_field)
        {
            return Self::InvalidReference { field };
        }
        Self::Database(error)
    }
}

/// The request field behind a composite foreign key named `<table>_company_id_<column>_fkey`.
fn reference_field(constraint: &str) -> Option<&'static str> {
    const FIELDS: &[(&str, &str)] = &[
        ("_company_id_project_id_fkey", "projectId"),
        ("_company_id_goal_id_fkey", "goalId"),
        ("_company_id_parent_issue_id_fkey", "parentIssueId"),
        ("_company_id_assignee_agent_id_fkey", "assigneeAgentId"),
        ("_company_id_routine_id_fkey", "routineId"),
        ("_company_id_trigger_id_fkey", "triggerId"),
    ];
    FIELDS
        .iter()
        .find(|(suffix, _)| constraint.ends_with(suffix))
        .map(|(_, field)| *field)
}

impl From<StoreError> for crate::engine::tasks::JobError {
    fn from(error: StoreError) -> Self {
        Self::Retry(error.to_string())
    }
}

/// Result type of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Decrypts a secret sealed for the row `owner`.
fn open_secret(secrets: &SecretBox, owner: Uuid, sealed: &[u8]) -> StoreResult<String> {
    let undecodable =
        |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Database(sqlx::Error::Decode(e));
    let bytes = secrets
        .open(owner.as_bytes(), sealed)
        .map_err(|e| undecodable(Box::new(e)))?;
    String::from_utf8(bytes).map_err(|e| undecodable(Box::new(e)))
}

/// A new time-ordered id.
fn new_id() -> Uuid {
    Uuid::now_v7()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_constraints_map_to_request_fields() {
        assert_eq!(
            reference_field("issues_company_id_project_id_fkey"),
            Some("projectId")
        );
        assert_eq!(
            reference_field("routines_company_id_assignee_agent_id_fkey"),
            Some("assigneeAgentId")
        );
        assert_eq!(reference_field("issues_company_id_fkey"), None);
    }
}
