//! The catalog on every backend: companies, projects, goals, tokens, agents, routines and
//! triggers.

use super::*;

nexus_tests::conformance! {
    async fn companies_projects_and_goals_are_scoped_and_audited(store, clock) {
        let acme = store.create_company(title("Acme"), board()).await.expect("company");
        clock.advance(TimeDelta::seconds(1));
        let other = store.create_company(title("Other"), board()).await.expect("company");
        let names: Vec<String> = store.companies().await.expect("list").into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["Acme", "Other"]);
        assert_eq!(store.company(acme.id).await.expect("one").created_at, clock.now() - TimeDelta::seconds(1));
        assert!(matches!(store.company(Uuid::now_v7()).await, Err(StoreError::NotFound)));

        let project = store.create_project(acme.id, title("Ops"), board()).await.expect("project");
        store.create_goal(acme.id, title("Uptime"), board()).await.expect("goal");
        assert!(matches!(
            store.create_project(Uuid::now_v7(), title("X"), board()).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(store.projects(acme.id).await.expect("projects")[0].id, project.id);
        assert!(store.projects(other.id).await.expect("projects").is_empty());
        assert_eq!(store.goals(acme.id).await.expect("goals").len(), 1);

        let actions: Vec<String> = store.activity(acme.id, 10).await.expect("log").into_iter().map(|e| e.action).collect();
        assert_eq!(actions, ["goal.created", "project.created", "company.created"], "newest first");
        assert_eq!(store.activity(acme.id, 1).await.expect("log").len(), 1);
    }

    async fn board_tokens_and_agent_keys_authenticate_until_revoked(store, clock) {
        assert!(!store.has_board_token().await.expect("query"));
        let token = store.create_board_token("ops").await.expect("token");
        assert!(store.has_board_token().await.expect("query"));
        assert!(matches!(
            store.authenticate(&token.token).await.expect("query"),
            Some(Actor::Board { token_id }) if token_id == token.id
        ));
        assert!(store.authenticate("nxb_not-a-token").await.expect("query").is_none());
        // Registering the same bootstrap token twice is idempotent.
        store.ensure_board_token("bootstrap-token-0123456789abcdef", "bootstrap").await.expect("first");
        store.ensure_board_token("bootstrap-token-0123456789abcdef", "bootstrap").await.expect("again");
        assert!(store.authenticate("bootstrap-token-0123456789abcdef").await.expect("query").is_some());

        // Listed without the token; last use kept to the minute; revoked for good.
        let listed = store.board_tokens().await.expect("list");
        let ops = listed.iter().find(|t| t.id == token.id).expect("listed");
        let first_use = ops.last_used_at.expect("used");
        assert_eq!((ops.label.as_str(), ops.revoked_at), ("ops", None));
        clock.advance(TimeDelta::seconds(30));
        store.authenticate(&token.token).await.expect("query");
        let listed = store.board_tokens().await.expect("list");
        assert_eq!(listed.iter().find(|t| t.id == token.id).and_then(|t| t.last_used_at), Some(first_use), "written at most once a minute");
        clock.advance(TimeDelta::seconds(31));
        store.authenticate(&token.token).await.expect("query");
        let listed = store.board_tokens().await.expect("list");
        assert_eq!(listed.iter().find(|t| t.id == token.id).and_then(|t| t.last_used_at), Some(clock.now()));
        let doomed = store.create_board_token("doomed").await.expect("token");
        assert!(store.revoke_board_token(doomed.id).await.expect("revoke"));
        let revoked_at = store.board_tokens().await.expect("list").into_iter().find(|t| t.id == doomed.id).and_then(|t| t.revoked_at);
        assert_eq!(revoked_at, Some(clock.now()));
        clock.advance(TimeDelta::seconds(5));
        assert!(store.revoke_board_token(doomed.id).await.expect("again"));
        let again = store.board_tokens().await.expect("list").into_iter().find(|t| t.id == doomed.id).and_then(|t| t.revoked_at);
        assert_eq!(again, revoked_at, "the first revocation stands");
        assert!(store.authenticate(&doomed.token).await.expect("query").is_none());
        assert!(!store.revoke_board_token(Uuid::now_v7()).await.expect("unknown"));

        let company = store.create_company(title("Acme"), board()).await.expect("company");
        let created = store.create_agent(company.id, title("Ada"), WakeupSpec::Poll, board()).await.expect("agent");
        let as_agent = Some(Actor::Agent { agent_id: created.agent.id, company_id: company.id });
        assert_eq!(store.authenticate(&created.api_key).await.expect("query"), as_agent);
        let second = store.issue_agent_key(created.agent.id, board()).await.expect("key");
        store.revoke_agent_key(created.agent.id, second.id, board()).await.expect("revoke");
        store.revoke_agent_key(created.agent.id, second.id, board()).await.expect("revoking twice is fine");
        assert!(store.authenticate(&second.api_key).await.expect("query").is_none());
        assert_eq!(store.authenticate(&created.api_key).await.expect("query"), as_agent);
        assert!(matches!(
            store.revoke_agent_key(created.agent.id, Uuid::now_v7(), board()).await,
            Err(StoreError::NotFound)
        ));
        let revocations = store.activity(company.id, 50).await.expect("log")
            .into_iter().filter(|e| e.action == "agent_key.revoked").count();
        assert_eq!(revocations, 1, "a repeated revocation is not audited again");
        let _ = clock;
    }

    async fn agents_change_until_terminated_and_http_wakeups_get_a_secret(store, clock) {
        let company = store.create_company(title("Acme"), board()).await.expect("company");
        let url = WakeupUrl::parse("https://agents.example.com/wake").expect("url");
        let http = store.create_agent(company.id, title("Hal"), WakeupSpec::Http(url.clone()), board()).await.expect("agent");
        assert!(http.wakeup_secret.as_deref().is_some_and(|s| s.starts_with("whsec_")));
        let poll = store.create_agent(company.id, title("Ada"), WakeupSpec::Poll, board()).await.expect("agent");
        assert!(poll.wakeup_secret.is_none());
        // A URL change keeps the secret; switching from poll to http creates one.
        let other = WakeupUrl::parse("https://agents.example.com/other").expect("url");
        let moved = store.update_agent(http.agent.id, AgentChanges { wakeup: Some(WakeupSpec::Http(other.clone())), ..Default::default() }, board()).await.expect("update");
        assert!(moved.wakeup_secret.is_none());
        let switched = store.update_agent(poll.agent.id, AgentChanges { wakeup: Some(WakeupSpec::Http(other)), ..Default::default() }, board()).await.expect("update");
        assert!(switched.wakeup_secret.is_some());
        let renamed = store.update_agent(poll.agent.id, AgentChanges { name: Some(title("Ada II")), ..Default::default() }, board()).await.expect("rename");
        assert_eq!(renamed.agent.name, "Ada II");
        assert_eq!(store.agents(company.id).await.expect("list").len(), 2);

        store.update_agent(poll.agent.id, AgentChanges { status: Some(AgentStatus::Terminated), ..Default::default() }, board()).await.expect("terminate");
        assert!(store.authenticate(&poll.api_key).await.expect("query").is_none(), "a terminated agent's keys stop working");
        for refused in [
            store.update_agent(poll.agent.id, AgentChanges { name: Some(title("Z")), ..Default::default() }, board()).await.map(drop),
            store.issue_agent_key(poll.agent.id, board()).await.map(drop),
        ] {
            assert!(matches!(refused, Err(StoreError::Refused(ref r)) if r.code() == "agent_terminated"), "{refused:?}");
        }
        assert!(matches!(store.agent(Uuid::now_v7()).await, Err(StoreError::NotFound)));
        let _ = clock;
    }

    async fn routines_check_their_references_and_list_newest_first(store, clock) {
        let company = store.create_company(title("Acme"), board()).await.expect("company");
        let other = store.create_company(title("Other"), board()).await.expect("company");
        let agent = store.create_agent(company.id, title("Ada"), WakeupSpec::Poll, board()).await.expect("agent").agent.id;
        let project = store.create_project(company.id, title("Ops"), board()).await.expect("project").id;
        let foreign = store.create_project(other.id, title("Theirs"), board()).await.expect("project").id;

        let refused = store.create_routine(company.id, routine(agent, foreign), board()).await;
        assert!(matches!(refused, Err(StoreError::InvalidReference { field: "projectId" })), "{refused:?}");
        let refused = store.create_routine(company.id, NewRoutine { goal_id: Some(Uuid::now_v7()), ..routine(agent, project) }, board()).await;
        assert!(matches!(refused, Err(StoreError::InvalidReference { field: "goalId" })), "{refused:?}");
        let refused = store.create_routine(company.id, routine(Uuid::now_v7(), project), board()).await;
        assert!(matches!(refused, Err(StoreError::InvalidReference { field: "assigneeAgentId" })), "{refused:?}");

        let first = store.create_routine(company.id, routine(agent, project), board()).await.expect("routine");
        clock.advance(TimeDelta::seconds(1));
        let second = store.create_routine(company.id, NewRoutine { status: RoutineStatus::Paused, ..routine(agent, project) }, board()).await.expect("routine");
        let all: Vec<Uuid> = store.routines(company.id, RoutineFilter { limit: 10, ..Default::default() }).await.expect("list").into_iter().map(|r| r.id).collect();
        assert_eq!(all, [second.id, first.id]);
        let paused: Vec<Uuid> = store.routines(company.id, RoutineFilter { status: Some(RoutineStatus::Paused), limit: 10, ..Default::default() }).await.expect("list").into_iter().map(|r| r.id).collect();
        assert_eq!(paused, [second.id]);
        let older: Vec<Uuid> = store.routines(company.id, RoutineFilter { before: Some(second.id), limit: 10, ..Default::default() }).await.expect("list").into_iter().map(|r| r.id).collect();
        assert_eq!(older, [first.id]);

        let changed = store.update_routine(first.id, RoutineChanges { priority: Some(Priority::High), ..Default::default() }, board()).await.expect("update");
        assert_eq!(changed.priority, Priority::High);
        let refused = store.update_routine(first.id, RoutineChanges { project_id: Some(foreign), ..Default::default() }, board()).await;
        assert!(matches!(refused, Err(StoreError::InvalidReference { field: "projectId" })), "{refused:?}");
        store.update_routine(first.id, RoutineChanges { status: Some(RoutineStatus::Archived), ..Default::default() }, board()).await.expect("archive");
        let refused = store.update_routine(first.id, RoutineChanges { priority: Some(Priority::Low), ..Default::default() }, board()).await;
        assert!(matches!(refused, Err(StoreError::Refused(ref r)) if r.code() == "routine_archived"), "{refused:?}");
        let update = store.activity(company.id, 1).await.expect("log").remove(0);
        assert_eq!((update.action.as_str(), &update.details["status"]["to"]), ("routine.updated", &serde_json::json!("archived")));
    }

    async fn schedule_triggers_have_a_next_fire_only_while_enabled_and_active(store, clock) {
        let company = store.create_company(title("Acme"), board()).await.expect("company");
        let agent = store.create_agent(company.id, title("Ada"), WakeupSpec::Poll, board()).await.expect("agent").agent.id;
        let project = store.create_project(company.id, title("Ops"), board()).await.expect("project").id;
        let routine_id = store.create_routine(company.id, routine(agent, project), board()).await.expect("routine").id;
        let (trigger, secret) = store.create_trigger(routine_id, schedule("0 9 * * *", "Europe/Amsterdam"), board()).await.expect("trigger");
        assert!(secret.is_none());
        let nine = chrono::DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z").expect("time").to_utc();
        assert_eq!(next_run_at(&trigger.config), Some(nine));

        let paused = store.update_routine(routine_id, RoutineChanges { status: Some(RoutineStatus::Paused), ..Default::default() }, board()).await.expect("pause");
        assert_eq!(next_run_at(&paused.triggers[0].config), None);
        clock.advance(TimeDelta::days(2));
        let resumed = store.update_routine(routine_id, RoutineChanges { status: Some(RoutineStatus::Active), ..Default::default() }, board()).await.expect("resume");
        assert_eq!(next_run_at(&resumed.triggers[0].config), Some(nine + TimeDelta::days(2)), "computed from now: no catch-up of the pause");

        let disabled = store.update_trigger(trigger.id, TriggerChanges { enabled: Some(false), ..Default::default() }, board()).await.expect("disable");
        assert_eq!(next_run_at(&disabled.config), None);
        let moved = store.update_trigger(trigger.id, TriggerChanges {
            enabled: Some(true),
            cron: Some(CronExpression::parse("30 6 * * *").expect("cron")),
            zone: Some(TimeZone::parse("UTC").expect("zone")),
            ..Default::default()
        }, board()).await.expect("edit");
        let half_past_six = chrono::DateTime::parse_from_rfc3339("2026-12-03T06:30:00Z").expect("time").to_utc();
        assert_eq!(next_run_at(&moved.config), Some(half_past_six));
        let seen = store.trigger(trigger.id).await.expect("trigger");
        assert_eq!((seen.company_id, seen.assignee_agent_id), (company.id, agent));
        assert_eq!(store.routine(routine_id).await.expect("routine").triggers.len(), 1);
    }

    async fn webhook_triggers_get_a_url_and_a_secret_that_rotates(store, clock) {
        let company = store.create_company(title("Acme"), board()).await.expect("company");
        let agent = store.create_agent(company.id, title("Ada"), WakeupSpec::Poll, board()).await.expect("agent").agent.id;
        let project = store.create_project(company.id, title("Ops"), board()).await.expect("project").id;
        let routine_id = store.create_routine(company.id, routine(agent, project), board()).await.expect("routine").id;
        let hook = NewTrigger {
            kind: NewTriggerKind::Webhook { signing_mode: SigningMode::HmacSha256, replay_window: ReplayWindow::parse(60).expect("window"), sender_secret: None },
            label: Label::parse("deploys".to_owned()).expect("label"),
            enabled: true,
        };
        let (trigger, secret) = store.create_trigger(routine_id, hook, board()).await.expect("trigger");
        let secret = secret.expect("a webhook has a secret");
        let TriggerConfig::Webhook { webhook_url, public_id, replay_window_sec, .. } = &trigger.config else { panic!("webhook") };
        assert_eq!(*replay_window_sec, 60);
        assert_eq!(webhook_url, &format!("http://nexus.test/api/routine-triggers/public/{public_id}/fire"));
        assert_eq!(&secret.webhook_url, webhook_url);
        let (_, rotated) = store.rotate_trigger_secret(trigger.id, Rotation::default(), board()).await.expect("rotate");
        assert_ne!(rotated.webhook_secret, secret.webhook_secret);

        let (api, _) = store.create_trigger(routine_id, NewTrigger { kind: NewTriggerKind::Api, label: Label::default(), enabled: true }, board()).await.expect("api trigger");
        let refused = store.rotate_trigger_secret(api.id, Rotation::default(), board()).await;
        assert!(matches!(refused, Err(StoreError::Refused(ref r)) if r.code() == "not_a_webhook_trigger"), "{refused:?}");
        store.delete_trigger(api.id, board()).await.expect("delete");
        assert!(matches!(store.trigger(api.id).await, Err(StoreError::NotFound)));

        store.update_routine(routine_id, RoutineChanges { status: Some(RoutineStatus::Archived), ..Default::default() }, board()).await.expect("archive");
        for refused in [
            store.create_trigger(routine_id, schedule("* * * * *", "UTC"), board()).await.map(drop),
            store.update_trigger(trigger.id, TriggerChanges { enabled: Some(false), ..Default::default() }, board()).await.map(drop),
        ] {
            assert!(matches!(refused, Err(StoreError::Refused(ref r)) if r.code() == "routine_archived"), "{refused:?}");
        }
        // A leaked secret of an archived routine can still be destroyed: rotated, and the
        // trigger deleted.
        let (_, last) = store.rotate_trigger_secret(trigger.id, Rotation::default(), board()).await.expect("rotate on an archived routine");
        assert_ne!(last.webhook_secret, rotated.webhook_secret);
        store.delete_trigger(trigger.id, board()).await.expect("delete on an archived routine");
        assert!(matches!(store.trigger(trigger.id).await, Err(StoreError::NotFound)));
        let _ = clock;
    }
}
