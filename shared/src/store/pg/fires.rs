//! Schedule fires on Postgres: turning due schedule triggers into runs, exactly once (what fires
//! and what is missed is decided by `engine::fires`).
//!
//! One transaction per batch: it takes due triggers (`next_run_at <= now + lookahead`, `FOR
//! UPDATE SKIP LOCKED`), inserts their runs and dispatch jobs (unique `(trigger_id,
//! scheduled_for)`, one statement each for the whole batch), applies the catch-up policy to
//! fires handled later than the grace period, and advances `next_run_at` past the horizon.
//! A fire inside the lookahead is *prepared*: its run is written ahead, `received`, triggered
//! at its nominal time, and its dispatch job becomes due at that time, so the work done at the
//! fire time itself is the dispatch alone. Changes that would have stopped the fire withdraw a
//! prepared run that is not due yet (see [`withdraw_prepared`]). Before all that it checks the
//! one-row `scheduler_epoch` against the caller's epoch (moving it forward at the start of a
//! term), which fails if a newer leader has written, so a deposed leader's batch rolls back.
//! When a batch comes back full, the next ones run two at a time.

use futures_util::future::try_join_all;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{PgStore, begin_by_key};
use crate::{
    engine::fires::{
        DueTrigger, EpochCheck, FirePlan, FireReport, FireWindow, Fired, InsertedFire, NewFires,
        check_epoch, fired_at, plan_fires,
    },
    engine::health::RunChange,
    model::{CatchUpPolicy, RunStatus},
    store::{Leadership, StoreResult, fires::dispatch_jobs, new_id},
};

/// The `NOTIFY` channel announcing trigger changes to the scheduler.
pub const TRIGGERS_CHANNEL: &str = "nexus_triggers";

/// Batches a fire pass runs side by side once the first batch came back full.
const CONCURRENT_BATCHES: usize = 2;

impl PgStore {
    /// Fires every schedule trigger due by the clock's `now` plus `lookahead` (fires still
    /// ahead are prepared), in batches of `batch` triggers, one transaction each, fenced by
    /// `leadership`.
    ///
    /// # Errors
    /// [`StoreError::Refused`] `deposed` when a newer leader has written (nothing of this pass
    /// after that point is kept); the database failed.
    pub async fn fire_due(
        &self,
        leadership: &Leadership,
        grace: TimeDelta,
        lookahead: TimeDelta,
        batch: i64,
    ) -> StoreResult<FireReport> {
        let full = usize::try_from(batch).unwrap_or(usize::MAX);
        let mut report = self.fire_batch(leadership, grace, lookahead, batch).await?;
        let mut more = report.triggers >= full;
        // A burst: the next batches run side by side (SKIP LOCKED gives each its own triggers).
        while more {
            let batches = (0..CONCURRENT_BATCHES)
                .map(|_| self.fire_batch(leadership, grace, lookahead, batch));
            more = false;
            for part in try_join_all(batches).await? {
                more |= part.triggers >= full;
                report.merge(part);
            }
        }
        Ok(report)
    }

    /// One batch in one transaction, fenced first (see [`fence`]).
    async fn fire_batch(
        &self,
        leadership: &Leadership,
        grace: TimeDelta,
        lookahead: TimeDelta,
        batch: i64,
    ) -> StoreResult<FireReport> {
        let mut report = FireReport::default();
        let now = self.now();
        let window = FireWindow::new(now, grace, lookahead);
        let mut tx = begin_by_key(&self.pool).await?;
        fence(&mut tx, leadership, now).await?;
        let due = sqlx::query_as!(
            DueTrigger,
            r#"SELECT t.id, t.company_id, t.routine_id, t.cron_expression AS "cron!", t.timezone AS "zone!",
                      t.next_run_at AS "next_run_at!",
                      r.catch_up_policy AS "catch_up_policy: CatchUpPolicy", r.catch_up_cap,
                      t.jitter_sec
               FROM routine_triggers t JOIN routines r ON r.id = t.routine_id
               WHERE t.kind = 'schedule' AND t.enabled AND t.next_run_at IS NOT NULL AND t.next_run_at <= $1
                 AND r.status = 'active'
               ORDER BY t.next_run_at
               LIMIT $2
               FOR UPDATE OF t SKIP LOCKED"#,
            window.horizon,
            batch,
        )
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            tx.commit().await?;
            return Ok(report);
        }
        let FirePlan {
            report: planned,
            missed,
            fires,
            next,
        } = plan_fires(&due, &window);
        report.merge(planned);
        let mut changes = Vec::new();
        for m in &missed {
            let trigger = &due[m.trigger];
            match record_missed(&mut tx, trigger, m.reason, m.count, m.from, m.to, now).await? {
                Some(run_id) => changes.push(RunChange {
                    run_id,
                    routine_id: trigger.routine_id,
                    status: RunStatus::Skipped,
                    reason: Some(m.reason.to_owned()),
                }),
                // The fire it would stand for already has a run (a backfill made it).
                None => report.skipped_runs -= 1,
            }
        }
        super::health::settle(&mut tx, &changes, now).await?;
        let inserted = insert_fires(fires, &mut tx, now).await?;
        report.record(&window, &inserted);
        let jobs = dispatch_jobs(&window, &inserted);
        if !jobs.is_empty() {
            super::jobs::enqueue_all_quietly(&mut tx, jobs, now).await?;
            super::jobs::notify(&mut tx).await?;
        }
        // A trigger that fired records it now, in the row this update writes anyway (its
        // `next_run_at` moves), so the dispatch leaves the row alone unless the result changes.
        // A prepared fire is recorded apart, and an earlier one that has happened since is
        // folded into `last_fired_at`.
        let fired = fired_at(&window, &inserted);
        let (ids, nexts): (Vec<Uuid>, Vec<Option<DateTime<Utc>>>) = next.into_iter().unzip();
        let fired: Vec<Fired> = ids
            .iter()
            .map(|id| fired.get(id).copied().unwrap_or_default())
            .collect();
        let prepared: Vec<Option<DateTime<Utc>>> = fired.iter().map(|f| f.prepared).collect();
        let fired: Vec<Option<DateTime<Utc>>> = fired.iter().map(|f| f.now).collect();
        sqlx::query!(
            "UPDATE routine_triggers t
             SET next_run_at = n.next,
                 last_fired_at = GREATEST(t.last_fired_at, n.fired,
                                          CASE WHEN t.prepared_fire_at <= $4 THEN t.prepared_fire_at END),
                 prepared_fire_at = CASE WHEN t.prepared_fire_at > $4 THEN t.prepared_fire_at
                                         ELSE n.prepared END
             FROM UNNEST($1::uuid[], $2::timestamptz[], $3::timestamptz[], $5::timestamptz[])
                  AS n(id, next, fired, prepared)
             WHERE t.id = n.id",
            &ids,
            &nexts as &[Option<DateTime<Utc>>],
            &fired as &[Option<DateTime<Utc>>],
            now,
            &prepared as &[Option<DateTime<Utc>>],
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(report)
    }

    /// The epoch of the last scheduler leader that fired (0 before any).
    ///
    /// # Errors
    /// The database failed.
    pub async fn scheduler_epoch(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar!("SELECT epoch FROM scheduler_epoch WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The earliest instant the scheduler's upkeep has something to do: a pause ending or a
    /// run's deadline.
    ///
    /// # Errors
    /// The database failed.
    pub async fn next_upkeep_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar!(
            r#"SELECT min(at) AS "at" FROM (
                   SELECT min(paused_until) AS at FROM routines
                   WHERE status = 'paused' AND paused_until IS NOT NULL
                   UNION ALL
                   SELECT min(deadline_at) FROM run_deadlines) AS due"#
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// The earliest `next_run_at` of a schedule trigger that can fire.
    ///
    /// # Errors
    /// The database failed.
    pub async fn next_fire_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar!(
            "SELECT min(next_run_at) FROM routine_triggers
             WHERE kind = 'schedule' AND enabled AND next_run_at IS NOT NULL"
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Fences a fire transaction, before it touches any trigger: fails if a newer leader has
/// written, so a deposed leader neither fires nor holds triggers that the current leader's pass
/// would then skip. The first batch of a term moves the epoch row forward to ours (an
/// exclusive lock until it commits); later batches hold it shared, so batches of the current
/// leader run side by side while a newer leader's first write waits for them to commit.
pub(crate) async fn fence(
    conn: &mut PgConnection,
    leadership: &Leadership,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let seen = sqlx::query_scalar!("SELECT epoch FROM scheduler_epoch WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let current = if check_epoch(seen, leadership.epoch)? == EpochCheck::Newer {
        let moved = sqlx::query_scalar!(
            "UPDATE scheduler_epoch SET epoch = $1, leader_id = $2, updated_at = $3
             WHERE id = 1 AND epoch <= $1 RETURNING epoch",
            leadership.epoch,
            leadership.leader_id,
            now,
        )
        .fetch_optional(&mut *conn)
        .await?;
        if moved.is_some() {
            return Ok(());
        }
        sqlx::query_scalar!("SELECT epoch FROM scheduler_epoch WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?
    } else {
        sqlx::query_scalar!("SELECT epoch FROM scheduler_epoch WHERE id = 1 FOR SHARE")
            .fetch_one(&mut *conn)
            .await?
    };
    // Read again, the epoch is ours or a newer one (it only moves forward).
    check_epoch(current, leadership.epoch)?;
    Ok(())
}

/// Records missed fires as one `skipped` run, returning its id; `None` when the fire it is
/// keyed by (the last missed one) already has a run.
async fn record_missed(
    conn: &mut PgConnection,
    trigger: &DueTrigger,
    reason: &str,
    count: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<Option<Uuid>> {
    let missed: Value = json!({ "count": count, "from": from, "to": to });
    let id = new_id();
    let recorded = sqlx::query!(
        "INSERT INTO routine_runs (id, company_id, routine_id, trigger_id, source, status, reason,
                                   scheduled_for, missed, triggered_at, completed_at, payload, updated_at,
                                   timezone)
         VALUES ($1, $2, $3, $4, 'schedule', 'skipped', $5, $6, $7, $8, $8, '{}', $8, $9)
         ON CONFLICT (trigger_id, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING",
        id,
        trigger.company_id,
        trigger.routine_id,
        trigger.id,
        reason,
        to,
        missed,
        now,
        trigger.zone,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    sqlx::query!(
        "UPDATE routine_triggers SET last_fired_at = GREATEST(last_fired_at, $2), last_result = 'skipped'
         WHERE id = $1",
        trigger.id,
        now,
    )
    .execute(conn)
    .await?;
    Ok(recorded.then_some(id))
}

/// Inserts `received` schedule runs, triggered at `now` or, when prepared ahead, at their
/// real instant (nominal time plus jitter); a fire that already has a run (the unique key on
/// `(trigger_id, scheduled_for)`) is left out. Returns the new runs' id, real instant,
/// catch-up flag and trigger. Fires are inserted in `(trigger_id, scheduled_for)` order, as a
/// backfill inserts them, so two transactions waiting on each other's fire keys cannot
/// deadlock.
async fn insert_fires(
    fires: NewFires,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> StoreResult<Vec<InsertedFire>> {
    if fires.triggers.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = fires.triggers.iter().map(|_| new_id()).collect();
    let rows = sqlx::query!(
            r#"INSERT INTO routine_runs (id, company_id, routine_id, trigger_id, source, status, scheduled_for,
                                        fire_at, catch_up, triggered_at, payload, updated_at, timezone)
               SELECT id, company_id, routine_id, trigger_id, 'schedule', 'received', scheduled_for,
                      fire_at, catch_up, GREATEST($7, fire_at), '{}', $7, timezone
               FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::timestamptz[], $6::bool[],
                           $8::text[], $9::timestamptz[])
                    AS f(id, company_id, routine_id, trigger_id, scheduled_for, catch_up, timezone, fire_at)
               ORDER BY trigger_id, scheduled_for
               ON CONFLICT (trigger_id, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING
               RETURNING id, fire_at AS "fire_at!", catch_up, trigger_id AS "trigger_id!""#,
            &ids,
            &fires.companies,
            &fires.routines,
            &fires.triggers,
            &fires.scheduled_for,
            &fires.catch_up,
            now,
            &fires.zones,
            &fires.fire_at,
        )
        .fetch_all(conn)
        .await?;
    let mut rows: Vec<_> = rows
        .into_iter()
        .map(|r| (r.id, r.fire_at, r.catch_up, r.trigger_id))
        .collect();
    rows.sort_by_key(|r| r.0);
    Ok(rows)
}
