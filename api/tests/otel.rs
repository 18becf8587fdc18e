//! OpenTelemetry export with real processes and a stand-in OTLP/HTTP collector: the trace of a
//! manual run request continues into the worker's dispatch of that run; without an endpoint
//! nothing is exported and nothing is logged about it.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError},
};

use axum::{Json, Router, extract::State, routing::post};
use nexus_tests::{TestDb, eventually, redis_url};
use serde_json::{Value, json};

const BOARD: &str = "otel-board-token-0123456789abcdef";

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

fn binary(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nexus-api")).with_file_name(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

type Received = Arc<Mutex<Vec<Value>>>;

async fn collector() -> (String, Received) {
    async fn traces(State(received): State<Received>, Json(body): Json<Value>) -> Json<Value> {
        received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(body);
        Json(json!({}))
    }
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(Arc::clone(&received));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("collector") });
    (url, received)
}

/// `(service name, trace id, span name)` of every exported span.
fn spans(received: &Received) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for body in received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let trace = span["traceId"].as_str().unwrap_or_default().to_lowercase();
                    out.push((
                        service.clone(),
                        trace,
                        span["name"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

fn start(
    binary_name: &str,
    db: &TestDb,
    key: &str,
    prefix: &str,
    otel: Option<&str>,
    stderr: Stdio,
) -> (Process, String) {
    let port = free_port();
    let mut command = Command::new(binary(binary_name));
    command
        .env_clear()
        .env("NEXUS_DATABASE_URL", &db.url)
        .env("NEXUS_REDIS_URL", redis_url())
        .env("NEXUS_REDIS_PREFIX", prefix)
        .env("NEXUS_SECRET_KEY", key)
        .env("NEXUS_LISTEN", format!("127.0.0.1:{port}"))
        .env("NEXUS_BOOTSTRAP_BOARD_TOKEN", BOARD)
        .env("NEXUS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(stderr);
    if let Some(endpoint) = otel {
        command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{binary_name}: {e}"));
    (Process(child), format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn a_requests_trace_continues_into_the_workers_dispatch() {
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    let key = nexus_shared::crypto::SecretKey::generate().to_base64();
    let prefix = format!("nexus-test:{}", uuid::Uuid::new_v4().simple());
    let (endpoint, received) = collector().await;
    let (_api, base) = start(
        "nexus-api",
        &db,
        &key,
        &prefix,
        Some(&endpoint),
        Stdio::null(),
    );
    let (_worker, _) = start(
        "nexus-worker",
        &db,
        &key,
        &prefix,
        Some(&endpoint),
        Stdio::null(),
    );
    let http = nexus_tests::http_client();
    nexus_tests::wait_until_ready(&base, 30).await;
    let post = |path: String, body: Value| {
        let request = http
            .post(format!("{base}{path}"))
            .bearer_auth(BOARD)
            .json(&body);
        async move {
            request
                .send()
                .await
                .expect("answer")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let company = post("/api/companies".to_owned(), json!({ "name": "Acme" })).await;
    let company = company["id"].as_str().expect("company").to_owned();
    let agent = post(
        format!("/api/companies/{company}/agents"),
        json!({ "name": "Ada" }),
    )
    .await;
    let project = post(
        format!("/api/companies/{company}/projects"),
        json!({ "name": "Ops" }),
    )
    .await;
    let routine = post(
        format!("/api/companies/{company}/routines"),
        json!({ "title": "traced", "assigneeAgentId": agent["agent"]["id"], "projectId": project["id"] }),
    )
    .await;
    let routine = routine["id"].as_str().expect("routine").to_owned();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = http
        .post(format!("{base}/api/routines/{routine}/run"))
        .bearer_auth(BOARD)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({}))
        .send()
        .await
        .expect("run");
    assert_eq!(response.status(), 202);
    let found = eventually(30, "spans of the request and of its dispatch", || {
        let spans = spans(&received);
        async move {
            let ours: Vec<_> = spans.into_iter().filter(|s| s.1 == trace_id).collect();
            let api = ours
                .iter()
                .any(|s| s.0 == "nexus-api" && s.2 == "http_request");
            let worker = ours.iter().any(|s| s.0 == "nexus-worker" && s.2 == "job");
            (api && worker).then_some(ours)
        }
    })
    .await;
    assert!(found.len() >= 2, "{found:?}");
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_or_logged() {
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    let key = nexus_shared::crypto::SecretKey::generate().to_base64();
    let prefix = format!("nexus-test:{}", uuid::Uuid::new_v4().simple());
    let log =
        std::env::temp_dir().join(format!("nexus-otel-{}.log", uuid::Uuid::new_v4().simple()));
    let file = std::fs::File::create(&log).expect("log file");
    let (mut api, base) = start("nexus-api", &db, &key, &prefix, None, Stdio::from(file));
    let http = nexus_tests::http_client();
    nexus_tests::wait_until_ready(&base, 30).await;
    let response = http
        .get(format!("{base}/api/companies"))
        .bearer_auth(BOARD)
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let status = Command::new("kill")
        .args(["-TERM", &api.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(api.0.wait().expect("exits").success());
    let logged = std::fs::read_to_string(&log).expect("log");
    drop(std::fs::remove_file(&log));
    assert!(
        logged.trim().is_empty(),
        "unexpected output at warn level: {logged}"
    );
}
