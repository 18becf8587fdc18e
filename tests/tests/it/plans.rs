//! Postgres plans of the statements that must not grow with the history: beside a history,
//! each is planned through its indexes (no sequential scan, no sort), the way Postgres plans
//! the store's own statement — its text is checked against the store's source, so the two
//! cannot drift apart.

use nexus_tests::{TestDb, needs_postgres_rows};
use serde_json::Value;

/// The workers' heartbeat timeout sweep (`PgStore::time_out_heartbeats`).
const SWEEP: &str = "UPDATE heartbeat_runs SET status = 'timed_out', finished_at = $2
             WHERE (status = 'queued' AND created_at < $1) OR (status = 'running' AND started_at < $1)";

/// A routine's issues (`PgStore::routine_issues`), the statement's FROM onwards.
const ROUTINE_ISSUES: &str = "FROM ((SELECT * FROM issues
                      WHERE routine_id = $2 AND status NOT IN ('done', 'cancelled')
                        AND company_id = $1
                        AND ($3::text IS NULL OR status = $3)
                        AND ($4::uuid IS NULL OR assignee_agent_id = $4)
                        AND ($5::uuid IS NULL OR id < $5)
                      ORDER BY id DESC
                      LIMIT $6)
                     UNION ALL
                     (SELECT * FROM issues
                      WHERE routine_id = $2 AND status IN ('done', 'cancelled')
                        AND company_id = $1
                        AND ($3::text IS NULL OR status = $3)
                        AND ($4::uuid IS NULL OR assignee_agent_id = $4)
                        AND ($5::uuid IS NULL OR id < $5)
                      ORDER BY id DESC
                      LIMIT $6)) AS routine_issues
               ORDER BY id DESC
               LIMIT $6";

const COMPANY: &str = "00000000-0000-7000-8000-000000000001";
const ROUTINE: &str = "00000000-0000-7000-8000-0000000000a1";

fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Panics unless `source` (a store file) holds `statement`, whitespace aside.
fn assert_in_store(statement: &str, source: &str) {
    assert!(
        words(source).contains(&words(statement)),
        "the store no longer runs this statement; update the plan test with it:\n{statement}"
    );
}

/// The plan of `execute` (an `EXECUTE`) on a connection that ran `prepare` (its `PREPARE`).
async fn plan(db: &TestDb, prepare: &str, execute: &str) -> Value {
    let mut conn = db.pool.acquire().await.expect("connection");
    sqlx::raw_sql(sqlx::AssertSqlSafe(prepare.to_owned()))
        .execute(&mut *conn)
        .await
        .expect("prepare");
    let (plan,): (Value,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (FORMAT JSON) {execute}"
    )))
    .fetch_one(&mut *conn)
    .await
    .expect("explain");
    plan
}

/// Every node of a JSON plan as (node type, index name).
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

fn node_list(plan: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    nodes(plan, &mut found);
    found
}

/// Writes `sql` as a replica (no foreign keys checked, no triggers fired), then analyzes.
async fn seed(db: &TestDb, sql: &str) {
    let mut tx = db.pool.begin().await.expect("begin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL session_replication_role = replica; {sql}"
    )))
    .execute(&mut *tx)
    .await
    .expect("seed");
    tx.commit().await.expect("commit");
    sqlx::raw_sql("ANALYZE")
        .execute(&db.pool)
        .await
        .expect("analyze");
}

#[tokio::test]
async fn the_heartbeat_timeout_sweep_reads_only_waiting_and_running_runs() {
    needs_postgres_rows!();
    assert_in_store(
        SWEEP,
        include_str!("../../../shared/src/store/pg/dispatch.rs"),
    );
    let db = TestDb::create().await;
    // 20,000 finished heartbeat runs of the past day, a few still queued or running.
    seed(
        &db,
        &format!(
            "INSERT INTO heartbeat_runs (id, company_id, agent_id, issue_id, status, context,
                                         created_at, started_at, finished_at)
             SELECT gen_random_uuid(), '{COMPANY}', gen_random_uuid(), gen_random_uuid(),
                    CASE WHEN g <= 10 THEN 'queued' WHEN g <= 20 THEN 'running' ELSE 'succeeded' END,
                    '{{}}', now() - g * interval '4 seconds',
                    CASE WHEN g > 10 THEN now() - g * interval '4 seconds' END,
                    CASE WHEN g > 20 THEN now() - g * interval '3 seconds' END
             FROM generate_series(1, 20000) AS g;"
        ),
    )
    .await;
    let plan = plan(
        &db,
        &format!("PREPARE sweep(timestamptz, timestamptz) AS {SWEEP}"),
        "EXECUTE sweep(now() - interval '1 hour', now())",
    )
    .await;
    let found = node_list(&plan);
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
    assert_in_store(
        ROUTINE_ISSUES,
        include_str!("../../../shared/src/store/pg/issues.rs"),
    );
    let db = TestDb::create().await;
    // 60,000 issues of a thousand routines, this one's 600 of them (20 open).
    seed(
        &db,
        &format!(
            "INSERT INTO issues (id, company_id, title, status, routine_id, created_at, updated_at)
             SELECT gen_random_uuid(), '{COMPANY}', 'report',
                    CASE WHEN g % 3000 = 0 THEN 'todo' ELSE 'done' END,
                    CASE WHEN g % 100 = 0 THEN '{ROUTINE}'::uuid
                         ELSE ('00000000-0000-7000-8000-' || lpad((g % 1000)::text, 12, '0'))::uuid END,
                    now(), now()
             FROM generate_series(1, 60000) AS g;"
        ),
    )
    .await;
    let plan = plan(
        &db,
        &format!(
            "PREPARE routine_issues(uuid, uuid, text, uuid, uuid, bigint) AS SELECT id {ROUTINE_ISSUES}"
        ),
        &format!("EXECUTE routine_issues('{COMPANY}', '{ROUTINE}', NULL, NULL, NULL, 50)"),
    )
    .await;
    let found = node_list(&plan);
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
