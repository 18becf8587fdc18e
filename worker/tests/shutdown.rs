//! SIGTERM during a burst: a real `nexus-worker` process stops claiming, finishes what it holds
//! and exits cleanly; nothing accepted is lost and no job is left `running`.

use std::{
    process::{Command, Stdio},
    sync::Arc,
};

use nexus_shared::{
    Store, SystemClock,
    crypto::SecretKey,
    db,
    model::{Actor, RunSource},
    store::NewRun,
};
use nexus_tests::{TestDb, eventually, redis_url};

const RUNS: i64 = 1_000;

async fn count(db: &TestDb, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn sigterm_during_a_burst_loses_nothing_and_leaves_no_job_running() {
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    let key = SecretKey::generate();
    let store = Store::postgres(
        db::pool(&db.url, 4).expect("pool"),
        Arc::new(SystemClock),
        &key,
    );
    let routine = nexus_tests::seed_store_routine(&store, "Burst").await;
    for _ in 0..RUNS {
        let run = NewRun {
            source: RunSource::Manual,
            trigger_id: None,
            payload: serde_json::Map::new(),
            idempotency_key: None,
            trace_context: None,
            signature: None,
        };
        store
            .accept_manual_run(routine, run, Actor::System)
            .await
            .expect("run");
    }

    let mut worker = Command::new(env!("CARGO_BIN_EXE_nexus-worker"))
        .env_clear()
        .env("NEXUS_DATABASE_URL", &db.url)
        .env("NEXUS_REDIS_URL", redis_url())
        .env("NEXUS_SECRET_KEY", key.to_base64())
        .env("NEXUS_LISTEN", "127.0.0.1:0")
        .env("NEXUS_WORKER_CONCURRENCY", "8")
        // Small batches, so the burst lasts long enough to be interrupted (and batches are in
        // flight when the signal comes).
        .env("NEXUS_WORKER_BATCH", "2")
        .env("NEXUS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("nexus-worker starts");
    // Stop it in the middle of the burst.
    eventually(60, "the burst to start", || async {
        (count(
            &db,
            "SELECT count(*) FROM routine_runs WHERE status <> 'received'",
        )
        .await
            >= 20)
            .then_some(())
    })
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = worker.wait().expect("worker exits");
    assert!(exit.success(), "clean exit: {exit:?}");

    assert_eq!(
        count(&db, "SELECT count(*) FROM jobs WHERE state = 'running'").await,
        0,
        "no job left running"
    );
    let dispatched = count(
        &db,
        "SELECT count(*) FROM routine_runs WHERE status = 'issue_created'",
    )
    .await;
    let waiting = count(
        &db,
        "SELECT count(*) FROM routine_runs WHERE status = 'received'",
    )
    .await;
    assert_eq!(
        dispatched + waiting,
        RUNS,
        "every run is dispatched or still waiting"
    );
    assert!(
        waiting > 0,
        "the worker was stopped mid-burst ({dispatched} dispatched)"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM jobs WHERE state = 'queued'").await,
        waiting,
        "every waiting run keeps its job"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM issues").await,
        dispatched,
        "one issue per dispatched run"
    );

    // Another worker finishes the rest, each exactly once.
    let settings = nexus_worker::Settings::default();
    let rest =
        nexus_worker::Worker::new(store.clone(), "after".to_owned(), settings).expect("worker");
    while matches!(
        rest.run_once().await.expect("step"),
        nexus_worker::Outcome::Worked(_)
    ) {}
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM routine_runs WHERE status = 'issue_created'"
        )
        .await,
        RUNS
    );
    assert_eq!(count(&db, "SELECT count(*) FROM issues").await, RUNS);
    assert_eq!(count(&db, "SELECT count(*) FROM jobs").await, 0);
}
