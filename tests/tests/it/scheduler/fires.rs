//! When fires land: instants across daylight saving, the trigger's record of its last fire, an edit
//! picked up while sleeping, fires prepared ahead, bursts past one batch, a rewound trigger.

use super::*;

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
