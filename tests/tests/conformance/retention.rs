use nexus_shared::{
    model::{ChannelKind, ChannelName, NotificationEvent},
    store::{Attempt, NewChannel, PurgeReport},
};

use super::*;

/// Purges with a retention of one day until nothing more is found; returns the totals.
macro_rules! purge_all {
    ($store:expr) => {{
        let mut total = PurgeReport::default();
        loop {
            let report = $store.purge_history(1, 2).await.expect("purge");
            total += report;
            if !report.more {
                break total;
            }
        }
    }};
}

fn issue(text: &str, parent_issue_id: Option<Uuid>) -> NewIssue {
    NewIssue {
        title: title(text),
        description: Description::default(),
        project_id: None,
        goal_id: None,
        parent_issue_id,
        assignee_agent_id: None,
        priority: Priority::Low,
    }
}

fn gone<T>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::NotFound))
}

/// Finishes every queued heartbeat run of `agent` as the system would time it out.
macro_rules! settle_heartbeats {
    ($store:expr) => {{
        $store
            .time_out_heartbeats(Duration::from_secs(1))
            .await
            .expect("time out heartbeats");
    }};
}

nexus_tests::conformance! {
    async fn a_closed_issue_goes_with_its_events_heartbeat_runs_and_runs_once_past_the_cutoff(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::CoalesceIfActive);
        // Run 1 opens issue A; run 2 coalesces into it; A is closed at `closed`.
        let first = store.accept_manual_run(routine_id, manual(json!({}), Some("key-1")), board()).await.expect("run").run.id;
        drain!(store, "w");
        let second = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("run").run.id;
        assert_eq!(drain!(store, "w"), [RunStatus::Coalesced]);
        let issue_a = store.run(first).await.expect("run").linked_issue_id.expect("issue");
        assert_eq!(store.run(second).await.expect("run").linked_issue_id, Some(issue_a));
        let heartbeat_a = store.run(first).await.expect("run").heartbeat_run_id.expect("heartbeat");
        clock.advance(TimeDelta::seconds(5));
        settle_heartbeats!(store);
        store.set_issue_status(issue_a, IssueStatus::Done, board()).await.expect("done");
        let closed = clock.now();
        // Run 3 opens issue B, closed too: run 3 is the routine's newest run.
        clock.advance(TimeDelta::seconds(5));
        let third = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("run").run.id;
        drain!(store, "w");
        let issue_b = store.run(third).await.expect("run").linked_issue_id.expect("issue");
        clock.advance(TimeDelta::seconds(5));
        settle_heartbeats!(store);
        store.set_issue_status(issue_b, IssueStatus::Done, board()).await.expect("done");

        // A day after the close to the millisecond, A is not yet older than the cutoff.
        clock.set(closed + TimeDelta::days(1));
        let report = store.purge_history(1, 100).await.expect("purge");
        assert_eq!((report.issues, report.runs, report.heartbeat_runs), (0, 0, 0), "{report:?}");
        assert!(store.issue(issue_a).await.is_ok());

        // A millisecond later A goes with both its runs, its events and its heartbeat run.
        clock.advance(TimeDelta::milliseconds(1));
        let report = purge_all!(store);
        assert_eq!((report.issues, report.runs, report.heartbeat_runs), (1, 2, 1), "{report:?}");
        assert_eq!(report.issue_events, 3, "created, fire_coalesced, status_changed: {report:?}");
        assert!(gone(&store.issue(issue_a).await));
        assert!(gone(&store.run(first).await));
        assert!(gone(&store.run(second).await));
        assert!(gone(&store.heartbeat_run(heartbeat_a).await));
        // A day later B is as old as A was, but stays: its run is the routine's newest, which
        // is never deleted (its `lastRun`).
        clock.advance(TimeDelta::days(1));
        let report = purge_all!(store);
        assert_eq!((report.issues, report.runs), (0, 0), "{report:?}");
        assert!(store.issue(issue_b).await.is_ok());
        let routine = store.routine(routine_id).await.expect("routine");
        assert_eq!(routine.last_run.map(|r| r.id), Some(third));
        let runs = store.runs(routine_id, None, 10).await.expect("runs");
        assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [third]);

        // Once a newer run exists, B goes too.
        let fourth = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("run").run.id;
        let report = purge_all!(store);
        assert_eq!((report.issues, report.runs), (1, 1), "{report:?}");
        assert!(gone(&store.issue(issue_b).await));
        assert_eq!(store.runs(routine_id, None, 10).await.expect("runs").iter().map(|r| r.id).collect::<Vec<_>>(), [fourth]);
    }

    async fn what_is_unfinished_referenced_or_newest_stays(store, clock) {
        let (company, agent, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let start = clock.now();
        // An open issue, from a run that is not the newest.
        let open_run = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("run").run.id;
        drain!(store, "w");
        // A closed issue whose heartbeat run is still queued (nobody woke up).
        let waiting_run = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("run").run.id;
        drain!(store, "w");
        let waiting = store.run(waiting_run).await.expect("run").linked_issue_id.expect("issue");
        store.set_issue_status(waiting, IssueStatus::Cancelled, board()).await.expect("cancel");
        // A closed issue that is another issue's parent, and one that is a routine's parent.
        let parent = store.create_issue(company, issue("Parent", None), board()).await.expect("issue").id;
        store.create_issue(company, issue("Child", Some(parent)), board()).await.expect("child");
        store.set_issue_status(parent, IssueStatus::Done, board()).await.expect("done");
        let routine_parent = store.create_issue(company, issue("Umbrella", None), board()).await.expect("issue").id;
        store.set_issue_status(routine_parent, IssueStatus::Done, board()).await.expect("done");
        store.update_routine(routine_id, RoutineChanges { parent_issue_id: Some(Some(routine_parent)), ..Default::default() }, board()).await.expect("parent");
        // A closed issue of nobody's: it goes.
        let plain = store.create_issue(company, issue("Plain", None), board()).await.expect("issue").id;
        store.set_issue_status(plain, IssueStatus::Done, board()).await.expect("done");
        let newest = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("run").run.id;

        clock.set(start + TimeDelta::days(3));
        let report = purge_all!(store);
        assert_eq!(report.issues, 1, "only the plain issue: {report:?}");
        assert!(gone(&store.issue(plain).await));
        assert!(store.issue(parent).await.is_ok(), "a parent stays");
        assert!(store.issue(routine_parent).await.is_ok(), "a routine's parent stays");
        assert!(store.issue(waiting).await.is_ok(), "a closed issue with a queued heartbeat run stays");
        assert!(store.run(open_run).await.is_ok(), "an open issue's run stays");
        assert!(store.run(newest).await.is_ok(), "a received run stays");
        let _ = agent;

        // Once its heartbeat run is over, the waiting issue goes at the next batch.
        settle_heartbeats!(store);
        let report = purge_all!(store);
        assert_eq!((report.issues, report.runs, report.heartbeat_runs), (1, 1, 1), "{report:?}");
        assert!(gone(&store.run(waiting_run).await));
    }

    async fn runs_without_an_issue_go_by_age_but_never_the_newest(store, clock) {
        let (_, agent, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        store.update_agent(agent, AgentChanges { status: Some(AgentStatus::Terminated), ..Default::default() }, board()).await.expect("terminate");
        let older = store.accept_manual_run(routine_id, manual(json!({}), Some("a")), board()).await.expect("run").run.id;
        assert_eq!(drain!(store, "w"), [RunStatus::Failed]);
        let failed_at = clock.now();
        clock.advance(TimeDelta::seconds(1));
        let newer = store.accept_manual_run(routine_id, manual(json!({}), Some("b")), board()).await.expect("run").run.id;
        assert_eq!(drain!(store, "w"), [RunStatus::Failed]);

        clock.set(failed_at + TimeDelta::days(1));
        assert_eq!(purge_all!(store).runs, 0, "finished exactly at the cutoff: kept");
        clock.advance(TimeDelta::milliseconds(1));
        assert_eq!(purge_all!(store).runs, 1);
        assert!(gone(&store.run(older).await));
        clock.advance(TimeDelta::days(30));
        assert_eq!(purge_all!(store).runs, 0, "the newest run stays");
        assert!(store.run(newer).await.is_ok());
        // Its idempotency key was kept for longer than a day, and is free once the run is gone.
        let again = store.accept_manual_run(routine_id, manual(json!({}), Some("a")), board()).await.expect("run");
        assert!(!again.replayed);
    }

    async fn activity_notifications_and_dead_jobs_go_after_the_cutoff(store, clock) {
        let (company, _, _) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let seeded = store.activity(company, 500).await.expect("activity").len();
        assert!(seeded >= 3, "company, agent, project, routine: {seeded}");
        let start = clock.now();
        let channel = store
            .create_channel(
                company,
                NewChannel {
                    name: ChannelName::parse("Ops".to_owned()).expect("name"),
                    kind: ChannelKind::Webhook,
                    url: "https://alerts.example.com/nexus".to_owned(),
                    events: vec![NotificationEvent::RunFailed],
                    routine_ids: None,
                    enabled: true,
                },
                board(),
            )
            .await
            .expect("channel")
            .channel
            .id;
        let delivered = store.test_channel(channel, board()).await.expect("test");
        store.record_notification_attempt(delivered, Attempt::Delivered { status_code: 204 }).await.expect("attempt");
        let pending = store.test_channel(channel, board()).await.expect("test");
        // A job that dies.
        store.enqueue_job(JobSpec { task: example(), run_at: clock.now(), max_attempts: 2, trace_context: None }).await.expect("enqueue");
        let job = store.claim_jobs("w", Duration::from_secs(30), 1).await.expect("claim").remove(0);
        assert_eq!(store.retry_job(&job, &JobError::Fatal("broken".to_owned())).await.expect("retry"), RetryOutcome::Dead);
        // Later activity stays.
        clock.set(start + TimeDelta::hours(12));
        store.create_project(company, title("Later"), board()).await.expect("project");

        clock.set(start + TimeDelta::days(1));
        let report = purge_all!(store);
        assert_eq!((report.activity, report.notifications, report.jobs), (0, 0, 0), "{report:?}");
        clock.advance(TimeDelta::milliseconds(1));
        let report = purge_all!(store);
        let left = store.activity(company, 500).await.expect("activity");
        assert_eq!(left.len(), 1, "only the later entry: {left:?}");
        assert_eq!(left[0].action, "project.created");
        assert!(report.activity as usize >= seeded, "{report:?}");
        assert_eq!((report.notifications, report.jobs), (1, 1), "{report:?}");
        let deliveries = store.channel_deliveries(channel, 10).await.expect("deliveries");
        assert_eq!(deliveries.iter().map(|d| d.id).collect::<Vec<_>>(), [pending], "a pending notification stays");
    }
}
