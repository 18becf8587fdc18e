//! Dispatch on SQLite: the same decisions as on Postgres (`engine::dispatch::plan`), read and
//! written row by row inside the caller's (serialised) transaction.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{
    SqliteStore, health::settle, heartbeats::insert_heartbeats, issues::insert_event,
    notifications::notify, record, routines::fetch_routine,
};
use crate::{
    engine::{
        dispatch::{
            OpenIssue, PendingRun, Plan, RoutineRow, Situation, capped_late, last_fires, late_runs,
            plan,
        },
        health::{RunChange, deadline},
        notify::Notice,
    },
    model::{Actor, AgentStatus, ConcurrencyPolicy, HeartbeatStatus, NotificationEvent, RunStatus},
    store::{StoreError, StoreResult, WakeupDelivery, dispatch::dispatch_entries, open_secret},
};

async fn situation(
    conn: &mut SqliteConnection,
    routines: &HashMap<Uuid, RoutineRow>,
) -> StoreResult<Situation> {
    let mut open = HashMap::new();
    let mut awake = HashSet::new();
    for routine in routines.values() {
        if routine.concurrency_policy == ConcurrencyPolicy::AlwaysEnqueue {
            continue;
        }
        let issue = sqlx::query_as::<_, (Uuid, Option<Uuid>, Option<Uuid>, String, String)>(
            "SELECT id, origin_run_id, assignee_agent_id, title, description FROM issues
             WHERE routine_id = ?1 AND status NOT IN ('done', 'cancelled')
             ORDER BY created_at, id LIMIT 1",
        )
        .bind(routine.id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((id, origin_run_id, assignee_agent_id, title, description)) = issue else {
            continue;
        };
        let woken = sqlx::query_scalar::<_, Uuid>(
            "SELECT agent_id FROM heartbeat_runs
             WHERE issue_id = ?1 AND status IN ('queued', 'running')",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        awake.extend(woken.into_iter().map(|agent| (id, agent)));
        open.insert(
            routine.id,
            OpenIssue {
                id,
                origin_run_id,
                assignee_agent_id,
                title,
                description,
            },
        );
    }
    let mut agents = HashMap::new();
    for routine in routines.values() {
        let agent = routine.assignee_agent_id;
        if agents.contains_key(&agent) {
            continue;
        }
        let status =
            sqlx::query_scalar::<_, AgentStatus>("SELECT status FROM agents WHERE id = ?1")
                .bind(agent)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(status) = status {
            agents.insert(agent, status);
        }
    }
    Ok(Situation {
        agents,
        open,
        awake,
    })
}

/// Writes a batch's plan; returns each run's outcome and whether wake-up jobs were enqueued.
async fn write(
    conn: &mut SqliteConnection,
    routines: &HashMap<Uuid, RoutineRow>,
    runs: &[PendingRun],
    plan: Plan,
    now: DateTime<Utc>,
) -> StoreResult<(Vec<(Uuid, RunStatus)>, bool)> {
    let Plan {
        issues,
        events,
        heartbeats,
        outcomes,
    } = plan;
    for issue in issues {
        sqlx::query(
            "INSERT INTO issues (id, company_id, title, description, project_id, goal_id,
                                 parent_issue_id, assignee_agent_id, priority, status, routine_id,
                                 origin_run_id, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'todo', ?10, ?11, ?12, ?12)",
        )
        .bind(issue.id)
        .bind(issue.company_id)
        .bind(&issue.title)
        .bind(&issue.description)
        .bind(issue.project_id)
        .bind(issue.goal_id)
        .bind(issue.parent_issue_id)
        .bind(issue.assignee_agent_id)
        .bind(issue.priority.as_str())
        .bind(issue.routine_id)
        .bind(issue.origin_run_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    for (company_id, issue_id, event_type, data) in &events {
        insert_event(
            conn,
            (*company_id, *issue_id),
            *event_type,
            Actor::System,
            data,
            now,
        )
        .await?;
    }
    let (created, wakeups) = insert_heartbeats(conn, heartbeats, now).await?;
    let heartbeat_ids: Vec<Uuid> = created.into_iter().map(|h| h.id).collect();
    let mut heartbeat_of = Vec::with_capacity(outcomes.len());
    let mut changes = Vec::with_capacity(outcomes.len());
    let routine_of: HashMap<Uuid, Uuid> = runs.iter().map(|r| (r.id, r.routine_id)).collect();
    let mut deadlines = false;
    for (id, outcome) in &outcomes {
        let heartbeat = outcome
            .heartbeat
            .and_then(|i| heartbeat_ids.get(i).copied());
        heartbeat_of.push(heartbeat);
        let routine_id = routine_of.get(id).copied().unwrap_or_default();
        let deadline_at = (outcome.status == RunStatus::IssueCreated)
            .then(|| routines.get(&routine_id))
            .flatten()
            .and_then(|r| deadline(now, r.run_timeout_sec));
        deadlines |= deadline_at.is_some();
        changes.push(RunChange {
            run_id: *id,
            routine_id,
            status: outcome.status,
            reason: outcome.reason.map(str::to_owned),
        });
        let completed_at = (outcome.status != RunStatus::IssueCreated).then_some(now);
        sqlx::query(
            "UPDATE routine_runs SET status = ?2, reason = ?3, failure_reason = ?4,
                                     linked_issue_id = ?5, coalesced_into_run_id = ?6,
                                     heartbeat_run_id = ?7, completed_at = ?8, updated_at = ?9,
                                     catch_up = (catch_up OR ?10),
                                     missed = COALESCE(?11, missed), deadline_at = ?12
             WHERE id = ?1",
        )
        .bind(id)
        .bind(outcome.status.as_str())
        .bind(outcome.reason)
        .bind(outcome.failure_reason.as_deref())
        .bind(outcome.linked_issue_id)
        .bind(outcome.coalesced_into_run_id)
        .bind(heartbeat)
        .bind(completed_at)
        .bind(now)
        .bind(outcome.catch_up)
        .bind(outcome.missed.clone())
        .bind(deadline_at)
        .execute(&mut *conn)
        .await?;
    }
    let (triggers, routine_last) = last_fires(runs, &outcomes);
    for (id, (fired, result)) in triggers {
        sqlx::query(
            "UPDATE routine_triggers
             SET last_fired_at = CASE WHEN last_fired_at IS NULL OR last_fired_at < ?2
                                      THEN ?2 ELSE last_fired_at END,
                 last_result = ?3
             WHERE id = ?1",
        )
        .bind(id)
        .bind(fired)
        .bind(result)
        .execute(&mut *conn)
        .await?;
    }
    for (id, fired) in routine_last {
        sqlx::query(
            "UPDATE routines
             SET last_triggered_at = CASE WHEN last_triggered_at IS NULL OR last_triggered_at < ?2
                                          THEN ?2 ELSE last_triggered_at END
             WHERE id = ?1",
        )
        .bind(id)
        .bind(fired)
        .execute(&mut *conn)
        .await?;
    }
    let entries = dispatch_entries(routines, runs, &outcomes, &heartbeat_of);
    record(conn, entries, now).await?;
    let notified = settle(conn, &changes, now).await?;
    let statuses = outcomes
        .into_iter()
        .map(|(id, outcome)| (id, outcome.status))
        .collect();
    // Jobs to announce: wake-ups or notifications; a deadline is the scheduler's to watch,
    // and the embedded scheduler polls the upkeep with its fires.
    let _ = deadlines;
    Ok((statuses, wakeups || notified))
}

impl SqliteStore {
    /// Dispatches runs in the given order in the caller's transaction (the same effect as one
    /// after another); returns the outcome of each run that was still `received`, and whether
    /// wake-up jobs were enqueued.
    pub(super) async fn dispatch_runs(
        &self,
        conn: &mut SqliteConnection,
        run_ids: &[Uuid],
        now: DateTime<Utc>,
    ) -> StoreResult<(Vec<(Uuid, RunStatus)>, bool)> {
        let mut seen = HashSet::new();
        let mut runs = Vec::with_capacity(run_ids.len());
        for id in run_ids {
            if !seen.insert(*id) {
                continue;
            }
            let run = sqlx::query_as::<_, PendingRun>(
                "SELECT r.id, r.routine_id, r.source, r.trigger_id,
                        COALESCE(r.timezone, t.timezone) AS timezone, r.scheduled_for,
                        r.fire_at, r.triggered_at, r.catch_up, r.payload
                 FROM routine_runs r LEFT JOIN routine_triggers t ON t.id = r.trigger_id
                 WHERE r.id = ?1 AND r.status = 'received'",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            runs.extend(run);
        }
        if runs.is_empty() {
            return Ok((Vec::new(), false));
        }
        let mut routines: HashMap<Uuid, RoutineRow> = HashMap::new();
        for run in &runs {
            if !routines.contains_key(&run.routine_id) {
                let routine = fetch_routine(conn, run.routine_id).await?;
                routines.insert(routine.id, routine);
            }
        }
        let mut situation = situation(conn, &routines).await?;
        let timing = (now, self.misfire_grace);
        let mut newer_late = HashMap::new();
        for run in capped_late(&runs, &routines, timing) {
            // As on Postgres: later runs of the trigger still waiting, and late as well.
            let newer = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM routine_runs o
                 WHERE o.trigger_id = ?1 AND o.scheduled_for > ?2
                   AND o.status = 'received' AND o.source = 'schedule'
                   AND CASE WHEN o.catch_up THEN o.triggered_at
                            ELSE COALESCE(o.fire_at, o.scheduled_for) END < ?3",
            )
            .bind(run.trigger_id)
            .bind(run.scheduled_for)
            .bind(now - self.misfire_grace)
            .fetch_one(&mut *conn)
            .await?;
            newer_late.insert(run.id, newer);
        }
        let late = late_runs(&runs, &routines, timing, &newer_late);
        let plan = plan(&mut situation, &routines, &runs, &late);
        write(conn, &routines, &runs, plan, now).await
    }

    /// See [`crate::store::Storage::fail_undispatched_run`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn fail_undispatched_run(&self, run_id: Uuid, failure: &str) -> StoreResult<bool> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let failed = sqlx::query_scalar::<_, Uuid>(
            "UPDATE routine_runs SET status = 'failed', reason = 'dispatch_failed',
                                     failure_reason = ?2, completed_at = ?3, updated_at = ?3
             WHERE id = ?1 AND status = 'received'
             RETURNING routine_id",
        )
        .bind(run_id)
        .bind(failure)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let mut notified = false;
        if let Some(routine_id) = failed {
            let change = RunChange {
                run_id,
                routine_id,
                status: RunStatus::Failed,
                reason: Some("dispatch_failed".to_owned()),
            };
            notified = settle(&mut tx, &[change], now).await?;
        }
        tx.commit().await?;
        if notified {
            self.announce_jobs();
        }
        Ok(failed.is_some())
    }

    /// See [`crate::store::Storage::wakeup_delivery`].
    ///
    /// # Errors
    /// The database failed, or the stored secret cannot be opened.
    pub async fn wakeup_delivery(
        &self,
        heartbeat_run_id: Uuid,
    ) -> StoreResult<Option<WakeupDelivery>> {
        let heartbeat_run = match self.heartbeat_run(heartbeat_run_id).await {
            Ok(run) => run,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if heartbeat_run.status != HeartbeatStatus::Queued {
            return Ok(None);
        }
        let agent = sqlx::query_as::<_, (Option<String>, Option<Vec<u8>>)>(
            "SELECT wakeup_url, wakeup_secret_enc FROM agents WHERE id = ?1 AND wakeup_kind = 'http'",
        )
        .bind(heartbeat_run.agent_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((Some(url), Some(sealed))) = agent else {
            return Ok(None);
        };
        let secret = open_secret(&self.secrets, heartbeat_run.agent_id, &sealed)?;
        Ok(Some(WakeupDelivery {
            url,
            secret,
            heartbeat_run,
        }))
    }

    /// See [`crate::store::Storage::fail_undelivered_heartbeat`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn fail_undelivered_heartbeat(
        &self,
        heartbeat_run_id: Uuid,
        failure: &str,
    ) -> StoreResult<bool> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let failed = sqlx::query_as::<_, (Uuid, Option<Uuid>)>(
            "UPDATE heartbeat_runs SET status = 'failed', finished_at = ?3, summary = ?2
             WHERE id = ?1 AND status = 'queued'
             RETURNING company_id,
                       (SELECT r.routine_id FROM routine_runs r
                        WHERE r.id = heartbeat_runs.routine_run_id)",
        )
        .bind(heartbeat_run_id)
        .bind(failure)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let mut notified = false;
        if let Some((company_id, routine_id)) = failed {
            let pending = Notice::heartbeat(
                NotificationEvent::WakeupFailed,
                company_id,
                routine_id,
                heartbeat_run_id,
            );
            notified = notify(&mut tx, vec![pending], now).await?;
        }
        tx.commit().await?;
        if notified {
            self.announce_jobs();
        }
        Ok(failed.is_some())
    }

    /// See [`crate::store::Storage::time_out_heartbeats`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn time_out_heartbeats(&self, timeout: std::time::Duration) -> StoreResult<u64> {
        let now = self.now();
        let cutoff = now - TimeDelta::from_std(timeout).unwrap_or(TimeDelta::hours(1));
        let updated = sqlx::query(
            "UPDATE heartbeat_runs SET status = 'timed_out', finished_at = ?2
             WHERE (status = 'queued' AND created_at < ?1)
                OR (status = 'running' AND started_at < ?1)",
        )
        .bind(cutoff)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected())
    }
}
