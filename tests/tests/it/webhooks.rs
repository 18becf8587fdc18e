//! The public webhook endpoint: every status code path, signatures from an independent
//! implementation, replay protection, shared rate limits, rotation, and a property test of
//! hostile input.

use std::process::Command;

use std::future::Future as _;

use nexus_shared::{model::RunSource, store::NewRun};
use nexus_tests::{Options, Team, TestApp, str_at};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub(crate) struct Hook {
    pub(crate) url: String,
    pub(crate) secret: String,
    pub(crate) trigger: String,
    pub(crate) routine: String,
}

pub(crate) async fn hook(app: &TestApp, team: &Team, mode: &str) -> Hook {
    let routine = app.seed_routine(team, &json!({})).await;
    let created = app
        .seed_trigger(
            &routine,
            &json!({ "kind": "webhook", "signingMode": mode, "replayWindowSec": 60 }),
        )
        .await;
    Hook {
        url: str_at(&created, "/secretMaterial/webhookUrl"),
        secret: str_at(&created, "/secretMaterial/webhookSecret"),
        trigger: str_at(&created, "/trigger/id"),
        routine,
    }
}

/// Rewrites the webhook URL (built from NEXUS_PUBLIC_URL) onto the test server.
pub(crate) fn on(app: &TestApp, url: &str) -> String {
    let path = url.split("/api/").nth(1).expect("api path");
    format!("{}/api/{path}", app.base)
}

fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    nexus_tests::webhook_signature(secret, timestamp, body)
}

pub(crate) struct Sent {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

pub(crate) async fn send(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Sent {
    let mut request = nexus_tests::http_client().post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Sent {
        status,
        headers,
        body,
    }
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn signed(secret: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let ts = timestamp.to_string();
    vec![
        ("x-paperclip-timestamp", ts.clone()),
        ("x-paperclip-signature", sign(secret, &ts, body)),
        ("content-type", "application/json".to_owned()),
    ]
}

async fn run_count(app: &TestApp, routine: &str) -> i64 {
    app.count(
        "SELECT count(*) FROM routine_runs WHERE routine_id = $1::uuid",
        routine,
    )
    .await
}

#[tokio::test]
async fn a_bearer_webhook_creates_a_received_run_with_its_payload() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "bearer").await;
    let url = on(&app, &hook.url);
    let auth = ("authorization", format!("Bearer {}", hook.secret));
    let sent = send(
        &url,
        &[
            auth.clone(),
            ("content-type", "application/json".to_owned()),
        ],
        br#"{"ref":"main"}"#.to_vec(),
    )
    .await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    assert_eq!(sent.body["status"], "received");
    assert_eq!(sent.body["source"], "webhook");
    assert_eq!(sent.body["payload"], json!({ "ref": "main" }));
    assert_eq!(sent.body["trigger"]["kind"], "webhook");
    assert_eq!(sent.body["triggerId"], hook.trigger.as_str());
    // An empty body without a content type is an empty payload.
    let empty = send(&url, &[auth], Vec::new()).await;
    assert_eq!(empty.status, 202);
    assert_eq!(empty.body["payload"], json!({}));
    app.drain().await;
    let run = app
        .board()
        .get_run(&str_at(&sent.body, "/id"))
        .await
        .expect(200)
        .body;
    assert_eq!(run["status"], "issue_created");
    let routine = app
        .board()
        .get_routine(&hook.routine)
        .await
        .expect(200)
        .body;
    assert_eq!(
        routine["triggers"][0]["lastResult"]
            .as_str()
            .map(|s| s == "issue_created" || s == "coalesced"),
        Some(true)
    );
}

#[tokio::test]
async fn every_failure_answers_with_its_status_in_the_contract_order() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let bearer = hook(&app, &team, "bearer").await;
    let hmac = hook(&app, &team, "hmac_sha256").await;
    let (bearer_url, hmac_url) = (on(&app, &bearer.url), on(&app, &hmac.url));
    let auth = ("authorization", format!("Bearer {}", bearer.secret));
    let missing_url = format!(
        "{}/api/routine-triggers/public/nope{}/fire",
        app.base,
        "x".repeat(10)
    );

    // 413 first: even for an unknown trigger and without credentials.
    let huge = vec![b' '; 256 * 1024 + 1];
    assert_eq!(send(&missing_url, &[], huge.clone()).await.status, 413);
    let sent = send(&bearer_url, std::slice::from_ref(&auth), huge).await;
    assert_eq!(
        (sent.status, sent.body["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let mut just_fits = b"{\"k\":\"".to_vec();
    just_fits.extend(vec![b'a'; 256 * 1024 - 8]);
    just_fits.extend(b"\"}");
    assert_eq!(
        send(&bearer_url, std::slice::from_ref(&auth), just_fits)
            .await
            .status,
        202
    );
    // 404 for unknown ids, long ids and non-webhook triggers.
    assert_eq!(send(&missing_url, &[], Vec::new()).await.status, 404);
    let long = format!(
        "{}/api/routine-triggers/public/{}/fire",
        app.base,
        "a".repeat(500)
    );
    assert_eq!(send(&long, &[], Vec::new()).await.status, 404);

    // 401, one body for every cause.
    let ts = now_secs();
    let body = br#"{"a":1}"#.to_vec();
    let mut bodies = Vec::new();
    let bad: Vec<(&str, Vec<(&str, String)>)> = vec![
        (&bearer_url, vec![]),
        (
            &bearer_url,
            vec![("authorization", "Bearer nxw_wrong".to_owned())],
        ),
        (
            &bearer_url,
            vec![(
                "authorization",
                format!("bearer {}", bearer.secret).replace("bearer ", "Basic "),
            )],
        ),
        (
            &bearer_url,
            vec![("authorization", format!("Bearer {}x", bearer.secret))],
        ),
        (&hmac_url, vec![]),
        (
            &hmac_url,
            vec![("authorization", format!("Bearer {}", hmac.secret))],
        ),
        (&hmac_url, vec![("x-paperclip-timestamp", ts.to_string())]),
        (
            &hmac_url,
            vec![
                ("x-paperclip-timestamp", ts.to_string()),
                ("x-paperclip-signature", "00".repeat(32)),
            ],
        ),
        (&hmac_url, signed(&hmac.secret, ts - 120, &body)),
        (&hmac_url, signed(&hmac.secret, ts + 120, &body)),
        (&hmac_url, signed(&bearer.secret, ts, &body)),
        (
            &hmac_url,
            vec![
                ("x-paperclip-timestamp", format!("{ts}.0")),
                (
                    "x-paperclip-signature",
                    sign(&hmac.secret, &format!("{ts}.0"), &body),
                ),
            ],
        ),
        (
            &hmac_url,
            vec![
                ("x-paperclip-timestamp", "-5".to_owned()),
                ("x-paperclip-signature", sign(&hmac.secret, "-5", &body)),
            ],
        ),
    ];
    for (url, headers) in bad {
        let sent = send(url, &headers, body.clone()).await;
        assert_eq!(sent.status, 401, "{headers:?}: {}", sent.body);
        bodies.push(sent.body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "401 bodies differ: {bodies:?}"
    );
    assert_eq!(bodies[0]["code"], "unauthorized");

    // 415 and 400 after authentication.
    let text = send(
        &bearer_url,
        &[auth.clone(), ("content-type", "text/plain".to_owned())],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        (text.status, text.body["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let form = send(
        &bearer_url,
        &[
            auth.clone(),
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
        ],
        b"a=1".to_vec(),
    )
    .await;
    assert_eq!(form.status, 415);
    for raw in [
        &b"[1,2]"[..],
        b"\"text\"",
        b"42",
        b"null",
        b"{\"a\":",
        b"\xff\xfe",
    ] {
        let sent = send(
            &bearer_url,
            &[
                auth.clone(),
                ("content-type", "application/json; charset=utf-8".to_owned()),
            ],
            raw.to_vec(),
        )
        .await;
        assert_eq!(sent.status, 400, "{raw:?}");
    }
    let long_key = send(
        &bearer_url,
        &[auth.clone(), ("idempotency-key", "k".repeat(256))],
        Vec::new(),
    )
    .await;
    assert_eq!(
        (long_key.status, long_key.body["details"]["field"].as_str()),
        (422, Some("Idempotency-Key"))
    );

    // 409 not_active: a disabled trigger, a paused routine, an archived routine.
    app.board()
        .update_trigger(&bearer.trigger, &json!({ "enabled": false }))
        .await
        .expect(200);
    let sent = send(&bearer_url, std::slice::from_ref(&auth), Vec::new()).await;
    assert_eq!(
        (sent.status, sent.body["code"].as_str()),
        (409, Some("not_active"))
    );
    app.board()
        .update_trigger(&bearer.trigger, &json!({ "enabled": true }))
        .await
        .expect(200);
    app.board()
        .update_routine(&bearer.routine, &json!({ "status": "paused" }))
        .await
        .expect(200);
    assert_eq!(
        send(&bearer_url, std::slice::from_ref(&auth), Vec::new())
            .await
            .status,
        409
    );
    app.board()
        .update_routine(&bearer.routine, &json!({ "status": "archived" }))
        .await
        .expect(200);
    assert_eq!(
        send(&bearer_url, std::slice::from_ref(&auth), Vec::new())
            .await
            .status,
        409
    );
    // Exactly the two accepted calls above made runs.
    assert_eq!(run_count(&app, &bearer.routine).await, 1);
    assert_eq!(run_count(&app, &hmac.routine).await, 0);
    let metrics = app.caller(None).metrics().await.text;
    for status in ["202", "401", "404", "409", "413", "415"] {
        assert!(
            metrics.contains(&format!(
                "nexus_webhook_responses_total{{status=\"{status}\"}}"
            )),
            "{status}"
        );
    }
}

#[tokio::test]
async fn signed_webhooks_accept_seconds_milliseconds_and_the_prefix_and_refuse_replays() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "hmac_sha256").await;
    let url = on(&app, &hook.url);
    let body = br#"{"deploy":"v1"}"#.to_vec();
    let first = send(&url, &signed(&hook.secret, now_secs(), &body), body.clone()).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let millis = chrono::Utc::now().timestamp_millis();
    assert_eq!(
        send(&url, &signed(&hook.secret, millis, &body), body.clone())
            .await
            .status,
        202
    );
    let ts = (now_secs() - 30).to_string();
    let prefixed = vec![
        ("x-paperclip-timestamp", ts.clone()),
        (
            "x-paperclip-signature",
            format!("sha256={}", sign(&hook.secret, &ts, &body)),
        ),
    ];
    assert_eq!(send(&url, &prefixed, body.clone()).await.status, 202);
    // The byte-identical re-delivery is a replay.
    let replay = send(&url, &prefixed, body.clone()).await;
    assert_eq!(
        (replay.status, replay.body["code"].as_str()),
        (409, Some("replayed"))
    );
    assert_eq!(run_count(&app, &hook.routine).await, 3);

    // A sender's retry with a fresh timestamp and the same Idempotency-Key gets the original run.
    let mut keyed = signed(&hook.secret, now_secs() - 5, &body);
    keyed.push(("idempotency-key", "delivery-7".to_owned()));
    let original = send(&url, &keyed, body.clone()).await;
    assert_eq!(original.status, 202);
    let mut retry = signed(&hook.secret, now_secs() - 3, &body);
    retry.push(("idempotency-key", "delivery-7".to_owned()));
    let again = send(&url, &retry, body.clone()).await;
    assert_eq!(again.status, 202);
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(again.body["id"], original.body["id"]);
    let other_body = br#"{"deploy":"v2"}"#.to_vec();
    let mut reused = signed(&hook.secret, now_secs() + 1, &other_body);
    reused.push(("idempotency-key", "delivery-7".to_owned()));
    let conflict = send(&url, &reused, other_body).await;
    assert_eq!(
        (conflict.status, conflict.body["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    assert_eq!(run_count(&app, &hook.routine).await, 4);
}

#[tokio::test]
async fn signatures_from_an_independent_implementation_are_accepted() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "hmac_sha256").await;
    let url = on(&app, &hook.url);
    let body = r#"{"source":"python","n":[1,2,3]}"#;
    let ts = now_secs().to_string();
    let script = "import hmac, hashlib, sys\n\
                  key, ts, body = sys.argv[1], sys.argv[2], sys.argv[3]\n\
                  print(hmac.new(key.encode(), (ts + '.' + body).encode(), hashlib.sha256).hexdigest())";
    let output = Command::new("python3")
        .args(["-c", script, &hook.secret, &ts, body])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let signature = String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let headers = vec![
        ("x-paperclip-timestamp", ts),
        ("x-paperclip-signature", signature),
        ("content-type", "application/json".to_owned()),
    ];
    let sent = send(&url, &headers, body.as_bytes().to_vec()).await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    assert_eq!(sent.body["payload"]["source"], "python");
}

#[tokio::test]
async fn rotation_refuses_the_old_secret_at_once() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    for mode in ["bearer", "hmac_sha256"] {
        let hook = hook(&app, &team, mode).await;
        let url = on(&app, &hook.url);
        let credentials = |secret: &str| -> Vec<(&'static str, String)> {
            if mode == "bearer" {
                vec![("authorization", format!("Bearer {secret}"))]
            } else {
                signed(secret, now_secs(), b"")
            }
        };
        assert_eq!(
            send(&url, &credentials(&hook.secret), Vec::new())
                .await
                .status,
            202
        );
        let rotated = app
            .board()
            .rotate_trigger_secret(&hook.trigger)
            .await
            .expect(200)
            .body;
        let new_secret = str_at(&rotated, "/secretMaterial/webhookSecret");
        assert_eq!(
            send(&url, &credentials(&hook.secret), Vec::new())
                .await
                .status,
            401,
            "{mode}: old secret"
        );
        assert_eq!(
            send(&url, &credentials(&new_secret), Vec::new())
                .await
                .status,
            202,
            "{mode}: new secret"
        );
    }
}

#[tokio::test]
async fn secrets_and_signatures_never_reach_the_logs() {
    nexus_tests::needs_servers!();
    crate::logs::captured();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let bearer = hook(&app, &team, "bearer").await;
    let hmac = hook(&app, &team, "hmac_sha256").await;
    let auth = ("authorization", format!("Bearer {}", bearer.secret));
    assert_eq!(
        send(&on(&app, &bearer.url), &[auth], Vec::new())
            .await
            .status,
        202
    );
    let headers = signed(&hmac.secret, now_secs(), b"{}");
    let signature = headers[1].1.clone();
    assert_eq!(
        send(&on(&app, &hmac.url), &headers, b"{}".to_vec())
            .await
            .status,
        202
    );
    assert_eq!(
        send(&on(&app, &hmac.url), &headers, b"{}".to_vec())
            .await
            .status,
        409
    );
    let wrong = vec![("authorization", format!("Bearer {}", hmac.secret))];
    assert_eq!(
        send(&on(&app, &hmac.url), &wrong, Vec::new()).await.status,
        401
    );
    let log = crate::logs::captured();
    assert!(
        log.contains("/api/routine-triggers/public/{publicId}/fire"),
        "requests were logged"
    );
    for secret in [&bearer.secret, &hmac.secret, &signature] {
        assert!(
            !log.contains(secret.as_str()),
            "a secret or signature was logged"
        );
    }
}

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

/// Random hostile requests, to the trigger's public id or to a mangled one: never a 5xx, and a
/// run only for a validly authenticated request to the real id.
#[test]
fn hostile_input_never_breaks_the_endpoint_or_creates_an_unsigned_run() {
    nexus_tests::needs_postgres_rows!();
    use proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if !runtime.block_on(nexus_tests::servers_available()) {
        nexus_tests::backends::skipped(nexus_tests::backends::SERVERS_MISSING);
        return;
    }
    let (app, hook) = runtime.block_on(async {
        let app = TestApp::spawn_with(Options {
            env: vec![
                ("NEXUS_WEBHOOK_RATE_PER_SEC", "1000000".to_owned()),
                ("NEXUS_WEBHOOK_BURST", "1000000".to_owned()),
            ],
            ..Default::default()
        })
        .await;
        let team = app.seed_team().await;
        let hook = hook(&app, &team, "hmac_sha256").await;
        (app, hook)
    });
    let url = on(&app, &hook.url);
    let accepted = std::sync::atomic::AtomicI64::new(0);
    let header_value = prop_oneof![
        Just(String::new()),
        "[ -~]{0,80}",
        (0i64..3_000_000_000_000).prop_map(|n| n.to_string()),
        "[0-9a-f]{64}",
        "sha256=[0-9a-fA-F]{0,70}",
    ];
    let body = prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..300),
        "\\{\"[a-z]{1,5}\":[0-9]{1,4}\\}".prop_map(String::into_bytes),
        Just(b"[1]".to_vec()),
    ];
    let content_type = prop_oneof![
        Just(None),
        Just(Some("application/json")),
        Just(Some("text/plain")),
        Just(Some("application/json; charset=utf-8"))
    ];
    // How the request is signed: 0 not at all, 1 random headers, 2 valid, 3 valid but skewed too far, 4 valid for another body.
    // Where it goes: the real public id (most often), or a printable string, a hostile
    // percent-encoded byte sequence, the real id altered by one character, or a very long id.
    let public_id = url
        .split("/public/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("a public id")
        .to_owned();
    let path = prop_oneof![
        4 => Just(None),
        1 => "[ -~]{0,100}".prop_map(Some),
        1 => prop_oneof![Just("%00"), Just("%ff%fe"), Just("%ED%A0%80"), Just("a%2Fb"), Just("..")]
            .prop_map(|s| Some(s.to_owned())),
        1 => (0usize..22, "[A-Za-z0-9_-]").prop_map({
            let public_id = public_id.clone();
            move |(at, c)| {
                let mut altered: Vec<char> = public_id.chars().collect();
                let at = at.min(altered.len().saturating_sub(1));
                altered[at] = c.chars().next().unwrap_or('x');
                Some(altered.into_iter().collect::<String>())
            }
        }),
        1 => (1usize..6000).prop_map(|n| Some("A".repeat(n))),
    ];
    let strategy = (
        (0u8..5, path),
        header_value.clone(),
        header_value,
        body,
        content_type,
        -200i64..200,
    );
    let config = ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(((how, path), ts_header, sig_header, body, content_type, skew) in strategy)| {
        let now = chrono::Utc::now().timestamp();
        let mut headers: Vec<(&str, String)> = Vec::new();
        let mut valid = false;
        match how {
            1 => {
                headers.push(("x-paperclip-timestamp", ts_header));
                headers.push(("x-paperclip-signature", sig_header));
            }
            2 => {
                headers = signed(&hook.secret, now + skew / 10, &body);
                headers.retain(|(name, _)| *name != "content-type");
                valid = true;
            }
            3 => {
                let far = now + if skew >= 0 { 65 + skew } else { skew - 65 };
                headers = signed(&hook.secret, far, &body);
                headers.retain(|(name, _)| *name != "content-type");
            }
            4 => {
                headers = signed(&hook.secret, now, b"{\"other\":true}");
                headers.retain(|(name, _)| *name != "content-type");
            }
            _ => {}
        }
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type.to_owned()));
        }
        let (target, real) = match &path {
            None => (url.clone(), true),
            Some(other) => {
                let encoded: String = other
                    .chars()
                    .map(|c| match c {
                        'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' | '%' | '.' => c.to_string(),
                        c => format!("%{:02X}", u32::from(c)),
                    })
                    .collect();
                (url.replacen(&public_id, &encoded, 1), *other == public_id)
            }
        };
        let sent = runtime.block_on(send(&target, &headers, body));
        prop_assert!(sent.status < 500, "5xx: {} {}", sent.status, sent.body);
        prop_assert!(sent.status >= 400 || sent.status == 202, "answered {}", sent.status);
        if sent.status == 202 {
            prop_assert!(valid && real, "a run without a valid signature to the real id");
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if !real {
            prop_assert!(matches!(sent.status, 400 | 404 | 405), "another id answered {}", sent.status);
        } else if !valid {
            prop_assert!(matches!(sent.status, 401), "unsigned request answered {}", sent.status);
        }
    });
    let runs = runtime.block_on(run_count(&app, &hook.routine));
    assert_eq!(runs, accepted.load(std::sync::atomic::Ordering::SeqCst));
    // The inputs are random: about a quarter are valid calls to the real id (49 to 70 seen);
    // the bound only proves that the accepting path was exercised, well below what chance gives.
    assert!(
        runs >= 20,
        "the property test exercised the accepting path ({runs} runs)"
    );
    runtime.block_on(async move { drop(app) });
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
