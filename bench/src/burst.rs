//! Minute burst, in one process (the scheduler and a worker pool, as `nexus serve` runs them):
//! R routines, each with one `* * * * *` UTC schedule, created before a minute boundary; for
//! the next B boundaries: fires expected, runs and heartbeat runs created, duplicates, missing,
//! and lateness (run created − boundary, heartbeat run created − boundary).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use nexus_scheduler::{LeaderLock, Scheduler};
use nexus_shared::{Store, SystemClock, crypto::SecretKey, db, kv::Redis};
use nexus_tests::{TestDb, redis_url};
use nexus_worker::Worker;
use tokio::sync::watch;

pub(crate) async fn run(routines: usize, boundaries: usize, workers: usize) -> anyhow::Result<()> {
    let routines = routines.clamp(1, 100_000);
    let boundaries = boundaries.clamp(1, 5);
    let database = TestDb::create().await;
    let key = SecretKey::generate();
    let store = Store::new(db::pool(&database.url, 20)?, Arc::new(SystemClock), &key);
    let first = seed(&database, routines).await?;
    println!(
        "minute burst (one process): {routines} routines `* * * * *`, {boundaries} boundaries, worker concurrency {workers}"
    );
    println!("first boundary {first}\n");

    let redis = Redis::new(
        &redis_url(),
        &format!("nexus-bench:{}", uuid::Uuid::new_v4().simple()),
    )?;
    let scheduler = Scheduler::new(
        store.clone(),
        LeaderLock::new(redis, "bench-scheduler".to_owned(), Duration::from_secs(15)),
        nexus_scheduler::Settings::default(),
    );
    let worker_settings = nexus_worker::Settings {
        concurrency: workers,
        ..Default::default()
    };
    let worker = Worker::new(store.clone(), "bench-worker".to_owned(), worker_settings)?;
    let (stop, stopped) = watch::channel(false);
    let scheduler_task = tokio::spawn(scheduler.run(stopped.clone()));
    let worker_task = tokio::spawn(worker.run(stopped));

    // Wait (bounded) until every expected heartbeat run exists, or the last boundary is long past.
    let last = first + TimeDelta::minutes(i64::try_from(boundaries).unwrap_or(1) - 1);
    let expected = i64::try_from(routines * boundaries).unwrap_or(i64::MAX);
    let give_up = last + TimeDelta::seconds(60);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM heartbeat_runs")
            .fetch_one(&database.pool)
            .await?;
        if done >= expected || Utc::now() > give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop.send(true);
    scheduler_task.await?;
    worker_task.await?;

    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>6} {:>7} {:>26} {:>34}",
        "boundary",
        "expected",
        "runs",
        "hb runs",
        "dupes",
        "missing",
        "run lateness p50/p99/max s",
        "heartbeat lateness p50/95/99/max s"
    );
    for n in 0..boundaries {
        let boundary = first + TimeDelta::minutes(i64::try_from(n).unwrap_or(0));
        let row: (i64, i64, i64, f64, f64, f64, f64, f64, f64, f64) = sqlx::query_as(
            "SELECT count(r.id), count(DISTINCT r.trigger_id), count(h.id),
                    coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.triggered_at - r.scheduled_for)), 'NaN'),
                    coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM r.triggered_at - r.scheduled_for)), 'NaN'),
                    coalesce(max(extract(epoch FROM r.triggered_at - r.scheduled_for))::float8, 'NaN'),
                    coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM h.created_at - r.scheduled_for)), 'NaN'),
                    coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM h.created_at - r.scheduled_for)), 'NaN'),
                    coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM h.created_at - r.scheduled_for)), 'NaN'),
                    coalesce(max(extract(epoch FROM h.created_at - r.scheduled_for))::float8, 'NaN')
             FROM routine_runs r LEFT JOIN heartbeat_runs h ON h.id = r.heartbeat_run_id
             WHERE r.scheduled_for = $1",
        )
        .bind(boundary)
        .fetch_one(&database.pool)
        .await?;
        let (runs, distinct, heartbeats, r50, r99, rmax, h50, h95, h99, hmax) = row;
        println!(
            "{:<22} {:>8} {:>8} {:>8} {:>6} {:>7} {:>26} {:>34}",
            boundary.format("%H:%M:%S"),
            routines,
            runs,
            heartbeats,
            runs - distinct,
            i64::try_from(routines).unwrap_or(0) - distinct,
            format!("{r50:.3}/{r99:.3}/{rmax:.3}"),
            format!("{h50:.3}/{h95:.3}/{h99:.3}/{hmax:.3}"),
        );
    }
    Ok(())
}

/// R routines with a `* * * * *` trigger each, whose first fire is the next minute boundary at
/// least 20 s away; returns that boundary.
async fn seed(database: &TestDb, routines: usize) -> anyhow::Result<DateTime<Utc>> {
    let now = Utc::now();
    let mut first = now.duration_trunc(TimeDelta::minutes(1))? + TimeDelta::minutes(1);
    if first - now < TimeDelta::seconds(20) {
        first += TimeDelta::minutes(1);
    }
    let count = i64::try_from(routines)?;
    let mut tx = database.pool.begin().await?;
    sqlx::raw_sql(
        "INSERT INTO companies (id, name, created_at) VALUES ('00000000-0000-7000-8000-000000000001', 'bench', now());
         INSERT INTO agents (id, company_id, name, created_at, updated_at)
             VALUES ('00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-000000000001', 'bench', now(), now());
         INSERT INTO projects (id, company_id, name, created_at)
             VALUES ('00000000-0000-7000-8000-000000000003', '00000000-0000-7000-8000-000000000001', 'bench', now());",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO routines (id, company_id, title, assignee_agent_id, project_id, concurrency_policy, created_at, updated_at)
         SELECT gen_random_uuid(), '00000000-0000-7000-8000-000000000001', 'bench ' || n,
                '00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-000000000003', 'always_enqueue', now(), now()
         FROM generate_series(1, $1) AS n",
    )
    .bind(count)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO routine_triggers (id, company_id, routine_id, kind, cron_expression, timezone, next_run_at, created_at, updated_at)
         SELECT gen_random_uuid(), company_id, id, 'schedule', '* * * * *', 'UTC', $1, now(), now() FROM routines",
    )
    .bind(first)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(first)
}
