//! Jitter: R routines whose only fire is the same minute boundary, once with `jitterSec: 0`
//! and once with `jitterSec: J`, each on a fresh database with the scheduler and a worker in
//! this process. For each: heartbeat runs created per second after the boundary (the peak is
//! what the model provider sees), how many seconds the burst spreads over, and lateness
//! against each fire's own instant (nominal time plus its offset): jitter must flatten the
//! curve without making fires late.

use std::time::Duration;

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use tokio::sync::watch;

use crate::{burst::in_process, cluster::Cluster, fleet::Cron};

/// What one boundary gave.
struct Curve {
    jitter: i32,
    heartbeats: i64,
    peak: i64,
    busy_seconds: usize,
    late_p50: f64,
    late_p99: f64,
    late_max: f64,
}

pub(crate) async fn run(routines: usize, jitter: usize, workers: usize) -> anyhow::Result<()> {
    let routines = routines.clamp(1, 100_000);
    let jitter = i32::try_from(jitter.clamp(1, 3600))?;
    println!(
        "jitter: {routines} routines firing once at one minute boundary, jitterSec 0 then {jitter}, \
         scheduler + worker (concurrency {workers}) in process\n"
    );
    let mut curves = Vec::new();
    for j in [0, jitter] {
        curves.push(boundary(routines, j, workers).await?);
    }
    println!(
        "{:>9} {:>10} {:>12} {:>12} {:>30}",
        "jitterSec", "hb runs", "peak per s", "busy s", "lateness p50/p99/max s"
    );
    for c in &curves {
        println!(
            "{:>9} {:>10} {:>12} {:>12} {:>30}",
            c.jitter,
            c.heartbeats,
            c.peak,
            c.busy_seconds,
            format!("{:.3}/{:.3}/{:.3}", c.late_p50, c.late_p99, c.late_max)
        );
    }
    if let [flat, spread] = &curves[..] {
        #[allow(clippy::cast_precision_loss)]
        let ratio = flat.peak as f64 / spread.peak.max(1) as f64;
        println!("\npeak without jitter / peak with jitter: {ratio:.1}×");
    }
    Ok(())
}

async fn boundary(routines: usize, jitter: i32, workers: usize) -> anyhow::Result<Curve> {
    let cluster = Cluster::new().await;
    let now = Utc::now();
    let mut at: DateTime<Utc> = now.duration_trunc(TimeDelta::minutes(1))? + TimeDelta::minutes(1);
    if at - now < TimeDelta::seconds(20) {
        at += TimeDelta::minutes(1);
    }
    crate::fleet::seed(&cluster.db, routines, Cron::OnceAt(at, jitter)).await?;
    sqlx::query("CHECKPOINT").execute(&cluster.db.pool).await?;
    let (stop, stopped) = watch::channel(false);
    let tasks = in_process(&cluster, workers, 100, Duration::from_secs(5), stopped)?;
    let give_up = at + TimeDelta::seconds(i64::from(jitter) + 60);
    let expected = i64::try_from(routines)?;
    loop {
        let count = crate::fleet::heartbeat_runs(&cluster.db).await?;
        if count >= expected || Utc::now() > give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop.send(true);
    for task in tasks {
        task.await?;
    }
    let per_second: Vec<(f64, i64)> = sqlx::query_as(
        "SELECT floor(extract(epoch FROM h.created_at - $1::timestamptz))::float8 AS s, count(*)
         FROM heartbeat_runs h WHERE h.agent_id = '00000000-0000-7000-8000-000000000002'
         GROUP BY 1 ORDER BY 1",
    )
    .bind(at)
    .fetch_all(&cluster.db.pool)
    .await?;
    let (heartbeats, p50, p99, max): (i64, f64, f64, f64) = sqlx::query_as(
        "SELECT count(h.id),
                coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM h.created_at - r.fire_at)), 'NaN'),
                coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM h.created_at - r.fire_at)), 'NaN'),
                coalesce(max(extract(epoch FROM h.created_at - r.fire_at))::float8, 'NaN')
         FROM routine_runs r JOIN heartbeat_runs h ON h.id = r.heartbeat_run_id
         WHERE r.scheduled_for = $1",
    )
    .bind(at)
    .fetch_one(&cluster.db.pool)
    .await?;
    Ok(Curve {
        jitter,
        heartbeats,
        peak: per_second.iter().map(|(_, n)| *n).max().unwrap_or(0),
        busy_seconds: per_second.len(),
        late_p50: p50,
        late_p99: p99,
        late_max: max,
    })
}
