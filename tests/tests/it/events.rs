//! Live updates: `GET /api/companies/{companyId}/events`.

use std::time::Duration;

use chrono::TimeDelta;
use nexus_shared::{ManualClock, clock::SharedClock};
use nexus_tests::{Options, StreamEvent, TestApp};
use serde_json::json;

fn is<'a>(name: &'static str, id: &'a str) -> impl Fn(&StreamEvent) -> bool + 'a {
    move |e| e.name == name && e.data["id"] == id
}

#[tokio::test]
async fn a_change_made_through_one_replica_is_streamed_by_the_other() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let replica = app.spawn_replica().await;
    let team = app.seed_team().await;
    let mut stream = app
        .events(&replica, &team.company, &app.board_token, None)
        .await
        .expect("a stream");

    let routine = app.seed_routine(&team, &json!({"title": "Nightly"})).await;
    let event = stream.until(is("routine.updated", &routine)).await;
    assert_eq!(event.data["title"], "Nightly");
    let first: i64 = event.id.expect("an id").parse().expect("a number");

    let created = app
        .seed_trigger(
            &routine,
            &json!({"kind": "webhook", "signingMode": "hmac_sha256"}),
        )
        .await;
    let trigger = created["trigger"]["id"].as_str().expect("id").to_owned();
    let secret = created["secretMaterial"]["webhookSecret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let event = stream.until(is("trigger.updated", &trigger)).await;
    assert_eq!(event.data["routineId"], routine.as_str());
    assert!(
        !event.data.to_string().contains(&secret),
        "an event never carries a secret"
    );
    let second: i64 = event.id.expect("an id").parse().expect("a number");
    assert!(second > first, "ids increase");

    let run = app
        .board()
        .run_routine(&routine, &json!({}))
        .await
        .expect(202)
        .id();
    let created = stream.until(is("run.created", &run)).await;
    assert_eq!(created.data["routineId"], routine.as_str());
    app.drain().await;
    let updated = stream
        .until(|e| e.name == "run.updated" && e.data["id"] == run.as_str())
        .await;
    assert_eq!(updated.data["status"], "issue_created");

    app.board()
        .send(
            reqwest::Method::DELETE,
            &format!("/api/routine-triggers/{trigger}"),
            None,
        )
        .await
        .expect(204);
    let deleted = stream.until(is("trigger.updated", &trigger)).await;
    assert_eq!(deleted.data["deleted"], true);
}

#[tokio::test]
async fn a_client_reconnecting_with_last_event_id_gets_what_it_missed_once() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let mut stream = app
        .events(&app.base, &team.company, &app.board_token, None)
        .await
        .expect("a stream");
    app.board()
        .update_routine(&routine, &json!({"title": "Seen"}))
        .await
        .expect(200);
    let seen = stream.until(is("routine.updated", &routine)).await;
    assert_eq!(seen.data["title"], "Seen");
    drop(stream);

    // Missed while disconnected: two changes.
    app.board()
        .update_routine(&routine, &json!({"title": "Missed"}))
        .await
        .expect(200);
    let run = app
        .board()
        .run_routine(&routine, &json!({}))
        .await
        .expect(202)
        .id();
    let last = seen.id.expect("an id");
    let mut resumed = app
        .events(&app.base, &team.company, &app.board_token, Some(&last))
        .await
        .expect("a stream");
    let mut names = Vec::new();
    let mut ids = vec![last.parse::<i64>().expect("a number")];
    // The run waits for a worker: live updates yield to the queue for up to 5 s.
    let wanted = [
        ("routine.updated".to_owned(), Some(routine.clone())),
        ("run.created".to_owned(), Some(run.clone())),
    ];
    while !wanted.iter().all(|w| names.contains(w)) {
        let Some(event) = resumed.next_within(Duration::from_secs(10)).await else {
            break;
        };
        ids.push(event.id.expect("an id").parse().expect("a number"));
        names.push((event.name, event.data["id"].as_str().map(str::to_owned)));
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "nothing twice, nothing already seen: {ids:?}"
    );
    assert!(names.contains(&("routine.updated".to_owned(), Some(routine.clone()))));
    assert!(names.contains(&("run.created".to_owned(), Some(run))));
    assert!(!names.iter().any(|(name, _)| name == "reset"), "{names:?}");

    // An id that is not a number, or one never given, is told to reload.
    for bogus in ["yesterday", "999999999"] {
        let mut stream = app
            .events(&app.base, &team.company, &app.board_token, Some(bogus))
            .await
            .expect("a stream");
        assert_eq!(stream.next().await.name, "reset", "{bogus}");
    }
}

#[tokio::test]
async fn a_client_away_longer_than_five_minutes_is_told_to_reload() {
    nexus_tests::needs_servers!();
    let clock = ManualClock::new(chrono::Utc::now());
    let shared: SharedClock = clock.clone();
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let mut stream = app
        .events(&app.base, &team.company, &app.board_token, None)
        .await
        .expect("a stream");
    app.board()
        .update_routine(&routine, &json!({"title": "Before"}))
        .await
        .expect(200);
    let before = stream.until(is("routine.updated", &routine)).await;
    drop(stream);

    // Four minutes later it is still resumed from the log.
    clock.advance(TimeDelta::minutes(4));
    app.board()
        .update_routine(&routine, &json!({"title": "Later"}))
        .await
        .expect(200);
    let last = before.id.clone().expect("an id");
    let mut resumed = app
        .events(&app.base, &team.company, &app.board_token, Some(&last))
        .await
        .expect("a stream");
    let next = resumed.next().await;
    assert_eq!(
        (next.name.as_str(), &next.data["title"]),
        ("routine.updated", &json!("Later"))
    );
    drop(resumed);

    // Past the kept time the events it missed are gone: reset, with the id to continue from.
    clock.advance(TimeDelta::minutes(3));
    app.board()
        .update_routine(&routine, &json!({"title": "Much later"}))
        .await
        .expect(200);
    nexus_tests::eventually(10, "the old events to be deleted", || async {
        let log = app.store.event_log().await.expect("log");
        (log.purged_through > 0).then_some(())
    })
    .await;
    let mut stale = app
        .events(&app.base, &team.company, &app.board_token, Some(&last))
        .await
        .expect("a stream");
    let reset = stale.next().await;
    assert_eq!(reset.name, "reset");
    let from: i64 = reset.id.expect("an id").parse().expect("a number");
    assert!(from > last.parse::<i64>().expect("a number"));
}

#[tokio::test]
async fn the_stream_is_for_the_board_and_the_companys_agents_only() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let other = app.seed_company("Other").await;
    let (_, outsider) = app.seed_agent(&other, "Eve").await;
    assert_eq!(
        app.events(&app.base, &team.company, "not-a-token", None)
            .await
            .expect_err("refused")
            .0,
        401
    );
    let (status, body) = app
        .events(&app.base, &team.company, &outsider, None)
        .await
        .expect_err("refused");
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        app.events(&app.base, &unknown, &app.board_token, None)
            .await
            .expect_err("refused")
            .0,
        404
    );
    // An agent of the company sees its changes, and nothing of another company's.
    let mut stream = app
        .events(&app.base, &team.company, &team.key, None)
        .await
        .expect("a stream");
    // Someone watches the other company on the same process, so its changes are broadcast.
    let mut watching_other = app
        .events(&app.base, &other, &app.board_token, None)
        .await
        .expect("a stream");
    let project = app.seed_project(&other).await;
    let (outsider_agent, _) = app.seed_agent(&other, "Mallory").await;
    let elsewhere = app
        .board()
        .create_routine(
            &other,
            &json!({"title": "Elsewhere", "assigneeAgentId": outsider_agent, "projectId": project}),
        )
        .await
        .expect(201)
        .id();
    let routine = app.seed_routine(&team, &json!({})).await;
    let first = stream.next().await;
    assert_eq!(
        (first.name.as_str(), first.data["id"].as_str()),
        ("routine.updated", Some(routine.as_str())),
        "the other company's routine {elsewhere} is not streamed here"
    );
    watching_other
        .until(|e| e.name == "routine.updated" && e.data["id"] == elsewhere.as_str())
        .await;
}

#[tokio::test]
async fn a_process_holds_at_most_its_configured_streams_open() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn_with(Options {
        env: vec![("NEXUS_HTTP_MAX_EVENT_STREAMS", "2".to_owned())],
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    let first = app
        .events(&app.base, &team.company, &app.board_token, None)
        .await
        .expect("a stream");
    let _second = app
        .events(&app.base, &team.company, &team.key, None)
        .await
        .expect("a stream");
    let (status, body) = app
        .events(&app.base, &team.company, &app.board_token, None)
        .await
        .expect_err("refused");
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("too_many_streams"))
    );
    // A closed stream frees its place (once the server sees the connection go).
    drop(first);
    let third = nexus_tests::within(10, || async {
        app.events(&app.base, &team.company, &app.board_token, None)
            .await
            .ok()
    })
    .await;
    assert!(third.is_some(), "a place is free again");
    // The rest of the API is not affected.
    app.board().list_companies().await.expect(200);
}
