//! Backfill on Postgres: the fires of a past range that have no run get one, in one
//! transaction, sharing the `(trigger_id, scheduled_for)` key with the scheduler's fires, so
//! a fire has exactly one run whoever produced it and however many backfills run at once.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    PgStore,
    jobs::{enqueue_all_quietly, notify},
    routines::fetch_routine,
};
use crate::{
    engine::{
        backfill::{BackfillTrigger, backfill_fires},
        refusal::{RoutineAttempt, routine_allows},
    },
    model::{Actor, Run, RunSource, RunStatus, TriggerKind},
    store::{
        BackfillRange, Backfilled, NewActivity, StoreError, StoreResult, backfill::backfill_jobs,
        new_id, runs::RunRow,
    },
};

impl PgStore {
    /// Creates a `backfill` run (catch-up, dispatched now, oldest first) for every nominal
    /// fire of the routine's schedule triggers in `range` that has no run yet.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::InvalidReference`] `triggerId` (not a schedule
    /// trigger of the routine); [`StoreError::Refused`] `routine_archived`,
    /// `backfill_too_large`; the database failed.
    pub async fn backfill(
        &self,
        routine_id: Uuid,
        range: BackfillRange,
        actor: Actor,
    ) -> StoreResult<Backfilled> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let routine = fetch_routine(&mut tx, routine_id, false).await?;
        routine_allows(routine.status, RoutineAttempt::Run)?;
        // Held until the runs commit, as a manual run holds its trigger (see `delete_trigger`).
        let triggers: Vec<BackfillTrigger> = sqlx::query!(
            r#"SELECT id, cron_expression AS "cron!", timezone AS "zone!" FROM routine_triggers
               WHERE routine_id = $1 AND kind = $2
                 AND (($3::uuid IS NULL AND enabled) OR id = $3)
               ORDER BY id
               FOR KEY SHARE"#,
            routine_id,
            TriggerKind::Schedule.as_str(),
            range.trigger_id,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|t| BackfillTrigger {
            id: t.id,
            cron: t.cron,
            zone: t.zone,
        })
        .collect();
        if range.trigger_id.is_some() && triggers.is_empty() {
            return Err(StoreError::InvalidReference { field: "triggerId" });
        }
        let fires = backfill_fires(&triggers, range.from, range.to)?;
        let ids: Vec<Uuid> = fires.iter().map(|_| new_id()).collect();
        let trigger_ids: Vec<Uuid> = fires.iter().map(|f| f.trigger_id).collect();
        let nominal: Vec<DateTime<Utc>> = fires.iter().map(|f| f.scheduled_for).collect();
        let zones: Vec<String> = fires.iter().map(|f| f.zone.clone()).collect();
        // Inserted in (trigger, nominal time) order, as the fire pass inserts, so concurrent
        // writers of the same fires wait for each other instead of deadlocking.
        let mut created: Vec<(DateTime<Utc>, Uuid, Uuid)> = sqlx::query!(
            r#"INSERT INTO routine_runs (id, company_id, routine_id, trigger_id, source, status,
                                        scheduled_for, catch_up, triggered_at, payload, updated_at,
                                        timezone)
               SELECT id, $1, $2, trigger_id, $3, $4, scheduled_for, true, $5, '{}', $5, timezone
               FROM UNNEST($6::uuid[], $7::uuid[], $8::timestamptz[], $9::text[])
                    AS f(id, trigger_id, scheduled_for, timezone)
               ORDER BY trigger_id, scheduled_for
               ON CONFLICT (trigger_id, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING
               RETURNING id, trigger_id AS "trigger_id!", scheduled_for AS "scheduled_for!""#,
            routine.company_id,
            routine_id,
            RunSource::Backfill.as_str(),
            RunStatus::Received.as_str(),
            now,
            &ids,
            &trigger_ids,
            &nominal,
            &zones,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.scheduled_for, r.trigger_id, r.id))
        .collect();
        created.sort();
        let created: Vec<Uuid> = created.into_iter().map(|(_, _, id)| id).collect();
        let existing = fires.len() - created.len();
        if !created.is_empty() {
            enqueue_all_quietly(&mut tx, backfill_jobs(&created, now), now).await?;
            notify(&mut tx).await?;
        }
        NewActivity::routine_backfilled(
            (routine.company_id, routine_id),
            &range,
            (created.len(), existing),
            actor,
        )
        .record(&mut tx, now)
        .await?;
        let runs = fetch_runs(&mut tx, &created).await?;
        tx.commit().await?;
        Ok(Backfilled { runs, existing })
    }
}

/// The runs `ids`, in that order.
async fn fetch_runs(conn: &mut sqlx::PgConnection, ids: &[Uuid]) -> StoreResult<Vec<Run>> {
    let rows = sqlx::query_as!(
        RunRow,
        r#"SELECT r.id AS "id!", r.company_id AS "company_id!", r.routine_id AS "routine_id!",
                  r.trigger_id, t.kind AS "trigger_kind?: TriggerKind", t.label AS "trigger_label?",
                  r.source AS "source!: RunSource", r.status AS "status!: RunStatus", r.reason,
                  r.scheduled_for, r.catch_up AS "catch_up!", r.missed,
                  r.triggered_at AS "triggered_at!", r.completed_at,
                  r.idempotency_key, r.payload, r.linked_issue_id, r.coalesced_into_run_id,
                  r.heartbeat_run_id, r.failure_reason
           FROM routine_runs r LEFT JOIN routine_triggers t ON t.id = r.trigger_id
           WHERE r.id = ANY($1)"#,
        ids
    )
    .fetch_all(conn)
    .await?;
    let mut runs: std::collections::HashMap<Uuid, Run> =
        rows.into_iter().map(|r| (r.id, Run::from(r))).collect();
    Ok(ids.iter().filter_map(|id| runs.remove(id)).collect())
}
