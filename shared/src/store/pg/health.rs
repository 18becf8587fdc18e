//! Routine health on Postgres: what every operation that changes runs calls in its own
//! transaction ([`settle`]: failures in a row, pausing itself, the events). The scheduler's
//! upkeep is `upkeep.rs`; bulk pause and resume are in `routines.rs`.
//!
//! Lock order, as everywhere: an issue, then its run, then the routine (`FOR NO KEY UPDATE`).
//! A dispatch locks routines and then `received` runs only, never an open issue's run.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    notifications::notify, routines::fetch_routines, schedules::reschedule_routine_triggers,
};
use crate::{
    engine::{
        health::{RunChange, pause_on_failures},
        lifecycle::RunEnding,
        notify::Notice,
    },
    model::{
        Actor, CatchUpPolicy, ConcurrencyPolicy, NotificationEvent, PausedReason, Priority,
        RoutineStatus,
    },
    store::{
        NewActivity, StoreResult,
        notifications::{count_failures, settled, touched},
        routines::RoutineRow,
    },
};

/// Ends a run waiting on its issue (`issue_created`) as `ending` says, and drops its deadline
/// (`run_deadlines` holds only waiting runs): the change for [`settle`], or `None` when the
/// run was not waiting.
pub(crate) async fn end_waiting_run(
    conn: &mut PgConnection,
    run_id: Uuid,
    ending: &RunEnding,
    now: DateTime<Utc>,
) -> StoreResult<Option<RunChange>> {
    let ended = sqlx::query_scalar!(
        "WITH ended AS (
             UPDATE routine_runs SET status = $2, reason = $3, failure_reason = $4,
                                     completed_at = $5, updated_at = $5
             WHERE id = $1 AND status = 'issue_created'
             RETURNING routine_id),
         waiting AS (DELETE FROM run_deadlines WHERE run_id = $1)
         SELECT routine_id AS \"routine_id!\" FROM ended",
        run_id,
        ending.status.as_str(),
        ending.reason,
        ending.failure,
        now,
    )
    .fetch_optional(conn)
    .await?;
    Ok(ended.map(|routine_id| RunChange {
        run_id,
        routine_id,
        status: ending.status,
        reason: ending.reason.map(str::to_owned),
    }))
}

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
            pending.push(Notice::routine(event, &paused));
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
