//! The public webhook endpoint: every status code path, signatures from an independent
//! implementation, replay protection, shared rate limits, rotation, and a property test of
//! hostile input.

use std::process::Command;

use std::future::Future as _;

use nexus_shared::{model::RunSource, store::NewRun};
use nexus_tests::{Options, Team, TestApp, str_at};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub(crate) struct Hook {
    pub(crate) url: String,
    pub(crate) secret: String,
    pub(crate) trigger: String,
    pub(crate) routine: String,
}

pub(crate) async fn hook(app: &TestApp, team: &Team, mode: &str) -> Hook {
    let routine = app.seed_routine(team, &json!({})).await;
    let created = app
        .seed_trigger(
            &routine,
            &json!({ "kind": "webhook", "signingMode": mode, "replayWindowSec": 60 }),
        )
        .await;
    Hook {
        url: str_at(&created, "/secretMaterial/webhookUrl"),
        secret: str_at(&created, "/secretMaterial/webhookSecret"),
        trigger: str_at(&created, "/trigger/id"),
        routine,
    }
}

/// Rewrites the webhook URL (built from NEXUS_PUBLIC_URL) onto the test server.
pub(crate) fn on(app: &TestApp, url: &str) -> String {
    let path = url.split("/api/").nth(1).expect("api path");
    format!("{}/api/{path}", app.base)
}

fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    nexus_tests::webhook_signature(secret, timestamp, body)
}

pub(crate) struct Sent {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

pub(crate) async fn send(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Sent {
    let mut request = nexus_tests::http_client().post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Sent {
        status,
        headers,
        body,
    }
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn signed(secret: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let ts = timestamp.to_string();
    vec![
        ("x-paperclip-timestamp", ts.clone()),
        ("x-paperclip-signature", sign(secret, &ts, body)),
        ("content-type", "application/json".to_owned()),
    ]
}

/// The routine's runs as the API lists them, newest first (either backend).
async fn listed_runs(app: &TestApp, routine: &str) -> Vec<Value> {
    let listed = app.board().list_runs(routine, "").await.expect(200).body;
    listed["runs"].as_array().cloned().unwrap_or_default()
}

/// `headers` without the header `name`.
fn without(headers: Vec<(&'static str, String)>, name: &str) -> Vec<(&'static str, String)> {
    headers.into_iter().filter(|(n, _)| *n != name).collect()
}

async fn run_count(app: &TestApp, routine: &str) -> i64 {
    app.count(
        "SELECT count(*) FROM routine_runs WHERE routine_id = $1::uuid",
        routine,
    )
    .await
}

mod auth;
pub(crate) mod formats;
mod hostile;
mod intake;
mod rate_limit;
mod replay;
mod senders;
