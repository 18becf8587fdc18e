//! Routine health on Postgres: what every operation that changes runs calls in its own
//! transaction ([`settle`]: failures in a row, pausing itself, the events), the scheduler's
//! upkeep (pauses that end, runs that time out), and bulk pause and resume.
//!
//! Lock order, as everywhere: an issue, then its run, then the routine (`FOR NO KEY UPDATE`).
//! A dispatch locks routines and then `received` runs only, never an open issue's run.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    PgStore, begin_by_key,
    fires::fence,
    notifications::notify,
    routines::{change_routine, fetch_routines, reschedule_routine_triggers},
};
use crate::{
    engine::health::{RunChange, TIMED_OUT, TIMED_OUT_ENDING, pause_on_failures},
    model::{
        Actor, CatchUpPolicy, ConcurrencyPolicy, IssueEventType, NotificationEvent, PausedReason,
        Priority, Routine, RoutineStatus,
    },
    store::{
        Leadership, NewActivity, RoutineChanges, StoreResult, new_id,
        notifications::{
            Pause, Pending, RoutineSelector, UpkeepReport, count_failures, settled, touched,
        },
        routines::RoutineRow,
    },
};

/// Keeps the health of the routines whose runs changed in this transaction and writes the
/// events the changes announce: each routine's failures in a row, read again from its runs
/// under its lock; a routine that reaches its `pauseAfterFailures` pauses itself.
pub(crate) async fn settle(
    conn: &mut PgConnection,
    changes: &[RunChange],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let (routine_ids, finished) = touched(changes);
    if routine_ids.is_empty() {
        return Ok(());
    }
    count_failures(changes);
    let routines = fetch_routines(conn, &routine_ids, !finished.is_empty()).await?;
    let counted = failures_in_a_row(conn, &finished).await?;
    let before: HashMap<Uuid, i32> = routines
        .iter()
        .map(|r| (r.id, r.consecutive_failures))
        .collect();
    let recounted: Vec<(Uuid, i32)> = counted
        .into_iter()
        .filter(|(id, n)| before.get(id) != Some(n))
        .collect();
    if !recounted.is_empty() {
        let (ids, counts): (Vec<Uuid>, Vec<i32>) = recounted.iter().copied().unzip();
        sqlx::query!(
            "UPDATE routines r SET consecutive_failures = c.n
             FROM UNNEST($1::uuid[], $2::int4[]) AS c(id, n) WHERE r.id = c.id",
            &ids,
            &counts
        )
        .execute(&mut *conn)
        .await?;
    }
    let recounted: HashMap<Uuid, i32> = recounted.into_iter().collect();
    let mut pending = Vec::new();
    for mut routine in routines {
        let was = routine.consecutive_failures;
        if let Some(n) = recounted.get(&routine.id) {
            routine.consecutive_failures = *n;
        }
        let (told, pauses) = settled(&routine, was, changes);
        pending.extend(told);
        if pauses {
            let paused = pause_itself(conn, &routine, now).await?;
            let event = NotificationEvent::RoutinePausedOnFailures;
            pending.push(Pending::routine(event, &paused));
        }
    }
    notify(conn, pending, now).await
}

/// How many of each routine's newest finished runs are `failed` in a row: the failed runs
/// after its newest completed one (by `triggered_at`, ties by id). One statement for all.
async fn failures_in_a_row(
    conn: &mut PgConnection,
    routine_ids: &[Uuid],
) -> StoreResult<Vec<(Uuid, i32)>> {
    if routine_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query!(
        r#"SELECT r.id AS "id!",
                  (SELECT count(*) FROM routine_runs f
                   WHERE f.routine_id = r.id AND f.status = 'failed'
                     AND (ok.id IS NULL OR (f.triggered_at, f.id) > (ok.triggered_at, ok.id))
                  ) AS "n!"
           FROM unnest($1::uuid[]) AS r(id)
           LEFT JOIN LATERAL (
               SELECT triggered_at, id FROM routine_runs
               WHERE routine_id = r.id AND status = 'completed'
               ORDER BY triggered_at DESC, id DESC LIMIT 1) AS ok ON true"#,
        routine_ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.id, i32::try_from(row.n).unwrap_or(i32::MAX)))
        .collect())
}

/// Pauses a routine that reached its `pauseAfterFailures` (locked by the caller), by `system`.
async fn pause_itself(
    conn: &mut PgConnection,
    routine: &RoutineRow,
    now: DateTime<Utc>,
) -> StoreResult<RoutineRow> {
    let pause = pause_on_failures(now);
    let row = sqlx::query_as!(
        RoutineRow,
        r#"UPDATE routines SET status = 'paused', paused_reason = $2, pause_note = NULL,
                               paused_until = NULL, paused_at = $3, updated_at = $3
           WHERE id = $1
           RETURNING id, company_id, title, description, assignee_agent_id, project_id, goal_id,
                     parent_issue_id, priority AS "priority: Priority",
                     status AS "status: RoutineStatus",
                     concurrency_policy AS "concurrency_policy: ConcurrencyPolicy",
                     catch_up_policy AS "catch_up_policy: CatchUpPolicy", catch_up_cap,
                     last_triggered_at, created_at, updated_at, run_timeout_sec, pause_after_failures,
                     paused_reason AS "paused_reason: PausedReason", pause_note, paused_until,
                     paused_at, consecutive_failures"#,
        routine.id,
        pause.reason.map(PausedReason::as_str),
        now,
    )
    .fetch_one(&mut *conn)
    .await?;
    reschedule_routine_triggers(conn, routine.id, false, now).await?;
    NewActivity::routine_updated(routine, &row, Actor::System)
        .record(conn, now)
        .await?;
    Ok(row)
}

/// Times out one run whose deadline passed, if its issue is still open: the issue becomes
/// `cancelled` by `system` (reason `timed_out`), its queued and running heartbeat runs
/// `timed_out`, the run `failed` (`timed_out`). Returns whether it did.
async fn time_out_run(
    conn: &mut PgConnection,
    run_id: Uuid,
    issue_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Option<RunChange>> {
    // Issue first, as a status change locks it.
    let issue = sqlx::query!(
        "SELECT id, company_id, status FROM issues WHERE id = $1 FOR NO KEY UPDATE",
        issue_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(issue) = issue.filter(|i| !matches!(i.status.as_str(), "done" | "cancelled")) else {
        return Ok(None);
    };
    let ending = TIMED_OUT_ENDING;
    let run = sqlx::query!(
        "UPDATE routine_runs SET status = $2, reason = $3, failure_reason = $4,
                                 completed_at = $5, updated_at = $5, deadline_at = NULL
         WHERE id = $1 AND status = 'issue_created' AND deadline_at <= $5
         RETURNING routine_id",
        run_id,
        ending.status.as_str(),
        ending.reason,
        ending.failure,
        now,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(run) = run else {
        return Ok(None);
    };
    sqlx::query!(
        "UPDATE issues SET status = 'cancelled', updated_at = $2 WHERE id = $1",
        issue.id,
        now
    )
    .execute(&mut *conn)
    .await?;
    let change = json!({ "from": issue.status, "to": "cancelled", "reason": TIMED_OUT });
    sqlx::query!(
        "INSERT INTO issue_events (id, company_id, issue_id, type, actor_type, actor_id, data, created_at)
         VALUES ($1, $2, $3, $4, 'system', NULL, $5, $6)",
        new_id(),
        issue.company_id,
        issue.id,
        IssueEventType::StatusChanged.as_str(),
        change,
        now,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE heartbeat_runs SET status = 'timed_out', finished_at = $2
         WHERE issue_id = $1 AND status IN ('queued', 'running')",
        issue.id,
        now
    )
    .execute(&mut *conn)
    .await?;
    NewActivity::run_timed_out(issue.company_id, run_id, issue.id)
        .record(conn, now)
        .await?;
    Ok(Some(RunChange {
        run_id,
        routine_id: run.routine_id,
        status: ending.status,
        reason: ending.reason.map(str::to_owned),
    }))
}

impl PgStore {
    /// The scheduler's upkeep at the clock's now, fenced by `leadership`: paused routines whose
    /// `pausedUntil` came become active (catching up nothing), and runs whose deadline passed
    /// with their issue open time out — up to `batch` of each, one transaction each.
    ///
    /// # Errors
    /// `Refused` `deposed`; the database failed.
    pub async fn upkeep(&self, leadership: &Leadership, batch: i64) -> StoreResult<UpkeepReport> {
        let now = self.now();
        let mut report = UpkeepReport::default();
        // Fenced once up front, as on SQLite, so a deposed leader learns it even when nothing
        // is due; each change below is fenced again in its own transaction.
        let mut tx = begin_by_key(&self.pool).await?;
        fence(&mut tx, leadership, now).await?;
        tx.commit().await?;
        let due = sqlx::query_scalar!(
            "SELECT id FROM routines WHERE status = 'paused' AND paused_until <= $1
             ORDER BY paused_until LIMIT $2",
            now,
            batch
        )
        .fetch_all(&self.pool)
        .await?;
        for id in due {
            let mut tx = begin_by_key(&self.pool).await?;
            fence(&mut tx, leadership, now).await?;
            let still = sqlx::query_scalar!(
                "SELECT id FROM routines WHERE id = $1 AND status = 'paused' AND paused_until <= $2
                 FOR NO KEY UPDATE SKIP LOCKED",
                id,
                now
            )
            .fetch_optional(&mut *tx)
            .await?;
            if still.is_none() {
                continue;
            }
            let changes = RoutineChanges {
                status: Some(RoutineStatus::Active),
                ..RoutineChanges::default()
            };
            change_routine(&mut tx, id, &changes, Actor::System, now).await?;
            tx.commit().await?;
            report.resumed += 1;
        }
        let overdue = sqlx::query!(
            r#"SELECT id, linked_issue_id AS "issue_id!" FROM routine_runs
               WHERE status = 'issue_created' AND deadline_at <= $1 AND linked_issue_id IS NOT NULL
               ORDER BY deadline_at LIMIT $2"#,
            now,
            batch
        )
        .fetch_all(&self.pool)
        .await?;
        for run in overdue {
            let mut tx = begin_by_key(&self.pool).await?;
            fence(&mut tx, leadership, now).await?;
            if let Some(change) = time_out_run(&mut tx, run.id, run.issue_id, now).await? {
                settle(&mut tx, &[change], now).await?;
                report.timed_out += 1;
            }
            tx.commit().await?;
        }
        Ok(report)
    }

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
