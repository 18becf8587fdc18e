use super::*;

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("time")
        .to_utc()
}

nexus_tests::conformance! {
    async fn a_routine_paused_before_dispatch_skips_its_schedule_and_webhook_runs(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        let hook = NewTrigger {
            kind: NewTriggerKind::Webhook { signing_mode: SigningMode::Bearer, replay_window: ReplayWindow::parse(300).expect("window"), sender_secret: None },
            label: Label::default(),
            enabled: true,
        };
        let (trigger, _) = store.create_trigger(routine_id, hook, board()).await.expect("trigger");
        let TriggerConfig::Webhook { public_id, .. } = &trigger.config else { panic!("webhook") };
        let read = store.webhook_trigger(public_id).await.expect("lookup").expect("found");
        let webhook = store.accept_webhook_run(&read, NewRun { source: RunSource::Webhook, trigger_id: Some(trigger.id), ..manual(json!({}), None) }).await.expect("accepted").run.id;
        let by_hand = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("accepted").run.id;
        store.update_routine(routine_id, RoutineChanges { status: Some(RoutineStatus::Paused), ..Default::default() }, board()).await.expect("pause");
        drain!(store, "w");
        let webhook = store.run(webhook).await.expect("run");
        assert_eq!((webhook.status, webhook.reason.as_deref()), (RunStatus::Skipped, Some("routine_paused")));
        assert!(webhook.linked_issue_id.is_none());
        assert_eq!(store.run(by_hand).await.expect("run").status, RunStatus::IssueCreated, "a run by hand is dispatched while paused");
        // Archived since: skipped as archived.
        let again = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("accepted").run.id;
        store.update_routine(routine_id, RoutineChanges { status: Some(RoutineStatus::Archived), ..Default::default() }, board()).await.expect("archive");
        drain!(store, "w");
        let again = store.run(again).await.expect("run");
        assert_eq!((again.status, again.reason.as_deref()), (RunStatus::Skipped, Some("routine_archived")));
        let _ = clock;
    }

    async fn a_schedule_run_dispatched_late_follows_the_catch_up_policy(store, clock) {
        let (grace, lease) = (TimeDelta::seconds(60), Duration::from_secs(30));
        // skip_missed: a fire whose workers were down for two minutes is skipped as missed.
        let (_, _, skipping) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        store.create_trigger(skipping, schedule("* * * * *", "UTC"), board()).await.expect("trigger");
        clock.set(at("2026-11-30T10:01:00Z"));
        assert_eq!(store.fire_due(&leader(1), grace, TimeDelta::zero(), 500).await.expect("fire").dispatched, 1);
        clock.set(at("2026-11-30T10:02:00Z"));
        let on_time = store.claim_and_dispatch("w", lease, 100).await.expect("take");
        assert_eq!(on_time.outcomes.iter().map(|(_, s)| *s).collect::<Vec<_>>(), [RunStatus::IssueCreated], "within the grace: on time");
        clock.set(at("2026-11-30T10:02:00Z"));
        store.fire_due(&leader(1), grace, TimeDelta::zero(), 500).await.expect("fire");
        clock.set(at("2026-11-30T10:03:00.001Z"));
        let late = store.claim_and_dispatch("w", lease, 100).await.expect("take");
        assert_eq!(late.outcomes.iter().map(|(_, s)| *s).collect::<Vec<_>>(), [RunStatus::Skipped]);
        let run = store.run(late.outcomes[0].0).await.expect("run");
        assert_eq!(run.reason.as_deref(), Some("missed_schedule"));
        let nominal = at("2026-11-30T10:02:00Z");
        assert_eq!(run.missed, Some(json!({ "count": 1, "from": nominal, "to": nominal })));

        // enqueue_missed_with_cap (cap 2): of five fires left waiting, the two most recent
        // are dispatched as catch-ups, the older three skipped over the cap.
        let company = store.create_company(title("Beta"), board()).await.expect("company").id;
        let agent = store.create_agent(company, title("Bo"), WakeupSpec::Poll, board()).await.expect("agent").agent.id;
        let project = store.create_project(company, title("Ops"), board()).await.expect("project").id;
        let capped = NewRoutine {
            concurrency_policy: ConcurrencyPolicy::AlwaysEnqueue,
            catch_up_policy: CatchUpPolicy::EnqueueMissedWithCap,
            catch_up_cap: CatchUpCap::parse(2).expect("cap"),
            ..routine(agent, project)
        };
        let capped = store.create_routine(company, capped, board()).await.expect("routine").id;
        store.create_trigger(capped, schedule("* * * * *", "UTC"), board()).await.expect("trigger");
        for minute in 4..=8 {
            clock.set(at(&format!("2026-11-30T10:0{minute}:00Z")));
            store.fire_due(&leader(1), grace, TimeDelta::zero(), 500).await.expect("fire");
        }
        clock.set(at("2026-11-30T10:20:00Z"));
        store.claim_and_dispatch("w", lease, 100).await.expect("take");
        let runs = store.runs(capped, None, 50).await.expect("runs");
        let seen: Vec<_> = runs.iter().rev().map(|r| (r.scheduled_for.map(|t| t.format("%H:%M").to_string()), r.status, r.reason.clone(), r.catch_up)).collect();
        let skipped = |hm: &str| (Some(hm.to_owned()), RunStatus::Skipped, Some("catch_up_cap".to_owned()), false);
        let caught_up = |hm: &str| (Some(hm.to_owned()), RunStatus::IssueCreated, None, true);
        assert_eq!(seen, [skipped("10:04"), skipped("10:05"), skipped("10:06"), caught_up("10:07"), caught_up("10:08")]);
    }

    async fn date_renders_in_the_zone_the_trigger_had_when_it_fired(store, clock) {
        let (company, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        store.update_routine(routine_id, RoutineChanges { title: Some(title("Report {{date}}")), ..Default::default() }, board()).await.expect("title");
        // 20:00 in New York on 30 November is 01:00 UTC on 1 December.
        let trigger = store.create_trigger(routine_id, schedule("0 20 * * *", "America/New_York"), board()).await.expect("trigger").0.id;
        clock.set(at("2026-12-01T01:00:00Z"));
        assert_eq!(store.fire_due(&leader(1), TimeDelta::seconds(60), TimeDelta::zero(), 500).await.expect("fire").dispatched, 1);
        // The trigger moves to Tokyo (where it is already 1 December) before the dispatch.
        let tokyo = TriggerChanges { zone: Some(TimeZone::parse("Asia/Tokyo").expect("zone")), ..Default::default() };
        store.update_trigger(trigger, tokyo, board()).await.expect("edit");
        drain!(store, "w");
        let issues = store.issues(company, IssueFilter { limit: 10, ..Default::default() }).await.expect("issues");
        assert_eq!(issues.iter().map(|i| i.title.as_str()).collect::<Vec<_>>(), ["Report 2026-11-30"]);
    }

    async fn runs_are_listed_newest_first_by_when_they_were_triggered(store, clock) {
        let (_, _, routine_id) = seed!(store, ConcurrencyPolicy::AlwaysEnqueue);
        store.create_trigger(routine_id, schedule("0 11 * * *", "UTC"), board()).await.expect("trigger");
        // The 11:00 fire is prepared at 10:59:57 (created first, triggered at 11:00); a run
        // by hand accepted at 10:59:58 was triggered before it.
        clock.set(at("2026-11-30T10:59:57Z"));
        assert_eq!(store.fire_due(&leader(1), TimeDelta::seconds(60), TimeDelta::seconds(5), 500).await.expect("prepare").prepared, 1);
        clock.set(at("2026-11-30T10:59:58Z"));
        let by_hand = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("accepted").run.id;
        assert_eq!(store.runs(routine_id, None, 10).await.expect("runs").iter().map(|r| r.id).collect::<Vec<_>>(), [by_hand]);
        clock.set(at("2026-11-30T11:00:01Z"));
        let later = store.accept_manual_run(routine_id, manual(json!({}), None), board()).await.expect("accepted").run.id;
        let listed: Vec<(Uuid, RunSource)> = store.runs(routine_id, None, 10).await.expect("runs").iter().map(|r| (r.id, r.source)).collect();
        assert_eq!(listed.len(), 3);
        assert_eq!((listed[0].0, listed[1].1, listed[2].0), (later, RunSource::Schedule, by_hand), "{listed:?}");
        // Pages follow the same order.
        let page: Vec<Uuid> = store.runs(routine_id, Some(listed[0].0), 1).await.expect("page").iter().map(|r| r.id).collect();
        assert_eq!(page, [listed[1].0]);
        let page: Vec<Uuid> = store.runs(routine_id, Some(listed[1].0), 5).await.expect("page").iter().map(|r| r.id).collect();
        assert_eq!(page, [by_hand]);
    }
}
