//! The dispatch decisions without a database: policies, state at dispatch, late runs,
//! templates, and a property over any batch.

use proptest::prelude::*;

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("time").to_utc()
}

fn routine(policy: ConcurrencyPolicy) -> RoutineRow {
    RoutineRow {
        id: Uuid::now_v7(),
        company_id: Uuid::now_v7(),
        title: "Report {{date}} on {{payload.topic}}".to_owned(),
        description: "About {{payload.topic}}".to_owned(),
        assignee_agent_id: Uuid::now_v7(),
        project_id: Uuid::now_v7(),
        goal_id: None,
        parent_issue_id: None,
        priority: Priority::Medium,
        status: RoutineStatus::Active,
        concurrency_policy: policy,
        catch_up_policy: CatchUpPolicy::SkipMissed,
        catch_up_cap: 3,
        last_triggered_at: None,
        created_at: at("2026-11-01T00:00:00Z"),
        updated_at: at("2026-11-01T00:00:00Z"),
        run_timeout_sec: None,
        pause_after_failures: None,
        paused_reason: None,
        pause_note: None,
        paused_until: None,
        paused_at: None,
        consecutive_failures: 0,
    }
}

fn run(routine: &RoutineRow, source: RunSource, payload: Value) -> PendingRun {
    PendingRun {
        id: Uuid::now_v7(),
        routine_id: routine.id,
        source,
        trigger_id: None,
        timezone: None,
        scheduled_for: None,
        fire_at: None,
        triggered_at: at("2026-11-29T10:00:00Z"),
        catch_up: false,
        payload,
    }
}

fn scheduled(routine: &RoutineRow, nominal: &str, zone: &str) -> PendingRun {
    PendingRun {
        scheduled_for: Some(at(nominal)),
        fire_at: Some(at(nominal)),
        triggered_at: at(nominal),
        timezone: Some(zone.to_owned()),
        trigger_id: Some(Uuid::now_v7()),
        ..run(routine, RunSource::Schedule, json!({}))
    }
}

/// The assignee active, and `open` as the routine's open issue.
fn situation(routine: &RoutineRow, open: Option<OpenIssue>) -> Situation {
    Situation {
        agents: HashMap::from([(routine.assignee_agent_id, AgentStatus::Active)]),
        open: open.map(|o| (routine.id, o)).into_iter().collect(),
        awake: HashSet::new(),
    }
}

fn open_issue(routine: &RoutineRow) -> OpenIssue {
    OpenIssue {
        id: Uuid::now_v7(),
        origin_run_id: Some(Uuid::now_v7()),
        assignee_agent_id: Some(routine.assignee_agent_id),
        title: "open".to_owned(),
        description: String::new(),
    }
}

/// Plans `runs` of `routine` with nothing late; returns the plan.
fn decide_all(situation: &mut Situation, routine: &RoutineRow, runs: &[PendingRun]) -> Plan {
    let routines = HashMap::from([(routine.id, routine.clone())]);
    plan(situation, &routines, runs, &HashMap::new())
}

fn statuses(plan: &Plan) -> Vec<(RunStatus, Option<&'static str>)> {
    plan.outcomes
        .iter()
        .map(|(_, o)| (o.status, o.reason))
        .collect()
}

#[test]
fn with_an_open_issue_each_policy_does_its_own_thing() {
    let manual = |r: &RoutineRow| run(r, RunSource::Manual, json!({ "topic": "x" }));

    let skip = routine(ConcurrencyPolicy::SkipIfActive);
    let issue = open_issue(&skip);
    let decided = decide_all(
        &mut situation(&skip, Some(issue.clone())),
        &skip,
        &[manual(&skip)],
    );
    assert_eq!(
        statuses(&decided),
        [(RunStatus::Skipped, Some("active_issue"))]
    );
    let (_, outcome) = &decided.outcomes[0];
    assert_eq!(outcome.linked_issue_id, Some(issue.id));
    assert_eq!(outcome.coalesced_into_run_id, issue.origin_run_id);
    assert!(decided.issues.is_empty() && decided.heartbeats.is_empty());

    // Coalescing records the fire on the open issue and wakes its assignee once per batch.
    let coalesce = routine(ConcurrencyPolicy::CoalesceIfActive);
    let issue = open_issue(&coalesce);
    let runs = [manual(&coalesce), manual(&coalesce)];
    let decided = decide_all(
        &mut situation(&coalesce, Some(issue.clone())),
        &coalesce,
        &runs,
    );
    assert_eq!(
        statuses(&decided),
        [(RunStatus::Coalesced, Some("active_issue")); 2]
    );
    assert_eq!(decided.events.len(), 2);
    assert!(
        decided
            .events
            .iter()
            .all(|e| e.1 == issue.id && e.2 == IssueEventType::FireCoalesced)
    );
    for (_, outcome) in &decided.outcomes {
        assert_eq!(outcome.linked_issue_id, Some(issue.id));
        assert_eq!(outcome.coalesced_into_run_id, issue.origin_run_id);
    }
    assert_eq!(decided.heartbeats.len(), 1, "one wake-up for the batch");
    assert_eq!(decided.outcomes[0].1.heartbeat, Some(0));
    assert_eq!(decided.outcomes[1].1.heartbeat, None);
    // An agent already awake on the issue is not woken again.
    let mut awake = situation(&coalesce, Some(issue.clone()));
    awake.awake.insert((issue.id, coalesce.assignee_agent_id));
    assert!(
        decide_all(&mut awake, &coalesce, &[manual(&coalesce)])
            .heartbeats
            .is_empty()
    );

    let always = routine(ConcurrencyPolicy::AlwaysEnqueue);
    let issue = open_issue(&always);
    let decided = decide_all(
        &mut situation(&always, Some(issue)),
        &always,
        &[manual(&always)],
    );
    assert_eq!(statuses(&decided), [(RunStatus::IssueCreated, None)]);
    // Each new issue's outcome points at its own heartbeat run.
    let runs = [manual(&always), manual(&always)];
    let decided = decide_all(&mut situation(&always, None), &always, &runs);
    assert_eq!(decided.outcomes[0].1.heartbeat, Some(0));
    assert_eq!(decided.outcomes[1].1.heartbeat, Some(1));
    assert_eq!(decided.heartbeats[1].issue_id, decided.issues[1].id);
}

#[test]
fn a_batch_sees_the_issue_its_first_run_created() {
    let skip = routine(ConcurrencyPolicy::SkipIfActive);
    let runs: Vec<_> = (0..3)
        .map(|n| run(&skip, RunSource::Manual, json!({ "n": n })))
        .collect();
    let decided = decide_all(&mut situation(&skip, None), &skip, &runs);
    assert_eq!(
        statuses(&decided),
        [
            (RunStatus::IssueCreated, None),
            (RunStatus::Skipped, Some("active_issue")),
            (RunStatus::Skipped, Some("active_issue")),
        ]
    );
    let created = &decided.issues[0];
    assert_eq!(decided.outcomes[1].1.linked_issue_id, Some(created.id));
    assert_eq!(
        decided.outcomes[1].1.coalesced_into_run_id,
        Some(runs[0].id)
    );
    assert_eq!(created.origin_run_id, runs[0].id);
    assert_eq!(decided.heartbeats.len(), 1);
    assert_eq!(decided.heartbeats[0].agent_id, skip.assignee_agent_id);
}

#[test]
fn the_state_at_dispatch_comes_first() {
    let mut archived = routine(ConcurrencyPolicy::AlwaysEnqueue);
    archived.status = RoutineStatus::Archived;
    let decided = decide_all(
        &mut situation(&archived, None),
        &archived,
        &[run(&archived, RunSource::Manual, json!({}))],
    );
    assert_eq!(
        statuses(&decided),
        [(RunStatus::Skipped, Some("routine_archived"))]
    );

    // Paused: schedule and webhook runs are skipped, runs by hand or by API go ahead.
    let mut paused = routine(ConcurrencyPolicy::AlwaysEnqueue);
    paused.status = RoutineStatus::Paused;
    let runs: Vec<_> = [
        RunSource::Schedule,
        RunSource::Webhook,
        RunSource::Manual,
        RunSource::Api,
    ]
    .into_iter()
    .map(|source| run(&paused, source, json!({})))
    .collect();
    let decided = decide_all(&mut situation(&paused, None), &paused, &runs);
    assert_eq!(
        statuses(&decided),
        [
            (RunStatus::Skipped, Some("routine_paused")),
            (RunStatus::Skipped, Some("routine_paused")),
            (RunStatus::IssueCreated, None),
            (RunStatus::IssueCreated, None),
        ]
    );

    // A terminated (or unknown) assignee fails the run and creates nothing.
    let active = routine(ConcurrencyPolicy::AlwaysEnqueue);
    let mut gone = situation(&active, None);
    gone.agents
        .insert(active.assignee_agent_id, AgentStatus::Terminated);
    let decided = decide_all(
        &mut gone,
        &active,
        &[run(&active, RunSource::Manual, json!({}))],
    );
    assert_eq!(
        statuses(&decided),
        [(RunStatus::Failed, Some("agent_not_assignable"))]
    );
    assert!(decided.outcomes[0].1.failure_reason.is_some());
    assert!(decided.issues.is_empty() && decided.heartbeats.is_empty());
    let mut unknown = situation(&active, None);
    unknown.agents.clear();
    assert_eq!(
        statuses(&decide_all(
            &mut unknown,
            &active,
            &[run(&active, RunSource::Manual, json!({}))]
        )),
        [(RunStatus::Failed, Some("agent_not_assignable"))]
    );
}

#[test]
fn late_schedule_runs_follow_the_catch_up_policy() {
    let grace = TimeDelta::seconds(60);
    let now = at("2026-11-29T10:01:00Z");
    let mut skip = routine(ConcurrencyPolicy::AlwaysEnqueue);
    skip.catch_up_policy = CatchUpPolicy::SkipMissed;
    let on_time = scheduled(&skip, "2026-11-29T10:00:00Z", "UTC");
    let late = scheduled(&skip, "2026-11-29T09:59:59Z", "UTC");
    let manual = run(&skip, RunSource::Manual, json!({}));
    let routines = HashMap::from([(skip.id, skip.clone())]);
    let runs = [on_time, late, manual];
    let decided_late = late_runs(&runs, &routines, (now, grace), &HashMap::new());
    assert_eq!(decided_late, HashMap::from([(runs[1].id, Late::Missed)]));
    let decided = plan(&mut situation(&skip, None), &routines, &runs, &decided_late);
    assert_eq!(
        statuses(&decided),
        [
            (RunStatus::IssueCreated, None),
            (RunStatus::Skipped, Some("missed_schedule")),
            (RunStatus::IssueCreated, None),
        ]
    );
    assert_eq!(
        decided.outcomes[1].1.missed,
        Some(json!({ "count": 1, "from": "2026-11-29T09:59:59Z", "to": "2026-11-29T09:59:59Z" }))
    );

    // With a cap of 3: a late run with fewer than 3 later late runs of its trigger is caught
    // up, one with 3 or more is over the cap.
    let mut capped = routine(ConcurrencyPolicy::AlwaysEnqueue);
    capped.catch_up_policy = CatchUpPolicy::EnqueueMissedWithCap;
    let runs = [
        scheduled(&capped, "2026-11-29T09:00:00Z", "UTC"),
        scheduled(&capped, "2026-11-29T09:15:00Z", "UTC"),
    ];
    let routines = HashMap::from([(capped.id, capped.clone())]);
    assert_eq!(capped_late(&runs, &routines, (now, grace)).len(), 2);
    let newer = HashMap::from([(runs[0].id, 3), (runs[1].id, 2)]);
    let decided_late = late_runs(&runs, &routines, (now, grace), &newer);
    assert_eq!(decided_late[&runs[0].id], Late::OverCap);
    assert_eq!(decided_late[&runs[1].id], Late::CatchUp);
    let decided = plan(
        &mut situation(&capped, None),
        &routines,
        &runs,
        &decided_late,
    );
    assert_eq!(
        statuses(&decided),
        [
            (RunStatus::Skipped, Some("catch_up_cap")),
            (RunStatus::IssueCreated, None),
        ]
    );
    assert!(decided.outcomes[1].1.catch_up);
    // A fire handled late by the scheduler (triggered after its nominal time) is still due at
    // its nominal time.
    let handled_late = PendingRun {
        triggered_at: at("2026-11-29T10:00:50Z"),
        ..scheduled(&capped, "2026-11-29T09:59:30Z", "UTC")
    };
    assert!(handled_late.is_late(now, grace));
    // A catch-up run the scheduler created after an outage is due when it was created.
    let created_late = PendingRun {
        catch_up: true,
        triggered_at: at("2026-11-29T10:00:30Z"),
        ..scheduled(&capped, "2026-11-29T08:00:00Z", "UTC")
    };
    assert!(!created_late.is_late(now, grace));
    // A jittered fire is due at its real instant: 40 s of jitter make a fire nominally due
    // 70 s ago late only by 30 s, within the grace.
    let jittered = PendingRun {
        fire_at: Some(at("2026-11-29T10:00:30Z")),
        ..scheduled(&capped, "2026-11-29T09:59:50Z", "UTC")
    };
    assert!(!jittered.is_late(now, grace));
    assert!(
        PendingRun {
            fire_at: None,
            ..scheduled(&capped, "2026-11-29T09:59:50Z", "UTC")
        }
        .is_late(now, grace)
    );
}

#[test]
fn the_issue_renders_the_routine_templates_with_the_fire_date_in_its_zone() {
    let mut always = routine(ConcurrencyPolicy::AlwaysEnqueue);
    // 2026-11-29 23:30 UTC is already the 30th in Tokyo.
    let fire = PendingRun {
        payload: json!({ "topic": "billing" }),
        ..scheduled(&always, "2026-11-29T23:30:00Z", "Asia/Tokyo")
    };
    let decided = decide_all(&mut situation(&always, None), &always, &[fire]);
    assert_eq!(decided.issues[0].title, "Report 2026-11-30 on billing");
    assert_eq!(decided.issues[0].description, "About billing");
    assert_eq!(
        decided.heartbeats[0].context.title,
        "Report 2026-11-30 on billing"
    );
    // A title that renders to nothing falls back to the template as written.
    always.title = "{{payload.missing}}".to_owned();
    let decided = decide_all(
        &mut situation(&always, None),
        &always,
        &[run(&always, RunSource::Manual, json!({}))],
    );
    assert_eq!(decided.issues[0].title, "{{payload.missing}}");
}

#[test]
fn a_batch_records_each_triggers_last_result_and_each_routines_last_fire() {
    let routine = routine(ConcurrencyPolicy::SkipIfActive);
    let trigger = Uuid::now_v7();
    let first = PendingRun {
        trigger_id: Some(trigger),
        triggered_at: at("2026-11-29T10:00:00Z"),
        ..run(&routine, RunSource::Webhook, json!({}))
    };
    let second = PendingRun {
        trigger_id: Some(trigger),
        triggered_at: at("2026-11-29T10:05:00Z"),
        ..run(&routine, RunSource::Webhook, json!({}))
    };
    let by_hand = PendingRun {
        triggered_at: at("2026-11-29T10:07:00Z"),
        ..run(&routine, RunSource::Manual, json!({}))
    };
    let runs = [first, second, by_hand];
    let decided = decide_all(&mut situation(&routine, None), &routine, &runs);
    let (triggers, routines) = last_fires(&runs, &decided.outcomes);
    assert_eq!(
        triggers,
        HashMap::from([(trigger, (at("2026-11-29T10:05:00Z"), "skipped"))])
    );
    assert_eq!(
        routines,
        HashMap::from([(routine.id, at("2026-11-29T10:07:00Z"))])
    );
}

proptest! {
    /// Whatever the batch, its sources and its open issue: under `skip_if_active` and
    /// `coalesce_if_active` a routine ends with at most one new issue, and none when one was
    /// open; every run gets exactly one outcome, in order; `always_enqueue` opens an issue per
    /// run that is not skipped for the routine's state.
    #[test]
    fn a_batch_never_opens_a_second_issue_where_the_policy_forbids_it(
        policy in prop_oneof![
            Just(ConcurrencyPolicy::SkipIfActive),
            Just(ConcurrencyPolicy::CoalesceIfActive),
            Just(ConcurrencyPolicy::AlwaysEnqueue),
        ],
        sources in prop::collection::vec(prop_oneof![
            Just(RunSource::Manual),
            Just(RunSource::Api),
            Just(RunSource::Webhook),
        ], 1..30),
        already_open in any::<bool>(),
    ) {
        let routine = routine(policy);
        let open = already_open.then(|| open_issue(&routine));
        let open_id = open.as_ref().map(|o| o.id);
        let runs: Vec<_> = sources
            .iter()
            .map(|s| run(&routine, *s, json!({ "topic": "t" })))
            .collect();
        let decided = decide_all(&mut situation(&routine, open), &routine, &runs);
        prop_assert_eq!(decided.outcomes.len(), runs.len());
        for ((id, _), run) in decided.outcomes.iter().zip(&runs) {
            prop_assert_eq!(*id, run.id);
        }
        let created = decided.issues.len();
        match policy {
            ConcurrencyPolicy::AlwaysEnqueue => prop_assert_eq!(created, runs.len()),
            _ if already_open => prop_assert_eq!(created, 0),
            _ => prop_assert_eq!(created, 1),
        }
        // Every outcome that names an issue names one that exists or was created.
        let mut known: HashSet<Uuid> = decided.issues.iter().map(|i| i.id).collect();
        known.extend(open_id);
        for (_, outcome) in &decided.outcomes {
            if let Some(issue) = outcome.linked_issue_id {
                prop_assert!(known.contains(&issue));
            }
        }
    }
}
