//! Inbound signing modes of real senders, each request signed by that sender's published
//! algorithm as an independent library implements it: Standard Webhooks through the Python
//! `standardwebhooks` package (installed by `.ci/run`; see the README).

use std::io::Write as _;

use super::*;

/// Runs a Python `script` with `args`, `body` on its standard input; returns what it printed.
pub(crate) fn python(script: &str, args: &[&str], body: &[u8]) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("body to python");
    let output = child.wait_with_output().expect("python3 ends");
    assert!(
        output.status.success(),
        "python3 signs (the packages .ci/run installs): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// The `webhook-signature` value the `standardwebhooks` package computes.
fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let script = "import sys, datetime\n\
                  from standardwebhooks.webhooks import Webhook\n\
                  at = datetime.datetime.fromtimestamp(int(sys.argv[3]), tz=datetime.timezone.utc)\n\
                  print(Webhook(sys.argv[1]).sign(sys.argv[2], at, sys.stdin.buffer.read()))";
    python(script, &[secret, id, &timestamp.to_string()], body)
}

fn standard(id: &str, timestamp: i64, signature: String) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
        ("content-type", "application/json".to_owned()),
    ]
}

#[test]
fn the_library_reproduces_the_published_test_vector() {
    // The Standard Webhooks specification's example: if the library or our use of it drifted,
    // every test below would prove nothing.
    assert_eq!(
        standard_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

#[tokio::test]
async fn standard_webhooks_calls_are_verified_as_the_specification_signs_them() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "standard_webhooks").await;
    assert!(hook.secret.starts_with("whsec_"), "{}", hook.secret);
    let url = on(&app, &hook.url);
    let body = br#"{"type": "invoice.paid", "data": {"id": "in_1"}}"#.to_vec();
    let now = now_secs();
    let signature = standard_signature(&hook.secret, "msg_1", now, &body);
    let first = send(
        &url,
        &standard("msg_1", now, signature.clone()),
        body.clone(),
    )
    .await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_eq!(first.body["payload"]["type"], "invoice.paid");
    assert_eq!(
        first.body["delivery"],
        json!({ "format": "standard_webhooks", "id": "msg_1", "event": "invoice.paid" })
    );
    let run = str_at(&first.body, "/id");
    // The sender's retry: byte-identical, or re-signed with a later timestamp — the delivery id
    // returns the original run.
    for (ts, signature) in [
        (now, signature.clone()),
        (
            now + 7,
            standard_signature(&hook.secret, "msg_1", now + 7, &body),
        ),
    ] {
        let again = send(&url, &standard("msg_1", ts, signature), body.clone()).await;
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
    // Several signatures in one header (a sender rotating its secret): any one matching does.
    let other = standard_signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_2",
        now,
        &body,
    );
    let right = standard_signature(&hook.secret, "msg_2", now, &body);
    let both = send(
        &url,
        &standard("msg_2", now, format!("v1a,ignored {other} {right}")),
        body.clone(),
    )
    .await;
    assert_eq!(both.status, 202, "{:?}", both.body);
    assert_ne!(str_at(&both.body, "/id"), run);
    // Refused with 401, the contract's one body: a tampered body, another secret, a timestamp
    // outside the window either way, each header missing.
    let window = 60;
    let tampered = br#"{"type": "invoice.paid", "data": {"id": "in_2"}}"#.to_vec();
    type Case = (&'static str, Vec<(&'static str, String)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            "tampered body",
            standard(
                "msg_3",
                now,
                standard_signature(&hook.secret, "msg_3", now, &body),
            ),
            tampered,
        ),
        (
            "another secret",
            standard("msg_4", now, other.clone()),
            body.clone(),
        ),
        (
            "stale",
            standard(
                "msg_5",
                now - window - 5,
                standard_signature(&hook.secret, "msg_5", now - window - 5, &body),
            ),
            body.clone(),
        ),
        (
            "future",
            standard(
                "msg_6",
                now + window + 5,
                standard_signature(&hook.secret, "msg_6", now + window + 5, &body),
            ),
            body.clone(),
        ),
        (
            "another id",
            standard(
                "msg_7",
                now,
                standard_signature(&hook.secret, "msg_8", now, &body),
            ),
            body.clone(),
        ),
    ];
    for (case, headers, sent) in cases {
        assert_eq!(send(&url, &headers, sent).await.status, 401, "{case}");
    }
    let signature = standard_signature(&hook.secret, "msg_9", now, &body);
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let headers = without(standard("msg_9", now, signature.clone()), missing);
        assert_eq!(
            send(&url, &headers, body.clone()).await.status,
            401,
            "without {missing}"
        );
    }
    // Exactly the two deliveries accepted made runs, each with its delivery.
    let runs = listed_runs(&app, &hook.routine).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["delivery"]["id"], "msg_2");
    // A run of another mode has none.
    let plain = hook_run_of_bearer(&app, &team).await;
    assert_eq!(plain["delivery"], Value::Null);
    // A rotation keeps the format.
    let rotated = app
        .board()
        .rotate_trigger_secret(&hook.trigger)
        .await
        .expect(200)
        .body;
    assert!(str_at(&rotated, "/secretMaterial/webhookSecret").starts_with("whsec_"));
}

/// A run accepted by a bearer-mode trigger, as the API answers it.
async fn hook_run_of_bearer(app: &TestApp, team: &Team) -> Value {
    let bearer = hook(app, team, "bearer").await;
    let headers = [("authorization", format!("Bearer {}", bearer.secret))];
    let sent = send(&on(app, &bearer.url), &headers, Vec::new()).await;
    assert_eq!(sent.status, 202);
    sent.body
}

/// GitHub's `X-Hub-Signature-256` as GitHub documents it (`sha256=` and the hex HMAC-SHA256 of
/// the body, keyed with the secret), computed by Python's own `hmac` module.
fn github_signature(secret: &str, body: &[u8]) -> String {
    let script = "import hmac, hashlib, sys\n\
                  print('sha256=' + hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())";
    python(script, &[secret], body)
}

fn github(delivery: &str, event: &str, signature: String) -> Vec<(&'static str, String)> {
    vec![
        ("x-github-delivery", delivery.to_owned()),
        ("x-github-event", event.to_owned()),
        ("x-hub-signature-256", signature),
        ("content-type", "application/json".to_owned()),
    ]
}

#[test]
fn the_github_signer_reproduces_githubs_documented_example() {
    assert_eq!(
        github_signature("It's a Secret to Everybody", b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
}

#[tokio::test]
async fn github_deliveries_are_verified_and_a_redelivery_returns_the_original_run() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "github").await;
    let url = on(&app, &hook.url);
    let body = br#"{"ref": "refs/heads/main", "after": "abc123"}"#.to_vec();
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let signature = github_signature(&hook.secret, &body);
    let first = send(
        &url,
        &github(delivery, "push", signature.clone()),
        body.clone(),
    )
    .await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_eq!(
        first.body["delivery"],
        json!({ "format": "github", "id": delivery, "event": "push" })
    );
    // GitHub's "Redeliver" sends the same delivery again: the original run.
    let again = send(
        &url,
        &github(delivery, "push", signature.clone()),
        body.clone(),
    )
    .await;
    assert_eq!(
        (again.status, again.body["id"].clone()),
        (202, first.body["id"].clone())
    );
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    // The ping GitHub sends when the hook is created: 200, no run.
    let zen = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#.to_vec();
    let ping = send(
        &url,
        &github("aa-1", "ping", github_signature(&hook.secret, &zen)),
        zen.clone(),
    )
    .await;
    assert_eq!(
        (ping.status, ping.body.clone()),
        (200, json!({ "pong": true }))
    );
    // Refused: no delivery id (400), a tampered body, another secret, no signature (401).
    let undelivered = without(
        github(delivery, "push", signature.clone()),
        "x-github-delivery",
    );
    assert_eq!(send(&url, &undelivered, body.clone()).await.status, 400);
    let tampered = br#"{"ref": "refs/heads/evil", "after": "abc123"}"#.to_vec();
    assert_eq!(
        send(&url, &github("d-2", "push", signature.clone()), tampered)
            .await
            .status,
        401
    );
    let other = github_signature("nxw_another", &body);
    assert_eq!(
        send(&url, &github("d-3", "push", other), body.clone())
            .await
            .status,
        401
    );
    let unsigned = without(github("d-4", "push", signature), "x-hub-signature-256");
    assert_eq!(send(&url, &unsigned, body.clone()).await.status, 401);
    let ping_unsigned: Vec<_> = github("d-5", "ping", String::new());
    assert_eq!(
        send(&url, &ping_unsigned, zen).await.status,
        401,
        "a ping is authenticated too"
    );
    let runs = listed_runs(&app, &hook.routine).await;
    assert_eq!(runs.len(), 1);
}
