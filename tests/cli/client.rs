//! The client commands, run as real processes against a real `nexus serve` (Postgres, its own
//! scheduler and worker): the README's walk-through done with the command line only, as the
//! board and as agents; `--json` output against the API's own answers; `runs watch` until the
//! run settles; and the exit codes scripts rely on.

use std::process::Command;

use crate::server::{Server, assert_ended, id, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walk_through_done_with_the_command_line_as_the_board_and_as_agents() {
    nexus_tests::needs_servers!();
    let server = Server::start().await;
    let board = server.board.clone();
    // The board sets up a company, two agents and a project.
    let company = server.json(&board, &["companies", "create", "Acme"]).await;
    let company = id(&company, "/id");
    let ada = server.json(&board, &["agents", "create", "Ada"]).await;
    let (agent, agent_key) = (id(&ada, "/agent/id"), id(&ada, "/apiKey"));
    let bob = server.json(&board, &["agents", "create", "Bob"]).await;
    let bob_key = id(&bob, "/apiKey");
    let project = server
        .json(&board, &["projects", "create", "Operations"])
        .await;
    let project = id(&project, "/id");
    // A routine for Ada with a weekday schedule; its next fire is known at once.
    let routine = server
        .json(
            &board,
            &[
                "routines",
                "create",
                "Daily report {{date}}",
                "--agent",
                &agent,
                "--project",
                &project,
                "--company",
                &company,
            ],
        )
        .await;
    let routine = id(&routine, "/id");
    let trigger = server
        .json(
            &board,
            &[
                "triggers",
                "add",
                &routine,
                "schedule",
                "--cron",
                "0 9 * * MON-FRI",
                "--timezone",
                "Europe/Amsterdam",
            ],
        )
        .await;
    assert!(trigger["trigger"]["nextRunAt"].is_string(), "{trigger}");
    // People get the schedule in plain language and times in their zone.
    let listed = server
        .run(&board, &["routines", "list", "--tz", "Europe/Amsterdam"])
        .await;
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let text = stdout(&listed);
    assert!(
        text.contains("weekdays at 09:00, Europe/Amsterdam"),
        "{text}"
    );
    assert!(text.contains("09:00:00 Europe/Amsterdam"), "{text}");
    // `--json` is exactly the API's JSON.
    assert_eq!(
        server.json(&board, &["routines", "get", &routine]).await,
        server.api(&format!("/api/routines/{routine}")).await
    );
    assert_eq!(
        server.json(&board, &["routines", "list"]).await,
        server
            .api(&format!("/api/companies/{company}/routines"))
            .await
    );
    // A run by hand, followed until it settles.
    let run = server
        .json(
            &board,
            &[
                "routines",
                "run",
                &routine,
                "--payload",
                r#"{"reason": "demo"}"#,
            ],
        )
        .await;
    assert_eq!(run["payload"]["reason"], "demo");
    let run = id(&run, "/id");
    let watching = server.spawn(&board, &["runs", "watch", &run, "--timeout", "60"]);
    // Ada, with her own key, finds the heartbeat run that woke her, does the work and closes
    // the routine's issue.
    let queued = nexus_tests::eventually(10, "a queued heartbeat run for Ada", || async {
        let listed = server
            .json(&agent_key, &["heartbeats", "list", "--status", "queued"])
            .await;
        listed["heartbeatRuns"].as_array()?.first().cloned()
    })
    .await;
    let heartbeat = id(&queued, "/id");
    let claimed = server
        .json(&agent_key, &["heartbeats", "claim", &heartbeat])
        .await;
    assert_eq!(claimed["status"], "running");
    let finished = server
        .json(
            &agent_key,
            &[
                "heartbeats",
                "finish",
                &heartbeat,
                "--status",
                "succeeded",
                "--summary",
                "done",
            ],
        )
        .await;
    assert_eq!(finished["status"], "succeeded");
    let dispatched = server.json(&agent_key, &["runs", "get", &run]).await;
    assert_eq!(dispatched["status"], "issue_created", "{dispatched}");
    let issue = id(&dispatched, "/linkedIssueId");
    let closed = server
        .json(
            &agent_key,
            &["issues", "update", &issue, "--status", "done"],
        )
        .await;
    assert_eq!(closed["status"], "done");
    // `runs watch` returns once the run is completed, having shown it.
    let watched = tokio::task::spawn_blocking(move || watching.wait_with_output())
        .await
        .expect("joined")
        .expect("watch ends");
    assert_eq!(watched.status.code(), Some(0), "{}", stderr(&watched));
    assert!(
        stdout(&watched).contains("completed"),
        "{}",
        stdout(&watched)
    );
    // The run list as the API has it.
    assert_eq!(
        server.json(&board, &["runs", "list", &routine]).await,
        server
            .api(&format!("/api/routines/{routine}/runs?limit=20"))
            .await
    );
    // Bob may not run Ada's routine: refused, exit 4, the API's code on one line.
    let refused = server.run(&bob_key, &["routines", "run", &routine]).await;
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    let line = stderr(&refused);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.starts_with("error: ") && line.contains("(403)"),
        "{line}"
    );
    // The audit log records what the board and the agents did.
    let activity = server
        .json(&board, &["activity", "list", "--limit", "50"])
        .await;
    let actions: Vec<&str> = activity["activity"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"routine.created"), "{actions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_usage_not_found_refused_and_unreachable_apart() {
    nexus_tests::needs_servers!();
    let server = Server::start().await;
    let board = server.board.clone();
    let missing = "0193a5b0-0000-7000-8000-000000000000";
    let cases: [(&str, &[&str], i32, &str); 6] = [
        ("a wrong token", &["companies", "list"], 4, "(401)"),
        (
            "an unknown routine",
            &["routines", "get", missing],
            3,
            "(404)",
        ),
        (
            "an unknown command",
            &["routines", "fly"],
            2,
            "unknown command",
        ),
        (
            "an id that is not one",
            &["runs", "get", "nope"],
            2,
            "not an id",
        ),
        (
            "a flag it does not take",
            &["runs", "get", missing, "--nope"],
            2,
            "unknown flag",
        ),
        (
            "archiving unconfirmed",
            &["routines", "archive", missing],
            2,
            "--yes",
        ),
    ];
    for (case, args, code, says) in cases {
        let token = if case == "a wrong token" {
            "nxb_wrong"
        } else {
            board.as_str()
        };
        let output = server.run(token, args).await;
        assert_ended(&output, code, says);
        assert!(
            !stderr(&output).contains(&board) && !stdout(&output).contains(&board),
            "{case}: the token is never printed"
        );
    }
    // Nothing listening: exit 5.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let unreachable = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args([
            "companies",
            "list",
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ])
        .env_clear()
        .env("NEXUS_TOKEN", &board)
        .output()
        .expect("nexus runs");
    assert_ended(&unreachable, 5, "cannot connect");
    // No token at all: a usage error naming the variable.
    let tokenless = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(["companies", "list", "--url", &server.base])
        .env_clear()
        .output()
        .expect("nexus runs");
    assert_eq!(tokenless.status.code(), Some(2));
    assert!(stderr(&tokenless).contains("NEXUS_TOKEN"));
    // Help needs no server, and shows an example.
    let help = server.run(&board, &["routines", "run", "--help"]).await;
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("Example:"), "{}", stdout(&help));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_routine_and_trigger_command_does_what_the_api_does() {
    nexus_tests::needs_servers!();
    let server = Server::start().await;
    let board = server.board.clone();
    server.json(&board, &["companies", "create", "Acme"]).await;
    let agent = id(
        &server.json(&board, &["agents", "create", "Ada"]).await,
        "/agent/id",
    );
    let project = id(
        &server.json(&board, &["projects", "create", "Ops"]).await,
        "/id",
    );
    let routine = server
        .json(
            &board,
            &[
                "routines",
                "create",
                "Report",
                "--agent",
                &agent,
                "--project",
                &project,
                "--concurrency",
                "always_enqueue",
                "--catch-up",
                "enqueue_missed_with_cap",
                "--catch-up-cap",
                "3",
            ],
        )
        .await;
    assert_eq!(
        (
            routine["concurrencyPolicy"].clone(),
            routine["catchUpPolicy"].clone(),
            routine["catchUpCap"].clone()
        ),
        (
            serde_json::json!("always_enqueue"),
            serde_json::json!("enqueue_missed_with_cap"),
            serde_json::json!(3)
        )
    );
    let routine = id(&routine, "/id");
    // update, pause, resume: each answers the routine as the API has it afterwards.
    let updated = server
        .json(
            &board,
            &[
                "routines",
                "update",
                &routine,
                "--title",
                "Weekly report",
                "--priority",
                "high",
            ],
        )
        .await;
    assert_eq!(
        (updated["title"].clone(), updated["priority"].clone()),
        (
            serde_json::json!("Weekly report"),
            serde_json::json!("high")
        )
    );
    let paused = server.json(&board, &["routines", "pause", &routine]).await;
    assert_eq!(paused["status"], "paused");
    assert_eq!(
        paused,
        server.api(&format!("/api/routines/{routine}")).await
    );
    let resumed = server.json(&board, &["routines", "resume", &routine]).await;
    assert_eq!(resumed["status"], "active");
    // A value outside a closed set never reaches the server.
    let wrong = server
        .run(
            &board,
            &["routines", "update", &routine, "--priority", "urgent"],
        )
        .await;
    assert_ended(&wrong, 2, "critical, high, medium, low");
    // Triggers: a schedule, its upcoming fires, an update, a webhook rotated with a grace.
    let schedule = server
        .json(
            &board,
            &[
                "triggers",
                "add",
                &routine,
                "schedule",
                "--cron",
                "0 * * * *",
                "--label",
                "hourly",
            ],
        )
        .await;
    let schedule = id(&schedule, "/trigger/id");
    let upcoming = server
        .json(&board, &["routines", "upcoming", &routine, "--count", "3"])
        .await;
    assert_eq!(
        upcoming,
        server
            .api(&format!("/api/routines/{routine}/upcoming?count=3"))
            .await
    );
    assert_eq!(upcoming["fires"].as_array().map(Vec::len), Some(3));
    let disabled = server
        .json(
            &board,
            &[
                "triggers",
                "update",
                &schedule,
                "--disable",
                "--jitter",
                "30",
            ],
        )
        .await;
    assert_eq!(
        (disabled["enabled"].clone(), disabled["jitterSec"].clone()),
        (serde_json::json!(false), serde_json::json!(30))
    );
    let hook = server
        .json(
            &board,
            &[
                "triggers",
                "add",
                &routine,
                "webhook",
                "--signing-mode",
                "hmac_sha256",
            ],
        )
        .await;
    let (hook_id, first_secret) = (
        id(&hook, "/trigger/id"),
        id(&hook, "/secretMaterial/webhookSecret"),
    );
    let rotated = server
        .json(&board, &["triggers", "rotate", &hook_id, "--grace", "3600"])
        .await;
    assert_ne!(id(&rotated, "/secretMaterial/webhookSecret"), first_secret);
    assert!(
        rotated["trigger"]["previousSecretExpiresAt"].is_string(),
        "{rotated}"
    );
    let again = server.run(&board, &["triggers", "rotate", &hook_id]).await;
    assert_ended(&again, 4, "rotation_in_progress");
    let deleted = server.run(&board, &["triggers", "delete", &hook_id]).await;
    assert_eq!(deleted.status.code(), Some(0), "{}", stderr(&deleted));
    let gone = server.run(&board, &["triggers", "delete", &hook_id]).await;
    assert_eq!(gone.status.code(), Some(3));
    // A backfill of the last two full hours: one run per hour the schedule names.
    let now = chrono::Utc::now();
    let to = now.format("%Y-%m-%dT%H:00:00Z").to_string();
    let from = (now - chrono::TimeDelta::hours(2))
        .format("%Y-%m-%dT%H:00:00Z")
        .to_string();
    let backfill = server
        .json(
            &board,
            &[
                "routines",
                "backfill",
                &routine,
                "--from",
                &from,
                "--to",
                &to,
                "--trigger",
                &schedule,
            ],
        )
        .await;
    assert_eq!(
        backfill["runs"].as_array().map(Vec::len),
        Some(2),
        "{backfill}"
    );
    assert!(
        backfill["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|r| r["source"] == "backfill")
    );
    // Paging: a full page names where the next starts, and --before fetches it.
    let first_page = server
        .json(&board, &["runs", "list", &routine, "--limit", "1"])
        .await;
    let before = id(&first_page, "/nextBefore");
    assert_eq!(
        server
            .json(
                &board,
                &[
                    "runs", "list", &routine, "--limit", "1", "--before", &before
                ]
            )
            .await,
        server
            .api(&format!(
                "/api/routines/{routine}/runs?limit=1&before={before}"
            ))
            .await
    );
    let human = server
        .run(&board, &["runs", "list", &routine, "--limit", "1"])
        .await;
    assert!(
        stdout(&human).contains(&format!("(more: --before {before})")),
        "{}",
        stdout(&human)
    );
    // Archive, confirmed: the routine refuses to run from then on (exit 4).
    let archived = server
        .json(&board, &["routines", "archive", &routine, "--yes"])
        .await;
    assert_eq!(archived["status"], "archived");
    let refused = server.run(&board, &["routines", "run", &routine]).await;
    assert_ended(&refused, 4, "routine_archived");
}
