//! Manual runs through the API: acceptance, idempotency, validation, history.

use nexus_tests::{TestApp, str_at};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn a_manual_run_is_accepted_with_its_dispatch_job_in_one_transaction() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = app
        .board()
        .send_with_headers(
            Method::POST,
            &format!("/api/routines/{routine}/run"),
            &json!({ "payload": { "topic": "x" } }),
            &[("traceparent", traceparent)],
        )
        .await
        .expect(202);
    let run = resp.body;
    assert!(resp.headers.get("idempotent-replayed").is_none());
    assert_eq!(run["status"], "received");
    assert_eq!(run["source"], "manual");
    assert_eq!(run["routineId"], routine.as_str());
    assert_eq!(run["payload"], json!({ "topic": "x" }));
    assert!(
        run["trigger"].is_null() && run["triggerId"].is_null() && run["scheduledFor"].is_null()
    );
    assert_eq!(run["catchUp"], false);
    let run_id = str_at(&run, "/id");
    let jobs: Vec<(String, serde_json::Value, Option<serde_json::Value>)> =
        sqlx::query_as("SELECT kind, payload, trace_context FROM jobs WHERE state = 'queued'")
            .fetch_all(&app.db.pool)
            .await
            .expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].0, "dispatch_run");
    assert_eq!(jobs[0].1, json!({ "runId": run_id }));
    assert_eq!(
        jobs[0].2.as_ref().map(|t| t["traceparent"].clone()),
        Some(json!(traceparent))
    );
    assert_eq!(app.board().get_run(&run_id).await.expect(200).body, run);
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_original_run() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let body = json!({ "idempotencyKey": "deploy-42", "payload": { "sha": "abc" } });
    let first = app.board().run_routine(&routine, &body).await.expect(202);
    let again = app.board().run_routine(&routine, &body).await.expect(202);
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(again.body["id"], first.body["id"]);
    // After dispatch the replay shows the current status.
    app.drain().await;
    let later = app.board().run_routine(&routine, &body).await.expect(202);
    assert_eq!(later.body["id"], first.body["id"]);
    assert_eq!(later.body["status"], "issue_created");
    app.board()
        .run_routine(
            &routine,
            &json!({ "idempotencyKey": "deploy-42", "payload": { "sha": "def" } }),
        )
        .await
        .expect_error(422, "idempotency_key_reused");
    // Keys are per routine.
    let other = app.seed_routine(&team, &json!({})).await;
    let elsewhere = app.board().run_routine(&other, &body).await.expect(202);
    assert_ne!(elsewhere.body["id"], first.body["id"]);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM routine_runs WHERE routine_id = $1::uuid",
            &routine
        )
        .await,
        1
    );

    // Concurrent requests with one key create one run.
    let mut tasks = tokio::task::JoinSet::new();
    let base = app.base.clone();
    let token = app.board_token.clone();
    for _ in 0..10 {
        let (base, token, routine) = (base.clone(), token.clone(), routine.clone());
        tasks.spawn(async move {
            nexus_tests::http_client()
                .post(format!("{base}/api/routines/{routine}/run"))
                .bearer_auth(token)
                .json(&json!({ "idempotencyKey": "burst" }))
                .send()
                .await
                .expect("answer")
                .json::<serde_json::Value>()
                .await
                .expect("json")["id"]
                .clone()
        });
    }
    let ids: std::collections::HashSet<String> = tasks
        .join_all()
        .await
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM routine_runs WHERE routine_id = $1::uuid",
            &routine
        )
        .await,
        2
    );
}

#[tokio::test]
async fn manual_runs_are_validated() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let schedule = app
        .seed_trigger(
            &routine,
            &json!({ "kind": "schedule", "cronExpression": "0 9 * * *" }),
        )
        .await;
    let api = app
        .seed_trigger(&routine, &json!({ "kind": "api", "label": "ci" }))
        .await;
    let disabled = app
        .seed_trigger(&routine, &json!({ "kind": "api", "enabled": false }))
        .await;
    let board = app.board();
    let resp = board
        .run_routine(&routine, &json!({ "idempotencyKey": "k".repeat(256) }))
        .await
        .expect_error(422, "invalid_field");
    assert_eq!(resp.body["details"]["field"], "idempotencyKey");
    board
        .run_routine(&routine, &json!({ "idempotencyKey": "" }))
        .await
        .expect_error(422, "invalid_field");
    let resp = board
        .run_routine(
            &routine,
            &json!({ "triggerId": str_at(&schedule, "/trigger/id") }),
        )
        .await
        .expect_error(422, "invalid_reference");
    assert_eq!(resp.body["details"]["field"], "triggerId");
    board
        .run_routine(&routine, &json!({ "triggerId": uuid::Uuid::now_v7() }))
        .await
        .expect_error(422, "invalid_reference");
    board
        .run_routine(
            &routine,
            &json!({ "triggerId": str_at(&disabled, "/trigger/id") }),
        )
        .await
        .expect_error(409, "trigger_disabled");
    for body in [
        json!({ "payload": [1] }),
        json!({ "payload": "x" }),
        json!({ "source": "schedule" }),
        json!({ "extra": 1 }),
    ] {
        board
            .run_routine(&routine, &body)
            .await
            .expect_error(400, "invalid_body");
    }
    board
        .run_routine(&routine, &json!({ "idempotencyKey": "k".repeat(255) }))
        .await
        .expect(202);
    let via_api = board
        .run_routine(
            &routine,
            &json!({ "source": "api", "triggerId": str_at(&api, "/trigger/id") }),
        )
        .await
        .expect(202)
        .body;
    assert_eq!(via_api["source"], "api");
    assert_eq!(
        via_api["trigger"],
        json!({ "id": str_at(&api, "/trigger/id"), "kind": "api", "label": "ci" })
    );

    let (_, other_key) = app.seed_agent(&team.company, "Bob").await;
    app.caller(Some(&other_key))
        .run_routine(&routine, &json!({}))
        .await
        .expect_error(403, "forbidden");
    app.caller(Some(&team.key))
        .run_routine(&routine, &json!({}))
        .await
        .expect(202);
    board
        .update_routine(&routine, &json!({ "status": "paused" }))
        .await
        .expect(200);
    board.run_routine(&routine, &json!({})).await.expect(202);
    board
        .update_routine(&routine, &json!({ "status": "archived" }))
        .await
        .expect(200);
    board
        .run_routine(&routine, &json!({}))
        .await
        .expect_error(409, "routine_archived");
}

#[tokio::test]
async fn run_history_is_newest_first_with_a_cursor() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            app.board()
                .run_routine(&routine, &json!({ "payload": { "n": n } }))
                .await
                .expect(202)
                .id(),
        );
    }
    let all = app
        .caller(Some(&team.key))
        .list_runs(&routine, "")
        .await
        .expect(200)
        .body;
    let listed: Vec<String> = all["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| str_at(r, "/id"))
        .collect();
    assert_eq!(listed, ids.iter().rev().cloned().collect::<Vec<_>>());
    assert!(all["nextBefore"].is_null());
    let page = app
        .board()
        .list_runs(&routine, "limit=2")
        .await
        .expect(200)
        .body;
    assert_eq!(page["nextBefore"], ids[3].as_str());
    let next = app
        .board()
        .list_runs(&routine, &format!("limit=2&before={}", ids[3]))
        .await
        .expect(200)
        .body;
    assert_eq!(next["runs"][0]["id"], ids[2].as_str());
    assert_eq!(
        app.board()
            .list_runs(&routine, "limit=1000")
            .await
            .expect(200)
            .body["runs"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );
    app.board()
        .list_runs(&routine, "limit=0")
        .await
        .expect_error(422, "invalid_field");
    app.board()
        .list_runs(&routine, "limit=ten")
        .await
        .expect_error(400, "invalid_query");
    let other_company = app.seed_company("Other").await;
    let (_, foreign_key) = app.seed_agent(&other_company, "Eve").await;
    app.caller(Some(&foreign_key))
        .list_runs(&routine, "")
        .await
        .expect_error(404, "not_found");
    app.caller(Some(&foreign_key))
        .get_run(&ids[0])
        .await
        .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_idempotency_key_get_one_run() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let body = json!({ "idempotencyKey": "deploy-43", "payload": { "sha": "abc" } });
    let board = app.board();
    // On Postgres the race is made certain: a transaction holds the key with a row it never
    // commits, so the requests pass their lookup and wait together on the key; rolled back
    // once several wait, they race for it.
    let held = if nexus_tests::backend_is_postgres() {
        let mut tx = app.db.pool.begin().await.expect("begin");
        sqlx::query(
            "INSERT INTO routine_runs (id, company_id, routine_id, source, status, triggered_at,
                                       payload, updated_at, idempotency_key)
             VALUES (gen_random_uuid(), $1::uuid, $2::uuid, 'manual', 'received', now(), '{}',
                     now(), 'deploy-43')",
        )
        .bind(&team.company)
        .bind(&routine)
        .execute(&mut *tx)
        .await
        .expect("hold the key");
        Some(tx)
    } else {
        None
    };
    let release = async {
        if let Some(tx) = held {
            app.until_sessions_wait_for_a_lock(4, "requests waiting on the key")
                .await;
            tx.rollback().await.expect("rollback");
        }
    };
    let (answers, ()) = tokio::join!(
        futures_util::future::join_all((0..12).map(|_| board.run_routine(&routine, &body))),
        release
    );
    let ids: std::collections::BTreeSet<String> = answers
        .into_iter()
        .map(|answer| str_at(&answer.expect(202).body, "/id"))
        .collect();
    assert_eq!(ids.len(), 1, "every request answered with the one run");
    let runs = board.list_runs(&routine, "").await.expect(200).body;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1));
}
