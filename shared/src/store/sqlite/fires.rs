//! Schedule fires on SQLite: the same plan as on Postgres (`engine::fires::plan_fires`), one
//! transaction per batch, fenced by the scheduler epoch. Runs are unique per
//! `(trigger_id, scheduled_for)`, so a fire is never recorded twice.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{SqliteStore, jobs::enqueue};
use crate::{
    engine::fires::{
        DueTrigger, EpochCheck, FirePlan, FireWindow, check_epoch, fired_at, plan_fires,
    },
    engine::health::RunChange,
    model::{CatchUpPolicy, RunStatus},
    store::{FireReport, Leadership, StoreResult, fires::dispatch_jobs, new_id},
};

/// A due trigger as SQLite returns it (see [`DueTrigger`]).
type DueRow = (
    Uuid,
    Uuid,
    Uuid,
    String,
    String,
    DateTime<Utc>,
    CatchUpPolicy,
    i32,
    i32,
);

fn due_trigger(
    (
        id,
        company_id,
        routine_id,
        cron,
        zone,
        next_run_at,
        catch_up_policy,
        catch_up_cap,
        jitter_sec,
    ): DueRow,
) -> DueTrigger {
    DueTrigger {
        id,
        company_id,
        routine_id,
        cron,
        zone,
        next_run_at,
        catch_up_policy,
        catch_up_cap,
        jitter_sec,
    }
}

/// Fails if a newer leader has written; moves the epoch forward at a term's first write.
pub(super) async fn fence(
    conn: &mut SqliteConnection,
    leadership: &Leadership,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let current = sqlx::query_scalar::<_, i64>("SELECT epoch FROM scheduler_epoch WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    if check_epoch(current, leadership.epoch)? == EpochCheck::Newer {
        sqlx::query(
            "UPDATE scheduler_epoch SET epoch = ?1, leader_id = ?2, updated_at = ?3 WHERE id = 1",
        )
        .bind(leadership.epoch)
        .bind(&leadership.leader_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records missed fires as one `skipped` run, returning its id; `None` when the fire it is
/// keyed by already has a run.
async fn record_missed(
    conn: &mut SqliteConnection,
    trigger: &DueTrigger,
    reason: &str,
    (count, from, to): (usize, DateTime<Utc>, DateTime<Utc>),
    now: DateTime<Utc>,
) -> StoreResult<Option<Uuid>> {
    let id = new_id();
    let recorded = sqlx::query(
        "INSERT INTO routine_runs (id, company_id, routine_id, trigger_id, source, status, reason,
                                   scheduled_for, missed, triggered_at, completed_at, payload,
                                   updated_at, timezone)
         VALUES (?1, ?2, ?3, ?4, 'schedule', 'skipped', ?5, ?6, ?7, ?8, ?8, '{}', ?8, ?9)
         ON CONFLICT (trigger_id, scheduled_for) DO NOTHING",
    )
    .bind(id)
    .bind(trigger.company_id)
    .bind(trigger.routine_id)
    .bind(trigger.id)
    .bind(reason)
    .bind(to)
    .bind(json!({ "count": count, "from": from, "to": to }))
    .bind(now)
    .bind(&trigger.zone)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    sqlx::query(
        "UPDATE routine_triggers
         SET last_fired_at = CASE WHEN last_fired_at IS NULL OR last_fired_at < ?2
                                  THEN ?2 ELSE last_fired_at END,
             last_result = 'skipped'
         WHERE id = ?1",
    )
    .bind(trigger.id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(recorded.then_some(id))
}

impl SqliteStore {
    /// See [`crate::store::Storage::fire_due`].
    ///
    /// # Errors
    /// `Refused` `deposed`; the database failed.
    pub async fn fire_due(
        &self,
        leadership: &Leadership,
        grace: TimeDelta,
        lookahead: TimeDelta,
        batch: i64,
    ) -> StoreResult<FireReport> {
        let full = usize::try_from(batch).unwrap_or(usize::MAX);
        let mut report = FireReport::default();
        loop {
            let part = self.fire_batch(leadership, grace, lookahead, batch).await?;
            let more = part.triggers >= full;
            report.merge(part);
            if !more {
                return Ok(report);
            }
        }
    }

    async fn fire_batch(
        &self,
        leadership: &Leadership,
        grace: TimeDelta,
        lookahead: TimeDelta,
        batch: i64,
    ) -> StoreResult<FireReport> {
        let now = self.now();
        let window = FireWindow::new(now, grace, lookahead);
        let mut tx = self.pool.begin().await?;
        fence(&mut tx, leadership, now).await?;
        let due: Vec<DueTrigger> = sqlx::query_as::<_, DueRow>(
            "SELECT t.id, t.company_id, t.routine_id, t.cron_expression AS cron,
                    t.timezone AS zone, t.next_run_at, r.catch_up_policy, r.catch_up_cap,
                    t.jitter_sec
             FROM routine_triggers t JOIN routines r ON r.id = t.routine_id
             WHERE t.kind = 'schedule' AND t.enabled AND t.next_run_at IS NOT NULL
               AND t.next_run_at <= ?1 AND r.status = 'active'
             ORDER BY t.next_run_at
             LIMIT ?2",
        )
        .bind(window.horizon)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(due_trigger)
        .collect();
        if due.is_empty() {
            tx.commit().await?;
            return Ok(FireReport::default());
        }
        let FirePlan {
            mut report,
            missed,
            fires,
            next,
        } = plan_fires(&due, &window);
        let mut changes = Vec::new();
        for m in &missed {
            let trigger = &due[m.trigger];
            let recorded =
                record_missed(&mut tx, trigger, m.reason, (m.count, m.from, m.to), now).await?;
            match recorded {
                Some(run_id) => changes.push(RunChange {
                    run_id,
                    routine_id: trigger.routine_id,
                    status: RunStatus::Skipped,
                    reason: Some(m.reason.to_owned()),
                }),
                // As on Postgres: the fire it would stand for already has a run.
                None => report.skipped_runs -= 1,
            }
        }
        let notified = super::health::settle(&mut tx, &changes, now).await?;
        let mut inserted = Vec::new();
        for i in 0..fires.triggers.len() {
            let id = new_id();
            let (scheduled_for, fire_at) = (fires.scheduled_for[i], fires.fire_at[i]);
            let written = sqlx::query(
                "INSERT INTO routine_runs (id, company_id, routine_id, trigger_id, source, status,
                                           scheduled_for, catch_up, triggered_at, payload,
                                           updated_at, timezone, fire_at)
                 VALUES (?1, ?2, ?3, ?4, 'schedule', 'received', ?5, ?6, ?7, '{}', ?8, ?9, ?10)
                 ON CONFLICT (trigger_id, scheduled_for) DO NOTHING",
            )
            .bind(id)
            .bind(fires.companies[i])
            .bind(fires.routines[i])
            .bind(fires.triggers[i])
            .bind(scheduled_for)
            .bind(fires.catch_up[i])
            .bind(window.effective(fire_at))
            .bind(now)
            .bind(&fires.zones[i])
            .bind(fire_at)
            .execute(&mut *tx)
            .await?;
            if written.rows_affected() == 1 {
                inserted.push((id, fire_at, fires.catch_up[i], fires.triggers[i]));
            }
        }
        report.record(&window, &inserted);
        let jobs = dispatch_jobs(&window, &inserted);
        let fired = fired_at(&window, &inserted);
        let announce = notified || !jobs.is_empty();
        enqueue(&mut tx, jobs, now).await?;
        // As on Postgres: a trigger that fired records it with its next fire, a prepared
        // fire apart, and folds an earlier prepared fire that has happened since.
        for (id, next_run_at) in next {
            let fired = fired.get(&id).copied().unwrap_or_default();
            sqlx::query(
                "UPDATE routine_triggers
                 SET next_run_at = ?2,
                     last_fired_at = (SELECT max(v) FROM (
                         SELECT last_fired_at AS v
                         UNION ALL SELECT ?3
                         UNION ALL SELECT CASE WHEN prepared_fire_at <= ?4 THEN prepared_fire_at END)),
                     prepared_fire_at = CASE WHEN prepared_fire_at > ?4 THEN prepared_fire_at
                                             ELSE ?5 END
                 WHERE id = ?1",
            )
            .bind(id)
            .bind(next_run_at)
            .bind(fired.now)
            .bind(now)
            .bind(fired.prepared)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if announce {
            self.announce_jobs();
        }
        Ok(report)
    }

    /// See [`crate::store::Storage::next_upkeep_at`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn next_upkeep_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
            "SELECT min(at) FROM (
                 SELECT min(paused_until) AS at FROM routines
                 WHERE status = 'paused' AND paused_until IS NOT NULL
                 UNION ALL
                 SELECT min(deadline_at) FROM routine_runs
                 WHERE status = 'issue_created' AND deadline_at IS NOT NULL)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// See [`crate::store::Storage::scheduler_epoch`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn scheduler_epoch(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT epoch FROM scheduler_epoch WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// See [`crate::store::Storage::next_fire_at`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn next_fire_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
            "SELECT min(next_run_at) FROM routine_triggers
             WHERE kind = 'schedule' AND enabled AND next_run_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}
