//! Authentication: bearer and signed calls, every failure in the contract's order, an independent
//! signer, rotation, and nothing secret in the logs.

use super::*;

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
    // Too long, or in the form of a sender's delivery id (a bearer call cannot claim one).
    let reserved = [
        "webhook-id:msg_1",
        "github:d-1:push",
        "stripe:evt_1",
        "slack:Ev1",
    ];
    for key in std::iter::once("k".repeat(256)).chain(reserved.map(str::to_owned)) {
        let refused = send(
            &bearer_url,
            &[auth.clone(), ("idempotency-key", key.clone())],
            Vec::new(),
        )
        .await;
        assert_eq!(
            (refused.status, refused.body["details"]["field"].as_str()),
            (422, Some("Idempotency-Key")),
            "{key}"
        );
    }

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
async fn rotation_with_a_grace_period_accepts_both_secrets_until_it_ends_on_every_replica() {
    nexus_tests::needs_servers!();
    let clock = nexus_shared::ManualClock::new(
        chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .expect("time")
            .to_utc(),
    );
    let app = TestApp::spawn_with(Options {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    // The embedded backend is one process; on Postgres a second replica answers too.
    let mut bases = vec![app.base.clone()];
    if nexus_tests::backend_is_postgres() {
        bases.push(app.spawn_replica().await);
    }
    let team = app.seed_team().await;
    for mode in ["bearer", "hmac_sha256"] {
        let hook = hook(&app, &team, mode).await;
        let path = on(&app, &hook.url).replacen(&app.base, "", 1);
        let status = |secret: String| {
            let (bases, path, clock) = (bases.clone(), path.clone(), clock.clone());
            async move {
                let mut statuses = Vec::new();
                for base in &bases {
                    // A body of its own for every call, so no signature is a replay.
                    let body = json!({ "call": uuid::Uuid::now_v7() })
                        .to_string()
                        .into_bytes();
                    let credentials = if mode == "bearer" {
                        vec![("authorization", format!("Bearer {secret}"))]
                    } else {
                        signed(
                            &secret,
                            nexus_shared::Clock::now(&*clock).timestamp(),
                            &body,
                        )
                    };
                    statuses.push(
                        send(&format!("{base}{path}"), &credentials, body)
                            .await
                            .status,
                    );
                }
                statuses
            }
        };
        let every = |code: u16| vec![code; bases.len()];
        let rotate = |body: Value| {
            let (app, trigger) = (&app, hook.trigger.clone());
            async move {
                app.board()
                    .rotate_trigger_secret_with(&trigger, &body)
                    .await
            }
        };
        // An hour of grace: both secrets work everywhere, and the trigger says until when.
        let rotated = rotate(json!({ "previousSecretValidSec": 3600 }))
            .await
            .expect(200)
            .body;
        let until = nexus_shared::Clock::now(&*clock) + chrono::TimeDelta::hours(1);
        assert_eq!(
            rotated["trigger"]["previousSecretExpiresAt"],
            until.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        );
        let second = str_at(&rotated, "/secretMaterial/webhookSecret");
        assert_eq!(
            status(hook.secret.clone()).await,
            every(202),
            "{mode}: old in its grace"
        );
        assert_eq!(status(second.clone()).await, every(202), "{mode}: new");
        // Rotating again during the grace is refused; nothing changes.
        rotate(json!({ "previousSecretValidSec": 60 }))
            .await
            .expect_error(409, "rotation_in_progress");
        assert_eq!(
            status(hook.secret.clone()).await,
            every(202),
            "{mode}: still in its grace"
        );
        // At the end of the grace only the new secret works.
        clock.advance(chrono::TimeDelta::seconds(3600));
        assert_eq!(
            status(hook.secret.clone()).await,
            every(401),
            "{mode}: old after its grace"
        );
        assert_eq!(
            status(second.clone()).await,
            every(202),
            "{mode}: new after the grace"
        );
        let shown = app
            .board()
            .get_routine(&hook.routine)
            .await
            .expect(200)
            .body;
        assert_eq!(shown["triggers"][0]["previousSecretExpiresAt"], Value::Null);
        // A new rotation with grace, then a forced one without: the secret the first replaced
        // stops at once, on every replica.
        let third = str_at(
            &rotate(json!({ "previousSecretValidSec": 600 }))
                .await
                .expect(200)
                .body,
            "/secretMaterial/webhookSecret",
        );
        assert_eq!(
            status(second.clone()).await,
            every(202),
            "{mode}: second in its grace"
        );
        let fourth = str_at(
            &rotate(json!({ "force": true })).await.expect(200).body,
            "/secretMaterial/webhookSecret",
        );
        assert_eq!(status(second).await, every(401), "{mode}: forced out");
        assert_eq!(
            status(third).await,
            every(401),
            "{mode}: replaced without grace"
        );
        assert_eq!(status(fourth).await, every(202), "{mode}: the newest");
        rotate(json!({ "previousSecretValidSec": 604_801 }))
            .await
            .expect_error(422, "invalid_field");
    }
}
