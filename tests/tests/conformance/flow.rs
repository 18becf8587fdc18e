//! The flow of a fire on every backend: runs and idempotency, webhook acceptance, the queue,
//! dispatch and the concurrency policies, heartbeat runs, schedule fires and catch-up.

use super::*;

nexus_tests::conformance! {
    async fn runs_are_idempotent_per_key_and_refused_on_archived_routines(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let first = store.accept_manual_run(routine_id, manual(json!({ "n": 1 }), Some("k-1")), board()).await.expect("accept");
        assert!(!first.replayed);
        assert_eq!((first.run.status, first.run.source), (RunStatus::Received, RunSource::Manual));
        let again = store.accept_manual_run(routine_id, manual(json!({ "n": 1 }), Some("k-1")), board()).await.expect("replay");
        assert!(again.replayed);
        assert_eq!(again.run.id, first.run.id);
        let refused = store.accept_manual_run(routine_id, manual(json!({ "n": 2 }), Some("k-1")), board()).await;
        assert!(matches!(refused, Err(StoreError::Refused(ref r)) if r.code() == "idempotency_key_reused"), "{refused:?}");
        let other = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("accept");
        assert_ne!(other.run.id, first.run.id);
        let refused = store.accept_manual_run(routine_id, NewRun { trigger_id: Some(Uuid::now_v7()), ..manual(json!({}), None) }, board()).await;
        assert!(matches!(refused, Err(StoreError::InvalidReference { field: "triggerId" })), "{refused:?}");
        let listed: Vec<Uuid> = store.runs(routine_id, None, 10).await.expect("runs").into_iter().map(|r| r.id).collect();
        assert_eq!(listed, [other.run.id, first.run.id], "newest first");
        assert_eq!(store.run(first.run.id).await.expect("run").payload, json!({ "n": 1 }));
        // Numbers at the edges of what JSON carries come back as they went in.
        let edges = json!({ "max": f64::MAX, "min": f64::MIN, "tiny": 5e-324, "u": u64::MAX, "i": i64::MIN, "f": 0.1 });
        let stored = store.accept_manual_run(routine_id, manual(edges.clone(), None), board()).await.expect("accept");
        assert_eq!(store.run(stored.run.id).await.expect("run").payload, edges);
        // One dispatch job per accepted run.
        let jobs = store.claim_jobs("w", Duration::from_secs(30), 100).await.expect("claim");
        assert_eq!(jobs.len(), 3);

        store.update_routine(routine_id, RoutineChanges { status: Some(RoutineStatus::Archived), ..Default::default() }, board()).await.expect("archive");
        let refused = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await;
        assert!(matches!(refused, Err(StoreError::Refused(ref r)) if r.code() == "routine_archived"), "{refused:?}");
        // A key already used still answers with its run.
        assert!(store.accept_manual_run(routine_id, manual(json!({ "n": 1 }), Some("k-1")), board()).await.expect("replay").replayed);
        let _ = clock;
    }

    async fn webhook_runs_need_an_enabled_trigger_of_an_active_routine(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let hook = NewTrigger {
            kind: NewTriggerKind::Webhook { signing_mode: SigningMode::Bearer, replay_window: ReplayWindow::parse(300).expect("window"), sender_secret: None },
            label: Label::default(),
            enabled: true,
        };
        let (trigger, secret) = store.create_trigger(routine_id, hook, board()).await.expect("trigger");
        let TriggerConfig::Webhook { public_id, .. } = &trigger.config else { panic!("webhook") };
        let found = store.webhook_trigger(public_id).await.expect("lookup").expect("found");
        assert_eq!(found.secret, secret.expect("secret").webhook_secret);
        assert!(store.webhook_trigger("no-such-hook").await.expect("lookup").is_none());
        let new = || NewRun { source: RunSource::Webhook, trigger_id: Some(trigger.id), ..manual(json!({ "x": 1 }), None) };
        let accepted = store.accept_webhook_run(&found, new()).await.expect("accept");
        assert_eq!(accepted.run.trigger.as_ref().map(|t| t.id), Some(trigger.id));
        store.update_trigger(trigger.id, TriggerChanges { enabled: Some(false), ..Default::default() }, board()).await.expect("disable");
        let refused = store.accept_webhook_run(&found, new()).await;
        assert!(matches!(refused, Err(StoreError::Refused(ref r)) if r.code() == "not_active"), "{refused:?}");
        assert_eq!(store.runs(routine_id, None, 10).await.expect("runs").len(), 1);
        let _ = clock;
    }

    async fn webhook_acceptances_hold_together_and_refuse_an_outdated_read(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let hook = NewTrigger {
            kind: NewTriggerKind::Webhook { signing_mode: SigningMode::HmacSha256, replay_window: ReplayWindow::parse(60).expect("window"), sender_secret: None },
            label: Label::default(),
            enabled: true,
        };
        let (trigger, _) = store.create_trigger(routine_id, hook, board()).await.expect("trigger");
        let TriggerConfig::Webhook { public_id, .. } = &trigger.config else { panic!("webhook") };
        let read = store.webhook_trigger(public_id).await.expect("lookup").expect("found");
        let new = |n: usize, key: Option<&str>| NewRun { source: RunSource::Webhook, trigger_id: Some(trigger.id), ..manual(key.map_or(json!({ "n": n }), |key| json!({ "key": key })), key) };
        // Forty calls at once (on Postgres, written together): thirty without a key, and
        // five each for two keys, which must give one run per key.
        let keys = ["k-a", "k-b"];
        let calls = (0..40).map(|n| store.accept_webhook_run(&read, new(n, (n >= 30).then(|| keys[n % 2]))));
        let results: Vec<_> = futures_util::future::join_all(calls).await.into_iter().map(|r| r.expect("accepted")).collect();
        for key in keys {
            let same: Vec<_> = results.iter().filter(|a| a.run.idempotency_key.as_deref() == Some(key)).collect();
            assert_eq!(same.len(), 5);
            assert_eq!(same.iter().filter(|a| !a.replayed).count(), 1, "{key}: one run created");
            assert!(same.iter().all(|a| a.run.id == same[0].run.id), "{key}: every call answers with that run");
        }
        assert!(results[..30].iter().all(|a| !a.replayed && a.run.trigger_id == Some(trigger.id)));
        assert_eq!(store.runs(routine_id, None, 100).await.expect("runs").len(), 32);
        let jobs = store.claim_jobs("w", Duration::from_secs(30), 100).await.expect("claim");
        assert_eq!(jobs.len(), 32, "one dispatch job per run");

        // A read of the trigger made before a rotation, or before its window changed, no
        // longer accepts: the caller must read it again.
        store.rotate_trigger_secret(trigger.id, Rotation::default(), board()).await.expect("rotate");
        let refused = store.accept_webhook_run(&read, new(0, None)).await;
        assert!(matches!(refused, Err(StoreError::Refused(ref r)) if r.code() == "trigger_changed"), "{refused:?}");
        let fresh = store.webhook_trigger(public_id).await.expect("lookup").expect("found");
        assert_ne!(fresh.secret, read.secret);
        store.accept_webhook_run(&fresh, new(0, None)).await.expect("accepted with a fresh read");
        let wider = TriggerChanges { replay_window: Some(ReplayWindow::parse(120).expect("window")), ..Default::default() };
        store.update_trigger(trigger.id, wider, board()).await.expect("update");
        let refused = store.accept_webhook_run(&fresh, new(0, None)).await;
        assert!(matches!(refused, Err(StoreError::Refused(ref r)) if r.code() == "trigger_changed"), "{refused:?}");
        // A deleted trigger is not found.
        store.delete_trigger(trigger.id, board()).await.expect("delete");
        let refused = store.accept_webhook_run(&fresh, new(0, None)).await;
        assert!(matches!(refused, Err(StoreError::NotFound)), "{refused:?}");
        assert_eq!(store.runs(routine_id, None, 100).await.expect("runs").len(), 33);
        let _ = clock;
    }

    async fn the_queue_leases_fences_backs_off_and_reaps(store, clock) {
        let spec = || JobSpec { task: example(), run_at: clock.now(), max_attempts: 2, trace_context: None };
        let id = store.enqueue_job(spec()).await.expect("enqueue");
        let depth = store.queue_depth().await.expect("depth");
        assert_eq!((depth.len(), depth[0].count, depth[0].state.as_str()), (1, 1, "queued"));
        let job = store.claim_jobs("a", Duration::from_secs(30), 10).await.expect("claim").pop().expect("due");
        assert_eq!((job.id, job.attempts, job.lease_owner.as_str()), (id, 1, "a"));
        assert!(store.claim_jobs("b", Duration::from_secs(30), 10).await.expect("claim").is_empty(), "leased");
        let RetryOutcome::Requeued(at) = store.retry_job(&job, &JobError::Retry("boom".to_owned())).await.expect("retry") else { panic!("requeued") };
        assert!(at > clock.now());
        assert!(store.claim_jobs("b", Duration::from_secs(30), 10).await.expect("claim").is_empty(), "backing off");
        clock.set(at);
        let second = store.claim_jobs("b", Duration::from_secs(30), 10).await.expect("claim").pop().expect("due again");
        assert_eq!(second.attempts, 2);
        // The first holder lost its lease: it can neither retry nor complete.
        assert_eq!(store.retry_job(&job, &JobError::Retry("late".to_owned())).await.expect("retry"), RetryOutcome::LeaseLost);
        assert!(store.complete_jobs(std::slice::from_ref(&job)).await.expect("complete").is_empty());
        // The lease expires on its last attempt: reaping makes it dead.
        clock.advance(TimeDelta::seconds(31));
        let report = store.reap_jobs().await.expect("reap");
        assert_eq!((report.requeued, report.dead.len()), (0, 1));
        assert!(store.complete_jobs(std::slice::from_ref(&second)).await.expect("complete").is_empty());

        let third = store.enqueue_job(spec()).await.expect("enqueue");
        let job = store.claim_jobs("c", Duration::from_secs(30), 10).await.expect("claim").pop().expect("due");
        clock.advance(TimeDelta::seconds(31));
        assert_eq!(store.reap_jobs().await.expect("reap").requeued, 1, "an expired lease with attempts left is requeued");
        let again = store.claim_jobs("d", Duration::from_secs(30), 10).await.expect("claim").pop().expect("requeued");
        assert_eq!((again.id, again.attempts), (third, 2));
        assert_eq!(store.complete_jobs(std::slice::from_ref(&again)).await.expect("complete"), [third]);
        assert!(store.complete_jobs(std::slice::from_ref(&job)).await.expect("complete").is_empty());
        assert!(store.queue_depth().await.expect("depth").is_empty());
    }

    async fn a_snoozed_job_waits_without_using_an_attempt(store, clock) {
        let spec = JobSpec { task: example(), run_at: clock.now(), max_attempts: 1, trace_context: None };
        let id = store.enqueue_job(spec).await.expect("enqueue");
        let job = store.claim_jobs("a", Duration::from_secs(30), 10).await.expect("claim").pop().expect("due");
        assert_eq!(job.attempts, 1);
        let snoozed = store.retry_job(&job, &JobError::Snooze(Duration::from_secs(90))).await.expect("snooze");
        assert_eq!(snoozed, RetryOutcome::Requeued(clock.now() + TimeDelta::seconds(90)), "its only attempt is given back");
        clock.advance(TimeDelta::seconds(89));
        assert!(store.claim_jobs("a", Duration::from_secs(30), 10).await.expect("claim").is_empty(), "asleep");
        clock.advance(TimeDelta::seconds(1));
        let again = store.claim_jobs("b", Duration::from_secs(30), 10).await.expect("claim").pop().expect("due again");
        assert_eq!((again.id, again.attempts), (id, 1));
        assert_eq!(store.retry_job(&again, &JobError::Retry("boom".to_owned())).await.expect("retry"), RetryOutcome::Dead);
    }

    async fn taking_dispatches_first_attempts_at_once_and_leases_the_rest(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::CoalesceIfActive);
        let run_of = |job: &nexus_shared::queue::Job| job.task.run_id().expect("runId");
        let spec = |run_at| JobSpec { task: example(), run_at, max_attempts: 3, trace_context: None };
        let first = store.accept_manual_run(routine_id, manual(json!({ "n": 1 }), None), board()).await.expect("accept").run.id;
        clock.advance(TimeDelta::seconds(1));
        let other = store.enqueue_job(spec(clock.now())).await.expect("enqueue");
        let later = store.enqueue_job(spec(clock.now() + TimeDelta::minutes(1))).await.expect("enqueue");
        clock.advance(TimeDelta::seconds(1));
        let second = store.accept_manual_run(routine_id, manual(json!({ "n": 2 }), None), board()).await.expect("accept").run.id;

        // The two oldest due jobs: the first run is dispatched in the taking transaction, the
        // other job is claimed with a lease for the caller.
        let taken = store.claim_and_dispatch("w", Duration::from_secs(30), 2).await.expect("take");
        assert_eq!(taken.dispatched.iter().map(run_of).collect::<Vec<_>>(), [first]);
        assert_eq!(taken.outcomes, [(first, RunStatus::IssueCreated)]);
        assert_eq!(store.run(first).await.expect("run").status, RunStatus::IssueCreated);
        let claimed: Vec<_> = taken.claimed.iter().map(|j| (j.id, j.attempts, j.lease_owner.as_str())).collect();
        assert_eq!(claimed, [(other, 1, "w")]);
        let leased = taken.claimed.clone();
        let depth = store.queue_depth().await.expect("depth");
        let running: Vec<_> = depth.iter().map(|d| (d.kind.as_str(), d.state.as_str(), d.count)).collect();
        assert!(running.contains(&("example", "running", 1)) && running.contains(&(DISPATCH_RUN, "queued", 1)), "{running:?}");

        // The next take sees the first run's issue; the leased and the future jobs stay put.
        let taken = store.claim_and_dispatch("v", Duration::from_secs(30), 10).await.expect("take");
        assert_eq!(taken.outcomes, [(second, RunStatus::Coalesced)]);
        assert_eq!(taken.dispatched[0].attempts, 1);
        assert!(taken.claimed.is_empty());
        assert!(store.claim_and_dispatch("v", Duration::from_secs(30), 10).await.expect("take").is_empty());
        assert!(store.claim_jobs("v", Duration::from_secs(30), 10).await.expect("claim").is_empty());
        // A job taken with a lease is held like a claimed one.
        assert_eq!(store.complete_jobs(&leased).await.expect("complete"), [other]);

        // A retried dispatch job goes through a lease: its run waits for the caller.
        let third = store.accept_manual_run(routine_id, manual(json!({ "n": 3 }), None), board()).await.expect("accept").run.id;
        let job = store.claim_jobs("a", Duration::from_secs(30), 10).await.expect("claim").pop().expect("due");
        let RetryOutcome::Requeued(at) = store.retry_job(&job, &JobError::Retry("boom".to_owned())).await.expect("retry") else { panic!("requeued") };
        clock.set(at);
        let taken = store.claim_and_dispatch("b", Duration::from_secs(30), 10).await.expect("take");
        assert!(taken.dispatched.is_empty() && taken.outcomes.is_empty());
        assert_eq!(taken.claimed.iter().map(|j| (run_of(j), j.attempts)).collect::<Vec<_>>(), [(third, 2)]);
        assert_eq!(store.run(third).await.expect("run").status, RunStatus::Received);
        assert_eq!(store.dispatch_jobs(&taken.claimed).await.expect("dispatch").outcomes, [(third, RunStatus::Coalesced)]);
        // Only the job not yet due is left.
        clock.advance(TimeDelta::minutes(2));
        let taken = store.claim_and_dispatch("b", Duration::from_secs(30), 10).await.expect("take");
        assert_eq!(taken.claimed.iter().map(|j| j.id).collect::<Vec<_>>(), [later]);
    }

    async fn concurrency_policies_decide_the_same_on_every_backend(store, clock) {
        for (policy, expected) in [
            (ConcurrencyPolicy::CoalesceIfActive, [RunStatus::IssueCreated, RunStatus::Coalesced, RunStatus::Coalesced]),
            (ConcurrencyPolicy::SkipIfActive, [RunStatus::IssueCreated, RunStatus::Skipped, RunStatus::Skipped]),
            (ConcurrencyPolicy::AlwaysEnqueue, [RunStatus::IssueCreated, RunStatus::IssueCreated, RunStatus::IssueCreated]),
        ] {
            let (company, agent, routine_id) = seed!(store, policy);
            let mut ids = Vec::new();
            for n in 0..3 {
                ids.push(store.accept_manual_run(routine_id, manual(json!({ "n": n }), None), board()).await.expect("accept").run.id);
            }
            // One batch: later runs see the issue the first one opened.
            let jobs = store.claim_jobs("w", Duration::from_secs(30), 100).await.expect("claim");
            let dispatched = store.dispatch_jobs(&jobs).await.expect("dispatch");
            assert_eq!(dispatched.held.len(), 3);
            let statuses: Vec<RunStatus> = dispatched.outcomes.iter().map(|(_, s)| *s).collect();
            assert_eq!(statuses, expected, "{policy:?}");
            // Dispatching again changes nothing: the jobs are done and the runs no longer received.
            assert!(store.dispatch_jobs(&jobs).await.expect("again").held.is_empty());
            let issues = store.issues(company, IssueFilter { limit: 10, ..Default::default() }).await.expect("issues");
            let runs: Vec<_> = ids.iter().map(|id| id.to_owned()).collect();
            let first = store.run(runs[0]).await.expect("run");
            assert_eq!(first.linked_issue_id, Some(issues.last().expect("an issue").id));
            let heartbeats = store.agent_heartbeat_runs(agent, None, 10).await.expect("heartbeats");
            let expected_heartbeats = if policy == ConcurrencyPolicy::AlwaysEnqueue { 3 } else { 1 };
            assert_eq!((issues.len(), heartbeats.len()), (expected_heartbeats, expected_heartbeats), "{policy:?}");
            // Closing the issue completes the run that opened it.
            store.set_issue_status(first.linked_issue_id.expect("linked"), IssueStatus::Done, board()).await.expect("done");
            assert_eq!(store.run(runs[0]).await.expect("run").status, RunStatus::Completed);
        }
        // A terminated assignee fails the run.
        let (_, agent, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("accept");
        store.update_agent(agent, AgentChanges { status: Some(AgentStatus::Terminated), ..Default::default() }, board()).await.expect("terminate");
        assert_eq!(drain!(store, "w"), [RunStatus::Failed]);
        let _ = clock;
    }

    async fn accepted_signatures_are_remembered_with_their_run_and_only_then(store, clock) {
    let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
    let hook = NewTrigger {
        kind: NewTriggerKind::Webhook { signing_mode: SigningMode::HmacSha256, replay_window: ReplayWindow::parse(60).expect("window"), sender_secret: None },
        label: Label::default(),
        enabled: true,
    };
    let (trigger, _) = store.create_trigger(routine_id, hook, board()).await.expect("trigger");
    let TriggerConfig::Webhook { public_id, .. } = &trigger.config else { panic!("webhook") };
    let read = store.webhook_trigger(public_id).await.expect("lookup").expect("found");
    let until = clock.now().timestamp() + 62;
    let call = |mac: u8, key: Option<&str>, n: i64| NewRun {
        source: RunSource::Webhook,
        trigger_id: Some(trigger.id),
        signature: Some(CallSignature { mac: vec![mac; 32], remember_until: until }),
        ..manual(json!({ "n": n }), key)
    };
    let replayed = |result: Result<_, StoreError>| matches!(result, Err(StoreError::Refused(ref r)) if r.code() == "replayed");
    // Accepted once, then a replay — also when sent many times at once (on Postgres,
    // written together in one statement): exactly one run.
    let first = store.accept_webhook_run(&read, call(1, None, 0)).await.expect("accepted");
    assert!(replayed(store.accept_webhook_run(&read, call(1, None, 0)).await));
    let results = futures_util::future::join_all((0..8).map(|_| store.accept_webhook_run(&read, call(2, None, 0)))).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "one of eight identical calls accepted");
    assert!(results.into_iter().filter(|r| r.is_err()).all(replayed));
    assert!(store.signature_seen(trigger.id, vec![1; 32]).await.expect("db"));
    // A refused call leaves no trace: refused while disabled, accepted once re-enabled.
    store.update_trigger(trigger.id, TriggerChanges { enabled: Some(false), ..Default::default() }, board()).await.expect("disable");
    let refused = store.accept_webhook_run(&read, call(3, None, 0)).await;
    assert!(matches!(refused, Err(StoreError::Refused(ref r)) if r.code() == "not_active"), "{refused:?}");
    assert!(!store.signature_seen(trigger.id, vec![3; 32]).await.expect("db"));
    store.update_trigger(trigger.id, TriggerChanges { enabled: Some(true), ..Default::default() }, board()).await.expect("enable");
    store.accept_webhook_run(&read, call(3, None, 0)).await.expect("accepted after all");
    // An idempotent replay is an acceptance (its signature is remembered); a reused key
    // with another payload is refused (its signature is not).
    let keyed = store.accept_webhook_run(&read, call(4, Some("k"), 1)).await.expect("accepted");
    let again = store.accept_webhook_run(&read, call(5, Some("k"), 1)).await.expect("idempotent replay");
    assert!(again.replayed && again.run.id == keyed.run.id);
    assert!(replayed(store.accept_webhook_run(&read, call(5, Some("k"), 1)).await));
    let reused = store.accept_webhook_run(&read, call(6, Some("k"), 2)).await;
    assert!(matches!(reused, Err(StoreError::Refused(ref r)) if r.code() == "idempotency_key_reused"), "{reused:?}");
    assert!(!store.signature_seen(trigger.id, vec![6; 32]).await.expect("db"));
    assert_eq!(store.runs(routine_id, None, 100).await.expect("runs").len(), 4);
    // Widening the window extends the memory by as much; purging forgets only what has
    // expired.
    let wider = TriggerChanges { replay_window: Some(ReplayWindow::parse(120).expect("window")), ..Default::default() };
    store.update_trigger(trigger.id, wider, board()).await.expect("widen");
    clock.advance(TimeDelta::seconds(63));
    assert_eq!(store.purge_signatures().await.expect("db"), 0, "kept 60 s longer");
    clock.advance(TimeDelta::seconds(60));
    assert_eq!(store.purge_signatures().await.expect("db"), 5);
    assert!(!store.signature_seen(trigger.id, vec![1; 32]).await.expect("db"));
    // Deleting the trigger forgets its signatures.
    let fresh = store.webhook_trigger(public_id).await.expect("lookup").expect("found");
    let until = clock.now().timestamp() + 122;
    store.accept_webhook_run(&fresh, NewRun { signature: Some(CallSignature { mac: vec![7; 32], remember_until: until }), ..call(7, None, 0) }).await.expect("accepted");
    store.delete_trigger(trigger.id, board()).await.expect("delete");
    assert!(!store.signature_seen(trigger.id, vec![7; 32]).await.expect("db"));
    let _ = first;
}

async fn heartbeat_runs_are_claimed_finished_and_timed_out(store, clock) {
        let company = store.create_company(title("Acme"), board()).await.expect("company").id;
        let agent = store.create_agent(company, title("Ada"), WakeupSpec::Poll, board()).await.expect("agent").agent.id;
        let issue = NewIssue {
            title: title("Rotate the logs"),
            description: Description::default(),
            project_id: None,
            goal_id: None,
            parent_issue_id: Some(Uuid::now_v7()),
            assignee_agent_id: Some(agent),
            priority: Priority::Low,
        };
        let refused = store.create_issue(company, issue, board()).await;
        assert!(matches!(refused, Err(StoreError::InvalidReference { field: "parentIssueId" })), "{refused:?}");
        let issue = NewIssue { title: title("Rotate the logs"), description: Description::default(), project_id: None, goal_id: None, parent_issue_id: None, assignee_agent_id: Some(agent), priority: Priority::Low };
        let issue = store.create_issue(company, issue, board()).await.expect("issue");
        let queued = store.agent_heartbeat_runs(agent, Some(HeartbeatStatus::Queued), 10).await.expect("queued");
        assert_eq!(queued.len(), 1);
        let me = Actor::Agent { agent_id: agent, company_id: company };
        let running = store.claim_heartbeat_run(queued[0].id, me).await.expect("claim");
        assert_eq!(running.status, HeartbeatStatus::Running);
        assert!(matches!(store.claim_heartbeat_run(queued[0].id, me).await, Err(StoreError::Refused(ref r)) if r.code() == "not_queued"));
        let done = store.finish_heartbeat_run(queued[0].id, FinishStatus::Succeeded, Some(Summary::parse("ok".to_owned()).expect("summary")), me).await.expect("finish");
        assert_eq!((done.status, done.summary.as_deref()), (HeartbeatStatus::Succeeded, Some("ok")));
        store.set_issue_status(issue.id, IssueStatus::InProgress, me).await.expect("status");
        let events: Vec<String> = store.issue_with_events(issue.id).await.expect("issue").events.iter().map(|e| e.event_type.as_str().to_owned()).collect();
        assert_eq!(events, ["created", "status_changed"]);
        // A second assignment waits too long and times out.
        let second = NewIssue { title: title("Again"), description: Description::default(), project_id: None, goal_id: None, parent_issue_id: None, assignee_agent_id: Some(agent), priority: Priority::Low };
        store.create_issue(company, second, board()).await.expect("issue");
        clock.advance(TimeDelta::hours(2));
        assert_eq!(store.time_out_heartbeats(Duration::from_secs(3600)).await.expect("time out"), 1);
        assert_eq!(store.agent_heartbeat_runs(agent, Some(HeartbeatStatus::TimedOut), 10).await.expect("list").len(), 1);
    }

    async fn schedules_fire_once_per_fire_and_catch_up_by_policy(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        store.create_trigger(routine_id, schedule("* * * * *", "UTC"), board()).await.expect("trigger");
        let grace = TimeDelta::seconds(60);
        assert_eq!(store.scheduler_epoch().await.expect("epoch"), 0);
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("time").to_utc();
        assert_eq!(store.next_fire_at().await.expect("next"), Some(at("2026-11-30T10:01:00Z")));
        clock.set(at("2026-11-30T10:01:02Z"));
        let report = store.fire_due(&leader(1), grace, TimeDelta::zero(), 500).await.expect("fire");
        assert_eq!((report.triggers, report.dispatched, report.lateness), (1, 1, vec![TimeDelta::seconds(2)]));
        assert_eq!(store.fire_due(&leader(1), grace, TimeDelta::zero(), 500).await.expect("again").dispatched, 0, "once per fire");
        assert_eq!(store.scheduler_epoch().await.expect("epoch"), 1);
        // A newer leader wrote: the older one is refused.
        store.fire_due(&leader(2), grace, TimeDelta::zero(), 500).await.expect("newer");
        let refused = store.fire_due(&leader(1), grace, TimeDelta::zero(), 500).await;
        assert!(matches!(refused, Err(StoreError::Refused(ref r)) if r.code() == "deposed"), "{refused:?}");

        // Ten minutes of outage: skip_missed records them in one skipped run; the current
        // minute is on time.
        clock.set(at("2026-11-30T10:11:30Z"));
        let report = store.fire_due(&leader(2), grace, TimeDelta::zero(), 500).await.expect("after the outage");
        assert_eq!((report.dispatched, report.skipped_runs, report.missed_fires), (1, 1, 9));
        let runs = store.runs(routine_id, None, 50).await.expect("runs");
        let skipped: Vec<_> = runs.iter().filter(|r| r.status == RunStatus::Skipped).collect();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].missed, Some(json!({ "count": 9, "from": "2026-11-30T10:02:00Z", "to": "2026-11-30T10:10:00Z" })));
        assert_eq!(skipped[0].reason.as_deref(), Some("missed_schedule"));

        // enqueue_missed_with_cap: the most recent `cap` fires run, the older ones are recorded.
        store.update_routine(routine_id, RoutineChanges {
            catch_up_policy: Some(CatchUpPolicy::EnqueueMissedWithCap),
            catch_up_cap: Some(CatchUpCap::parse(3).expect("cap")),
            ..Default::default()
        }, board()).await.expect("policy");
        clock.set(at("2026-11-30T10:20:10Z"));
        let report = store.fire_due(&leader(2), grace, TimeDelta::zero(), 500).await.expect("catch up");
        assert_eq!((report.dispatched, report.skipped_runs), (4, 1), "3 caught up + the current minute");
        let catch_up = store.runs(routine_id, None, 50).await.expect("runs").into_iter().filter(|r| r.catch_up).count();
        assert_eq!(catch_up, 3);
        assert_eq!(drain!(store, "w").len(), 1 + 1 + 4, "one dispatch job per dispatched fire");
    }

    async fn a_fire_prepared_ahead_waits_for_its_time_and_a_change_withdraws_it(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let trigger = store.create_trigger(routine_id, schedule("* * * * *", "UTC"), board()).await.expect("trigger").0.id;
        let (grace, ahead, lease) = (TimeDelta::seconds(60), TimeDelta::seconds(5), Duration::from_secs(30));
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(&format!("2026-11-30T{s}Z")).expect("time").to_utc();
        let of = |runs: &[nexus_shared::model::Run], s: &str| runs.iter().filter(|r| r.scheduled_for == Some(at(s))).map(|r| (r.id, r.status)).collect::<Vec<_>>();

        // Three seconds before 10:01 its fire is prepared: a received run triggered at its
        // nominal time, and a dispatch job due then. Nothing of it shows before then: no
        // run, and the trigger's next fire is still 10:01, its last fire none.
        clock.set(at("10:00:57"));
        let report = store.fire_due(&leader(1), grace, ahead, 500).await.expect("prepare");
        assert_eq!((report.dispatched, report.prepared, report.lateness.clone()), (1, 1, vec![TimeDelta::zero()]));
        assert!(store.runs(routine_id, None, 50).await.expect("runs").is_empty(), "not listed before its time");
        let before = store.trigger(trigger).await.expect("trigger").trigger;
        assert_eq!((next_run_at(&before.config), before.last_fired_at), (Some(at("10:01:00")), None));
        assert_eq!(store.fire_due(&leader(1), grace, ahead, 500).await.expect("again").dispatched, 0, "prepared once");
        assert!(store.claim_and_dispatch("w", lease, 100).await.expect("take").is_empty(), "not due before its time");
        assert_eq!(store.next_job_at().await.expect("next"), Some(at("10:01:00")));
        clock.set(at("10:01:00"));
        let runs = store.runs(routine_id, None, 50).await.expect("runs");
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].status, runs[0].scheduled_for, runs[0].triggered_at), (RunStatus::Received, Some(at("10:01:00")), at("10:01:00")));
        let prepared = runs[0].id;
        let fired = store.trigger(trigger).await.expect("trigger").trigger;
        assert_eq!((next_run_at(&fired.config), fired.last_fired_at), (Some(at("10:02:00")), Some(at("10:01:00"))));
        assert_eq!(store.next_job_at().await.expect("next"), None, "due now");
        let taken = store.claim_and_dispatch("w", lease, 100).await.expect("take");
        assert_eq!(taken.outcomes, [(prepared, RunStatus::IssueCreated)]);

        // A new label leaves the next prepared fire alone; a new schedule withdraws it, and
        // its job then finds nothing to dispatch.
        clock.set(at("10:01:57"));
        assert_eq!(store.fire_due(&leader(1), grace, ahead, 500).await.expect("prepare").prepared, 1);
        let relabel = TriggerChanges { label: Some(Label::parse("minutely".to_owned()).expect("label")), ..Default::default() };
        let relabelled = store.update_trigger(trigger, relabel, board()).await.expect("label");
        assert_eq!((next_run_at(&relabelled.config), relabelled.last_fired_at), (Some(at("10:02:00")), Some(at("10:01:00"))));
        let every_five = TriggerChanges { cron: Some(CronExpression::parse("*/5 * * * *").expect("cron")), ..Default::default() };
        let changed = store.update_trigger(trigger, every_five, board()).await.expect("cron");
        assert_eq!(next_run_at(&changed.config), Some(at("10:05:00")));
        assert_eq!(changed.last_fired_at, Some(at("10:01:00")), "the withdrawn fire left no trace");
        clock.set(at("10:02:00"));
        assert!(of(&store.runs(routine_id, None, 50).await.expect("runs"), "10:02:00").is_empty(), "withdrawn");
        let unchanged = store.trigger(trigger).await.expect("trigger").trigger;
        assert_eq!((next_run_at(&unchanged.config), unchanged.last_fired_at), (Some(at("10:05:00")), Some(at("10:01:00"))));
        let taken = store.claim_and_dispatch("w", lease, 100).await.expect("take");
        assert_eq!((taken.dispatched.len(), taken.outcomes.len()), (1, 0));
        assert_eq!(store.next_job_at().await.expect("next"), None);

        // Pausing withdraws the prepared fire; resuming before its time prepares it again,
        // and it is dispatched once.
        clock.set(at("10:04:56"));
        assert_eq!(store.fire_due(&leader(1), grace, ahead, 500).await.expect("prepare").prepared, 1);
        let status = |s| RoutineChanges { status: Some(s), ..Default::default() };
        store.update_routine(routine_id, status(RoutineStatus::Paused), board()).await.expect("pause");
        assert_eq!(store.fire_due(&leader(1), grace, ahead, 500).await.expect("paused").dispatched, 0);
        clock.set(at("10:04:57"));
        store.update_routine(routine_id, status(RoutineStatus::Active), board()).await.expect("resume");
        assert_eq!(store.fire_due(&leader(1), grace, ahead, 500).await.expect("prepare").prepared, 1);
        clock.set(at("10:05:00"));
        let taken = store.claim_and_dispatch("w", lease, 100).await.expect("take");
        assert_eq!((taken.dispatched.len(), taken.outcomes.len()), (2, 1), "the withdrawn run's job and the new one");
        let runs = store.runs(routine_id, None, 50).await.expect("runs");
        assert_eq!(of(&runs, "10:05:00"), [(taken.outcomes[0].0, RunStatus::IssueCreated)]);

        // Deleting the trigger withdraws its prepared fire.
        clock.set(at("10:09:58"));
        assert_eq!(store.fire_due(&leader(1), grace, ahead, 500).await.expect("prepare").prepared, 1);
        store.delete_trigger(trigger, board()).await.expect("delete");
        clock.set(at("10:10:00"));
        assert!(of(&store.runs(routine_id, None, 50).await.expect("runs"), "10:10:00").is_empty(), "withdrawn");
        assert_eq!(store.runs(routine_id, None, 50).await.expect("runs").len(), 2, "the 10:01 and 10:05 runs");
    }

    async fn a_routines_issues_page_newest_first_whatever_their_state(store, clock) {
        let (company, agent, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        // Another routine's issues and an issue no routine opened share the company.
        let project = store.create_project(company, title("Other"), board()).await.expect("project").id;
        let enqueue = NewRoutine { concurrency_policy: ConcurrencyPolicy::AlwaysEnqueue, ..routine(agent, project) };
        let other = store.create_routine(company, enqueue, board()).await.expect("routine").id;
        let lone = || NewIssue { title: title("By hand"), description: Description::default(), project_id: None, goal_id: None, parent_issue_id: None, assignee_agent_id: None, priority: Priority::Low };
        let mut opened = Vec::new();
        for n in 0..7 {
            clock.advance(TimeDelta::seconds(1));
            store.accept_manual_run(routine_id, manual(json!({ "n": n }), None), board()).await.expect("accept");
            if n % 3 == 0 {
                store.accept_manual_run(other, manual(json!({ "n": n }), None), board()).await.expect("accept");
                store.create_issue(company, lone(), board()).await.expect("issue");
            }
            drain!(store, "w");
            let runs = store.runs(routine_id, None, 1).await.expect("runs");
            opened.push(runs[0].linked_issue_id.expect("an issue"));
        }
        // Closed, cancelled, reopened and open issues interleave in the routine's history.
        store.set_issue_status(opened[0], IssueStatus::Done, board()).await.expect("done");
        store.set_issue_status(opened[2], IssueStatus::Cancelled, board()).await.expect("cancelled");
        store.set_issue_status(opened[3], IssueStatus::Done, board()).await.expect("done");
        store.set_issue_status(opened[3], IssueStatus::Todo, board()).await.expect("reopened");
        store.set_issue_status(opened[5], IssueStatus::Done, board()).await.expect("done");
        store.set_issue_status(opened[6], IssueStatus::InProgress, board()).await.expect("in progress");
        let newest_first: Vec<Uuid> = opened.iter().rev().copied().collect();
        let page = |before: Option<Uuid>, status: Option<IssueStatus>, limit: i64| IssueFilter { routine_id: Some(routine_id), status, assignee_agent_id: None, before, limit };
        let ids = |issues: Vec<nexus_shared::model::Issue>| issues.into_iter().map(|i| i.id).collect::<Vec<_>>();

        assert_eq!(ids(store.issues(company, page(None, None, 50)).await.expect("all")), newest_first);
        // Pages of three, each continuing where the last ended.
        let mut paged = Vec::new();
        let mut before = None;
        loop {
            let got = ids(store.issues(company, page(before, None, 3)).await.expect("page"));
            assert!(got.len() <= 3);
            let Some(last) = got.last().copied() else { break };
            paged.extend(got);
            before = Some(last);
        }
        assert_eq!(paged, newest_first);
        // A page that starts between a closed and an open issue.
        assert_eq!(ids(store.issues(company, page(Some(opened[4]), None, 2)).await.expect("page")), [opened[3], opened[2]]);
        // Filters keep the order.
        assert_eq!(ids(store.issues(company, page(None, Some(IssueStatus::Done), 50)).await.expect("done")), [opened[5], opened[0]]);
        assert_eq!(ids(store.issues(company, page(None, Some(IssueStatus::Todo), 50)).await.expect("todo")), [opened[4], opened[3], opened[1]]);
        assert_eq!(ids(store.issues(company, page(Some(opened[4]), Some(IssueStatus::Todo), 1)).await.expect("todo")), [opened[3]]);
        let assigned = IssueFilter { assignee_agent_id: Some(agent), ..page(Some(opened[6]), None, 2) };
        assert_eq!(ids(store.issues(company, assigned).await.expect("assigned")), [opened[5], opened[4]]);
        let nobody = IssueFilter { assignee_agent_id: Some(Uuid::now_v7()), ..page(None, None, 50) };
        assert!(store.issues(company, nobody).await.expect("nobody").is_empty());
        // The other routine's issues are its own; the company's list holds all thirteen.
        assert_eq!(store.issues(company, IssueFilter { routine_id: Some(other), ..page(None, None, 50) }).await.expect("other").len(), 3);
        assert_eq!(store.issues(company, IssueFilter { limit: 50, ..Default::default() }).await.expect("company").len(), 13);
        // Another company sees none of them.
        let (elsewhere, _, _) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        assert!(store.issues(elsewhere, page(None, None, 50)).await.expect("elsewhere").is_empty());
    }
}
