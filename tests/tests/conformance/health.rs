use nexus_shared::{
    model::{
        ChannelKind, ChannelName, DeliveryStatus, HeartbeatStatus, NotificationEvent,
        PauseAfterFailures, PausedReason, RunTimeout,
    },
    store::{NewChannel, Pause, RoutineSelector},
};

use super::*;

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(&format!("2026-11-30T{s}Z"))
        .expect("time")
        .to_utc()
}

fn channel(events: &[NotificationEvent], routine_ids: Option<Vec<Uuid>>) -> NewChannel {
    NewChannel {
        name: ChannelName::parse("On call".to_owned()).expect("name"),
        kind: ChannelKind::Webhook,
        url: "https://alerts.example.com/nexus".to_owned(),
        events: events.to_vec(),
        routine_ids,
        enabled: true,
    }
}

/// Accepts a manual run and dispatches it; returns the run and the issue it opened.
macro_rules! run_to_issue {
    ($store:expr, $routine:expr) => {{
        let run = $store
            .accept_manual_run($routine, manual(json!({}), None), board())
            .await
            .expect("run")
            .run;
        let taken = $store
            .claim_and_dispatch("w", Duration::from_secs(30), 100)
            .await
            .expect("dispatch");
        assert_eq!(taken.outcomes, [(run.id, RunStatus::IssueCreated)]);
        let issue = $store
            .run(run.id)
            .await
            .expect("run")
            .linked_issue_id
            .expect("issue");
        (run.id, issue)
    }};
}

/// Fans out the notices written so far, as a worker does: claims the due jobs and fans out the
/// `fan_out_notices` ones (the others stay leased, as a busy worker would hold them).
macro_rules! tell {
    ($store:expr) => {{
        let jobs = $store
            .claim_jobs("teller", Duration::from_secs(30), 500)
            .await
            .expect("claim");
        let notices: Vec<_> = jobs
            .into_iter()
            .filter(|j| matches!(j.task, Task::FanOutNotices { .. }))
            .collect();
        let done = $store.fan_out_notices(&notices).await.expect("fan out");
        assert_eq!(done.len(), notices.len());
    }};
}

/// The events of a channel's notifications, oldest first.
macro_rules! events_of {
    ($store:expr, $channel:expr) => {{
        let mut deliveries = $store
            .channel_deliveries($channel, 200)
            .await
            .expect("deliveries");
        deliveries.reverse();
        deliveries.into_iter().map(|d| d.event).collect::<Vec<_>>()
    }};
}

fn limit(failures: i64) -> RoutineChanges {
    RoutineChanges {
        pause_after_failures: Some(Some(PauseAfterFailures::parse(failures).expect("limit"))),
        ..RoutineChanges::default()
    }
}

nexus_tests::conformance! {
    async fn failures_in_a_row_pause_the_routine_and_each_change_is_told_once(store, clock) {
        let (company, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        store.update_routine(routine_id, limit(3), board()).await.expect("limit");
        let all = [
            NotificationEvent::RunFailed,
            NotificationEvent::RoutinePausedOnFailures,
            NotificationEvent::RoutineRecovered,
        ];
        let channel = store.create_channel(company, channel(&all, None), board()).await.expect("channel");
        assert!(channel.signing_secret.is_some_and(|s| s.starts_with("whsec_")));
        let channel = channel.channel.id;
        let failed_only = store
            .create_channel(company, channel_with_one(NotificationEvent::RunFailed), board())
            .await
            .expect("second channel")
            .channel
            .id;

        // Fail, complete, fail, fail: the completion ends the first streak.
        let mut expected = Vec::new();
        for (i, close) in [IssueStatus::Cancelled, IssueStatus::Done, IssueStatus::Cancelled, IssueStatus::Cancelled]
            .into_iter()
            .enumerate()
        {
            clock.advance(TimeDelta::seconds(10));
            let (_, issue) = run_to_issue!(store, routine_id);
            store.set_issue_status(issue, close, board()).await.expect("close");
            tell!(store);
            let routine = store.routine(routine_id).await.expect("routine");
            let failures = [1, 0, 1, 2][i];
            assert_eq!(routine.consecutive_failures, failures, "after change {i}");
            assert_eq!(routine.status, RoutineStatus::Active);
            expected.push(if close == IssueStatus::Done {
                NotificationEvent::RoutineRecovered
            } else {
                NotificationEvent::RunFailed
            });
            // Closing it again changes nothing and tells nobody.
            store.set_issue_status(issue, close, board()).await.expect("again");
            tell!(store);
        }
        assert_eq!(events_of!(store, channel), expected);

        // The third failure in a row pauses it, by the system, and says so once.
        clock.advance(TimeDelta::seconds(10));
        let (run, issue) = run_to_issue!(store, routine_id);
        store.set_issue_status(issue, IssueStatus::Cancelled, board()).await.expect("close");
        tell!(store);
        let routine = store.routine(routine_id).await.expect("routine");
        assert_eq!(routine.status, RoutineStatus::Paused);
        assert_eq!(routine.paused_reason, Some(PausedReason::ConsecutiveFailures));
        assert_eq!(routine.paused_at, Some(clock.now()));
        assert_eq!(routine.consecutive_failures, 3);
        assert_eq!(routine.next_run_at, None);
        let last = routine.last_run.expect("last run");
        assert_eq!((last.id, last.status, last.reason.as_deref()), (run, RunStatus::Failed, Some("issue_cancelled")));
        expected.extend([NotificationEvent::RunFailed, NotificationEvent::RoutinePausedOnFailures]);
        assert_eq!(events_of!(store, channel), expected);
        assert_eq!(
            events_of!(store, failed_only),
            vec![NotificationEvent::RunFailed; 4],
            "a channel gets only the events it subscribes to"
        );
        let entries = store.activity(company, 100).await.expect("activity");
        let paused = entries
            .iter()
            .find(|e| e.action == "routine.updated" && e.details["pausedReason"]["to"] == "consecutive_failures")
            .expect("the pause is in the log");
        assert_eq!(paused.actor_type, nexus_shared::model::ActorType::System);

        // Resumed by hand, it clears the pause; the next completion recovers it.
        let resume = RoutineChanges { status: Some(RoutineStatus::Active), ..RoutineChanges::default() };
        let routine = store.update_routine(routine_id, resume, board()).await.expect("resume");
        assert_eq!((routine.paused_reason, routine.paused_at), (None, None));
        assert_eq!(routine.consecutive_failures, 3, "resuming forgets no failure");
        clock.advance(TimeDelta::seconds(10));
        let (_, issue) = run_to_issue!(store, routine_id);
        store.set_issue_status(issue, IssueStatus::Done, board()).await.expect("done");
        tell!(store);
        assert_eq!(store.routine(routine_id).await.expect("routine").consecutive_failures, 0);
        expected.push(NotificationEvent::RoutineRecovered);
        assert_eq!(events_of!(store, channel), expected);

        // Every notification has its delivery job, each once (the dispatches above claimed
        // the ones due then: queued or running, they are all in the queue).
        let notifications = store.channel_deliveries(channel, 200).await.expect("deliveries").len()
            + store.channel_deliveries(failed_only, 200).await.expect("deliveries").len();
        assert!(store
            .channel_deliveries(channel, 200)
            .await
            .expect("deliveries")
            .iter()
            .all(|d| d.status == DeliveryStatus::Pending && d.attempts == 0));
        let jobs: i64 = store
            .queue_depth()
            .await
            .expect("depth")
            .iter()
            .filter(|d| d.kind == "deliver_notification")
            .map(|d| d.count)
            .sum();
        assert_eq!(usize::try_from(jobs).expect("count"), notifications);
    }

    async fn a_run_times_out_at_its_deadline_and_frees_the_routine(store, clock) {
        let (company, agent, routine_id) = seed!(store, ConcurrencyPolicy::SkipIfActive);
        let timeout = RoutineChanges {
            run_timeout_sec: Some(Some(RunTimeout::parse(120).expect("timeout"))),
            ..RoutineChanges::default()
        };
        store.update_routine(routine_id, timeout, board()).await.expect("timeout");
        let channel = store
            .create_channel(company, channel_with_one(NotificationEvent::RunFailed), board())
            .await
            .expect("channel")
            .channel
            .id;
        let dispatched = clock.now();
        let (run, issue) = run_to_issue!(store, routine_id);
        let deadline = dispatched + TimeDelta::seconds(120);
        assert_eq!(store.next_upkeep_at().await.expect("next"), Some(deadline));
        // The agent claims its heartbeat run: it times out with the run.
        let heartbeat = store.agent_heartbeat_runs(agent, None, 10).await.expect("heartbeats")[0].id;
        let me = Actor::Agent { agent_id: agent, company_id: company };
        store.claim_heartbeat_run(heartbeat, me).await.expect("claim");

        clock.set(deadline - TimeDelta::milliseconds(1));
        let report = store.upkeep(&leader(1), 100).await.expect("upkeep");
        assert_eq!(report.timed_out, 0, "not before its deadline");
        assert_eq!(store.run(run).await.expect("run").status, RunStatus::IssueCreated);

        // A newer leader's upkeep (nothing due yet) deposes the old one: at the deadline, the
        // deposed leader changes nothing and tells nobody.
        store.upkeep(&leader(2), 100).await.expect("the newer leader, nothing due yet");
        clock.set(deadline);
        assert!(matches!(
            store.upkeep(&leader(1), 100).await,
            Err(StoreError::Refused(nexus_shared::store::Refusal::Deposed { .. }))
        ));
        assert!(store.channel_deliveries(channel, 10).await.expect("deliveries").is_empty());
        let report = store.upkeep(&leader(2), 100).await.expect("upkeep");
        assert_eq!(report.timed_out, 1);
        tell!(store);
        let timed_out = store.run(run).await.expect("run");
        assert_eq!((timed_out.status, timed_out.reason.as_deref()), (RunStatus::Failed, Some("timed_out")));
        assert_eq!(timed_out.completed_at, Some(deadline));
        let issue = store.issue_with_events(issue).await.expect("issue");
        assert_eq!(issue.issue.status, IssueStatus::Cancelled);
        let change = issue.events.last().expect("an event");
        assert_eq!(change.actor_type, nexus_shared::model::ActorType::System);
        assert_eq!(change.data["reason"], "timed_out");
        assert_eq!(change.data["to"], "cancelled");
        assert_eq!(store.heartbeat_run(heartbeat).await.expect("heartbeat").status, HeartbeatStatus::TimedOut);
        assert_eq!(events_of!(store, channel), [NotificationEvent::RunFailed]);
        assert_eq!(store.next_upkeep_at().await.expect("next"), None);
        // Again: nothing more.
        assert_eq!(store.upkeep(&leader(2), 100).await.expect("upkeep").timed_out, 0);
        // The routine is free to fire again under skip_if_active.
        let (next, _) = run_to_issue!(store, routine_id);
        assert_ne!(next, run);
    }

    async fn a_pause_until_ends_by_itself_and_catches_nothing_up(store, clock) {
        let (company, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        store.create_trigger(routine_id, schedule("*/5 * * * *", "UTC"), board()).await.expect("trigger");
        let channel = store
            .create_channel(company, channel_with_one(NotificationEvent::RunMissed), board())
            .await
            .expect("channel")
            .channel
            .id;
        let until = at("10:32:00");
        let pause = RoutineChanges {
            status: Some(RoutineStatus::Paused),
            pause: Pause { note: Some("vendor outage".to_owned()), until: Some(until) },
            ..RoutineChanges::default()
        };
        let paused = store.update_routine(routine_id, pause, board()).await.expect("pause");
        assert_eq!(paused.paused_reason, Some(PausedReason::Manual));
        assert_eq!(paused.pause_note.as_deref(), Some("vendor outage"));
        assert_eq!((paused.paused_until, paused.next_run_at), (Some(until), None));
        assert_eq!(store.next_upkeep_at().await.expect("next"), Some(until));

        clock.set(at("10:31:59"));
        assert_eq!(store.upkeep(&leader(1), 100).await.expect("upkeep").resumed, 0);
        clock.set(until);
        assert_eq!(store.upkeep(&leader(1), 100).await.expect("upkeep").resumed, 1);
        let routine = store.routine(routine_id).await.expect("routine");
        assert_eq!(routine.status, RoutineStatus::Active);
        assert_eq!((routine.paused_reason, routine.pause_note.clone(), routine.paused_until, routine.paused_at), (None, None, None, None));
        assert_eq!(routine.next_run_at, Some(at("10:35:00")), "the next fire after now: 10:05…10:30 are not made up");
        let report = store.fire_due(&leader(1), TimeDelta::seconds(60), TimeDelta::zero(), 100).await.expect("fire");
        assert_eq!((report.dispatched, report.missed_fires), (0, 0));
        assert!(store.runs(routine_id, None, 50).await.expect("runs").is_empty());
        assert!(store.channel_deliveries(channel, 10).await.expect("deliveries").is_empty(), "nothing was missed");
        let entries = store.activity(company, 20).await.expect("activity");
        assert_eq!(entries[0].action, "routine.updated");
        assert_eq!(entries[0].actor_type, nexus_shared::model::ActorType::System);
        assert_eq!(entries[0].details["status"], json!({"from": "paused", "to": "active"}));
    }

    async fn a_missed_fire_is_told_and_a_deleted_channel_drops_what_it_had(store, clock) {
        let (company, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        store.create_trigger(routine_id, schedule("*/5 * * * *", "UTC"), board()).await.expect("trigger");
        let named = store
            .create_channel(company, channel(&[NotificationEvent::RunMissed], Some(vec![routine_id])), board())
            .await
            .expect("channel")
            .channel
            .id;
        let (other_company, _, other_routine) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let elsewhere = store
            .create_channel(other_company, channel(&[NotificationEvent::RunMissed], None), board())
            .await
            .expect("channel")
            .channel
            .id;
        assert!(matches!(
            store.create_channel(company, channel(&[NotificationEvent::RunMissed], Some(vec![other_routine])), board()).await,
            Err(StoreError::InvalidReference { field: "routineIds" })
        ));
        // The scheduler was down from 10:05 to 10:21: three fires missed, one run says so.
        clock.set(at("10:21:00"));
        let report = store.fire_due(&leader(1), TimeDelta::seconds(60), TimeDelta::zero(), 100).await.expect("fire");
        assert_eq!(report.missed_fires, 3);
        tell!(store);
        let deliveries = store.channel_deliveries(named, 10).await.expect("deliveries");
        assert_eq!(deliveries.len(), 1);
        assert_eq!((deliveries[0].event, deliveries[0].routine_id), (NotificationEvent::RunMissed, Some(routine_id)));
        assert!(store.channel_deliveries(elsewhere, 10).await.expect("deliveries").is_empty());
        let sent = deliveries[0].id;
        let outgoing = store.notification_to_send(sent).await.expect("read").expect("pending");
        assert_eq!(outgoing.body["type"], "run.missed");
        assert_eq!(outgoing.body["data"]["companyId"], json!(company));
        assert_eq!(outgoing.body["data"]["run"]["missed"]["count"], 3);
        assert!(outgoing.body["data"]["run"].get("payload").is_none(), "never the payload");
        assert_eq!(outgoing.body["data"]["routine"]["id"], json!(routine_id));
        store.delete_channel(named, board()).await.expect("delete");
        assert!(store.notification_to_send(sent).await.expect("read").is_none(), "dropped with its channel");
    }

    async fn bulk_pause_touches_only_the_selected_routines_of_that_company(store, clock) {
        let (company, agent, first) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let project = store.projects(company).await.expect("projects")[0].id;
        let second = store.create_routine(company, routine(agent, project), board()).await.expect("routine").id;
        let other_agent = store.create_agent(company, title("Bo"), WakeupSpec::Poll, board()).await.expect("agent").agent.id;
        let third = store.create_routine(company, routine(other_agent, project), board()).await.expect("routine").id;
        let (_, _, foreign) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let until = clock.now() + TimeDelta::hours(2);
        let pause = Pause { note: Some("maintenance".to_owned()), until: Some(until) };

        let paused = store
            .set_routines_paused(company, RoutineSelector::Assignee(agent), Some(pause.clone()), board())
            .await
            .expect("pause");
        let mut ids: Vec<Uuid> = paused.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        let mut both = vec![first, second];
        both.sort_unstable();
        assert_eq!(ids, both);
        assert!(paused.iter().all(|r| r.paused_until == Some(until) && r.pause_note.as_deref() == Some("maintenance")));
        assert_eq!(store.routine(third).await.expect("third").status, RoutineStatus::Active);

        // By id: another company's routine and an already paused one are left alone.
        let paused = store
            .set_routines_paused(company, RoutineSelector::Ids(vec![first, third, foreign]), Some(Pause::default()), board())
            .await
            .expect("pause");
        assert_eq!(paused.iter().map(|r| r.id).collect::<Vec<_>>(), [third]);
        assert_eq!(store.routine(foreign).await.expect("foreign").status, RoutineStatus::Active);
        assert_eq!(store.routine(first).await.expect("first").pause_note.as_deref(), Some("maintenance"));

        let resumed = store
            .set_routines_paused(company, RoutineSelector::Project(project), None, board())
            .await
            .expect("resume");
        assert_eq!(resumed.len(), 3);
        assert!(resumed.iter().all(|r| r.status == RoutineStatus::Active && r.paused_until.is_none()));
        assert!(store
            .set_routines_paused(company, RoutineSelector::Project(project), None, board())
            .await
            .expect("resume again")
            .is_empty());
    }
}

fn channel_with_one(event: NotificationEvent) -> NewChannel {
    channel(&[event], None)
}
