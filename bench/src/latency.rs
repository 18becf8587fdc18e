//! End-to-end latency: a manual run request sent to `nexus serve` → its heartbeat run
//! committed, at a fixed request rate. The commit is observed, not inferred: the benchmark's
//! database has a trigger that `NOTIFY`s each new heartbeat run, delivered when the
//! dispatching transaction commits, and the benchmark `LISTEN`s.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use uuid::Uuid;

use crate::{
    cluster::{BOARD, Cluster},
    fleet::{self, Cron},
    machine::percentile,
};

/// Routines the requests rotate over (so dispatches do not all queue on one routine's lock).
const ROUTINES: usize = 200;

pub(crate) async fn run(rates: &[usize], seconds: u64) -> anyhow::Result<()> {
    let seconds = seconds.clamp(2, 60);
    let mut cluster = Cluster::new().await;
    fleet::seed(&cluster.db, ROUTINES, Cron::DailyTomorrow).await?;
    sqlx::raw_sql(
        "CREATE FUNCTION bench_heartbeat_created() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('bench_heartbeats', NEW.routine_run_id::text); RETURN NEW; END $$;
         CREATE TRIGGER bench_heartbeat_created AFTER INSERT ON heartbeat_runs
             FOR EACH ROW EXECUTE FUNCTION bench_heartbeat_created();",
    )
    .execute(&cluster.db.pool)
    .await?;
    // The seeded routines (`always_enqueue`: every run wakes the agent), not the history's.
    let routines: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM routines WHERE company_id = $1 ORDER BY id")
            .bind(fleet::COMPANY)
            .fetch_all(&cluster.db.pool)
            .await?;
    let api = cluster
        .start("nexus serve", "nexus", &["serve"], &[])
        .await?;

    let committed: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let mut listener = sqlx::postgres::PgListener::connect_with(&cluster.db.pool).await?;
    listener.listen("bench_heartbeats").await?;
    let listening = {
        let committed = Arc::clone(&committed);
        tokio::spawn(async move {
            while let Ok(notification) = listener.recv().await {
                let at = Instant::now();
                if let Ok(run) = notification.payload().parse::<Uuid>() {
                    committed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(run, at);
                }
            }
        })
    };

    println!(
        "end-to-end latency: manual run request → heartbeat run committed, one `nexus serve`, {seconds} s per rate, requests over {ROUTINES} routines\n"
    );
    println!(
        "{:>6} {:>9} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "req/s",
        "requests",
        "202 p50 ms",
        "202 p99 ms",
        "e2e p50 ms",
        "e2e p95 ms",
        "e2e p99 ms",
        "e2e max ms"
    );
    let http = reqwest::Client::new();
    for &rate in rates {
        let rate = rate.clamp(1, 2_000);
        let count = rate * usize::try_from(seconds)?;
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut requests = tokio::task::JoinSet::new();
        for n in 0..count {
            ticker.tick().await;
            let (http, url) = (
                http.clone(),
                format!("{api}/api/routines/{}/run", routines[n % routines.len()]),
            );
            requests.spawn(async move {
                let sent = Instant::now();
                let response = http
                    .post(url)
                    .bearer_auth(BOARD)
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                    .ok()?;
                let answered = sent.elapsed();
                if response.status().as_u16() != 202 {
                    return None;
                }
                let body: Value = response.json().await.ok()?;
                let run: Uuid = body["id"].as_str()?.parse().ok()?;
                Some((run, sent, answered))
            });
        }
        let accepted: Vec<(Uuid, Instant, Duration)> =
            requests.join_all().await.into_iter().flatten().collect();
        // Wait (bounded) for the last commits to be seen.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let seen = {
                let committed = committed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                accepted
                    .iter()
                    .filter(|a| committed.contains_key(&a.0))
                    .count()
            };
            if seen == accepted.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let committed = committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut answers: Vec<f64> = accepted
            .iter()
            .map(|a| a.2.as_secs_f64() * 1000.0)
            .collect();
        let mut e2e: Vec<f64> = accepted
            .iter()
            .filter_map(|(run, sent, _)| {
                committed
                    .get(run)
                    .map(|at| at.saturating_duration_since(*sent).as_secs_f64() * 1000.0)
            })
            .collect();
        answers.sort_by(f64::total_cmp);
        e2e.sort_by(f64::total_cmp);
        let unseen: Vec<Uuid> = accepted
            .iter()
            .filter(|a| !committed.contains_key(&a.0))
            .map(|a| a.0)
            .collect();
        if !unseen.is_empty() {
            // Say what became of runs whose heartbeat run was not seen, rather than guess.
            let states: Vec<(String, bool)> = sqlx::query_as(
                "SELECT r.status, r.heartbeat_run_id IS NOT NULL FROM routine_runs r WHERE r.id = ANY($1)",
            )
            .bind(&unseen)
            .fetch_all(&cluster.db.pool)
            .await?;
            println!(
                "       {} of {count} heartbeat runs not seen within 10 s; their runs (status, has heartbeat run): {states:?}",
                unseen.len()
            );
        }
        anyhow::ensure!(
            accepted.len() == count,
            "{} of {count} requests accepted",
            accepted.len()
        );
        println!(
            "{rate:>6} {count:>9} {:>11.2} {:>11.2} {:>11.2} {:>11.2} {:>11.2} {:>11.2}",
            percentile(&answers, 50.0),
            percentile(&answers, 99.0),
            percentile(&e2e, 50.0),
            percentile(&e2e, 95.0),
            percentile(&e2e, 99.0),
            e2e.last().copied().unwrap_or(f64::NAN)
        );
    }
    listening.abort();
    cluster.print_memory();
    Ok(())
}
