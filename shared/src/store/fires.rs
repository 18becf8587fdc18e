//! Schedule fires: turning due schedule triggers into runs, exactly once.
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

use std::collections::{HashMap, VecDeque};

use futures_util::future::try_join_all;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{PgStore, StoreError, StoreResult, begin_by_key, new_id, runs::dispatch_job};
use crate::{
    model::CatchUpPolicy,
    queue::JobSpec,
    schedule::{CronExpression, Schedule, TimeZone},
};

/// The `NOTIFY` channel announcing trigger changes to the scheduler.
pub const TRIGGERS_CHANNEL: &str = "nexus_triggers";

/// Most fires enumerated for one trigger in one pass (a year of a per-minute schedule).
const MAX_ENUMERATED: usize = 600_000;

/// Batches a fire pass runs side by side once the first batch came back full.
const CONCURRENT_BATCHES: usize = 2;

/// The leader performing a fire pass.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// Its fencing token (the epoch from Redis `INCR`).
    pub epoch: i64,
    /// Its instance id.
    pub leader_id: String,
}

/// What a fire pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FireReport {
    /// Triggers handled.
    pub triggers: usize,
    /// Runs created to be dispatched (on time or caught up).
    pub dispatched: usize,
    /// Runs recording missed fires (`skipped`).
    pub skipped_runs: usize,
    /// Fires counted as missed in total.
    pub missed_fires: usize,
    /// Of `dispatched`, the fires prepared ahead of their nominal time.
    pub prepared: usize,
    /// Fire lateness of the on-time fires (handling time minus nominal time; zero for a fire
    /// prepared ahead).
    pub lateness: Vec<TimeDelta>,
}

impl FireReport {
    pub(super) fn merge(&mut self, other: Self) {
        self.triggers += other.triggers;
        self.dispatched += other.dispatched;
        self.skipped_runs += other.skipped_runs;
        self.missed_fires += other.missed_fires;
        self.prepared += other.prepared;
        self.lateness.extend(other.lateness);
    }

    /// Counts the runs a batch inserted: `(id, scheduled_for, catch_up, trigger_id)` each.
    pub(super) fn record(&mut self, window: &FireWindow, inserted: &[InsertedFire]) {
        self.dispatched += inserted.len();
        for (_, scheduled_for, catch_up, _) in inserted {
            if *scheduled_for > window.now {
                self.prepared += 1;
            }
            if !catch_up {
                self.lateness
                    .push((window.now - *scheduled_for).max(TimeDelta::zero()));
            }
        }
    }
}

/// A run a fire pass inserted: id, nominal time, catch-up flag, trigger.
pub(super) type InsertedFire = (Uuid, DateTime<Utc>, bool, Uuid);

/// What a batch's fires of one trigger change on it: the latest fire that happened (at the
/// pass's now) and the earliest fire prepared ahead (at its nominal time).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fired {
    /// The pass's now, when a fire of the trigger was due by then.
    pub(super) now: Option<DateTime<Utc>>,
    /// The nominal time of the earliest fire prepared ahead.
    pub(super) prepared: Option<DateTime<Utc>>,
}

/// What each trigger that fired in a batch records. A prepared fire is not recorded as fired:
/// it is kept apart (`prepared_fire_at`) until its nominal time, so nothing of it shows before
/// then (see `TriggerRow::into_trigger`).
pub(super) fn fired_at(window: &FireWindow, inserted: &[InsertedFire]) -> HashMap<Uuid, Fired> {
    let mut fired: HashMap<Uuid, Fired> = HashMap::new();
    for (_, scheduled_for, _, trigger) in inserted {
        let entry = fired.entry(*trigger).or_default();
        if *scheduled_for > window.now {
            entry.prepared = Some(
                entry
                    .prepared
                    .map_or(*scheduled_for, |p| p.min(*scheduled_for)),
            );
        } else {
            entry.now = Some(window.now);
        }
    }
    fired
}

/// The scheduler was deposed: a newer epoch has written.
#[derive(Debug, thiserror::Error)]
#[error("deposed: a newer scheduler epoch ({current}) has written")]
pub struct Deposed {
    /// The epoch in the database.
    pub current: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct DueTrigger {
    pub(super) id: Uuid,
    pub(super) company_id: Uuid,
    pub(super) routine_id: Uuid,
    pub(super) cron: String,
    pub(super) zone: String,
    pub(super) next_run_at: DateTime<Utc>,
    pub(super) catch_up_policy: CatchUpPolicy,
    pub(super) catch_up_cap: i32,
}

/// The fires of one trigger between its `next_run_at` and the horizon.
struct Fires {
    on_time: Vec<DateTime<Utc>>,
    missed_count: usize,
    /// The oldest missed fire.
    missed_first: Option<DateTime<Utc>>,
    /// The most recent missed fires, oldest first, at most `cap` of them.
    missed_recent: VecDeque<DateTime<Utc>>,
    /// The newest missed fire that is not in `missed_recent`.
    older_last: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
}

fn enumerate(schedule: &Schedule, first: DateTime<Utc>, window: &FireWindow, cap: usize) -> Fires {
    let FireWindow {
        now,
        horizon,
        grace,
    } = *window;
    let mut fires = Fires {
        on_time: Vec::new(),
        missed_count: 0,
        missed_first: None,
        missed_recent: VecDeque::new(),
        older_last: None,
        next: None,
    };
    let mut at = Some(first);
    let mut seen = 0;
    while let Some(t) = at {
        if t > horizon || seen >= MAX_ENUMERATED {
            break;
        }
        seen += 1;
        if now - t > grace {
            fires.missed_count += 1;
            fires.missed_first.get_or_insert(t);
            fires.missed_recent.push_back(t);
            if fires.missed_recent.len() > cap {
                fires.older_last = fires.missed_recent.pop_front();
            }
        } else {
            fires.on_time.push(t);
        }
        at = schedule.next_after(t);
    }
    fires.next = if at.is_some_and(|t| t > horizon) {
        at
    } else {
        schedule.next_after(horizon)
    };
    fires
}

/// When a fire pass runs and how far it reaches.
#[derive(Debug, Clone, Copy)]
pub(super) struct FireWindow {
    /// The clock's now.
    pub(super) now: DateTime<Utc>,
    /// Fires up to here are handled: `now` plus the lookahead.
    pub(super) horizon: DateTime<Utc>,
    /// A fire handled later than this after its nominal time is missed.
    pub(super) grace: TimeDelta,
}

impl FireWindow {
    pub(super) fn new(now: DateTime<Utc>, grace: TimeDelta, lookahead: TimeDelta) -> Self {
        Self {
            now,
            horizon: now + lookahead.max(TimeDelta::zero()),
            grace,
        }
    }

    /// When a fire takes effect: its nominal time if that is still ahead (a prepared fire),
    /// otherwise now.
    pub(super) fn effective(&self, scheduled_for: DateTime<Utc>) -> DateTime<Utc> {
        scheduled_for.max(self.now)
    }

    /// The dispatch jobs of the runs a batch inserted, each due when its fire takes effect.
    pub(super) fn dispatch_jobs(&self, inserted: &[InsertedFire]) -> Vec<JobSpec> {
        inserted
            .iter()
            .map(|(id, scheduled_for, _, _)| {
                dispatch_job(*id, self.effective(*scheduled_for), None)
            })
            .collect()
    }
}

impl PgStore {
    /// Fires every schedule trigger due by the clock's `now` plus `lookahead` (fires still
    /// ahead are prepared), in batches of `batch` triggers, one transaction each, fenced by
    /// `leadership`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] `deposed` when a newer leader has written (nothing of this pass
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
                      r.catch_up_policy AS "catch_up_policy: CatchUpPolicy", r.catch_up_cap
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
        for m in &missed {
            let trigger = &due[m.trigger];
            record_missed(&mut tx, trigger, m.reason, m.count, m.from, m.to, now).await?;
        }
        let inserted = fires.insert(&mut tx, now).await?;
        report.record(&window, &inserted);
        let jobs = window.dispatch_jobs(&inserted);
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

/// Withdraws the prepared runs of `triggers`: runs written ahead by a fire pass whose nominal
/// time is still to come and which are not dispatched yet. A change that would have kept such
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
         WHERE trigger_id = ANY($1) AND scheduled_for > $2 AND source = 'schedule' AND status = 'received'",
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

/// Fences a fire transaction, before it touches any trigger: fails if a newer leader has
/// written, so a deposed leader neither fires nor holds triggers that the current leader's pass
/// would then skip. The first batch of a term moves the epoch row forward to ours (an
/// exclusive lock until it commits); later batches hold it shared, so batches of the current
/// leader run side by side while a newer leader's first write waits for them to commit.
async fn fence(
    conn: &mut PgConnection,
    leadership: &Leadership,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let seen = sqlx::query_scalar!("SELECT epoch FROM scheduler_epoch WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let current = if seen < leadership.epoch {
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
    if current == leadership.epoch {
        return Ok(());
    }
    Err(StoreError::conflict(
        "deposed",
        Deposed { current }.to_string(),
    ))
}

/// Fires missed by one trigger that one `skipped` run records.
pub(super) struct MissedFires {
    /// Index of the trigger in the batch.
    pub(super) trigger: usize,
    pub(super) reason: &'static str,
    pub(super) count: usize,
    pub(super) from: DateTime<Utc>,
    pub(super) to: DateTime<Utc>,
}

/// What a batch of due triggers comes to: the runs to insert (on time and caught up), the
/// missed fires to record, and each trigger's next fire.
#[derive(Default)]
pub(super) struct FirePlan {
    pub(super) report: FireReport,
    pub(super) missed: Vec<MissedFires>,
    pub(super) fires: NewFires,
    pub(super) next: Vec<(Uuid, Option<DateTime<Utc>>)>,
}

/// Plans a batch of due triggers in `window`: enumerates each one's fires from its
/// `next_run_at` to the horizon and applies its catch-up policy to those later than the grace.
pub(super) fn plan_fires(due: &[DueTrigger], window: &FireWindow) -> FirePlan {
    let mut plan = FirePlan::default();
    let mut schedules: HashMap<(&str, &str), Option<Schedule>> = HashMap::new();
    for (index, trigger) in due.iter().enumerate() {
        plan.report.triggers += 1;
        let schedule = schedules
            .entry((&trigger.cron, &trigger.zone))
            .or_insert_with(|| {
                match (
                    CronExpression::parse(&trigger.cron),
                    TimeZone::parse(&trigger.zone),
                ) {
                    (Ok(cron), Ok(zone)) => Some(Schedule::new(cron, zone)),
                    _ => None,
                }
            });
        let schedule = match schedule {
            Some(schedule) => &*schedule,
            None => {
                tracing::error!(trigger_id = %trigger.id, "stored schedule no longer parses; disabling its next fire");
                plan.next.push((trigger.id, None));
                continue;
            }
        };
        let cap = usize::try_from(trigger.catch_up_cap).unwrap_or(1).max(1);
        let enumerated = enumerate(schedule, trigger.next_run_at, window, cap);
        plan.report.missed_fires += enumerated.missed_count;
        match trigger.catch_up_policy {
            CatchUpPolicy::SkipMissed => {
                if let (Some(from), Some(to)) = (
                    enumerated.missed_first,
                    enumerated.missed_recent.back().copied(),
                ) {
                    plan.missed.push(MissedFires {
                        trigger: index,
                        reason: "missed_schedule",
                        count: enumerated.missed_count,
                        from,
                        to,
                    });
                    plan.report.skipped_runs += 1;
                }
            }
            CatchUpPolicy::EnqueueMissedWithCap => {
                let older = enumerated.missed_count - enumerated.missed_recent.len();
                if let (true, Some(from), Some(to)) =
                    (older > 0, enumerated.missed_first, enumerated.older_last)
                {
                    plan.missed.push(MissedFires {
                        trigger: index,
                        reason: "catch_up_cap",
                        count: older,
                        from,
                        to,
                    });
                    plan.report.skipped_runs += 1;
                }
                for at in &enumerated.missed_recent {
                    plan.fires.push(trigger, *at, true);
                }
            }
        }
        for at in &enumerated.on_time {
            plan.fires.push(trigger, *at, false);
        }
        plan.next.push((trigger.id, enumerated.next));
    }
    plan
}

/// The runs a fire pass creates, one row per fire, inserted in one statement.
#[derive(Default)]
pub(super) struct NewFires {
    pub(super) companies: Vec<Uuid>,
    pub(super) routines: Vec<Uuid>,
    pub(super) triggers: Vec<Uuid>,
    pub(super) scheduled_for: Vec<DateTime<Utc>>,
    pub(super) catch_up: Vec<bool>,
    /// The time zone each fire was computed in (kept with the run for `{{date}}`).
    pub(super) zones: Vec<String>,
}

impl NewFires {
    fn push(&mut self, trigger: &DueTrigger, scheduled_for: DateTime<Utc>, catch_up: bool) {
        self.companies.push(trigger.company_id);
        self.routines.push(trigger.routine_id);
        self.triggers.push(trigger.id);
        self.scheduled_for.push(scheduled_for);
        self.catch_up.push(catch_up);
        self.zones.push(trigger.zone.clone());
    }

    /// Inserts `received` schedule runs, triggered at `now` or, when prepared ahead, at their
    /// nominal time; a fire that already has a run (the unique key on
    /// `(trigger_id, scheduled_for)`) is left out. Returns the new runs' id, nominal time,
    /// catch-up flag and trigger.
    async fn insert(
        self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<InsertedFire>> {
        if self.triggers.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = self.triggers.iter().map(|_| new_id()).collect();
        let rows = sqlx::query!(
            r#"INSERT INTO routine_runs (id, company_id, routine_id, trigger_id, source, status, scheduled_for,
                                        catch_up, triggered_at, payload, updated_at, timezone)
               SELECT id, company_id, routine_id, trigger_id, 'schedule', 'received', scheduled_for,
                      catch_up, GREATEST($7, scheduled_for), '{}', $7, timezone
               FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::timestamptz[], $6::bool[],
                           $8::text[])
                    AS f(id, company_id, routine_id, trigger_id, scheduled_for, catch_up, timezone)
               ORDER BY id
               ON CONFLICT (trigger_id, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING
               RETURNING id, scheduled_for AS "scheduled_for!", catch_up, trigger_id AS "trigger_id!""#,
            &ids,
            &self.companies,
            &self.routines,
            &self.triggers,
            &self.scheduled_for,
            &self.catch_up,
            now,
            &self.zones,
        )
        .fetch_all(conn)
        .await?;
        let mut rows: Vec<_> = rows
            .into_iter()
            .map(|r| (r.id, r.scheduled_for, r.catch_up, r.trigger_id))
            .collect();
        rows.sort_by_key(|r| r.0);
        Ok(rows)
    }
}

/// Records missed fires as one `skipped` run.
async fn record_missed(
    conn: &mut PgConnection,
    trigger: &DueTrigger,
    reason: &str,
    count: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let missed: Value = json!({ "count": count, "from": from, "to": to });
    sqlx::query!(
        "INSERT INTO routine_runs (id, company_id, routine_id, trigger_id, source, status, reason,
                                   scheduled_for, missed, triggered_at, completed_at, payload, updated_at,
                                   timezone)
         VALUES ($1, $2, $3, $4, 'schedule', 'skipped', $5, $6, $7, $8, $8, '{}', $8, $9)
         ON CONFLICT (trigger_id, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING",
        new_id(),
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
    .await?;
    sqlx::query!(
        "UPDATE routine_triggers SET last_fired_at = GREATEST(last_fired_at, $2), last_result = 'skipped'
         WHERE id = $1",
        trigger.id,
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    #[test]
    fn enumeration_splits_on_time_and_missed_fires_and_keeps_the_most_recent() {
        let schedule = Schedule::new(
            CronExpression::parse("*/15 * * * *").expect("cron"),
            TimeZone::UTC,
        );
        let window = FireWindow::new(
            at("2026-11-29T10:00:30Z"),
            TimeDelta::seconds(60),
            TimeDelta::zero(),
        );
        let fires = enumerate(&schedule, at("2026-11-29T08:00:00Z"), &window, 3);
        assert_eq!(fires.on_time, vec![at("2026-11-29T10:00:00Z")]);
        assert_eq!(fires.missed_count, 8);
        assert_eq!(fires.missed_first, Some(at("2026-11-29T08:00:00Z")));
        let recent: Vec<_> = fires.missed_recent.iter().copied().collect();
        assert_eq!(
            recent,
            vec![
                at("2026-11-29T09:15:00Z"),
                at("2026-11-29T09:30:00Z"),
                at("2026-11-29T09:45:00Z")
            ]
        );
        assert_eq!(fires.older_last, Some(at("2026-11-29T09:00:00Z")));
        assert_eq!(fires.next, Some(at("2026-11-29T10:15:00Z")));
    }

    #[test]
    fn a_lookahead_prepares_the_fires_up_to_its_horizon_and_none_beyond() {
        let schedule = Schedule::new(
            CronExpression::parse("* * * * *").expect("cron"),
            TimeZone::UTC,
        );
        let now = at("2026-11-29T09:59:57Z");
        // Three seconds ahead: the 10:00 fire is prepared, triggered at its nominal time.
        let window = FireWindow::new(now, TimeDelta::seconds(60), TimeDelta::seconds(3));
        let fires = enumerate(&schedule, at("2026-11-29T10:00:00Z"), &window, 1);
        assert_eq!(fires.on_time, vec![at("2026-11-29T10:00:00Z")]);
        assert_eq!(fires.missed_count, 0);
        assert_eq!(fires.next, Some(at("2026-11-29T10:01:00Z")));
        assert_eq!(
            window.effective(at("2026-11-29T10:00:00Z")),
            at("2026-11-29T10:00:00Z")
        );
        assert_eq!(window.effective(at("2026-11-29T09:59:00Z")), now);
        // A millisecond short of it: nothing, and the next fire stays where it is.
        let window = FireWindow::new(now, TimeDelta::seconds(60), TimeDelta::milliseconds(2999));
        let fires = enumerate(&schedule, at("2026-11-29T10:00:00Z"), &window, 1);
        assert!(fires.on_time.is_empty());
        assert_eq!(fires.next, Some(at("2026-11-29T10:00:00Z")));
        // A negative lookahead is none.
        let window = FireWindow::new(now, TimeDelta::seconds(60), TimeDelta::seconds(-5));
        assert_eq!(window.horizon, now);
    }

    #[test]
    fn a_report_counts_prepared_fires_with_no_lateness_and_each_trigger_fires_at_its_latest() {
        let now = at("2026-11-29T09:59:58Z");
        let window = FireWindow::new(now, TimeDelta::seconds(60), TimeDelta::seconds(5));
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let inserted = vec![
            (Uuid::from_u128(10), at("2026-11-29T09:59:00Z"), false, a),
            (Uuid::from_u128(11), at("2026-11-29T10:00:00Z"), false, a),
            (Uuid::from_u128(12), at("2026-11-29T09:58:00Z"), true, b),
        ];
        let mut report = FireReport::default();
        report.record(&window, &inserted);
        assert_eq!((report.dispatched, report.prepared), (3, 1));
        assert_eq!(
            report.lateness,
            vec![TimeDelta::seconds(58), TimeDelta::zero()],
            "catch-up fires have no lateness; a prepared one is not late"
        );
        let fired = fired_at(&window, &inserted);
        assert_eq!(
            fired[&a],
            Fired {
                now: Some(now),
                prepared: Some(at("2026-11-29T10:00:00Z"))
            },
            "a prepared fire is kept apart from the fire that happened"
        );
        assert_eq!(
            fired[&b],
            Fired {
                now: Some(now),
                prepared: None
            }
        );
    }
}
