//! Retention as the scheduler's leader paces it: only the leader deletes, never with a fire
//! about to be prepared or jobs waiting for a worker, and the leading loop does it by itself.

use nexus_scheduler::RetentionStep;

use super::*;

/// A routine whose one schedule fires on 1 January, with one run whose issue was closed at
/// the clock's now; returns the routine and the run.
async fn closed_history(app: &TestApp, clock: &ManualClock) -> (String, String) {
    let team = app.seed_team().await;
    let (routine, _) = schedule(
        app,
        &team,
        json!({}),
        json!({ "cronExpression": "0 0 1 1 *", "timezone": "UTC" }),
    )
    .await;
    let run = app
        .board()
        .run_routine(&routine, &json!({}))
        .await
        .expect(202)
        .id();
    app.drain().await;
    let issue = str_at(
        &app.board().get_run(&run).await.expect(200).body,
        "/linkedIssueId",
    );
    app.board()
        .update_issue(&issue, &json!({ "status": "done" }))
        .await
        .expect(200);
    // Its heartbeat run, never claimed, times out (a closed issue waits for its heartbeat runs).
    clock.advance(TimeDelta::seconds(1));
    app.store
        .clone()
        .worker()
        .time_out_heartbeats(Duration::ZERO)
        .await
        .expect("time out");
    // A newer run, so the closed one is not the routine's newest.
    clock.advance(TimeDelta::seconds(1));
    app.board()
        .run_routine(&routine, &json!({}))
        .await
        .expect(202);
    app.drain().await;
    (routine, run)
}

fn keeping(days: u32) -> nexus_scheduler::Settings {
    nexus_scheduler::Settings {
        retention_days: Some(days),
        max_sleep: Duration::from_secs(86_400 * 7),
        ..Default::default()
    }
}

#[tokio::test]
async fn only_the_leader_deletes_and_never_near_a_fire_or_with_jobs_waiting() {
    nexus_tests::needs_servers!();
    let (app, clock) = app_at("2026-11-29T09:00:30Z").await;
    let (routine, run) = closed_history(&app, &clock).await;
    let scheduler = app.scheduler_with("keeper", Duration::from_secs(3), keeping(1));
    clock.set(utc("2026-12-31T12:00:00Z"));
    assert_eq!(
        scheduler.retention_once().await.expect("step"),
        RetentionStep::NotLeading
    );
    assert!(matches!(
        scheduler.lead_once().await,
        LeadStep::TookOffice(_)
    ));

    // A job waiting for a worker: the workers are behind, so nothing is deleted.
    app.board()
        .run_routine(&routine, &json!({}))
        .await
        .expect(202);
    assert_eq!(
        scheduler.retention_once().await.expect("step"),
        RetentionStep::Busy
    );
    app.drain().await;

    // The 1 January fire is prepared 5 s ahead; no batch starts within 10 s before that.
    clock.set(utc("2026-12-31T23:59:45.001Z"));
    scheduler.lead_once().await;
    assert_eq!(
        scheduler.retention_once().await.expect("step"),
        RetentionStep::Busy
    );
    app.board().get_run(&run).await.expect(200);

    clock.set(utc("2026-12-31T23:59:45Z"));
    scheduler.lead_once().await;
    let RetentionStep::Purged(report) = scheduler.retention_once().await.expect("step") else {
        panic!("a batch runs 15 s before the fire");
    };
    assert_eq!((report.issues, report.runs), (1, 1), "{report:?}");
    app.board().get_run(&run).await.expect(404);

    // Retention off: nothing, whoever leads.
    let off = app.scheduler_with(
        "keeper",
        Duration::from_secs(3),
        nexus_scheduler::Settings::default(),
    );
    assert_eq!(
        off.retention_once().await.expect("step"),
        RetentionStep::Off
    );
}

#[tokio::test]
async fn the_leading_loop_deletes_expired_history_by_itself() {
    nexus_tests::needs_servers!();
    let (app, clock) = app_at("2026-11-29T09:00:30Z").await;
    let (_, run) = closed_history(&app, &clock).await;
    let scheduler = app.scheduler_with("keeper", Duration::from_secs(3), keeping(1));
    let (stop, task) = leading_loop(&scheduler).await;
    app.board().get_run(&run).await.expect(200);
    // Two days on, the loop's next look finds it expired. Each poll moves the clock past the
    // loop's rest (at most a minute) and then renews the term, which the clock's jumps lapse:
    // the loop, whenever it runs, looks as the leader.
    clock.advance(TimeDelta::days(2));
    eventually(10, "retention", || async {
        clock.advance(TimeDelta::minutes(1));
        scheduler.lead_once().await;
        (app.board().get_run(&run).await.status == 404).then_some(())
    })
    .await;
    let _ = stop.send(true);
    task.await.expect("loop ends");
}
