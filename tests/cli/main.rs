//! The `nexus` command line, run as a real process against a fresh database.

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

    let store = Store::new(
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
