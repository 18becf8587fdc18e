//! Rate limits shared by every replica, each concurrent call with its own token, and the in-process
//! limits without Redis.

use super::*;

#[tokio::test]
async fn the_rate_limit_is_shared_by_every_replica() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    // Both replicas read the same manual clock: no token comes back until the test says so.
    let clock = nexus_shared::ManualClock::new(chrono::Utc::now());
    let app = TestApp::spawn_with(Options {
        clock: Some(clock.clone()),
        env: vec![
            ("NEXUS_WEBHOOK_RATE_PER_SEC", "1".to_owned()),
            ("NEXUS_WEBHOOK_BURST", "4".to_owned()),
        ],
    })
    .await;
    let replica = app.spawn_replica().await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "bearer").await;
    let auth = ("authorization", format!("Bearer {}", hook.secret));
    let path = hook.url.split("/api/").nth(1).expect("path").to_owned();
    let urls = [
        format!("{}/api/{path}", app.base),
        format!("{replica}/api/{path}"),
    ];
    let mut statuses = Vec::new();
    for n in 0..6 {
        statuses.push(send(&urls[n % 2], std::slice::from_ref(&auth), Vec::new()).await);
    }
    let codes: Vec<u16> = statuses.iter().map(|s| s.status).collect();
    assert_eq!(codes, [202, 202, 202, 202, 429, 429]);
    let limited = &statuses[4];
    assert_eq!(limited.body["code"], "rate_limited");
    assert_eq!(limited.headers["retry-after"], "1");
    // One token a second, on the shared bucket: not a millisecond early, on either replica.
    clock.advance(chrono::TimeDelta::milliseconds(999));
    assert_eq!(
        send(&urls[1], std::slice::from_ref(&auth), Vec::new())
            .await
            .status,
        429
    );
    clock.advance(chrono::TimeDelta::milliseconds(1));
    assert_eq!(
        send(&urls[1], std::slice::from_ref(&auth), Vec::new())
            .await
            .status,
        202
    );
    assert_eq!(
        send(&urls[0], std::slice::from_ref(&auth), Vec::new())
            .await
            .status,
        429
    );
    // Calls without the secret draw on a bucket of their own (shared by the replicas too): the
    // sender's empty bucket does not limit them, and they never use up the sender's tokens.
    for n in 0..4 {
        assert_eq!(send(&urls[n % 2], &[], Vec::new()).await.status, 401);
    }
    assert_eq!(send(&urls[0], &[], Vec::new()).await.status, 429);
    assert_eq!(run_count(&app, &hook.routine).await, 5);
}

/// Concurrent calls reach Redis together (one script call for all the admissions waiting):
/// each still gets its own token and replay check, in order.
#[tokio::test]
async fn concurrent_calls_each_get_their_own_token_and_replay_check() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    // A manual clock: no token comes back while the calls are answered.
    let app = TestApp::spawn_with(Options {
        clock: Some(nexus_shared::ManualClock::new(chrono::Utc::now())),
        env: vec![
            ("NEXUS_WEBHOOK_RATE_PER_SEC", "1".to_owned()),
            ("NEXUS_WEBHOOK_BURST", "10".to_owned()),
        ],
    })
    .await;
    let team = app.seed_team().await;
    let limited = hook(&app, &team, "hmac_sha256").await;
    let url = on(&app, &limited.url);
    let now = now_secs();
    // 30 distinct calls at once on a bucket of 10: ten are accepted, twenty limited.
    let requests: Vec<_> = (0..30)
        .map(|n| {
            let body = format!("{{\"n\":{n}}}").into_bytes();
            (signed(&limited.secret, now, &body), body)
        })
        .collect();
    let calls = requests
        .iter()
        .map(|(headers, body)| send(&url, headers, body.clone()));
    let mut codes: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .iter()
        .map(|sent| sent.status)
        .collect();
    codes.sort_unstable();
    assert_eq!(codes, [[202; 10].as_slice(), &[429; 20]].concat());
    assert_eq!(run_count(&app, &limited.routine).await, 10);

    // The same signed call sent 10 times at once (a replay takes a token too, so all fit a
    // new trigger's bucket): one is accepted, the others are replays — also those that went to
    // Redis in the same script call as the accepted one.
    let replayed = hook(&app, &team, "hmac_sha256").await;
    let url = on(&app, &replayed.url);
    let body = b"{\"same\":true}".to_vec();
    let headers = signed(&replayed.secret, now, &body);
    let calls = (0..10).map(|_| send(&url, &headers, body.clone()));
    let sent = futures_util::future::join_all(calls).await;
    let mut outcomes: Vec<(u16, Option<&str>)> = sent
        .iter()
        .map(|s| (s.status, s.body["code"].as_str()))
        .collect();
    outcomes.sort_unstable();
    let mut expected = vec![(202, None)];
    expected.extend([(409, Some("replayed")); 9]);
    assert_eq!(outcomes, expected);
    assert_eq!(run_count(&app, &replayed.routine).await, 1);
}

/// `nexus serve` without `NEXUS_REDIS_URL`: replays and rate limits are kept in the process.
#[tokio::test]
async fn without_a_redis_url_replays_and_rate_limits_are_kept_in_process() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    // The in-process buckets run on the store's clock: a clock that stands still keeps the
    // bucket from refilling however slow the machine is.
    let clock: nexus_shared::clock::SharedClock =
        nexus_shared::ManualClock::new(chrono::Utc::now());
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("NEXUS_REDIS_URL", String::new()),
            ("NEXUS_WEBHOOK_RATE_PER_SEC", "1".to_owned()),
            ("NEXUS_WEBHOOK_BURST", "3".to_owned()),
        ],
        clock: Some(clock),
    })
    .await;
    assert!(!app.coordination.is_shared());
    let ready = app.caller(None).readyz().await.expect(200).body;
    assert_eq!(ready["status"], "ready");
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "hmac_sha256").await;
    let url = on(&app, &hook.url);
    let body = br#"{"deploy":"v2"}"#.to_vec();
    // Distinct timestamps from one reading: two readings a second apart could sign the same.
    let t0 = now_secs();
    let headers = signed(&hook.secret, t0, &body);
    assert_eq!(send(&url, &headers, body.clone()).await.status, 202);
    let replay = send(&url, &headers, body.clone()).await;
    assert_eq!(
        (replay.status, replay.body["code"].as_str()),
        (409, Some("replayed"))
    );
    let fresh = signed(&hook.secret, t0 - 1, &body);
    assert_eq!(send(&url, &fresh, body.clone()).await.status, 202);
    // Three tokens were taken (the replay's too); the fourth call is limited.
    let limited = send(&url, &signed(&hook.secret, t0 - 2, &body), body).await;
    assert_eq!(
        (limited.status, limited.body["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(run_count(&app, &hook.routine).await, 2);
}
