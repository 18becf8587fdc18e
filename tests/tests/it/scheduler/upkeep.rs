//! The leader's upkeep in its own loop: it sleeps until the next run deadline or end of a
//! pause, like until the next fire, and acts at that instant of the injected clock.

use super::*;

#[tokio::test]
async fn the_leading_loop_wakes_for_a_deadline_and_for_the_end_of_a_pause() {
    nexus_tests::needs_servers!();
    let (app, clock) = app_at("2026-11-29T09:00:00Z").await;
    let team = app.seed_team().await;
    let timed = app
        .seed_routine(&team, &json!({ "runTimeoutSec": 600 }))
        .await;
    let paused = app.seed_routine(&team, &json!({})).await;
    // No safety-net wake-up: only the deadline and the pause's end may end the loop's sleep.
    let settings = nexus_scheduler::Settings {
        max_sleep: Duration::from_secs(86_400 * 7),
        ..Default::default()
    };
    let scheduler = app.scheduler_with("keeper", Duration::from_secs(3), settings);
    let (stop, task) = leading_loop(&scheduler).await;

    // Paused until 11:00, while the loop sleeps.
    app.board()
        .update_routine(
            &paused,
            &json!({ "status": "paused", "pausedUntil": "2026-11-29T11:00:00Z" }),
        )
        .await
        .expect(200);
    // A run dispatched at 09:00 has until 09:10.
    let run = app
        .board()
        .run_routine(&timed, &json!({}))
        .await
        .expect(202)
        .id();
    app.drain().await;
    assert_eq!(status(&app, &run).await.0, "issue_created");

    // (That nothing happens a moment before is the conformance suite's: `upkeep` at 09:09:59.)
    clock.set(utc("2026-11-29T09:10:00Z"));
    let ended = eventually(10, "the timeout", || async {
        let (status, reason) = status(&app, &run).await;
        (status == "failed").then_some(reason)
    })
    .await;
    assert_eq!(ended, "timed_out");

    clock.set(utc("2026-11-29T11:00:00Z"));
    let resumed = eventually(10, "the end of the pause", || async {
        let body = app.board().get_routine(&paused).await.expect(200).body;
        (body["status"] == "active").then_some(body)
    })
    .await;
    assert_eq!(resumed["pausedUntil"], Value::Null);
    let _ = stop.send(true);
    task.await.expect("loop ends");
}

/// A run's status and reason.
async fn status(app: &TestApp, run: &str) -> (String, Value) {
    let body = app.board().get_run(run).await.expect(200).body;
    (str_at(&body, "/status"), body["reason"].clone())
}
