//! Replay protection across replicas and through a Redis outage.

use super::*;

/// An app whose Redis is reached through a proxy the test can cut.
async fn behind_a_redis_proxy() -> (nexus_tests::Proxy, TestApp) {
    let proxy = nexus_tests::Proxy::redis(true).await;
    let app = TestApp::spawn_with(Options {
        env: vec![("NEXUS_REDIS_URL", proxy.url.clone())],
        ..Default::default()
    })
    .await;
    (proxy, app)
}

/// Sends the call until it is answered other than 503 (Redis is back), for up to 20 s.
async fn once_redis_answers(url: &str, headers: &[(&str, String)], body: &[u8]) -> Sent {
    nexus_tests::eventually(20, "Redis back", || async {
        let sent = send(url, headers, body.to_vec()).await;
        (sent.status != 503).then_some(sent)
    })
    .await
}

/// With Redis unreachable the endpoint fails closed — 503 with `Retry-After`, no run — and the
/// sender's retry of the very same signed request is accepted once Redis is back (nothing of the
/// refused call was remembered).
#[tokio::test]
async fn during_a_redis_outage_calls_fail_closed_and_the_retry_is_accepted_after() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (proxy, app) = behind_a_redis_proxy().await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "hmac_sha256").await;
    let url = on(&app, &hook.url);
    let body = br#"{"deploy":"v9"}"#.to_vec();
    let headers = signed(&hook.secret, now_secs(), &body);
    proxy.set_open(false);
    let refused = send(&url, &headers, body.clone()).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["code"], "unavailable");
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(
        run_count(&app, &hook.routine).await,
        0,
        "no run while Redis is away"
    );
    proxy.set_open(true);
    let retried = once_redis_answers(&url, &headers, &body).await;
    assert_eq!(retried.status, 202, "{}", retried.body);
    assert_eq!(run_count(&app, &hook.routine).await, 1);
    let replay = send(&url, &headers, body).await;
    assert_eq!(replay.body["code"], "replayed");
}

/// The replay memory is shared by every replica and does not depend on Redis: the same signed
/// call sent to two replicas at once is accepted once; with Redis cut, nothing is accepted
/// (fail closed) on either; once Redis is back the replay is still refused on the other
/// replica and the call refused during the outage is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_refused_across_replicas_and_across_a_redis_outage() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (proxy, app) = behind_a_redis_proxy().await;
    let replica = app.spawn_replica().await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "hmac_sha256").await;
    let path = hook.url.split("/api/").nth(1).expect("path").to_owned();
    let urls = [
        format!("{}/api/{path}", app.base),
        format!("{replica}/api/{path}"),
    ];
    let body = br#"{"deploy":"v10"}"#.to_vec();
    let headers = signed(&hook.secret, now_secs(), &body);
    let calls = (0..8).map(|n| send(&urls[n % 2], &headers, body.clone()));
    let mut outcomes: Vec<(u16, Option<String>)> = futures_util::future::join_all(calls)
        .await
        .iter()
        .map(|s| (s.status, s.body["code"].as_str().map(str::to_owned)))
        .collect();
    outcomes.sort_unstable();
    let mut expected = vec![(202, None)];
    expected.extend(vec![(409, Some("replayed".to_owned())); 7]);
    assert_eq!(outcomes, expected);

    let later = br#"{"deploy":"v11"}"#.to_vec();
    let later_headers = signed(&hook.secret, now_secs(), &later);
    proxy.set_open(false);
    assert_eq!(send(&urls[1], &headers, body.clone()).await.status, 503);
    assert_eq!(
        send(&urls[0], &later_headers, later.clone()).await.status,
        503
    );
    assert_eq!(run_count(&app, &hook.routine).await, 1);
    proxy.set_open(true);
    let replay = once_redis_answers(&urls[1], &headers, &body).await;
    assert_eq!(replay.status, 409, "{}", replay.body);
    assert_eq!(replay.body["code"], "replayed");
    assert_eq!(send(&urls[1], &later_headers, later).await.status, 202);
    assert_eq!(run_count(&app, &hook.routine).await, 2);
}
