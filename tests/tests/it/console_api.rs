//! What the console reads besides the resources: schedule previews, the system status, the
//! `failing` filter and the plain-language schedule of a trigger.

use chrono::{DateTime, TimeDelta, Utc};
use nexus_shared::{ManualClock, clock::SharedClock};
use nexus_tests::{Options, TestApp, str_at};
use serde_json::json;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("time").to_utc()
}

async fn app_at(now: &str) -> (TestApp, std::sync::Arc<ManualClock>) {
    let clock = ManualClock::new(at(now));
    let shared: SharedClock = clock.clone();
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        ..Default::default()
    })
    .await;
    (app, clock)
}

#[tokio::test]
async fn a_schedule_preview_describes_it_and_lists_its_next_fires_in_both_zones() {
    nexus_tests::needs_servers!();
    // Friday 2026-03-27 in Amsterdam: the clocks go forward on Sunday the 29th.
    let (app, _clock) = app_at("2026-03-27T12:00:00Z").await;
    let preview = app
        .board()
        .send(
            reqwest::Method::GET,
            "/api/schedule-preview?cronExpression=0%209%20*%20*%201-5&timezone=Europe/Amsterdam&count=3",
            None,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(preview["description"], "weekdays at 09:00");
    assert_eq!(preview["timezone"], "Europe/Amsterdam");
    assert_eq!(
        preview["fires"],
        json!([
            {"at": "2026-03-30T07:00:00Z", "local": "2026-03-30T09:00:00+02:00"},
            {"at": "2026-03-31T07:00:00Z", "local": "2026-03-31T09:00:00+02:00"},
            {"at": "2026-04-01T07:00:00Z", "local": "2026-04-01T09:00:00+02:00"},
        ])
    );
    // Defaults: UTC, five fires.
    let utc = app
        .board()
        .send(
            reqwest::Method::GET,
            "/api/schedule-preview?cronExpression=@hourly",
            None,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(utc["timezone"], "UTC");
    assert_eq!(utc["fires"].as_array().map(Vec::len), Some(5));
    assert_eq!(utc["fires"][0]["at"], "2026-03-27T13:00:00Z");

    for (query, field) in [
        ("cronExpression=0%209%20*%20*", "cronExpression"),
        (
            "cronExpression=0%209%20*%20*%20*&timezone=Mars/Olympus",
            "timezone",
        ),
        ("cronExpression=@daily&count=21", "count"),
        ("cronExpression=@daily&count=0", "count"),
    ] {
        let refused = app
            .board()
            .send(
                reqwest::Method::GET,
                &format!("/api/schedule-preview?{query}"),
                None,
            )
            .await
            .expect_error(422, "invalid_field");
        assert_eq!(refused.body["details"]["field"], field, "{query}");
    }
    app.board()
        .send(
            reqwest::Method::GET,
            "/api/schedule-preview?cronExpression=@daily&count=x",
            None,
        )
        .await
        .expect(400);
    app.board()
        .send(reqwest::Method::GET, "/api/schedule-preview", None)
        .await
        .expect(400);
    app.caller(None)
        .send(
            reqwest::Method::GET,
            "/api/schedule-preview?cronExpression=@daily",
            None,
        )
        .await
        .expect(401);
}

#[tokio::test]
async fn a_schedule_trigger_carries_its_plain_language_description() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let created = app
        .seed_trigger(
            &routine,
            &json!({"kind": "schedule", "cronExpression": "*/15 * * * *", "timezone": "Asia/Tokyo"}),
        )
        .await;
    assert_eq!(created["trigger"]["description"], "every 15 minutes");
    let shown = app.board().get_routine(&routine).await.expect(200).body;
    assert_eq!(shown["triggers"][0]["description"], "every 15 minutes");
}

#[tokio::test]
async fn the_failing_filter_lists_only_routines_whose_newest_finished_run_failed() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let healthy = app.seed_routine(&team, &json!({"title": "Healthy"})).await;
    let failing = app.seed_routine(&team, &json!({"title": "Failing"})).await;
    let run = app
        .board()
        .run_routine(&failing, &json!({}))
        .await
        .expect(202)
        .id();
    app.drain().await;
    let issue = str_at(
        &app.board().get_run(&run).await.expect(200).body,
        "/linkedIssueId",
    );
    app.board()
        .update_issue(&issue, &json!({"status": "cancelled"}))
        .await
        .expect(200);
    let path = format!("/api/companies/{}/routines?failing=true", team.company);
    let listed = app
        .board()
        .send(reqwest::Method::GET, &path, None)
        .await
        .expect(200)
        .body;
    let ids: Vec<&str> = listed["routines"]
        .as_array()
        .expect("routines")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, [failing.as_str()]);
    let all = format!("/api/companies/{}/routines?failing=false", team.company);
    let listed = app
        .board()
        .send(reqwest::Method::GET, &all, None)
        .await
        .expect(200)
        .body;
    assert_eq!(listed["routines"].as_array().map(Vec::len), Some(2));
    assert!(listed.to_string().contains(&healthy));
    let bad = format!("/api/companies/{}/routines?failing=perhaps", team.company);
    app.board()
        .send(reqwest::Method::GET, &bad, None)
        .await
        .expect(400);
}

#[tokio::test]
async fn the_system_status_shows_the_leader_the_queue_and_last_hours_fire_lateness() {
    nexus_tests::needs_servers!();
    let (app, clock) = app_at("2026-12-07T08:59:58Z").await;
    // 08:59:58 + 5 s = 09:00:03.
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    app.seed_trigger(
        &routine,
        &json!({"kind": "schedule", "cronExpression": "0 9 * * *", "timezone": "UTC"}),
    )
    .await;
    let scheduler = app.scheduler("sched-a", std::time::Duration::from_secs(30));
    let leadership = nexus_shared::store::Leadership {
        epoch: 1,
        leader_id: "sched-a".to_owned(),
    };
    // The fire at 09:00 is handled 3 s late; the worker dispatches it 2 s after that, so its
    // agent is woken 5 s after the fire's instant.
    clock.advance(TimeDelta::seconds(5));
    scheduler.fire_once(&leadership).await.expect("fire");
    clock.advance(TimeDelta::seconds(2));
    app.drain().await;

    let status = app
        .board()
        .send(reqwest::Method::GET, "/api/system", None)
        .await
        .expect(200)
        .body;
    assert_eq!(status["scheduler"]["leaderId"], "sched-a");
    assert!(status["scheduler"]["epoch"].as_i64() >= Some(1));
    assert_eq!(status["queue"]["waiting"], 0);
    let lateness = &status["lateness"];
    assert_eq!(lateness["windowSec"], 3600);
    let minutes = lateness["minutes"].as_array().expect("minutes");
    assert_eq!(minutes.len(), 60);
    assert_eq!(minutes[59]["minute"], "2026-12-07T09:00:00Z");
    assert_eq!(minutes[59]["fires"], 1);
    assert_eq!(minutes[59]["sampled"], 1);
    assert_eq!(minutes[59]["p50Sec"], 5.0);
    assert_eq!(minutes[58]["fires"], 0);
    assert_eq!(minutes[58]["p99Sec"], json!(null));
    assert_eq!(lateness["total"]["fires"], 1);
    assert_eq!(lateness["total"]["p99Sec"], 5.0);

    // A queued job shows as waiting, with its age.
    app.board()
        .run_routine(&routine, &json!({}))
        .await
        .expect(202);
    clock.advance(TimeDelta::seconds(4));
    let status = app
        .board()
        .send(reqwest::Method::GET, "/api/system", None)
        .await
        .expect(200)
        .body;
    assert_eq!(status["queue"]["waiting"], 1);
    assert_eq!(status["queue"]["oldestWaitingAgeSec"], 4.0);

    // Agents may not read it.
    app.caller(Some(&team.key))
        .send(reqwest::Method::GET, "/api/system", None)
        .await
        .expect_error(403, "forbidden");
}
