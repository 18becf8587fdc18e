//! The `nexus` command line, run as a real process against a fresh database.

mod channels;
mod client;
mod embedded;
mod process_limits;
mod server;

use std::process::{Command, Output};

use nexus_shared::{Store, SystemClock, crypto::SecretKey, db};
use nexus_tests::TestDb;

fn nexus(db: &TestDb, key: &SecretKey, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nexus"));
    command
        .args(args)
        .env_clear()
        .env("NEXUS_DATABASE_URL", &db.url)
        .env("NEXUS_SECRET_KEY", key.to_base64())
        .env("NEXUS_LOG", "warn");
    for (name, value) in extra {
        command.env(name, value);
    }
    command.output().expect("nexus runs")
}

#[tokio::test]
async fn board_token_create_prints_a_working_token_on_the_last_line() {
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    let key = SecretKey::generate();
    let output = nexus(&db, &key, &["board-token", "create", "--label", "ops"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let token = stdout.lines().last().expect("a line").trim().to_owned();
    assert!(token.starts_with("nxb_"), "{stdout}");

    let store = Store::postgres(
        db::pool(&db.url, 2).expect("pool"),
        std::sync::Arc::new(SystemClock),
        &key,
    );
    let actor = store.authenticate(&token).await.expect("query");
    assert!(matches!(
        actor,
        Some(nexus_shared::model::Actor::Board { .. })
    ));
    let label: String = sqlx::query_scalar("SELECT label FROM board_tokens")
        .fetch_one(&db.pool)
        .await
        .expect("one token");
    assert_eq!(label, "ops");
}

#[tokio::test]
async fn an_invalid_variable_stops_start_up_with_one_line_naming_it() {
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    let key = SecretKey::generate();
    let output = nexus(&db, &key, &["serve"], &[("NEXUS_LISTEN", "everywhere")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("NEXUS_LISTEN=\"everywhere\""), "{stderr}");
}

#[tokio::test]
async fn migrate_applies_the_schema_and_unknown_commands_fail() {
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    let key = SecretKey::generate();
    let output = nexus(&db, &key, &["migrate"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool)
        .await
        .expect("migrations table");
    assert_eq!(
        usize::try_from(applied).ok(),
        Some(db::MIGRATOR.iter().count())
    );
    let output = nexus(&db, &key, &["launch-rockets"], &[]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Usage:"));
}

/// `nexus serve` runs every role: a manual run through its API is dispatched by its worker, and
/// a schedule fires through its scheduler (the trigger is due at once). No Redis URL is set:
/// leadership, rate limits and replay memory are kept in the process.
#[tokio::test]
async fn serve_runs_the_api_the_worker_and_the_scheduler_in_one_process() {
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    let key = SecretKey::generate();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let token = "serve-test-board-token-0123456789";
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .arg("serve")
        .env_clear()
        .env("NEXUS_DATABASE_URL", &db.url)
        .env("NEXUS_SECRET_KEY", key.to_base64())
        .env("NEXUS_LISTEN", format!("127.0.0.1:{port}"))
        .env("NEXUS_BOOTSTRAP_BOARD_TOKEN", token)
        .env("NEXUS_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("nexus serve starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = nexus_tests::http_client();
    let post = |path: String, body: serde_json::Value| {
        let request = http
            .post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body);
        async move {
            request
                .send()
                .await
                .expect("answer")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    nexus_tests::wait_until_ready(&base, 20).await;
    let company = post(
        "/api/companies".to_owned(),
        serde_json::json!({ "name": "Acme" }),
    )
    .await;
    let company = company["id"].as_str().expect("company").to_owned();
    let agent = post(
        format!("/api/companies/{company}/agents"),
        serde_json::json!({ "name": "Ada" }),
    )
    .await;
    let project = post(
        format!("/api/companies/{company}/projects"),
        serde_json::json!({ "name": "Ops" }),
    )
    .await;
    let routine = post(
        format!("/api/companies/{company}/routines"),
        serde_json::json!({ "title": "t", "assigneeAgentId": agent["agent"]["id"], "projectId": project["id"],
                            "concurrencyPolicy": "always_enqueue" }),
    )
    .await;
    let routine = routine["id"].as_str().expect("routine").to_owned();
    let run = post(
        format!("/api/routines/{routine}/run"),
        serde_json::json!({}),
    )
    .await;
    let run = run["id"].as_str().expect("run").to_owned();
    nexus_tests::eventually(20, "the worker's dispatch", || {
        let request = http
            .get(format!("{base}/api/routine-runs/{run}"))
            .bearer_auth(token);
        async move {
            let body: serde_json::Value = request.send().await.ok()?.json().await.ok()?;
            (body["status"] == "issue_created").then_some(())
        }
    })
    .await;
    // A schedule whose first fire is due now: make the stored next fire the current minute.
    post(
        format!("/api/routines/{routine}/triggers"),
        serde_json::json!({ "kind": "schedule", "cronExpression": "* * * * *" }),
    )
    .await;
    sqlx::query("UPDATE routine_triggers SET next_run_at = date_trunc('minute', now())")
        .execute(&db.pool)
        .await
        .expect("make the trigger due");
    sqlx::query("SELECT pg_notify('nexus_triggers', '')")
        .execute(&db.pool)
        .await
        .expect("announce");
    nexus_tests::eventually(30, "the scheduler's fire", || {
        let pool = db.pool.clone();
        async move {
            let fired: i64 =
                sqlx::query_scalar("SELECT count(*) FROM routine_runs WHERE source = 'schedule'")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (fired >= 1).then_some(())
        }
    })
    .await;
    // SIGTERM: a clean stop.
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn board_tokens_are_listed_without_their_secret_and_revoked_for_good() {
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    let key = SecretKey::generate();
    let created = nexus(&db, &key, &["board-token", "create", "--label", "ops"], &[]);
    assert!(created.status.success());
    let token = String::from_utf8(created.stdout).expect("utf-8");
    let token = token.lines().last().expect("a line").trim().to_owned();
    let store = Store::postgres(
        db::pool(&db.url, 2).expect("pool"),
        std::sync::Arc::new(SystemClock),
        &key,
    );
    assert!(store.authenticate(&token).await.expect("query").is_some());

    let listed = nexus(&db, &key, &["board-token", "list"], &[]);
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).expect("utf-8");
    let line = listed
        .lines()
        .find(|l| l.contains(" ops "))
        .expect("the token's line");
    assert!(
        !listed.contains(&token),
        "the token itself is never printed"
    );
    let id = line.split_whitespace().next().expect("an id").to_owned();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_ne!(fields[3], "-", "last used: {line}");
    assert_eq!(fields[4], "-", "not revoked: {line}");

    let revoked = nexus(&db, &key, &["board-token", "revoke", &id], &[]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert!(store.authenticate(&token).await.expect("query").is_none());
    let listed = nexus(&db, &key, &["board-token", "list"], &[]);
    let listed = String::from_utf8(listed.stdout).expect("utf-8");
    let line = listed
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("still listed");
    assert_ne!(line.split_whitespace().nth(4), Some("-"), "revoked: {line}");

    let unknown = nexus(
        &db,
        &key,
        &["board-token", "revoke", &uuid::Uuid::now_v7().to_string()],
        &[],
    );
    assert!(!unknown.status.success());
    let malformed = nexus(&db, &key, &["board-token", "revoke", "not-an-id"], &[]);
    assert!(!malformed.status.success());
}
