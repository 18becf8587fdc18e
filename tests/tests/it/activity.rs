//! Every mutation leaves an activity entry with its actor, newest first.

use nexus_tests::{TestApp, str_at};
use serde_json::json;

#[tokio::test]
async fn mutations_are_logged_with_their_actor_newest_first() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let (agent, key) = app.seed_agent(&company, "Ada").await;
    app.seed_project(&company).await;
    app.board()
        .create_goal(&company, &json!({ "title": "Grow" }))
        .await
        .expect(201);
    let issue = app
        .caller(Some(&key))
        .create_issue(
            &company,
            &json!({ "title": "Mine", "assigneeAgentId": agent }),
        )
        .await
        .expect(201)
        .id();
    app.caller(Some(&key))
        .update_issue(&issue, &json!({ "status": "in_progress" }))
        .await
        .expect(200);
    let run = app
        .caller(Some(&key))
        .my_heartbeat_runs("")
        .await
        .expect(200);
    let run = str_at(&run.body, "/heartbeatRuns/0/id");
    app.caller(Some(&key))
        .claim_heartbeat_run(&run)
        .await
        .expect(200);
    app.caller(Some(&key))
        .finish_heartbeat_run(&run, &json!({ "status": "succeeded" }))
        .await
        .expect(200);
    let new_key = app.board().create_agent_key(&agent).await.expect(201).id();
    app.board()
        .revoke_agent_key(&agent, &new_key)
        .await
        .expect(204);
    app.board()
        .update_agent(&agent, &json!({ "name": "Ada II" }))
        .await
        .expect(200);

    let log = app
        .caller(Some(&key))
        .activity(&company, "")
        .await
        .expect(200);
    let entries = log.body["activity"].as_array().expect("activity");
    let actions: Vec<String> = entries.iter().map(|e| str_at(e, "/action")).collect();
    assert_eq!(
        actions,
        [
            "agent.updated",
            "agent_key.revoked",
            "agent_key.created",
            "heartbeat_run.finished",
            "heartbeat_run.claimed",
            "issue.status_changed",
            "issue.created",
            "goal.created",
            "project.created",
            "agent.created",
            "company.created",
        ]
    );
    let by_agent = entries
        .iter()
        .find(|e| e["action"] == "issue.created")
        .expect("issue.created");
    assert_eq!(by_agent["actorType"], "agent");
    assert_eq!(by_agent["actorId"], agent.as_str());
    assert_eq!(by_agent["entityType"], "issue");
    assert_eq!(by_agent["entityId"], issue.as_str());
    let by_board = &entries[0];
    assert_eq!(by_board["actorType"], "board");
    assert!(by_board["actorId"].is_string());

    let limited = app.board().activity(&company, "limit=3").await.expect(200);
    assert_eq!(limited.body["activity"].as_array().map(Vec::len), Some(3));
    assert_eq!(limited.body["activity"][0]["action"], "agent.updated");
}
