//! Routine health on SQLite: the same operations as on Postgres (`store/pg/health.rs`), in
//! the one writer's transactions.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{
    SqliteStore,
    fires::fence,
    issues::insert_event,
    notifications::notify,
    record,
    routines::{change_routine, fetch_routine, reschedule_routine_triggers},
};
use crate::{
    engine::health::{RunChange, TIMED_OUT, TIMED_OUT_ENDING, pause_on_failures},
    model::{
        Actor, IssueEventType, IssueStatus, NotificationEvent, PausedReason, Routine, RoutineStatus,
    },
    store::{
        Leadership, NewActivity, RoutineChanges, StoreResult,
        notifications::{
            Pause, Pending, RoutineSelector, UpkeepReport, count_failures, settled, touched,
        },
        routines::RoutineRow,
    },
};

/// Keeps the health of the routines whose runs changed in this transaction and writes the
/// events the changes announce (see the Postgres backend); returns whether notification jobs
/// were enqueued, for the caller to announce after committing.
pub(super) async fn settle(
    conn: &mut SqliteConnection,
    changes: &[RunChange],
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let (routine_ids, finished) = touched(changes);
    if routine_ids.is_empty() {
        return Ok(false);
    }
    count_failures(changes);
    let mut pending = Vec::new();
    for routine_id in routine_ids {
        let mut routine = fetch_routine(conn, routine_id).await?;
        let before = routine.consecutive_failures;
        if finished.contains(&routine_id) {
            routine.consecutive_failures = failures_in_a_row(conn, routine_id).await?;
        }
        if routine.consecutive_failures != before {
            sqlx::query("UPDATE routines SET consecutive_failures = ?2 WHERE id = ?1")
                .bind(routine_id)
                .bind(routine.consecutive_failures)
                .execute(&mut *conn)
                .await?;
        }
        let (told, pauses) = settled(&routine, before, changes);
        pending.extend(told);
        if pauses {
            let paused = pause_itself(conn, &routine, now).await?;
            let event = NotificationEvent::RoutinePausedOnFailures;
            pending.push(Pending::routine(event, &paused));
        }
    }
    notify(conn, pending, now).await
}

/// As on Postgres: the failed runs after the routine's newest completed one.
async fn failures_in_a_row(conn: &mut SqliteConnection, routine_id: Uuid) -> StoreResult<i32> {
    let count = sqlx::query_scalar::<_, i64>(
        "WITH ok AS (SELECT triggered_at, id FROM routine_runs
                     WHERE routine_id = ?1 AND status = 'completed'
                     ORDER BY triggered_at DESC, id DESC LIMIT 1)
         SELECT count(*) FROM routine_runs f
         WHERE f.routine_id = ?1 AND f.status = 'failed'
           AND (NOT EXISTS (SELECT 1 FROM ok)
                OR (f.triggered_at, f.id) > (SELECT triggered_at, id FROM ok))",
    )
    .bind(routine_id)
    .fetch_one(conn)
    .await?;
    Ok(i32::try_from(count).unwrap_or(i32::MAX))
}

async fn pause_itself(
    conn: &mut SqliteConnection,
    routine: &RoutineRow,
    now: DateTime<Utc>,
) -> StoreResult<RoutineRow> {
    let pause = pause_on_failures(now);
    let row = sqlx::query_as::<_, RoutineRow>(concat!(
        "UPDATE routines SET status = 'paused', paused_reason = ?2, pause_note = NULL,
                             paused_until = NULL, paused_at = ?3, updated_at = ?3
         WHERE id = ?1
         RETURNING ",
        routine_columns!()
    ))
    .bind(routine.id)
    .bind(pause.reason.map(PausedReason::as_str))
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    reschedule_routine_triggers(conn, routine.id, false, now).await?;
    let entry = NewActivity::routine_updated(routine, &row, Actor::System);
    record(conn, vec![entry], now).await?;
    Ok(row)
}

/// As on Postgres: times out one overdue run whose issue is still open.
async fn time_out_run(
    conn: &mut SqliteConnection,
    run_id: Uuid,
    issue_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Option<RunChange>> {
    let issue = sqlx::query_as::<_, (Uuid, IssueStatus)>(
        "SELECT company_id, status FROM issues WHERE id = ?1",
    )
    .bind(issue_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((company_id, status)) = issue.filter(|(_, status)| !status.is_closed()) else {
        return Ok(None);
    };
    let ending = TIMED_OUT_ENDING;
    let routine_id = sqlx::query_scalar::<_, Uuid>(
        "UPDATE routine_runs SET status = ?2, reason = ?3, failure_reason = ?4,
                                 completed_at = ?5, updated_at = ?5, deadline_at = NULL
         WHERE id = ?1 AND status = 'issue_created' AND deadline_at <= ?5
         RETURNING routine_id",
    )
    .bind(run_id)
    .bind(ending.status.as_str())
    .bind(ending.reason)
    .bind(ending.failure)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(routine_id) = routine_id else {
        return Ok(None);
    };
    sqlx::query("UPDATE issues SET status = 'cancelled', updated_at = ?2 WHERE id = ?1")
        .bind(issue_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let change = json!({ "from": status, "to": IssueStatus::Cancelled, "reason": TIMED_OUT });
    insert_event(
        conn,
        (company_id, issue_id),
        IssueEventType::StatusChanged,
        Actor::System,
        &change,
        now,
    )
    .await?;
    sqlx::query(
        "UPDATE heartbeat_runs SET status = 'timed_out', finished_at = ?2
         WHERE issue_id = ?1 AND status IN ('queued', 'running')",
    )
    .bind(issue_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let entry = NewActivity::run_timed_out(company_id, run_id, issue_id);
    record(conn, vec![entry], now).await?;
    Ok(Some(RunChange {
        run_id,
        routine_id,
        status: ending.status,
        reason: ending.reason.map(str::to_owned),
    }))
}

impl SqliteStore {
    /// See [`crate::store::Storage::upkeep`].
    ///
    /// # Errors
    /// `Refused` `deposed`; the database failed.
    pub async fn upkeep(&self, leadership: &Leadership, batch: i64) -> StoreResult<UpkeepReport> {
        let now = self.now();
        let mut report = UpkeepReport::default();
        let mut enqueued = false;
        let mut tx = self.pool.begin().await?;
        fence(&mut tx, leadership, now).await?;
        let due = sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM routines WHERE status = 'paused' AND paused_until <= ?1
             ORDER BY paused_until LIMIT ?2",
        )
        .bind(now)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let changes = RoutineChanges {
            status: Some(RoutineStatus::Active),
            ..RoutineChanges::default()
        };
        for id in due {
            change_routine(&mut tx, id, &changes, Actor::System, now).await?;
            report.resumed += 1;
        }
        let overdue = sqlx::query_as::<_, (Uuid, Uuid)>(
            "SELECT id, linked_issue_id FROM routine_runs
             WHERE status = 'issue_created' AND deadline_at <= ?1 AND linked_issue_id IS NOT NULL
             ORDER BY deadline_at LIMIT ?2",
        )
        .bind(now)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        for (run_id, issue_id) in overdue {
            if let Some(change) = time_out_run(&mut tx, run_id, issue_id, now).await? {
                enqueued |= settle(&mut tx, &[change], now).await?;
                report.timed_out += 1;
            }
        }
        tx.commit().await?;
        if report.resumed > 0 {
            self.announce_triggers();
        }
        if enqueued {
            self.announce_jobs();
        }
        Ok(report)
    }

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
        let candidates = match &selector {
            RoutineSelector::Ids(ids) => ids.clone(),
            RoutineSelector::Assignee(agent) => {
                sqlx::query_scalar::<_, Uuid>(
                    "SELECT id FROM routines WHERE company_id = ?1 AND assignee_agent_id = ?2",
                )
                .bind(company_id)
                .bind(agent)
                .fetch_all(&mut *tx)
                .await?
            }
            RoutineSelector::Project(project) => {
                sqlx::query_scalar::<_, Uuid>(
                    "SELECT id FROM routines WHERE company_id = ?1 AND project_id = ?2",
                )
                .bind(company_id)
                .bind(project)
                .fetch_all(&mut *tx)
                .await?
            }
        };
        let mut selected = Vec::new();
        for id in candidates {
            let matches = sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM routines
                                WHERE id = ?1 AND company_id = ?2 AND status = ?3)",
            )
            .bind(id)
            .bind(company_id)
            .bind(from.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if matches {
                selected.push(id);
            }
        }
        selected.sort_unstable();
        selected.dedup();
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
