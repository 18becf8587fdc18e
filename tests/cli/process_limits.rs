//! Bounds that only a real process shows: a process asked to stop closes a connection that
//! holds a slow body by its shutdown deadline, and a routine whose template multiplies a large
//! payload dispatches without the process's memory growing with the product.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::embedded::{Api, TOKEN, id, start_with};

fn data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("nexus-limits-{}", uuid::Uuid::new_v4().simple()))
}

/// The peak resident memory of process `pid` so far, in KiB (`VmHWM`).
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn a_slow_body_does_not_keep_a_stopping_process_alive_past_its_deadline() {
    let dir = data_dir();
    let port = nexus_tests::free_port();
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: nexus_tests::http_client(),
    };
    let mut process = start_with(&dir, port, &[("NEXUS_HTTP_SHUTDOWN_SECS", "2")]);
    nexus_tests::wait_until_ready(&api.base, 30).await;
    // A request whose body arrives one byte at a time, never finishing. It asks for
    // `100 Continue`, which the server sends when its handler starts reading the body: the
    // signal that the connection is held open mid-body when the process is asked to stop.
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    slow.write_all(
        format!(
            "POST /api/companies HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
             content-type: application/json\r\ncontent-length: 100000\r\n\
             expect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut answer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut answer))
        .await
        .expect("the server reads the body within 10 s")
        .expect("read");
    assert!(
        answer[..read].starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&answer[..read])
    );
    slow.write_all(b"{").await.expect("write");
    let trickle = tokio::spawn(async move {
        for _ in 0..600 {
            if slow.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let stopped_at = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &process.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = process.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
    .await
    .expect("waiter");
    let took = stopped_at.elapsed();
    assert!(exited.is_some(), "still running 30 s after SIGTERM");
    // The drain (0.5 s) and the deadline (2 s), with room for a loaded machine; the request
    // deadline (60 s) plays no part.
    assert!(
        took < Duration::from_secs(15),
        "exited {took:?} after SIGTERM"
    );
    trickle.abort();
    drop(std::fs::remove_dir_all(dir));
}

#[tokio::test]
async fn a_template_multiplying_a_large_payload_dispatches_in_bounded_memory() {
    let dir = data_dir();
    let port = nexus_tests::free_port();
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: nexus_tests::http_client(),
    };
    let process = start_with(&dir, port, &[]);
    nexus_tests::wait_until_ready(&api.base, 30).await;
    let company = id(&api.post("/api/companies", json!({ "name": "Acme" })).await);
    let agent = api
        .post(
            &format!("/api/companies/{company}/agents"),
            json!({ "name": "Ada" }),
        )
        .await["agent"]["id"]
        .clone();
    let project = id(&api
        .post(
            &format!("/api/companies/{company}/projects"),
            json!({ "name": "Ops" }),
        )
        .await);
    // 769 placeholders (9,997 characters: the description's limit is 10,000).
    let routine = id(&api
        .post(
            &format!("/api/companies/{company}/routines"),
            json!({ "title": "{{payload.a}}", "description": "{{payload.a}}".repeat(769),
                    "assigneeAgentId": agent, "projectId": project,
                    "concurrencyPolicy": "always_enqueue" }),
        )
        .await);
    let payload = json!({ "payload": { "a": "x".repeat(250_000) } });
    let dispatch = |n: usize| {
        let (api, routine, payload) = (&api, routine.clone(), payload.clone());
        async move {
            let run = id(&api
                .post(&format!("/api/routines/{routine}/run"), payload)
                .await);
            nexus_tests::eventually(15, &format!("the dispatch of run {n}"), || async {
                let body = api.get(&format!("/api/routine-runs/{run}")).await;
                (body["status"] == "issue_created").then_some(body)
            })
            .await
        }
    };
    // One dispatch first, so the peak counts what is there anyway (the payload itself, the
    // connections); then three more.
    dispatch(0).await;
    let before = peak_kib(process.0.id());
    for n in 1..=3 {
        let run = dispatch(n).await;
        let issue = api
            .get(&format!(
                "/api/issues/{}",
                run["linkedIssueId"].as_str().expect("issue")
            ))
            .await;
        assert_eq!(
            issue["description"].as_str().map(|d| d.chars().count()),
            Some(10_000)
        );
        assert_eq!(
            issue["title"].as_str().map(|t| t.chars().count()),
            Some(200)
        );
    }
    let grown = peak_kib(process.0.id()).saturating_sub(before);
    eprintln!("peak memory grew by {grown} KiB over three dispatches");
    assert!(grown < 20 * 1024, "peak memory grew by {grown} KiB");
    drop(process);
    drop(std::fs::remove_dir_all(dir));
}
