//! `routines …`, `triggers …` and `runs …`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use nexus_api::requests::{
    BackfillRequest, CreateRoutine, CreateTrigger, ManualSource, RotateSecret, RunRequest,
    UpdateRoutine, UpdateTrigger,
};
use nexus_shared::model::{CatchUpPolicy, ConcurrencyPolicy, Priority, RoutineStatus, SigningMode};
use serde_json::Value;

use super::{choice, company, id_arg, next_page, number, optional, uuid};
use crate::client::{
    Args, Failure,
    http::Api,
    show::{self, Out, fields, items, table, text},
};

pub(super) async fn routines(
    action: &str,
    args: &Args,
    api: &Api,
    out: &Out,
) -> Result<(), Failure> {
    match action {
        "list" => list(args, api, out).await,
        "get" => {
            let id = id_arg(args, 0, "ROUTINE")?;
            let routine = api.get(&format!("/api/routines/{id}")).await?;
            out.emit(&routine, show::routine);
            Ok(())
        }
        "create" => create(args, api, out).await,
        "update" => {
            let id = id_arg(args, 0, "ROUTINE")?;
            let changes = UpdateRoutine {
                title: args.value("--title").map(str::to_owned),
                description: args.value("--description").map(|d| Some(d.to_owned())),
                assignee_agent_id: optional(args, "--agent", |v| uuid("--agent", v))?,
                project_id: optional(args, "--project", |v| uuid("--project", v))?,
                ..settings(args)?
            };
            change(api, out, id, &changes).await
        }
        "pause" | "resume" => {
            let id = id_arg(args, 0, "ROUTINE")?;
            let status = if action == "pause" {
                RoutineStatus::Paused
            } else {
                RoutineStatus::Active
            };
            let until = optional(args, "--until", |v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.to_utc())
                    .map_err(|_| Failure::Usage(format!("--until: {v:?} is not an RFC 3339 time")))
            })?;
            let changes = UpdateRoutine {
                status: Some(status),
                pause_note: args.value("--note").map(str::to_owned),
                paused_until: until,
                ..UpdateRoutine::default()
            };
            change(api, out, id, &changes).await
        }
        "archive" => {
            let id = id_arg(args, 0, "ROUTINE")?;
            if !args.switch("--yes") {
                return Err(Failure::Usage(
                    "archiving is for good (an archived routine never fires again): add --yes"
                        .to_owned(),
                ));
            }
            let changes = UpdateRoutine {
                status: Some(RoutineStatus::Archived),
                ..UpdateRoutine::default()
            };
            change(api, out, id, &changes).await
        }
        "upcoming" => {
            let id = id_arg(args, 0, "ROUTINE")?;
            let count = optional(args, "--count", |v| number("--count", v))?.unwrap_or(5);
            let fires = api
                .get(&format!("/api/routines/{id}/upcoming?count={count}"))
                .await?;
            out.emit(&fires, |out, fires| {
                let rows: Vec<Vec<String>> = items(fires, "fires")
                    .iter()
                    .map(|f| {
                        vec![
                            out.time(&f["at"]),
                            out.time(&f["scheduledFor"]),
                            text(&f["triggerId"]),
                        ]
                    })
                    .collect();
                table(&["AT", "SCHEDULED FOR", "TRIGGER"], &rows);
            });
            Ok(())
        }
        "run" => {
            let id = id_arg(args, 0, "ROUTINE")?;
            let payload = optional(args, "--payload", |p| {
                match serde_json::from_str::<Value>(p) {
                    Ok(Value::Object(map)) => Ok(map),
                    _ => Err(Failure::Usage(
                        "--payload must be a JSON object, e.g. '{\"reason\": \"demo\"}'".to_owned(),
                    )),
                }
            })?;
            let source = optional(args, "--source", |s| match s {
                "manual" => Ok(ManualSource::Manual),
                "api" => Ok(ManualSource::Api),
                other => Err(Failure::Usage(format!(
                    "--source: {other:?} is not one of manual, api"
                ))),
            })?;
            let request = RunRequest {
                source,
                payload,
                idempotency_key: args.value("--idempotency-key").map(str::to_owned),
                trigger_id: optional(args, "--trigger", |v| uuid("--trigger", v))?,
            };
            let run = api
                .post(&format!("/api/routines/{id}/run"), Some(&request))
                .await?;
            out.emit(&run, show_run);
            Ok(())
        }
        "backfill" => {
            let id = id_arg(args, 0, "ROUTINE")?;
            let instant = |flag: &str| -> Result<DateTime<Utc>, Failure> {
                let value = args
                    .value(flag)
                    .ok_or_else(|| Failure::Usage(format!("{flag} is required")))?;
                DateTime::parse_from_rfc3339(value)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        Failure::Usage(format!(
                            "{flag}: {value:?} is not an RFC 3339 time (2026-12-01T00:00:00Z)"
                        ))
                    })
            };
            let request = BackfillRequest {
                from: instant("--from")?,
                to: instant("--to")?,
                trigger_id: optional(args, "--trigger", |v| uuid("--trigger", v))?,
            };
            let made = api
                .post(&format!("/api/routines/{id}/backfill"), Some(&request))
                .await?;
            out.emit(&made, |out, made| {
                runs_table(out, items(made, "runs"));
                println!(
                    "{} runs created; {} fires already had one",
                    items(made, "runs").len(),
                    text(&made["existing"])
                );
            });
            Ok(())
        }
        _ => unreachable_action(action),
    }
}

fn unreachable_action(action: &str) -> Result<(), Failure> {
    Err(Failure::Usage(format!("unknown action {action:?}")))
}

/// The settings flags `create` and `update` share.
fn settings(args: &Args) -> Result<UpdateRoutine, Failure> {
    Ok(UpdateRoutine {
        priority: optional(args, "--priority", |v| {
            choice("--priority", v, Priority::ALL)
        })?,
        concurrency_policy: optional(args, "--concurrency", |v| {
            choice("--concurrency", v, ConcurrencyPolicy::ALL)
        })?,
        catch_up_policy: optional(args, "--catch-up", |v| {
            choice("--catch-up", v, CatchUpPolicy::ALL)
        })?,
        catch_up_cap: optional(args, "--catch-up-cap", |v| number("--catch-up-cap", v))?,
        run_timeout_sec: optional(args, "--run-timeout", |v| number("--run-timeout", v))?.map(Some),
        pause_after_failures: optional(args, "--pause-after-failures", |v| {
            number("--pause-after-failures", v)
        })?
        .map(Some),
        ..UpdateRoutine::default()
    })
}

async fn change(
    api: &Api,
    out: &Out,
    id: uuid::Uuid,
    changes: &UpdateRoutine,
) -> Result<(), Failure> {
    let routine = api.patch(&format!("/api/routines/{id}"), changes).await?;
    out.emit(&routine, show::routine);
    Ok(())
}

async fn list(args: &Args, api: &Api, out: &Out) -> Result<(), Failure> {
    let company = company(args, api).await?;
    let mut query = Vec::new();
    if let Some(status) = args.value("--status") {
        query.push(format!(
            "status={}",
            choice("--status", status, RoutineStatus::ALL)?
        ));
    }
    if let Some(agent) = args.value("--agent") {
        query.push(format!("assigneeAgentId={}", uuid("--agent", agent)?));
    }
    if let Some(project) = args.value("--project") {
        query.push(format!("projectId={}", uuid("--project", project)?));
    }
    if let Some(limit) = args.value("--limit") {
        query.push(format!("limit={}", number("--limit", limit)?));
    }
    if let Some(before) = args.value("--before") {
        query.push(format!("before={}", uuid("--before", before)?));
    }
    let listed = api
        .get(&format!(
            "/api/companies/{company}/routines?{}",
            query.join("&")
        ))
        .await?;
    out.emit(&listed, |out, listed| {
        let rows: Vec<Vec<String>> = items(listed, "routines")
            .iter()
            .map(|r| {
                let triggers: Vec<String> =
                    items(r, "triggers").iter().map(show::trigger).collect();
                vec![
                    text(&r["id"]),
                    text(&r["title"]),
                    text(&r["status"]),
                    if triggers.is_empty() {
                        "-".to_owned()
                    } else {
                        triggers.join("; ")
                    },
                    out.time(&r["nextRunAt"]),
                ]
            })
            .collect();
        table(&["ID", "TITLE", "STATUS", "TRIGGERS", "NEXT FIRE"], &rows);
        next_page(listed);
    });
    Ok(())
}

async fn create(args: &Args, api: &Api, out: &Out) -> Result<(), Failure> {
    let company = company(args, api).await?;
    let required = |flag: &str| {
        args.value(flag)
            .ok_or_else(|| Failure::Usage(format!("{flag} is required")))
            .and_then(|v| uuid(flag, v))
    };
    let settings = settings(args)?;
    let request = CreateRoutine {
        title: args.arg(0, "TITLE")?.to_owned(),
        description: args.value("--description").map(str::to_owned),
        assignee_agent_id: required("--agent")?,
        project_id: required("--project")?,
        goal_id: None,
        parent_issue_id: None,
        priority: settings.priority,
        status: args.switch("--paused").then_some(RoutineStatus::Paused),
        concurrency_policy: settings.concurrency_policy,
        catch_up_policy: settings.catch_up_policy,
        catch_up_cap: settings.catch_up_cap,
        run_timeout_sec: settings.run_timeout_sec.flatten(),
        pause_after_failures: settings.pause_after_failures.flatten(),
        triggers: None,
    };
    let routine = api
        .post(
            &format!("/api/companies/{company}/routines"),
            Some(&request),
        )
        .await?;
    out.emit(&routine, show::routine);
    Ok(())
}

pub(super) async fn triggers(
    action: &str,
    args: &Args,
    api: &Api,
    out: &Out,
) -> Result<(), Failure> {
    let seconds = |flag: &str| optional(args, flag, |v| number(flag, v));
    let mode = || {
        optional(args, "--signing-mode", |v| {
            choice("--signing-mode", v, SigningMode::ALL)
        })
    };
    match action {
        "add" => {
            let routine = id_arg(args, 0, "ROUTINE")?;
            let label = args.value("--label").map(str::to_owned);
            let enabled = args.switch("--disabled").then_some(false);
            let request = match args.arg(1, "KIND (schedule, webhook or api)")? {
                "schedule" => CreateTrigger::Schedule {
                    label,
                    enabled,
                    cron_expression: args
                        .value("--cron")
                        .ok_or_else(|| Failure::Usage("--cron is required".to_owned()))?
                        .to_owned(),
                    timezone: args.value("--timezone").map(str::to_owned),
                    jitter_sec: seconds("--jitter")?,
                },
                "webhook" => CreateTrigger::Webhook {
                    label,
                    enabled,
                    signing_mode: mode()?,
                    replay_window_sec: seconds("--replay-window")?,
                    webhook_secret: args.value("--secret").map(str::to_owned),
                },
                "api" => CreateTrigger::Api { label, enabled },
                other => {
                    return Err(Failure::Usage(format!(
                        "{other:?} is not a trigger kind: schedule, webhook or api"
                    )));
                }
            };
            let created = api
                .post(&format!("/api/routines/{routine}/triggers"), Some(&request))
                .await?;
            out.emit(&created, show_created_trigger);
            Ok(())
        }
        "update" => {
            let trigger = id_arg(args, 0, "TRIGGER")?;
            let enabled = match (args.switch("--enable"), args.switch("--disable")) {
                (true, true) => {
                    return Err(Failure::Usage("--enable and --disable together".to_owned()));
                }
                (true, false) => Some(true),
                (false, true) => Some(false),
                (false, false) => None,
            };
            let changes = UpdateTrigger {
                label: args.value("--label").map(str::to_owned),
                enabled,
                cron_expression: args.value("--cron").map(str::to_owned),
                timezone: args.value("--timezone").map(str::to_owned),
                jitter_sec: seconds("--jitter")?,
                signing_mode: mode()?,
                replay_window_sec: seconds("--replay-window")?,
                ..UpdateTrigger::default()
            };
            let updated = api
                .patch(&format!("/api/routine-triggers/{trigger}"), &changes)
                .await?;
            out.emit(&updated, |out, t| {
                fields(&[
                    ("id", text(&t["id"])),
                    ("fires", show::trigger(t)),
                    ("next", out.time(&t["nextRunAt"])),
                ]);
            });
            Ok(())
        }
        "delete" => {
            let trigger = id_arg(args, 0, "TRIGGER")?;
            api.delete(&format!("/api/routine-triggers/{trigger}"))
                .await?;
            if !out.json() {
                println!("deleted trigger {trigger}");
            }
            Ok(())
        }
        "rotate" => {
            let trigger = id_arg(args, 0, "TRIGGER")?;
            let request = RotateSecret {
                previous_secret_valid_sec: seconds("--grace")?,
                force: args.switch("--force").then_some(true),
                webhook_secret: args.value("--secret").map(str::to_owned),
            };
            let rotated = api
                .post(
                    &format!("/api/routine-triggers/{trigger}/rotate-secret"),
                    Some(&request),
                )
                .await?;
            out.emit(&rotated, show_created_trigger);
            Ok(())
        }
        _ => unreachable_action(action),
    }
}

/// A trigger just created or rotated, with the secret material shown this once.
fn show_created_trigger(out: &Out, created: &Value) {
    let trigger = &created["trigger"];
    let mut lines = vec![
        ("id", text(&trigger["id"])),
        ("fires", show::trigger(trigger)),
        ("next", out.time(&trigger["nextRunAt"])),
    ];
    let material = &created["secretMaterial"];
    if !material.is_null() {
        lines.push(("webhook url", text(&material["webhookUrl"])));
        lines.push(("webhook secret", text(&material["webhookSecret"])));
        if !trigger["previousSecretExpiresAt"].is_null() {
            lines.push((
                "previous secret until",
                out.time(&trigger["previousSecretExpiresAt"]),
            ));
        }
    }
    fields(&lines);
    if !material.is_null() {
        println!("(the secret is shown only now)");
    }
}

pub(super) async fn runs(action: &str, args: &Args, api: &Api, out: &Out) -> Result<(), Failure> {
    match action {
        "list" => {
            let routine = id_arg(args, 0, "ROUTINE")?;
            let limit = optional(args, "--limit", |v| number("--limit", v))?.unwrap_or(20);
            let before = optional(args, "--before", |v| uuid("--before", v))?
                .map(|b| format!("&before={b}"))
                .unwrap_or_default();
            let listed = api
                .get(&format!(
                    "/api/routines/{routine}/runs?limit={limit}{before}"
                ))
                .await?;
            out.emit(&listed, |out, listed| {
                runs_table(out, items(listed, "runs"));
                next_page(listed);
            });
            Ok(())
        }
        "get" => {
            let run = id_arg(args, 0, "RUN")?;
            let found = api.get(&format!("/api/routine-runs/{run}")).await?;
            out.emit(&found, show_run);
            Ok(())
        }
        "watch" => {
            let run = id_arg(args, 0, "RUN")?;
            let timeout = optional(args, "--timeout", |v| number("--timeout", v))?.unwrap_or(3600);
            watch(api, out, run, timeout).await
        }
        _ => unreachable_action(action),
    }
}

/// Run statuses that do not change any more.
const SETTLED: [&str; 4] = ["completed", "failed", "skipped", "coalesced"];

/// Reads the run until it settles, printing each new status (and, with `--json`, the settled
/// run only).
async fn watch(api: &Api, out: &Out, run: uuid::Uuid, timeout: i64) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let limit = Duration::from_secs(u64::try_from(timeout.max(1)).unwrap_or(1));
    let mut seen = String::new();
    loop {
        let found = api.get(&format!("/api/routine-runs/{run}")).await?;
        let status = text(&found["status"]);
        if status != seen && !out.json() {
            let reason = found["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            println!(
                "{}  {status}{reason}",
                out.time(&Value::from(Utc::now().to_rfc3339()))
            );
        }
        if SETTLED.contains(&status.as_str()) {
            if out.json() {
                out.emit(&found, |_, _| {});
            }
            return Ok(());
        }
        seen = status;
        if started.elapsed() >= limit {
            return Err(Failure::Server(format!(
                "error: the run is still {seen} after {timeout} s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn runs_table(out: &Out, runs: &[Value]) {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                text(&r["id"]),
                text(&r["source"]),
                text(&r["status"]),
                text(&r["reason"]),
                out.time(&r["triggeredAt"]),
                text(&r["linkedIssueId"]),
            ]
        })
        .collect();
    table(
        &["RUN", "SOURCE", "STATUS", "REASON", "TRIGGERED", "ISSUE"],
        &rows,
    );
}

fn show_run(out: &Out, run: &Value) {
    fields(&[
        ("id", text(&run["id"])),
        ("routine", text(&run["routineId"])),
        ("source", text(&run["source"])),
        ("status", text(&run["status"])),
        ("reason", text(&run["reason"])),
        ("triggered", out.time(&run["triggeredAt"])),
        ("scheduled for", out.time(&run["scheduledFor"])),
        ("completed", out.time(&run["completedAt"])),
        ("issue", text(&run["linkedIssueId"])),
        ("heartbeat run", text(&run["heartbeatRunId"])),
        ("failure", text(&run["failureReason"])),
    ]);
}
