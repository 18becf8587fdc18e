//! HTTP wake-ups: signed per Standard Webhooks (verified here with an independent
//! implementation), retried with backoff through the queue, failed after the last attempt;
//! plus heartbeat-run timeouts and the queue's own backoff-to-dead path.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{KeyInit as _, Mac as _};
use nexus_shared::{
    Clock as _, ManualClock,
    clock::SharedClock,
    queue::{JobError, JobSpec, Queue, RetryOutcome, Task},
};
use nexus_tests::{Options, TestApp, str_at};
use serde_json::{Value, json};

#[derive(Clone, Default)]
pub(crate) struct Receiver {
    /// Status to answer with, per request number (the last one repeats).
    answers: Arc<Vec<u16>>,
    pub(crate) seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut seen = receiver.seen.lock().unwrap_or_else(PoisonError::into_inner);
    seen.push((headers, body));
    let status = receiver
        .answers
        .get(seen.len() - 1)
        .or(receiver.answers.last())
        .copied()
        .unwrap_or(200);
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

pub(crate) async fn spawn_receiver(answers: Vec<u16>) -> (String, Receiver) {
    let receiver = Receiver {
        answers: Arc::new(answers),
        ..Receiver::default()
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let url = format!("http://{}/wake", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/wake", post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    (url, receiver)
}

/// Verifies a Standard Webhooks signature the way a receiver would, independently of Nexus.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("secret is base64");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{}.{}.", header("webhook-id"), header("webhook-timestamp")).as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

fn clock(at: &str) -> (Arc<ManualClock>, SharedClock) {
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339(at).expect("time").to_utc();
    let clock = ManualClock::new(start);
    let shared: SharedClock = clock.clone();
    (clock, shared)
}

/// An HTTP agent with a routine and one dispatched run; returns (agent key, secret, heartbeat run id).
async fn http_agent_with_a_run(app: &TestApp, url: &str) -> (String, String, String) {
    let company = app.seed_company("Acme").await;
    let project = app.seed_project(&company).await;
    let created = app
        .board()
        .create_agent(
            &company,
            &json!({ "name": "Hooked", "wakeup": { "kind": "http", "url": url } }),
        )
        .await
        .expect(201)
        .body;
    let agent = str_at(&created, "/agent/id");
    let routine = app
        .board()
        .create_routine(
            &company,
            &json!({ "title": "Wake me", "assigneeAgentId": agent, "projectId": project }),
        )
        .await
        .expect(201)
        .id();
    let run = app
        .board()
        .run_routine(&routine, &json!({ "payload": { "x": 1 } }))
        .await
        .expect(202)
        .id();
    // Dispatch only: the wake-up job it creates is handled by the test.
    let worker = app.worker("dispatcher");
    assert_eq!(
        worker.run_once().await.expect("dispatch"),
        nexus_worker::Outcome::Worked(1)
    );
    let heartbeat = str_at(
        &app.board().get_run(&run).await.expect(200).body,
        "/heartbeatRunId",
    );
    (
        str_at(&created, "/apiKey"),
        str_at(&created, "/wakeupSecret"),
        heartbeat,
    )
}

#[tokio::test]
async fn a_wakeup_is_signed_and_a_500_is_retried_after_a_backoff() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (clock, shared) = clock("2026-11-29T10:00:00Z");
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        ..Default::default()
    })
    .await;
    let (url, receiver) = spawn_receiver(vec![500, 204]).await;
    let (key, secret, heartbeat) = http_agent_with_a_run(&app, &url).await;
    let worker = app.worker("deliverer");

    assert_eq!(
        worker.run_once().await.expect("attempt 1"),
        nexus_worker::Outcome::Worked(1)
    );
    assert_eq!(
        receiver
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len(),
        1
    );
    // Not due again until the backoff has passed.
    assert_eq!(
        worker.run_once().await.expect("idle"),
        nexus_worker::Outcome::Idle
    );
    clock.advance(TimeDelta::seconds(2));
    assert_eq!(
        worker.run_once().await.expect("attempt 2"),
        nexus_worker::Outcome::Worked(1)
    );

    let seen = receiver
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(seen.len(), 2);
    for (headers, body) in &seen {
        assert!(verify(&secret, headers, body), "signature does not verify");
        assert_eq!(
            headers["webhook-id"],
            heartbeat.as_str(),
            "the id is stable across retries"
        );
        assert_eq!(headers["content-type"], "application/json");
        let body: Value = serde_json::from_slice(body).expect("json body");
        assert_eq!(body["type"], "heartbeat_run.queued");
        assert_eq!(body["data"]["id"], heartbeat.as_str());
        assert_eq!(body["data"]["context"]["payload"], json!({ "x": 1 }));
    }
    assert_eq!(
        seen[1].0["webhook-timestamp"],
        (clock.now().timestamp()).to_string().as_str()
    );
    assert!(
        !verify(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            &seen[0].0,
            &seen[0].1
        ),
        "a wrong secret must not verify"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM jobs WHERE kind = $1",
            "deliver_wakeup"
        )
        .await,
        0,
        "the second attempt completed (deleted) the delivery job"
    );
    let runs = app
        .caller(Some(&key))
        .my_heartbeat_runs("")
        .await
        .expect(200)
        .body;
    assert_eq!(runs["heartbeatRuns"][0]["status"], "queued");
}

#[tokio::test]
async fn a_wakeup_that_never_succeeds_ends_dead_and_fails_the_heartbeat_run() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (clock, shared) = clock("2026-11-29T10:00:00Z");
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        ..Default::default()
    })
    .await;
    let (url, receiver) = spawn_receiver(vec![503]).await;
    let (key, _, heartbeat) = http_agent_with_a_run(&app, &url).await;
    let worker = app.worker("deliverer");
    let mut attempts = 0;
    for _ in 0..50 {
        if worker.run_once().await.expect("step") == nexus_worker::Outcome::Worked(1) {
            attempts += 1;
        }
        clock.advance(TimeDelta::hours(2));
    }
    assert_eq!(attempts, nexus_shared::store::WAKEUP_MAX_ATTEMPTS);
    assert_eq!(
        receiver
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len(),
        8
    );
    let (state, error): (String, Option<String>) =
        sqlx::query_as("SELECT state, last_error FROM jobs WHERE kind = 'deliver_wakeup'")
            .fetch_one(&app.db.pool)
            .await
            .expect("job");
    assert_eq!(state, "dead");
    assert!(error.is_some_and(|e| e.contains("HTTP 503")));
    let runs = app
        .caller(Some(&key))
        .my_heartbeat_runs("")
        .await
        .expect(200)
        .body;
    assert_eq!(runs["heartbeatRuns"][0]["id"], heartbeat.as_str());
    assert_eq!(runs["heartbeatRuns"][0]["status"], "failed");
    assert!(str_at(&runs, "/heartbeatRuns/0/summary").contains("could not be delivered"));
}

#[tokio::test]
async fn a_failing_job_backs_off_and_ends_dead() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (clock, shared) = clock("2026-11-29T10:00:00Z");
    let app = TestApp::spawn_with(Options {
        clock: Some(shared.clone()),
        ..Default::default()
    })
    .await;
    let spec = JobSpec {
        task: Task::Unreadable {
            kind: "example".to_owned(),
            payload: json!({}),
        },
        run_at: clock.now(),
        max_attempts: 3,
        trace_context: None,
    };
    let id = app.store.enqueue_job(spec).await.expect("enqueue");
    let queue = Queue::new(
        &app.store,
        "tester".to_owned(),
        std::time::Duration::from_secs(30),
    );
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        let job = queue.claim(10).await.expect("claim").pop().expect("due");
        assert_eq!(job.attempts, attempt);
        assert!(
            queue.claim(10).await.expect("claim").is_empty(),
            "a running job is not claimed twice"
        );
        match queue
            .retry(&job, &JobError::Retry(format!("boom {attempt}")))
            .await
            .expect("retry")
        {
            RetryOutcome::Requeued(at) => {
                delays.push(at - clock.now());
                assert!(
                    queue.claim(10).await.expect("claim").is_empty(),
                    "not due before its backoff"
                );
                clock.set(at);
            }
            RetryOutcome::Dead => assert_eq!(attempt, 3),
            RetryOutcome::LeaseLost => panic!("lease lost"),
        }
    }
    assert!(
        delays[0] >= TimeDelta::milliseconds(500) && delays[0] <= TimeDelta::seconds(1),
        "{delays:?}"
    );
    assert!(
        delays[1] >= TimeDelta::seconds(1) && delays[1] <= TimeDelta::seconds(2),
        "{delays:?}"
    );
    let (state, error, lease): (String, Option<String>, Option<String>) =
        sqlx::query_as("SELECT state, last_error, lease_owner FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .expect("job");
    assert_eq!(
        (state.as_str(), error.as_deref(), lease),
        ("dead", Some("boom 3"), None)
    );
    clock.advance(TimeDelta::days(1));
    assert!(
        queue.claim(10).await.expect("claim").is_empty(),
        "dead jobs stay dead"
    );

    // A fatal error is dead at once.
    let spec = JobSpec {
        task: Task::Unreadable {
            kind: "example".to_owned(),
            payload: json!({}),
        },
        run_at: clock.now(),
        max_attempts: 5,
        trace_context: None,
    };
    app.store.enqueue_job(spec).await.expect("enqueue");
    let job = queue.claim(1).await.expect("claim").pop().expect("due");
    assert_eq!(
        queue
            .retry(&job, &JobError::Fatal("bad".to_owned()))
            .await
            .expect("retry"),
        RetryOutcome::Dead
    );
}

#[tokio::test]
async fn stale_heartbeat_runs_time_out() {
    nexus_tests::needs_servers!();
    let (clock, shared) = clock("2026-11-29T10:00:00Z");
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    for title in ["a", "b"] {
        app.board()
            .create_issue(
                &team.company,
                &json!({ "title": title, "assigneeAgentId": team.agent }),
            )
            .await
            .expect(201);
    }
    let agent = app.caller(Some(&team.key));
    let runs = agent.my_heartbeat_runs("").await.expect(200).body;
    let (first, second) = (
        str_at(&runs, "/heartbeatRuns/0/id"),
        str_at(&runs, "/heartbeatRuns/1/id"),
    );
    clock.advance(TimeDelta::minutes(30));
    agent.claim_heartbeat_run(&second).await.expect(200);
    let worker = app.worker("maintainer");
    clock.advance(TimeDelta::minutes(31));
    worker.maintain().await.expect("maintain");
    let timed_out = agent
        .my_heartbeat_runs("status=timed_out")
        .await
        .expect(200)
        .body;
    assert_eq!(timed_out["heartbeatRuns"].as_array().map(Vec::len), Some(1));
    assert_eq!(timed_out["heartbeatRuns"][0]["id"], first.as_str());
    assert!(timed_out["heartbeatRuns"][0]["finishedAt"].is_string());
    clock.advance(TimeDelta::minutes(30));
    worker.maintain().await.expect("maintain");
    assert_eq!(
        agent
            .my_heartbeat_runs("status=timed_out")
            .await
            .expect(200)
            .body["heartbeatRuns"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    agent
        .finish_heartbeat_run(&second, &json!({ "status": "succeeded" }))
        .await
        .expect_error(409, "not_running");
}

/// A worker that may not reach private addresses (the default outside tests).
fn guarded_worker(app: &TestApp) -> nexus_worker::Worker {
    let settings = nexus_worker::Settings {
        allow_private_urls: false,
        poll_interval: std::time::Duration::from_millis(20),
        ..nexus_worker::Settings::default()
    };
    nexus_worker::Worker::new(app.store.clone(), "guarded".to_owned(), settings).expect("worker")
}

#[tokio::test]
async fn wakeup_urls_naming_private_addresses_are_refused_by_the_api() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn_with(Options {
        env: vec![("NEXUS_ALLOW_PRIVATE_URLS", "false".to_owned())],
        ..Default::default()
    })
    .await;
    let company = app.seed_company("Acme").await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/internal-admin",
        "http://10.0.0.7/",
        "http://[::1]:9000/",
        "http://[fd00::1]/",
        "http://0x7f000001/",
    ] {
        let refused = app
            .board()
            .create_agent(
                &company,
                &json!({ "name": "Ada", "wakeup": { "kind": "http", "url": url } }),
            )
            .await
            .expect_error(422, "invalid_field");
        assert_eq!(refused.body["details"]["field"], "wakeup.url", "{url}");
    }
    let agent = app
        .board()
        .create_agent(
            &company,
            &json!({ "name": "Ada", "wakeup": { "kind": "http", "url": "https://agents.example.com/wake" } }),
        )
        .await
        .expect(201);
    let agent = str_at(&agent.body, "/agent/id");
    app.board()
        .update_agent(
            &agent,
            &json!({ "wakeup": { "kind": "http", "url": "http://192.168.1.10/" } }),
        )
        .await
        .expect_error(422, "invalid_field");
}

#[tokio::test]
async fn a_wakeup_to_a_private_address_fails_at_delivery_with_forbidden_address() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    // Stored while private addresses were allowed (or a name resolving to one): the worker,
    // which may not reach them, refuses both the literal address and the resolved name, and
    // the receiver hears nothing.
    let (url, receiver) = spawn_receiver(vec![200]).await;
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .expect("port")
        .to_owned();
    for target in [url.clone(), format!("http://localhost:{port}/wake")] {
        let (agent_key, _, heartbeat) = http_agent_with_a_run(&app, &target).await;
        let worker = guarded_worker(&app);
        assert_eq!(
            worker.run_once().await.expect("deliver"),
            nexus_worker::Outcome::Worked(1)
        );
        let runs = app
            .caller(Some(&agent_key))
            .my_heartbeat_runs("")
            .await
            .expect(200)
            .body;
        let run = runs["heartbeatRuns"]
            .as_array()
            .and_then(|all| all.iter().find(|r| r["id"] == heartbeat.as_str()))
            .cloned()
            .expect("the heartbeat run");
        assert_eq!(run["status"], "failed", "{target}: {run}");
        assert!(
            run["summary"]
                .as_str()
                .is_some_and(|s| s.contains("forbidden_address")),
            "{target}: {run}"
        );
    }
    assert!(
        receiver
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty(),
        "nothing reached the private address"
    );
}
