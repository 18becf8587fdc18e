//! Routines on SQLite: create, read, list, update under the engine's lifecycle rules (an
//! archived routine is frozen).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{
    SqliteStore, agents::ensure_assignable, catalog::ensure_references, company_exists, record,
    schedules::reschedule_routine_triggers,
};
use crate::{
    engine::{
        health::pause_after,
        refusal::{RoutineAttempt, routine_allows},
    },
    model::{
        Actor, CatchUpCap, CatchUpPolicy, ConcurrencyPolicy, Description, LastRun,
        PauseAfterFailures, PausedReason, Priority, Routine, RoutineStatus, RunStatus, RunTimeout,
        Trigger,
    },
    store::{
        NewActivity, NewRoutine, Pause, RoutineChanges, RoutineFilter, RoutineSelector, StoreError,
        StoreResult, new_id, routines::RoutineRow, triggers::TriggerRow,
    },
};

pub(super) async fn fetch_routine(
    conn: &mut SqliteConnection,
    id: Uuid,
) -> StoreResult<RoutineRow> {
    sqlx::query_as::<_, RoutineRow>(concat!(
        "SELECT ",
        routine_columns!(),
        " FROM routines WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

/// Applies `changes` to a routine, enforcing the lifecycle (the engine decides the pause
/// fields), and records the change; also says whether the scheduler should look again (its
/// status or the end of its pause changed), for the caller to announce after commit.
pub(super) async fn change_routine(
    conn: &mut SqliteConnection,
    id: Uuid,
    changes: &RoutineChanges,
    actor: Actor,
    now: DateTime<Utc>,
) -> StoreResult<(RoutineRow, bool)> {
    let current = fetch_routine(conn, id).await?;
    routine_allows(current.status, RoutineAttempt::Change)?;
    if let Some(agent) = changes.assignee_agent_id
        && agent != current.assignee_agent_id
    {
        ensure_assignable(conn, current.company_id, agent).await?;
    }
    ensure_references(
        conn,
        current.company_id,
        changes.project_id,
        changes.goal_id.flatten(),
        changes.parent_issue_id.flatten(),
    )
    .await?;
    let pause = pause_after(
        current.status,
        &current.pause_state(),
        &RoutineRow::pause_request(changes),
        now,
    );
    let row = sqlx::query_as::<_, RoutineRow>(concat!(
        "UPDATE routines SET
             title = COALESCE(?2, title),
             description = COALESCE(?3, description),
             assignee_agent_id = COALESCE(?4, assignee_agent_id),
             project_id = COALESCE(?5, project_id),
             goal_id = CASE WHEN ?6 THEN ?7 ELSE goal_id END,
             parent_issue_id = CASE WHEN ?8 THEN ?9 ELSE parent_issue_id END,
             priority = COALESCE(?10, priority),
             status = COALESCE(?11, status),
             concurrency_policy = COALESCE(?12, concurrency_policy),
             catch_up_policy = COALESCE(?13, catch_up_policy),
             catch_up_cap = COALESCE(?14, catch_up_cap),
             updated_at = ?15,
             run_timeout_sec = CASE WHEN ?16 THEN ?17 ELSE run_timeout_sec END,
             pause_after_failures = CASE WHEN ?18 THEN ?19 ELSE pause_after_failures END,
             paused_reason = ?20, pause_note = ?21, paused_until = ?22, paused_at = ?23
         WHERE id = ?1
         RETURNING ",
        routine_columns!()
    ))
    .bind(id)
    .bind(changes.title.as_ref().map(crate::model::Title::as_str))
    .bind(changes.description.as_ref().map(Description::as_str))
    .bind(changes.assignee_agent_id)
    .bind(changes.project_id)
    .bind(changes.goal_id.is_some())
    .bind(changes.goal_id.flatten())
    .bind(changes.parent_issue_id.is_some())
    .bind(changes.parent_issue_id.flatten())
    .bind(changes.priority.map(Priority::as_str))
    .bind(changes.status.map(RoutineStatus::as_str))
    .bind(changes.concurrency_policy.map(ConcurrencyPolicy::as_str))
    .bind(changes.catch_up_policy.map(CatchUpPolicy::as_str))
    .bind(changes.catch_up_cap.map(CatchUpCap::get))
    .bind(now)
    .bind(changes.run_timeout_sec.is_some())
    .bind(changes.run_timeout_sec.flatten().map(RunTimeout::get))
    .bind(changes.pause_after_failures.is_some())
    .bind(
        changes
            .pause_after_failures
            .flatten()
            .map(PauseAfterFailures::get),
    )
    .bind(pause.reason.map(PausedReason::as_str))
    .bind(pause.note)
    .bind(pause.until)
    .bind(pause.at)
    .fetch_one(&mut *conn)
    .await?;
    let rescheduled = row.status != current.status;
    if rescheduled {
        reschedule_routine_triggers(conn, id, row.status == RoutineStatus::Active, now).await?;
    }
    let entry = NewActivity::routine_updated(&current, &row, actor);
    record(conn, vec![entry], now).await?;
    let look_again = rescheduled || row.paused_until != current.paused_until;
    Ok((row, look_again))
}

/// The newest visible run (triggered by `now`) of each routine.
pub(super) async fn last_runs(
    conn: &mut SqliteConnection,
    routine_ids: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<HashMap<Uuid, LastRun>> {
    let mut last = HashMap::new();
    for routine_id in routine_ids {
        let row = sqlx::query_as::<_, (Uuid, RunStatus, Option<String>, DateTime<Utc>)>(
            "SELECT id, status, reason, triggered_at FROM routine_runs
             WHERE routine_id = ?1 AND triggered_at <= ?2
             ORDER BY triggered_at DESC, id DESC LIMIT 1",
        )
        .bind(routine_id)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((id, status, reason, triggered_at)) = row {
            last.insert(
                *routine_id,
                LastRun {
                    id,
                    status,
                    reason,
                    triggered_at,
                },
            );
        }
    }
    Ok(last)
}

impl SqliteStore {
    /// See [`crate::store::Storage::create_routine`].
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`, `Refused`; the database failed.
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
        ensure_references(
            &mut tx,
            company_id,
            Some(new.project_id),
            new.goal_id,
            new.parent_issue_id,
        )
        .await?;
        let row = sqlx::query_as::<_, RoutineRow>(concat!(
            "INSERT INTO routines (id, company_id, title, description, assignee_agent_id, project_id,
                                   goal_id, parent_issue_id, priority, status, concurrency_policy,
                                   catch_up_policy, catch_up_cap, created_at, updated_at,
                                   run_timeout_sec, pause_after_failures, paused_reason, paused_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15, ?16,
                     CASE WHEN ?17 IS NULL THEN NULL ELSE 'manual' END, ?17)
             RETURNING ",
            routine_columns!()
        ))
        .bind(new_id())
        .bind(company_id)
        .bind(new.title.as_str())
        .bind(new.description.as_str())
        .bind(new.assignee_agent_id)
        .bind(new.project_id)
        .bind(new.goal_id)
        .bind(new.parent_issue_id)
        .bind(new.priority.as_str())
        .bind(new.status.as_str())
        .bind(new.concurrency_policy.as_str())
        .bind(new.catch_up_policy.as_str())
        .bind(new.catch_up_cap.get())
        .bind(now)
        .bind(new.run_timeout_sec.map(RunTimeout::get))
        .bind(new.pause_after_failures.map(PauseAfterFailures::get))
        .bind((new.status == RoutineStatus::Paused).then_some(now))
        .fetch_one(&mut *tx)
        .await?;
        let entry = NewActivity::routine_created(&row, actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(row.with_triggers(Vec::new(), None))
    }

    /// See [`crate::store::Storage::routine`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn routine(&self, id: Uuid) -> StoreResult<Routine> {
        let mut conn = self.pool.acquire().await?;
        let row = fetch_routine(&mut conn, id).await?;
        Ok(self.shown(&mut conn, vec![row]).await?.remove(0))
    }

    /// See [`crate::store::Storage::routines`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn routines(
        &self,
        company_id: Uuid,
        filter: RoutineFilter,
    ) -> StoreResult<Vec<Routine>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query_as::<_, RoutineRow>(concat!(
            "SELECT ",
            routine_columns!(),
            " FROM routines
              WHERE company_id = ?1
                AND (?2 IS NULL OR status = ?2)
                AND (?3 IS NULL OR project_id = ?3)
                AND (?4 IS NULL OR assignee_agent_id = ?4)
                AND (?5 IS NULL OR id < ?5)
                AND (NOT ?7 OR consecutive_failures > 0)
              ORDER BY id DESC
              LIMIT ?6"
        ))
        .bind(company_id)
        .bind(filter.status.map(RoutineStatus::as_str))
        .bind(filter.project_id)
        .bind(filter.assignee_agent_id)
        .bind(filter.before)
        .bind(filter.limit)
        .bind(filter.failing)
        .fetch_all(&mut *conn)
        .await?;
        self.shown(&mut conn, rows).await
    }

    /// Routines as shown: each row with its triggers and its newest run.
    pub(super) async fn shown(
        &self,
        conn: &mut SqliteConnection,
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

    /// See [`crate::store::Storage::update_routine`].
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`, `Refused`; the database failed.
    pub async fn update_routine(
        &self,
        id: Uuid,
        changes: RoutineChanges,
        actor: Actor,
    ) -> StoreResult<Routine> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let (row, rescheduled) = change_routine(&mut tx, id, &changes, actor, now).await?;
        let routine = self.shown(&mut tx, vec![row]).await?.remove(0);
        tx.commit().await?;
        if rescheduled {
            self.announce_triggers();
        }
        Ok(routine)
    }

    async fn triggers_of(
        &self,
        conn: &mut SqliteConnection,
        routine_ids: &[Uuid],
    ) -> StoreResult<HashMap<Uuid, Vec<Trigger>>> {
        let mut grouped: HashMap<Uuid, Vec<Trigger>> = HashMap::new();
        for routine_id in routine_ids {
            let rows = sqlx::query_as::<_, TriggerRow>(concat!(
                "SELECT ",
                trigger_columns!(),
                " FROM routine_triggers WHERE routine_id = ?1 ORDER BY created_at, id"
            ))
            .bind(routine_id)
            .fetch_all(&mut *conn)
            .await?;
            for row in rows {
                grouped
                    .entry(row.routine_id)
                    .or_default()
                    .push(row.into_trigger(&self.public_url, self.now()));
            }
        }
        Ok(grouped)
    }
}

impl SqliteStore {
    /// See [`crate::store::Storage::set_routines_paused`].
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
        let (from, to) = if pause.is_some() {
            (RoutineStatus::Active, RoutineStatus::Paused)
        } else {
            (RoutineStatus::Paused, RoutineStatus::Active)
        };
        let mut tx = self.pool.begin().await?;
        // The routines of the company in `from` that the selector names, in id order.
        let (assignee, project) = match &selector {
            RoutineSelector::Ids(_) => (None, None),
            RoutineSelector::Assignee(agent) => (Some(*agent), None),
            RoutineSelector::Project(project) => (None, Some(*project)),
        };
        let mut selected = sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM routines
             WHERE company_id = ?1 AND status = ?2
               AND (?3 IS NULL OR assignee_agent_id = ?3) AND (?4 IS NULL OR project_id = ?4)
             ORDER BY id",
        )
        .bind(company_id)
        .bind(from.as_str())
        .bind(assignee)
        .bind(project)
        .fetch_all(&mut *tx)
        .await?;
        if let RoutineSelector::Ids(ids) = &selector {
            let named: std::collections::HashSet<&Uuid> = ids.iter().collect();
            selected.retain(|id| named.contains(id));
        }
        let changes = RoutineChanges {
            status: Some(to),
            pause: pause.unwrap_or_default(),
            ..RoutineChanges::default()
        };
        let mut rows = Vec::with_capacity(selected.len());
        for id in selected {
            rows.push(change_routine(&mut tx, id, &changes, actor, now).await?.0);
        }
        let routines = self.shown(&mut tx, rows).await?;
        tx.commit().await?;
        if !routines.is_empty() {
            self.announce_triggers();
        }
        Ok(routines)
    }
}
