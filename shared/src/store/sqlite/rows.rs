//! How SQLite rows are read: the columns each row type is selected with (macros, so a
//! statement spells them once), and how rows become the engine's types (the engine knows no
//! database; Postgres builds them with its checked `query_as!` macros).

/// The columns of a [`RoutineRow`].
macro_rules! routine_columns {
    () => {
        "id, company_id, title, description, assignee_agent_id, project_id, goal_id,
         parent_issue_id, priority, status, concurrency_policy, catch_up_policy, catch_up_cap,
         last_triggered_at, created_at, updated_at, run_timeout_sec, pause_after_failures,
         paused_reason, pause_note, paused_until, paused_at, consecutive_failures"
    };
}

/// The columns of a [`TriggerRow`].
macro_rules! trigger_columns {
    () => {
        "id, routine_id, kind, label, enabled, cron_expression, timezone, next_run_at, public_id,
         signing_mode, replay_window_sec, last_fired_at, last_result, created_at, updated_at,
         prepared_fire_at, jitter_sec, previous_secret_expires_at"
    };
}

/// The columns of an [`Issue`].
macro_rules! issue_columns {
    () => {
        "id, company_id, title, description, project_id, goal_id, parent_issue_id,
         assignee_agent_id, priority, status, routine_id, origin_run_id, created_at, updated_at"
    };
}

/// The columns of a [`HeartbeatRow`].
macro_rules! heartbeat_columns {
    () => {
        "id, company_id, agent_id, issue_id, routine_run_id, status, context, created_at,
         started_at, finished_at, summary"
    };
}

/// The columns of an [`AgentRow`].
macro_rules! agent_columns {
    () => {
        "id, company_id, name, status, wakeup_kind, wakeup_url, created_at"
    };
}

use sqlx::{FromRow, Row as _, sqlite::SqliteRow};

use crate::engine::dispatch::{PendingRun, RoutineRow};

impl FromRow<'_, SqliteRow> for RoutineRow {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            company_id: row.try_get("company_id")?,
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            assignee_agent_id: row.try_get("assignee_agent_id")?,
            project_id: row.try_get("project_id")?,
            goal_id: row.try_get("goal_id")?,
            parent_issue_id: row.try_get("parent_issue_id")?,
            priority: row.try_get("priority")?,
            status: row.try_get("status")?,
            concurrency_policy: row.try_get("concurrency_policy")?,
            catch_up_policy: row.try_get("catch_up_policy")?,
            catch_up_cap: row.try_get("catch_up_cap")?,
            last_triggered_at: row.try_get("last_triggered_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            run_timeout_sec: row.try_get("run_timeout_sec")?,
            pause_after_failures: row.try_get("pause_after_failures")?,
            paused_reason: row.try_get("paused_reason")?,
            pause_note: row.try_get("pause_note")?,
            paused_until: row.try_get("paused_until")?,
            paused_at: row.try_get("paused_at")?,
            consecutive_failures: row.try_get("consecutive_failures")?,
        })
    }
}

impl FromRow<'_, SqliteRow> for PendingRun {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            routine_id: row.try_get("routine_id")?,
            source: row.try_get("source")?,
            trigger_id: row.try_get("trigger_id")?,
            timezone: row.try_get("timezone")?,
            scheduled_for: row.try_get("scheduled_for")?,
            fire_at: row.try_get("fire_at")?,
            triggered_at: row.try_get("triggered_at")?,
            catch_up: row.try_get("catch_up")?,
            payload: row.try_get("payload")?,
        })
    }
}
