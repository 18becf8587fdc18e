//! A simulated week with retention: R routines firing every minute, day after day, with
//! `NEXUS_RETENTION_DAYS=1`. Each simulated day writes that day's fires with their issues,
//! events, heartbeat runs and audit entries (seeded timestamps, as `bench history` writes
//! them), then moves the store's manual clock to the day's end and runs the real retention
//! batches (`purge_history`, 500 of each kind) until none is left, then `VACUUM`s (what
//! autovacuum does on its own) and prints the database's size. With retention the size should
//! stop growing after the first day.

use std::{sync::Arc, time::Instant};

use chrono::{DurationRound as _, TimeDelta, Utc};
use nexus_shared::{ManualClock, Store, clock::SharedClock, crypto::SecretKey, db};
use nexus_tests::TestDb;

use crate::{
    fleet::Cron,
    history::{prepare_fires, print_sizes, write_fires},
};

/// The benchmark's shape.
pub(crate) struct Shape {
    pub(crate) routines: usize,
    pub(crate) days: usize,
}

pub(crate) async fn run(shape: Shape) -> anyhow::Result<()> {
    let routines = shape.routines.clamp(1, 10_000);
    let days = shape.days.clamp(1, 14);
    let per_day = i64::try_from(routines)? * 1440;
    println!(
        "a simulated week: {routines} routines every minute ({per_day} fires a day), retention 1 day, {days} days\n"
    );
    let database = TestDb::create().await;
    crate::fleet::seed(&database, routines, Cron::DailyTomorrow).await?;
    // The simulated timeline starts at a midnight ten days ago (fires are written in the past,
    // so nothing of them is due to the scheduler's eyes, and the clock is the store's own).
    let start = Utc::now().duration_trunc(TimeDelta::days(1))? - TimeDelta::days(10);
    let clock = ManualClock::new(start);
    let shared: SharedClock = clock.clone();
    let store = Store::postgres(
        db::pool(&database.url, 4)?,
        Arc::clone(&shared),
        &SecretKey::generate(),
    )
    .scheduler();
    let mut conn = database.pool.acquire().await?;
    prepare_fires(&mut conn).await?;
    let step = TimeDelta::minutes(1) / i32::try_from(routines)?;
    println!(
        "{:<4} {:>10} {:>10} {:>12} {:>10} {:>9}",
        "day", "written s", "deleted", "deleting s", "rows/s", "db GB"
    );
    for day in 0..days {
        let day_start = start + TimeDelta::days(i64::try_from(day)?);
        let written = Instant::now();
        let mut low = 0;
        while low < per_day {
            let high = (low + 250_000).min(per_day) - 1;
            write_fires(&mut conn, low, high, day_start, step, routines).await?;
            low = high + 1;
        }
        let written = written.elapsed().as_secs_f64();
        clock.set(day_start + TimeDelta::days(1));
        let deleting = Instant::now();
        let mut deleted = 0;
        loop {
            let report = store
                .purge_history(1, nexus_shared::engine::retention::BATCH)
                .await?;
            deleted += report.total();
            if !report.more {
                break;
            }
        }
        let deleting = deleting.elapsed().as_secs_f64();
        sqlx::query("VACUUM").execute(&mut *conn).await?;
        let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&mut *conn)
            .await?;
        #[allow(clippy::cast_precision_loss)]
        let rate = deleted as f64 / deleting.max(1e-9);
        #[allow(clippy::cast_precision_loss)]
        let gigabytes = size as f64 / 1e9;
        println!(
            "{:<4} {written:>10.0} {deleted:>10} {deleting:>12.1} {rate:>10.0} {gigabytes:>9.2}",
            day + 1
        );
    }
    conn.close().await?;
    print_sizes(&database).await?;
    Ok(())
}
