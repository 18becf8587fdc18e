//! Notification channels over HTTP. Deliveries go to local receivers; signatures are checked
//! against the Python `standardwebhooks` package (installed by `.ci/run`).

use std::sync::PoisonError;

use chrono::{DateTime, TimeDelta, Utc};
use nexus_shared::{ManualClock, clock::SharedClock};
use nexus_tests::{Options, TestApp, str_at};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    wakeups::{Receiver, spawn_receiver},
    webhooks::formats::python,
};

fn clock_now() -> (std::sync::Arc<ManualClock>, SharedClock) {
    // Real time, so that signatures are checked as a receiver would check them today.
    let clock = ManualClock::new(Utc::now());
    let shared: SharedClock = clock.clone();
    (clock, shared)
}

async fn app_at(shared: SharedClock) -> TestApp {
    TestApp::spawn_with(Options {
        clock: Some(shared),
        ..Default::default()
    })
    .await
}

fn seen(receiver: &Receiver) -> Vec<(axum::http::HeaderMap, axum::body::Bytes)> {
    receiver
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

async fn create_channel(app: &TestApp, company: &str, body: &Value) -> nexus_tests::Resp {
    app.board()
        .send(
            Method::POST,
            &format!("/api/companies/{company}/notification-channels"),
            Some(body),
        )
        .await
}

async fn deliveries(app: &TestApp, channel: &str) -> Vec<Value> {
    let body = app
        .board()
        .send(
            Method::GET,
            &format!("/api/notification-channels/{channel}/deliveries"),
            None,
        )
        .await
        .expect(200)
        .body;
    body["deliveries"].as_array().cloned().unwrap_or_default()
}

/// The `webhook-signature` the `standardwebhooks` package computes for a message.
fn library_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let script = "import sys, datetime\n\
                  from standardwebhooks.webhooks import Webhook\n\
                  at = datetime.datetime.fromtimestamp(int(sys.argv[3]), tz=datetime.timezone.utc)\n\
                  print(Webhook(sys.argv[1]).sign(sys.argv[2], at, sys.stdin.buffer.read()))";
    python(script, &[secret, id, timestamp], body)
}

fn header(headers: &axum::http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn channels_are_the_boards_and_bad_input_is_refused() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let webhook = json!({
        "name": "On call", "kind": "webhook", "url": "https://alerts.example.com/nexus",
        "events": ["run.failed", "routine.paused_on_failures"],
    });
    let created = create_channel(&app, &team.company, &webhook)
        .await
        .expect(201)
        .body;
    assert!(str_at(&created, "/signingSecret").starts_with("whsec_"));
    assert_eq!(created["channel"]["enabled"], true);
    assert_eq!(created["channel"]["routineIds"], Value::Null);
    let channel = str_at(&created, "/channel/id");
    let slack = json!({
        "name": "Team room", "kind": "slack", "url": "https://hooks.slack.example/services/T/B/x",
        "events": ["run.failed", "run.failed"], "routineIds": [routine, routine],
    });
    let created = create_channel(&app, &team.company, &slack)
        .await
        .expect(201)
        .body;
    assert_eq!(created["signingSecret"], Value::Null);
    assert_eq!(created["channel"]["events"], json!(["run.failed"]));
    assert_eq!(created["channel"]["routineIds"], json!([routine]));

    let listed = app
        .board()
        .send(
            Method::GET,
            &format!("/api/companies/{}/notification-channels", team.company),
            None,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(listed["channels"].as_array().map(Vec::len), Some(2));
    assert!(
        !listed.to_string().contains("whsec_"),
        "never a secret again"
    );

    // Refused input: nothing is created.
    let bad = [
        (json!({"events": []}), "events"),
        (json!({"events": ["run.exploded"]}), "events"),
        (json!({"url": "ftp://alerts.example.com/"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"name": ""}), "name"),
    ];
    for (change, field) in bad {
        let mut body = webhook.clone();
        if let (Some(body), Some(change)) = (body.as_object_mut(), change.as_object()) {
            body.extend(change.clone());
        }
        let refused = create_channel(&app, &team.company, &body)
            .await
            .expect_error(422, "invalid_field");
        assert_eq!(refused.body["details"]["field"], field, "{body}");
    }
    let other = app.seed_team().await;
    let foreign = app.seed_routine(&other, &json!({})).await;
    let mut body = webhook.clone();
    body["routineIds"] = json!([foreign]);
    create_channel(&app, &team.company, &body)
        .await
        .expect_error(422, "invalid_reference");
    let mut body = webhook.clone();
    body["kind"] = json!("email");
    create_channel(&app, &team.company, &body).await.expect(400);
    // Agents may not see or manage channels.
    let agent = app.caller(Some(&team.key));
    agent
        .send(
            Method::POST,
            &format!("/api/companies/{}/notification-channels", team.company),
            Some(&webhook),
        )
        .await
        .expect(403);
    agent
        .send(
            Method::GET,
            &format!("/api/notification-channels/{channel}/deliveries"),
            None,
        )
        .await
        .expect(403);
    create_channel(&app, &uuid::Uuid::nil().to_string(), &webhook)
        .await
        .expect(404);

    // Changes: routineIds null means every routine again; kind cannot change.
    let changed = app
        .board()
        .send(
            Method::PATCH,
            &format!("/api/notification-channels/{channel}"),
            Some(&json!({"name": "Pager", "routineIds": [routine], "enabled": false})),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (
            &changed["name"],
            &changed["routineIds"],
            &changed["enabled"]
        ),
        (&json!("Pager"), &json!([routine]), &json!(false))
    );
    let changed = app
        .board()
        .send(
            Method::PATCH,
            &format!("/api/notification-channels/{channel}"),
            Some(&json!({"routineIds": null})),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(changed["routineIds"], Value::Null);
    app.board()
        .send(
            Method::PATCH,
            &format!("/api/notification-channels/{channel}"),
            Some(&json!({"kind": "slack"})),
        )
        .await
        .expect(400);
    app.board()
        .send(
            Method::PATCH,
            &format!("/api/notification-channels/{channel}"),
            Some(&json!({"events": null})),
        )
        .await
        .expect(400);
    app.board()
        .send(
            Method::DELETE,
            &format!("/api/notification-channels/{channel}"),
            None,
        )
        .await
        .expect(204);
    app.board()
        .send(
            Method::POST,
            &format!("/api/notification-channels/{channel}/test"),
            None,
        )
        .await
        .expect(404);
    let log = app
        .board()
        .activity(&team.company, "limit=20")
        .await
        .expect(200)
        .body
        .to_string();
    assert!(
        log.contains("notification_channel.created")
            && log.contains("notification_channel.deleted")
    );
    assert!(
        !log.contains("alerts.example.com"),
        "a URL may hold a token: never logged"
    );
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_the_notification_once_with_one_id() {
    nexus_tests::needs_servers!();
    let (clock, shared) = clock_now();
    let app = app_at(shared).await;
    let team = app.seed_team().await;
    let (url, receiver) = spawn_receiver(vec![500, 503, 502, 204]).await;
    let created = create_channel(
        &app,
        &team.company,
        &json!({"name": "Hook", "kind": "webhook", "url": url, "events": ["run.failed"]}),
    )
    .await
    .expect(201)
    .body;
    let (channel, secret) = (
        str_at(&created, "/channel/id"),
        str_at(&created, "/signingSecret"),
    );
    let sent = app
        .board()
        .send(
            Method::POST,
            &format!("/api/notification-channels/{channel}/test"),
            None,
        )
        .await
        .expect(202)
        .body;
    let id = str_at(&sent, "/notificationId");
    let worker = app.worker("notifier");
    for attempt in 1..=4 {
        assert_eq!(
            worker.run_once().await.expect("attempt"),
            nexus_worker::Outcome::Worked(1),
            "attempt {attempt}"
        );
        assert_eq!(seen(&receiver).len(), attempt);
        // The backoff after attempt n is at most 2^(n-1) s.
        clock.advance(TimeDelta::seconds(8));
    }
    assert_eq!(
        worker.run_once().await.expect("idle"),
        nexus_worker::Outcome::Idle
    );
    let requests = seen(&receiver);
    assert_eq!(requests.len(), 4, "acknowledged once, never sent again");
    for (headers, body) in &requests {
        assert_eq!(header(headers, "webhook-id"), id, "one id across retries");
        let timestamp = header(headers, "webhook-timestamp");
        assert_eq!(
            header(headers, "webhook-signature"),
            library_signature(&secret, &id, &timestamp, body),
            "signed as the Standard Webhooks library signs"
        );
        let body: Value = serde_json::from_slice(body).expect("json");
        assert_eq!(body["type"], "test");
        assert_eq!(body["data"]["companyId"], team.company.as_str());
        assert_eq!(body["data"]["channel"]["id"], channel.as_str());
        DateTime::parse_from_rfc3339(body["timestamp"].as_str().expect("timestamp"))
            .expect("an RFC 3339 timestamp");
    }
    let log = deliveries(&app, &channel).await;
    assert_eq!(log.len(), 1);
    assert_eq!(
        (
            &log[0]["id"],
            &log[0]["event"],
            &log[0]["status"],
            &log[0]["attempts"]
        ),
        (&json!(id), &json!("test"), &json!("delivered"), &json!(4))
    );
    assert_eq!(log[0]["lastStatusCode"], 204);
    assert_eq!(log[0]["lastError"], Value::Null);
    assert!(log[0]["deliveredAt"].is_string());
}

/// A routine whose run failed (its issue cancelled); returns (routine, run).
async fn failed_run(app: &TestApp, team: &nexus_tests::Team, title: &str) -> (String, String) {
    let routine = app
        .seed_routine(
            team,
            &json!({"title": title, "concurrencyPolicy": "always_enqueue"}),
        )
        .await;
    let run = app
        .board()
        .run_routine(&routine, &json!({}))
        .await
        .expect(202)
        .id();
    app.worker("dispatcher").run_once().await.expect("dispatch");
    let issue = str_at(
        &app.board().get_run(&run).await.expect(200).body,
        "/linkedIssueId",
    );
    app.board()
        .update_issue(&issue, &json!({"status": "cancelled"}))
        .await
        .expect(200);
    (routine, run)
}

#[tokio::test]
async fn a_failed_run_reaches_each_channel_once_with_two_workers_racing() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let (hook_url, hook) = spawn_receiver(vec![204]).await;
    let (slack_url, slack) = spawn_receiver(vec![200]).await;
    for (kind, url) in [("webhook", &hook_url), ("slack", &slack_url)] {
        create_channel(
            &app,
            &team.company,
            &json!({"name": kind, "kind": kind, "url": url, "events": ["run.failed"]}),
        )
        .await
        .expect(201);
    }
    let (routine, run) = failed_run(&app, &team, "Nightly export").await;
    let shown = app.board().get_routine(&routine).await.expect(200).body;
    assert_eq!(shown["consecutiveFailures"], 1);
    assert_eq!(shown["lastRun"]["id"], run.as_str());
    assert_eq!(shown["lastRun"]["status"], "failed");
    assert_eq!(shown["lastRun"]["reason"], "issue_cancelled");

    let (first, second) = (app.worker("one"), app.worker("two"));
    let (a, b) = tokio::join!(first.run_once(), second.run_once());
    a.expect("one");
    b.expect("two");
    app.drain().await;
    let hooked = seen(&hook);
    assert_eq!(hooked.len(), 1, "one notification, delivered once");
    let body: Value = serde_json::from_slice(&hooked[0].1).expect("json");
    assert_eq!(body["type"], "run.failed");
    assert_eq!(body["data"]["run"]["id"], run.as_str());
    assert_eq!(body["data"]["run"]["status"], "failed");
    assert_eq!(body["data"]["routine"]["title"], "Nightly export");
    let posted = seen(&slack);
    assert_eq!(posted.len(), 1);
    assert!(
        posted[0].0.get("webhook-signature").is_none(),
        "Slack gets no signature"
    );
    let text: Value = serde_json::from_slice(&posted[0].1).expect("json");
    let line = text["text"].as_str().expect("a text");
    assert!(
        line.contains("Nightly export") && line.contains("issue_cancelled") && !line.contains('\n'),
        "{line}"
    );
    assert_eq!(text.as_object().map(serde_json::Map::len), Some(1));
}

#[tokio::test]
async fn a_worker_that_dies_mid_delivery_leaves_it_to_another() {
    nexus_tests::needs_servers!();
    let (clock, shared) = clock_now();
    let app = app_at(shared).await;
    let team = app.seed_team().await;
    let (url, receiver) = spawn_receiver(vec![204]).await;
    let channel = create_channel(
        &app,
        &team.company,
        &json!({"name": "Hook", "kind": "webhook", "url": url, "events": ["run.failed"]}),
    )
    .await
    .expect(201)
    .body;
    let channel = str_at(&channel, "/channel/id");
    failed_run(&app, &team, "Report").await;
    // The change's notices become one notification for the channel (a worker step); a worker
    // then takes its delivery job and dies before sending it.
    let survivor = app.worker("survivor");
    assert_eq!(
        survivor.run_once().await.expect("fan-out"),
        nexus_worker::Outcome::Worked(1)
    );
    let taken = app
        .store
        .claim_jobs("doomed", std::time::Duration::from_secs(30), 10)
        .await
        .expect("claim");
    assert_eq!(taken.len(), 1);
    assert!(matches!(
        taken[0].task,
        nexus_shared::queue::Task::DeliverNotification { .. }
    ));
    assert_eq!(
        survivor.run_once().await.expect("nothing due"),
        nexus_worker::Outcome::Idle
    );
    assert!(seen(&receiver).is_empty());
    clock.advance(TimeDelta::seconds(31));
    survivor.maintain().await.expect("reap");
    app.drain().await;
    assert_eq!(seen(&receiver).len(), 1, "delivered once by the survivor");
    let log = deliveries(&app, &channel).await;
    assert_eq!(
        (&log[0]["status"], &log[0]["attempts"]),
        (&json!("delivered"), &json!(1))
    );
}

#[tokio::test]
async fn a_name_resolving_to_a_private_address_fails_the_delivery() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn_with(Options {
        env: vec![("NEXUS_ALLOW_PRIVATE_URLS", "false".to_owned())],
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    for literal in [
        "http://127.0.0.1:9/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest",
    ] {
        let refused = create_channel(
            &app,
            &team.company,
            &json!({"name": "x", "kind": "webhook", "url": literal, "events": ["test"]}),
        )
        .await
        .expect_error(422, "invalid_field");
        assert_eq!(refused.body["details"]["field"], "url");
    }
    let channel = create_channel(
        &app,
        &team.company,
        &json!({"name": "x", "kind": "slack", "url": "http://localhost:9/x", "events": ["test"]}),
    )
    .await
    .expect(201)
    .body;
    let channel = str_at(&channel, "/channel/id");
    app.board()
        .send(
            Method::POST,
            &format!("/api/notification-channels/{channel}/test"),
            None,
        )
        .await
        .expect(202);
    app.drain().await;
    let log = deliveries(&app, &channel).await;
    assert_eq!(
        (&log[0]["status"], &log[0]["attempts"], &log[0]["lastError"]),
        (&json!("failed"), &json!(1), &json!("forbidden_address"))
    );
}

#[tokio::test]
async fn a_change_that_rolls_back_tells_nobody() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let channel = create_channel(
        &app,
        &team.company,
        &json!({"name": "Hook", "kind": "slack", "url": "https://hooks.example.com/x", "events": ["run.failed"]}),
    )
    .await
    .expect(201)
    .body;
    let channel = str_at(&channel, "/channel/id");
    let routine = app
        .seed_routine(&team, &json!({"concurrencyPolicy": "always_enqueue"}))
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
    // The last write of the change — its audit entry, after the run failed and the outbox was
    // written — fails: the whole transaction rolls back.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_status_entries() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.action = 'issue.status_changed' THEN RAISE EXCEPTION 'injected failure'; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_status_entries BEFORE INSERT ON activity_log
           FOR EACH ROW EXECUTE FUNCTION refuse_status_entries();",
    )
    .execute(&app.db.pool)
    .await
    .expect("inject");
    let cancelled = app
        .store
        .set_issue_status(
            issue.parse().expect("id"),
            nexus_shared::model::IssueStatus::Cancelled,
            nexus_shared::model::Actor::System,
        )
        .await;
    assert!(cancelled.is_err(), "the injected failure rolls it back");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM notifications WHERE channel_id = $1::uuid",
            &channel
        )
        .await,
        0
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM jobs WHERE kind IN ('fan_out_notices', 'deliver_notification')
             AND $1 <> ''",
            "any"
        )
        .await,
        0
    );
    let shown = app.board().get_routine(&routine).await.expect(200).body;
    assert_eq!(shown["consecutiveFailures"], 0);
    assert_eq!(shown["lastRun"]["status"], "issue_created");
    // Without the fault, the same change is told once.
    sqlx::raw_sql("DROP TRIGGER refuse_status_entries ON activity_log")
        .execute(&app.db.pool)
        .await
        .expect("heal");
    app.board()
        .update_issue(&issue, &json!({"status": "cancelled"}))
        .await
        .expect(200);
    app.drain().await;
    let log = deliveries(&app, &channel).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["event"], "run.failed");
}
