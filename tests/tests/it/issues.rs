//! Issues: creation (with the assignee's wake-up), status changes by the assignee agent and by
//! the board, history, listing.

use nexus_tests::{TestApp, str_at};
use serde_json::json;

#[tokio::test]
async fn an_issue_is_created_with_defaults_and_its_assignee_is_woken() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let project = app.seed_project(&company).await;
    let (agent, key) = app.seed_agent(&company, "Ada").await;
    let issue = app
        .board()
        .create_issue(
            &company,
            &json!({ "title": "Rotate logs", "projectId": project, "assigneeAgentId": agent }),
        )
        .await
        .expect(201);
    let body = &issue.body;
    assert_eq!(body["status"], "todo");
    assert_eq!(body["priority"], "medium");
    assert_eq!(body["description"], "");
    assert_eq!(body["projectId"], project.as_str());
    assert!(
        body["routineId"].is_null() && body["originRunId"].is_null() && body["goalId"].is_null()
    );

    let runs = app
        .caller(Some(&key))
        .my_heartbeat_runs("")
        .await
        .expect(200);
    let runs = runs.body["heartbeatRuns"].as_array().expect("list").clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["issueId"], issue.id().as_str());
    assert_eq!(runs[0]["status"], "queued");
    assert_eq!(runs[0]["context"]["source"], "assignment");
    assert_eq!(runs[0]["context"]["title"], "Rotate logs");
    assert!(runs[0]["routineRunId"].is_null());
}

#[tokio::test]
async fn a_terminated_agent_cannot_be_assigned() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let (agent, _) = app.seed_agent(&company, "Ada").await;
    app.board()
        .update_agent(&agent, &json!({ "status": "terminated" }))
        .await
        .expect(200);
    app.board()
        .create_issue(&company, &json!({ "title": "x", "assigneeAgentId": agent }))
        .await
        .expect_error(409, "agent_not_assignable");
}

#[tokio::test]
async fn status_changes_by_the_assignee_and_the_board_are_recorded_in_the_history() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let (agent, key) = app.seed_agent(&company, "Ada").await;
    let (_, other_key) = app.seed_agent(&company, "Bob").await;
    let issue = app
        .board()
        .create_issue(
            &company,
            &json!({ "title": "Ship", "assigneeAgentId": agent }),
        )
        .await
        .expect(201)
        .id();

    let moved = app
        .caller(Some(&key))
        .update_issue(&issue, &json!({ "status": "in_progress" }))
        .await
        .expect(200);
    assert_eq!(moved.body["status"], "in_progress");
    app.caller(Some(&other_key))
        .update_issue(&issue, &json!({ "status": "done" }))
        .await
        .expect_error(403, "forbidden");
    app.board()
        .update_issue(&issue, &json!({ "status": "done" }))
        .await
        .expect(200);
    // Setting the current status again records nothing.
    app.board()
        .update_issue(&issue, &json!({ "status": "done" }))
        .await
        .expect(200);
    app.board()
        .update_issue(&issue, &json!({ "status": "finished" }))
        .await
        .expect_error(400, "invalid_body");

    let full = app
        .caller(Some(&other_key))
        .get_issue(&issue)
        .await
        .expect(200);
    assert_eq!(full.body["status"], "done");
    let events = full.body["events"].as_array().expect("events");
    let summary: Vec<(String, String, serde_json::Value)> = events
        .iter()
        .map(|e| {
            (
                str_at(e, "/type"),
                str_at(e, "/actorType"),
                e["data"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("created".to_owned(), "board".to_owned(), json!({})),
            (
                "status_changed".to_owned(),
                "agent".to_owned(),
                json!({ "from": "todo", "to": "in_progress" })
            ),
            (
                "status_changed".to_owned(),
                "board".to_owned(),
                json!({ "from": "in_progress", "to": "done" })
            ),
        ]
    );
    assert_eq!(events[1]["actorId"], agent.as_str());
}

#[tokio::test]
async fn unassigned_issues_can_only_be_changed_by_the_board() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let (_, key) = app.seed_agent(&company, "Ada").await;
    let issue = app
        .caller(Some(&key))
        .create_issue(&company, &json!({ "title": "Idea" }))
        .await
        .expect(201)
        .id();
    app.caller(Some(&key))
        .update_issue(&issue, &json!({ "status": "blocked" }))
        .await
        .expect_error(403, "forbidden");
    app.board()
        .update_issue(&issue, &json!({ "status": "blocked" }))
        .await
        .expect(200);
}

#[tokio::test]
async fn issues_list_newest_first_with_filters_and_pages() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let (agent, _) = app.seed_agent(&company, "Ada").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let assignee = if n % 2 == 0 {
            json!(agent)
        } else {
            json!(null)
        };
        let body = json!({ "title": format!("issue {n}"), "assigneeAgentId": assignee });
        ids.push(
            app.board()
                .create_issue(&company, &body)
                .await
                .expect(201)
                .id(),
        );
    }
    app.board()
        .update_issue(&ids[4], &json!({ "status": "done" }))
        .await
        .expect(200);

    let all = app.board().list_issues(&company, "").await.expect(200);
    let listed: Vec<String> = all.body["issues"]
        .as_array()
        .expect("list")
        .iter()
        .map(|i| str_at(i, "/id"))
        .collect();
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);
    assert!(all.body["nextBefore"].is_null());

    let mine = app
        .board()
        .list_issues(&company, &format!("assigneeAgentId={agent}"))
        .await
        .expect(200);
    assert_eq!(mine.body["issues"].as_array().map(Vec::len), Some(3));
    let done = app
        .board()
        .list_issues(&company, "status=done")
        .await
        .expect(200);
    assert_eq!(done.body["issues"][0]["id"], ids[4].as_str());
    assert_eq!(done.body["issues"].as_array().map(Vec::len), Some(1));

    let page1 = app
        .board()
        .list_issues(&company, "limit=2")
        .await
        .expect(200);
    let cursor = str_at(&page1.body, "/nextBefore");
    assert_eq!(cursor, ids[3]);
    let page2 = app
        .board()
        .list_issues(&company, &format!("limit=2&before={cursor}"))
        .await
        .expect(200);
    let page2: Vec<String> = page2.body["issues"]
        .as_array()
        .expect("list")
        .iter()
        .map(|i| str_at(i, "/id"))
        .collect();
    assert_eq!(page2, vec![ids[2].clone(), ids[1].clone()]);
}
