//! The storage conformance suite: the same operations against every backend (SQLite and
//! Postgres), asserting the same observable results — companies, tokens, agents, routines,
//! triggers, runs and idempotency, the queue's leases and fencing, the concurrency policies,
//! heartbeat runs, and exactly-once schedule fires with catch-up and leader fencing. Postgres
//! runs where it answers (always under CI); SQLite everywhere.

use std::time::Duration;

use chrono::TimeDelta;
use nexus_shared::{
    Clock as _,
    model::{
        Actor, AgentStatus, CatchUpCap, CatchUpPolicy, ConcurrencyPolicy, Description,
        FinishStatus, HeartbeatStatus, IdempotencyKey, IssueStatus, Label, Priority, ReplayWindow,
        RoutineStatus, RunSource, RunStatus, SenderSecret, SigningMode, Summary, Title,
        TriggerConfig, WakeupUrl,
    },
    queue::{JobError, JobSpec, RetryOutcome, Task},
    schedule::{CronExpression, TimeZone},
    store::{
        AgentChanges, CallSignature, DISPATCH_RUN, IssueFilter, Leadership, NewIssue, NewRoutine,
        NewRun, NewTrigger, NewTriggerKind, Rotation, RoutineChanges, RoutineFilter, StoreError,
        TriggerChanges, WakeupSpec,
    },
};
use serde_json::json;
use uuid::Uuid;

const START: &str = "2026-11-30T10:00:30Z";

fn title(text: &str) -> Title {
    Title::parse(text.to_owned()).expect("a title")
}

fn board() -> Actor {
    Actor::Board {
        token_id: Uuid::nil(),
    }
}

fn routine(agent: Uuid, project: Uuid) -> NewRoutine {
    NewRoutine {
        title: title("Daily report"),
        description: Description::default(),
        assignee_agent_id: agent,
        project_id: project,
        goal_id: None,
        parent_issue_id: None,
        priority: Priority::Medium,
        status: RoutineStatus::Active,
        concurrency_policy: ConcurrencyPolicy::CoalesceIfActive,
        catch_up_policy: CatchUpPolicy::SkipMissed,
        catch_up_cap: CatchUpCap::parse(25).expect("cap"),
        run_timeout_sec: None,
        pause_after_failures: None,
    }
}

fn schedule(cron: &str, zone: &str) -> NewTrigger {
    NewTrigger {
        kind: NewTriggerKind::Schedule {
            cron: CronExpression::parse(cron).expect("cron"),
            zone: TimeZone::parse(zone).expect("zone"),
            jitter: nexus_shared::model::JitterSec::parse(0).expect("jitter"),
        },
        label: Label::default(),
        enabled: true,
    }
}

fn next_run_at(config: &TriggerConfig) -> Option<chrono::DateTime<chrono::Utc>> {
    match config {
        TriggerConfig::Schedule { next_run_at, .. } => *next_run_at,
        _ => panic!("a schedule trigger"),
    }
}

mod catalog;

/// A company, a poll agent, a project and a routine with `policy`; returns
/// `(company, agent, routine)`.
macro_rules! seed {
    ($store:expr, $policy:expr) => {{
        let company = $store
            .create_company(title("Acme"), board())
            .await
            .expect("company")
            .id;
        let agent = $store
            .create_agent(company, title("Ada"), WakeupSpec::Poll, board())
            .await
            .expect("agent")
            .agent
            .id;
        let project = $store
            .create_project(company, title("Ops"), board())
            .await
            .expect("project")
            .id;
        let routine = $store
            .create_routine(
                company,
                NewRoutine {
                    concurrency_policy: $policy,
                    ..routine(agent, project)
                },
                board(),
            )
            .await
            .expect("routine")
            .id;
        (company, agent, routine)
    }};
}

/// A job the queue keeps and leases like any other, and no worker can handle.
fn example() -> Task {
    Task::Unreadable {
        kind: "example".to_owned(),
        payload: json!({}),
    }
}

fn manual(payload: serde_json::Value, key: Option<&str>) -> NewRun {
    let serde_json::Value::Object(payload) = payload else {
        panic!("a payload is an object")
    };
    NewRun {
        source: RunSource::Manual,
        trigger_id: None,
        payload,
        idempotency_key: key.map(|k| IdempotencyKey::parse(k.to_owned()).expect("key")),
        trace_context: None,
        signature: None,
    }
}

/// Claims every due job as `owner` and dispatches the dispatch jobs one at a time.
macro_rules! drain {
    ($store:expr, $owner:expr) => {{
        let jobs = $store
            .claim_jobs($owner, Duration::from_secs(30), 100)
            .await
            .expect("claim");
        let mut statuses = Vec::new();
        for job in jobs.iter().filter(|j| j.task.kind() == DISPATCH_RUN) {
            let dispatched = $store
                .dispatch_jobs(std::slice::from_ref(job))
                .await
                .expect("dispatch");
            assert_eq!(dispatched.held, [job.id]);
            statuses.extend(dispatched.outcomes.into_iter().map(|(_, status)| status));
        }
        statuses
    }};
}

fn leader(epoch: i64) -> Leadership {
    Leadership {
        epoch,
        leader_id: format!("test-{epoch}"),
    }
}

mod flow;

/// Schedule controls: jitter and backfill.
mod controls;

/// Routine health, pauses, run timeouts and notification channels.
mod health;

/// Retention: what goes, what stays, at the boundary of each rule.
mod retention;

/// The change log behind live updates.
mod events;

/// The figures of the console's system page.
mod system;

/// What the worker finds when it dispatches decides, not what held when the run was accepted
/// (the contract's "State at dispatch"), and runs are listed by when they were triggered.
mod at_dispatch;
