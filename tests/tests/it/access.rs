//! Access rules of the supporting resources: another company's rows are 404, board-only
//! operations are 403 for agents, and what agents may read they can read.

use nexus_tests::{Caller, Resp, TestApp, str_at};
use reqwest::Method;
use serde_json::json;

struct World {
    app: TestApp,
    company_a: String,
    company_b: String,
    agent_a: String,
    key_a: String,
    agent_b: String,
    issue_b: String,
    heartbeat_b: String,
}

async fn world() -> World {
    let app = TestApp::spawn().await;
    let company_a = app.seed_company("A").await;
    let company_b = app.seed_company("B").await;
    let (agent_a, key_a) = app.seed_agent(&company_a, "a").await;
    let (agent_b, _) = app.seed_agent(&company_b, "b").await;
    let issue = app
        .board()
        .create_issue(
            &company_b,
            &json!({ "title": "B's work", "assigneeAgentId": agent_b }),
        )
        .await
        .expect(201);
    let issue_b = issue.id();
    let heartbeat_b: String =
        sqlx::query_scalar("SELECT id::text FROM heartbeat_runs WHERE issue_id = $1::uuid")
            .bind(&issue_b)
            .fetch_one(&app.db.pool)
            .await
            .expect("a heartbeat run for the assigned issue");
    World {
        app,
        company_a,
        company_b,
        agent_a,
        key_a,
        agent_b,
        issue_b,
        heartbeat_b,
    }
}

async fn call(
    caller: &Caller<'_>,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Resp {
    caller.send(method, path, body.as_ref()).await
}

#[tokio::test]
async fn an_agent_gets_404_for_everything_in_another_company() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let w = world().await;
    let agent = w.app.caller(Some(&w.key_a));
    let b = &w.company_b;
    let cases: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, format!("/api/companies/{b}/agents"), None),
        (
            Method::POST,
            format!("/api/companies/{b}/agents"),
            Some(json!({ "name": "x" })),
        ),
        (Method::GET, format!("/api/companies/{b}/projects"), None),
        (
            Method::POST,
            format!("/api/companies/{b}/projects"),
            Some(json!({ "name": "x" })),
        ),
        (Method::GET, format!("/api/companies/{b}/goals"), None),
        (
            Method::POST,
            format!("/api/companies/{b}/goals"),
            Some(json!({ "title": "x" })),
        ),
        (Method::GET, format!("/api/companies/{b}/issues"), None),
        (
            Method::POST,
            format!("/api/companies/{b}/issues"),
            Some(json!({ "title": "x" })),
        ),
        (Method::GET, format!("/api/companies/{b}/activity"), None),
        (Method::GET, format!("/api/issues/{}", w.issue_b), None),
        (
            Method::PATCH,
            format!("/api/issues/{}", w.issue_b),
            Some(json!({ "status": "done" })),
        ),
        (
            Method::PATCH,
            format!("/api/agents/{}", w.agent_b),
            Some(json!({ "name": "x" })),
        ),
        (
            Method::POST,
            format!("/api/agents/{}/keys", w.agent_b),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/agents/{}/keys/{}", w.agent_b, uuid::Uuid::now_v7()),
            None,
        ),
        (
            Method::POST,
            format!("/api/heartbeat-runs/{}/claim", w.heartbeat_b),
            None,
        ),
        (
            Method::POST,
            format!("/api/heartbeat-runs/{}/finish", w.heartbeat_b),
            Some(json!({ "status": "succeeded" })),
        ),
    ];
    for (method, path, body) in cases {
        let resp = call(&agent, method.clone(), &path, body).await;
        assert_eq!(resp.status, 404, "{method} {path}: {}", resp.text);
        assert_eq!(resp.body["code"], "not_found", "{method} {path}");
    }
    // Nothing in company B changed.
    let issue = w.app.board().get_issue(&w.issue_b).await.expect(200);
    assert_eq!(issue.body["status"], "todo");
    // And the agent's company list shows only its own.
    let companies = agent.list_companies().await.expect(200);
    let ids: Vec<&str> = companies.body["companies"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, vec![w.company_a.as_str()]);
}

#[tokio::test]
async fn board_only_operations_are_403_for_an_agent_of_the_company() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let w = world().await;
    let agent = w.app.caller(Some(&w.key_a));
    let a = &w.company_a;
    let cases: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (
            Method::POST,
            "/api/companies".to_owned(),
            Some(json!({ "name": "x" })),
        ),
        (
            Method::POST,
            format!("/api/companies/{a}/agents"),
            Some(json!({ "name": "x" })),
        ),
        (
            Method::POST,
            format!("/api/companies/{a}/projects"),
            Some(json!({ "name": "x" })),
        ),
        (
            Method::POST,
            format!("/api/companies/{a}/goals"),
            Some(json!({ "title": "x" })),
        ),
        (
            Method::PATCH,
            format!("/api/agents/{}", w.agent_a),
            Some(json!({ "name": "renamed" })),
        ),
        (
            Method::POST,
            format!("/api/agents/{}/keys", w.agent_a),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/agents/{}/keys/{}", w.agent_a, uuid::Uuid::now_v7()),
            None,
        ),
    ];
    for (method, path, body) in cases {
        let resp = call(&agent, method.clone(), &path, body).await;
        assert_eq!(resp.status, 403, "{method} {path}: {}", resp.text);
        assert_eq!(resp.body["code"], "forbidden");
        assert!(
            resp.body["error"]
                .as_str()
                .is_some_and(|e| e.contains("board")),
            "{}",
            resp.text
        );
    }
    let agents = w.app.board().list_agents(a).await.expect(200);
    assert_eq!(
        agents.body["agents"][0]["name"], "a",
        "the agent was not renamed"
    );
    // The board has no "me".
    w.app.board().me().await.expect_error(403, "forbidden");
}

#[tokio::test]
async fn agents_read_what_belongs_to_their_company() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let w = world().await;
    let agent = w.app.caller(Some(&w.key_a));
    let a = &w.company_a;
    w.app.seed_project(a).await;
    w.app
        .board()
        .create_goal(a, &json!({ "title": "Grow" }))
        .await
        .expect(201);
    assert_eq!(
        agent.list_agents(a).await.expect(200).body["agents"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        agent.list_projects(a).await.expect(200).body["projects"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        agent.list_goals(a).await.expect(200).body["goals"][0]["title"],
        "Grow"
    );
    agent.activity(a, "").await.expect(200);
    let issue = agent
        .create_issue(a, &json!({ "title": "Mine" }))
        .await
        .expect(201);
    agent.get_issue(&issue.id()).await.expect(200);
    let me = agent.me().await.expect(200);
    assert_eq!(str_at(&me.body, "/id"), w.agent_a);
}

#[tokio::test]
async fn unknown_companies_are_404_for_the_board() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let missing = uuid::Uuid::now_v7().to_string();
    app.board()
        .list_agents(&missing)
        .await
        .expect_error(404, "not_found");
    app.board()
        .create_project(&missing, &json!({ "name": "x" }))
        .await
        .expect_error(404, "not_found");
    app.board()
        .create_agent(&missing, &json!({ "name": "x" }))
        .await
        .expect_error(404, "not_found");
    app.board()
        .create_issue(&missing, &json!({ "title": "x" }))
        .await
        .expect_error(404, "not_found");
    app.board()
        .activity(&missing, "")
        .await
        .expect_error(404, "not_found");
    app.board()
        .get_issue(&missing)
        .await
        .expect_error(404, "not_found");
}
