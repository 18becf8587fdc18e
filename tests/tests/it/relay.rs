//! The worked example of `docs/operations.md`: a `webhook` channel posting to
//! `deploy/alert-relay/relay.py`, which checks the signature and forwards one Alertmanager
//! alert. Real processes: the relay (Python, `standardwebhooks`) and a stand-in Alertmanager
//! that records what it is sent.

use std::{
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use nexus_tests::{TestApp, eventually, free_port, str_at};
use reqwest::Method;
use serde_json::{Value, json};

/// Kills the relay when the test ends, whatever happens.
struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

#[tokio::test]
async fn the_alert_relay_turns_a_signed_notification_into_one_alert() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    // A stand-in Alertmanager: records the alerts posted to /api/v2/alerts.
    let alerts: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let manager = format!("http://{}", listener.local_addr().expect("addr"));
    let router = Router::new()
        .route(
            "/api/v2/alerts",
            post(
                |State(alerts): State<Arc<Mutex<Vec<Bytes>>>>, body: Bytes| async move {
                    alerts
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(body);
                    StatusCode::OK
                },
            ),
        )
        .with_state(Arc::clone(&alerts));
    tokio::spawn(async move { axum::serve(listener, router).await.expect("manager") });

    let port = free_port();
    let relay_url = format!("http://127.0.0.1:{port}/");
    let created = app
        .board()
        .send(
            Method::POST,
            &format!("/api/companies/{}/notification-channels", team.company),
            Some(
                &json!({"name": "pager", "kind": "webhook", "url": relay_url, "events": ["test"]}),
            ),
        )
        .await
        .expect(201)
        .body;
    let channel = str_at(&created, "/channel/id");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/alert-relay/relay.py"
    );
    let _relay = Relay(
        Command::new("python3")
            .args([script, "--port", &port.to_string(), "--bind", "127.0.0.1"])
            .env("NEXUS_CHANNEL_SECRET", str_at(&created, "/signingSecret"))
            .env("ALERTMANAGER_URL", &manager)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the relay starts"),
    );
    eventually(10, "the relay listening", || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .await;

    app.board()
        .send(
            Method::POST,
            &format!("/api/notification-channels/{channel}/test"),
            None,
        )
        .await
        .expect(202);
    app.drain().await;
    let sent = alerts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(sent.len(), 1, "one alert");
    let alert: Value = serde_json::from_slice(&sent[0]).expect("json");
    assert_eq!(alert[0]["labels"]["alertname"], "NexusRoutines_test");
    assert_eq!(alert[0]["labels"]["company_id"], team.company.as_str());
    let log = app
        .board()
        .send(
            Method::GET,
            &format!("/api/notification-channels/{channel}/deliveries"),
            None,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(log["deliveries"][0]["status"], "delivered");
    assert_eq!(log["deliveries"][0]["lastStatusCode"], 204);

    // Signed with another secret, the relay refuses it (401) and Alertmanager hears nothing.
    let forged = nexus_tests::http_client()
        .post(&relay_url)
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header(
            "webhook-signature",
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .body(r#"{"type":"test","timestamp":"2026-12-04T00:00:00Z","data":{}}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(forged.status(), 401);
    assert_eq!(
        alerts.lock().unwrap_or_else(PoisonError::into_inner).len(),
        1
    );
}
