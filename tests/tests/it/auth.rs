//! Authentication: 401 for every kind of bad credential, and tokens stored only as keyed
//! hashes, never in plaintext, never logged.

use nexus_tests::TestApp;
use serde_json::json;

use crate::logs;

#[tokio::test]
async fn missing_unknown_and_malformed_tokens_are_401_with_one_body() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let no_token = app
        .caller(None)
        .list_companies()
        .await
        .expect_error(401, "unauthorized");
    let unknown = app
        .caller(Some("nxb_not-a-real-token"))
        .list_companies()
        .await
        .expect_error(401, "unauthorized");
    let unknown_agent = app
        .caller(Some("nxa_not-a-real-key"))
        .list_companies()
        .await
        .expect_error(401, "unauthorized");
    assert_eq!(no_token.body, unknown.body);
    assert_eq!(no_token.body, unknown_agent.body);
    let basic = app
        .caller(None)
        .send_raw(reqwest::Method::GET, "/api/companies", None, Vec::new())
        .await;
    assert_eq!(basic.status, 401);
}

#[tokio::test]
async fn a_revoked_key_is_401_while_other_keys_keep_working() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let (agent, first_key) = app.seed_agent(&company, "Ada").await;
    app.caller(Some(&first_key)).me().await.expect(200);

    let second = app.board().create_agent_key(&agent).await.expect(201);
    let second_key = second.body["apiKey"].as_str().expect("apiKey").to_owned();
    let second_id = second.id();
    app.caller(Some(&second_key)).me().await.expect(200);
    app.caller(Some(&first_key)).me().await.expect(200);

    app.board()
        .revoke_agent_key(&agent, &second_id)
        .await
        .expect(204);
    app.caller(Some(&second_key))
        .me()
        .await
        .expect_error(401, "unauthorized");
    app.caller(Some(&first_key)).me().await.expect(200);
    // Revoking again changes nothing; an unknown key id is 404.
    app.board()
        .revoke_agent_key(&agent, &second_id)
        .await
        .expect(204);
    app.board()
        .revoke_agent_key(&agent, &uuid::Uuid::now_v7().to_string())
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn a_terminated_agents_keys_stop_working() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let (agent, key) = app.seed_agent(&company, "Ada").await;
    app.board()
        .update_agent(&agent, &json!({ "status": "terminated" }))
        .await
        .expect(200);
    app.caller(Some(&key))
        .me()
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn the_bootstrap_token_is_accepted_from_the_first_start() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let token = "bootstrap-token-for-tests-0123456789";
    let app = TestApp::spawn_with(nexus_tests::Options {
        env: vec![("NEXUS_BOOTSTRAP_BOARD_TOKEN", token.to_owned())],
        ..Default::default()
    })
    .await;
    app.caller(Some(token)).list_companies().await.expect(200);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM board_tokens WHERE label = 'bootstrap'")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn tokens_and_secrets_are_never_stored_or_logged_in_plaintext() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    logs::captured();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let created = app
        .board()
        .create_agent(&company, &json!({ "name": "Hooked", "wakeup": { "kind": "http", "url": "http://127.0.0.1:9/wake" } }))
        .await
        .expect(201);
    let api_key = created.body["apiKey"].as_str().expect("apiKey").to_owned();
    let wakeup_secret = created.body["wakeupSecret"]
        .as_str()
        .expect("wakeupSecret")
        .to_owned();
    assert!(wakeup_secret.starts_with("whsec_"));
    // Use every credential once so that request handling has had a chance to log them.
    app.caller(Some(&api_key)).me().await.expect(200);
    app.board().list_companies().await.expect(200);

    // Dump every table as text and look for the plaintexts.
    let dump: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(t)::text FROM (
             SELECT 'board_tokens' AS tbl, to_jsonb(b) AS r FROM board_tokens b
             UNION ALL SELECT 'agent_keys', to_jsonb(k) FROM agent_keys k
             UNION ALL SELECT 'agents', to_jsonb(a) FROM agents a
             UNION ALL SELECT 'activity_log', to_jsonb(l) FROM activity_log l) t",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("dump");
    let dump = dump.join("\n");
    assert!(
        dump.contains("board_tokens") && dump.contains("agent_keys"),
        "dump is empty"
    );
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for secret in [&app.board_token, &api_key, &wakeup_secret] {
        assert!(!dump.contains(secret.as_str()), "plaintext secret stored");
        assert!(
            !dump.contains(&hex(secret)),
            "plaintext secret stored as bytes"
        );
    }
    let log = logs::captured();
    assert!(
        log.contains("http_request"),
        "request logging was not captured"
    );
    for secret in [&app.board_token, &api_key, &wakeup_secret] {
        assert!(!log.contains(secret.as_str()), "secret logged");
    }
}

#[tokio::test]
async fn a_revoked_board_token_is_refused_by_every_replica_at_once() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let replica = app.spawn_replica().await;
    let token = app
        .store
        .create_board_token("to revoke")
        .await
        .expect("token");
    let http = nexus_tests::http_client();
    let status = |base: String| {
        let (http, token) = (http.clone(), token.token.clone());
        async move {
            http.get(format!("{base}/api/companies"))
                .bearer_auth(token)
                .send()
                .await
                .expect("answer")
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(app.base.clone()).await, 200);
    assert_eq!(status(replica.clone()).await, 200);
    assert!(
        app.store
            .revoke_board_token(token.id)
            .await
            .expect("revoke")
    );
    assert_eq!(
        status(replica.clone()).await,
        401,
        "the other replica refuses it at once"
    );
    assert_eq!(status(app.base.clone()).await, 401);
    let listed = app.store.board_tokens().await.expect("list");
    let entry = listed.iter().find(|t| t.id == token.id).expect("listed");
    assert!(entry.revoked_at.is_some() && entry.last_used_at.is_some());
}
