//! Notification channels, the outbox, routine health and pauses: what the operations take and
//! answer, and what both backends build the same way.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::routines::RoutineRow;
use crate::{
    engine::{
        health::{RunChange, pauses_itself, run_event},
        notify::{ChannelTarget, NOTIFY_MAX_ATTEMPTS, Notice, body, fan_out},
        tasks::{JobSpec, Task},
    },
    model::{
        ChannelKind, ChannelName, DeliveryStatus, NotificationChannel, NotificationEvent, RunStatus,
    },
};

/// The most channels a company may have.
pub const MAX_CHANNELS_PER_COMPANY: i64 = 50;
/// The most routines a channel may name, and a bulk pause or resume may select by id.
pub const MAX_NAMED_ROUTINES: usize = 500;

/// A new notification channel.
#[derive(Debug, Clone)]
pub struct NewChannel {
    /// Name.
    pub name: ChannelName,
    /// Kind.
    pub kind: ChannelKind,
    /// Where it posts (checked against the outbound address rules).
    pub url: String,
    /// The events it receives (not empty).
    pub events: Vec<NotificationEvent>,
    /// The routines it is told about; `None` for all.
    pub routine_ids: Option<Vec<Uuid>>,
    /// Whether it receives anything.
    pub enabled: bool,
}

/// Changes to a channel; `None` keeps a field, `Some(None)` clears `routine_ids` (all routines).
#[derive(Debug, Clone, Default)]
pub struct ChannelChanges {
    /// New name.
    pub name: Option<ChannelName>,
    /// New URL.
    pub url: Option<String>,
    /// New events.
    pub events: Option<Vec<NotificationEvent>>,
    /// New routines (or all).
    pub routine_ids: Option<Option<Vec<Uuid>>>,
    /// Enabled or not.
    pub enabled: Option<bool>,
}

/// A channel just created, with its signing secret (shown only here).
#[derive(Debug, Clone)]
pub struct CreatedChannel {
    /// The channel.
    pub channel: NotificationChannel,
    /// A `webhook` channel's Standard Webhooks secret (`whsec_…`); `None` for `slack`.
    pub signing_secret: Option<String>,
}

/// A notification to POST, as a worker needs it.
#[derive(Clone)]
pub struct Outgoing {
    /// The notification's id (`webhook-id`).
    pub id: Uuid,
    /// Its channel's kind.
    pub kind: ChannelKind,
    /// Its channel's URL.
    pub url: String,
    /// A `webhook` channel's secret.
    pub secret: Option<String>,
    /// The body `{type, timestamp, data}`.
    pub body: Value,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// What one delivery attempt of a notification came to.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// A 2xx answer.
    Delivered {
        /// Its status.
        status_code: i32,
    },
    /// Anything else: retried unless `last`, then `failed`.
    Failed {
        /// The answer's status, if there was one.
        status_code: Option<i32>,
        /// Why, in words (`forbidden_address` for a refused destination).
        error: String,
        /// Whether no attempt follows.
        last: bool,
    },
}

impl Attempt {
    /// What the notification records of it: its new status, the answer's status, the error.
    pub(crate) fn recorded(self) -> (DeliveryStatus, Option<i32>, Option<String>) {
        match self {
            Self::Delivered { status_code } => (DeliveryStatus::Delivered, Some(status_code), None),
            Self::Failed {
                status_code,
                error,
                last,
            } => {
                let status = if last {
                    DeliveryStatus::Failed
                } else {
                    DeliveryStatus::Pending
                };
                (status, status_code, Some(error))
            }
        }
    }
}

/// Which routines of a company a bulk pause or resume selects: exactly one way.
#[derive(Debug, Clone)]
pub enum RoutineSelector {
    /// These routines (ids of another company select nothing).
    Ids(Vec<Uuid>),
    /// The routines assigned to this agent.
    Assignee(Uuid),
    /// The routines of this project.
    Project(Uuid),
}

/// What one step of the scheduler's upkeep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpkeepReport {
    /// Paused routines whose `pausedUntil` came, now active.
    pub resumed: u64,
    /// Runs whose `runTimeoutSec` ran out with their issue open, now failed.
    pub timed_out: u64,
}

/// The notices the operations that change runs write.
impl Notice {
    /// A notice about a run of `routine`.
    pub(crate) fn run(event: NotificationEvent, routine: &RoutineRow, run_id: Uuid) -> Self {
        Self {
            run_id: Some(run_id),
            ..Self::routine(event, routine)
        }
    }

    /// A notice about `routine` itself.
    pub(crate) fn routine(event: NotificationEvent, routine: &RoutineRow) -> Self {
        Self {
            event,
            company_id: routine.company_id,
            routine_id: Some(routine.id),
            data: json!({ "routine": routine_brief(routine) }),
            run_id: None,
            heartbeat_run_id: None,
        }
    }

    /// A notice about a heartbeat run (of `routine_id`'s run, if it came from one).
    pub(crate) fn heartbeat(
        event: NotificationEvent,
        company_id: Uuid,
        routine_id: Option<Uuid>,
        heartbeat_run_id: Uuid,
    ) -> Self {
        Self {
            event,
            company_id,
            routine_id,
            data: json!({}),
            run_id: None,
            heartbeat_run_id: Some(heartbeat_run_id),
        }
    }

    /// The `test` notice of a channel.
    pub(crate) fn test(channel: &NotificationChannel) -> Self {
        Self {
            event: NotificationEvent::Test,
            company_id: channel.company_id,
            routine_id: None,
            data: json!({ "channel": { "id": channel.id, "name": channel.name } }),
            run_id: None,
            heartbeat_run_id: None,
        }
    }
}

/// The notices among `notices` that some enabled channel among `channels` receives, as the
/// payload of the one `fan_out_notices` job a change writes; `None` when no channel does (the
/// change then writes nothing more).
pub(crate) fn fan_out_job(
    notices: Vec<Notice>,
    channels: &[ChannelTarget],
    now: DateTime<Utc>,
) -> Option<JobSpec> {
    let received: Vec<Notice> = notices
        .into_iter()
        .filter(|n| {
            channels
                .iter()
                .any(|c| c.receives(n.company_id, n.event, n.routine_id))
        })
        .collect();
    if received.is_empty() {
        return None;
    }
    Some(JobSpec {
        task: Task::FanOutNotices { notices: received },
        run_at: now,
        max_attempts: NOTIFY_MAX_ATTEMPTS,
        trace_context: None,
    })
}

/// The delivery job of each notification.
pub(crate) fn delivery_jobs(ids: &[Uuid], now: DateTime<Utc>) -> Vec<JobSpec> {
    ids.iter()
        .map(|id| JobSpec {
            task: Task::DeliverNotification {
                notification_id: *id,
            },
            run_at: now,
            max_attempts: NOTIFY_MAX_ATTEMPTS,
            trace_context: None,
        })
        .collect()
}

/// The run and the heartbeat run a notice is about, as the API shows them.
pub(crate) type Subjects = (Option<Value>, Option<Value>);

/// The notifications a fan-out writes: for each notice and each channel receiving it, a row
/// `(id, channel, notice, body)`; `subjects` gives the run and heartbeat run each notice is
/// about, as the API shows them.
pub(crate) fn notifications(
    notices: &[Notice],
    channels: &[ChannelTarget],
    subjects: &dyn Fn(&Notice) -> Subjects,
    at: DateTime<Utc>,
) -> Vec<(Uuid, Uuid, Notice, Value)> {
    let mut rows = Vec::new();
    for (notice, to) in fan_out(notices, channels) {
        let (run, heartbeat_run) = subjects(notice);
        let notice = notice.with_subject(run, heartbeat_run);
        let body = body(&notice, at);
        for channel in to {
            rows.push((super::new_id(), channel, notice.clone(), body.clone()));
        }
    }
    rows
}

/// The routines whose runs `changes` finished or skipped as missed (in id order), and which of
/// them had a run finished; the rest of the changes concern no routine's health.
pub(crate) fn touched(changes: &[RunChange]) -> (Vec<Uuid>, Vec<Uuid>) {
    let mut routines: Vec<Uuid> = changes
        .iter()
        .filter(|c| c.finished() || c.missed())
        .map(|c| c.routine_id)
        .collect();
    routines.sort_unstable();
    routines.dedup();
    let finished = routines
        .iter()
        .copied()
        .filter(|id| changes.iter().any(|c| c.routine_id == *id && c.finished()))
        .collect();
    (routines, finished)
}

/// What the changes of one routine's runs announce, and whether the routine pauses itself:
/// `routine` as it is after the change (its failures in a row recounted), `before` its failures
/// in a row until then.
pub(crate) fn settled(
    routine: &RoutineRow,
    before: i32,
    changes: &[RunChange],
) -> (Vec<Notice>, bool) {
    let after = routine.consecutive_failures;
    let pending = changes
        .iter()
        .filter(|c| c.routine_id == routine.id)
        .filter_map(|change| {
            run_event(change, (before, after))
                .map(|event| Notice::run(event, routine, change.run_id))
        })
        .collect();
    let pauses = pauses_itself(routine.status, routine.pause_after_failures, after);
    (pending, pauses)
}

/// Counts the runs that failed among `changes`, by reason (`nexus_runs_failed_total`), in the
/// process that failed them. Counted when written: a transaction rolled back after this
/// (rare: the database failed) still counts.
pub(crate) fn count_failures(changes: &[RunChange]) {
    for change in changes.iter().filter(|c| c.status == RunStatus::Failed) {
        let reason = change
            .reason
            .clone()
            .unwrap_or_else(|| "unknown".to_owned());
        metrics::counter!("nexus_runs_failed_total", "reason" => reason).increment(1);
    }
}

/// What a notification says of a routine.
pub(crate) fn routine_brief(routine: &RoutineRow) -> Value {
    json!({
        "id": routine.id,
        "title": routine.title,
        "status": routine.status,
        "assigneeAgentId": routine.assignee_agent_id,
        "projectId": routine.project_id,
        "consecutiveFailures": routine.consecutive_failures,
        "pauseAfterFailures": routine.pause_after_failures,
        "pausedReason": routine.paused_reason,
    })
}
