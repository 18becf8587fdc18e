//! The scheduler with a manual clock: fire instants across daylight saving, catch-up after an
//! outage, pause/resume, an edited trigger picked up while sleeping, exactly-once fires under
//! overlapping and deposed leaders, and leadership through Redis outages.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use nexus_scheduler::LeadStep;
use nexus_shared::{
    Clock as _, ManualClock,
    clock::SharedClock,
    store::{Leadership, Refusal},
};
use nexus_tests::{Options, Team, TestApp, eventually, str_at};
use serde_json::{Value, json};
use tokio::sync::watch;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("time").to_utc()
}

async fn app_at(start: &str) -> (TestApp, Arc<ManualClock>) {
    let clock = ManualClock::new(utc(start));
    let shared: SharedClock = clock.clone();
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        ..Default::default()
    })
    .await;
    (app, clock)
}

fn leader(epoch: i64) -> Leadership {
    Leadership {
        epoch,
        leader_id: format!("test-{epoch}"),
    }
}

async fn schedule(
    app: &TestApp,
    team: &Team,
    routine_extra: Value,
    trigger: Value,
) -> (String, String) {
    let routine = app.seed_routine(team, &routine_extra).await;
    let mut body = json!({ "kind": "schedule" });
    body.as_object_mut()
        .expect("object")
        .extend(trigger.as_object().expect("object").clone());
    let trigger = str_at(&app.seed_trigger(&routine, &body).await, "/trigger/id");
    (routine, trigger)
}

/// `(scheduledFor, status, reason, catchUp, missed)` of a routine's runs, oldest first.
async fn runs(app: &TestApp, routine: &str) -> Vec<(String, String, Option<String>, bool, Value)> {
    let body = app
        .board()
        .list_runs(routine, "limit=200")
        .await
        .expect(200)
        .body;
    let mut runs: Vec<_> = body["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                r["scheduledFor"].as_str().unwrap_or_default().to_owned(),
                str_at(r, "/status"),
                r["reason"].as_str().map(str::to_owned),
                r["catchUp"].as_bool().unwrap_or_default(),
                r["missed"].clone(),
            )
        })
        .collect();
    runs.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
    runs
}

async fn next_run_at(app: &TestApp, trigger: &str) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("SELECT next_run_at FROM routine_triggers WHERE id = $1::uuid")
        .bind(trigger)
        .fetch_one(&app.db.pool)
        .await
        .expect("trigger")
}

/// Runs the scheduler's own loop in the background until the returned sender says stop.
fn run_loop(
    scheduler: nexus_scheduler::Scheduler,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    (stop, tokio::spawn(scheduler.run(stopped)))
}

/// Runs the loop of `scheduler` and waits until it leads.
async fn leading_loop(
    scheduler: &nexus_scheduler::Scheduler,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let running = run_loop(scheduler.clone());
    eventually(10, "leadership", || async {
        scheduler.is_leader().then_some(())
    })
    .await;
    running
}

/// Fires until `routine` has `n` runs, advancing the clock a minute at a time.
async fn fire_minutes(app: &TestApp, clock: &ManualClock, routine: &str, start: &str, n: usize) {
    let before = runs(app, routine).await.len();
    for minute in 1..=n {
        let at = utc(start) + TimeDelta::minutes(i64::try_from(minute).expect("small"));
        clock.set(at + TimeDelta::seconds(1));
        eventually(10, "the fire of the minute", || async {
            (runs(app, routine).await.len() >= before + minute).then_some(())
        })
        .await;
    }
}

/// An `always_enqueue` routine firing every minute, after a leader with `epoch` has written.
async fn every_minute_after_epoch(app: &TestApp, epoch: i64) -> String {
    let team = app.seed_team().await;
    let (routine, _) = schedule(
        app,
        &team,
        json!({ "concurrencyPolicy": "always_enqueue" }),
        json!({ "cronExpression": "* * * * *" }),
    )
    .await;
    sqlx::query("UPDATE scheduler_epoch SET epoch = $1")
        .bind(epoch)
        .execute(&app.db.pool)
        .await
        .expect("epoch");
    routine
}

async fn epoch(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT epoch FROM scheduler_epoch")
        .fetch_one(&app.db.pool)
        .await
        .expect("epoch")
}

mod catch_up;
mod controls;
mod fires;
mod leadership;
mod retention;
mod upkeep;
