//! The change log behind live updates (API.md "Live updates"). Every change to a run, routine
//! or trigger leaves an outbox row in the transaction that makes it (database triggers, so no
//! write path can forget one); [`crate::store::ApiStorage::relay_events`] numbers committed
//! outbox rows into the log one batch at a time, holding the log's only row, so a number is
//! given only once everything before it is visible. Readers follow the log by number.

use chrono::TimeDelta;
use uuid::Uuid;

/// How long numbered events are kept for clients that reconnect with `Last-Event-ID`: the
/// contract's five minutes, and one more so a client at the edge is not reset early.
pub const EVENTS_KEPT: TimeDelta = TimeDelta::minutes(6);

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A run was created.
    RunCreated,
    /// A run changed.
    RunUpdated,
    /// A routine was created or changed.
    RoutineUpdated,
    /// A trigger was created or changed.
    TriggerUpdated,
    /// A trigger was deleted.
    TriggerDeleted,
}

impl ChangeKind {
    /// The name the outbox stores.
    #[must_use]
    pub fn from_stored(name: &str) -> Option<Self> {
        Some(match name {
            "run.created" => Self::RunCreated,
            "run.updated" => Self::RunUpdated,
            "routine.updated" => Self::RoutineUpdated,
            "trigger.updated" => Self::TriggerUpdated,
            "trigger.deleted" => Self::TriggerDeleted,
            _ => return None,
        })
    }

    /// The event's name on the stream (a deleted trigger is a `trigger.updated` whose data
    /// says `deleted: true`: the contract names four events).
    #[must_use]
    pub fn event_name(self) -> &'static str {
        match self {
            Self::RunCreated => "run.created",
            Self::RunUpdated => "run.updated",
            Self::RoutineUpdated => "routine.updated",
            Self::TriggerUpdated | Self::TriggerDeleted => "trigger.updated",
        }
    }
}

/// One numbered change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// Its number: increasing in the order changes became visible.
    pub id: i64,
    /// The company it belongs to.
    pub company_id: Uuid,
    /// What changed.
    pub kind: ChangeKind,
    /// The run, routine or trigger.
    pub resource_id: Uuid,
    /// The routine concerned (the resource itself for a routine).
    pub routine_id: Uuid,
}

/// Where the log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventLogState {
    /// The newest number given.
    pub last_id: i64,
    /// Every event up to this number has been deleted: a client that saw less cannot be
    /// told everything it missed.
    pub purged_through: i64,
}

impl EventLogState {
    /// Whether a client that has seen every event of its company up to `seen` can be sent the
    /// rest from the log.
    #[must_use]
    pub fn can_resume(self, seen: i64) -> bool {
        seen >= self.purged_through && seen <= self.last_id
    }
}

/// A stored event row.
pub(crate) type EventRow = (i64, Uuid, String, Uuid, Uuid);

/// The events of rows, skipping kinds this version does not know.
pub(crate) fn events(rows: Vec<EventRow>) -> Vec<ChangeEvent> {
    rows.into_iter()
        .filter_map(|(id, company_id, kind, resource_id, routine_id)| {
            Some(ChangeEvent {
                id,
                company_id,
                kind: ChangeKind::from_stored(&kind)?,
                resource_id,
                routine_id,
            })
        })
        .collect()
}
