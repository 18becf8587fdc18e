//! Routines: what the routine operations take, a routine row with its triggers, and the audit
//! details of a change.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::engine::health::{PauseRequest, PauseState};
use crate::model::{
    CatchUpCap, CatchUpPolicy, ConcurrencyPolicy, Description, LastRun, PauseAfterFailures,
    Priority, Routine, RoutineStatus, RunTimeout, Title, Trigger, TriggerConfig,
};

/// A new routine.
#[derive(Debug)]
pub struct NewRoutine {
    /// Title.
    pub title: Title,
    /// Description.
    pub description: Description,
    /// Assignee, an agent of the company that is not terminated.
    pub assignee_agent_id: Uuid,
    /// Project, of the company.
    pub project_id: Uuid,
    /// Goal, of the company.
    pub goal_id: Option<Uuid>,
    /// Parent issue, of the company.
    pub parent_issue_id: Option<Uuid>,
    /// Priority.
    pub priority: Priority,
    /// `active` or `paused`.
    pub status: RoutineStatus,
    /// Concurrency policy.
    pub concurrency_policy: ConcurrencyPolicy,
    /// Catch-up policy.
    pub catch_up_policy: CatchUpPolicy,
    /// Catch-up cap.
    pub catch_up_cap: CatchUpCap,
    /// Run timeout.
    pub run_timeout_sec: Option<RunTimeout>,
    /// Failures in a row that pause it.
    pub pause_after_failures: Option<PauseAfterFailures>,
}

/// Changes to a routine; `None` keeps a field, `Some(None)` clears a nullable one.
#[derive(Debug, Default)]
pub struct RoutineChanges {
    /// New title.
    pub title: Option<Title>,
    /// New description.
    pub description: Option<Description>,
    /// New assignee.
    pub assignee_agent_id: Option<Uuid>,
    /// New project.
    pub project_id: Option<Uuid>,
    /// New or cleared goal.
    pub goal_id: Option<Option<Uuid>>,
    /// New or cleared parent issue.
    pub parent_issue_id: Option<Option<Uuid>>,
    /// New priority.
    pub priority: Option<Priority>,
    /// New status.
    pub status: Option<RoutineStatus>,
    /// New concurrency policy.
    pub concurrency_policy: Option<ConcurrencyPolicy>,
    /// New catch-up policy.
    pub catch_up_policy: Option<CatchUpPolicy>,
    /// New catch-up cap.
    pub catch_up_cap: Option<CatchUpCap>,
    /// New or cleared run timeout.
    pub run_timeout_sec: Option<Option<RunTimeout>>,
    /// New or cleared failures in a row that pause it.
    pub pause_after_failures: Option<Option<PauseAfterFailures>>,
    /// The note and end of a pause (only with `status: paused`).
    pub pause: Pause,
}

/// A pause as a person asks for it.
#[derive(Debug, Clone, Default)]
pub struct Pause {
    /// The note (≤ 500 characters).
    pub note: Option<String>,
    /// When it ends by itself.
    pub until: Option<DateTime<Utc>>,
}

/// Which routines of a company to list, newest first.
#[derive(Debug, Default)]
pub struct RoutineFilter {
    /// Only routines in this status.
    pub status: Option<RoutineStatus>,
    /// Only routines of this project.
    pub project_id: Option<Uuid>,
    /// Only routines assigned to this agent.
    pub assignee_agent_id: Option<Uuid>,
    /// Only routines whose newest finished run failed (`consecutiveFailures` above 0).
    pub failing: bool,
    /// Only routines older than this one (cursor).
    pub before: Option<Uuid>,
    /// At most this many.
    pub limit: i64,
}

pub(crate) use crate::engine::dispatch::RoutineRow;

impl RoutineRow {
    /// Its pause fields.
    pub(crate) fn pause_state(&self) -> PauseState {
        PauseState {
            reason: self.paused_reason,
            note: self.pause_note.clone(),
            until: self.paused_until,
            at: self.paused_at,
        }
    }

    /// What `changes` ask of its pause.
    pub(crate) fn pause_request(changes: &RoutineChanges) -> PauseRequest {
        PauseRequest {
            status: changes.status,
            note: changes.pause.note.clone(),
            until: changes.pause.until,
        }
    }

    /// The routine as shown: its row, its triggers and its newest run.
    pub(crate) fn with_triggers(
        self,
        triggers: Vec<Trigger>,
        last_run: Option<LastRun>,
    ) -> Routine {
        let next_run_at = triggers
            .iter()
            .filter(|t| t.enabled)
            .filter_map(|t| match t.config {
                TriggerConfig::Schedule { next_run_at, .. } => next_run_at,
                _ => None,
            })
            .min()
            .filter(|_| self.status == RoutineStatus::Active);
        Routine {
            id: self.id,
            company_id: self.company_id,
            title: self.title,
            description: self.description,
            assignee_agent_id: self.assignee_agent_id,
            project_id: self.project_id,
            goal_id: self.goal_id,
            parent_issue_id: self.parent_issue_id,
            priority: self.priority,
            status: self.status,
            concurrency_policy: self.concurrency_policy,
            catch_up_policy: self.catch_up_policy,
            catch_up_cap: self.catch_up_cap,
            triggers,
            last_triggered_at: self.last_triggered_at,
            next_run_at,
            last_run,
            consecutive_failures: self.consecutive_failures,
            run_timeout_sec: self.run_timeout_sec,
            pause_after_failures: self.pause_after_failures,
            paused_reason: self.paused_reason,
            pause_note: self.pause_note,
            paused_until: self.paused_until,
            paused_at: self.paused_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}
/// The fields a change altered, `{field: {from, to}}`.
pub(crate) fn routine_change_details(before: &RoutineRow, after: &RoutineRow) -> serde_json::Value {
    let mut changed = serde_json::Map::new();
    let mut note = |field: &str, from: serde_json::Value, to: serde_json::Value| {
        if from != to {
            changed.insert(field.to_owned(), json!({ "from": from, "to": to }));
        }
    };
    note("title", json!(before.title), json!(after.title));
    // Descriptions can be long: record only that it changed.
    note(
        "description",
        json!(false),
        json!(before.description != after.description),
    );
    note(
        "assigneeAgentId",
        json!(before.assignee_agent_id),
        json!(after.assignee_agent_id),
    );
    note(
        "projectId",
        json!(before.project_id),
        json!(after.project_id),
    );
    note("goalId", json!(before.goal_id), json!(after.goal_id));
    note(
        "parentIssueId",
        json!(before.parent_issue_id),
        json!(after.parent_issue_id),
    );
    note("priority", json!(before.priority), json!(after.priority));
    note("status", json!(before.status), json!(after.status));
    note(
        "concurrencyPolicy",
        json!(before.concurrency_policy),
        json!(after.concurrency_policy),
    );
    note(
        "catchUpPolicy",
        json!(before.catch_up_policy),
        json!(after.catch_up_policy),
    );
    note(
        "catchUpCap",
        json!(before.catch_up_cap),
        json!(after.catch_up_cap),
    );
    note(
        "runTimeoutSec",
        json!(before.run_timeout_sec),
        json!(after.run_timeout_sec),
    );
    note(
        "pauseAfterFailures",
        json!(before.pause_after_failures),
        json!(after.pause_after_failures),
    );
    note(
        "pausedReason",
        json!(before.paused_reason),
        json!(after.paused_reason),
    );
    note(
        "pauseNote",
        json!(before.pause_note),
        json!(after.pause_note),
    );
    note(
        "pausedUntil",
        json!(before.paused_until),
        json!(after.paused_until),
    );
    serde_json::Value::Object(changed)
}
