//! Scale at rest: N routines whose schedule triggers fire tomorrow. Measures the scheduler's
//! tick (a fire pass plus the next-fire query) with nothing due and with a fixed number of
//! due fires, and the memory of each role's process after it has started on that database and
//! handled a round of fires — for each N, so the costs can be compared as N grows.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::TimeDelta;
use nexus_shared::{Store, SystemClock, crypto::SecretKey, db, store::Leadership};

use crate::{
    cluster::Cluster,
    fleet::{self, Cron},
    machine::percentile,
};

/// What one size measured.
struct Row {
    routines: usize,
    idle_p50: f64,
    idle_p99: f64,
    busy: f64,
    memory: Vec<(String, f64, f64)>,
}

pub(crate) async fn run(sizes: &[usize], due: usize) -> anyhow::Result<()> {
    let due = due.clamp(1, 10_000);
    println!(
        "scale at rest: schedule triggers firing tomorrow; idle tick = fire pass + next-fire query with nothing due (200 ticks); busy tick = fire pass with {due} due fires (mean of 3)\n"
    );
    let mut rows = Vec::new();
    for &n in sizes {
        rows.push(measure(n.clamp(1_000, 2_000_000), due).await?);
    }
    println!(
        "\n{:>10} {:>16} {:>16} {:>16} {:>34}",
        "routines",
        "idle tick p50 ms",
        "idle tick p99 ms",
        "busy tick ms",
        "RSS MiB api/scheduler/worker (peak)"
    );
    for row in &rows {
        let memory: Vec<String> = row
            .memory
            .iter()
            .map(|(_, rss, peak)| format!("{rss:.0} ({peak:.0})"))
            .collect();
        println!(
            "{:>10} {:>16.2} {:>16.2} {:>16.1} {:>34}",
            row.routines,
            row.idle_p50,
            row.idle_p99,
            row.busy,
            memory.join(" / ")
        );
    }
    if let (Some(small), Some(large)) = (rows.first(), rows.last())
        && rows.len() > 1
    {
        println!(
            "\nratio {} / {} routines: idle tick p50 {:.2}x, busy tick {:.2}x",
            large.routines,
            small.routines,
            large.idle_p50 / small.idle_p50,
            large.busy / small.busy
        );
    }
    Ok(())
}

async fn measure(routines: usize, due: usize) -> anyhow::Result<Row> {
    let mut cluster = Cluster::new().await;
    let seeding = Instant::now();
    fleet::seed(&cluster.db, routines, Cron::DailyTomorrow).await?;
    println!(
        "{routines} routines seeded in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let store = Store::postgres(
        db::pool(&cluster.db.url, 4)?,
        Arc::new(SystemClock),
        &SecretKey::generate(),
    );
    let leadership = Leadership {
        epoch: 1,
        leader_id: "bench".to_owned(),
    };
    let grace = TimeDelta::seconds(60);

    let mut idle = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let report = store
            .fire_due(&leadership, grace, TimeDelta::zero(), 500)
            .await?;
        store.next_fire_at().await?;
        idle.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(report.triggers == 0, "nothing should be due");
    }
    idle.sort_by(f64::total_cmp);

    let mut busy = 0.0;
    for _ in 0..3 {
        make_due(&cluster, due).await?;
        let started = Instant::now();
        let report = store
            .fire_due(&leadership, grace, TimeDelta::zero(), 500)
            .await?;
        busy += started.elapsed().as_secs_f64() * 1000.0 / 3.0;
        anyhow::ensure!(
            report.dispatched == due,
            "{} of {due} fired",
            report.dispatched
        );
    }

    // The roles as processes: started on this database, then one more round of fires for them
    // to handle (the scheduler fires it, the worker dispatches it and the backlog above).
    // (Made due before they start: the benchmark's own UPDATE of many triggers would otherwise
    // contend with the worker's.)
    make_due(&cluster, due).await?;
    let env = [("NEXUS_LEADER_TTL_SECS", "5".to_owned())];
    cluster.start("nexus-api", "nexus-api", &[], &env).await?;
    cluster
        .start("nexus-scheduler", "nexus-scheduler", &[], &env)
        .await?;
    cluster
        .start("nexus-worker", "nexus-worker", &[], &env)
        .await?;
    let expected = i64::try_from(due * 4)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = crate::fleet::heartbeat_runs(&cluster.db).await?;
        if done >= expected {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{done} of {expected} heartbeat runs after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Row {
        routines,
        idle_p50: percentile(&idle, 50.0),
        idle_p99: percentile(&idle, 99.0),
        busy,
        memory: cluster.memory(),
    })
}

/// Makes `due` triggers (ones that have not fired yet) due a second ago.
async fn make_due(cluster: &Cluster, due: usize) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE routine_triggers SET next_run_at = now() - interval '1 second'
         WHERE id IN (SELECT id FROM routine_triggers WHERE last_fired_at IS NULL AND next_run_at > now()
                      ORDER BY next_run_at DESC LIMIT $1)",
    )
    .bind(i64::try_from(due)?)
    .execute(&cluster.db.pool)
    .await?;
    Ok(())
}
