//! Dispatch: turning a `received` run into its outcome under the routine's concurrency policy,
//! in the caller's (fenced job) transaction, so the outcome, the issue, the heartbeat run, the
//! wake-up job, the trigger's last result and the audit entry commit together with the job's
//! completion — or not at all.
//!
//! Lock order: the routine rows, then the run rows. Concurrent dispatches of one routine
//! serialise on the routine lock; different routines proceed in parallel. A batch of runs is
//! dispatched with one statement per table (see [`PgStore::dispatch_runs`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    NewActivity, PgStore, StoreResult,
    activity::record_all,
    heartbeats::{NewHeartbeat, insert_heartbeats},
    new_id,
    routines::{RoutineRow, fetch_routines},
};
use crate::{
    engine::render::render,
    model::{
        Actor, AgentStatus, CatchUpPolicy, ConcurrencyPolicy, HeartbeatContext, HeartbeatRun,
        HeartbeatStatus, IssueEventType, Priority, RoutineStatus, RunSource, RunStatus,
    },
    schedule::TimeZone,
};

/// Job kind that POSTs a heartbeat run to an HTTP agent.
pub const DELIVER_WAKEUP: &str = "deliver_wakeup";
/// Attempts of a wake-up delivery before the heartbeat run is failed.
pub const WAKEUP_MAX_ATTEMPTS: i32 = 8;

/// What a wake-up delivery needs.
#[derive(Clone)]
pub struct WakeupDelivery {
    /// Where to POST.
    pub url: String,
    /// The agent's Standard Webhooks secret (`whsec_…`).
    pub secret: String,
    /// The heartbeat run announced.
    pub heartbeat_run: HeartbeatRun,
}

impl std::fmt::Debug for WakeupDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeupDelivery")
            .field("heartbeat_run", &self.heartbeat_run.id)
            .field("secret", &crate::crypto::Redacted)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct PendingRun {
    pub(super) id: Uuid,
    pub(super) routine_id: Uuid,
    pub(super) source: RunSource,
    pub(super) trigger_id: Option<Uuid>,
    pub(super) timezone: Option<String>,
    pub(super) scheduled_for: Option<DateTime<Utc>>,
    pub(super) triggered_at: DateTime<Utc>,
    pub(super) catch_up: bool,
    pub(super) payload: Value,
}

impl PendingRun {
    /// When a schedule run should have been dispatched: its nominal time, or, for a catch-up
    /// run the scheduler created after an outage, when it was created. `None` for other
    /// sources.
    fn due_at(&self) -> Option<DateTime<Utc>> {
        match (self.source, self.scheduled_for) {
            (RunSource::Schedule, Some(_)) if self.catch_up => Some(self.triggered_at),
            (RunSource::Schedule, Some(at)) => Some(at),
            _ => None,
        }
    }

    /// Whether it is dispatched more than `grace` after it was due (the workers were down or
    /// backlogged): it then follows its routine's catch-up policy, as a missed fire would.
    pub(super) fn is_late(&self, now: DateTime<Utc>, grace: TimeDelta) -> bool {
        self.due_at().is_some_and(|due| now - due > grace)
    }
}

/// What the catch-up policy makes of a schedule run dispatched late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Late {
    /// `skip_missed`: skipped (`missed_schedule`).
    Missed,
    /// `enqueue_missed_with_cap`, one of the `catchUpCap` most recent late runs of its trigger:
    /// dispatched as a catch-up.
    CatchUp,
    /// `enqueue_missed_with_cap`, older than the `catchUpCap` most recent: skipped
    /// (`catch_up_cap`).
    OverCap,
}

/// Decides the late runs of a batch. `newer_late` holds, for each late run of a routine with
/// `enqueue_missed_with_cap`, how many later runs of its trigger are still waiting and late as
/// well (the backends count them; a run missing from it counts none).
pub(super) fn late_runs(
    runs: &[PendingRun],
    routines: &HashMap<Uuid, RoutineRow>,
    (now, grace): (DateTime<Utc>, TimeDelta),
    newer_late: &HashMap<Uuid, i64>,
) -> HashMap<Uuid, Late> {
    runs.iter()
        .filter(|run| run.is_late(now, grace))
        .filter_map(|run| {
            let routine = routines.get(&run.routine_id)?;
            let late = match routine.catch_up_policy {
                CatchUpPolicy::SkipMissed => Late::Missed,
                CatchUpPolicy::EnqueueMissedWithCap => {
                    let newer = newer_late.get(&run.id).copied().unwrap_or(0);
                    if newer < i64::from(routine.catch_up_cap) {
                        Late::CatchUp
                    } else {
                        Late::OverCap
                    }
                }
            };
            Some((run.id, late))
        })
        .collect()
}

/// The late runs of a batch whose routine catches up with a cap: the ones whose later
/// waiting runs the backend must count for [`late_runs`].
pub(super) fn capped_late<'a>(
    runs: &'a [PendingRun],
    routines: &HashMap<Uuid, RoutineRow>,
    (now, grace): (DateTime<Utc>, TimeDelta),
) -> Vec<&'a PendingRun> {
    runs.iter()
        .filter(|run| run.is_late(now, grace))
        .filter(|run| {
            routines
                .get(&run.routine_id)
                .is_some_and(|r| r.catch_up_policy == CatchUpPolicy::EnqueueMissedWithCap)
        })
        .collect()
}

/// A routine's open execution issue, as the concurrency policy sees it.
#[derive(Clone)]
pub(super) struct OpenIssue {
    pub(super) id: Uuid,
    pub(super) origin_run_id: Option<Uuid>,
    pub(super) assignee_agent_id: Option<Uuid>,
    pub(super) title: String,
    pub(super) description: String,
}

/// How a run ended its dispatch.
pub(super) struct Outcome {
    pub(super) status: RunStatus,
    pub(super) reason: Option<&'static str>,
    pub(super) failure_reason: Option<String>,
    pub(super) linked_issue_id: Option<Uuid>,
    pub(super) coalesced_into_run_id: Option<Uuid>,
    /// Index into the batch's new heartbeat runs.
    pub(super) heartbeat: Option<usize>,
    /// Set when a late run is dispatched as a catch-up.
    pub(super) catch_up: bool,
    /// `{count, from, to}` of a late run skipped as missed.
    pub(super) missed: Option<Value>,
}

impl Outcome {
    fn ended(status: RunStatus, reason: &'static str) -> Self {
        Self {
            status,
            reason: Some(reason),
            failure_reason: None,
            linked_issue_id: None,
            coalesced_into_run_id: None,
            heartbeat: None,
            catch_up: false,
            missed: None,
        }
    }

    /// A late schedule run skipped under its catch-up policy: it stands for its one fire.
    fn missed(run: &PendingRun, reason: &'static str) -> Self {
        let at = run.scheduled_for;
        Self {
            missed: Some(json!({ "count": 1, "from": at, "to": at })),
            ..Self::ended(RunStatus::Skipped, reason)
        }
    }
}

/// An execution issue to insert.
pub(super) struct NewIssue {
    pub(super) id: Uuid,
    pub(super) company_id: Uuid,
    pub(super) title: String,
    pub(super) description: String,
    pub(super) project_id: Uuid,
    pub(super) goal_id: Option<Uuid>,
    pub(super) parent_issue_id: Option<Uuid>,
    pub(super) assignee_agent_id: Uuid,
    pub(super) priority: Priority,
    pub(super) routine_id: Uuid,
    pub(super) origin_run_id: Uuid,
}

/// Everything a batch of dispatches decided, written with one statement per table.
#[derive(Default)]
pub(super) struct Plan {
    pub(super) issues: Vec<NewIssue>,
    /// Issue events: (company, issue, type, data).
    pub(super) events: Vec<(Uuid, Uuid, IssueEventType, Value)>,
    pub(super) heartbeats: Vec<NewHeartbeat>,
    pub(super) outcomes: Vec<(Uuid, Outcome)>,
}

/// What the decisions read, loaded once per batch and kept current as the batch decides.
pub(super) struct Situation {
    pub(super) agents: HashMap<Uuid, AgentStatus>,
    /// The oldest open execution issue of each routine (for the policies that look at it).
    pub(super) open: HashMap<Uuid, OpenIssue>,
    /// (issue, agent) pairs with a queued or running heartbeat run.
    pub(super) awake: HashSet<(Uuid, Uuid)>,
}

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
                      r.triggered_at, r.catch_up, r.payload
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
        let updated = sqlx::query!(
            "UPDATE routine_runs SET status = 'failed', reason = 'dispatch_failed', failure_reason = $2,
                                     completed_at = $3, updated_at = $3
             WHERE id = $1 AND status = 'received'",
            run_id,
            failure,
            now,
        )
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
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
        let updated = sqlx::query!(
            "UPDATE heartbeat_runs SET status = 'failed', finished_at = $3, summary = $2
             WHERE id = $1 AND status = 'queued'",
            heartbeat_run_id,
            failure,
            now,
        )
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
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
                     AND CASE WHEN o.catch_up THEN o.triggered_at ELSE o.scheduled_for END < $2
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

/// The concurrency policy applied to one run; what it creates goes into `plan`, and
/// `situation` is updated so later runs of the batch see it.
/// Decides every run in order (a later run sees what an earlier one planned), with the state
/// found now: a routine paused or archived since the run was accepted, and `late` (see
/// [`late_runs`]).
pub(super) fn plan(
    situation: &mut Situation,
    routines: &HashMap<Uuid, RoutineRow>,
    runs: &[PendingRun],
    late: &HashMap<Uuid, Late>,
) -> Plan {
    let mut plan = Plan::default();
    for run in runs {
        let routine = &routines[&run.routine_id];
        let outcome = decide(
            situation,
            &mut plan,
            routine,
            run,
            late.get(&run.id).copied(),
        );
        plan.outcomes.push((run.id, outcome));
    }
    plan
}

fn decide(
    situation: &mut Situation,
    plan: &mut Plan,
    routine: &RoutineRow,
    run: &PendingRun,
    late: Option<Late>,
) -> Outcome {
    if routine.status == RoutineStatus::Archived {
        return Outcome::ended(RunStatus::Skipped, "routine_archived");
    }
    // A paused routine does not fire from schedules or webhooks, also when the fire was
    // accepted before the pause; a run by hand is dispatched as usual.
    if routine.status == RoutineStatus::Paused
        && matches!(run.source, RunSource::Schedule | RunSource::Webhook)
    {
        return Outcome::ended(RunStatus::Skipped, "routine_paused");
    }
    match late {
        Some(Late::Missed) => return Outcome::missed(run, "missed_schedule"),
        Some(Late::OverCap) => return Outcome::missed(run, "catch_up_cap"),
        Some(Late::CatchUp) => {
            return Outcome {
                catch_up: true,
                ..apply_policy(situation, plan, routine, run)
            };
        }
        None => {}
    }
    apply_policy(situation, plan, routine, run)
}

/// The assignee check and the concurrency policy.
fn apply_policy(
    situation: &mut Situation,
    plan: &mut Plan,
    routine: &RoutineRow,
    run: &PendingRun,
) -> Outcome {
    if situation
        .agents
        .get(&routine.assignee_agent_id)
        .is_none_or(|status| *status == AgentStatus::Terminated)
    {
        return Outcome {
            failure_reason: Some("the routine's assignee agent is terminated".to_owned()),
            ..Outcome::ended(RunStatus::Failed, "agent_not_assignable")
        };
    }
    let open = situation.open.get(&routine.id).cloned();
    match (routine.concurrency_policy, open) {
        (ConcurrencyPolicy::SkipIfActive, Some(issue)) => Outcome {
            linked_issue_id: Some(issue.id),
            coalesced_into_run_id: issue.origin_run_id,
            ..Outcome::ended(RunStatus::Skipped, "active_issue")
        },
        (ConcurrencyPolicy::CoalesceIfActive, Some(issue)) => {
            plan.events.push((
                routine.company_id,
                issue.id,
                IssueEventType::FireCoalesced,
                json!({ "runId": run.id, "payload": run.payload, "source": run.source }),
            ));
            let waker = issue.assignee_agent_id.unwrap_or(routine.assignee_agent_id);
            let heartbeat = situation.awake.insert((issue.id, waker)).then(|| {
                plan.heartbeats.push(NewHeartbeat {
                    company_id: routine.company_id,
                    agent_id: waker,
                    issue_id: issue.id,
                    routine_run_id: Some(run.id),
                    context: context(routine, run, issue.title, issue.description),
                });
                plan.heartbeats.len() - 1
            });
            Outcome {
                linked_issue_id: Some(issue.id),
                coalesced_into_run_id: issue.origin_run_id,
                heartbeat,
                ..Outcome::ended(RunStatus::Coalesced, "active_issue")
            }
        }
        _ => create_execution_issue(situation, plan, routine, run),
    }
}

fn create_execution_issue(
    situation: &mut Situation,
    plan: &mut Plan,
    routine: &RoutineRow,
    run: &PendingRun,
) -> Outcome {
    let date = fire_date(run);
    let title = render(&routine.title, &date, &run.payload, 200);
    let title = if title.trim().is_empty() {
        routine.title.clone()
    } else {
        title
    };
    let description = render(&routine.description, &date, &run.payload, 10_000);
    let issue_id = new_id();
    situation
        .open
        .entry(routine.id)
        .or_insert_with(|| OpenIssue {
            id: issue_id,
            origin_run_id: Some(run.id),
            assignee_agent_id: Some(routine.assignee_agent_id),
            title: title.clone(),
            description: description.clone(),
        });
    situation
        .awake
        .insert((issue_id, routine.assignee_agent_id));
    plan.events.push((
        routine.company_id,
        issue_id,
        IssueEventType::Created,
        json!({ "runId": run.id, "routineId": routine.id }),
    ));
    plan.heartbeats.push(NewHeartbeat {
        company_id: routine.company_id,
        agent_id: routine.assignee_agent_id,
        issue_id,
        routine_run_id: Some(run.id),
        context: context(routine, run, title.clone(), description.clone()),
    });
    plan.issues.push(NewIssue {
        id: issue_id,
        company_id: routine.company_id,
        title,
        description,
        project_id: routine.project_id,
        goal_id: routine.goal_id,
        parent_issue_id: routine.parent_issue_id,
        assignee_agent_id: routine.assignee_agent_id,
        priority: routine.priority,
        routine_id: routine.id,
        origin_run_id: run.id,
    });
    Outcome {
        status: RunStatus::IssueCreated,
        reason: None,
        failure_reason: None,
        linked_issue_id: Some(issue_id),
        coalesced_into_run_id: None,
        heartbeat: Some(plan.heartbeats.len() - 1),
        catch_up: false,
        missed: None,
    }
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
    for (id, outcome) in &outcomes {
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
    sqlx::query!(
        "UPDATE routine_runs r
         SET status = o.status, reason = o.reason, failure_reason = o.failure_reason,
             linked_issue_id = o.linked, coalesced_into_run_id = o.coalesced,
             heartbeat_run_id = o.heartbeat,
             completed_at = CASE WHEN o.status = 'issue_created' THEN NULL ELSE $8::timestamptz END,
             updated_at = $8,
             catch_up = r.catch_up OR o.catch_up,
             missed = COALESCE(o.missed, r.missed)
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::uuid[], $7::uuid[],
                     $9::bool[], $10::jsonb[])
              AS o(id, status, reason, failure_reason, linked, coalesced, heartbeat, catch_up, missed)
         WHERE r.id = o.id",
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
    )
    .execute(&mut *conn)
    .await?;

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
    Ok(outcomes
        .into_iter()
        .map(|(id, outcome)| (id, outcome.status))
        .collect())
}

/// The last fire of each trigger (time and result), and of each routine.
pub(super) type LastFires = (
    HashMap<Uuid, (DateTime<Utc>, &'static str)>,
    HashMap<Uuid, DateTime<Utc>>,
);

/// The last fire of each trigger (time and result) and of each routine: runs are in dispatch
/// order, so the last outcome seen for a trigger is its last result.
pub(super) fn last_fires(runs: &[PendingRun], outcomes: &[(Uuid, Outcome)]) -> LastFires {
    let mut triggers: HashMap<Uuid, (DateTime<Utc>, &'static str)> = HashMap::new();
    let mut routine_last: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    for (run, (_, outcome)) in runs.iter().zip(outcomes) {
        if let Some(trigger_id) = run.trigger_id {
            let entry = triggers
                .entry(trigger_id)
                .or_insert((run.triggered_at, outcome.status.as_str()));
            *entry = (entry.0.max(run.triggered_at), outcome.status.as_str());
        }
        let last = routine_last
            .entry(run.routine_id)
            .or_insert(run.triggered_at);
        *last = (*last).max(run.triggered_at);
    }
    (triggers, routine_last)
}

/// The `run.dispatched` audit entry of each run.
pub(super) fn dispatch_entries<'a>(
    routines: &HashMap<Uuid, RoutineRow>,
    runs: &[PendingRun],
    outcomes: &[(Uuid, Outcome)],
    heartbeat_of: &[Option<Uuid>],
) -> Vec<NewActivity<'a>> {
    runs.iter()
        .zip(outcomes)
        .zip(heartbeat_of)
        .map(|((run, (_, outcome)), heartbeat_run_id)| NewActivity {
            company_id: routines[&run.routine_id].company_id,
            actor: Actor::System,
            action: "run.dispatched",
            entity_type: "routine_run",
            entity_id: run.id,
            details: json!({
                "routineId": run.routine_id,
                "status": outcome.status,
                "reason": outcome.reason,
                "issueId": outcome.linked_issue_id,
                "heartbeatRunId": heartbeat_run_id,
            }),
        })
        .collect()
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

fn context(
    routine: &RoutineRow,
    run: &PendingRun,
    title: String,
    description: String,
) -> HeartbeatContext {
    HeartbeatContext {
        routine_id: Some(routine.id),
        title,
        description,
        payload: run.payload.clone(),
        source: run.source.as_str().to_owned(),
        scheduled_for: run.scheduled_for,
    }
}

/// The fire's nominal date: a schedule fire's time in its trigger's zone, else the acceptance
/// time in UTC.
fn fire_date(run: &PendingRun) -> String {
    let zone = run
        .timezone
        .as_deref()
        .and_then(|z| TimeZone::parse(z).ok())
        .unwrap_or(TimeZone::UTC);
    match (run.source, run.scheduled_for) {
        (RunSource::Schedule, Some(at)) => zone.wall(at).format("%Y-%m-%d").to_string(),
        _ => run.triggered_at.format("%Y-%m-%d").to_string(),
    }
}
