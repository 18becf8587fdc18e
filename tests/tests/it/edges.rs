//! The edges a new user or a hostile client reaches first: U+0000 in text and payloads,
//! explicit nulls, empty bodies, the bearer scheme in any case, refused webhook calls that
//! must leave no trace, signatures dated ahead, replay memory that outlives Redis, and the
//! triggers of an archived routine. Runs on both backends (`NEXUS_TEST_BACKEND=sqlite`).

use chrono::{DateTime, TimeDelta, Utc};
use nexus_shared::{Clock as _, ManualClock, clock::SharedClock};
use nexus_tests::{Options, TestApp, str_at};
use reqwest::Method;
use serde_json::{Value, json};

use crate::webhooks::{hook, on, send, signed};

const NUL: &str = "a\u{0}b";

#[tokio::test]
async fn u0000_in_a_text_field_is_422_naming_the_field() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let board = app.board();
    let refused = |resp: nexus_tests::Resp, field: &str| {
        let resp = resp.expect_error(422, "invalid_field");
        assert_eq!(resp.body["details"]["field"], json!(field), "{}", resp.text);
    };
    refused(board.create_company(&json!({ "name": NUL })).await, "name");
    let team = app.seed_team().await;
    refused(
        board
            .create_agent(&team.company, &json!({ "name": NUL }))
            .await,
        "name",
    );
    refused(
        board
            .create_issue(&team.company, &json!({ "title": "ok", "description": NUL }))
            .await,
        "description",
    );
    let body = json!({ "title": NUL, "assigneeAgentId": team.agent, "projectId": team.project });
    refused(board.create_routine(&team.company, &body).await, "title");
    let routine = app.seed_routine(&team, &json!({})).await;
    refused(
        board
            .update_routine(&routine, &json!({ "description": NUL }))
            .await,
        "description",
    );
    refused(
        board
            .create_trigger(&routine, &json!({ "kind": "api", "label": NUL }))
            .await,
        "label",
    );
    refused(
        board
            .run_routine(&routine, &json!({ "idempotencyKey": NUL }))
            .await,
        "idempotencyKey",
    );
    // Nothing was stored by any of them.
    let companies = board.list_companies().await.expect(200).body;
    assert_eq!(companies["companies"].as_array().map(Vec::len), Some(1));
    let runs = board.list_runs(&routine, "").await.expect(200).body;
    assert_eq!(runs["runs"], json!([]));
}

#[tokio::test]
async fn u0000_inside_a_payload_is_kept_as_u_fffd_and_the_run_accepted() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let run = app
        .board()
        .run_routine(
            &routine,
            &json!({ "payload": { "note": NUL, "k\u{0}": [NUL, { "deep": NUL }] } }),
        )
        .await
        .expect(202);
    let kept = "a\u{FFFD}b";
    let expected = json!({ "note": kept, "k\u{FFFD}": [kept, { "deep": kept }] });
    assert_eq!(run.body["payload"], expected);
    let stored = app.board().get_run(&run.id()).await.expect(200);
    assert_eq!(stored.body["payload"], expected);

    // A signed webhook body: the signature covers the bytes as sent.
    let hook = hook(&app, &team, "hmac_sha256").await;
    let body = br#"{"ref":"a\u0000b"}"#.to_vec();
    let headers = signed(&hook.secret, Utc::now().timestamp(), &body);
    let sent = send(&on(&app, &hook.url), &headers, body).await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    assert_eq!(sent.body["payload"], json!({ "ref": kept }));
    // A public id holding U+0000 is simply unknown.
    let url = format!("{}/api/routine-triggers/public/%00/fire", app.base);
    assert_eq!(send(&url, &[], Vec::new()).await.status, 404);
    let url = format!("{}/api/routine-triggers/public/a%00b/fire", app.base);
    let sent = send(&url, &[], Vec::new()).await;
    assert_eq!(
        (sent.status, sent.body["code"].clone()),
        (404, json!("not_found"))
    );
}

#[tokio::test]
async fn an_explicit_null_clears_a_nullable_field_and_is_400_for_any_other() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app
        .seed_routine(&team, &json!({ "description": "keep me?" }))
        .await;
    let board = app.board();
    for body in [
        json!({ "title": null }),
        json!({ "priority": null }),
        json!({ "assigneeAgentId": null }),
        json!({ "catchUpCap": null }),
    ] {
        let refused = board.update_routine(&routine, &body).await;
        let refused = refused.expect_error(400, "invalid_body");
        let field = body.as_object().and_then(|o| o.keys().next()).cloned();
        assert_eq!(refused.body["details"]["field"], json!(field));
    }
    board
        .create_company(&json!({ "name": null }))
        .await
        .expect_error(400, "invalid_body");
    let cleared = board
        .update_routine(&routine, &json!({ "description": null, "goalId": null }))
        .await
        .expect(200);
    assert_eq!(cleared.body["description"], json!(""));
    assert_eq!(cleared.body["title"], json!("Daily report {{date}}"));
    // On an issue, the optional references may be null at creation ("none").
    board
        .create_issue(
            &team.company,
            &json!({ "title": "t", "assigneeAgentId": null, "projectId": null }),
        )
        .await
        .expect(201);
}

#[tokio::test]
async fn a_post_whose_fields_are_all_optional_takes_an_empty_body() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let path = format!("/api/routines/{routine}/run");
    let board = app.board();
    let bare = board.send_raw(Method::POST, &path, None, Vec::new()).await;
    assert_eq!(bare.status, 202, "{}", bare.text);
    assert_eq!(bare.body["source"], json!("manual"));
    let typed = board
        .send_raw(Method::POST, &path, Some("application/json"), Vec::new())
        .await;
    assert_eq!(typed.status, 202, "{}", typed.text);
    // A body with something in it still needs its content type; a required field is still
    // required.
    board
        .send_raw(Method::POST, &path, Some("text/plain"), b"{}".to_vec())
        .await
        .expect_error(415, "unsupported_media_type");
    board
        .send_raw(Method::POST, "/api/companies", None, Vec::new())
        .await
        .expect_error(400, "invalid_body");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_on_the_api_and_the_webhook() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let http = nexus_tests::http_client();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let answer = http
            .get(format!("{}/api/companies", app.base))
            .header("authorization", format!("{scheme} {}", app.board_token))
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status(), 200, "{scheme}");
    }
    let hook = hook(&app, &team, "bearer").await;
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let headers = [("authorization", format!("{scheme} {}", hook.secret))];
        let sent = send(&on(&app, &hook.url), &headers, Vec::new()).await;
        assert_eq!(sent.status, 202, "{scheme}: {}", sent.body);
    }
    let headers = [("authorization", format!("Basic {}", hook.secret))];
    assert_eq!(
        send(&on(&app, &hook.url), &headers, Vec::new())
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn a_refused_signed_call_leaves_no_trace_and_succeeds_once_sent_again() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "hmac_sha256").await;
    let url = on(&app, &hook.url);
    let body = br#"{"n":1}"#.to_vec();
    let headers = signed(&hook.secret, Utc::now().timestamp(), &body);
    // Refused while the trigger is disabled (409 not_active) ...
    app.board()
        .update_trigger(&hook.trigger, &json!({ "enabled": false }))
        .await
        .expect(200);
    let refused = send(&url, &headers, body.clone()).await;
    assert_eq!(
        (refused.status, refused.body["code"].clone()),
        (409, json!("not_active"))
    );
    // ... and with a wrong content type (415).
    let mut wrong_type = headers.clone();
    wrong_type.retain(|(name, _)| *name != "content-type");
    wrong_type.push(("content-type", "text/plain".to_owned()));
    app.board()
        .update_trigger(&hook.trigger, &json!({ "enabled": true }))
        .await
        .expect(200);
    assert_eq!(send(&url, &wrong_type, body.clone()).await.status, 415);
    // The identical call is accepted now, once.
    let accepted = send(&url, &headers, body.clone()).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let again = send(&url, &headers, body.clone()).await;
    assert_eq!(
        (again.status, again.body["code"].clone()),
        (409, json!("replayed"))
    );
    // A replay keeps its answer whatever content type it claims (the contract's order).
    let replayed = send(&url, &wrong_type, body).await;
    assert_eq!(
        (replayed.status, replayed.body["code"].clone()),
        (409, json!("replayed"))
    );
    let runs = app
        .board()
        .list_runs(&hook.routine, "")
        .await
        .expect(200)
        .body;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_signature_dated_ahead_is_remembered_until_its_own_time_leaves_the_window() {
    nexus_tests::needs_servers!();
    let clock = ManualClock::new(
        DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .expect("time")
            .to_utc(),
    );
    let shared: SharedClock = clock.clone();
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "hmac_sha256").await; // a 60-second window
    let url = on(&app, &hook.url);
    let body = br#"{"n":1}"#.to_vec();
    let ahead = clock.now().timestamp() + 60;
    let headers = signed(&hook.secret, ahead, &body);
    assert_eq!(send(&url, &headers, body.clone()).await.status, 202);
    // 61 s later the timestamp is one second in the past: still inside the window, so the
    // call authenticates, and it must still be remembered.
    clock.advance(TimeDelta::seconds(61));
    let replay = send(&url, &headers, body.clone()).await;
    assert_eq!(
        (replay.status, replay.body["code"].clone()),
        (409, json!("replayed"))
    );
    clock.advance(TimeDelta::seconds(58));
    assert_eq!(
        send(&url, &headers, body.clone()).await.status,
        409,
        "still in the window"
    );
    // Once its own timestamp has left the window, it no longer authenticates at all.
    clock.advance(TimeDelta::seconds(2));
    assert_eq!(send(&url, &headers, body).await.status, 401);
    let runs = app
        .board()
        .list_runs(&hook.routine, "")
        .await
        .expect(200)
        .body;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn the_replay_memory_outlives_redis_losing_everything() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "hmac_sha256").await;
    let url = on(&app, &hook.url);
    let body = br#"{"n":1}"#.to_vec();
    let headers = signed(&hook.secret, Utc::now().timestamp(), &body);
    assert_eq!(send(&url, &headers, body.clone()).await.status, 202);
    // Redis restarts with nothing on disk: every key of this deployment is gone.
    let prefix = app.config.redis_prefix.clone();
    let client = redis::Client::open(nexus_tests::redis_url()).expect("redis url");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut redis)
        .await
        .expect("keys");
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut redis)
            .await
            .expect("del");
    }
    // A second replica (a fresh process) on the same deployment refuses it too (the embedded
    // backend serves one process: there, the one API).
    let mut bases = vec![app.base.clone()];
    if nexus_tests::backend_is_postgres() {
        bases.push(app.spawn_replica().await);
    }
    for base in bases {
        let url = url.replacen(&app.base, &base, 1);
        let replay = send(&url, &headers, body.clone()).await;
        assert_eq!(
            (replay.status, replay.body["code"].clone()),
            (409, json!("replayed")),
            "{base}"
        );
    }
    let runs = app
        .board()
        .list_runs(&hook.routine, "")
        .await
        .expect(200)
        .body;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn an_archived_routines_trigger_can_still_lose_its_secret() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "bearer").await;
    let other = str_at(
        &app.seed_trigger(&hook.routine, &json!({ "kind": "webhook" }))
            .await,
        "/trigger/id",
    );
    let board = app.board();
    board
        .update_routine(&hook.routine, &json!({ "status": "archived" }))
        .await
        .expect(200);
    board
        .update_trigger(&hook.trigger, &json!({ "label": "x" }))
        .await
        .expect_error(409, "routine_archived");
    let rotated = board.rotate_trigger_secret(&hook.trigger).await.expect(200);
    let new_secret = str_at(&rotated.body, "/secretMaterial/webhookSecret");
    assert_ne!(new_secret, hook.secret);
    // The leaked secret is refused; the new one reaches an archived routine: 409.
    let old = [("authorization", format!("Bearer {}", hook.secret))];
    assert_eq!(
        send(&on(&app, &hook.url), &old, Vec::new()).await.status,
        401
    );
    let new = [("authorization", format!("Bearer {new_secret}"))];
    assert_eq!(
        send(&on(&app, &hook.url), &new, Vec::new()).await.status,
        409
    );
    board.delete_trigger(&other).await.expect(204);
    let routine = board.get_routine(&hook.routine).await.expect(200).body;
    let left: Vec<Value> = routine["triggers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|t| t["id"].clone())
        .collect();
    assert_eq!(left, [json!(hook.trigger)]);
}
