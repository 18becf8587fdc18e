//! Postgres plans of the statements that must not grow with the history. Each test seeds a
//! history, calls the store's own method on a pool of one connection, finds the statement the
//! store prepared there (`pg_prepared_statements`) and explains it with the same arguments:
//! index scans only, no sequential scan or sort.

use std::{sync::Arc, time::Duration};

use nexus_shared::{
    SystemClock,
    crypto::SecretKey,
    store::{IssueFilter, PgStore},
};
use nexus_tests::{TestDb, needs_postgres_rows};
use serde_json::Value;
use sqlx::{PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

const COMPANY: &str = "00000000-0000-7000-8000-000000000001";
const ROUTINE: &str = "00000000-0000-7000-8000-0000000000a1";

/// A new database holding `history` (written as a replica: no foreign keys checked, no
/// triggers fired, then analyzed), and a store on one connection to it.
async fn store_beside(history: &str) -> (TestDb, PgStore, PgPool) {
    let db = TestDb::create().await;
    let mut tx = db.pool.begin().await.expect("begin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL session_replication_role = replica; {history}"
    )))
    .execute(&mut *tx)
    .await
    .expect("history");
    tx.commit().await.expect("commit");
    sqlx::raw_sql("ANALYZE")
        .execute(&db.pool)
        .await
        .expect("analyze");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .expect("pool");
    let store = PgStore::new(pool.clone(), Arc::new(SystemClock), &SecretKey::generate());
    (db, store, pool)
}

/// Every node of the plan of the one statement the store prepared on `pool` whose text holds
/// `fragment`, executed with `arguments`, as (node type, index name).
async fn plan_of_prepared(pool: &PgPool, fragment: &str, arguments: &str) -> Vec<(String, String)> {
    let mut conn = pool.acquire().await.expect("the store's connection");
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM pg_prepared_statements WHERE strpos(statement, $1) > 0 AND NOT from_sql",
    )
    .bind(fragment)
    .fetch_all(&mut *conn)
    .await
    .expect("prepared statements");
    let [name] = names.as_slice() else {
        panic!("one statement holding {fragment:?}, found {names:?}")
    };
    let (plan,): (Value,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (FORMAT JSON) EXECUTE {name}({arguments})"
    )))
    .fetch_one(&mut *conn)
    .await
    .expect("explain");
    let mut found = Vec::new();
    nodes(&plan, &mut found);
    found
}

fn nodes(plan: &Value, found: &mut Vec<(String, String)>) {
    match plan {
        Value::Object(node) => {
            if let Some(Value::String(kind)) = node.get("Node Type") {
                let index = node.get("Index Name").and_then(Value::as_str).unwrap_or("");
                found.push((kind.clone(), index.to_owned()));
            }
            node.values().for_each(|v| nodes(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| nodes(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_heartbeat_timeout_sweep_reads_only_waiting_and_running_runs() {
    needs_postgres_rows!();
    // 20,000 finished heartbeat runs of the past day, a few still queued or running.
    let (_db, store, pool) = store_beside(&format!(
        "INSERT INTO heartbeat_runs (id, company_id, agent_id, issue_id, status, context,
                                     created_at, started_at, finished_at)
         SELECT gen_random_uuid(), '{COMPANY}', gen_random_uuid(), gen_random_uuid(),
                CASE WHEN g <= 10 THEN 'queued' WHEN g <= 20 THEN 'running' ELSE 'succeeded' END,
                '{{}}', now() - g * interval '4 seconds',
                CASE WHEN g > 10 THEN now() - g * interval '4 seconds' END,
                CASE WHEN g > 20 THEN now() - g * interval '3 seconds' END
         FROM generate_series(1, 20000) AS g;"
    ))
    .await;
    let timed_out = store
        .time_out_heartbeats(Duration::from_secs(3600))
        .await
        .expect("sweep");
    assert_eq!(
        timed_out, 0,
        "every open heartbeat run is younger than an hour"
    );
    let found = plan_of_prepared(
        &pool,
        "status = 'queued' AND created_at <",
        "now() - interval '1 hour', now()",
    )
    .await;
    assert!(
        !found.iter().any(|(kind, _)| kind == "Seq Scan"),
        "{found:?}"
    );
    for index in ["heartbeat_runs_queued", "heartbeat_runs_running"] {
        assert!(
            found.iter().any(|(_, name)| name == index),
            "{index}: {found:?}"
        );
    }
}

#[tokio::test]
async fn a_routines_issues_are_read_newest_first_from_both_indexes_and_merged() {
    needs_postgres_rows!();
    // 60,000 issues of a thousand routines, this one's 600 of them (20 open).
    let (_db, store, pool) = store_beside(&format!(
        "INSERT INTO issues (id, company_id, title, status, routine_id, created_at, updated_at)
         SELECT gen_random_uuid(), '{COMPANY}', 'report',
                CASE WHEN g % 3000 = 0 THEN 'todo' ELSE 'done' END,
                CASE WHEN g % 100 = 0 THEN '{ROUTINE}'::uuid
                     ELSE ('00000000-0000-7000-8000-' || lpad((g % 1000)::text, 12, '0'))::uuid END,
                now(), now()
         FROM generate_series(1, 60000) AS g;"
    ))
    .await;
    let filter = IssueFilter {
        routine_id: Some(ROUTINE.parse().expect("uuid")),
        limit: 50,
        ..Default::default()
    };
    let company: Uuid = COMPANY.parse().expect("uuid");
    assert_eq!(store.issues(company, filter).await.expect("list").len(), 50);
    let found = plan_of_prepared(
        &pool,
        "UNION ALL",
        &format!("'{COMPANY}', '{ROUTINE}', NULL, NULL, NULL, 50"),
    )
    .await;
    assert!(
        !found
            .iter()
            .any(|(kind, _)| kind == "Seq Scan" || kind == "Sort" || kind == "Bitmap Heap Scan"),
        "{found:?}"
    );
    for index in ["issues_routine_open_newest", "issues_routine_closed"] {
        assert!(
            found.iter().any(|(_, name)| name == index),
            "{index}: {found:?}"
        );
    }
    assert!(
        found.iter().any(|(kind, _)| kind == "Merge Append"),
        "{found:?}"
    );
}
