//! What no caller can make the API hold: connections whose headers never complete, requests
//! that never finish, more connections than the cap, a routine with more triggers than the
//! contract allows, and a flood of wrong webhook secrets draining the sender's rate limit.

use std::time::Duration;

use nexus_tests::{Options, TestApp, str_at};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::webhooks::{hook, on, send};

async fn app_with(env: Vec<(&'static str, String)>) -> TestApp {
    TestApp::spawn_with(Options {
        env,
        ..Default::default()
    })
    .await
}

/// Opens a connection and sends the start of a request whose headers never end.
async fn half_open(base: &str) -> tokio::net::TcpStream {
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream
        .write_all(format!("GET /api/companies HTTP/1.1\r\nhost: {address}\r\nx-slow: ").as_bytes())
        .await
        .expect("write");
    stream
}

/// Whether the server has closed `stream` (reads to the end within `wait`).
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut buffer = [0u8; 256];
    let read = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, read).await.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_half_open_connections_are_closed_after_the_header_timeout() {
    nexus_tests::needs_servers!();
    let app = app_with(vec![("NEXUS_HTTP_HEADER_TIMEOUT_SECS", "2".to_owned())]).await;
    let mut connections = Vec::with_capacity(1000);
    for _ in 0..1000 {
        connections.push(half_open(&app.base).await);
    }
    // Meanwhile ordinary requests are served.
    for _ in 0..20 {
        app.board().list_companies().await.expect(200);
    }
    // Every half-open connection is closed once its headers are 2 s late (checked together,
    // within a generous margin for a loaded machine).
    let checks = connections
        .iter_mut()
        .map(|stream| closed_within(stream, Duration::from_secs(20)));
    let closed = futures_util::future::join_all(checks).await;
    assert_eq!(closed.iter().filter(|c| **c).count(), 1000);
    app.board().list_companies().await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_complete_within_the_request_timeout_is_answered_408() {
    nexus_tests::needs_servers!();
    let app = app_with(vec![("NEXUS_HTTP_REQUEST_TIMEOUT_SECS", "1".to_owned())]).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/companies HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\"",
        app.board_token
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // The body trickles in and never completes.
    let mut answer = String::new();
    let read = async {
        let mut buffer = [0u8; 1024];
        loop {
            tokio::select! {
                n = stream.read(&mut buffer) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.push_str(&String::from_utf8_lossy(&buffer[..n])),
                },
                () = tokio::time::sleep(Duration::from_millis(300)) => {
                    if stream.write_all(b" ").await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the server answers and closes");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    // Nothing was created.
    let companies = app.board().list_companies().await.expect(200).body;
    assert_eq!(companies["companies"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_one_closes() {
    nexus_tests::needs_servers!();
    let app = app_with(vec![
        ("NEXUS_HTTP_MAX_CONNECTIONS", "16".to_owned()),
        ("NEXUS_HTTP_HEADER_TIMEOUT_SECS", "30".to_owned()),
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(half_open(&app.base).await);
    }
    // A 17th client is not served while 16 connections are open ...
    let waiting = tokio::spawn({
        let http = nexus_tests::http_client();
        let url = format!("{}/healthz", app.base);
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!waiting.is_finished(), "served past the cap");
    // ... and is as soon as one of them goes away.
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a connection closed")
        .expect("task")
        .expect("answer");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_routine_has_at_most_fifty_triggers() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    for _ in 0..nexus_shared::store::MAX_TRIGGERS_PER_ROUTINE {
        app.seed_trigger(&routine, &json!({ "kind": "api" })).await;
    }
    let refused = app
        .board()
        .create_trigger(
            &routine,
            &json!({ "kind": "schedule", "cronExpression": "* * * * *" }),
        )
        .await
        .expect_error(422, "too_many_triggers");
    assert!(
        refused.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("50"))
    );
    // Deleting one makes room again.
    let triggers = app.board().get_routine(&routine).await.expect(200).body;
    let first = str_at(&triggers, "/triggers/0/id");
    app.board().delete_trigger(&first).await.expect(204);
    app.seed_trigger(&routine, &json!({ "kind": "api" })).await;
}

#[tokio::test]
async fn wrong_secrets_do_not_use_up_the_senders_rate_limit() {
    nexus_tests::needs_servers!();
    // A manual clock: no token comes back during the flood.
    let app = TestApp::spawn_with(Options {
        clock: Some(nexus_shared::ManualClock::new(chrono::Utc::now())),
        env: vec![
            ("NEXUS_WEBHOOK_RATE_PER_SEC", "1".to_owned()),
            ("NEXUS_WEBHOOK_BURST", "100".to_owned()),
        ],
    })
    .await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "bearer").await;
    let url = on(&app, &hook.url);
    let wrong = [("authorization", "Bearer whs_not-the-secret".to_owned())];
    let mut answers = Vec::new();
    for _ in 0..110 {
        answers.push(send(&url, &wrong, Vec::new()).await.status);
    }
    // The flood is limited on its own bucket: 401 for the first hundred, 429 after.
    assert_eq!(answers, [[401; 100].as_slice(), &[429; 10]].concat());
    // The sender's own calls still have their whole burst.
    let right = [("authorization", format!("Bearer {}", hook.secret))];
    for _ in 0..5 {
        assert_eq!(send(&url, &right, Vec::new()).await.status, 202);
    }
}

#[tokio::test]
async fn a_request_waiting_on_a_lock_past_the_lock_timeout_is_answered_503() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = app_with(vec![("NEXUS_DB_LOCK_TIMEOUT_MS", "300".to_owned())]).await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let mut holder = app.db.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM routines WHERE id = $1::uuid FOR UPDATE")
        .bind(&routine)
        .execute(&mut *holder)
        .await
        .expect("hold the routine");
    let started = std::time::Instant::now();
    let refused = app
        .board()
        .update_routine(&routine, &json!({ "title": "Renamed" }))
        .await
        .expect_error(503, "unavailable");
    assert!(refused.headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered at the lock timeout"
    );
    holder.rollback().await.expect("release");
    app.board()
        .update_routine(&routine, &json!({ "title": "Renamed" }))
        .await
        .expect(200);
}

#[tokio::test]
async fn unknown_ids_and_wrong_secrets_are_answered_without_the_database() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    // A clock that stands still: "at most one read a second" and "unknown for 5 s" hold for
    // the whole test, however slow the machine.
    let clock: nexus_shared::clock::SharedClock =
        nexus_shared::ManualClock::new(chrono::Utc::now());
    let app = TestApp::spawn_with(Options {
        clock: Some(clock),
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    let hook = hook(&app, &team, "bearer").await;
    let url = on(&app, &hook.url);
    let unknown = url.replace(
        url.split("/public/")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .expect("id"),
        "AAAAAAAAAAAAAAAAAAAAAA",
    );
    let wrong = [("authorization", "Bearer whs_wrong".to_owned())];
    // Warm up: the unknown id is looked up once, the trigger read once and re-read once.
    assert_eq!(send(&unknown, &[], Vec::new()).await.status, 404);
    assert_eq!(send(&url, &wrong, Vec::new()).await.status, 401);
    assert_eq!(send(&url, &wrong, Vec::new()).await.status, 401);
    // Now the database refuses the API: its sessions are ended and no new one is allowed.
    use sqlx::Connection as _;
    let name = app.db.name.clone();
    let admin_url = app.db.url.replacen(&format!("/{name}"), "/postgres", 1);
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("a session on the server's own database");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false"
    )))
    .execute(&mut admin)
    .await
    .expect("refuse new sessions");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&name)
    .execute(&mut admin)
    .await
    .expect("end the API's sessions");
    // Still answered: the unknown id from memory, wrong secrets against the kept copy.
    for _ in 0..20 {
        assert_eq!(send(&unknown, &[], Vec::new()).await.status, 404);
        assert_eq!(send(&url, &wrong, Vec::new()).await.status, 401);
    }
    // Anything that does need the database is 503 (proof that it was unreachable).
    let other = unknown.replace("AAAAAAAAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBBBBBBBB");
    assert_eq!(send(&other, &[], Vec::new()).await.status, 503);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS true"
    )))
    .execute(&mut admin)
    .await
    .expect("allow sessions again");
}

/// Sends only the head of a webhook call announcing a 200 KB body (under the limit) and returns
/// the status answered before any of the body is sent (`None` if the server waits for it).
async fn answered_before_the_body(url: &str, headers: &[(&str, String)]) -> Option<u16> {
    let rest = url.trim_start_matches("http://");
    let (address, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: 200000\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    nexus_tests::status_without_the_body(address, &head).await
}

#[tokio::test]
async fn what_the_headers_decide_is_answered_before_the_body_is_read() {
    nexus_tests::needs_servers!();
    let app = app_with(vec![
        ("NEXUS_WEBHOOK_RATE_PER_SEC", "1".to_owned()),
        ("NEXUS_WEBHOOK_BURST", "3".to_owned()),
    ])
    .await;
    let team = app.seed_team().await;
    let bearer = hook(&app, &team, "bearer").await;
    let signed = hook(&app, &team, "hmac_sha256").await;
    let (bearer_url, signed_url) = (on(&app, &bearer.url), on(&app, &signed.url));
    let unknown = bearer_url.replace(
        bearer_url
            .split("/public/")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .expect("id"),
        "AAAAAAAAAAAAAAAAAAAAAA",
    );
    // An unknown id, a wrong bearer secret, a signed call without usable headers: refused
    // without waiting for the body.
    assert_eq!(answered_before_the_body(&unknown, &[]).await, Some(404));
    let wrong = [("authorization", "Bearer whs_wrong".to_owned())];
    assert_eq!(
        answered_before_the_body(&bearer_url, &wrong).await,
        Some(401)
    );
    let stale = [
        ("x-paperclip-timestamp", "1000".to_owned()),
        ("x-paperclip-signature", "0".repeat(64)),
    ];
    assert_eq!(
        answered_before_the_body(&signed_url, &stale).await,
        Some(401)
    );
    // The sender's own bucket empty (burst 3): its next call is limited before its body.
    let right = [("authorization", format!("Bearer {}", bearer.secret))];
    for _ in 0..3 {
        assert_eq!(send(&bearer_url, &right, Vec::new()).await.status, 202);
    }
    assert_eq!(
        answered_before_the_body(&bearer_url, &right).await,
        Some(429)
    );
}

/// Reads one response from `stream`: its status, or `None` when the connection ended first.
async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<u16> {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if answer.len() >= end + 4 + length {
                    return head.split(' ').nth(1)?.parse().ok();
                }
            }
            let n = stream.read(&mut buffer).await.ok()?;
            if n == 0 {
                return None;
            }
            answer.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()?
}

#[tokio::test]
async fn a_refusal_answered_before_the_body_leaves_the_connection_usable() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let bearer = hook(&app, &team, "bearer").await;
    let url = on(&app, &bearer.url);
    let rest = url.trim_start_matches("http://");
    let (address, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    // A wrong secret with a 200 KB body: 401 comes before the body is sent; the client then
    // sends all of it, as a client that does not wait would, and the connection still serves
    // the next request — a webhook call, then an API call with a bad token and a body.
    let body = format!("{{\"a\":\"{}\"}}", "x".repeat(200_000));
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer whs_wrong\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    assert_eq!(read_response(&mut stream).await, Some(401));
    stream.write_all(body.as_bytes()).await.expect("body");
    let api = format!(
        "POST /api/companies HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer wrong\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    for (request, status) in [(format!("{head}{body}"), 401), (api, 401)] {
        stream
            .write_all(request.as_bytes())
            .await
            .expect("the connection is still open");
        assert_eq!(read_response(&mut stream).await, Some(status));
    }
    // A body past what is worth draining (over 1 MiB announced) still ends the connection.
    let huge = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer whs_wrong\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    stream.write_all(huge.as_bytes()).await.expect("head");
    assert_eq!(read_response(&mut stream).await, Some(413));
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
}
