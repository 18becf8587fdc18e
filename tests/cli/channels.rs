//! `nexus channels …` and the routine safety nets from the command line, against a real
//! `nexus serve`: what they print agrees with the API, and bad input is a usage error.

use crate::server::{Server, assert_ended, id, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_pauses_from_the_command_line() {
    nexus_tests::needs_servers!();
    let server = Server::start().await;
    let board = server.board.clone();
    let company = id(
        &server.json(&board, &["companies", "create", "Acme"]).await,
        "/id",
    );
    let created = server
        .json(
            &board,
            &[
                "channels",
                "create",
                "pager",
                "--kind",
                "webhook",
                "--to",
                "https://alerts.example.com/nexus",
                "--events",
                "run.failed,routine.paused_on_failures",
            ],
        )
        .await;
    let channel = id(&created, "/channel/id");
    assert!(id(&created, "/signingSecret").starts_with("whsec_"));
    let listed = server
        .api(&format!("/api/companies/{company}/notification-channels"))
        .await;
    assert_eq!(
        server.json(&board, &["channels", "list"]).await,
        listed,
        "--json is the API's answer"
    );
    let table = stdout(&server.run(&board, &["channels", "list"]).await);
    assert!(
        table.contains("pager") && table.contains("run.failed,routine.paused_on_failures"),
        "{table}"
    );
    let changed = server
        .json(
            &board,
            &[
                "channels",
                "update",
                &channel,
                "--disable",
                "--name",
                "oncall",
            ],
        )
        .await;
    assert_eq!(
        (&changed["name"], &changed["enabled"]),
        (&"oncall".into(), &false.into())
    );
    let sent = server.json(&board, &["channels", "test", &channel]).await;
    let log = server
        .json(&board, &["channels", "deliveries", &channel])
        .await;
    assert_eq!(log["deliveries"][0]["id"], sent["notificationId"]);
    assert_eq!(log["deliveries"][0]["event"], "test");
    // Usage errors never reach the server.
    assert_ended(
        &server
            .run(
                &board,
                &[
                    "channels",
                    "create",
                    "x",
                    "--kind",
                    "webhook",
                    "--to",
                    "https://a.example",
                    "--events",
                    "run.exploded",
                ],
            )
            .await,
        2,
        "run.exploded",
    );
    assert_ended(
        &server
            .run(
                &board,
                &["channels", "update", &channel, "--enable", "--disable"],
            )
            .await,
        2,
        "exclude",
    );
    // The API's refusals are exit code 4 with its code.
    assert_ended(
        &server
            .run(
                &board,
                &[
                    "channels",
                    "create",
                    "x",
                    "--kind",
                    "slack",
                    "--to",
                    "http://127.0.0.1:9/x",
                    "--events",
                    "test",
                ],
            )
            .await,
        4,
        "invalid_field",
    );
    let deleted = server.run(&board, &["channels", "delete", &channel]).await;
    assert_eq!(deleted.status.code(), Some(0));
    assert_ended(
        &server.run(&board, &["channels", "test", &channel]).await,
        3,
        "not_found",
    );

    // A routine's safety nets and a pause with a note and an end.
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
                "Nightly",
                "--agent",
                &agent,
                "--project",
                &project,
                "--run-timeout",
                "3600",
                "--pause-after-failures",
                "3",
            ],
        )
        .await;
    assert_eq!(
        (&routine["runTimeoutSec"], &routine["pauseAfterFailures"]),
        (&3600.into(), &3.into())
    );
    let routine = id(&routine, "/id");
    let until = (chrono::Utc::now() + chrono::TimeDelta::days(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let paused = server
        .json(
            &board,
            &[
                "routines",
                "pause",
                &routine,
                "--note",
                "vendor outage",
                "--until",
                &until,
            ],
        )
        .await;
    assert_eq!(paused["pausedReason"], "manual");
    assert_eq!(paused["pauseNote"], "vendor outage");
    let shown = stdout(&server.run(&board, &["routines", "get", &routine]).await);
    assert!(
        shown.contains("vendor outage") && shown.contains("manual"),
        "{shown}"
    );
    assert_ended(
        &server
            .run(
                &board,
                &["routines", "pause", &routine, "--until", "tomorrow"],
            )
            .await,
        2,
        "--until",
    );
}
