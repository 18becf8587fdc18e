//! Strict input: malformed bodies and query strings are 400, out-of-range values 422 naming the
//! field, wrong content types 415, oversized bodies 413, and always the one error shape.

use nexus_tests::TestApp;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn malformed_bodies_are_400_with_the_error_shape() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let board = app.board();
    let unknown = board
        .create_company(&json!({ "name": "Acme", "colour": "blue" }))
        .await;
    let unknown = unknown.expect_error(400, "invalid_body");
    assert!(
        unknown.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("colour")),
        "{}",
        unknown.text
    );
    board
        .create_company(&json!({}))
        .await
        .expect_error(400, "invalid_body");
    board
        .create_company(&json!({ "name": 7 }))
        .await
        .expect_error(400, "invalid_body");
    board
        .create_company(&json!(["Acme"]))
        .await
        .expect_error(400, "invalid_body");
    let broken = board
        .send_raw(
            Method::POST,
            "/api/companies",
            Some("application/json"),
            b"{\"name\": ".to_vec(),
        )
        .await;
    broken.expect_error(400, "malformed_json");
    // Nothing was created by any of them.
    let companies = board.list_companies().await.expect(200);
    assert_eq!(
        companies.body["companies"].as_array().map(Vec::len),
        Some(0)
    );
}

#[tokio::test]
async fn values_outside_an_enum_are_400() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let (agent, _) = app.seed_agent(&company, "Ada").await;
    app.board()
        .create_issue(&company, &json!({ "title": "x", "priority": "urgent" }))
        .await
        .expect_error(400, "invalid_body");
    app.board()
        .update_agent(&agent, &json!({ "status": "sleeping" }))
        .await
        .expect_error(400, "invalid_body");
    app.board()
        .create_agent(
            &company,
            &json!({ "name": "x", "wakeup": { "kind": "carrier-pigeon" } }),
        )
        .await
        .expect_error(400, "invalid_body");
    app.board()
        .create_agent(
            &company,
            &json!({ "name": "x", "wakeup": { "kind": "http" } }),
        )
        .await
        .expect_error(400, "invalid_body");
    app.board()
        .create_agent(
            &company,
            &json!({ "name": "x", "wakeup": { "kind": "http", "url": "http://a/", "extra": 1 } }),
        )
        .await
        .expect_error(400, "invalid_body");
}

#[tokio::test]
async fn values_out_of_range_are_422_naming_the_field() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let long = "x".repeat(201);
    let cases = [
        (
            app.board().create_company(&json!({ "name": long })).await,
            "name",
        ),
        (
            app.board().create_company(&json!({ "name": "  " })).await,
            "name",
        ),
        (
            app.board()
                .create_project(&company, &json!({ "name": long }))
                .await,
            "name",
        ),
        (
            app.board()
                .create_goal(&company, &json!({ "title": "" }))
                .await,
            "title",
        ),
        (
            app.board()
                .create_issue(&company, &json!({ "title": long }))
                .await,
            "title",
        ),
        (
            app.board()
                .create_issue(
                    &company,
                    &json!({ "title": "ok", "description": "d".repeat(10_001) }),
                )
                .await,
            "description",
        ),
        (
            app.board()
                .create_agent(
                    &company,
                    &json!({ "name": "x", "wakeup": { "kind": "http", "url": "ftp://x/y" } }),
                )
                .await,
            "wakeup.url",
        ),
    ];
    for (resp, field) in cases {
        let resp = resp.expect_error(422, "invalid_field");
        assert_eq!(resp.body["details"]["field"], field, "{}", resp.text);
        assert!(
            resp.body["error"]
                .as_str()
                .is_some_and(|e| e.starts_with(field)),
            "{}",
            resp.text
        );
    }
    // Exactly at the limit is fine.
    app.board()
        .create_issue(&company, &json!({ "title": "é".repeat(200) }))
        .await
        .expect(201);
}

#[tokio::test]
async fn references_outside_the_company_are_422_naming_the_field() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("A").await;
    let other = app.seed_company("B").await;
    let other_project = app.seed_project(&other).await;
    let (other_agent, _) = app.seed_agent(&other, "b").await;
    let missing = uuid::Uuid::now_v7().to_string();
    let cases = [
        (
            json!({ "title": "x", "projectId": other_project }),
            "projectId",
        ),
        (json!({ "title": "x", "goalId": missing }), "goalId"),
        (
            json!({ "title": "x", "parentIssueId": missing }),
            "parentIssueId",
        ),
        (
            json!({ "title": "x", "assigneeAgentId": other_agent }),
            "assigneeAgentId",
        ),
    ];
    for (body, field) in cases {
        let resp = app
            .board()
            .create_issue(&company, &body)
            .await
            .expect_error(422, "invalid_reference");
        assert_eq!(resp.body["details"]["field"], field, "{}", resp.text);
    }
    let issues = app.board().list_issues(&company, "").await.expect(200);
    assert_eq!(issues.body["issues"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn content_type_and_size_are_checked() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let board = app.board();
    board
        .send_raw(
            Method::POST,
            "/api/companies",
            Some("text/plain"),
            b"{\"name\":\"Acme\"}".to_vec(),
        )
        .await
        .expect_error(415, "unsupported_media_type");
    board
        .send_raw(
            Method::POST,
            "/api/companies",
            None,
            b"{\"name\":\"Acme\"}".to_vec(),
        )
        .await
        .expect_error(415, "unsupported_media_type");
    let mut huge = b"{\"name\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', nexus_api::MAX_BODY_BYTES + 1));
    huge.extend(b"\"}");
    board
        .send_raw(
            Method::POST,
            "/api/companies",
            Some("application/json"),
            huge,
        )
        .await
        .expect_error(413, "payload_too_large");
    board
        .send_raw(
            Method::POST,
            "/api/companies",
            Some("application/json; charset=utf-8"),
            b"{\"name\":\"Acme\"}".to_vec(),
        )
        .await
        .expect(201);
}

#[tokio::test]
async fn query_and_path_parameters_are_strict() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let company = app.seed_company("Acme").await;
    let board = app.board();
    board
        .activity(&company, "limit=abc")
        .await
        .expect_error(400, "invalid_query");
    board
        .activity(&company, "limit=0")
        .await
        .expect_error(422, "invalid_field");
    board.activity(&company, "limit=100000").await.expect(200);
    board
        .activity(&company, "colour=blue")
        .await
        .expect_error(400, "invalid_query");
    board
        .list_issues(&company, "status=open")
        .await
        .expect_error(400, "invalid_query");
    board
        .list_issues(&company, "limit=-5")
        .await
        .expect_error(422, "invalid_field");
    board
        .list_agents("not-a-uuid")
        .await
        .expect_error(400, "invalid_path");
    board
        .get_issue("42")
        .await
        .expect_error(400, "invalid_path");
    board
        .send(Method::GET, "/api/nothing-here", None)
        .await
        .expect_error(404, "not_found");
    board
        .send(Method::PUT, "/api/companies", None)
        .await
        .expect_error(405, "method_not_allowed");
}
