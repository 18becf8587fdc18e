//! Routine health on SQLite: the same operations as on Postgres (`store/pg/health.rs`), in
//! the one writer's transactions.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{
    notifications::notify, record, routines::fetch_routine, schedules::reschedule_routine_triggers,
};
use crate::{
    engine::health::{RunChange, pause_on_failures},
    engine::notify::Notice,
    model::{Actor, NotificationEvent, PausedReason},
    store::{
        NewActivity, StoreResult,
        notifications::{count_failures, settled, touched},
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
            pending.push(Notice::routine(event, &paused));
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
