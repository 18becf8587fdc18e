//! Routine health fields over HTTP, pauses with a note and an end, and bulk pause and resume.

use chrono::{DateTime, TimeDelta, Utc};
use nexus_tests::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn routine_health_and_pauses_over_http() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app
        .seed_routine(
            &team,
            &json!({"runTimeoutSec": 3600, "pauseAfterFailures": 5}),
        )
        .await;
    let shown = app.board().get_routine(&routine).await.expect(200).body;
    for (field, value) in [
        ("runTimeoutSec", json!(3600)),
        ("pauseAfterFailures", json!(5)),
        ("consecutiveFailures", json!(0)),
        ("lastRun", Value::Null),
        ("nextRunAt", Value::Null),
        ("pausedReason", Value::Null),
        ("pauseNote", Value::Null),
        ("pausedUntil", Value::Null),
        ("pausedAt", Value::Null),
    ] {
        assert_eq!(shown[field], value, "{field}");
    }
    app.seed_trigger(
        &routine,
        &json!({"kind": "schedule", "cronExpression": "0 9 * * *", "timezone": "UTC"}),
    )
    .await;
    let shown = app.board().get_routine(&routine).await.expect(200).body;
    assert_eq!(shown["nextRunAt"], shown["triggers"][0]["nextRunAt"]);
    assert!(shown["nextRunAt"].is_string());

    let bad = [
        json!({"runTimeoutSec": 59}),
        json!({"runTimeoutSec": 2_592_001}),
        json!({"pauseAfterFailures": 0}),
        json!({"pauseAfterFailures": 101}),
        json!({"pauseNote": "no status"}),
        json!({"status": "active", "pausedUntil": "2030-01-01T00:00:00Z"}),
        json!({"status": "paused", "pausedUntil": "2020-01-01T00:00:00Z"}),
        json!({"status": "paused", "pausedUntil": (Utc::now() + TimeDelta::days(367)).to_rfc3339()}),
        json!({"status": "paused", "pauseNote": "x".repeat(501)}),
    ];
    for body in bad {
        app.board()
            .update_routine(&routine, &body)
            .await
            .expect_error(422, "invalid_field");
    }
    app.board()
        .update_routine(&routine, &json!({"pauseNote": null, "status": "paused"}))
        .await
        .expect(400);
    assert_eq!(
        app.board().get_routine(&routine).await.expect(200).body["status"],
        "active",
        "nothing refused was kept"
    );

    let until =
        (Utc::now() + TimeDelta::days(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let paused = app
        .board()
        .update_routine(
            &routine,
            &json!({"status": "paused", "pauseNote": "vendor outage", "pausedUntil": until}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(paused["pausedReason"], "manual");
    assert_eq!(paused["pauseNote"], "vendor outage");
    assert_eq!(
        DateTime::parse_from_rfc3339(paused["pausedUntil"].as_str().expect("until")).expect("time"),
        DateTime::parse_from_rfc3339(&until).expect("time")
    );
    assert!(paused["pausedAt"].is_string());
    assert_eq!(paused["nextRunAt"], Value::Null);
    let cleared = app
        .board()
        .update_routine(
            &routine,
            &json!({"status": "active", "runTimeoutSec": null, "pauseAfterFailures": null}),
        )
        .await
        .expect(200)
        .body;
    for field in [
        "pausedReason",
        "pauseNote",
        "pausedUntil",
        "pausedAt",
        "runTimeoutSec",
        "pauseAfterFailures",
    ] {
        assert_eq!(cleared[field], Value::Null, "{field}");
    }
}

#[tokio::test]
async fn bulk_pause_and_resume_take_exactly_one_selector() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let first = app.seed_routine(&team, &json!({})).await;
    let second = app.seed_routine(&team, &json!({})).await;
    let other = app.seed_team().await;
    let foreign = app.seed_routine(&other, &json!({})).await;
    let pause = |body: Value| {
        let app = &app;
        let company = team.company.clone();
        async move {
            app.board()
                .send(
                    Method::POST,
                    &format!("/api/companies/{company}/routines/pause"),
                    Some(&body),
                )
                .await
        }
    };
    pause(json!({})).await.expect_error(400, "invalid_body");
    pause(json!({"routineIds": [first], "projectId": team.project}))
        .await
        .expect_error(400, "invalid_body");
    pause(json!({"projectId": team.project, "pausedUntil": "2020-01-01T00:00:00Z"}))
        .await
        .expect_error(422, "invalid_field");
    app.caller(Some(&team.key))
        .send(
            Method::POST,
            &format!("/api/companies/{}/routines/pause", team.company),
            Some(&json!({"projectId": team.project})),
        )
        .await
        .expect(403);
    let changed = pause(json!({"routineIds": [first, foreign], "pauseNote": "freeze"}))
        .await
        .expect(200)
        .body;
    let ids: Vec<&str> = changed["routines"]
        .as_array()
        .expect("routines")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, [first.as_str()]);
    assert_eq!(changed["routines"][0]["pauseNote"], "freeze");
    assert_eq!(
        app.board().get_routine(&second).await.expect(200).body["status"],
        "active"
    );
    assert_eq!(
        app.board().get_routine(&foreign).await.expect(200).body["status"],
        "active"
    );
    let resumed = app
        .board()
        .send(
            Method::POST,
            &format!("/api/companies/{}/routines/resume", team.company),
            Some(&json!({"assigneeAgentId": team.agent})),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(resumed["routines"].as_array().map(Vec::len), Some(1));
    assert_eq!(resumed["routines"][0]["id"], first.as_str());
    assert_eq!(resumed["routines"][0]["pauseNote"], Value::Null);
}
