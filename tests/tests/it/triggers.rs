//! Triggers of the three kinds: creation, validation, updates, deletion, secret rotation.

use nexus_tests::{Options, TestApp, str_at};
use serde_json::json;

#[tokio::test]
async fn triggers_of_each_kind_are_created_with_their_fields() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn_with(Options {
        env: vec![("NEXUS_PUBLIC_URL", "https://hooks.example.com/".to_owned())],
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;

    let schedule = app
        .seed_trigger(&routine, &json!({ "kind": "schedule", "cronExpression": "0 9 * * MON-FRI", "timezone": "Europe/Amsterdam", "label": "weekdays" }))
        .await;
    let trigger = &schedule["trigger"];
    assert_eq!(trigger["kind"], "schedule");
    assert_eq!(trigger["cronExpression"], "0 9 * * MON-FRI");
    assert_eq!(trigger["timezone"], "Europe/Amsterdam");
    assert_eq!(trigger["label"], "weekdays");
    assert_eq!(trigger["enabled"], true);
    assert!(trigger["nextRunAt"].is_string());
    assert!(trigger["lastFiredAt"].is_null() && trigger["lastResult"].is_null());
    assert!(schedule["secretMaterial"].is_null());
    let utc = app
        .seed_trigger(
            &routine,
            &json!({ "kind": "schedule", "cronExpression": "@daily" }),
        )
        .await;
    assert_eq!(utc["trigger"]["timezone"], "UTC");

    let webhook = app
        .seed_trigger(&routine, &json!({ "kind": "webhook" }))
        .await;
    let trigger = &webhook["trigger"];
    assert_eq!(trigger["signingMode"], "bearer");
    assert_eq!(trigger["replayWindowSec"], 300);
    let public_id = str_at(trigger, "/publicId");
    assert!(
        public_id.len() >= 16
            && public_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let url = format!("https://hooks.example.com/api/routine-triggers/public/{public_id}/fire");
    assert_eq!(trigger["webhookUrl"], url.as_str());
    assert_eq!(webhook["secretMaterial"]["webhookUrl"], url.as_str());
    assert!(str_at(&webhook, "/secretMaterial/webhookSecret").len() >= 32);
    assert!(trigger.get("cronExpression").is_none() && trigger.get("nextRunAt").is_none());
    let hmac = app
        .seed_trigger(
            &routine,
            &json!({ "kind": "webhook", "signingMode": "hmac_sha256", "replayWindowSec": 30 }),
        )
        .await;
    assert_eq!(hmac["trigger"]["signingMode"], "hmac_sha256");
    assert_ne!(hmac["trigger"]["publicId"], webhook["trigger"]["publicId"]);

    let api = app
        .seed_trigger(&routine, &json!({ "kind": "api", "enabled": false }))
        .await;
    assert_eq!(api["trigger"]["kind"], "api");
    assert_eq!(api["trigger"]["enabled"], false);
    assert!(api["secretMaterial"].is_null());

    let routine_body = app.board().get_routine(&routine).await.expect(200).body;
    assert_eq!(routine_body["triggers"].as_array().map(Vec::len), Some(5));
}

#[tokio::test]
async fn bad_triggers_are_refused_with_the_reason() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let board = app.board();
    let unprocessable = [
        (
            json!({ "kind": "schedule", "cronExpression": "0 0 * * * *" }),
            "cronExpression",
            "5 fields",
        ),
        (
            json!({ "kind": "schedule", "cronExpression": "61 * * * *" }),
            "cronExpression",
            "out of range 0–59",
        ),
        (
            json!({ "kind": "schedule", "cronExpression": "0 9 * * *", "timezone": "Mars/Base" }),
            "timezone",
            "IANA",
        ),
        (
            json!({ "kind": "webhook", "replayWindowSec": 10 }),
            "replayWindowSec",
            "30 to 86400",
        ),
        (
            json!({ "kind": "webhook", "replayWindowSec": 86_401 }),
            "replayWindowSec",
            "30 to 86400",
        ),
        (
            json!({ "kind": "api", "label": "l".repeat(121) }),
            "label",
            "at most 120",
        ),
    ];
    for (body, field, message) in unprocessable {
        let resp = board
            .create_trigger(&routine, &body)
            .await
            .expect_error(422, "invalid_field");
        assert_eq!(resp.body["details"]["field"], field, "{}", resp.text);
        assert!(
            resp.body["error"]
                .as_str()
                .is_some_and(|e| e.contains(message)),
            "{}",
            resp.text
        );
    }
    let malformed = [
        json!({ "kind": "schedule" }),
        json!({ "kind": "schedule", "cronExpression": "* * * * *", "signingMode": "bearer" }),
        json!({ "kind": "webhook", "cronExpression": "* * * * *" }),
        json!({ "kind": "api", "timezone": "UTC" }),
        json!({ "kind": "email" }),
        json!({ "cronExpression": "* * * * *" }),
        json!({ "kind": "webhook", "signingMode": "md5" }),
    ];
    for body in malformed {
        board
            .create_trigger(&routine, &body)
            .await
            .expect_error(400, "invalid_body");
    }
    let routine_body = board.get_routine(&routine).await.expect(200).body;
    assert_eq!(routine_body["triggers"], json!([]));
}

#[tokio::test]
async fn triggers_update_within_their_kind() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let schedule = str_at(
        &app.seed_trigger(
            &routine,
            &json!({ "kind": "schedule", "cronExpression": "0 9 * * *" }),
        )
        .await,
        "/trigger/id",
    );
    let webhook = str_at(
        &app.seed_trigger(&routine, &json!({ "kind": "webhook" }))
            .await,
        "/trigger/id",
    );
    let board = app.board();

    let updated = board
        .update_trigger(&schedule, &json!({ "cronExpression": "30 6 * * *", "timezone": "America/New_York", "label": "morning" }))
        .await
        .expect(200)
        .body;
    assert_eq!(updated["cronExpression"], "30 6 * * *");
    assert_eq!(updated["timezone"], "America/New_York");
    assert_eq!(updated["label"], "morning");
    assert!(str_at(&updated, "/nextRunAt").ends_with(":30:00Z"));
    let updated = board
        .update_trigger(
            &webhook,
            &json!({ "signingMode": "hmac_sha256", "replayWindowSec": 600, "kind": "webhook" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (
            updated["signingMode"].clone(),
            updated["replayWindowSec"].clone()
        ),
        (json!("hmac_sha256"), json!(600))
    );

    let foreign = [
        (&schedule, json!({ "signingMode": "bearer" }), "signingMode"),
        (
            &schedule,
            json!({ "replayWindowSec": 60 }),
            "replayWindowSec",
        ),
        (
            &webhook,
            json!({ "cronExpression": "* * * * *" }),
            "cronExpression",
        ),
        (&webhook, json!({ "timezone": "UTC" }), "timezone"),
        (&schedule, json!({ "kind": "webhook" }), "kind"),
        (
            &schedule,
            json!({ "cronExpression": "every day" }),
            "cronExpression",
        ),
    ];
    for (trigger, body, field) in foreign {
        let resp = board
            .update_trigger(trigger, &body)
            .await
            .expect_error(422, "invalid_field");
        assert_eq!(resp.body["details"]["field"], field, "{}", resp.text);
    }
    board
        .update_trigger(&schedule, &json!({ "colour": "red" }))
        .await
        .expect_error(400, "invalid_body");
    let unchanged = board.get_routine(&routine).await.expect(200).body;
    assert_eq!(unchanged["triggers"][0]["cronExpression"], "30 6 * * *");

    board.delete_trigger(&schedule).await.expect(204);
    board
        .delete_trigger(&schedule)
        .await
        .expect_error(404, "not_found");
    board
        .update_trigger(&schedule, &json!({ "label": "x" }))
        .await
        .expect_error(404, "not_found");
    let api = str_at(
        &app.seed_trigger(&routine, &json!({ "kind": "api" })).await,
        "/trigger/id",
    );
    board
        .rotate_trigger_secret(&api)
        .await
        .expect_error(422, "not_a_webhook_trigger");
    let actions: Vec<String> = board
        .activity(&team.company, "limit=4")
        .await
        .expect(200)
        .body["activity"]
        .as_array()
        .expect("activity")
        .iter()
        .map(|e| str_at(e, "/action"))
        .collect();
    assert_eq!(
        actions,
        [
            "trigger.created",
            "trigger.deleted",
            "trigger.updated",
            "trigger.updated"
        ]
    );
}

#[tokio::test]
async fn a_webhook_secret_is_shown_only_on_create_and_rotate_and_never_stored_in_plaintext() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let created = app
        .seed_trigger(&routine, &json!({ "kind": "webhook", "label": "ci" }))
        .await;
    let trigger = str_at(&created, "/trigger/id");
    let first = str_at(&created, "/secretMaterial/webhookSecret");

    let rotated = app
        .board()
        .rotate_trigger_secret(&trigger)
        .await
        .expect(200)
        .body;
    let second = str_at(&rotated, "/secretMaterial/webhookSecret");
    assert_ne!(first, second, "rotation changes the secret");
    assert_eq!(
        rotated["secretMaterial"]["webhookUrl"],
        created["secretMaterial"]["webhookUrl"]
    );
    assert_eq!(
        rotated["trigger"]["publicId"],
        created["trigger"]["publicId"]
    );

    // Every other response that shows the trigger.
    let mut texts = vec![
        app.board().get_routine(&routine).await.expect(200).text,
        app.board()
            .list_routines(&team.company, "")
            .await
            .expect(200)
            .text,
        app.board()
            .update_trigger(&trigger, &json!({ "label": "ci2" }))
            .await
            .expect(200)
            .text,
        app.caller(Some(&team.key))
            .get_routine(&routine)
            .await
            .expect(200)
            .text,
        app.board()
            .activity(&team.company, "limit=200")
            .await
            .expect(200)
            .text,
        app.board()
            .update_routine(&routine, &json!({ "priority": "high" }))
            .await
            .expect(200)
            .text,
    ];
    texts.push(app.board().upcoming(&routine, "").await.expect(200).text);
    for text in &texts {
        assert!(
            !text.contains(&first) && !text.contains(&second),
            "a secret leaked: {text}"
        );
    }

    // No column of any table holds either secret in plaintext.
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&app.db.pool)
            .await
            .expect("tables");
    assert!(tables.contains(&"routine_triggers".to_owned()));
    for table in tables {
        let sql = format!("SELECT coalesce(string_agg(to_jsonb(t)::text, ' '), '') FROM {table} t");
        let dump: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&app.db.pool)
            .await
            .expect("dump");
        for secret in [&first, &second] {
            assert!(
                !dump.contains(secret.as_str()),
                "{table} holds a webhook secret in plaintext"
            );
            let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(
                !dump.contains(&hex),
                "{table} holds a webhook secret as bytes"
            );
        }
    }
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT secret_enc FROM routine_triggers WHERE id = $1::uuid")
            .bind(&trigger)
            .fetch_one(&app.db.pool)
            .await
            .expect("sealed secret");
    assert!(
        sealed.len() > second.len(),
        "the stored secret is sealed (nonce + ciphertext + tag)"
    );
}

#[tokio::test]
async fn a_deleted_triggers_runs_stay_and_lose_only_that_trigger() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let board = app.board();
    let routine = app.seed_routine(&team, &json!({})).await;
    let other_routine = app.seed_routine(&team, &json!({})).await;
    let (deleted, kept, elsewhere) = (
        api_trigger(&app, &routine).await,
        api_trigger(&app, &routine).await,
        api_trigger(&app, &other_routine).await,
    );
    let of_deleted = [
        run_via(&app, &routine, &deleted).await,
        run_via(&app, &routine, &deleted).await,
    ];
    let of_kept = run_via(&app, &routine, &kept).await;
    let of_elsewhere = run_via(&app, &other_routine, &elsewhere).await;

    board.delete_trigger(&deleted).await.expect(204);

    for run in &of_deleted {
        let run = board.get_run(run).await.expect(200).body;
        assert!(
            run["triggerId"].is_null() && run["trigger"].is_null(),
            "{run}"
        );
        assert_eq!(run["source"], "api");
    }
    for (run, trigger) in [(&of_kept, &kept), (&of_elsewhere, &elsewhere)] {
        let run = board.get_run(run).await.expect(200).body;
        assert_eq!(run["triggerId"], trigger.as_str(), "{run}");
        assert_eq!(run["trigger"]["id"], trigger.as_str(), "{run}");
    }
    assert_eq!(
        board.list_runs(&routine, "").await.expect(200).body["runs"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    // A run naming the deleted trigger is refused.
    board
        .run_routine(&routine, &json!({ "source": "api", "triggerId": deleted }))
        .await
        .expect_error(422, "invalid_reference");
}

/// A new api trigger of `routine` (enabled); returns its id.
async fn api_trigger(app: &TestApp, routine: &str) -> String {
    let created = app.seed_trigger(routine, &json!({ "kind": "api" })).await;
    str_at(&created, "/trigger/id")
}

/// An api run of `routine` through `trigger`; returns its id.
async fn run_via(app: &TestApp, routine: &str, trigger: &str) -> String {
    let body = json!({ "source": "api", "triggerId": trigger });
    app.board()
        .run_routine(routine, &body)
        .await
        .expect(202)
        .id()
}

/// Sends `request` while `holder` is open, and commits `holder` once the request waits for a
/// lock; returns the request's answer.
async fn once_it_waits<T>(
    app: &TestApp,
    holder: sqlx::Transaction<'static, sqlx::Postgres>,
    request: impl std::future::Future<Output = T>,
) -> T {
    let (answer, ()) = tokio::join!(request, async {
        app.until_a_session_waits_for_a_lock("the request to wait for a lock")
            .await;
        holder.commit().await.expect("commit the holder");
    });
    answer
}

/// A routine with an api trigger: `(team, routine, trigger)`.
async fn routine_with_api_trigger(app: &TestApp) -> (nexus_tests::Team, String, String) {
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let trigger = api_trigger(app, &routine).await;
    (team, routine, trigger)
}

#[tokio::test]
async fn a_run_committed_while_its_trigger_is_deleted_is_left_without_it() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let (team, routine, trigger) = routine_with_api_trigger(&app).await;
    let ids = |s: &str| uuid::Uuid::parse_str(s).expect("uuid");
    // A writer holding the trigger as the webhook acceptance does, with its run written but
    // not yet committed.
    let run = uuid::Uuid::now_v7();
    let mut writer = app.db.pool.begin().await.expect("begin");
    sqlx::query("SELECT FROM routine_triggers WHERE id = $1 FOR SHARE")
        .bind(ids(&trigger))
        .execute(&mut *writer)
        .await
        .expect("hold the trigger");
    sqlx::query(
        "INSERT INTO routine_runs (id, company_id, routine_id, trigger_id, source, status,
                                   triggered_at, updated_at)
         VALUES ($1, $2, $3, $4, 'webhook', 'received', now(), now())",
    )
    .bind(run)
    .bind(ids(&team.company))
    .bind(ids(&routine))
    .bind(ids(&trigger))
    .execute(&mut *writer)
    .await
    .expect("run");

    let board = app.board();
    once_it_waits(&app, writer, board.delete_trigger(&trigger))
        .await
        .expect(204);
    let left: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT trigger_id FROM routine_runs WHERE id = $1")
            .bind(run)
            .fetch_one(&app.db.pool)
            .await
            .expect("the run stays");
    assert_eq!(left, None);
}

#[tokio::test]
async fn a_run_naming_a_trigger_being_deleted_waits_and_is_refused() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let (_, routine, trigger) = routine_with_api_trigger(&app).await;
    // A deletion in flight: the trigger's row deleted, not yet committed.
    let mut deletion = app.db.pool.begin().await.expect("begin");
    sqlx::query("DELETE FROM routine_triggers WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&trigger).expect("uuid"))
        .execute(&mut *deletion)
        .await
        .expect("delete");

    let board = app.board();
    let body = json!({ "source": "api", "triggerId": trigger });
    let refused = once_it_waits(&app, deletion, board.run_routine(&routine, &body))
        .await
        .expect_error(422, "invalid_reference");
    assert_eq!(refused.body["details"]["field"], "triggerId");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM routine_runs WHERE routine_id = $1::uuid",
            &routine
        )
        .await,
        0
    );
}

#[tokio::test]
async fn changes_queued_behind_the_deletion_of_their_trigger_are_404() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let created = app
        .seed_trigger(&routine, &json!({ "kind": "webhook" }))
        .await;
    let trigger = str_at(&created, "/trigger/id");
    // Every change to a trigger takes its routine's lock first: hold it, and queue a deletion,
    // an update, a rotation and a second deletion behind it, in that order.
    let mut holder = app.db.pool.begin().await.expect("begin");
    sqlx::query("SELECT FROM routines WHERE id = $1 FOR UPDATE")
        .bind(uuid::Uuid::parse_str(&routine).expect("uuid"))
        .execute(&mut *holder)
        .await
        .expect("hold the routine");
    let mut queued = Vec::new();
    for (n, step) in ["delete", "update", "rotate", "delete again"]
        .into_iter()
        .enumerate()
    {
        let (app_in_task, trigger) = (app.clone(), trigger.clone());
        queued.push(tokio::spawn(async move {
            let board = app_in_task.board();
            match step {
                "update" => {
                    board
                        .update_trigger(&trigger, &json!({ "replayWindowSec": 30 }))
                        .await
                }
                "rotate" => board.rotate_trigger_secret(&trigger).await,
                _ => board.delete_trigger(&trigger).await,
            }
        }));
        app.until_sessions_wait_for_a_lock(i64::try_from(n + 1).expect("small"), step)
            .await;
    }
    holder.commit().await.expect("release the routine");
    let mut answers = Vec::new();
    for request in queued {
        answers.push(request.await.expect("request task"));
    }
    let mut answers = answers.into_iter();
    answers.next().expect("delete").expect(204);
    for _ in 0..3 {
        answers
            .next()
            .expect("queued change")
            .expect_error(404, "not_found");
    }
}
