//! Routines: create, read, list, update with the lifecycle rules.
//!
//! `active ⇄ paused`, `active | paused → archived`; archived is terminal. A routine that is not
//! active has no `next_run_at` on its schedule triggers, so the scheduler never sees them;
//! resuming computes each enabled schedule trigger's next fire from the current time, so the
//! fires that fell while it was paused are not caught up.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    PgStore,
    agents::ensure_assignable,
    company_exists,
    schedules::{announce_trigger_change, reschedule_routine_triggers},
};
use crate::{
    engine::{
        health::pause_after,
        refusal::{RoutineAttempt, routine_allows},
    },
    model::{
        Actor, CatchUpCap, CatchUpPolicy, ConcurrencyPolicy, Description, LastRun,
        PauseAfterFailures, PausedReason, Priority, Routine, RoutineStatus, RunStatus, RunTimeout,
        Title, Trigger,
    },
    store::{
        NewActivity, NewRoutine, Pause, RoutineChanges, RoutineFilter, RoutineSelector, StoreError,
        StoreResult, new_id, routines::RoutineRow, triggers::TriggerRow,
    },
};

/// Reads one routine row, optionally locking it (see [`fetch_routines`]).
pub(crate) async fn fetch_routine(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> StoreResult<RoutineRow> {
    fetch_routines(conn, &[id], lock)
        .await?
        .pop()
        .ok_or(StoreError::NotFound)
}

/// Reads routine rows in id order, optionally locking them, in that order, `FOR NO KEY
/// UPDATE`: enough for every change a routine gets (its key never changes), and — unlike
/// `FOR UPDATE` — not in conflict with the `FOR KEY SHARE` that inserting a row referencing
/// the routine takes. With `FOR UPDATE`, a fire pass holding a trigger and inserting a run of
/// the routine, and a dispatch holding the routine and recording the trigger's last result,
/// deadlock.
pub(crate) async fn fetch_routines(
    conn: &mut PgConnection,
    ids: &[Uuid],
    lock: bool,
) -> StoreResult<Vec<RoutineRow>> {
    let rows = if lock {
        sqlx::query_as!(
            RoutineRow,
            r#"SELECT id, company_id, title, description, assignee_agent_id, project_id, goal_id,
                      parent_issue_id, priority AS "priority: Priority", status AS "status: RoutineStatus",
                      concurrency_policy AS "concurrency_policy: ConcurrencyPolicy",
                      catch_up_policy AS "catch_up_policy: CatchUpPolicy", catch_up_cap,
                      last_triggered_at, created_at, updated_at, run_timeout_sec, pause_after_failures,
                      paused_reason AS "paused_reason: PausedReason", pause_note, paused_until,
                      paused_at, consecutive_failures
               FROM routines WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"#,
            ids
        )
        .fetch_all(conn)
        .await?
    } else {
        sqlx::query_as!(
            RoutineRow,
            r#"SELECT id, company_id, title, description, assignee_agent_id, project_id, goal_id,
                      parent_issue_id, priority AS "priority: Priority", status AS "status: RoutineStatus",
                      concurrency_policy AS "concurrency_policy: ConcurrencyPolicy",
                      catch_up_policy AS "catch_up_policy: CatchUpPolicy", catch_up_cap,
                      last_triggered_at, created_at, updated_at, run_timeout_sec, pause_after_failures,
                      paused_reason AS "paused_reason: PausedReason", pause_note, paused_until,
                      paused_at, consecutive_failures
               FROM routines WHERE id = ANY($1) ORDER BY id"#,
            ids
        )
        .fetch_all(conn)
        .await?
    };
    Ok(rows)
}

/// Applies `changes` to a routine under its row lock, enforcing the lifecycle (the engine
/// decides the pause fields), and records the change: the one way a routine changes, by a
/// person, a bulk pause or the scheduler resuming it.
pub(crate) async fn change_routine(
    conn: &mut PgConnection,
    id: Uuid,
    changes: &RoutineChanges,
    actor: Actor,
    now: DateTime<Utc>,
) -> StoreResult<RoutineRow> {
    let current = fetch_routine(conn, id, true).await?;
    routine_allows(current.status, RoutineAttempt::Change)?;
    if let Some(agent) = changes.assignee_agent_id
        && agent != current.assignee_agent_id
    {
        ensure_assignable(conn, current.company_id, agent).await?;
    }
    let pause = pause_after(
        current.status,
        &current.pause_state(),
        &RoutineRow::pause_request(changes),
        now,
    );
    let row = sqlx::query_as!(
        RoutineRow,
        r#"UPDATE routines SET
               title = COALESCE($2, title),
               description = COALESCE($3, description),
               assignee_agent_id = COALESCE($4, assignee_agent_id),
               project_id = COALESCE($5, project_id),
               goal_id = CASE WHEN $6 THEN $7 ELSE goal_id END,
               parent_issue_id = CASE WHEN $8 THEN $9 ELSE parent_issue_id END,
               priority = COALESCE($10, priority),
               status = COALESCE($11, status),
               concurrency_policy = COALESCE($12, concurrency_policy),
               catch_up_policy = COALESCE($13, catch_up_policy),
               catch_up_cap = COALESCE($14, catch_up_cap),
               updated_at = $15,
               run_timeout_sec = CASE WHEN $16 THEN $17 ELSE run_timeout_sec END,
               pause_after_failures = CASE WHEN $18 THEN $19 ELSE pause_after_failures END,
               paused_reason = $20, pause_note = $21, paused_until = $22, paused_at = $23
           WHERE id = $1
           RETURNING id, company_id, title, description, assignee_agent_id, project_id, goal_id,
                     parent_issue_id, priority AS "priority: Priority",
                     status AS "status: RoutineStatus",
                     concurrency_policy AS "concurrency_policy: ConcurrencyPolicy",
                     catch_up_policy AS "catch_up_policy: CatchUpPolicy", catch_up_cap,
                     last_triggered_at, created_at, updated_at, run_timeout_sec, pause_after_failures,
                     paused_reason AS "paused_reason: PausedReason", pause_note, paused_until,
                     paused_at, consecutive_failures"#,
        id,
        changes.title.as_ref().map(Title::as_str),
        changes.description.as_ref().map(Description::as_str),
        changes.assignee_agent_id,
        changes.project_id,
        changes.goal_id.is_some(),
        changes.goal_id.flatten(),
        changes.parent_issue_id.is_some(),
        changes.parent_issue_id.flatten(),
        changes.priority.map(Priority::as_str),
        changes.status.map(RoutineStatus::as_str),
        changes.concurrency_policy.map(ConcurrencyPolicy::as_str),
        changes.catch_up_policy.map(CatchUpPolicy::as_str),
        changes.catch_up_cap.map(CatchUpCap::get),
        now,
        changes.run_timeout_sec.is_some(),
        changes.run_timeout_sec.flatten().map(RunTimeout::get),
        changes.pause_after_failures.is_some(),
        changes.pause_after_failures.flatten().map(PauseAfterFailures::get),
        pause.reason.map(PausedReason::as_str),
        pause.note,
        pause.until,
        pause.at,
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::from_reference_violation)?;
    if row.status != current.status {
        reschedule_routine_triggers(conn, id, row.status == RoutineStatus::Active, now).await?;
    }
    if row.status != current.status || row.paused_until != current.paused_until {
        // The scheduler may have a fire or the end of a pause to look at again.
        announce_trigger_change(conn).await?;
    }
    NewActivity::routine_updated(&current, &row, actor)
        .record(conn, now)
        .await?;
    Ok(row)
}

/// The newest visible run (triggered by `now`) of each routine, one statement for all.
pub(crate) async fn last_runs(
    conn: &mut PgConnection,
    routine_ids: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<HashMap<Uuid, LastRun>> {
    Ok(sqlx::query!(
        r#"SELECT r.id AS routine_id, l.id, l.status AS "status: RunStatus", l.reason,
                  l.triggered_at
           FROM unnest($1::uuid[]) AS r(id)
           CROSS JOIN LATERAL (
               SELECT id, status, reason, triggered_at FROM routine_runs
               WHERE routine_id = r.id AND triggered_at <= $2
               ORDER BY triggered_at DESC, id DESC LIMIT 1) AS l"#,
        routine_ids,
        now,
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .filter_map(|row| {
        Some((
            row.routine_id?,
            LastRun {
                id: row.id,
                status: row.status,
                reason: row.reason,
                triggered_at: row.triggered_at,
            },
        ))
    })
    .collect())
}

impl PgStore {
    /// Creates a routine (without triggers; they are added separately).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown company; [`StoreError::InvalidReference`];
    /// [`StoreError::Refused`] `agent_not_assignable`; the database failed.
    pub async fn create_routine(
        &self,
        company_id: Uuid,
        new: NewRoutine,
        actor: Actor,
    ) -> StoreResult<Routine> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !company_exists(&mut tx, company_id).await? {
            return Err(StoreError::NotFound);
        }
        ensure_assignable(&mut tx, company_id, new.assignee_agent_id).await?;
        let paused = (new.status == RoutineStatus::Paused).then_some(now);
        let row = sqlx::query_as!(
            RoutineRow,
            r#"INSERT INTO routines (id, company_id, title, description, assignee_agent_id, project_id,
                                     goal_id, parent_issue_id, priority, status, concurrency_policy,
                                     catch_up_policy, catch_up_cap, created_at, updated_at,
                                     run_timeout_sec, pause_after_failures, paused_reason, paused_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16,
                       CASE WHEN $17::timestamptz IS NULL THEN NULL ELSE 'manual' END, $17)
               RETURNING id, company_id, title, description, assignee_agent_id, project_id, goal_id,
                         parent_issue_id, priority AS "priority: Priority",
                         status AS "status: RoutineStatus",
                         concurrency_policy AS "concurrency_policy: ConcurrencyPolicy",
                         catch_up_policy AS "catch_up_policy: CatchUpPolicy", catch_up_cap,
                      last_triggered_at, created_at, updated_at, run_timeout_sec, pause_after_failures,
                      paused_reason AS "paused_reason: PausedReason", pause_note, paused_until,
                      paused_at, consecutive_failures"#,
            new_id(),
            company_id,
            new.title.as_str(),
            new.description.as_str(),
            new.assignee_agent_id,
            new.project_id,
            new.goal_id,
            new.parent_issue_id,
            new.priority.as_str(),
            new.status.as_str(),
            new.concurrency_policy.as_str(),
            new.catch_up_policy.as_str(),
            new.catch_up_cap.get(),
            now,
            new.run_timeout_sec.map(RunTimeout::get),
            new.pause_after_failures.map(PauseAfterFailures::get),
            paused,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from_reference_violation)?;
        NewActivity::routine_created(&row, actor)
            .record(&mut tx, now)
            .await?;
        tx.commit().await?;
        Ok(row.with_triggers(Vec::new(), None))
    }

    /// One routine with its triggers.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or the database failed.
    pub async fn routine(&self, id: Uuid) -> StoreResult<Routine> {
        let mut conn = self.pool.acquire().await?;
        let row = fetch_routine(&mut conn, id, false).await?;
        Ok(self.shown(&mut conn, vec![row]).await?.remove(0))
    }

    /// The routines of a company matching `filter`, newest first, with their triggers.
    ///
    /// # Errors
    /// The database failed.
    pub async fn routines(
        &self,
        company_id: Uuid,
        filter: RoutineFilter,
    ) -> StoreResult<Vec<Routine>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query_as!(
            RoutineRow,
            r#"SELECT id, company_id, title, description, assignee_agent_id, project_id, goal_id,
                      parent_issue_id, priority AS "priority: Priority", status AS "status: RoutineStatus",
                      concurrency_policy AS "concurrency_policy: ConcurrencyPolicy",
                      catch_up_policy AS "catch_up_policy: CatchUpPolicy", catch_up_cap,
                      last_triggered_at, created_at, updated_at, run_timeout_sec, pause_after_failures,
                      paused_reason AS "paused_reason: PausedReason", pause_note, paused_until,
                      paused_at, consecutive_failures
               FROM routines
               WHERE company_id = $1
                 AND ($2::text IS NULL OR status = $2)
                 AND ($3::uuid IS NULL OR project_id = $3)
                 AND ($4::uuid IS NULL OR assignee_agent_id = $4)
                 AND ($5::uuid IS NULL OR id < $5)
                 AND (NOT $7 OR consecutive_failures > 0)
               ORDER BY id DESC
               LIMIT $6"#,
            company_id,
            filter.status.map(RoutineStatus::as_str),
            filter.project_id,
            filter.assignee_agent_id,
            filter.before,
            filter.limit,
            filter.failing,
        )
        .fetch_all(&mut *conn)
        .await?;
        self.shown(&mut conn, rows).await
    }

    /// Routines as shown: each row with its triggers and its newest run, read for all of them
    /// in two statements.
    pub(crate) async fn shown(
        &self,
        conn: &mut PgConnection,
        rows: Vec<RoutineRow>,
    ) -> StoreResult<Vec<Routine>> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut triggers = self.triggers_of(conn, &ids).await?;
        let mut last = last_runs(conn, &ids, self.now()).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let own = triggers.remove(&row.id).unwrap_or_default();
                let last_run = last.remove(&row.id);
                row.with_triggers(own, last_run)
            })
            .collect())
    }

    /// Applies `changes` to a routine under a row lock, enforcing the lifecycle.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Refused`] `routine_archived` or
    /// `agent_not_assignable`; [`StoreError::InvalidReference`]; the database failed.
    pub async fn update_routine(
        &self,
        id: Uuid,
        changes: RoutineChanges,
        actor: Actor,
    ) -> StoreResult<Routine> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let row = change_routine(&mut tx, id, &changes, actor, now).await?;
        let routine = self.shown(&mut tx, vec![row]).await?.remove(0);
        tx.commit().await?;
        Ok(routine)
    }

    /// The triggers of the given routines, oldest first, grouped by routine.
    pub(crate) async fn triggers_of(
        &self,
        conn: &mut PgConnection,
        routine_ids: &[Uuid],
    ) -> StoreResult<HashMap<Uuid, Vec<Trigger>>> {
        let now = self.now();
        let rows = sqlx::query_as!(
            TriggerRow,
            r#"SELECT id, routine_id, kind AS "kind: _", label, enabled, cron_expression, timezone,
                      next_run_at, public_id, signing_mode AS "signing_mode: _", replay_window_sec,
                      last_fired_at, last_result, created_at, updated_at, prepared_fire_at, jitter_sec,
                      previous_secret_expires_at
               FROM routine_triggers WHERE routine_id = ANY($1)
               ORDER BY created_at, id"#,
            routine_ids,
        )
        .fetch_all(conn)
        .await?;
        let mut grouped: HashMap<Uuid, Vec<Trigger>> = HashMap::new();
        for row in rows {
            grouped
                .entry(row.routine_id)
                .or_default()
                .push(row.into_trigger(&self.public_url, now));
        }
        Ok(grouped)
    }
}

impl PgStore {
    /// Pauses (`pause` given) or resumes (`None`) the routines of a company the selector
    /// matches that are active (to pause) or paused (to resume); returns those that changed.
    ///
    /// # Errors
    /// The database failed.
    pub async fn set_routines_paused(
        &self,
        company_id: Uuid,
        selector: RoutineSelector,
        pause: Option<Pause>,
        actor: Actor,
    ) -> StoreResult<Vec<Routine>> {
        let now = self.now();
        let from = if pause.is_some() {
            RoutineStatus::Active
        } else {
            RoutineStatus::Paused
        };
        let (ids, assignee, project) = match selector {
            RoutineSelector::Ids(ids) => (Some(ids), None, None),
            RoutineSelector::Assignee(agent) => (None, Some(agent), None),
            RoutineSelector::Project(project) => (None, None, Some(project)),
        };
        let mut tx = self.pool.begin().await?;
        let selected = sqlx::query_scalar!(
            "SELECT id FROM routines
             WHERE company_id = $1 AND status = $2
               AND ($3::uuid[] IS NULL OR id = ANY($3))
               AND ($4::uuid IS NULL OR assignee_agent_id = $4)
               AND ($5::uuid IS NULL OR project_id = $5)
             ORDER BY id
             FOR NO KEY UPDATE",
            company_id,
            from.as_str(),
            ids.as_deref(),
            assignee,
            project,
        )
        .fetch_all(&mut *tx)
        .await?;
        let changes = RoutineChanges {
            status: Some(if pause.is_some() {
                RoutineStatus::Paused
            } else {
                RoutineStatus::Active
            }),
            pause: pause.unwrap_or_default(),
            ..RoutineChanges::default()
        };
        let mut rows = Vec::with_capacity(selected.len());
        for id in selected {
            rows.push(change_routine(&mut tx, id, &changes, actor, now).await?);
        }
        let routines = self.shown(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(routines)
    }
}
