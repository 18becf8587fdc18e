//! Queue throughput: the job queue's own ceiling. N no-op jobs are enqueued, then worker loops
//! claim, fence and complete them (no handler runs) until none is left; jobs per second, for
//! one job per claim and for batches.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use nexus_shared::{Store, SystemClock, crypto::SecretKey, db, queue::Queue};
use nexus_tests::TestDb;

pub(crate) async fn run(jobs: usize, loops: usize) -> anyhow::Result<()> {
    let jobs = jobs.clamp(100, 1_000_000);
    let loops = loops.clamp(1, 64);
    println!(
        "queue throughput: {jobs} no-op jobs, {loops} loops claiming, fencing and completing (one transaction per claim)\n"
    );
    println!(
        "{:>14} {:>10} {:>12}",
        "jobs per claim", "seconds", "jobs/s"
    );
    let mut rates = Vec::new();
    for batch in [1, 10, 100] {
        let database = TestDb::create().await;
        sqlx::query(
            "INSERT INTO jobs (id, kind, payload, state, run_at, max_attempts, created_at, updated_at)
             SELECT gen_random_uuid(), 'bench_noop', jsonb_build_object('n', n), 'queued', now(), 1, now(), now()
             FROM generate_series(1, $1) AS n",
        )
        .bind(i64::try_from(jobs)?)
        .execute(&database.pool)
        .await?;
        sqlx::query("ANALYZE jobs").execute(&database.pool).await?;
        let store = Store::postgres(
            db::pool(&database.url, u32::try_from(loops)?)?,
            Arc::new(SystemClock),
            &SecretKey::generate(),
        );
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..loops {
            let queue = Queue::new(&store, format!("bench-{n}"), Duration::from_secs(60));
            tasks.spawn(async move {
                let mut done = 0;
                loop {
                    let claimed = queue.claim(batch).await?;
                    if claimed.is_empty() {
                        return anyhow::Ok(done);
                    }
                    done += queue.complete_all(&claimed).await?.len();
                }
            });
        }
        let mut done = 0;
        for result in tasks.join_all().await {
            done += result?;
        }
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(done == jobs, "{done} of {jobs} jobs completed");
        #[allow(clippy::cast_precision_loss)]
        let rate = done as f64 / seconds;
        rates.push(rate);
        println!("{batch:>14} {seconds:>10.2} {rate:>12.0}");
    }
    println!("\nratio batch 100 / batch 1: {:.1}x", rates[2] / rates[0]);
    Ok(())
}
