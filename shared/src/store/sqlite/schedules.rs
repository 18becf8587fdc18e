//! What a change of a routine or a trigger does to the schedule, as on Postgres
//! (`store/pg/schedules.rs`); the store announces the change after committing.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use crate::store::{StoreResult, triggers::next_fire};

pub(super) async fn reschedule_routine_triggers(
    conn: &mut SqliteConnection,
    routine_id: Uuid,
    active: bool,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let schedules = sqlx::query_as::<_, (Uuid, bool, String, String)>(
        "SELECT id, enabled, cron_expression, timezone FROM routine_triggers
         WHERE routine_id = ?1 AND kind = 'schedule'",
    )
    .bind(routine_id)
    .fetch_all(&mut *conn)
    .await?;
    for (id, enabled, cron, zone) in schedules {
        withdraw_prepared(&mut *conn, id, now).await?;
        let next = (active && enabled)
            .then(|| next_fire(&cron, &zone, now))
            .flatten();
        sqlx::query("UPDATE routine_triggers SET next_run_at = ?2 WHERE id = ?1")
            .bind(id)
            .bind(next)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Withdraws the prepared runs of a trigger, as on Postgres
/// (`store::fires::withdraw_prepared`).
pub(super) async fn withdraw_prepared(
    conn: &mut SqliteConnection,
    trigger: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "DELETE FROM routine_runs
         WHERE trigger_id = ?1 AND triggered_at > ?2 AND source = 'schedule' AND status = 'received'",
    )
    .bind(trigger)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE routine_triggers SET prepared_fire_at = NULL
         WHERE id = ?1 AND prepared_fire_at > ?2",
    )
    .bind(trigger)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
