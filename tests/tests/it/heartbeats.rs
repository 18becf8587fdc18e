//! Heartbeat runs from the agent's side: claim and finish follow `queued → running → final`,
//! 409 on the wrong state, 403 for anyone but the owner.

use nexus_tests::{TestApp, str_at};
use serde_json::json;

async fn setup(app: &TestApp) -> (String, String, String, String) {
    let company = app.seed_company("Acme").await;
    let (agent, key) = app.seed_agent(&company, "Ada").await;
    app.board()
        .create_issue(
            &company,
            &json!({ "title": "Work", "assigneeAgentId": agent }),
        )
        .await
        .expect(201);
    let runs = app
        .caller(Some(&key))
        .my_heartbeat_runs("status=queued")
        .await
        .expect(200);
    let run = str_at(&runs.body, "/heartbeatRuns/0/id");
    (company, agent, key, run)
}

#[tokio::test]
async fn claim_and_finish_follow_the_state_rules() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let (_, _, key, run) = setup(&app).await;
    let agent = app.caller(Some(&key));

    agent
        .finish_heartbeat_run(&run, &json!({ "status": "succeeded" }))
        .await
        .expect_error(409, "not_running");
    let claimed = agent.claim_heartbeat_run(&run).await.expect(200);
    assert_eq!(claimed.body["status"], "running");
    assert!(claimed.body["startedAt"].is_string());
    assert!(claimed.body["finishedAt"].is_null());
    agent
        .claim_heartbeat_run(&run)
        .await
        .expect_error(409, "not_queued");

    let finished = agent
        .finish_heartbeat_run(
            &run,
            &json!({ "status": "succeeded", "summary": "rotated 3 logs" }),
        )
        .await
        .expect(200);
    assert_eq!(finished.body["status"], "succeeded");
    assert_eq!(finished.body["summary"], "rotated 3 logs");
    assert!(finished.body["finishedAt"].is_string());
    agent
        .finish_heartbeat_run(&run, &json!({ "status": "failed" }))
        .await
        .expect_error(409, "not_running");
    agent
        .claim_heartbeat_run(&run)
        .await
        .expect_error(409, "not_queued");

    let queued = agent.my_heartbeat_runs("status=queued").await.expect(200);
    assert_eq!(
        queued.body["heartbeatRuns"].as_array().map(Vec::len),
        Some(0)
    );
    let done = agent
        .my_heartbeat_runs("status=succeeded")
        .await
        .expect(200);
    assert_eq!(done.body["heartbeatRuns"][0]["id"], run.as_str());
}

#[tokio::test]
async fn only_the_owning_agent_may_claim_or_finish() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let (company, _, key, run) = setup(&app).await;
    let (_, other_key) = app.seed_agent(&company, "Bob").await;
    let other = app.caller(Some(&other_key));
    other
        .claim_heartbeat_run(&run)
        .await
        .expect_error(403, "forbidden");
    app.board()
        .claim_heartbeat_run(&run)
        .await
        .expect_error(403, "forbidden");
    app.caller(Some(&key))
        .claim_heartbeat_run(&run)
        .await
        .expect(200);
    other
        .finish_heartbeat_run(&run, &json!({ "status": "failed" }))
        .await
        .expect_error(403, "forbidden");
    let missing = uuid::Uuid::now_v7().to_string();
    app.caller(Some(&key))
        .claim_heartbeat_run(&missing)
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn finish_bodies_are_validated() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let (_, _, key, run) = setup(&app).await;
    let agent = app.caller(Some(&key));
    agent.claim_heartbeat_run(&run).await.expect(200);
    agent
        .finish_heartbeat_run(&run, &json!({ "status": "timed_out" }))
        .await
        .expect_error(400, "invalid_body");
    let resp = agent
        .finish_heartbeat_run(
            &run,
            &json!({ "status": "failed", "summary": "s".repeat(10_001) }),
        )
        .await
        .expect_error(422, "invalid_field");
    assert_eq!(resp.body["details"]["field"], "summary");
    // The run is still running after the refused attempts.
    agent
        .finish_heartbeat_run(&run, &json!({ "status": "failed" }))
        .await
        .expect(200);
}
