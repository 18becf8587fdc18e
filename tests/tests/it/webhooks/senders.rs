//! The sender-issued signing modes, each request signed by that sender's own library: Stripe
//! through the Python `stripe` package (`WebhookSignature.generate_signature_header`, which
//! Stripe publishes for signing test payloads, checked by its own `verify_header`), Slack
//! through the Python `slack_sdk` package (`SignatureVerifier.generate_signature`, checked
//! against the example Slack publishes). Both are installed by `.ci/run` (see the README).

use super::{formats::python, *};

/// The `Stripe-Signature` header the `stripe` package computes for `body` at `timestamp`,
/// after the package's own verifier accepted it.
fn stripe_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let script = "import sys, time\n\
                  from stripe import WebhookSignature\n\
                  body = sys.stdin.buffer.read().decode()\n\
                  header = WebhookSignature.generate_signature_header(body, sys.argv[1], int(sys.argv[2]))\n\
                  WebhookSignature.verify_header(body, header, sys.argv[1])\n\
                  print(header)";
    python(script, &[secret, &timestamp.to_string()], body)
}

/// Request headers, as sent.
type Headers = Vec<(&'static str, String)>;

fn stripe(signature: String) -> Vec<(&'static str, String)> {
    vec![
        ("stripe-signature", signature),
        ("content-type", "application/json; charset=utf-8".to_owned()),
    ]
}

/// A webhook trigger of `mode` created with the sender's `secret` (or without one).
async fn sender_hook(app: &TestApp, team: &Team, mode: &str, secret: Option<&str>) -> Hook {
    let routine = app.seed_routine(team, &json!({})).await;
    let mut body = json!({ "kind": "webhook", "signingMode": mode, "replayWindowSec": 60 });
    if let Some(secret) = secret {
        body["webhookSecret"] = json!(secret);
    }
    let created = app.seed_trigger(&routine, &body).await;
    Hook {
        url: str_at(&created, "/secretMaterial/webhookUrl"),
        secret: str_at(&created, "/secretMaterial/webhookSecret"),
        trigger: str_at(&created, "/trigger/id"),
        routine,
    }
}

/// Sends `body` signed as Stripe signs it with `secret` at `at`.
async fn stripe_event(url: &str, secret: &str, at: i64, body: &[u8]) -> Sent {
    send(url, &stripe(stripe_header(secret, at, body)), body.to_vec()).await
}

fn event(id: &str) -> Vec<u8> {
    format!(r#"{{"id": "{id}", "object": "event", "type": "invoice.paid", "data": {{"object": {{"id": "in_1"}}}}}}"#)
        .into_bytes()
}

#[tokio::test]
async fn stripe_events_are_verified_as_stripe_signs_them_and_a_retry_returns_the_original_run() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let secret = "whsec_test_0123456789abcdefghijklmnopqrstuv";
    let hook = sender_hook(&app, &team, "stripe", Some(secret)).await;
    assert_eq!(hook.secret, secret, "the sender's secret is the trigger's");
    let url = on(&app, &hook.url);
    let now = now_secs();
    let body = event("evt_1");
    let first = send(
        &url,
        &stripe(stripe_header(secret, now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_eq!(
        first.body["delivery"],
        json!({ "format": "stripe", "id": "evt_1", "event": "invoice.paid" })
    );
    assert_eq!(first.body["payload"]["data"]["object"]["id"], "in_1");
    let run = str_at(&first.body, "/id");
    // Stripe retries an event with a new timestamp and signature; the event id returns the
    // original run, as does a byte-identical repeat.
    for at in [now, now + 9] {
        let again = send(
            &url,
            &stripe(stripe_header(secret, at, &body)),
            body.clone(),
        )
        .await;
        assert_eq!(
            (again.status, str_at(&again.body, "/id")),
            (202, run.clone())
        );
        assert_eq!(
            again
                .headers
                .get("idempotent-replayed")
                .map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
    }
    // While Stripe rolls an endpoint's secret it signs with both: any `v1` matching does.
    let second = event("evt_2");
    let other = stripe_header("whsec_another_secret_0123456789", now, &second);
    let right = stripe_header(secret, now, &second);
    let v1 = |header: &str| header.split_once(",v1=").map(|(_, mac)| mac.to_owned());
    let both = format!(
        "t={now},v1={},v0=ignored,v1={}",
        v1(&other).expect("v1"),
        v1(&right).expect("v1")
    );
    let rolled = send(&url, &stripe(both), second.clone()).await;
    assert_eq!(rolled.status, 202, "{:?}", rolled.body);
    assert_ne!(str_at(&rolled.body, "/id"), run);
    // Refused with 401: a tampered body, another secret, stale and future timestamps, a
    // header without its timestamp, without a `v1`, or with two timestamps, and no header.
    let window = 60;
    let third = event("evt_3");
    let signed_now = stripe_header(secret, now, &third);
    // Stale and future are timed from when they are signed, well outside the window: the
    // signing (a Python process each) and the sends before them take seconds on a busy machine.
    let outside = window + 30;
    let cases: Vec<(&str, Headers, Vec<u8>)> = vec![
        ("tampered", stripe(signed_now.clone()), event("evt_4")),
        ("another secret", stripe(other.clone()), second.clone()),
        (
            "stale",
            stripe(stripe_header(secret, now_secs() - outside, &third)),
            third.clone(),
        ),
        (
            "future",
            stripe(stripe_header(secret, now_secs() + outside, &third)),
            third.clone(),
        ),
        (
            "no timestamp",
            stripe(format!("v1={}", v1(&signed_now).expect("v1"))),
            third.clone(),
        ),
        ("no v1", stripe(format!("t={now}")), third.clone()),
        (
            "two timestamps",
            stripe(format!("t={now},{signed_now}")),
            third.clone(),
        ),
        (
            "no header",
            vec![("content-type", "application/json".to_owned())],
            third.clone(),
        ),
    ];
    for (case, headers, sent) in cases {
        assert_eq!(send(&url, &headers, sent).await.status, 401, "{case}");
    }
    // Signed, but no event id to recognise a retry by: 400.
    let anonymous = br#"{"type": "invoice.paid"}"#.to_vec();
    let sent = send(
        &url,
        &stripe(stripe_header(secret, now, &anonymous)),
        anonymous,
    )
    .await;
    assert_eq!(
        (sent.status, sent.body["code"].clone()),
        (400, json!("missing_delivery_id"))
    );
    let runs = listed_runs(&app, &hook.routine).await;
    assert_eq!(runs.len(), 2);
}

#[tokio::test]
async fn a_sender_issued_secret_is_set_on_rotation_and_refused_for_generated_modes() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    // Created before the sender has a secret (a Stripe endpoint needs the URL first): a
    // generated one, which the sender's requests do not match.
    let stripe_hook = sender_hook(&app, &team, "stripe", None).await;
    assert!(
        stripe_hook.secret.starts_with("nxw_"),
        "{}",
        stripe_hook.secret
    );
    let url = on(&app, &stripe_hook.url);
    let issued = "whsec_issued_by_stripe_0123456789abcdef";
    let now = now_secs();
    let body = event("evt_10");
    let sent = send(
        &url,
        &stripe(stripe_header(issued, now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(sent.status, 401);
    let rotated = app
        .board()
        .rotate_trigger_secret_with(&stripe_hook.trigger, &json!({ "webhookSecret": issued }))
        .await
        .expect(200)
        .body;
    assert_eq!(str_at(&rotated, "/secretMaterial/webhookSecret"), issued);
    let sent = send(
        &url,
        &stripe(stripe_header(issued, now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(sent.status, 202, "{:?}", sent.body);
    // Stripe's "roll secret" with an expiry: the rolled one keeps working for the grace.
    let rolled = "whsec_rolled_by_stripe_0123456789abcdef";
    app.board()
        .rotate_trigger_secret_with(
            &stripe_hook.trigger,
            &json!({ "webhookSecret": rolled, "previousSecretValidSec": 3600 }),
        )
        .await
        .expect(200);
    for (secret, id) in [(issued, "evt_11"), (rolled, "evt_12")] {
        let body = event(id);
        let sent = send(&url, &stripe(stripe_header(secret, now, &body)), body).await;
        assert_eq!(sent.status, 202, "{id}: {:?}", sent.body);
    }
    // A secret that is not one: 422 naming the field, and nothing changed.
    for bad in [
        json!("short"),
        json!("has spaces in it, not a secret"),
        json!("x".repeat(257)),
    ] {
        app.board()
            .rotate_trigger_secret_with(
                &stripe_hook.trigger,
                &json!({ "webhookSecret": bad, "force": true }),
            )
            .await
            .expect_error(422, "invalid_field");
    }
    // An explicit null is not a secret (the contract's rule for fields that are not nullable).
    app.board()
        .rotate_trigger_secret_with(&stripe_hook.trigger, &json!({ "webhookSecret": null }))
        .await
        .expect(400);
    let body = event("evt_13");
    assert_eq!(
        send(&url, &stripe(stripe_header(rolled, now, &body)), body)
            .await
            .status,
        202
    );
    // Modes whose secret is generated here take none, on creation or rotation.
    let routine = app.seed_routine(&team, &json!({})).await;
    for mode in ["bearer", "hmac_sha256", "standard_webhooks", "github"] {
        app.board()
            .create_trigger(
                &routine,
                &json!({ "kind": "webhook", "signingMode": mode, "webhookSecret": issued }),
            )
            .await
            .expect_error(422, "secret_not_settable");
    }
    let bearer = hook(&app, &team, "bearer").await;
    app.board()
        .rotate_trigger_secret_with(&bearer.trigger, &json!({ "webhookSecret": issued }))
        .await
        .expect_error(422, "secret_not_settable");
    // The old bearer secret still works: the refused rotation changed nothing.
    let headers = [("authorization", format!("Bearer {}", bearer.secret))];
    assert_eq!(
        send(&on(&app, &bearer.url), &headers, Vec::new())
            .await
            .status,
        202
    );
}

/// The `X-Slack-Signature` the `slack_sdk` package computes for `body` at `timestamp`.
fn slack_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let script = "import sys\n\
                  from slack_sdk.signature import SignatureVerifier\n\
                  body = sys.stdin.buffer.read().decode()\n\
                  print(SignatureVerifier(sys.argv[1]).generate_signature(timestamp=sys.argv[2], body=body))";
    python(script, &[secret, &timestamp.to_string()], body)
}

fn slack(timestamp: i64, signature: String, content_type: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-slack-request-timestamp", timestamp.to_string()),
        ("x-slack-signature", signature),
        ("content-type", content_type.to_owned()),
    ]
}

const FORM: &str = "application/x-www-form-urlencoded";

/// Slack's published example request ("Verifying requests from Slack").
const SLACK_EXAMPLE_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

#[test]
fn the_slack_library_reproduces_the_published_example() {
    assert_eq!(
        slack_signature(
            "8f742231b10e8888abcd99yyyzzz85a5",
            1_531_420_618,
            SLACK_EXAMPLE_BODY.as_bytes()
        ),
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    );
}

#[tokio::test]
async fn slack_requests_are_verified_as_slack_signs_them_with_forms_replays_and_url_verification() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let hook = sender_hook(&app, &team, "slack", Some(secret)).await;
    let url = on(&app, &hook.url);
    let now = now_secs();
    // A slash command: a form, its fields the payload; no delivery id.
    let form = SLACK_EXAMPLE_BODY.as_bytes().to_vec();
    let signature = slack_signature(secret, now, &form);
    let command = send(&url, &slack(now, signature.clone(), FORM), form.clone()).await;
    assert_eq!(command.status, 202, "{:?}", command.body);
    assert_eq!(command.body["payload"]["command"], "/webhook-collect");
    assert_eq!(command.body["payload"]["text"], "");
    assert_eq!(command.body["payload"]["channel_name"], "foobar");
    assert_eq!(command.body["delivery"], Value::Null);
    // The same signed request again: 409 replayed.
    let replay = send(&url, &slack(now, signature, FORM), form.clone()).await;
    assert_eq!(
        (replay.status, replay.body["code"].clone()),
        (409, json!("replayed"))
    );
    // An Events API callback: its event_id is the delivery; Slack's retry (re-signed, with
    // X-Slack-Retry-Num) returns the original run.
    let callback = br#"{"type": "event_callback", "event_id": "Ev08MFMKH6", "event": {"type": "app_mention", "text": "<@U1> deploy"}}"#.to_vec();
    let json_type = "application/json";
    let first = send(
        &url,
        &slack(now, slack_signature(secret, now, &callback), json_type),
        callback.clone(),
    )
    .await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_eq!(
        first.body["delivery"],
        json!({ "format": "slack", "id": "Ev08MFMKH6", "event": "app_mention" })
    );
    let mut retry = slack(
        now + 4,
        slack_signature(secret, now + 4, &callback),
        json_type,
    );
    retry.push(("x-slack-retry-num", "1".to_owned()));
    let retried = send(&url, &retry, callback.clone()).await;
    assert_eq!(
        (retried.status, retried.body["id"].clone()),
        (202, first.body["id"].clone())
    );
    // The URL check Slack makes when the Events URL is saved: its challenge back, no run.
    let check = br#"{"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}"#.to_vec();
    let answered = send(
        &url,
        &slack(now, slack_signature(secret, now, &check), json_type),
        check.clone(),
    )
    .await;
    assert_eq!(
        (answered.status, answered.body.clone()),
        (
            200,
            json!({ "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" })
        )
    );
    // Refused: tampered, another secret, stale, future, each header missing (401); a body
    // neither JSON nor a form (415); an unsigned URL check (401).
    let window = 60;
    let other = slack_signature("another-signing-secret-0000", now, &form);
    let cases: Vec<(&str, Headers, Vec<u8>, u16)> = vec![
        (
            "tampered",
            slack(now, slack_signature(secret, now, &form), FORM),
            b"command=%2Fevil".to_vec(),
            401,
        ),
        ("another secret", slack(now, other, FORM), form.clone(), 401),
        (
            "stale",
            slack(
                now - window - 5,
                slack_signature(secret, now - window - 5, &form),
                FORM,
            ),
            form.clone(),
            401,
        ),
        (
            "future",
            slack(
                now + window + 5,
                slack_signature(secret, now + window + 5, &form),
                FORM,
            ),
            form.clone(),
            401,
        ),
        (
            "not a form",
            slack(
                now + 1,
                slack_signature(secret, now + 1, b"hello"),
                "text/plain",
            ),
            b"hello".to_vec(),
            415,
        ),
        (
            "unsigned check",
            vec![("content-type", json_type.to_owned())],
            check,
            401,
        ),
    ];
    for (case, headers, sent, status) in cases {
        assert_eq!(send(&url, &headers, sent).await.status, status, "{case}");
    }
    let signature = slack_signature(secret, now + 2, &form);
    for missing in ["x-slack-request-timestamp", "x-slack-signature"] {
        let headers = without(slack(now + 2, signature.clone(), FORM), missing);
        assert_eq!(
            send(&url, &headers, form.clone()).await.status,
            401,
            "without {missing}"
        );
    }
    let runs = listed_runs(&app, &hook.routine).await;
    assert_eq!(runs.len(), 2);
}

#[tokio::test]
async fn a_retried_delivery_meets_the_triggers_state_and_its_own_payload_first() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let secret = "whsec_test_retries_0123456789abcdef";
    let hook = sender_hook(&app, &team, "stripe", Some(secret)).await;
    let url = on(&app, &hook.url);
    let now = now_secs();
    let body = event("evt_r1");
    let first = stripe_event(&url, secret, now, &body).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    // The trigger disabled: a retry of the accepted event is refused as any call would be.
    app.board()
        .update_trigger(&hook.trigger, &json!({ "enabled": false }))
        .await
        .expect(200);
    let retry = stripe_event(&url, secret, now + 1, &body).await;
    assert_eq!(
        (retry.status, retry.body["code"].clone()),
        (409, json!("not_active"))
    );
    // Enabled again: the retry gets the original run; the same id with another body is 422.
    app.board()
        .update_trigger(&hook.trigger, &json!({ "enabled": true }))
        .await
        .expect(200);
    let retry = stripe_event(&url, secret, now + 2, &body).await;
    assert_eq!(
        (retry.status, retry.body["id"].clone()),
        (202, first.body["id"].clone())
    );
    let other = br#"{"id": "evt_r1", "type": "invoice.voided"}"#.to_vec();
    let reused = stripe_event(&url, secret, now + 3, &other).await;
    assert_eq!(
        (reused.status, reused.body["code"].clone()),
        (422, json!("idempotency_key_reused"))
    );
    // After a rotation the old secret no longer authenticates a retry (401), the new one does.
    let rotated = "whsec_rotated_retries_0123456789ab";
    app.board()
        .rotate_trigger_secret_with(&hook.trigger, &json!({ "webhookSecret": rotated }))
        .await
        .expect(200);
    let stale = stripe_event(&url, secret, now + 4, &body).await;
    assert_eq!(stale.status, 401);
    let fresh = stripe_event(&url, rotated, now + 5, &body).await;
    assert_eq!(
        (fresh.status, fresh.body["id"].clone()),
        (202, first.body["id"].clone())
    );
}
