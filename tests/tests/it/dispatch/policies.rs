//! What a dispatch makes of a run: the templated issue and its heartbeat run, the concurrency
//! policies, a terminated assignee, a cancelled issue.

use super::*;

#[tokio::test]
async fn a_dispatched_run_creates_a_templated_issue_and_a_heartbeat_run() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let goal = app
        .board()
        .create_goal(&team.company, &json!({ "title": "Uptime" }))
        .await
        .expect(201)
        .id();
    let routine = app
        .seed_routine(
            &team,
            &json!({
                "title": "Report {{date}} on {{payload.topic}}",
                "description": "Look at {{payload.deep.key}}; missing: [{{payload.nope}}]",
                "priority": "critical", "goalId": goal,
            }),
        )
        .await;
    let run_id = run(
        &app,
        &routine,
        json!({ "topic": "billing", "deep": { "key": "invoices" } }),
    )
    .await;
    assert_eq!(app.drain().await, 1);

    let run = get_run(&app, &run_id).await;
    assert_eq!(run["status"], "issue_created");
    assert!(run["completedAt"].is_null());
    let issue = app
        .board()
        .get_issue(&str_at(&run, "/linkedIssueId"))
        .await
        .expect(200)
        .body;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(issue["title"], format!("Report {today} on billing"));
    assert_eq!(issue["description"], "Look at invoices; missing: []");
    assert_eq!(issue["priority"], "critical");
    assert_eq!(issue["projectId"], team.project.as_str());
    assert_eq!(issue["goalId"], goal.as_str());
    assert_eq!(issue["assigneeAgentId"], team.agent.as_str());
    assert_eq!(issue["routineId"], routine.as_str());
    assert_eq!(issue["originRunId"], run_id.as_str());
    assert_eq!(issue["events"][0]["type"], "created");
    assert_eq!(issue["events"][0]["actorType"], "system");

    let heartbeats = app
        .caller(Some(&team.key))
        .my_heartbeat_runs("")
        .await
        .expect(200)
        .body;
    let heartbeat = &heartbeats["heartbeatRuns"][0];
    assert_eq!(heartbeat["id"], run["heartbeatRunId"]);
    assert_eq!(heartbeat["routineRunId"], run_id.as_str());
    assert_eq!(heartbeat["status"], "queued");
    assert_eq!(heartbeat["context"]["routineId"], routine.as_str());
    assert_eq!(heartbeat["context"]["source"], "manual");
    assert_eq!(heartbeat["context"]["title"], issue["title"]);
    assert_eq!(heartbeat["context"]["payload"]["topic"], "billing");

    let routine_body = app.board().get_routine(&routine).await.expect(200).body;
    assert_eq!(routine_body["lastTriggeredAt"], run["triggeredAt"]);
    let activity = app
        .board()
        .activity(&team.company, "limit=1")
        .await
        .expect(200)
        .body;
    assert_eq!(activity["activity"][0]["action"], "run.dispatched");
    assert_eq!(activity["activity"][0]["actorType"], "system");
    // Dispatching again changes nothing.
    assert_eq!(app.drain().await, 0);
}

#[tokio::test]
async fn coalesce_if_active_joins_the_open_issue_and_rewakes_the_agent() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app
        .seed_routine(&team, &json!({ "concurrencyPolicy": "coalesce_if_active" }))
        .await;
    let first = run(&app, &routine, json!({ "n": 1 })).await;
    let second = run(&app, &routine, json!({ "n": 2 })).await;
    app.drain().await;
    let first_run = get_run(&app, &first).await;
    let second_run = get_run(&app, &second).await;
    assert_eq!(first_run["status"], "issue_created");
    assert_eq!(second_run["status"], "coalesced");
    assert_eq!(second_run["reason"], "active_issue");
    assert_eq!(second_run["linkedIssueId"], first_run["linkedIssueId"]);
    assert_eq!(second_run["coalescedIntoRunId"], first.as_str());
    assert!(
        second_run["heartbeatRunId"].is_null(),
        "the agent still has a queued heartbeat run"
    );
    let issue_id = str_at(&first_run, "/linkedIssueId");
    let issue = app.board().get_issue(&issue_id).await.expect(200).body;
    let coalesced = issue["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "fire_coalesced")
        .cloned()
        .expect("event");
    assert_eq!(coalesced["data"]["runId"], second.as_str());
    assert_eq!(coalesced["data"]["payload"], json!({ "n": 2 }));

    // The agent finishes its heartbeat run but leaves the issue open: the next fire wakes it again.
    let agent = app.caller(Some(&team.key));
    let heartbeat = str_at(&first_run, "/heartbeatRunId");
    agent.claim_heartbeat_run(&heartbeat).await.expect(200);
    agent
        .finish_heartbeat_run(&heartbeat, &json!({ "status": "succeeded" }))
        .await
        .expect(200);
    let third = run(&app, &routine, json!({ "n": 3 })).await;
    app.drain().await;
    let third_run = get_run(&app, &third).await;
    assert_eq!(third_run["status"], "coalesced");
    let rewake = str_at(&third_run, "/heartbeatRunId");
    let queued = agent
        .my_heartbeat_runs("status=queued")
        .await
        .expect(200)
        .body;
    assert_eq!(queued["heartbeatRuns"][0]["id"], rewake.as_str());
    assert_eq!(queued["heartbeatRuns"][0]["issueId"], issue_id.as_str());
    assert_eq!(
        queued["heartbeatRuns"][0]["context"]["payload"],
        json!({ "n": 3 })
    );

    // Once the issue is done its run completes, and the next fire opens a new issue.
    agent
        .update_issue(&issue_id, &json!({ "status": "done" }))
        .await
        .expect(200);
    let completed = get_run(&app, &first).await;
    assert_eq!(completed["status"], "completed");
    assert!(completed["completedAt"].is_string());
    assert_eq!(
        get_run(&app, &second).await["status"],
        "coalesced",
        "coalesced runs keep their status"
    );
    let fourth = run(&app, &routine, json!({})).await;
    app.drain().await;
    let fourth_run = get_run(&app, &fourth).await;
    assert_eq!(fourth_run["status"], "issue_created");
    assert_ne!(fourth_run["linkedIssueId"], json!(issue_id));
}

#[tokio::test]
async fn skip_if_active_and_always_enqueue() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let skip = app
        .seed_routine(&team, &json!({ "concurrencyPolicy": "skip_if_active" }))
        .await;
    let first = run(&app, &skip, json!({})).await;
    let second = run(&app, &skip, json!({})).await;
    app.drain().await;
    let first_run = get_run(&app, &first).await;
    let skipped = get_run(&app, &second).await;
    assert_eq!(skipped["status"], "skipped");
    assert_eq!(skipped["reason"], "active_issue");
    assert_eq!(skipped["linkedIssueId"], first_run["linkedIssueId"]);
    assert!(skipped["heartbeatRunId"].is_null());
    assert!(skipped["completedAt"].is_string());
    assert_eq!(open_issues(&app, &team, &skip).await.len(), 1);

    let always = app
        .seed_routine(&team, &json!({ "concurrencyPolicy": "always_enqueue" }))
        .await;
    let runs = [
        run(&app, &always, json!({})).await,
        run(&app, &always, json!({})).await,
        run(&app, &always, json!({})).await,
    ];
    app.drain().await;
    let mut issues = std::collections::HashSet::new();
    for id in &runs {
        let r = get_run(&app, id).await;
        assert_eq!(r["status"], "issue_created");
        issues.insert(str_at(&r, "/linkedIssueId"));
    }
    assert_eq!(issues.len(), 3);
    assert_eq!(open_issues(&app, &team, &always).await.len(), 3);
}

#[tokio::test]
async fn a_terminated_assignee_fails_the_run_and_creates_nothing() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let id = run(&app, &routine, json!({})).await;
    app.board()
        .update_agent(&team.agent, &json!({ "status": "terminated" }))
        .await
        .expect(200);
    app.drain().await;
    let failed = get_run(&app, &id).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "agent_not_assignable");
    assert!(failed["failureReason"].is_string() && failed["linkedIssueId"].is_null());
    let issues = app
        .board()
        .list_issues(&team.company, &format!("routineId={routine}"))
        .await
        .expect(200);
    assert_eq!(issues.body["issues"], json!([]));
    // The agent's keys stopped working with it, so its heartbeat runs are read from the rows
    // (on Postgres; the conformance suite checks the embedded backend).
    if nexus_tests::backend_is_postgres() {
        assert_eq!(
            app.count(
                "SELECT count(*) FROM heartbeat_runs WHERE agent_id = $1::uuid",
                &team.agent
            )
            .await,
            0
        );
    }
}

#[tokio::test]
async fn a_cancelled_issue_fails_its_run() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let id = run(&app, &routine, json!({})).await;
    app.drain().await;
    let issue = str_at(&get_run(&app, &id).await, "/linkedIssueId");
    app.board()
        .update_issue(&issue, &json!({ "status": "cancelled" }))
        .await
        .expect(200);
    let failed = get_run(&app, &id).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "issue_cancelled");
    // Reopening the issue does not resurrect the run.
    app.board()
        .update_issue(&issue, &json!({ "status": "todo" }))
        .await
        .expect(200);
    assert_eq!(get_run(&app, &id).await["status"], "failed");
}
