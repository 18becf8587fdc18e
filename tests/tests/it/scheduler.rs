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

#[tokio::test]
async fn fires_land_on_the_right_instants_across_daylight_saving() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (app, clock) = app_at("2026-03-27T12:00:00Z").await;
    let team = app.seed_team().await;
    let (amsterdam, amsterdam_trigger) = schedule(
        &app,
        &team,
        json!({}),
        json!({ "cronExpression": "30 2 * * *", "timezone": "Europe/Amsterdam" }),
    )
    .await;
    let (new_york, _) = schedule(
        &app,
        &team,
        json!({}),
        json!({ "cronExpression": "*/30 1-3 * * *", "timezone": "America/New_York" }),
    )
    .await;
    let scheduler = app.scheduler("s1", Duration::from_secs(10));
    let leadership = leader(1);
    // Step through three days, firing at every next_run_at, as a punctual scheduler would.
    let end = utc("2026-03-30T12:00:00Z");
    for _ in 0..100 {
        let Some(next) = app.store.next_fire_at().await.expect("next") else {
            break;
        };
        if next > end {
            break;
        }
        clock.set(next);
        scheduler.fire_once(&leadership).await.expect("fire");
    }
    let fired: Vec<String> = runs(&app, &amsterdam)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        fired,
        [
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z"
        ]
    );
    assert_eq!(
        next_run_at(&app, &amsterdam_trigger).await,
        Some(utc("2026-03-31T00:30:00Z"))
    );
    // New York (before its own change on March 8: EDT, UTC-4) at 01:00, 01:30, ..., 03:30 local.
    let fired: Vec<String> = runs(&app, &new_york)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(fired.len(), 6 * 3, "{fired:?}");
    assert_eq!(fired[0], "2026-03-28T05:00:00Z");
    assert!(
        runs(&app, &new_york)
            .await
            .iter()
            .all(|r| r.1 == "received" && !r.3)
    );

    // Fall back in Amsterdam: 02:30 happens twice on 2026-10-25 and fires once, at the first.
    clock.set(utc("2026-10-24T12:00:00Z"));
    app.board()
        .update_routine(&amsterdam, &json!({ "status": "paused" }))
        .await
        .expect(200);
    app.board()
        .update_routine(&amsterdam, &json!({ "status": "active" }))
        .await
        .expect(200);
    for _ in 0..10 {
        let next = next_run_at(&app, &amsterdam_trigger)
            .await
            .expect("scheduled");
        if next > utc("2026-10-26T12:00:00Z") {
            break;
        }
        clock.set(next);
        scheduler.fire_once(&leadership).await.expect("fire");
    }
    let autumn: Vec<String> = runs(&app, &amsterdam)
        .await
        .into_iter()
        .map(|r| r.0)
        .filter(|t| t.starts_with("2026-10"))
        .collect();
    assert_eq!(autumn, ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
}

#[tokio::test]
async fn skip_missed_records_the_outage_in_one_skipped_run() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (app, clock) = app_at("2026-11-29T07:59:00Z").await;
    let team = app.seed_team().await;
    let (routine, trigger) = schedule(
        &app,
        &team,
        json!({}),
        json!({ "cronExpression": "*/15 * * * *" }),
    )
    .await;
    assert_eq!(
        next_run_at(&app, &trigger).await,
        Some(utc("2026-11-29T08:00:00Z"))
    );
    // The scheduler was down from 08:00 until 10:00:30.
    clock.set(utc("2026-11-29T10:00:30Z"));
    let report = app
        .scheduler("s1", Duration::from_secs(10))
        .fire_once(&leader(1))
        .await
        .expect("fire");
    assert_eq!(
        (report.dispatched, report.skipped_runs, report.missed_fires),
        (1, 1, 8)
    );
    let got = runs(&app, &routine).await;
    assert_eq!(got.len(), 2);
    let skipped = &got[0];
    assert_eq!(
        (skipped.0.as_str(), skipped.1.as_str(), skipped.2.as_deref()),
        ("2026-11-29T09:45:00Z", "skipped", Some("missed_schedule"))
    );
    assert_eq!(
        skipped.4,
        json!({ "count": 8, "from": "2026-11-29T08:00:00Z", "to": "2026-11-29T09:45:00Z" })
    );
    assert_eq!(
        (got[1].0.as_str(), got[1].1.as_str(), got[1].3),
        ("2026-11-29T10:00:00Z", "received", false)
    );
    assert_eq!(
        next_run_at(&app, &trigger).await,
        Some(utc("2026-11-29T10:15:00Z"))
    );
    // The missed fires were not dispatched: one job, for the on-time fire.
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = $1", "dispatch_run")
            .await,
        1
    );
    let trigger_body = app.board().get_routine(&routine).await.expect(200).body;
    assert_eq!(trigger_body["triggers"][0]["lastResult"], "skipped");
}

#[tokio::test]
async fn a_fire_records_its_time_at_once_and_a_repeated_result_leaves_the_trigger_alone() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (app, clock) = app_at("2026-11-29T07:59:30Z").await;
    let team = app.seed_team().await;
    let (routine, trigger) = schedule(
        &app,
        &team,
        json!({ "concurrencyPolicy": "always_enqueue" }),
        json!({ "cronExpression": "* * * * *" }),
    )
    .await;
    let scheduler = app.scheduler("s1", Duration::from_secs(10));
    let shown = || async {
        let body = app.board().get_routine(&routine).await.expect(200).body;
        let trigger = &body["triggers"][0];
        (
            trigger["lastFiredAt"].as_str().map(utc),
            trigger["lastResult"].as_str().map(str::to_owned),
        )
    };
    // The row version of the trigger: it changes whenever the row is written.
    let version = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT xmin::text FROM routine_triggers WHERE id = $1::uuid",
        )
        .bind(&trigger)
        .fetch_one(&app.db.pool)
        .await
        .expect("trigger")
    };
    let mut last_result = None;
    for at in ["2026-11-29T08:00:01Z", "2026-11-29T08:01:01Z"] {
        clock.set(utc(at));
        let report = scheduler.fire_once(&leader(1)).await.expect("fire");
        assert_eq!(report.dispatched, 1);
        // Fired, not yet dispatched: the time is there, the result is the previous run's.
        assert_eq!(shown().await, (Some(utc(at)), last_result.clone()));
        let fired = version().await;
        assert_eq!(app.drain().await, 1);
        assert_eq!(
            shown().await,
            (Some(utc(at)), Some("issue_created".to_owned()))
        );
        // The first dispatch set a new result; the second, the same result again, wrote nothing.
        assert_eq!(version().await == fired, last_result.is_some(), "{at}");
        last_result = Some("issue_created".to_owned());
    }
}

#[tokio::test]
async fn enqueue_missed_with_cap_dispatches_the_most_recent_fires_in_order() {
    nexus_tests::needs_servers!();
    let (app, clock) = app_at("2026-11-29T07:59:00Z").await;
    let team = app.seed_team().await;
    let (routine, _) = schedule(
        &app,
        &team,
        json!({ "catchUpPolicy": "enqueue_missed_with_cap", "catchUpCap": 3, "concurrencyPolicy": "always_enqueue" }),
        json!({ "cronExpression": "*/15 * * * *" }),
    )
    .await;
    clock.set(utc("2026-11-29T10:00:30Z"));
    let report = app
        .scheduler("s1", Duration::from_secs(10))
        .fire_once(&leader(1))
        .await
        .expect("fire");
    assert_eq!((report.dispatched, report.skipped_runs), (4, 1));
    let got = runs(&app, &routine).await;
    let summary: Vec<(&str, &str, bool)> = got
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.3))
        .collect();
    assert_eq!(
        summary,
        [
            ("2026-11-29T09:00:00Z", "skipped", false),
            ("2026-11-29T09:15:00Z", "received", true),
            ("2026-11-29T09:30:00Z", "received", true),
            ("2026-11-29T09:45:00Z", "received", true),
            ("2026-11-29T10:00:00Z", "received", false),
        ]
    );
    assert_eq!(got[0].2.as_deref(), Some("catch_up_cap"));
    assert_eq!(
        got[0].4,
        json!({ "count": 5, "from": "2026-11-29T08:00:00Z", "to": "2026-11-29T09:00:00Z" })
    );
    // The caught-up fires are queued in time order (the order workers take them: due time,
    // then id) — read from the Postgres rows, so on Postgres only ...
    if nexus_tests::backend_is_postgres() {
        let job_order: Vec<String> = sqlx::query_scalar(
            "SELECT r.scheduled_for::text FROM jobs j JOIN routine_runs r ON r.id = (j.payload->>'runId')::uuid
             WHERE j.state = 'queued' ORDER BY j.run_at, j.id",
        )
        .fetch_all(&app.db.pool)
        .await
        .expect("jobs");
        assert_eq!(
            job_order.len(),
            4,
            "read before the jobs are handled (and deleted)"
        );
        let mut sorted = job_order.clone();
        sorted.sort();
        assert_eq!(job_order, sorted);
    }
    // ... and dispatched in that order, each under the concurrency policy: the issues, in the
    // order they were created, stem from the fires in time order.
    assert_eq!(app.drain().await, 4);
    let issues = app
        .board()
        .list_issues(&team.company, &format!("routineId={routine}"))
        .await
        .expect(200)
        .body;
    let mut created: Vec<Value> = issues["issues"].as_array().cloned().unwrap_or_default();
    assert_eq!(created.len(), 4);
    created.reverse(); // listed newest first
    let mut fired = Vec::new();
    for issue in &created {
        let run = app
            .board()
            .get_run(issue["originRunId"].as_str().expect("origin run"))
            .await
            .expect(200)
            .body;
        fired.push(str_at(&run, "/scheduledFor"));
    }
    assert_eq!(
        fired,
        [
            "2026-11-29T09:15:00Z",
            "2026-11-29T09:30:00Z",
            "2026-11-29T09:45:00Z",
            "2026-11-29T10:00:00Z"
        ]
    );
}

#[tokio::test]
async fn no_catch_up_for_time_spent_paused_or_disabled() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (app, clock) = app_at("2026-11-29T08:05:00Z").await;
    let team = app.seed_team().await;
    let (routine, trigger) = schedule(
        &app,
        &team,
        json!({}),
        json!({ "cronExpression": "*/15 * * * *" }),
    )
    .await;
    let scheduler = app.scheduler("s1", Duration::from_secs(10));
    app.board()
        .update_routine(&routine, &json!({ "status": "paused" }))
        .await
        .expect(200);
    clock.set(utc("2026-11-29T10:05:00Z"));
    scheduler.fire_once(&leader(1)).await.expect("fire");
    app.board()
        .update_routine(&routine, &json!({ "status": "active" }))
        .await
        .expect(200);
    assert_eq!(
        next_run_at(&app, &trigger).await,
        Some(utc("2026-11-29T10:15:00Z"))
    );
    app.board()
        .update_trigger(&trigger, &json!({ "enabled": false }))
        .await
        .expect(200);
    clock.set(utc("2026-11-29T12:05:00Z"));
    scheduler.fire_once(&leader(1)).await.expect("fire");
    app.board()
        .update_trigger(&trigger, &json!({ "enabled": true }))
        .await
        .expect(200);
    clock.set(utc("2026-11-29T12:15:00Z"));
    let report = scheduler.fire_once(&leader(1)).await.expect("fire");
    assert_eq!(
        (report.dispatched, report.missed_fires, report.skipped_runs),
        (1, 0, 0)
    );
    let got = runs(&app, &routine).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "2026-11-29T12:15:00Z");
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

#[tokio::test]
async fn a_trigger_edited_while_the_scheduler_sleeps_fires_at_its_new_time() {
    nexus_tests::needs_servers!();
    let (app, clock) = app_at("2026-11-29T09:00:00Z").await;
    let team = app.seed_team().await;
    let (routine, trigger) = schedule(
        &app,
        &team,
        json!({}),
        json!({ "cronExpression": "0 12 * * *" }),
    )
    .await;
    // No safety-net wake-up: only the trigger-change announcement can move the loop's sleep.
    let settings = nexus_scheduler::Settings {
        max_sleep: Duration::from_secs(86_400 * 7),
        ..Default::default()
    };
    let scheduler = app.scheduler_with("looping", Duration::from_secs(3), settings);
    let (stop, task) = leading_loop(&scheduler).await;
    // Nothing is due, so the loop sleeps until 12:00 — until the edit is announced.
    app.board()
        .update_trigger(&trigger, &json!({ "cronExpression": "30 9 * * *" }))
        .await
        .expect(200);
    clock.set(utc("2026-11-29T09:30:00Z"));
    let fired = eventually(10, "the 09:30 fire", || async {
        let got = runs(&app, &routine).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(fired[0].0, "2026-11-29T09:30:00Z");
    clock.set(utc("2026-11-29T12:00:30Z"));
    clock.set(utc("2026-11-30T09:30:00Z"));
    let fired = eventually(10, "the next day's fire", || async {
        let got = runs(&app, &routine).await;
        (got.len() == 2).then_some(got)
    })
    .await;
    assert_eq!(
        fired[1].0, "2026-11-30T09:30:00Z",
        "no fire at the old 12:00"
    );
    let _ = stop.send(true);
    task.await.expect("loop ends");
    assert!(!scheduler.is_leader());
}

#[tokio::test]
async fn a_fire_is_prepared_ahead_and_an_idle_worker_takes_it_at_its_time_without_polling() {
    nexus_tests::needs_servers!();
    let (app, clock) = app_at("2026-11-29T09:00:00Z").await;
    let team = app.seed_team().await;
    let (routine, _) = schedule(
        &app,
        &team,
        json!({}),
        json!({ "cronExpression": "30 9 * * *" }),
    )
    .await;
    let settings = nexus_scheduler::Settings {
        lookahead: Duration::from_secs(5),
        ..Default::default()
    };
    let scheduler = app.scheduler_with("ahead", Duration::from_secs(3), settings);
    let (stop, task) = leading_loop(&scheduler).await;
    // A worker woken only by notifications and by the time its next job is due: its polling
    // fallback is an hour away.
    let worker = nexus_worker::Worker::new(
        app.store.clone(),
        "ahead".to_owned(),
        nexus_worker::Settings {
            poll_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .expect("worker");
    let (worker_stop, worker_stopped) = watch::channel(false);
    let working = tokio::spawn(worker.run(worker_stopped));
    // Four seconds ahead the loop wakes and prepares the 09:30 fire (its dispatch job is due
    // then); nothing dispatches it yet, and nothing of it is visible before its time.
    clock.set(utc("2026-11-29T09:29:56Z"));
    eventually(10, "the prepared 09:30 fire", || async {
        let next = app.store.next_job_at().await.expect("next job");
        (next == Some(utc("2026-11-29T09:30:00Z"))).then_some(())
    })
    .await;
    assert!(
        runs(&app, &routine).await.is_empty(),
        "not listed before its time"
    );
    let routine_now = app.board().get_routine(&routine).await.expect(200).body;
    assert_eq!(
        routine_now["triggers"][0]["nextRunAt"],
        json!("2026-11-29T09:30:00Z")
    );
    assert_eq!(routine_now["triggers"][0]["lastFiredAt"], Value::Null);
    // At 09:30 the idle worker wakes for the job that has become due.
    clock.set(utc("2026-11-29T09:30:00Z"));
    eventually(10, "the dispatch at 09:30", || async {
        let got = runs(&app, &routine).await;
        (got.len() == 1 && got[0].1 == "issue_created").then_some(())
    })
    .await;
    let _ = stop.send(true);
    let _ = worker_stop.send(true);
    task.await.expect("loop ends");
    working.await.expect("worker ends");
}

#[tokio::test]
async fn overlapping_and_deposed_leaders_fire_every_fire_exactly_once() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (app, clock) = app_at("2026-11-29T09:00:30Z").await;
    let team = app.seed_team().await;
    let mut triggers = Vec::new();
    for _ in 0..20 {
        triggers.push(
            schedule(
                &app,
                &team,
                json!({ "concurrencyPolicy": "always_enqueue" }),
                json!({ "cronExpression": "* * * * *" }),
            )
            .await
            .1,
        );
    }
    let a = app.scheduler("a", Duration::from_secs(10));
    let b = app.scheduler("b", Duration::from_secs(10));
    let c = app.scheduler("c", Duration::from_secs(10));
    let mut deposed = 0;
    for minute in 1..=30 {
        clock.set(utc("2026-11-29T09:00:00Z") + TimeDelta::minutes(minute) + TimeDelta::seconds(2));
        // A keeps running with epoch 1 after B (epoch 2) took over; from minute 15, C (epoch 3)
        // takes over from B, which also keeps running.
        let newest = if minute < 15 { 2 } else { 3 };
        let (one, two) = (leader(1), leader(2));
        let (ra, rb, rc) = tokio::join!(a.fire_once(&one), b.fire_once(&two), async {
            if newest == 3 {
                c.fire_once(&leader(3)).await.map(Some)
            } else {
                Ok(None)
            }
        },);
        for result in [ra.map(|_| ()), rb.map(|_| ()), rc.map(|_| ())] {
            if let Err(e) = result {
                assert!(e.to_string().contains("deposed"), "{e}");
                deposed += 1;
            }
        }
    }
    assert!(deposed >= 30, "stale leaders were refused ({deposed})");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT trigger_id::text, scheduled_for::text FROM routine_runs")
            .fetch_all(&app.db.pool)
            .await
            .expect("runs");
    assert_eq!(rows.len(), 20 * 30, "one run per trigger and minute");
    for trigger in &triggers {
        let minutes: BTreeSet<&str> = rows
            .iter()
            .filter(|r| &r.0 == trigger)
            .map(|r| r.1.as_str())
            .collect();
        assert_eq!(minutes.len(), 30, "no gaps and no duplicates for {trigger}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = $1", "dispatch_run")
            .await,
        600
    );
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM scheduler_epoch")
        .fetch_one(&app.db.pool)
        .await
        .expect("epoch");
    assert_eq!(epoch, 3);
    let _ = clock.now();
}

#[tokio::test]
async fn without_redis_nobody_leads_or_fires_and_fires_resume_with_catch_up_when_it_returns() {
    nexus_tests::needs_servers!();
    let proxy = nexus_tests::Proxy::redis(false).await;
    let clock = ManualClock::new(utc("2026-11-29T08:59:00Z"));
    let shared: SharedClock = clock.clone();
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    let (routine, _) = schedule(
        &app,
        &team,
        json!({}),
        json!({ "cronExpression": "*/15 * * * *" }),
    )
    .await;
    let redis = nexus_shared::kv::Redis::new(
        &proxy.url,
        &app.config.redis_prefix,
        app.store.clock().clone(),
    )
    .expect("redis");
    let lock = nexus_scheduler::LeaderLock::new(
        nexus_shared::coord::Coordination::Redis(redis),
        "cut-off".to_owned(),
        Duration::from_secs(3),
    );
    let scheduler = nexus_scheduler::Scheduler::new(
        app.store.clone(),
        lock,
        nexus_scheduler::Settings::default(),
    );
    let (stop, task) = run_loop(scheduler.clone());

    clock.set(utc("2026-11-29T10:00:10Z"));
    // The loop keeps trying (every second) and stays a follower: nothing fires.
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        eventually(5, "a leadership attempt", || async {
            (started.elapsed() > Duration::from_millis(1100)).then_some(())
        })
        .await;
        assert!(!scheduler.is_leader());
    }
    assert!(runs(&app, &routine).await.is_empty());
    assert!(!task.is_finished(), "no crash");

    proxy.set_open(true);
    eventually(10, "leadership after Redis returns", || async {
        scheduler.is_leader().then_some(())
    })
    .await;
    let got = eventually(10, "the catch-up", || async {
        let got = runs(&app, &routine).await;
        (got.len() == 2).then_some(got)
    })
    .await;
    assert_eq!(got[0].2.as_deref(), Some("missed_schedule"));
    assert_eq!(got[0].4["count"], 4);
    assert_eq!(got[1].0, "2026-11-29T10:00:00Z");
    let _ = stop.send(true);
    task.await.expect("loop ends");
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

#[tokio::test]
async fn a_redis_that_lost_its_epoch_counter_still_elects_a_leader_that_fires() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (app, clock) = app_at("2026-11-29T09:00:30Z").await;
    // An earlier leader wrote with epoch 50; this Redis prefix has never counted (as after a
    // Redis restart without persistence).
    let routine = every_minute_after_epoch(&app, 50).await;
    let scheduler = app.scheduler("after-restart", Duration::from_secs(10));
    let (stop, task) = run_loop(scheduler.clone());
    fire_minutes(&app, &clock, &routine, "2026-11-29T09:00:00Z", 2).await;
    assert!(scheduler.is_leader());
    assert_eq!(epoch(&app).await, 51);
    stop.send(true).expect("stop");
    task.await.expect("stopped");
    let statuses: Vec<String> = runs(&app, &routine)
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(statuses.len(), 2, "{statuses:?}");
}

#[tokio::test]
async fn without_a_redis_url_the_process_elects_one_leader_in_memory_and_fires_once() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let clock = ManualClock::new(utc("2026-11-29T09:00:30Z"));
    let shared: SharedClock = clock.clone();
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        env: vec![("NEXUS_REDIS_URL", String::new())],
    })
    .await;
    assert!(!app.coordination.is_shared());
    let routine = every_minute_after_epoch(&app, 7).await;
    // Two schedulers on the process's coordination: one lease, so one leader.
    let a = app.scheduler("a", Duration::from_secs(10));
    let b = app.scheduler("b", Duration::from_secs(10));
    let (stop_a, task_a) = run_loop(a.clone());
    let (stop_b, task_b) = run_loop(b.clone());
    fire_minutes(&app, &clock, &routine, "2026-11-29T09:00:00Z", 3).await;
    assert!(a.is_leader() != b.is_leader(), "exactly one leads");
    assert_eq!(
        epoch(&app).await,
        8,
        "the term continues the database's epochs"
    );
    // Releasing on shutdown lets the other take over with the next epoch.
    let (stop_leader, task_leader, follower) = if a.is_leader() {
        (stop_a, task_a, (stop_b, task_b, b))
    } else {
        (stop_b, task_b, (stop_a, task_a, a))
    };
    stop_leader.send(true).expect("stop");
    task_leader.await.expect("stopped");
    let (stop_follower, task_follower, follower) = follower;
    eventually(10, "the follower taking over", || async {
        follower.is_leader().then_some(())
    })
    .await;
    fire_minutes(&app, &clock, &routine, "2026-11-29T09:03:00Z", 1).await;
    assert_eq!(epoch(&app).await, 9);
    stop_follower.send(true).expect("stop");
    task_follower.await.expect("stopped");
    let fired: BTreeSet<String> = runs(&app, &routine)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(fired.len(), 4, "one run per minute: {fired:?}");
    assert_eq!(runs(&app, &routine).await.len(), 4, "no duplicate");
}

#[tokio::test]
async fn a_burst_past_one_batch_fires_every_trigger_once_in_side_by_side_batches() {
    nexus_tests::needs_servers!();
    let (app, clock) = app_at("2026-11-29T07:59:30Z").await;
    let team = app.seed_team().await;
    let routine = app
        .seed_routine(&team, &json!({ "concurrencyPolicy": "always_enqueue" }))
        .await;
    for _ in 0..35 {
        app.seed_trigger(
            &routine,
            &json!({ "kind": "schedule", "cronExpression": "0 8 * * *" }),
        )
        .await;
    }
    // Batches of 10: the first comes back full, so the rest run two at a time (10 + 10, then
    // 5 + 0) — the loop a burst of more than 500 due triggers takes with the default batch.
    let scheduler = app.scheduler_with(
        "s1",
        Duration::from_secs(10),
        nexus_scheduler::Settings {
            batch: 10,
            ..Default::default()
        },
    );
    clock.set(utc("2026-11-29T08:00:01Z"));
    let report = scheduler.fire_once(&leader(1)).await.expect("fire");
    assert_eq!((report.triggers, report.dispatched), (35, 35));
    let again = scheduler.fire_once(&leader(1)).await.expect("fire");
    assert_eq!((again.triggers, again.dispatched), (0, 0));
    let body = app
        .board()
        .list_runs(&routine, "limit=100")
        .await
        .expect(200)
        .body;
    let fired: BTreeSet<String> = body["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            assert_eq!(r["scheduledFor"], "2026-11-29T08:00:00Z");
            str_at(r, "/triggerId")
        })
        .collect();
    assert_eq!(fired.len(), 35, "one run per trigger");
    assert_eq!(body["runs"].as_array().map(Vec::len), Some(35));
}

#[tokio::test]
async fn a_fire_already_recorded_is_not_recorded_again_when_its_trigger_is_rewound() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (app, clock) = app_at("2026-11-29T07:59:30Z").await;
    let team = app.seed_team().await;
    let (routine, trigger) = schedule(
        &app,
        &team,
        json!({ "concurrencyPolicy": "always_enqueue" }),
        json!({ "cronExpression": "* * * * *" }),
    )
    .await;
    let scheduler = app.scheduler("s1", Duration::from_secs(10));
    clock.set(utc("2026-11-29T08:00:01Z"));
    assert_eq!(
        scheduler
            .fire_once(&leader(1))
            .await
            .expect("fire")
            .dispatched,
        1
    );
    // The trigger's next fire goes back to one already recorded (a restored backup, an
    // operator's hand): the run for 08:00 exists, so the pass records nothing for it again —
    // neither as a fire on time nor, later, as a missed one — and goes on with 08:01.
    let rewind = || async {
        sqlx::query("UPDATE routine_triggers SET next_run_at = $2 WHERE id = $1::uuid")
            .bind(&trigger)
            .bind(utc("2026-11-29T08:00:00Z"))
            .execute(&app.db.pool)
            .await
            .expect("rewind");
    };
    rewind().await;
    clock.set(utc("2026-11-29T08:00:30Z"));
    let report = scheduler.fire_once(&leader(1)).await.expect("fire");
    assert_eq!((report.triggers, report.dispatched), (1, 0));
    assert_eq!(
        next_run_at(&app, &trigger).await,
        Some(utc("2026-11-29T08:01:00Z"))
    );
    rewind().await;
    clock.set(utc("2026-11-29T08:01:01Z"));
    let report = scheduler.fire_once(&leader(1)).await.expect("fire");
    assert_eq!((report.triggers, report.dispatched), (1, 1));
    let fired: Vec<String> = runs(&app, &routine)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(fired, ["2026-11-29T08:00:00Z", "2026-11-29T08:01:00Z"]);
    assert_eq!(
        next_run_at(&app, &trigger).await,
        Some(utc("2026-11-29T08:02:00Z"))
    );
}

#[tokio::test]
async fn a_fire_is_on_time_up_to_the_grace_and_missed_past_it() {
    nexus_tests::needs_servers!();
    let (app, clock) = app_at("2026-11-29T07:58:00Z").await;
    let team = app.seed_team().await;
    let (late, _) = schedule(
        &app,
        &team,
        json!({}),
        json!({ "cronExpression": "59 7 * * *" }),
    )
    .await;
    let (on_time, _) = schedule(
        &app,
        &team,
        json!({}),
        json!({ "cronExpression": "0 8 * * *" }),
    )
    .await;
    // The scheduler's grace is 60 s: at 08:01:00 the 08:00 fire is exactly 60 s late (on
    // time) and the 07:59 fire 120 s late (missed, recorded under skip_missed).
    clock.set(utc("2026-11-29T08:01:00Z"));
    let report = app
        .scheduler("s1", Duration::from_secs(10))
        .fire_once(&leader(1))
        .await
        .expect("fire");
    assert_eq!(
        (report.dispatched, report.skipped_runs, report.missed_fires),
        (1, 1, 1)
    );
    let summary = |runs: Vec<(String, String, Option<String>, bool, Value)>| {
        runs.into_iter()
            .map(|r| (r.0, r.1, r.2))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        summary(runs(&app, &on_time).await),
        [(
            "2026-11-29T08:00:00Z".to_owned(),
            "received".to_owned(),
            None
        )]
    );
    assert_eq!(
        summary(runs(&app, &late).await),
        [(
            "2026-11-29T07:59:00Z".to_owned(),
            "skipped".to_owned(),
            Some("missed_schedule".to_owned())
        )]
    );
}

#[tokio::test]
async fn leadership_steps_on_the_injected_clock_lapse_a_term_and_fence_off_its_writes() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (app, clock) = app_at("2026-11-29T09:00:58Z").await;
    let routine = every_minute_after_epoch(&app, 20).await;
    let ttl = Duration::from_secs(10);
    let (a, b) = (app.scheduler("a", ttl), app.scheduler("b", ttl));
    assert_eq!(a.lead_once().await, LeadStep::TookOffice(21));
    assert_eq!(b.lead_once().await, LeadStep::Following);
    assert_eq!(a.lead_once().await, LeadStep::Renewed(21));
    let held = a.leadership().expect("a leads");

    // 09:01:01, inside the term (until 09:01:08): a fires the minute.
    clock.set(utc("2026-11-29T09:01:01Z"));
    assert!(a.is_leader());
    a.fire_once(&held).await.expect("a fires");
    assert_eq!(runs(&app, &routine).await.len(), 1);

    // a stops renewing (a paused process): its term lapses on the clock, with no real wait.
    clock.advance(TimeDelta::seconds(7));
    assert!(!a.is_leader(), "the term lapsed at 09:01:08");
    assert!(a.leadership().is_none());
    // Its Redis lease runs out too (in Redis's own time; removed here rather than waited for),
    // and at the next minute b takes office with the next epoch.
    let redis = redis::Client::open(nexus_tests::redis_url()).expect("redis url");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{}:scheduler:leader", app.config.redis_prefix))
        .query_async(&mut conn)
        .await
        .expect("del");
    clock.set(utc("2026-11-29T09:02:01Z"));
    assert_eq!(b.lead_once().await, LeadStep::TookOffice(22));
    b.fire_once(&b.leadership().expect("b leads"))
        .await
        .expect("b fires");

    // a wakes up and writes with its old term: fenced off by the database, then it stands down.
    let refused = a.fire_once(&held).await.expect_err("a was deposed");
    assert!(
        matches!(
            refused,
            nexus_shared::store::StoreError::Refused(Refusal::Deposed { current: 22 })
        ),
        "{refused:?}"
    );
    assert_eq!(a.lead_once().await, LeadStep::Following);
    assert!(!a.is_leader());
    let fired: BTreeSet<String> = runs(&app, &routine)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(fired.len(), 2, "09:01 and 09:02, once each: {fired:?}");
    assert_eq!(epoch(&app).await, 22);
}
