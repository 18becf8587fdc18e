//! Routines: defaults, validation, references, lifecycle, listing, upcoming fires.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use nexus_shared::{ManualClock, clock::SharedClock};
use nexus_tests::{Options, TestApp, str_at};
use serde_json::json;

#[tokio::test]
async fn a_routine_is_created_with_the_contract_defaults() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let body =
        json!({ "title": "Rotate logs", "assigneeAgentId": team.agent, "projectId": team.project });
    let routine = app
        .board()
        .create_routine(&team.company, &body)
        .await
        .expect(201)
        .body;
    assert_eq!(routine["status"], "active");
    assert_eq!(routine["priority"], "medium");
    assert_eq!(routine["concurrencyPolicy"], "coalesce_if_active");
    assert_eq!(routine["catchUpPolicy"], "skip_missed");
    assert_eq!(routine["catchUpCap"], 25);
    assert_eq!(routine["description"], "");
    assert_eq!(routine["triggers"], json!([]));
    assert!(
        routine["goalId"].is_null()
            && routine["parentIssueId"].is_null()
            && routine["lastTriggeredAt"].is_null()
    );
    let fetched = app
        .board()
        .get_routine(&str_at(&routine, "/id"))
        .await
        .expect(200)
        .body;
    assert_eq!(fetched, routine);
}

#[tokio::test]
async fn invalid_routines_are_refused_and_nothing_is_created() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let other = app.seed_company("Other").await;
    let other_project = app.seed_project(&other).await;
    let base = json!({ "title": "x", "assigneeAgentId": team.agent, "projectId": team.project });
    let with = |extra: serde_json::Value| {
        let mut body = base.clone();
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        body
    };
    let board = app.board();
    let unprocessable = [
        (
            with(json!({ "title": "t".repeat(201) })),
            "title",
            "invalid_field",
        ),
        (
            with(json!({ "description": "d".repeat(10_001) })),
            "description",
            "invalid_field",
        ),
        (
            with(json!({ "catchUpCap": 0 })),
            "catchUpCap",
            "invalid_field",
        ),
        (
            with(json!({ "catchUpCap": 101 })),
            "catchUpCap",
            "invalid_field",
        ),
        (
            with(json!({ "status": "archived" })),
            "status",
            "invalid_field",
        ),
        (
            with(json!({ "projectId": other_project })),
            "projectId",
            "invalid_reference",
        ),
        (
            with(json!({ "goalId": uuid::Uuid::now_v7() })),
            "goalId",
            "invalid_reference",
        ),
        (
            with(json!({ "parentIssueId": uuid::Uuid::now_v7() })),
            "parentIssueId",
            "invalid_reference",
        ),
        (
            with(json!({ "assigneeAgentId": uuid::Uuid::now_v7() })),
            "assigneeAgentId",
            "invalid_reference",
        ),
    ];
    for (body, field, code) in unprocessable {
        let resp = board
            .create_routine(&team.company, &body)
            .await
            .expect_error(422, code);
        assert_eq!(resp.body["details"]["field"], field, "{}", resp.text);
    }
    let malformed = [
        with(json!({ "triggers": [] })),
        with(json!({ "colour": "blue" })),
        with(json!({ "catchUpCap": "ten" })),
        with(json!({ "concurrencyPolicy": "whenever" })),
        json!({ "title": "x", "projectId": team.project }),
        json!({ "title": "x", "assigneeAgentId": team.agent }),
    ];
    for body in malformed {
        board
            .create_routine(&team.company, &body)
            .await
            .expect_error(400, "invalid_body");
    }
    let triggers = board
        .create_routine(&team.company, &with(json!({ "triggers": [] })))
        .await;
    assert!(
        triggers.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("/triggers")),
        "{}",
        triggers.text
    );

    app.board()
        .update_agent(&team.agent, &json!({ "status": "terminated" }))
        .await
        .expect(200);
    board
        .create_routine(&team.company, &base)
        .await
        .expect_error(409, "agent_not_assignable");
    let list = board.list_routines(&team.company, "").await.expect(200);
    assert_eq!(list.body["routines"], json!([]));
}

#[tokio::test]
async fn every_create_field_is_updatable_and_nullable_references_clear() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let goal = app
        .board()
        .create_goal(&team.company, &json!({ "title": "Uptime" }))
        .await
        .expect(201)
        .id();
    let project2 = app.seed_project(&team.company).await;
    let (agent2, _) = app.seed_agent(&team.company, "Bob").await;
    let parent = app
        .board()
        .create_issue(&team.company, &json!({ "title": "Epic" }))
        .await
        .expect(201)
        .id();
    let routine = app.seed_routine(&team, &json!({ "goalId": goal })).await;
    let changes = json!({
        "title": "Weekly report", "description": "Summarise {{payload.topic}}",
        "assigneeAgentId": agent2, "projectId": project2, "parentIssueId": parent,
        "priority": "high", "concurrencyPolicy": "always_enqueue",
        "catchUpPolicy": "enqueue_missed_with_cap", "catchUpCap": 3, "goalId": null,
    });
    let updated = app
        .board()
        .update_routine(&routine, &changes)
        .await
        .expect(200)
        .body;
    for key in [
        "title",
        "description",
        "assigneeAgentId",
        "projectId",
        "parentIssueId",
        "priority",
        "concurrencyPolicy",
        "catchUpPolicy",
        "catchUpCap",
    ] {
        assert_eq!(updated[key], changes[key], "{key}");
    }
    assert!(updated["goalId"].is_null());
    // Absent fields stay as they are.
    let again = app
        .board()
        .update_routine(&routine, &json!({ "priority": "low" }))
        .await
        .expect(200)
        .body;
    assert_eq!(again["parentIssueId"], parent.as_str());
    assert_eq!(again["title"], "Weekly report");
    app.board()
        .update_routine(&routine, &json!({ "catchUpCap": 0 }))
        .await
        .expect_error(422, "invalid_field");
    let activity = app
        .board()
        .activity(&team.company, "limit=1")
        .await
        .expect(200);
    assert_eq!(activity.body["activity"][0]["action"], "routine.updated");
    assert_eq!(
        activity.body["activity"][0]["details"]["priority"],
        json!({ "from": "high", "to": "low" })
    );
}

#[tokio::test]
async fn lifecycle_active_paused_archived() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let board = app.board();
    assert_eq!(
        board
            .update_routine(&routine, &json!({ "status": "paused" }))
            .await
            .expect(200)
            .body["status"],
        "paused"
    );
    assert_eq!(
        board
            .update_routine(&routine, &json!({ "status": "active" }))
            .await
            .expect(200)
            .body["status"],
        "active"
    );
    assert_eq!(
        board
            .update_routine(&routine, &json!({ "status": "archived" }))
            .await
            .expect(200)
            .body["status"],
        "archived"
    );
    for change in [
        json!({ "status": "active" }),
        json!({ "title": "again" }),
        json!({}),
    ] {
        board
            .update_routine(&routine, &change)
            .await
            .expect_error(409, "routine_archived");
    }
    board
        .create_trigger(&routine, &json!({ "kind": "api" }))
        .await
        .expect_error(409, "routine_archived");
    let paused = app
        .seed_routine(&team, &json!({ "status": "paused" }))
        .await;
    assert_eq!(
        board.get_routine(&paused).await.expect(200).body["status"],
        "paused"
    );
    let listed = board
        .list_routines(&team.company, "status=archived")
        .await
        .expect(200);
    assert_eq!(listed.body["routines"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn routines_list_with_filters_and_their_triggers() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let (agent2, _) = app.seed_agent(&team.company, "Bob").await;
    let first = app.seed_routine(&team, &json!({})).await;
    let second = app
        .seed_routine(
            &team,
            &json!({ "assigneeAgentId": agent2, "status": "paused" }),
        )
        .await;
    app.seed_trigger(
        &first,
        &json!({ "kind": "schedule", "cronExpression": "0 9 * * *" }),
    )
    .await;
    app.seed_trigger(&first, &json!({ "kind": "webhook" }))
        .await;

    let all = app
        .caller(Some(&team.key))
        .list_routines(&team.company, "")
        .await
        .expect(200)
        .body;
    let ids: Vec<String> = all["routines"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| str_at(r, "/id"))
        .collect();
    assert_eq!(ids, vec![second.clone(), first.clone()]);
    assert_eq!(
        all["routines"][1]["triggers"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(
        all["routines"][1]["triggers"][1]
            .get("webhookSecret")
            .is_none()
    );
    let by_agent = app
        .board()
        .list_routines(&team.company, &format!("assigneeAgentId={agent2}"))
        .await
        .expect(200);
    assert_eq!(by_agent.body["routines"][0]["id"], second.as_str());
    let active = app
        .board()
        .list_routines(&team.company, "status=active")
        .await
        .expect(200);
    assert_eq!(active.body["routines"][0]["id"], first.as_str());
    let by_project = app
        .board()
        .list_routines(&team.company, &format!("projectId={}", team.project))
        .await
        .expect(200);
    assert_eq!(
        by_project.body["routines"].as_array().map(Vec::len),
        Some(2)
    );
    let page = app
        .board()
        .list_routines(&team.company, "limit=1")
        .await
        .expect(200)
        .body;
    assert_eq!(page["nextBefore"], second.as_str());
    let rest = app
        .board()
        .list_routines(&team.company, &format!("limit=1&before={second}"))
        .await
        .expect(200)
        .body;
    assert_eq!(rest["routines"][0]["id"], first.as_str());
    app.board()
        .list_routines(&team.company, "status=sleeping")
        .await
        .expect_error(400, "invalid_query");
}

fn manual_clock(at: &str) -> (Arc<ManualClock>, SharedClock) {
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339(at).expect("time").to_utc();
    let clock = ManualClock::new(start);
    let shared: SharedClock = clock.clone();
    (clock, shared)
}

#[tokio::test]
async fn upcoming_merges_enabled_schedule_triggers() {
    nexus_tests::needs_servers!();
    let (_, clock) = manual_clock("2026-11-29T08:58:00Z");
    let app = TestApp::spawn_with(Options {
        clock: Some(clock),
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let hourly = app
        .seed_trigger(
            &routine,
            &json!({ "kind": "schedule", "cronExpression": "0 * * * *" }),
        )
        .await;
    let amsterdam = app
        .seed_trigger(&routine, &json!({ "kind": "schedule", "cronExpression": "30 10 * * *", "timezone": "Europe/Amsterdam" }))
        .await;
    app.seed_trigger(
        &routine,
        &json!({ "kind": "schedule", "cronExpression": "* * * * *", "enabled": false }),
    )
    .await;
    app.seed_trigger(&routine, &json!({ "kind": "webhook" }))
        .await;
    let hourly = str_at(&hourly, "/trigger/id");
    let amsterdam = str_at(&amsterdam, "/trigger/id");

    let fires = app
        .board()
        .upcoming(&routine, "count=4")
        .await
        .expect(200)
        .body;
    let got: Vec<(String, String)> = fires["fires"]
        .as_array()
        .expect("fires")
        .iter()
        .map(|f| (str_at(f, "/triggerId"), str_at(f, "/at")))
        .collect();
    assert_eq!(
        got,
        vec![
            (hourly.clone(), "2026-11-29T09:00:00Z".to_owned()),
            (amsterdam.clone(), "2026-11-29T09:30:00Z".to_owned()),
            (hourly.clone(), "2026-11-29T10:00:00Z".to_owned()),
            (hourly, "2026-11-29T11:00:00Z".to_owned()),
        ]
    );
    let default = app.board().upcoming(&routine, "").await.expect(200).body;
    assert_eq!(default["fires"].as_array().map(Vec::len), Some(10));
    app.board()
        .upcoming(&routine, "count=0")
        .await
        .expect_error(422, "invalid_field");
    app.board()
        .upcoming(&routine, "count=101")
        .await
        .expect_error(422, "invalid_field");
    app.board()
        .upcoming(&routine, "count=many")
        .await
        .expect_error(400, "invalid_query");
    app.board()
        .update_routine(&routine, &json!({ "status": "paused" }))
        .await
        .expect(200);
    assert_eq!(
        app.board().upcoming(&routine, "").await.expect(200).body["fires"],
        json!([])
    );
}

#[tokio::test]
async fn resuming_continues_from_the_next_future_fire() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (clock, shared) = manual_clock("2026-11-29T08:58:00Z");
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let created = app
        .seed_trigger(
            &routine,
            &json!({ "kind": "schedule", "cronExpression": "*/15 * * * *" }),
        )
        .await;
    let trigger = str_at(&created, "/trigger/id");
    assert_eq!(created["trigger"]["nextRunAt"], "2026-11-29T09:00:00Z");

    let paused = app
        .board()
        .update_routine(&routine, &json!({ "status": "paused" }))
        .await
        .expect(200)
        .body;
    assert!(
        paused["triggers"][0]["nextRunAt"].is_null(),
        "a paused routine's schedule has no next fire"
    );
    clock.advance(TimeDelta::hours(3) + TimeDelta::minutes(7));
    let resumed = app
        .board()
        .update_routine(&routine, &json!({ "status": "active" }))
        .await
        .expect(200)
        .body;
    assert_eq!(resumed["triggers"][0]["nextRunAt"], "2026-11-29T12:15:00Z");

    let disabled = app
        .board()
        .update_trigger(&trigger, &json!({ "enabled": false }))
        .await
        .expect(200)
        .body;
    assert!(disabled["nextRunAt"].is_null());
    clock.advance(TimeDelta::hours(1));
    let enabled = app
        .board()
        .update_trigger(&trigger, &json!({ "enabled": true }))
        .await
        .expect(200)
        .body;
    assert_eq!(enabled["nextRunAt"], "2026-11-29T13:15:00Z");
    let stored: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT next_run_at FROM routine_triggers WHERE id = $1::uuid")
            .bind(&trigger)
            .fetch_one(&app.db.pool)
            .await
            .expect("trigger row");
    assert_eq!(
        stored.map(|t| t.to_rfc3339()),
        Some("2026-11-29T13:15:00+00:00".to_owned())
    );
}
