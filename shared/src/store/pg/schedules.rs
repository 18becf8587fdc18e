//! What a change of a routine or a trigger does to the schedule: the next fire of each schedule
//! trigger, fires prepared ahead that no longer hold, and the announcement that wakes a
//! sleeping scheduler.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::TRIGGERS_CHANNEL;
use crate::store::{StoreResult, triggers::next_fire};

/// Sets `next_run_at` of every schedule trigger of a routine: the next fire after `now` for the
/// enabled ones when `active`, otherwise `NULL`.
pub(crate) async fn reschedule_routine_triggers(
    conn: &mut PgConnection,
    routine_id: Uuid,
    active: bool,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let schedules = sqlx::query!(
        r#"SELECT id, enabled, cron_expression AS "cron!", timezone AS "zone!" FROM routine_triggers
           WHERE routine_id = $1 AND kind = 'schedule' FOR UPDATE"#,
        routine_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = schedules.iter().map(|t| t.id).collect();
    withdraw_prepared(&mut *conn, &ids, now).await?;
    for trigger in schedules {
        let next = (active && trigger.enabled)
            .then(|| next_fire(&trigger.cron, &trigger.zone, now))
            .flatten();
        sqlx::query!(
            "UPDATE routine_triggers SET next_run_at = $2 WHERE id = $1",
            trigger.id,
            next
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Withdraws the prepared runs of `triggers`: runs written ahead by a fire pass whose real
/// instant (nominal time plus jitter) is still to come and which are not dispatched yet. A change that would have kept such
/// a fire from being taken (a new schedule, a disabled or deleted trigger, a paused or
/// archived routine) calls this in its transaction, so a fire is never dispatched for a
/// schedule that no longer holds; the fire pass prepares whatever the new `next_run_at`
/// says. The dispatch job of a withdrawn run finds no run and completes.
pub(crate) async fn withdraw_prepared(
    conn: &mut PgConnection,
    triggers: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query!(
        "DELETE FROM routine_runs
         WHERE trigger_id = ANY($1) AND triggered_at > $2 AND source = 'schedule' AND status = 'received'",
        triggers,
        now,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE routine_triggers SET prepared_fire_at = NULL
         WHERE id = ANY($1) AND prepared_fire_at > $2",
        triggers,
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Tells a sleeping scheduler that schedule triggers changed (delivered on commit).
pub(crate) async fn announce_trigger_change(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::query!("SELECT pg_notify($1, '')", TRIGGERS_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}
