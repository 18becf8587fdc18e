//! Minute burst: R routines, each with one `* * * * *` UTC schedule, created before a minute boundary; for
//! the next B boundaries: fires expected, runs and heartbeat runs created, duplicates, missing,
//! and lateness (run triggered − boundary, heartbeat run created − boundary). The scheduler and
//! workers run in the benchmark's process, in one `nexus serve`, or as separate
//! `nexus-scheduler` and `nexus-worker` processes. The scheduler prepares fires
//! `--lookahead-ms` ahead (5,000 by default, as `NEXUS_SCHEDULE_LOOKAHEAD_MS`; 0 prepares
//! nothing): the CPU and write-ahead log of the seconds before each boundary are printed apart
//! from those of the boundary itself.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use nexus_scheduler::{LeaderLock, Scheduler};
use nexus_shared::{Store, SystemClock, coord::Coordination, crypto::SecretKey, db, kv::Redis};
use nexus_tests::{TestDb, redis_url};

use crate::{cluster::Cluster, fleet::Cron, machine::CpuReading};
use nexus_worker::Worker;
use tokio::sync::watch;

/// Where the scheduler and the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// In the benchmark's own process (the library code `nexus serve` runs).
    InProcess,
    /// One `nexus serve` process.
    Serve,
    /// One `nexus-scheduler` and several `nexus-worker` processes.
    Split,
}

impl std::str::FromStr for Mode {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "in-process" => Ok(Self::InProcess),
            "serve" => Ok(Self::Serve),
            "split" => Ok(Self::Split),
            _ => anyhow::bail!("--mode is in-process, serve or split"),
        }
    }
}

/// The burst's shape.
pub(crate) struct Shape {
    pub(crate) routines: usize,
    pub(crate) boundaries: usize,
    /// Worker concurrency (per worker process).
    pub(crate) workers: usize,
    /// Worker processes (split mode).
    pub(crate) processes: usize,
    /// Dispatch jobs per worker transaction.
    pub(crate) batch: usize,
    pub(crate) mode: Mode,
    /// How far ahead the scheduler prepares fires.
    pub(crate) lookahead_ms: u64,
}

pub(crate) async fn run(shape: Shape) -> anyhow::Result<()> {
    let routines = shape.routines.clamp(1, 100_000);
    let boundaries = shape.boundaries.clamp(1, 5);
    let mut cluster = Cluster::new().await;
    let first = seed(&cluster.db, routines).await?;
    // Every run starts its burst just after a checkpoint, so every run pays the same full-page
    // writes (the first change of each page after a checkpoint logs the whole page); otherwise
    // where the periodic checkpoint falls would move the figures from run to run.
    sqlx::query("CHECKPOINT").execute(&cluster.db.pool).await?;
    let workers = shape.workers;
    let lookahead = Duration::from_millis(shape.lookahead_ms.min(60_000));
    // The window before a boundary whose work is its preparation.
    let before = TimeDelta::from_std(lookahead)? + TimeDelta::seconds(1);
    match shape.mode {
        Mode::InProcess => println!(
            "minute burst (in process): {routines} routines `* * * * *`, {boundaries} boundaries, worker concurrency {workers}, batch {}",
            shape.batch
        ),
        Mode::Serve => println!(
            "minute burst (`nexus serve`): {routines} routines `* * * * *`, {boundaries} boundaries, worker concurrency {workers}, batch {}",
            shape.batch
        ),
        Mode::Split => println!(
            "minute burst (nexus-scheduler + {} nexus-worker): {routines} routines `* * * * *`, {boundaries} boundaries, worker concurrency {workers} each, batch {}",
            shape.processes, shape.batch
        ),
    }
    println!(
        "first boundary {first}, fires prepared {} ms ahead\n",
        lookahead.as_millis()
    );

    let role_env = [
        ("NEXUS_WORKER_CONCURRENCY", workers.to_string()),
        ("NEXUS_WORKER_BATCH", shape.batch.to_string()),
        ("NEXUS_DB_MAX_CONNECTIONS", (workers + 6).to_string()),
        (
            "NEXUS_SCHEDULE_LOOKAHEAD_MS",
            lookahead.as_millis().to_string(),
        ),
    ];
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    match shape.mode {
        Mode::InProcess => {
            tasks = in_process(&cluster, workers, shape.batch, lookahead, stopped)?;
        }
        Mode::Serve => {
            cluster
                .start("nexus serve", "nexus", &["serve"], &role_env)
                .await?;
        }
        Mode::Split => {
            cluster
                .start("nexus-scheduler", "nexus-scheduler", &[], &role_env)
                .await?;
            for n in 1..=shape.processes.max(1) {
                cluster
                    .start(&format!("nexus-worker {n}"), "nexus-worker", &[], &role_env)
                    .await?;
            }
        }
    }

    // Wait (bounded) until every expected heartbeat run exists, or the last boundary is long past.
    let last = first + TimeDelta::minutes(i64::try_from(boundaries).unwrap_or(1) - 1);
    let give_up = last + TimeDelta::seconds(60);
    // When each boundary's heartbeat runs were all visible (committed), seen by polling.
    let mut visible: Vec<Option<DateTime<Utc>>> = vec![None; boundaries];
    // CPU used by each boundary: from the last reading before it to the one that saw it done.
    let mut cpu_before = vec![CpuReading::default(); boundaries];
    let mut cpu_used = vec![None; boundaries];
    // Write-ahead log written by each boundary, in bytes: the write work, machine-independent.
    let mut wal_before = vec![0.0; boundaries];
    let mut wal_used = vec![None; boundaries];
    // The same from `before` ahead of the boundary up to it: the preparation.
    let mut early = vec![(CpuReading::default(), 0.0); boundaries];
    let mut prepared = vec![None; boundaries];
    loop {
        let reading = CpuReading::now();
        let wal = wal_position(&cluster.db).await?;
        // A cheap count (the benchmark must not load the database it measures): boundary n
        // is all seen once (n + 1) × R heartbeat runs exist.
        let count = crate::fleet::heartbeat_runs(&cluster.db).await?;
        let observed = Utc::now();
        for (n, slot) in visible.iter_mut().enumerate() {
            let boundary = first + TimeDelta::minutes(i64::try_from(n).unwrap_or(0));
            if observed < boundary - before {
                early[n] = (reading, wal);
            }
            if observed < boundary {
                cpu_before[n] = reading;
                wal_before[n] = wal;
            } else if prepared[n].is_none() {
                prepared[n] = Some((cpu_before[n].since(early[n].0), wal_before[n] - early[n].1));
            }
            if count >= i64::try_from((n + 1) * routines).unwrap_or(i64::MAX) && slot.is_none() {
                *slot = Some(observed);
                cpu_used[n] = Some(CpuReading::now().since(cpu_before[n]));
                wal_used[n] = Some(wal_position(&cluster.db).await? - wal_before[n]);
            }
        }
        if visible.iter().all(Option::is_some) || observed > give_up {
            break;
        }
        // Poll fast just before a boundary, so the CPU reading before it is close to it.
        let next = visible
            .iter()
            .enumerate()
            .filter(|(_, seen)| seen.is_none())
            .map(|(n, _)| first + TimeDelta::minutes(i64::try_from(n).unwrap_or(0)))
            .flat_map(|b| [b - before, b])
            .find(|b| *b > observed);
        let pause = next.map_or(200, |b| (b - observed).num_milliseconds().clamp(1, 200));
        tokio::time::sleep(Duration::from_millis(u64::try_from(pause).unwrap_or(200))).await;
    }
    let _ = stop.send(true);
    for task in tasks {
        task.await?;
    }
    let database = &cluster.db;

    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>6} {:>7} {:>26} {:>34} {:>12} {:>17} {:>7} {:>21}",
        "boundary",
        "expected",
        "runs",
        "hb runs",
        "dupes",
        "missing",
        "run lateness p50/p99/max s",
        "heartbeat lateness p50/95/99/max s",
        "all seen s",
        "cpu s pg/machine",
        "wal MB",
        "before: cpu s/wal MB"
    );
    for (n, (((seen, cpu), wal), ahead)) in visible
        .iter()
        .zip(&cpu_used)
        .zip(&wal_used)
        .zip(&prepared)
        .enumerate()
    {
        let boundary = first + TimeDelta::minutes(i64::try_from(n).unwrap_or(0));
        let row = boundary_stats(database, boundary).await?;
        let (runs, distinct, heartbeats, r50, r99, rmax, h50, h95, h99, hmax) = row;
        println!(
            "{:<10} {:>8} {:>8} {:>8} {:>6} {:>7} {:>26} {:>34} {:>12} {:>17} {:>7} {:>21}",
            boundary.format("%H:%M:%S"),
            routines,
            runs,
            heartbeats,
            runs - distinct,
            i64::try_from(routines).unwrap_or(0) - distinct,
            format!("{r50:.3}/{r99:.3}/{rmax:.3}"),
            format!("{h50:.3}/{h95:.3}/{h99:.3}/{hmax:.3}"),
            seen.map_or_else(
                || "never".to_owned(),
                |at| format!("≤{:.2}", (at - boundary).as_seconds_f64())
            ),
            cpu.map_or_else(
                || "-".to_owned(),
                |c| format!("{:.2}/{:.2}", c.postgres, c.machine)
            ),
            wal.map_or_else(|| "-".to_owned(), |w| format!("{:.1}", w / 1e6)),
            ahead.map_or_else(
                || "-".to_owned(),
                |(c, w)| format!("{:.2}/{:.1}", c.machine, w / 1e6)
            ),
        );
    }
    if shape.mode != Mode::InProcess {
        cluster.print_memory();
    }
    Ok(())
}

/// Starts a scheduler (leading through Redis) and a worker of `workers` concurrency in this
/// process, against the cluster's database, until `stopped` says stop: the library code
/// `nexus serve` runs.
pub(crate) fn in_process(
    cluster: &Cluster,
    workers: usize,
    batch: usize,
    lookahead: Duration,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    in_process_keeping(cluster, workers, batch, lookahead, None, stopped)
}

/// [`in_process`] with the scheduler deleting history older than `retention_days`.
pub(crate) fn in_process_keeping(
    cluster: &Cluster,
    workers: usize,
    batch: usize,
    lookahead: Duration,
    retention_days: Option<u32>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let key = SecretKey::generate();
    let store = Store::postgres(
        db::pool(&cluster.db.url, u32::try_from(workers + 6)?)?,
        Arc::new(SystemClock),
        &key,
    );
    let redis = Redis::new(&redis_url(), cluster.prefix(), Arc::new(SystemClock))?;
    let scheduler = Scheduler::new(
        store.clone(),
        LeaderLock::new(
            Coordination::Redis(redis),
            "bench-scheduler".to_owned(),
            Duration::from_secs(15),
        ),
        nexus_scheduler::Settings {
            lookahead,
            retention_days,
            ..Default::default()
        },
    );
    let worker_settings = nexus_worker::Settings {
        concurrency: workers,
        batch,
        ..Default::default()
    };
    let worker = Worker::new(store, "bench-worker".to_owned(), worker_settings)?;
    Ok(vec![
        tokio::spawn(scheduler.run(stopped.clone())),
        tokio::spawn(worker.run(stopped)),
    ])
}

/// The current write-ahead log position, in bytes.
pub(crate) async fn wal_position(database: &TestDb) -> anyhow::Result<f64> {
    Ok(
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8")
            .fetch_one(&database.pool)
            .await?,
    )
}

/// R routines with a `* * * * *` trigger each, whose first fire is the next minute boundary at
/// least 20 s away; returns that boundary.
async fn seed(database: &TestDb, routines: usize) -> anyhow::Result<DateTime<Utc>> {
    let now = Utc::now();
    let mut first = now.duration_trunc(TimeDelta::minutes(1))? + TimeDelta::minutes(1);
    if first - now < TimeDelta::seconds(20) {
        first += TimeDelta::minutes(1);
    }
    crate::fleet::seed(database, routines, Cron::EveryMinuteFrom(first)).await?;
    if std::env::var_os("BENCH_WITHOUT_EVENTS").is_some() {
        // For an A/B of what live updates cost a fire: the same binary without the triggers
        // that write each change's outbox row.
        sqlx::raw_sql(
            "DROP TRIGGER routine_runs_created ON routine_runs;
             DROP TRIGGER routine_runs_updated ON routine_runs;
             DROP TRIGGER routines_updated ON routines;
             DROP TRIGGER routine_triggers_changed ON routine_triggers;
             DROP TRIGGER routine_triggers_updated ON routine_triggers;",
        )
        .execute(&database.pool)
        .await?;
        println!("(BENCH_WITHOUT_EVENTS: no outbox rows are written)");
    }
    Ok(first)
}

/// Of the runs scheduled for `boundary`: runs, distinct triggers, heartbeat runs, run lateness
/// p50/p99/max and heartbeat lateness p50/p95/p99/max, in seconds.
pub(crate) async fn boundary_stats(
    database: &TestDb,
    boundary: DateTime<Utc>,
) -> anyhow::Result<(i64, i64, i64, f64, f64, f64, f64, f64, f64, f64)> {
    Ok(sqlx::query_as(
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
    .await?)
}
