//! Backfill on SQLite, as on Postgres (`store/pg/backfill.rs`): one transaction, the fires
//! without a run get one, the `(trigger_id, scheduled_for)` key shared with the scheduler.

use uuid::Uuid;

use super::{
    SqliteStore, activity::record, jobs::enqueue, routines::fetch_routine, runs::fetch_run,
};
use crate::{
    engine::{
        backfill::{BackfillTrigger, backfill_fires},
        refusal::{RoutineAttempt, routine_allows},
    },
    model::{Actor, RunSource, RunStatus, TriggerKind},
    store::{
        BackfillRange, Backfilled, NewActivity, StoreError, StoreResult, backfill::backfill_jobs,
        new_id,
    },
};

impl SqliteStore {
    /// See [`crate::store::Storage::backfill`].
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`, `Refused`; the database failed.
    pub async fn backfill(
        &self,
        routine_id: Uuid,
        range: BackfillRange,
        actor: Actor,
    ) -> StoreResult<Backfilled> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let routine = fetch_routine(&mut tx, routine_id).await?;
        routine_allows(routine.status, RoutineAttempt::Run)?;
        let triggers: Vec<BackfillTrigger> = sqlx::query_as::<_, (Uuid, String, String)>(
            "SELECT id, cron_expression, timezone FROM routine_triggers
             WHERE routine_id = ?1 AND kind = ?2
               AND ((?3 IS NULL AND enabled) OR id = ?3)
             ORDER BY id",
        )
        .bind(routine_id)
        .bind(TriggerKind::Schedule.as_str())
        .bind(range.trigger_id)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(id, cron, zone)| BackfillTrigger { id, cron, zone })
        .collect();
        if range.trigger_id.is_some() && triggers.is_empty() {
            return Err(StoreError::InvalidReference { field: "triggerId" });
        }
        let fires = backfill_fires(&triggers, range.from, range.to)?;
        let mut created = Vec::new();
        for fire in &fires {
            let id = new_id();
            let written = sqlx::query(
                "INSERT INTO routine_runs (id, company_id, routine_id, trigger_id, source, status,
                                           scheduled_for, catch_up, triggered_at, payload,
                                           updated_at, timezone)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, '{}', ?8, ?9)
                 ON CONFLICT (trigger_id, scheduled_for) DO NOTHING",
            )
            .bind(id)
            .bind(routine.company_id)
            .bind(routine_id)
            .bind(fire.trigger_id)
            .bind(RunSource::Backfill.as_str())
            .bind(RunStatus::Received.as_str())
            .bind(fire.scheduled_for)
            .bind(now)
            .bind(&fire.zone)
            .execute(&mut *tx)
            .await?;
            if written.rows_affected() == 1 {
                created.push(id);
            }
        }
        let existing = fires.len() - created.len();
        enqueue(&mut tx, backfill_jobs(&created, now), now).await?;
        let entry = NewActivity::routine_backfilled(
            (routine.company_id, routine_id),
            &range,
            (created.len(), existing),
            actor,
        );
        record(&mut tx, vec![entry], now).await?;
        let mut runs = Vec::with_capacity(created.len());
        for id in &created {
            runs.push(fetch_run(&mut tx, *id).await?);
        }
        tx.commit().await?;
        if !created.is_empty() {
            self.announce_jobs();
        }
        Ok(Backfilled { runs, existing })
    }
}
