//! Fires missed during an outage, pause or disable: the catch-up policies and the misfire grace.

use super::*;

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
