//! Dispatch decided: what a routine's state, its catch-up and concurrency policies make of
//! each `received` run of a batch — skipped, failed, coalesced into the open issue, or a new
//! execution issue with its heartbeat run — decided in order, so a later run of the batch sees
//! what an earlier one planned. Pure: the backend loads the runs, their routines and the
//! [`Situation`], passes the time, and writes the [`Plan`].

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    engine::render::render,
    model::{
        AgentStatus, CatchUpPolicy, ConcurrencyPolicy, HeartbeatContext, IssueEventType,
        PausedReason, Priority, RoutineStatus, RunSource, RunStatus,
    },
    schedule::TimeZone,
};

/// A routine as stored (without its triggers): what the rules read of it.
#[derive(Clone)]
pub(crate) struct RoutineRow {
    pub(crate) id: Uuid,
    pub(crate) company_id: Uuid,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) assignee_agent_id: Uuid,
    pub(crate) project_id: Uuid,
    pub(crate) goal_id: Option<Uuid>,
    pub(crate) parent_issue_id: Option<Uuid>,
    pub(crate) priority: Priority,
    pub(crate) status: RoutineStatus,
    pub(crate) concurrency_policy: ConcurrencyPolicy,
    pub(crate) catch_up_policy: CatchUpPolicy,
    pub(crate) catch_up_cap: i32,
    pub(crate) last_triggered_at: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) run_timeout_sec: Option<i32>,
    pub(crate) pause_after_failures: Option<i32>,
    pub(crate) paused_reason: Option<PausedReason>,
    pub(crate) pause_note: Option<String>,
    pub(crate) paused_until: Option<DateTime<Utc>>,
    pub(crate) paused_at: Option<DateTime<Utc>>,
    pub(crate) consecutive_failures: i32,
}

/// A heartbeat run to queue.
#[derive(Debug)]
pub(crate) struct NewHeartbeat {
    pub(crate) company_id: Uuid,
    pub(crate) agent_id: Uuid,
    pub(crate) issue_id: Uuid,
    pub(crate) routine_run_id: Option<Uuid>,
    pub(crate) context: HeartbeatContext,
}

/// A `received` run waiting for its dispatch, with what the decisions read of it.
pub(crate) struct PendingRun {
    pub(crate) id: Uuid,
    pub(crate) routine_id: Uuid,
    pub(crate) source: RunSource,
    pub(crate) trigger_id: Option<Uuid>,
    pub(crate) timezone: Option<String>,
    pub(crate) scheduled_for: Option<DateTime<Utc>>,
    /// When a schedule fire takes effect (nominal time plus jitter).
    pub(crate) fire_at: Option<DateTime<Utc>>,
    pub(crate) triggered_at: DateTime<Utc>,
    pub(crate) catch_up: bool,
    pub(crate) payload: Value,
}

impl PendingRun {
    /// When a schedule run should have been dispatched: its real instant (nominal time plus
    /// jitter), or, for a catch-up run the scheduler created after an outage, when it was
    /// created. `None` for other sources (a backfill included).
    fn due_at(&self) -> Option<DateTime<Utc>> {
        match (self.source, self.scheduled_for) {
            (RunSource::Schedule, Some(_)) if self.catch_up => Some(self.triggered_at),
            (RunSource::Schedule, Some(at)) => Some(self.fire_at.unwrap_or(at)),
            _ => None,
        }
    }

    /// Whether it is dispatched more than `grace` after it was due (the workers were down or
    /// backlogged): it then follows its routine's catch-up policy, as a missed fire would.
    pub(crate) fn is_late(&self, now: DateTime<Utc>, grace: TimeDelta) -> bool {
        self.due_at().is_some_and(|due| now - due > grace)
    }
}

/// What the catch-up policy makes of a schedule run dispatched late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Late {
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
pub(crate) fn late_runs(
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
pub(crate) fn capped_late<'a>(
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
pub(crate) struct OpenIssue {
    pub(crate) id: Uuid,
    pub(crate) origin_run_id: Option<Uuid>,
    pub(crate) assignee_agent_id: Option<Uuid>,
    pub(crate) title: String,
    pub(crate) description: String,
}

/// How a run ended its dispatch.
pub(crate) struct Outcome {
    pub(crate) status: RunStatus,
    pub(crate) reason: Option<&'static str>,
    pub(crate) failure_reason: Option<String>,
    pub(crate) linked_issue_id: Option<Uuid>,
    pub(crate) coalesced_into_run_id: Option<Uuid>,
    /// Index into the batch's new heartbeat runs.
    pub(crate) heartbeat: Option<usize>,
    /// Set when a late run is dispatched as a catch-up.
    pub(crate) catch_up: bool,
    /// `{count, from, to}` of a late run skipped as missed.
    pub(crate) missed: Option<Value>,
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
pub(crate) struct NewIssue {
    pub(crate) id: Uuid,
    pub(crate) company_id: Uuid,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) project_id: Uuid,
    pub(crate) goal_id: Option<Uuid>,
    pub(crate) parent_issue_id: Option<Uuid>,
    pub(crate) assignee_agent_id: Uuid,
    pub(crate) priority: Priority,
    pub(crate) routine_id: Uuid,
    pub(crate) origin_run_id: Uuid,
}

/// Everything a batch of dispatches decided, written with one statement per table.
#[derive(Default)]
pub(crate) struct Plan {
    pub(crate) issues: Vec<NewIssue>,
    /// Issue events: (company, issue, type, data).
    pub(crate) events: Vec<(Uuid, Uuid, IssueEventType, Value)>,
    pub(crate) heartbeats: Vec<NewHeartbeat>,
    pub(crate) outcomes: Vec<(Uuid, Outcome)>,
}

/// What the decisions read, loaded once per batch and kept current as the batch decides.
pub(crate) struct Situation {
    pub(crate) agents: HashMap<Uuid, AgentStatus>,
    /// The oldest open execution issue of each routine (for the policies that look at it).
    pub(crate) open: HashMap<Uuid, OpenIssue>,
    /// (issue, agent) pairs with a queued or running heartbeat run.
    pub(crate) awake: HashSet<(Uuid, Uuid)>,
}

/// The concurrency policy applied to one run; what it creates goes into `plan`, and
/// `situation` is updated so later runs of the batch see it.
/// Decides every run in order (a later run sees what an earlier one planned), with the state
/// found now: a routine paused or archived since the run was accepted, and `late` (see
/// [`late_runs`]).
pub(crate) fn plan(
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
    let issue_id = Uuid::now_v7();
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

/// The last fire of each trigger (time and result), and of each routine.
pub(crate) type LastFires = (
    HashMap<Uuid, (DateTime<Utc>, &'static str)>,
    HashMap<Uuid, DateTime<Utc>>,
);

/// The last fire of each trigger (time and result) and of each routine: runs are in dispatch
/// order, so the last outcome seen for a trigger is its last result.
pub(crate) fn last_fires(runs: &[PendingRun], outcomes: &[(Uuid, Outcome)]) -> LastFires {
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
        (RunSource::Schedule | RunSource::Backfill, Some(at)) => {
            zone.wall(at).format("%Y-%m-%d").to_string()
        }
        _ => run.triggered_at.format("%Y-%m-%d").to_string(),
    }
}

#[cfg(test)]
mod tests;
