//! Acceptance under load and change: a trigger changed through another replica, calls committed
//! together, a stalled write.

use super::*;

#[tokio::test]
async fn a_change_made_through_another_replica_applies_at_once_to_a_cached_trigger() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let replica = app.spawn_replica().await;
    let team = app.seed_team().await;
    // Each signed call of the test is distinct (one clock reading, a different offset each).
    let now = now_secs();
    let calls = std::sync::atomic::AtomicI64::new(0);
    let sign_fresh = |secret: &str| {
        signed(
            secret,
            now - calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            b"",
        )
    };
    let credentials_for = |mode: &str, secret: &str| -> Vec<(&'static str, String)> {
        if mode == "bearer" {
            vec![("authorization", format!("Bearer {secret}"))]
        } else {
            sign_fresh(secret)
        }
    };
    for mode in ["bearer", "hmac_sha256"] {
        let hook = hook(&app, &team, mode).await;
        let path = hook.url.split("/api/").nth(1).expect("path").to_owned();
        let cached = format!("{replica}/api/{path}");
        let credentials = |secret: &str| credentials_for(mode, secret);
        // The replica reads the trigger once and keeps it.
        for _ in 0..2 {
            let sent = send(&cached, &credentials(&hook.secret), Vec::new()).await;
            assert_eq!(sent.status, 202, "{mode}: {}", sent.body);
        }
        // Rotated through the other API: the old secret stops working on the replica at once,
        // and the new one works there at once.
        let rotated = app
            .board()
            .rotate_trigger_secret(&hook.trigger)
            .await
            .expect(200)
            .body;
        let new_secret = str_at(&rotated, "/secretMaterial/webhookSecret");
        let sent = send(&cached, &credentials(&hook.secret), Vec::new()).await;
        assert_eq!(
            (sent.status, &sent.body["code"]),
            (401, &json!("unauthorized")),
            "{mode}: old secret"
        );
        let sent = send(&cached, &credentials(&new_secret), Vec::new()).await;
        assert_eq!(sent.status, 202, "{mode}: new secret: {}", sent.body);
        // The signing mode changed through the other API: the replica follows.
        let other = if mode == "bearer" {
            "hmac_sha256"
        } else {
            "bearer"
        };
        app.board()
            .update_trigger(&hook.trigger, &json!({ "signingMode": other }))
            .await
            .expect(200);
        let sent = send(&cached, &credentials(&new_secret), Vec::new()).await;
        assert_eq!(sent.status, 401, "{mode} after the switch to {other}");
        let switched = || credentials_for(other, &new_secret);
        assert_eq!(
            send(&cached, &switched(), Vec::new()).await.status,
            202,
            "{other}"
        );
        // Disabled, then deleted, through the other API.
        app.board()
            .update_trigger(&hook.trigger, &json!({ "enabled": false }))
            .await
            .expect(200);
        let sent = send(&cached, &switched(), Vec::new()).await;
        assert_eq!(
            (sent.status, &sent.body["code"]),
            (409, &json!("not_active")),
            "{other}: disabled"
        );
        app.board().delete_trigger(&hook.trigger).await.expect(204);
        assert_eq!(
            send(&cached, &switched(), Vec::new()).await.status,
            404,
            "{other}: deleted"
        );
        assert_eq!(run_count(&app, &hook.routine).await, 4);
    }
}

#[tokio::test]
async fn concurrent_calls_commit_together_and_a_failing_one_fails_alone() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "bearer").await;
    let public_id = hook.url.rsplit('/').nth(1).expect("public id");
    let trigger = app
        .store
        .webhook_trigger(public_id)
        .await
        .expect("lookup")
        .expect("found");
    let call = |n: usize| NewRun {
        source: RunSource::Webhook,
        trigger_id: Some(trigger.id),
        payload: serde_json::Map::from_iter([("n".to_owned(), json!(n))]),
        idempotency_key: None,
        trace_context: None,
        signature: None,
    };
    // 64 calls while the trigger is held elsewhere: the first writes wait for it and the
    // others queue behind them; once it is released, the queue is written in one statement.
    let accepted = while_held(
        &app,
        trigger.id,
        (0..64).map(|n| app.store.accept_webhook_run(&trigger, call(n))),
    )
    .await;
    assert!(accepted.iter().all(Result::is_ok), "{accepted:?}");
    assert_eq!(run_count(&app, &hook.routine).await, 64);
    let transactions = app
        .count(
            "SELECT count(DISTINCT xmin::text) FROM routine_runs WHERE routine_id = $1::uuid",
            &hook.routine,
        )
        .await;
    assert!(
        transactions <= 5,
        "64 runs in {transactions} transactions: at most the four held writes and the rest"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM jobs WHERE payload->>'runId' IN
               (SELECT id::text FROM routine_runs WHERE routine_id = $1::uuid)",
            &hook.routine
        )
        .await,
        64,
        "a job per run"
    );

    // One call the database refuses (its company does not own the routine) among others: the
    // others are still accepted.
    let other_company = app.seed_company("Other").await;
    let mut wrong = trigger.clone();
    wrong.company_id = other_company.parse().expect("uuid");
    let calls = (0..32).map(|n| {
        let trigger = if n == 20 { &wrong } else { &trigger };
        app.store.accept_webhook_run(trigger, call(n))
    });
    let results = while_held(&app, trigger.id, calls).await;
    for (n, result) in results.iter().enumerate() {
        assert_eq!(result.is_ok(), n != 20, "call {n}: {result:?}");
    }
    assert_eq!(run_count(&app, &hook.routine).await, 64 + 31);
}

/// One write in flight at a time, unless it stalls: a write waiting for a trigger held by
/// another transaction holds up the calls for other triggers only until it has been in
/// flight for the stall time (by the store's clock), then they are written beside it.
#[tokio::test]
async fn a_stalled_write_holds_up_calls_for_other_triggers_only_until_it_counts_as_stalled() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let clock = nexus_shared::ManualClock::new(chrono::Utc::now());
    let app = TestApp::spawn_with(Options {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    let (held, free) = (
        hook(&app, &team, "bearer").await,
        hook(&app, &team, "bearer").await,
    );
    let accept = |hook: &Hook| {
        let (store, public_id) = (
            app.store.clone(),
            hook.url.rsplit('/').nth(1).map(str::to_owned),
        );
        tokio::spawn(async move {
            let public_id = public_id.expect("public id");
            let trigger = store.webhook_trigger(&public_id).await?.expect("found");
            let call = NewRun {
                source: RunSource::Webhook,
                trigger_id: Some(trigger.id),
                payload: serde_json::Map::new(),
                idempotency_key: None,
                signature: None,
                trace_context: None,
            };
            store.accept_webhook_run(&trigger, call).await
        })
    };
    let holder = hold(&app, held.trigger.parse().expect("trigger id")).await;
    let stuck = accept(&held);
    app.until_a_session_waits_for_a_lock("the write to wait for the held trigger")
        .await;

    // The clock stands still: the other call waits for the write in flight, the writing task
    // asleep on the clock until that write counts as stalled.
    let sleepers = clock.sleepers();
    let other = accept(&free);
    nexus_tests::eventually(10, "the writer to wait for the stall time", || async {
        (clock.sleepers() > sleepers).then_some(())
    })
    .await;
    assert!(
        !other.is_finished(),
        "written beside a write that has not stalled yet"
    );

    // Once the write in flight has taken longer than the stall time, the next one starts.
    clock.advance(chrono::TimeDelta::seconds(1));
    let accepted = tokio::time::timeout(std::time::Duration::from_secs(10), other)
        .await
        .expect("the other call is written beside the stalled one")
        .expect("task");
    assert_eq!(
        accepted
            .expect("accepted")
            .run
            .trigger_id
            .map(|id| id.to_string()),
        Some(free.trigger.clone())
    );
    assert!(
        !stuck.is_finished(),
        "the held trigger still holds its call"
    );
    holder.commit().await.expect("release");
    stuck
        .await
        .expect("task")
        .expect("accepted once the trigger is released");
    assert_eq!(run_count(&app, &held.routine).await, 1);
    assert_eq!(run_count(&app, &free.routine).await, 1);
}

/// Awaits `calls` while another transaction holds `trigger` `FOR UPDATE`: each call is polled
/// once first — so each is queued for writing, and the first writes wait for the trigger —
/// then the trigger is released and the calls finish.
async fn while_held<F: std::future::Future>(
    app: &TestApp,
    trigger: uuid::Uuid,
    calls: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let holder = hold(app, trigger).await;
    let mut calls = std::pin::pin!(futures_util::future::join_all(calls));
    std::future::poll_fn(|cx| {
        assert!(calls.as_mut().poll(cx).is_pending(), "the trigger is held");
        std::task::Poll::Ready(())
    })
    .await;
    holder.commit().await.expect("release");
    calls.await
}

/// A transaction holding `trigger` `FOR UPDATE`, as a concurrent change of it would; the
/// trigger is released when it commits (or is dropped).
async fn hold(app: &TestApp, trigger: uuid::Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = app.db.pool.begin().await.expect("begin");
    sqlx::query("SELECT FROM routine_triggers WHERE id = $1 FOR UPDATE")
        .bind(trigger)
        .execute(&mut *holder)
        .await
        .expect("hold the trigger");
    holder
}
