//! Agents: creation with credentials shown once, updates, the final `terminated` state, keys.

use nexus_tests::{TestApp, str_at};
use serde_json::json;

#[tokio::test]
async fn creating_agents_returns_credentials_once() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let poll = app
        .board()
        .create_agent(&company, &json!({ "name": "Poller" }))
        .await
        .expect(201);
    assert_eq!(poll.body["agent"]["wakeup"], json!({ "kind": "poll" }));
    assert_eq!(poll.body["agent"]["status"], "active");
    assert_eq!(poll.body["agent"]["companyId"], company.as_str());
    assert!(poll.body["wakeupSecret"].is_null());
    assert!(str_at(&poll.body, "/apiKey").starts_with("nxa_"));

    let url = "https://agents.example.com/wake";
    let http = app
        .board()
        .create_agent(
            &company,
            &json!({ "name": "Hooked", "wakeup": { "kind": "http", "url": url } }),
        )
        .await
        .expect(201);
    assert_eq!(
        http.body["agent"]["wakeup"],
        json!({ "kind": "http", "url": url })
    );
    assert!(str_at(&http.body, "/wakeupSecret").starts_with("whsec_"));

    let list = app.board().list_agents(&company).await.expect(200);
    let agents = list.body["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 2);
    for agent in agents {
        let keys: Vec<&String> = agent.as_object().expect("object").keys().collect();
        assert_eq!(
            keys.len(),
            6,
            "agent shape {{id, companyId, name, status, wakeup, createdAt}}: {agent}"
        );
        assert!(agent.get("apiKey").is_none() && agent.get("wakeupSecret").is_none());
    }
}

#[tokio::test]
async fn agents_update_and_terminated_is_final() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let (agent, _) = app.seed_agent(&company, "Ada").await;
    let renamed = app
        .board()
        .update_agent(&agent, &json!({ "name": "Ada II", "status": "paused" }))
        .await
        .expect(200);
    assert_eq!(renamed.body["name"], "Ada II");
    assert_eq!(renamed.body["status"], "paused");
    assert!(renamed.body.get("wakeupSecret").is_none());

    // Switching to HTTP wake-ups creates the secret and shows it once; changing the URL keeps it.
    let to_http = app
        .board()
        .update_agent(
            &agent,
            &json!({ "wakeup": { "kind": "http", "url": "http://127.0.0.1:1/a" } }),
        )
        .await
        .expect(200);
    assert!(str_at(&to_http.body, "/wakeupSecret").starts_with("whsec_"));
    let moved = app
        .board()
        .update_agent(
            &agent,
            &json!({ "wakeup": { "kind": "http", "url": "http://127.0.0.1:1/b" } }),
        )
        .await
        .expect(200);
    assert!(moved.body.get("wakeupSecret").is_none());
    assert_eq!(moved.body["wakeup"]["url"], "http://127.0.0.1:1/b");

    app.board()
        .update_agent(&agent, &json!({ "status": "terminated" }))
        .await
        .expect(200);
    for change in [
        json!({ "status": "active" }),
        json!({ "name": "back" }),
        json!({}),
    ] {
        app.board()
            .update_agent(&agent, &change)
            .await
            .expect_error(409, "agent_terminated");
    }
    app.board()
        .create_agent_key(&agent)
        .await
        .expect_error(409, "agent_terminated");
    let list = app.board().list_agents(&company).await.expect(200);
    assert_eq!(list.body["agents"][0]["status"], "terminated");
    assert_eq!(list.body["agents"][0]["name"], "Ada II");
}

#[tokio::test]
async fn agents_listing_agents_see_wakeup_urls_without_their_query_string() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let url = "https://agents.example.com/wake?token=s3cret#frag";
    app.board()
        .create_agent(
            &company,
            &json!({ "name": "Hooked", "wakeup": { "kind": "http", "url": url } }),
        )
        .await
        .expect(201);
    let (_, key) = app.seed_agent(&company, "Reader").await;
    let seen = |body: &serde_json::Value| {
        body["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .find(|a| a["name"] == "Hooked")
            .map(|a| a["wakeup"]["url"].clone())
            .expect("the hooked agent")
    };
    let as_agent = app
        .caller(Some(&key))
        .list_agents(&company)
        .await
        .expect(200)
        .body;
    assert_eq!(seen(&as_agent), "https://agents.example.com/wake");
    let as_board = app.board().list_agents(&company).await.expect(200).body;
    assert_eq!(seen(&as_board), url, "the board sees the whole URL");
}
