//! `nexus serve` with no database URL and no Redis URL: the embedded single-node mode, as a
//! real process. Killed without warning and restarted, it loses nothing it accepted, and the
//! fires missed while it was down follow each routine's catch-up policy.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

use chrono::{DurationRound as _, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnectOptions;

pub(crate) const TOKEN: &str = "embedded-test-board-token-0123456789";

/// The process, killed when dropped (a failing test leaves nothing running).
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

fn start(dir: &Path, port: u16) -> Running {
    start_with(dir, port, &[])
}

/// `nexus serve` on the embedded database in `dir`, listening on `port`, with `extra`
/// variables.
pub(crate) fn start_with(dir: &Path, port: u16, extra: &[(&str, &str)]) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .env_clear()
        .envs(extra.iter().copied())
        .env("NEXUS_DATA_DIR", dir)
        .env("NEXUS_LISTEN", format!("127.0.0.1:{port}"))
        .env("NEXUS_BOOTSTRAP_BOARD_TOKEN", TOKEN)
        // A job claimed just before the kill waits for its lease to expire: keep it short.
        .env("NEXUS_JOB_LEASE_SECS", "5")
        .env("NEXUS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("nexus starts");
    Running(child)
}

pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

impl Api {
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&status), "{path}: {status} {body}");
        body
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn runs(&self, routine: &str) -> Vec<Value> {
        self.get(&format!("/api/routines/{routine}/runs?limit=200"))
            .await["runs"]
            .as_array()
            .expect("runs")
            .clone()
    }
}

pub(crate) fn id(body: &Value) -> String {
    body["id"].as_str().expect("an id").to_owned()
}

/// Sends a signed webhook call (`hmac_sha256`) with the given timestamp; returns the status.
async fn fire(api: &Api, url: &str, secret: &str, timestamp: i64) -> u16 {
    let body = br#"{"deploy":"v7"}"#;
    let signature = nexus_tests::webhook_signature(secret, &timestamp.to_string(), body);
    let path = url.split("/api/").nth(1).expect("an API path");
    api.http
        .post(format!("{}/api/{path}", api.base))
        .header("content-type", "application/json")
        .header("x-paperclip-timestamp", timestamp.to_string())
        .header("x-paperclip-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .expect("an answer")
        .status()
        .as_u16()
}

#[tokio::test]
async fn killed_and_restarted_it_loses_nothing_accepted_and_catches_up_missed_fires() {
    let dir =
        std::env::temp_dir().join(format!("nexus-embedded-{}", uuid::Uuid::new_v4().simple()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: nexus_tests::http_client(),
    };
    let mut process = start(&dir, port);
    nexus_tests::wait_until_ready(&api.base, 30).await;
    assert!(dir.join("nexus.db").exists() && dir.join("secret.key").exists());

    let company = id(&api.post("/api/companies", json!({ "name": "Acme" })).await);
    let agent = api
        .post(
            &format!("/api/companies/{company}/agents"),
            json!({ "name": "Ada" }),
        )
        .await["agent"]["id"]
        .clone();
    let project = id(&api
        .post(
            &format!("/api/companies/{company}/projects"),
            json!({ "name": "Ops" }),
        )
        .await);
    let routine = |extra: Value| {
        let mut body = json!({ "title": "Report {{date}}", "assigneeAgentId": agent, "projectId": project,
                               "concurrencyPolicy": "always_enqueue" });
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        body
    };
    let manual = id(&api
        .post(
            &format!("/api/companies/{company}/routines"),
            routine(json!({})),
        )
        .await);
    let skipping = id(&api
        .post(
            &format!("/api/companies/{company}/routines"),
            routine(json!({})),
        )
        .await);
    let catching_up = id(&api
        .post(
            &format!("/api/companies/{company}/routines"),
            routine(json!({ "catchUpPolicy": "enqueue_missed_with_cap", "catchUpCap": 3 })),
        )
        .await);
    let hooked = id(&api
        .post(
            &format!("/api/companies/{company}/routines"),
            routine(json!({})),
        )
        .await);
    let hook = api
        .post(
            &format!("/api/routines/{hooked}/triggers"),
            json!({ "kind": "webhook", "signingMode": "hmac_sha256" }),
        )
        .await;
    let hook_url = hook["secretMaterial"]["webhookUrl"]
        .as_str()
        .expect("a webhook URL")
        .to_owned();
    let hook_secret = hook["secretMaterial"]["webhookSecret"]
        .as_str()
        .expect("a secret")
        .to_owned();
    let signed_at = Utc::now().timestamp();
    assert_eq!(fire(&api, &hook_url, &hook_secret, signed_at).await, 202);
    for routine in [&skipping, &catching_up] {
        api.post(
            &format!("/api/routines/{routine}/triggers"),
            json!({ "kind": "schedule", "cronExpression": "* * * * *" }),
        )
        .await;
    }
    // Accept runs, the last with an idempotency key, and kill the process at once: some may
    // not be dispatched yet.
    let mut accepted = Vec::new();
    for n in 0..20 {
        accepted.push(id(&api
            .post(
                &format!("/api/routines/{manual}/run"),
                json!({ "payload": { "n": n } }),
            )
            .await));
    }
    let (_, keyed) = api
        .send(
            reqwest::Method::POST,
            &format!("/api/routines/{manual}/run"),
            Some(json!({ "payload": { "n": "keyed" }, "idempotencyKey": "deploy-42" })),
        )
        .await;
    accepted.push(id(&keyed));
    process.0.kill().expect("SIGKILL");
    process.0.wait().expect("killed");

    // Ten minutes pass while it is down: the schedules' next fires move ten minutes back.
    let minute = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .expect("minute");
    let options = SqliteConnectOptions::new().filename(dir.join("nexus.db"));
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("open the file");
    sqlx::query("UPDATE routine_triggers SET next_run_at = ?1 WHERE kind = 'schedule'")
        .bind(minute - TimeDelta::minutes(9))
        .execute(&pool)
        .await
        .expect("rewind");
    pool.close().await;

    let mut process = start(&dir, port);
    nexus_tests::wait_until_ready(&api.base, 30).await;
    // Every accepted run is dispatched exactly once: one issue each. A job the killed process
    // had claimed is dispatched once its lease (5 s) expires and a maintenance pass reaps it.
    nexus_tests::eventually(60, "every accepted run dispatched", || async {
        let runs = api.runs(&manual).await;
        runs.iter()
            .all(|r| r["status"] == "issue_created")
            .then_some(())
    })
    .await;
    let runs = api.runs(&manual).await;
    let mut ids: Vec<String> = runs.iter().map(id).collect();
    ids.sort();
    let mut expected = accepted.clone();
    expected.sort();
    assert_eq!(ids, expected, "exactly the accepted runs, no more, no less");
    let issues = api
        .get(&format!(
            "/api/companies/{company}/issues?routineId={manual}&limit=100"
        ))
        .await;
    assert_eq!(
        issues["issues"].as_array().expect("issues").len(),
        21,
        "one issue per run"
    );
    // The idempotency key still names its run.
    let (status, again) = api
        .send(
            reqwest::Method::POST,
            &format!("/api/routines/{manual}/run"),
            Some(json!({ "payload": { "n": "keyed" }, "idempotencyKey": "deploy-42" })),
        )
        .await;
    assert_eq!((status, id(&again)), (202, id(&keyed)));
    // The signed call accepted before the kill is still a replay: signatures are remembered in
    // the database, not only in the process.
    assert_eq!(fire(&api, &hook_url, &hook_secret, signed_at).await, 409);
    assert_eq!(
        fire(&api, &hook_url, &hook_secret, signed_at - 1).await,
        202
    );

    // skip_missed: one skipped run for the fires older than the grace period, the current
    // minute's fire on time. enqueue_missed_with_cap 3: the three most recent missed fires run,
    // the older ones are recorded in one skipped run.
    nexus_tests::eventually(30, "the missed fires handled", || async {
        let skipped = api.runs(&skipping).await;
        let caught = api.runs(&catching_up).await;
        (skipped.iter().any(|r| r["status"] == "skipped")
            && caught.iter().any(|r| r["status"] == "skipped"))
        .then_some(())
    })
    .await;
    let skipped_runs = api.runs(&skipping).await;
    let skipped: Vec<&Value> = skipped_runs
        .iter()
        .filter(|r| r["status"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped_runs:?}");
    assert_eq!(skipped[0]["reason"], "missed_schedule");
    let count = skipped[0]["missed"]["count"].as_u64().expect("count");
    assert!((8..=10).contains(&count), "{count}");
    assert!(
        skipped_runs
            .iter()
            .all(|r| !r["catchUp"].as_bool().unwrap_or_default())
    );
    let caught_runs = api.runs(&catching_up).await;
    let caught_up = caught_runs.iter().filter(|r| r["catchUp"] == true).count();
    assert_eq!(caught_up, 3, "{caught_runs:?}");
    let recorded: Vec<&Value> = caught_runs
        .iter()
        .filter(|r| r["status"] == "skipped")
        .collect();
    assert_eq!(
        (recorded.len(), &recorded[0]["reason"]),
        (1, &json!("catch_up_cap"))
    );
    // No fire was recorded twice.
    for runs in [&skipped_runs, &caught_runs] {
        let mut fires: Vec<&str> = runs
            .iter()
            .filter_map(|r| r["scheduledFor"].as_str())
            .collect();
        let all = fires.len();
        fires.sort_unstable();
        fires.dedup();
        assert_eq!(fires.len(), all, "one run per fire");
    }

    let pid = process.0.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(process.0.wait().expect("exits").success());
    drop(std::fs::remove_dir_all(&dir));
}
