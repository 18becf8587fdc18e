//! Pickup latency: how long a manual run waits between its transaction committing and the
//! worker dispatching it (heartbeat run created − run accepted), with `LISTEN/NOTIFY` on and,
//! for comparison, with the polling fallback alone (1 s interval).

use std::{sync::Arc, time::Duration};

use nexus_shared::{
    Store, SystemClock,
    crypto::SecretKey,
    db,
    model::{Actor, RunSource},
    store::NewRun,
};
use nexus_tests::TestDb;
use nexus_worker::{Settings, Worker};
use tokio::sync::watch;

use crate::machine::percentile;

pub(crate) async fn run(runs: usize) -> anyhow::Result<()> {
    let runs = runs.clamp(10, 5_000);
    println!("pickup latency: {runs} manual runs, one at a time, one worker (concurrency 1)\n");
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "mode", "p50 ms", "p95 ms", "p99 ms", "max ms", "mean ms"
    );
    let notify = measure(runs, true).await?;
    let polling = measure(runs.min(40), false).await?;
    for (name, stats) in [("LISTEN/NOTIFY", &notify), ("polling only (1 s)", &polling)] {
        println!(
            "{name:<22} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            stats.p50, stats.p95, stats.p99, stats.max, stats.mean
        );
    }
    println!(
        "\nratio polling/notify (p50): {:.0}x",
        polling.p50 / notify.p50
    );
    Ok(())
}

struct Stats {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

async fn measure(runs: usize, notifications: bool) -> anyhow::Result<Stats> {
    let database = TestDb::create().await;
    let key = SecretKey::generate();
    let store = Store::postgres(db::pool(&database.url, 10)?, Arc::new(SystemClock), &key);
    let routine = seed(&database).await?;
    let settings = Settings {
        concurrency: 1,
        notifications,
        ..Settings::default()
    };
    let worker = Worker::new(store.clone(), "bench-worker".to_owned(), settings)?;
    let (stop, stopped) = watch::channel(false);
    let loops = tokio::spawn(worker.run(stopped));
    // Let the listener connect before the first run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..runs {
        let new = NewRun {
            source: RunSource::Manual,
            trigger_id: None,
            payload: serde_json::Map::new(),
            idempotency_key: None,
            trace_context: None,
            signature: None,
        };
        let accepted = store.accept_manual_run(routine, new, Actor::System).await?;
        wait_dispatched(&database, accepted.run.id).await?;
    }
    let _ = stop.send(true);
    loops.await?;
    let mut latencies: Vec<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (h.created_at - r.triggered_at))::float8 * 1000
         FROM routine_runs r JOIN heartbeat_runs h ON h.id = r.heartbeat_run_id",
    )
    .fetch_all(&database.pool)
    .await?;
    anyhow::ensure!(
        latencies.len() == runs,
        "{} of {runs} runs dispatched",
        latencies.len()
    );
    latencies.sort_by(f64::total_cmp);
    Ok(Stats {
        p50: percentile(&latencies, 50.0),
        p95: percentile(&latencies, 95.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        mean: latencies.iter().sum::<f64>() / latencies.len() as f64,
    })
}

/// Waits (bounded) until the run has left `received`.
async fn wait_dispatched(database: &TestDb, run: uuid::Uuid) -> anyhow::Result<()> {
    for _ in 0..5_000 {
        let status: String = sqlx::query_scalar("SELECT status FROM routine_runs WHERE id = $1")
            .bind(run)
            .fetch_one(&database.pool)
            .await?;
        if status != "received" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    anyhow::bail!("run {run} was not dispatched within 10 s")
}

/// A company, agent, project and an `always_enqueue` routine, written directly.
async fn seed(database: &TestDb) -> anyhow::Result<uuid::Uuid> {
    let (company, agent, project, routine) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let mut tx = database.pool.begin().await?;
    sqlx::query("INSERT INTO companies (id, name, created_at) VALUES ($1, 'bench', now())")
        .bind(company)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO agents (id, company_id, name, created_at, updated_at) VALUES ($1, $2, 'bench', now(), now())")
        .bind(agent)
        .bind(company)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO projects (id, company_id, name, created_at) VALUES ($1, $2, 'bench', now())",
    )
    .bind(project)
    .bind(company)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO routines (id, company_id, title, assignee_agent_id, project_id, concurrency_policy, created_at, updated_at)
         VALUES ($1, $2, 'bench {{date}}', $3, $4, 'always_enqueue', now(), now())",
    )
    .bind(routine)
    .bind(company)
    .bind(agent)
    .bind(project)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(routine)
}
