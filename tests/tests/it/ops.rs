//! Operational endpoints and the OpenAPI document.

use std::{net::SocketAddr, sync::Arc};

use nexus_shared::{Config, SystemClock, crypto::SecretKey, runtime::Resources};
use nexus_tests::{TestApp, TestDb, redis_url};
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let anyone = app.caller(None);
    assert_eq!(anyone.healthz().await.expect(200).body["status"], "ok");
    assert_eq!(anyone.readyz().await.expect(200).body["status"], "ready");
    app.board().list_companies().await.expect(200);
    let metrics = anyone.metrics().await.expect(200);
    assert!(
        metrics.text.contains(
            "nexus_http_requests_total{method=\"GET\",route=\"/api/companies\",status=\"200\"}"
        ),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains("nexus_http_request_duration_seconds_bucket")
    );
}

#[tokio::test]
async fn queue_and_heartbeat_metrics_are_exported() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &serde_json::json!({})).await;
    app.board()
        .run_routine(&routine, &serde_json::json!({}))
        .await
        .expect(202);
    let worker = app.worker("metrics");
    worker.maintain().await.expect("maintain");
    let before = app.caller(None).metrics().await.text;
    assert!(
        before.contains("nexus_queue_depth{kind=\"dispatch_run\",state=\"queued\"}"),
        "{before}"
    );
    assert!(
        before.contains("nexus_queue_oldest_age_seconds{kind=\"dispatch_run\",state=\"queued\"}")
    );
    app.drain().await;
    let after = app.caller(None).metrics().await.text;
    for name in [
        "nexus_job_claim_seconds",
        "nexus_job_pickup_seconds",
        "nexus_jobs_total",
        "nexus_runs_dispatched_total",
    ] {
        assert!(after.contains(name), "{name} missing");
    }
    assert!(after.contains("nexus_heartbeat_runs_total{status=\"queued\"}"));
}

/// An API (not yet running) configured by `vars`, on port 0; and its base URL.
async fn api_on(vars: &[(&str, String)]) -> (nexus_api::App, String) {
    let config = Config::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("valid configuration");
    let resources = Resources::connect(config, &SecretKey::generate(), Arc::new(SystemClock))
        .await
        .expect("connecting is lazy");
    let app = nexus_api::build_with(resources, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let base = format!("http://127.0.0.1:{}", app.port());
    (app, base)
}

/// Starts an API whose database or Redis is a closed port.
async fn api_with(database_url: &str, redis: &str) -> (String, tokio::task::JoinHandle<()>) {
    let (app, base) = api_on(&[
        ("NEXUS_DATABASE_URL", database_url.to_owned()),
        ("NEXUS_REDIS_URL", redis.to_owned()),
        ("NEXUS_AUTO_MIGRATE", "false".to_owned()),
    ])
    .await;
    let server = tokio::spawn(async move {
        app.run_until_stopped(std::future::pending())
            .await
            .expect("runs");
    });
    (base, server)
}

#[tokio::test]
async fn readiness_fails_while_the_database_or_redis_is_unreachable() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let http = nexus_tests::http_client();

    let (base, server) = api_with("postgres://postgres@127.0.0.1:1/nowhere", &redis_url()).await;
    let resp = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "not_ready");
    assert_eq!(body["details"]["database"], false);
    // Liveness does not depend on the database.
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .expect("answers")
            .status(),
        200
    );
    // A request that needs the database is 503, not a 500 and not a hang.
    let resp = http
        .get(format!("{base}/api/companies"))
        .bearer_auth("nxb_x")
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 503);
    server.abort();

    let (base, server) = api_with(&app.db.url, "redis://127.0.0.1:1").await;
    let resp = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body["details"],
        serde_json::json!({ "database": true, "redis": false, "shuttingDown": false })
    );
    server.abort();
}

#[tokio::test]
async fn readiness_turns_unready_when_shutdown_begins() {
    nexus_tests::needs_servers!();
    let db = nexus_tests::TestDb::create().await;
    let (app, base) = api_on(&[
        ("NEXUS_DATABASE_URL", db.url.clone()),
        ("NEXUS_REDIS_URL", redis_url()),
    ])
    .await;
    let health = app.health();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move { drop(stopped.await) }));
    let http = nexus_tests::http_client();
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .expect("answers")
            .status(),
        200
    );
    stop.send(()).expect("server waits");
    // Poll with a deadline until the shutdown flag is visible, then check the probe says so.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !health.is_shutting_down() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shutdown never began"
        );
        tokio::task::yield_now().await;
    }
    let resp = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("still answering while draining");
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["details"]["shuttingDown"], true);
    server.await.expect("joins").expect("stops cleanly");
}

#[tokio::test]
async fn the_openapi_document_lists_every_implemented_path() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let doc = app.caller(None).openapi().await.expect(200).body;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let expected: &[(&str, &str)] = &[
        ("post", "/api/companies"),
        ("get", "/api/companies"),
        ("post", "/api/companies/{companyId}/agents"),
        ("get", "/api/companies/{companyId}/agents"),
        ("patch", "/api/agents/{agentId}"),
        ("post", "/api/agents/{agentId}/keys"),
        ("delete", "/api/agents/{agentId}/keys/{keyId}"),
        ("post", "/api/companies/{companyId}/projects"),
        ("get", "/api/companies/{companyId}/projects"),
        ("post", "/api/companies/{companyId}/goals"),
        ("get", "/api/companies/{companyId}/goals"),
        ("post", "/api/companies/{companyId}/issues"),
        ("get", "/api/companies/{companyId}/issues"),
        ("get", "/api/issues/{issueId}"),
        ("patch", "/api/issues/{issueId}"),
        ("get", "/api/agents/me"),
        ("get", "/api/agents/me/heartbeat-runs"),
        ("post", "/api/heartbeat-runs/{id}/claim"),
        ("post", "/api/heartbeat-runs/{id}/finish"),
        ("get", "/api/companies/{companyId}/activity"),
        ("post", "/api/companies/{companyId}/routines"),
        ("get", "/api/companies/{companyId}/routines"),
        ("get", "/api/routines/{routineId}"),
        ("patch", "/api/routines/{routineId}"),
        ("get", "/api/routines/{routineId}/upcoming"),
        ("post", "/api/companies/{companyId}/routines/pause"),
        ("post", "/api/companies/{companyId}/routines/resume"),
        ("post", "/api/companies/{companyId}/notification-channels"),
        ("get", "/api/companies/{companyId}/notification-channels"),
        ("patch", "/api/notification-channels/{channelId}"),
        ("delete", "/api/notification-channels/{channelId}"),
        ("post", "/api/notification-channels/{channelId}/test"),
        ("get", "/api/notification-channels/{channelId}/deliveries"),
        ("post", "/api/routines/{routineId}/triggers"),
        ("patch", "/api/routine-triggers/{triggerId}"),
        ("delete", "/api/routine-triggers/{triggerId}"),
        ("post", "/api/routine-triggers/{triggerId}/rotate-secret"),
        ("post", "/api/routines/{routineId}/run"),
        ("post", "/api/routines/{routineId}/backfill"),
        ("get", "/api/routines/{routineId}/runs"),
        ("get", "/api/routine-runs/{runId}"),
        ("post", "/api/routine-triggers/public/{publicId}/fire"),
        ("get", "/api/heartbeat-runs/{id}"),
        ("get", "/api/companies/{companyId}/events"),
        ("get", "/api/schedule-preview"),
        ("get", "/api/system"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/api/openapi.json"),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = 0;
    for (path, item) in paths {
        documented += item
            .as_object()
            .map_or(0, |ops| ops.keys().filter(|k| *k != "parameters").count());
        // Every documented operation is routed: calling it never meets the 404/405 fallbacks.
        for method in item.as_object().expect("path item").keys() {
            let concrete = path
                .replace("{companyId}", &uuid::Uuid::now_v7().to_string())
                .replace("{agentId}", &uuid::Uuid::now_v7().to_string())
                .replace("{keyId}", &uuid::Uuid::now_v7().to_string())
                .replace("{issueId}", &uuid::Uuid::now_v7().to_string())
                .replace("{routineId}", &uuid::Uuid::now_v7().to_string())
                .replace("{triggerId}", &uuid::Uuid::now_v7().to_string())
                .replace("{runId}", &uuid::Uuid::now_v7().to_string())
                .replace("{channelId}", &uuid::Uuid::now_v7().to_string())
                .replace("{publicId}", "unknown")
                .replace("{id}", &uuid::Uuid::now_v7().to_string());
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let resp = app.caller(None).send(method.clone(), &concrete, None).await;
            assert!(
                resp.body["code"] != "method_not_allowed"
                    && !(resp.status == 404 && resp.body["error"] == "route not found"),
                "{method} {path} is documented but not routed"
            );
        }
    }
    for (method, path) in expected {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} missing from the document"
        );
    }
    assert_eq!(
        documented,
        expected.len(),
        "document has operations this test does not know: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    // Every referenced schema is defined.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let text = doc.to_string();
    for reference in text.split("#/components/schemas/").skip(1) {
        let name = reference.split('"').next().expect("name");
        assert!(
            schemas.contains_key(name),
            "schema {name} is referenced but not defined"
        );
    }
}

/// The API and scheduler replicas share replay memory, rate limits and leadership through
/// Redis, so their binaries refuse to start without it; the worker does not use Redis. No role
/// binary starts without a database URL.
#[tokio::test]
async fn the_api_and_scheduler_roles_refuse_to_start_without_a_redis_url() {
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    let config = Config::from_lookup(|name| match name {
        "NEXUS_DATABASE_URL" => Some(db.url.clone()),
        "NEXUS_SECRET_KEY" => Some(SecretKey::generate().to_base64()),
        "NEXUS_LISTEN" => Some("127.0.0.1:0".to_owned()),
        _ => None,
    })
    .expect("valid configuration");
    let api = nexus_api::build(config.clone())
        .await
        .expect_err("no Redis");
    assert!(format!("{api:#}").contains("NEXUS_REDIS_URL"), "{api:#}");
    let scheduler = nexus_scheduler::build(config.clone())
        .await
        .expect_err("no Redis");
    assert!(format!("{scheduler:#}").contains("NEXUS_REDIS_URL"));
    nexus_worker::build(config.clone())
        .await
        .expect("the worker needs no Redis");
    // Every role binary needs the shared database: without a URL none starts (only
    // `nexus serve` falls back to the embedded database).
    let embedded = Config {
        database_url: None,
        ..config
    };
    let worker = nexus_worker::build(embedded)
        .await
        .expect_err("no database URL");
    assert!(
        format!("{worker:#}").contains("NEXUS_DATABASE_URL"),
        "{worker:#}"
    );
}

/// Ends every session of the pool's one connection from the outside (as a database restart
/// or a failover does), and waits until the server has closed it.
///
/// sqlx returns a connection to its pool in a spawned task that first checks it with a round
/// trip; the session is ended only once the connection is back and idle, so that check cannot
/// meet the ended session and quietly replace it.
async fn terminate_the_connection(db: &TestDb, pool: &sqlx::PgPool) {
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .expect("the pool connects");
    nexus_tests::eventually(5, "the connection to be back in the pool", || async {
        (pool.num_idle() == 1).then_some(())
    })
    .await;
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pid)
        .fetch_one(&db.pool)
        .await
        .expect("terminate");
    assert!(ended, "backend {pid} did not end");
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_server_is_replaced_when_it_was_idle_long_enough() {
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    // Checked on every use (idle for at least zero): the closed connection is noticed before
    // the statement and replaced, so the statement succeeds on a new session.
    let checked =
        nexus_shared::db::pool_checking_after(&db.url, 1, std::time::Duration::ZERO).expect("pool");
    terminate_the_connection(&db, &checked).await;
    let answer: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&checked)
        .await
        .expect("a new connection answers");
    assert_eq!(answer, 1);
    // Used again within the threshold: handed out unchecked, so the statement meets the closed
    // session — which is what the check saves a connection idle for longer from.
    let unchecked =
        nexus_shared::db::pool_checking_after(&db.url, 1, std::time::Duration::from_secs(3600))
            .expect("pool");
    terminate_the_connection(&db, &unchecked).await;
    assert!(
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&unchecked)
            .await
            .is_err(),
        "an unchecked closed connection cannot answer"
    );
    // The failed connection is dropped from the pool, and the next statement gets a new one.
    let answer: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&unchecked)
        .await
        .expect("the pool reconnects");
    assert_eq!(answer, 1);
}

#[tokio::test]
async fn a_lone_webhook_call_on_a_session_the_server_ended_is_unavailable_and_loses_nothing() {
    use nexus_shared::{
        model::{Actor, Label, ReplayWindow, RunSource, SigningMode, TriggerConfig},
        store::{NewRun, NewTrigger, NewTriggerKind},
    };
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    // One connection, not checked before use: the call meets the session the server ended.
    let pool =
        nexus_shared::db::pool_checking_after(&db.url, 1, std::time::Duration::from_secs(3600))
            .expect("pool");
    let store =
        nexus_shared::Store::postgres(pool.clone(), Arc::new(SystemClock), &SecretKey::generate());
    let routine = nexus_tests::seed_store_routine(&store, "Hook").await;
    let hook = NewTrigger {
        kind: NewTriggerKind::Webhook {
            signing_mode: SigningMode::Bearer,
            replay_window: ReplayWindow::parse(300).expect("window"),
            sender_secret: None,
        },
        label: Label::default(),
        enabled: true,
    };
    let (trigger, _) = store
        .create_trigger(routine, hook, Actor::System)
        .await
        .expect("trigger");
    let TriggerConfig::Webhook { public_id, .. } = &trigger.config else {
        panic!("a webhook trigger");
    };
    let read = store
        .webhook_trigger(public_id)
        .await
        .expect("lookup")
        .expect("found");
    let call = || NewRun {
        source: RunSource::Webhook,
        trigger_id: Some(trigger.id),
        payload: serde_json::Map::new(),
        idempotency_key: None,
        trace_context: None,
        signature: None,
    };
    terminate_the_connection(&db, &pool).await;
    // Alone in its write, the call gets the connection's own failure, which the API answers
    // 503 (retry) — not a copy of it that reads as an internal error.
    let failed = store
        .accept_webhook_run(&read, call())
        .await
        .expect_err("the session was ended");
    let shown = format!("{failed}");
    let status = nexus_api::error::ApiError::from(failed).status();
    assert_eq!(status.as_u16(), 503, "{shown}");
    // Nothing was half-written, and the next call is accepted on a new connection.
    assert!(
        store
            .runs(routine, None, 10)
            .await
            .expect("runs")
            .is_empty()
    );
    store
        .accept_webhook_run(&read, call())
        .await
        .expect("accepted on a new connection");
    assert_eq!(store.runs(routine, None, 10).await.expect("runs").len(), 1);
}
