//! Dispatch on Postgres: loads what the decisions read (`engine::dispatch` decides), writes
//! the outcome in the caller's (fenced job) transaction, so the outcome, the issue, the heartbeat run, the
//! wake-up job, the trigger's last result and the audit entry commit together with the job's
//! completion — or not at all.
//!
//! Lock order: the routine rows, then the run rows. Concurrent dispatches of one routine
//! serialise on the routine lock; different routines proceed in parallel. A batch of runs is
//! dispatched with one statement per table (see [`PgStore::dispatch_runs`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    PgStore, activity::record_all, health::settle, heartbeats::insert_heartbeats,
    notifications::notify, routines::fetch_routines,
};
use crate::{
    engine::{
        dispatch::{
            NewIssue, OpenIssue, PendingRun, Plan, RoutineRow, Situation, capped_late, last_fires,
            late_runs, plan,
        },
        health::{RunChange, deadline},
        notify::Notice,
    },
    model::{
        AgentStatus, ConcurrencyPolicy, HeartbeatStatus, NotificationEvent, RunSource, RunStatus,
    },
    store::{StoreResult, WakeupDelivery, dispatch::dispatch_entries, new_id},
};

impl PgStore {
    /// Dispatches runs, in the given order, on `conn` (the caller's transaction), with the same
    /// effect as dispatching them one after another: a later run of a routine sees the issue an
    /// earlier one opened. Reads and writes are one statement per table for the whole batch.
    /// Returns the outcome of each run that was still `received` (others are left alone).
    ///
    /// Locks: the routines' rows (in id order, `FOR NO KEY UPDATE`, see
    /// [`fetch_routines`]), then the runs' rows (in id order), then the agents' rows (shared).
    /// The caller's transaction must be planned by key ([`super::begin_by_key`]): every statement
    /// here reaches its rows through a batch of ids.
    ///
    /// # Errors
    /// The database failed; the caller rolls back and retries.
    pub(crate) async fn dispatch_runs(
        &self,
        conn: &mut PgConnection,
        run_ids: &[Uuid],
    ) -> StoreResult<Vec<(Uuid, RunStatus)>> {
        let now = self.now();
        let routine_ids = sqlx::query_scalar!(
            "SELECT DISTINCT routine_id FROM routine_runs WHERE id = ANY($1)",
            run_ids
        )
        .fetch_all(&mut *conn)
        .await?;
        if routine_ids.is_empty() {
            return Ok(Vec::new());
        }
        let routines: HashMap<Uuid, RoutineRow> = fetch_routines(conn, &routine_ids, true)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let mut runs = sqlx::query_as!(
            PendingRun,
            r#"SELECT r.id, r.routine_id, r.source AS "source: RunSource",
                      r.trigger_id, COALESCE(r.timezone, t.timezone) AS "timezone?", r.scheduled_for,
                      r.fire_at, r.triggered_at, r.catch_up, r.payload
               FROM routine_runs r LEFT JOIN routine_triggers t ON t.id = r.trigger_id
               WHERE r.id = ANY($1) AND r.status = 'received'
               ORDER BY r.id
               FOR UPDATE OF r"#,
            run_ids
        )
        .fetch_all(&mut *conn)
        .await?;
        let position: HashMap<Uuid, usize> =
            run_ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        runs.sort_by_key(|run| position.get(&run.id).copied());
        runs.retain(|run| routines.contains_key(&run.routine_id));
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let mut situation = situation(conn, &routines).await?;
        let timing = (now, self.misfire_grace);
        let newer_late =
            count_newer_late(conn, &capped_late(&runs, &routines, timing), timing).await?;
        let late = late_runs(&runs, &routines, timing, &newer_late);
        let plan = plan(&mut situation, &routines, &runs, &late);
        write(conn, &routines, &runs, plan, now).await
    }

    /// Fails a run whose dispatch could not be completed (its job is dead), if it is still
    /// `received`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn fail_undispatched_run(&self, run_id: Uuid, failure: &str) -> StoreResult<bool> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let failed = sqlx::query_scalar!(
            "WITH failed AS (
                 UPDATE routine_runs SET status = 'failed', reason = 'dispatch_failed',
                                         failure_reason = $2, completed_at = $3, updated_at = $3
                 WHERE id = $1 AND status = 'received'
                 RETURNING id, routine_id),
             unlinked AS (INSERT INTO unlinked_runs (run_id, completed_at) SELECT id, $3 FROM failed)
             SELECT routine_id AS \"routine_id!\" FROM failed",
            run_id,
            failure,
            now,
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(routine_id) = failed {
            let change = RunChange {
                run_id,
                routine_id,
                status: RunStatus::Failed,
                reason: Some("dispatch_failed".to_owned()),
            };
            settle(&mut tx, &[change], now).await?;
        }
        tx.commit().await?;
        Ok(failed.is_some())
    }

    /// What delivering a heartbeat run's wake-up needs, or `None` when there is nothing to
    /// deliver any more (the run was claimed or ended, or the agent no longer uses HTTP).
    ///
    /// # Errors
    /// The database failed, or the stored secret cannot be decrypted.
    pub async fn wakeup_delivery(
        &self,
        heartbeat_run_id: Uuid,
    ) -> StoreResult<Option<WakeupDelivery>> {
        let heartbeat_run = match self.heartbeat_run(heartbeat_run_id).await {
            Ok(run) => run,
            Err(super::StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if heartbeat_run.status != HeartbeatStatus::Queued {
            return Ok(None);
        }
        let agent = sqlx::query!(
            "SELECT wakeup_url, wakeup_secret_enc FROM agents WHERE id = $1 AND wakeup_kind = 'http'",
            heartbeat_run.agent_id
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some((Some(url), Some(sealed))) = agent.map(|a| (a.wakeup_url, a.wakeup_secret_enc))
        else {
            return Ok(None);
        };
        let secret = self.open_secret(heartbeat_run.agent_id, &sealed)?;
        Ok(Some(WakeupDelivery {
            url,
            secret,
            heartbeat_run,
        }))
    }

    /// Marks a heartbeat run `failed` because its wake-up could not be delivered, if it is still
    /// queued.
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
        let failed = sqlx::query!(
            "UPDATE heartbeat_runs h SET status = 'failed', finished_at = $3, summary = $2
             WHERE h.id = $1 AND h.status = 'queued'
             RETURNING h.company_id,
                       (SELECT r.routine_id FROM routine_runs r WHERE r.id = h.routine_run_id)",
            heartbeat_run_id,
            failure,
            now,
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = &failed {
            let pending = Notice::heartbeat(
                NotificationEvent::WakeupFailed,
                row.company_id,
                row.routine_id,
                heartbeat_run_id,
            );
            notify(&mut tx, vec![pending], now).await?;
        }
        tx.commit().await?;
        Ok(failed.is_some())
    }

    /// Ends heartbeat runs that stayed `queued` (since creation) or `running` (since claimed)
    /// longer than `timeout`, as `timed_out`. Returns how many.
    ///
    /// # Errors
    /// The database failed.
    pub async fn time_out_heartbeats(&self, timeout: std::time::Duration) -> StoreResult<u64> {
        let now = self.now();
        let cutoff =
            now - chrono::TimeDelta::from_std(timeout).unwrap_or(chrono::TimeDelta::hours(1));
        let updated = sqlx::query!(
            "UPDATE heartbeat_runs SET status = 'timed_out', finished_at = $2
             WHERE (status = 'queued' AND created_at < $1) OR (status = 'running' AND started_at < $1)",
            cutoff,
            now,
        )
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected())
    }
}

/// For each of `runs` (late runs of routines that catch up with a cap), how many later runs of
/// its trigger are still waiting and late as well (see [`late_runs`]).
async fn count_newer_late(
    conn: &mut PgConnection,
    runs: &[&PendingRun],
    (now, grace): (DateTime<Utc>, TimeDelta),
) -> StoreResult<HashMap<Uuid, i64>> {
    if runs.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
    Ok(sqlx::query!(
        r#"SELECT r.id,
                  (SELECT count(*) FROM routine_runs o
                   WHERE o.trigger_id = r.trigger_id AND o.scheduled_for > r.scheduled_for
                     AND o.status = 'received' AND o.source = 'schedule'
                     AND CASE WHEN o.catch_up THEN o.triggered_at
                              ELSE COALESCE(o.fire_at, o.scheduled_for) END < $2
                  ) AS "newer!"
           FROM routine_runs r WHERE r.id = ANY($1)"#,
        &ids,
        now - grace,
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|row| (row.id, row.newer))
    .collect())
}

/// Reads what the batch's decisions depend on: the assignees' status (held shared until
/// commit, so an agent is not terminated under a dispatch), the open issues of routines whose
/// policy looks at them, and which of those issues have an agent awake on them.
async fn situation(
    conn: &mut PgConnection,
    routines: &HashMap<Uuid, RoutineRow>,
) -> StoreResult<Situation> {
    let watching: Vec<Uuid> = routines
        .values()
        .filter(|r| r.concurrency_policy != ConcurrencyPolicy::AlwaysEnqueue)
        .map(|r| r.id)
        .collect();
    let mut open = HashMap::new();
    if !watching.is_empty() {
        let rows = sqlx::query!(
            "SELECT DISTINCT ON (routine_id) routine_id AS \"routine_id!\", id, origin_run_id,
                    assignee_agent_id, title, description
             FROM issues
             WHERE routine_id = ANY($1) AND status NOT IN ('done', 'cancelled')
             ORDER BY routine_id, created_at, id",
            &watching
        )
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            open.insert(
                row.routine_id,
                OpenIssue {
                    id: row.id,
                    origin_run_id: row.origin_run_id,
                    assignee_agent_id: row.assignee_agent_id,
                    title: row.title,
                    description: row.description,
                },
            );
        }
    }
    let issue_ids: Vec<Uuid> = open.values().map(|i| i.id).collect();
    let awake = if issue_ids.is_empty() {
        HashSet::new()
    } else {
        sqlx::query!(
            "SELECT issue_id, agent_id FROM heartbeat_runs
             WHERE issue_id = ANY($1) AND status IN ('queued', 'running')",
            &issue_ids
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| (r.issue_id, r.agent_id))
        .collect()
    };
    let mut agent_ids: Vec<Uuid> = routines.values().map(|r| r.assignee_agent_id).collect();
    agent_ids.sort_unstable();
    agent_ids.dedup();
    let agents = sqlx::query!(
        r#"SELECT id, status AS "status: AgentStatus" FROM agents
           WHERE id = ANY($1) ORDER BY id FOR SHARE"#,
        &agent_ids
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| (r.id, r.status))
    .collect();
    Ok(Situation {
        agents,
        open,
        awake,
    })
}

/// Writes a batch's plan: issues, their events, heartbeat runs (and wake-up jobs), the runs'
/// outcomes, the triggers' and routines' last fire, and the audit entries.
async fn write(
    conn: &mut PgConnection,
    routines: &HashMap<Uuid, RoutineRow>,
    runs: &[PendingRun],
    plan: Plan,
    now: DateTime<Utc>,
) -> StoreResult<Vec<(Uuid, RunStatus)>> {
    let Plan {
        issues,
        events,
        heartbeats,
        outcomes,
    } = plan;
    insert_issues(conn, issues, now).await?;
    if !events.is_empty() {
        let ids: Vec<Uuid> = events.iter().map(|_| new_id()).collect();
        let companies: Vec<Uuid> = events.iter().map(|e| e.0).collect();
        let issue_ids: Vec<Uuid> = events.iter().map(|e| e.1).collect();
        let types: Vec<String> = events.iter().map(|e| e.2.as_str().to_owned()).collect();
        let data: Vec<Value> = events.into_iter().map(|e| e.3).collect();
        sqlx::query!(
            "INSERT INTO issue_events (id, company_id, issue_id, type, actor_type, actor_id, data, created_at)
             SELECT id, company_id, issue_id, type, 'system', NULL, data, $6
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::jsonb[])
                  AS e(id, company_id, issue_id, type, data)",
            &ids,
            &companies,
            &issue_ids,
            &types,
            &data,
            now,
        )
        .execute(&mut *conn)
        .await?;
    }
    let heartbeat_ids: Vec<Uuid> = insert_heartbeats(conn, heartbeats, now)
        .await?
        .into_iter()
        .map(|h| h.id)
        .collect();

    let n = outcomes.len();
    let mut ids = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    let mut failures = Vec::with_capacity(n);
    let mut linked = Vec::with_capacity(n);
    let mut coalesced = Vec::with_capacity(n);
    let mut heartbeat_of = Vec::with_capacity(n);
    let mut catch_ups = Vec::with_capacity(n);
    let mut missed = Vec::with_capacity(n);
    let mut deadlines = Vec::with_capacity(n);
    let mut changes = Vec::new();
    let routine_of: HashMap<Uuid, Uuid> = runs.iter().map(|r| (r.id, r.routine_id)).collect();
    for (id, outcome) in &outcomes {
        let routine_id = routine_of.get(id).copied().unwrap_or_default();
        deadlines.push(if outcome.status == RunStatus::IssueCreated {
            routines
                .get(&routine_id)
                .and_then(|r| deadline(now, r.run_timeout_sec))
        } else {
            None
        });
        changes.push(RunChange {
            run_id: *id,
            routine_id,
            status: outcome.status,
            reason: outcome.reason.map(str::to_owned),
        });
        catch_ups.push(outcome.catch_up);
        missed.push(outcome.missed.clone());
        ids.push(*id);
        statuses.push(outcome.status.as_str().to_owned());
        reasons.push(outcome.reason.map(str::to_owned));
        failures.push(outcome.failure_reason.clone());
        linked.push(outcome.linked_issue_id);
        coalesced.push(outcome.coalesced_into_run_id);
        heartbeat_of.push(
            outcome
                .heartbeat
                .and_then(|i| heartbeat_ids.get(i).copied()),
        );
    }
    // One statement: the runs' outcomes (an update that changes no indexed column when the run
    // opens an issue, so it stays on the run's page: migration 20261210000001), the deadlines
    // of the runs now waiting on their issue, each linked run's link to its issue, and the runs
    // that ended without one.
    sqlx::query!(
        "WITH o AS (
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[],
                                  $6::uuid[], $7::uuid[], $9::bool[], $10::jsonb[], $11::timestamptz[])
                 AS o(id, status, reason, failure_reason, linked, coalesced, heartbeat, catch_up,
                      missed, deadline)),
         outcome AS (
             UPDATE routine_runs r
             SET status = o.status, reason = o.reason, failure_reason = o.failure_reason,
                 linked_issue_id = o.linked, coalesced_into_run_id = o.coalesced,
                 heartbeat_run_id = o.heartbeat,
                 completed_at = CASE WHEN o.status = 'issue_created' THEN NULL ELSE $8::timestamptz END,
                 updated_at = $8,
                 catch_up = r.catch_up OR o.catch_up,
                 missed = COALESCE(o.missed, r.missed)
             FROM o WHERE r.id = o.id),
         deadline AS (
             INSERT INTO run_deadlines (run_id, issue_id, deadline_at)
             SELECT id, linked, deadline FROM o WHERE deadline IS NOT NULL AND linked IS NOT NULL),
         unlinked AS (
             INSERT INTO unlinked_runs (run_id, completed_at)
             SELECT id, $8 FROM o WHERE linked IS NULL AND status <> 'issue_created')
         INSERT INTO run_issue_links (issue_id, run_id)
         SELECT linked, id FROM o WHERE linked IS NOT NULL",
        &ids,
        &statuses,
        &reasons as &[Option<String>],
        &failures as &[Option<String>],
        &linked as &[Option<Uuid>],
        &coalesced as &[Option<Uuid>],
        &heartbeat_of as &[Option<Uuid>],
        now,
        &catch_ups,
        &missed as &[Option<Value>],
        &deadlines as &[Option<DateTime<Utc>>],
    )
    .execute(&mut *conn)
    .await?;
    if deadlines.iter().any(Option::is_some) {
        // The scheduler times the run out: it should wake for the deadline.
        super::schedules::announce_trigger_change(conn).await?;
    }

    let (triggers, routine_last) = last_fires(runs, &outcomes);
    if !triggers.is_empty() {
        let mut ids = Vec::with_capacity(triggers.len());
        let mut fired = Vec::with_capacity(triggers.len());
        let mut results = Vec::with_capacity(triggers.len());
        for (id, (at, result)) in triggers {
            ids.push(id);
            fired.push(at);
            results.push(result.to_owned());
        }
        sqlx::query!(
            "UPDATE routine_triggers t
             SET last_fired_at = GREATEST(t.last_fired_at, l.fired), last_result = l.result
             FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[]) AS l(id, fired, result)
             WHERE t.id = l.id
               AND (GREATEST(t.last_fired_at,
                             CASE WHEN t.prepared_fire_at <= $4 THEN t.prepared_fire_at END)
                        IS DISTINCT FROM GREATEST(t.last_fired_at, l.fired,
                             CASE WHEN t.prepared_fire_at <= $4 THEN t.prepared_fire_at END)
                    OR t.last_result IS DISTINCT FROM l.result)",
            &ids,
            &fired,
            &results,
            now,
        )
        .execute(&mut *conn)
        .await?;
    }
    let (routine_ids, fired): (Vec<Uuid>, Vec<DateTime<Utc>>) = routine_last.into_iter().unzip();
    sqlx::query!(
        "UPDATE routines r SET last_triggered_at = GREATEST(r.last_triggered_at, l.fired)
         FROM UNNEST($1::uuid[], $2::timestamptz[]) AS l(id, fired)
         WHERE r.id = l.id",
        &routine_ids,
        &fired,
    )
    .execute(&mut *conn)
    .await?;

    let entries = dispatch_entries(routines, runs, &outcomes, &heartbeat_of);
    record_all(conn, entries, now).await?;
    settle(conn, &changes, now).await?;
    Ok(outcomes
        .into_iter()
        .map(|(id, outcome)| (id, outcome.status))
        .collect())
}

async fn insert_issues(
    conn: &mut PgConnection,
    issues: Vec<NewIssue>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    if issues.is_empty() {
        return Ok(());
    }
    let n = issues.len();
    let mut ids = Vec::with_capacity(n);
    let mut companies = Vec::with_capacity(n);
    let mut titles = Vec::with_capacity(n);
    let mut descriptions = Vec::with_capacity(n);
    let mut projects = Vec::with_capacity(n);
    let mut goals = Vec::with_capacity(n);
    let mut parents = Vec::with_capacity(n);
    let mut assignees = Vec::with_capacity(n);
    let mut priorities = Vec::with_capacity(n);
    let mut routine_ids = Vec::with_capacity(n);
    let mut origins = Vec::with_capacity(n);
    for issue in issues {
        ids.push(issue.id);
        companies.push(issue.company_id);
        titles.push(issue.title);
        descriptions.push(issue.description);
        projects.push(issue.project_id);
        goals.push(issue.goal_id);
        parents.push(issue.parent_issue_id);
        assignees.push(issue.assignee_agent_id);
        priorities.push(issue.priority.as_str().to_owned());
        routine_ids.push(issue.routine_id);
        origins.push(issue.origin_run_id);
    }
    sqlx::query!(
        "INSERT INTO issues (id, company_id, title, description, project_id, goal_id, parent_issue_id,
                             assignee_agent_id, priority, status, routine_id, origin_run_id,
                             created_at, updated_at)
         SELECT id, company_id, title, description, project_id, goal_id, parent_issue_id,
                assignee_agent_id, priority, 'todo', routine_id, origin_run_id, $12, $12
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::uuid[], $7::uuid[],
                     $8::uuid[], $9::text[], $10::uuid[], $11::uuid[])
              AS i(id, company_id, title, description, project_id, goal_id, parent_issue_id,
                   assignee_agent_id, priority, routine_id, origin_run_id)",
        &ids,
        &companies,
        &titles,
        &descriptions,
        &projects,
        &goals as &[Option<Uuid>],
        &parents as &[Option<Uuid>],
        &assignees,
        &priorities,
        &routine_ids,
        &origins,
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}
