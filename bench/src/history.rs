//! History at scale: the same minute burst (R routines `* * * * *`, in process) on a fresh
//! database, then on one holding H past fires — each a schedule run with its issue (closed),
//! two issue events, a heartbeat run and two audit entries, in the routines' own company — then
//! on that database again while the scheduler's retention deletes the E oldest of them; then
//! the API's list latencies (a routine's runs, the company's issues, its activity) at that
//! size, through a real `nexus-api`. All phases in one run, so the ratios compare like with
//! like.

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use nexus_tests::TestDb;
use tokio::sync::watch;

use crate::{
    burst::{boundary_stats, in_process_keeping},
    cluster::{BOARD, Cluster},
    fleet::{COMPANY, Cron},
};

/// The benchmark's shape.
pub(crate) struct Shape {
    pub(crate) routines: usize,
    /// Past fires seeded.
    pub(crate) history: usize,
    /// Of them, older than the retention period.
    pub(crate) expired: usize,
    pub(crate) boundaries: usize,
    pub(crate) workers: usize,
    pub(crate) batch: usize,
    /// Requests per list in the API phase.
    pub(crate) requests: usize,
}

/// The retention period of the third phase, in days; the history spans more, so that
/// `expired` of its fires are older.
const RETENTION_DAYS: u32 = 3;

pub(crate) async fn run(shape: Shape) -> anyhow::Result<()> {
    let routines = shape.routines.clamp(1, 100_000);
    let history = shape.history.clamp(1, 20_000_000);
    let expired = shape.expired.min(history - 1);
    let boundaries = shape.boundaries.clamp(1, 5);
    println!(
        "history at scale: {routines} routines `* * * * *`, {boundaries} boundaries per phase, \
         worker concurrency {}, batch {}; history {history} fires, {expired} older than {RETENTION_DAYS} days\n",
        shape.workers, shape.batch
    );
    let phase = |name: &str| println!("\n== {name}");

    phase("fresh database");
    let fresh = Cluster::new().await;
    crate::fleet::seed(&fresh.db, routines, Cron::DailyTomorrow).await?;
    let first = arm(&fresh.db).await?;
    let fresh_rows = burst(&fresh, first, boundaries, &shape, None).await?;
    print_sizes(&fresh.db).await?;
    drop(fresh);

    phase("database holding the history");
    let mut big = Cluster::new().await;
    crate::fleet::seed(&big.db, routines, Cron::DailyTomorrow).await?;
    seed_history(&big.db, routines, history, expired).await?;
    print_sizes(&big.db).await?;
    let first = arm(&big.db).await?;
    let history_rows = burst(&big, first, boundaries, &shape, None).await?;

    phase("the same database while retention deletes the expired history");
    let phase_start = Utc::now();
    let before = past_issues(&big.db, phase_start).await?;
    let first = arm(&big.db).await?;
    let retention_started = Instant::now();
    let retention_rows = burst(&big, first, boundaries, &shape, Some(RETENTION_DAYS)).await?;
    let seconds = retention_started.elapsed().as_secs_f64();
    let deleted = before - past_issues(&big.db, phase_start).await?;
    #[allow(clippy::cast_precision_loss)]
    let rate = deleted as f64 / seconds;
    println!(
        "retention deleted {deleted} past fires (each an issue with its events, heartbeat run and run) \
         in the {seconds:.0} s of the phase: {rate:.0} fires/s"
    );

    phase("retention batches alone, on that database (no burst, no pacing)");
    direct_batches(&big.db.url, 10).await?;

    phase("summary (heartbeat lateness p99, worst boundary)");
    let worst = |rows: &[f64]| rows.iter().copied().fold(0.0, f64::max);
    let (f, h, r) = (
        worst(&fresh_rows),
        worst(&history_rows),
        worst(&retention_rows),
    );
    println!(
        "fresh {f:.3} s, with history {h:.3} s ({:.2}× fresh), during retention {r:.3} s ({:.2}× with history)",
        h / f,
        r / h
    );

    phase("API list latency at that size (nexus-api, sequential requests)");
    let url = big
        .start(
            "nexus-api",
            "nexus-api",
            &[],
            &[("NEXUS_LOG", "warn".to_owned())],
        )
        .await?;
    api_latency(&big.db, &url, shape.requests).await?;
    if std::env::var_os("BENCH_KEEP_DATABASE").is_some() {
        big.keep_database();
    }
    Ok(())
}

/// Makes every seeded trigger fire every minute from the next boundary at least 20 s away;
/// returns it. A checkpoint first, so that every phase starts with the same full-page writes.
async fn arm(database: &TestDb) -> anyhow::Result<DateTime<Utc>> {
    let now = Utc::now();
    let mut first = now.duration_trunc(TimeDelta::minutes(1))? + TimeDelta::minutes(1);
    if first - now < TimeDelta::seconds(20) {
        first += TimeDelta::minutes(1);
    }
    sqlx::query(
        "UPDATE routine_triggers SET cron_expression = '* * * * *', next_run_at = $1
         WHERE company_id = $2",
    )
    .bind(first)
    .bind(COMPANY)
    .execute(&database.pool)
    .await?;
    sqlx::query("CHECKPOINT").execute(&database.pool).await?;
    Ok(first)
}

/// Runs the scheduler and worker in process across `boundaries` boundaries from `first`,
/// prints each boundary's figures and returns each one's heartbeat lateness p99.
async fn burst(
    cluster: &Cluster,
    first: DateTime<Utc>,
    boundaries: usize,
    shape: &Shape,
    retention_days: Option<u32>,
) -> anyhow::Result<Vec<f64>> {
    let routines = i64::try_from(shape.routines)?;
    let (stop, stopped) = watch::channel(false);
    let tasks = in_process_keeping(
        cluster,
        shape.workers,
        shape.batch,
        Duration::from_secs(5),
        retention_days,
        stopped,
    )?;
    let last = first + TimeDelta::minutes(i64::try_from(boundaries)? - 1);
    let give_up = last + TimeDelta::seconds(60);
    let expected = |n: usize| routines * i64::try_from(n + 1).unwrap_or(1);
    let mut seen = vec![None; boundaries];
    let mut done = 0;
    let counted = count_burst_heartbeats(&cluster.db).await?;
    while done < boundaries && Utc::now() < give_up {
        let count = count_burst_heartbeats(&cluster.db).await? - counted;
        let now = Utc::now();
        for (n, slot) in seen.iter_mut().enumerate() {
            if slot.is_none() && count >= expected(n) {
                *slot = Some(now);
                done += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(true);
    for task in tasks {
        task.await?;
    }
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>6} {:>26} {:>34} {:>11}",
        "boundary",
        "expected",
        "runs",
        "hb runs",
        "dupes",
        "run lateness p50/p99/max s",
        "heartbeat lateness p50/95/99/max s",
        "all seen s"
    );
    let mut p99s = Vec::new();
    for (n, at) in seen.iter().enumerate() {
        let boundary = first + TimeDelta::minutes(i64::try_from(n)?);
        let (runs, distinct, heartbeats, r50, r99, rmax, h50, h95, h99, hmax) =
            boundary_stats(&cluster.db, boundary).await?;
        println!(
            "{:<10} {:>8} {:>8} {:>8} {:>6} {:>26} {:>34} {:>11}",
            boundary.format("%H:%M:%S"),
            routines,
            runs,
            heartbeats,
            runs - distinct,
            format!("{r50:.3}/{r99:.3}/{rmax:.3}"),
            format!("{h50:.3}/{h95:.3}/{h99:.3}/{hmax:.3}"),
            at.map_or_else(
                || "never".to_owned(),
                |at| format!("≤{:.2}", (at - boundary).as_seconds_f64())
            ),
        );
        p99s.push(h99);
    }
    Ok(p99s)
}

async fn count_burst_heartbeats(database: &TestDb) -> anyhow::Result<i64> {
    crate::fleet::heartbeat_runs(database).await
}

/// `n` retention batches one after another through the store, each timed: what a batch
/// costs at this size, without the pacing. Also `bench purge --database URL`, on a database
/// an earlier run kept (`BENCH_KEEP_DATABASE`).
pub(crate) async fn direct_batches(url: &str, n: usize) -> anyhow::Result<()> {
    let store = nexus_shared::Store::postgres(
        nexus_shared::db::pool(url, 2)?,
        std::sync::Arc::new(nexus_shared::SystemClock),
        &nexus_shared::crypto::SecretKey::generate(),
    )
    .scheduler();
    let mut times = Vec::with_capacity(n);
    let mut fires = 0;
    let mut rows = 0;
    for _ in 0..n {
        let started = Instant::now();
        let report = store
            .purge_history(RETENTION_DAYS, nexus_shared::engine::retention::BATCH)
            .await?;
        times.push(started.elapsed().as_secs_f64());
        fires += report.issues;
        rows += report.total();
    }
    let total: f64 = times.iter().sum();
    times.sort_by(f64::total_cmp);
    #[allow(clippy::cast_precision_loss)]
    let per_second = fires as f64 / total;
    println!(
        "{n} batches: {fires} fires ({rows} rows) in {total:.2} s — batch p50 {:.0} ms, max {:.0} ms; {per_second:.0} fires/s",
        times[times.len() / 2] * 1e3,
        times[times.len() - 1] * 1e3
    );
    Ok(())
}

/// Issues created before `at` (the seeded history, less what retention deleted).
async fn past_issues(database: &TestDb, at: DateTime<Utc>) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM issues WHERE created_at < $1")
            .bind(at)
            .fetch_one(&database.pool)
            .await?,
    )
}

/// `history` past fires of the seeded routines, spread evenly over the time that makes
/// `expired` of them older than [`RETENTION_DAYS`], written oldest first in chunks, then
/// `VACUUM ANALYZE`d — all on one connection, closed at the end (see [`prepare_fires`]).
async fn seed_history(
    database: &TestDb,
    routines: usize,
    history: usize,
    expired: usize,
) -> anyhow::Result<()> {
    #[allow(clippy::cast_precision_loss)]
    let span_secs =
        f64::from(RETENTION_DAYS) * 86_400.0 * history as f64 / (history - expired).max(1) as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let step = TimeDelta::microseconds((span_secs * 1e6 / history as f64) as i64);
    let total = i64::try_from(history)?;
    let origin = Utc::now() - TimeDelta::minutes(10) - step * i32::try_from(total)?;
    let mut conn = database.pool.acquire().await?;
    prepare_fires(&mut conn).await?;
    let started = Instant::now();
    let mut low = 1;
    while low <= total {
        let high = (low + 249_999).min(total);
        write_fires(&mut conn, low, high, origin, step, routines).await?;
        println!(
            "  … {high} of {history} fires seeded ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
        low = high + 1;
    }
    println!(
        "seeded {history} fires in {:.0} s; VACUUM ANALYZE …",
        started.elapsed().as_secs_f64()
    );
    sqlx::query("VACUUM ANALYZE").execute(&mut *conn).await?;
    conn.close().await?;
    Ok(())
}

/// Sets up `conn` for [`write_fires`]: the agent of the past heartbeat runs (the bursts'
/// heartbeat runs are counted by their own agent), the seeded routines numbered, and two
/// helpers — ids ordered by time as the product's (UUID v7) are, and the fires of a range.
/// The connection runs as a replica (`session_replication_role`), so the seeded past fires
/// fire no trigger: the history they stand for was streamed to consoles long ago, and its
/// outbox rows would otherwise wait for the first API process to number millions of them.
/// Its statements have no time limit. These settings, the table and the helpers belong to the
/// session: close the connection afterwards rather than return it to the pool.
pub(crate) async fn prepare_fires(conn: &mut sqlx::PgConnection) -> anyhow::Result<()> {
    sqlx::raw_sql(
        "SET synchronous_commit = off;
         SET session_replication_role = replica;
         SET statement_timeout = 0;
         INSERT INTO agents (id, company_id, name, created_at, updated_at)
             VALUES ('00000000-0000-7000-8000-0000000000b2', '00000000-0000-7000-8000-000000000001', 'history', now(), now());
         CREATE TEMP TABLE fleet AS
             SELECT (row_number() OVER (ORDER BY r.id) - 1)::int AS k, r.id AS routine_id, t.id AS trigger_id
             FROM routines r JOIN routine_triggers t ON t.routine_id = r.id
             WHERE r.company_id = '00000000-0000-7000-8000-000000000001';
         CREATE UNIQUE INDEX ON fleet (k);
         CREATE FUNCTION pg_temp.v7(at timestamptz, seed text) RETURNS uuid
             LANGUAGE sql IMMUTABLE AS $$
             SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7'
                     || substr(md5(seed), 1, 3) || '8' || substr(md5(seed), 4, 15))::uuid $$;
         CREATE FUNCTION pg_temp.fires(low bigint, high bigint, origin timestamptz, step interval)
             RETURNS TABLE (n bigint, at timestamptz)
             LANGUAGE sql AS $$
             SELECT n, origin + n * step FROM generate_series(low, high) AS n $$;",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Fires `low..=high`, fire n at `origin + n × step` of routine `n % routines`, each finished:
/// a schedule run (completed 5 minutes later), its issue (done), two issue events, a heartbeat
/// run and two audit entries — in one transaction, oldest first.
pub(crate) async fn write_fires(
    conn: &mut sqlx::PgConnection,
    low: i64,
    high: i64,
    origin: DateTime<Utc>,
    step: TimeDelta,
    routines: usize,
) -> anyhow::Result<()> {
    let statements = [
        "INSERT INTO routine_runs (id, company_id, routine_id, trigger_id, source, status, scheduled_for,
                                   triggered_at, completed_at, payload, linked_issue_id, heartbeat_run_id,
                                   updated_at, timezone, fire_at)
         SELECT pg_temp.v7(at, 'run' || n), $4, f.routine_id, f.trigger_id, 'schedule', 'completed', at, at,
                at + interval '5 minutes', '{}', pg_temp.v7(at, 'issue' || n), pg_temp.v7(at, 'heartbeat' || n),
                at + interval '5 minutes', 'UTC', at
         FROM pg_temp.fires($1, $2, $3, $6) JOIN fleet f ON f.k = n % $5",
        "INSERT INTO run_issue_links (issue_id, run_id)
         SELECT pg_temp.v7(at, 'issue' || n), pg_temp.v7(at, 'run' || n)
         FROM pg_temp.fires($1, $2, $3, $6) WHERE $5 > 0",
        "INSERT INTO issues (id, company_id, title, project_id, assignee_agent_id, status, routine_id,
                             origin_run_id, created_at, updated_at)
         SELECT pg_temp.v7(at, 'issue' || n), $4, 'bench report', '00000000-0000-7000-8000-000000000003',
                '00000000-0000-7000-8000-000000000002', 'done', f.routine_id, pg_temp.v7(at, 'run' || n),
                at, at + interval '5 minutes'
         FROM pg_temp.fires($1, $2, $3, $6) JOIN fleet f ON f.k = n % $5",
        "INSERT INTO issue_events (id, company_id, issue_id, type, actor_type, data, created_at)
         SELECT pg_temp.v7(at + e * interval '5 minutes', 'event' || e || n), $4, pg_temp.v7(at, 'issue' || n),
                CASE WHEN e = 0 THEN 'created' ELSE 'status_changed' END, 'system', '{}',
                at + e * interval '5 minutes'
         FROM pg_temp.fires($1, $2, $3, $6), generate_series(0, 1) AS e
         WHERE $5 > 0",
        "INSERT INTO heartbeat_runs (id, company_id, agent_id, issue_id, routine_run_id, status, context,
                                     created_at, started_at, finished_at)
         SELECT pg_temp.v7(at, 'heartbeat' || n), $4, '00000000-0000-7000-8000-0000000000b2',
                pg_temp.v7(at, 'issue' || n), pg_temp.v7(at, 'run' || n), 'succeeded', '{}', at, at,
                at + interval '1 minute'
         FROM pg_temp.fires($1, $2, $3, $6) WHERE $5 > 0",
        "INSERT INTO activity_log (id, company_id, actor_type, action, entity_type, entity_id, details, created_at)
         SELECT pg_temp.v7(at + e * interval '5 minutes', 'activity' || e || n), $4, 'system',
                CASE WHEN e = 0 THEN 'run.dispatched' ELSE 'issue.status_changed' END,
                CASE WHEN e = 0 THEN 'routine_run' ELSE 'issue' END,
                pg_temp.v7(at, CASE WHEN e = 0 THEN 'run' ELSE 'issue' END || n), '{}',
                at + e * interval '5 minutes'
         FROM pg_temp.fires($1, $2, $3, $6), generate_series(0, 1) AS e
         WHERE $5 > 0",
    ];
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    for statement in statements {
        sqlx::query(statement)
            .bind(low)
            .bind(high)
            .bind(origin)
            .bind(COMPANY)
            .bind(i32::try_from(routines)?)
            .bind(step)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Database and table sizes.
pub(crate) async fn print_sizes(database: &TestDb) -> anyhow::Result<()> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, n_live_tup, pg_total_relation_size(relid)
         FROM pg_stat_user_tables
         WHERE relname IN ('routine_runs', 'issues', 'issue_events', 'heartbeat_runs', 'activity_log', 'jobs')
         ORDER BY relname",
    )
    .fetch_all(&database.pool)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&database.pool)
        .await?;
    let listed: Vec<String> = rows
        .iter()
        .map(|(name, live, bytes)| format!("{name} {live} rows {:.0} MB", *bytes as f64 / 1e6))
        .collect();
    println!(
        "database {:.2} GB: {}",
        total as f64 / 1e9,
        listed.join(", ")
    );
    Ok(())
}

/// p50/p99/max of `requests` sequential GETs of each list, first pages and pages deep in the
/// history (a `before` cursor in the middle).
async fn api_latency(database: &TestDb, url: &str, requests: usize) -> anyhow::Result<()> {
    let routine: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM routines WHERE company_id = $1 ORDER BY id LIMIT 1")
            .bind(COMPANY)
            .fetch_one(&database.pool)
            .await?;
    let middle_run: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM routine_runs WHERE routine_id = $1 ORDER BY triggered_at
         OFFSET (SELECT count(*) / 2 FROM routine_runs WHERE routine_id = $1) LIMIT 1",
    )
    .bind(routine)
    .fetch_one(&database.pool)
    .await?;
    let middle_issue: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM issues WHERE company_id = $1 AND created_at < now() - interval '1 day'
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(COMPANY)
    .fetch_one(&database.pool)
    .await?;
    let lists = [
        (
            "a routine's runs",
            format!("/api/routines/{routine}/runs?limit=50"),
        ),
        (
            "a routine's runs, deep page",
            format!("/api/routines/{routine}/runs?limit=50&before={middle_run}"),
        ),
        (
            "the company's issues",
            format!("/api/companies/{COMPANY}/issues?limit=50"),
        ),
        (
            "the company's issues, deep page",
            format!("/api/companies/{COMPANY}/issues?limit=50&before={middle_issue}"),
        ),
        (
            "the company's issues of one routine",
            format!("/api/companies/{COMPANY}/issues?limit=50&routineId={routine}"),
        ),
        (
            "the company's activity",
            format!("/api/companies/{COMPANY}/activity?limit=50"),
        ),
    ];
    let http = reqwest::Client::new();
    println!(
        "{:<38} {:>8} {:>8} {:>8} {:>7}",
        "list", "p50 ms", "p99 ms", "max ms", "items"
    );
    for (name, path) in lists {
        let mut times = Vec::with_capacity(requests);
        let mut items = 0;
        for _ in 0..requests.max(1) {
            let started = Instant::now();
            let response = http
                .get(format!("{url}{path}"))
                .bearer_auth(BOARD)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            let body: serde_json::Value = response.json().await?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            items = body
                .as_object()
                .and_then(|o| o.values().find_map(serde_json::Value::as_array))
                .map_or(0, Vec::len);
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "{name:<38} {:>8.2} {:>8.2} {:>8.2} {items:>7}",
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    Ok(())
}
