//! Dispatch by the worker: the concurrency policies, templating, terminated assignees, issue
//! status flowing back into runs, concurrent dispatch across workers, and lease expiry.

use std::collections::HashMap;

use nexus_tests::{Team, TestApp, str_at};
use serde_json::{Value, json};

async fn run(app: &TestApp, routine: &str, payload: Value) -> String {
    app.board()
        .run_routine(routine, &json!({ "payload": payload }))
        .await
        .expect(202)
        .id()
}

async fn get_run(app: &TestApp, id: &str) -> Value {
    app.board().get_run(id).await.expect(200).body
}

async fn open_issues(app: &TestApp, team: &Team, routine: &str) -> Vec<Value> {
    let issues = app
        .board()
        .list_issues(&team.company, &format!("routineId={routine}"))
        .await
        .expect(200)
        .body;
    issues["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .filter(|i| !matches!(i["status"].as_str(), Some("done" | "cancelled")))
        .cloned()
        .collect()
}

mod batches;
mod concurrency;
mod policies;
