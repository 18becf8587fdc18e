//! `companies …`, `agents …`, `projects …`, `issues …`, `heartbeats …`, `activity list`.

use nexus_api::requests::{
    CreateAgent, CreateCompany, CreateIssue, CreateProject, FinishBody, UpdateIssue, WakeupRequest,
};
use nexus_shared::model::{FinishStatus, HeartbeatStatus, IssueStatus, Priority};
use serde_json::Value;

use super::{choice, company, id_arg, number, optional, uuid};
use crate::client::{
    Args, Failure,
    http::Api,
    show::{Out, fields, items, table, text},
};

pub(super) async fn execute(
    group: &str,
    action: &str,
    args: &Args,
    api: &Api,
    out: &Out,
) -> Result<(), Failure> {
    match (group, action) {
        ("companies", "list") => {
            let listed = api.get("/api/companies").await?;
            out.emit(&listed, |out, listed| {
                let rows: Vec<Vec<String>> = items(listed, "companies")
                    .iter()
                    .map(|c| vec![text(&c["id"]), text(&c["name"]), out.time(&c["createdAt"])])
                    .collect();
                table(&["ID", "NAME", "CREATED"], &rows);
            });
            Ok(())
        }
        ("companies", "create") => {
            let request = CreateCompany {
                name: args.arg(0, "NAME")?.to_owned(),
            };
            let created = api.post("/api/companies", Some(&request)).await?;
            out.emit(&created, |_, c| {
                fields(&[("id", text(&c["id"])), ("name", text(&c["name"]))]);
            });
            Ok(())
        }
        ("agents", "list") => {
            let company = company(args, api).await?;
            let listed = api.get(&format!("/api/companies/{company}/agents")).await?;
            out.emit(&listed, |_, listed| {
                let rows: Vec<Vec<String>> = items(listed, "agents")
                    .iter()
                    .map(|a| {
                        vec![
                            text(&a["id"]),
                            text(&a["name"]),
                            text(&a["status"]),
                            wakeup(&a["wakeup"]),
                        ]
                    })
                    .collect();
                table(&["ID", "NAME", "STATUS", "WAKE-UP"], &rows);
            });
            Ok(())
        }
        ("agents", "create") => {
            let company = company(args, api).await?;
            let request = CreateAgent {
                name: args.arg(0, "NAME")?.to_owned(),
                wakeup: args.value("--wakeup-url").map(|url| WakeupRequest::Http {
                    url: url.to_owned(),
                }),
            };
            let created = api
                .post(&format!("/api/companies/{company}/agents"), Some(&request))
                .await?;
            out.emit(&created, |_, c| {
                fields(&[
                    ("id", text(&c["agent"]["id"])),
                    ("name", text(&c["agent"]["name"])),
                    ("api key", text(&c["apiKey"])),
                    ("wake-up secret", text(&c["wakeupSecret"])),
                ]);
                println!("(the key and secret are shown only now)");
            });
            Ok(())
        }
        ("agents", "me") => {
            let me = api.get("/api/agents/me").await?;
            out.emit(&me, |_, a| {
                fields(&[
                    ("id", text(&a["id"])),
                    ("name", text(&a["name"])),
                    ("company", text(&a["companyId"])),
                    ("status", text(&a["status"])),
                    ("wake-up", wakeup(&a["wakeup"])),
                ]);
            });
            Ok(())
        }
        ("projects", "list") => {
            let company = company(args, api).await?;
            let listed = api
                .get(&format!("/api/companies/{company}/projects"))
                .await?;
            out.emit(&listed, |_, listed| {
                let rows: Vec<Vec<String>> = items(listed, "projects")
                    .iter()
                    .map(|p| vec![text(&p["id"]), text(&p["name"])])
                    .collect();
                table(&["ID", "NAME"], &rows);
            });
            Ok(())
        }
        ("projects", "create") => {
            let company = company(args, api).await?;
            let request = CreateProject {
                name: args.arg(0, "NAME")?.to_owned(),
            };
            let created = api
                .post(
                    &format!("/api/companies/{company}/projects"),
                    Some(&request),
                )
                .await?;
            out.emit(&created, |_, p| {
                fields(&[("id", text(&p["id"])), ("name", text(&p["name"]))]);
            });
            Ok(())
        }
        ("issues", action) => issues(action, args, api, out).await,
        ("heartbeats", action) => heartbeats(action, args, api, out).await,
        ("activity", "list") => {
            let company = company(args, api).await?;
            let limit = optional(args, "--limit", |v| number("--limit", v))?.unwrap_or(20);
            let listed = api
                .get(&format!("/api/companies/{company}/activity?limit={limit}"))
                .await?;
            out.emit(&listed, |out, listed| {
                let rows: Vec<Vec<String>> = items(listed, "activity")
                    .iter()
                    .map(|e| {
                        vec![
                            out.time(&e["createdAt"]),
                            text(&e["action"]),
                            text(&e["entityType"]),
                            text(&e["entityId"]),
                            actor(&e["actor"]),
                        ]
                    })
                    .collect();
                table(&["AT", "ACTION", "ENTITY", "ID", "BY"], &rows);
            });
            Ok(())
        }
        _ => Err(Failure::Usage(format!("unknown command {group} {action}"))),
    }
}

/// An agent's wake-up: `poll`, or the URL it is POSTed to.
fn wakeup(value: &Value) -> String {
    match value["kind"].as_str() {
        Some("http") => format!("http {}", text(&value["url"])),
        Some(kind) => kind.to_owned(),
        None => "-".to_owned(),
    }
}

/// Who did something: `board`, `system`, or `agent <id>`.
fn actor(value: &Value) -> String {
    match (value["type"].as_str(), value["id"].as_str()) {
        (Some(kind), Some(id)) => format!("{kind} {id}"),
        (Some(kind), None) => kind.to_owned(),
        _ => text(value),
    }
}

async fn issues(action: &str, args: &Args, api: &Api, out: &Out) -> Result<(), Failure> {
    match action {
        "create" => {
            let company = company(args, api).await?;
            let request = CreateIssue {
                title: args.arg(0, "TITLE")?.to_owned(),
                description: args.value("--description").map(str::to_owned),
                project_id: optional(args, "--project", |v| uuid("--project", v))?,
                goal_id: None,
                parent_issue_id: None,
                assignee_agent_id: optional(args, "--agent", |v| uuid("--agent", v))?,
                priority: optional(args, "--priority", |v| {
                    choice("--priority", v, Priority::ALL)
                })?,
            };
            let created = api
                .post(&format!("/api/companies/{company}/issues"), Some(&request))
                .await?;
            out.emit(&created, show_issue);
            Ok(())
        }
        "get" => {
            let issue = id_arg(args, 0, "ISSUE")?;
            let found = api.get(&format!("/api/issues/{issue}")).await?;
            out.emit(&found, |out, issue| {
                show_issue(out, issue);
                let rows: Vec<Vec<String>> = items(issue, "events")
                    .iter()
                    .map(|e| {
                        vec![
                            out.time(&e["createdAt"]),
                            text(&e["kind"]),
                            actor(&e["actor"]),
                            text(&e["details"]),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    println!();
                    table(&["AT", "EVENT", "BY", "DETAILS"], &rows);
                }
            });
            Ok(())
        }
        "update" => {
            let issue = id_arg(args, 0, "ISSUE")?;
            let status = args
                .value("--status")
                .ok_or_else(|| Failure::Usage("--status is required".to_owned()))?;
            let request = UpdateIssue {
                status: choice("--status", status, IssueStatus::ALL)?,
            };
            let updated = api.patch(&format!("/api/issues/{issue}"), &request).await?;
            out.emit(&updated, show_issue);
            Ok(())
        }
        _ => Err(Failure::Usage(format!("unknown command issues {action}"))),
    }
}

fn show_issue(out: &Out, issue: &Value) {
    fields(&[
        ("id", text(&issue["id"])),
        ("title", text(&issue["title"])),
        ("status", text(&issue["status"])),
        ("agent", text(&issue["assigneeAgentId"])),
        ("routine", text(&issue["routineId"])),
        ("created", out.time(&issue["createdAt"])),
    ]);
}

async fn heartbeats(action: &str, args: &Args, api: &Api, out: &Out) -> Result<(), Failure> {
    let show = |out: &Out, run: &Value| {
        fields(&[
            ("id", text(&run["id"])),
            ("status", text(&run["status"])),
            ("issue", text(&run["issueId"])),
            ("routine run", text(&run["routineRunId"])),
            ("created", out.time(&run["createdAt"])),
            ("finished", out.time(&run["finishedAt"])),
        ]);
    };
    match action {
        "list" => {
            let query = match args.value("--status") {
                Some(status) => format!(
                    "?status={}",
                    choice("--status", status, HeartbeatStatus::ALL)?
                ),
                None => String::new(),
            };
            let listed = api
                .get(&format!("/api/agents/me/heartbeat-runs{query}"))
                .await?;
            out.emit(&listed, |out, listed| {
                let rows: Vec<Vec<String>> = items(listed, "heartbeatRuns")
                    .iter()
                    .map(|h| {
                        vec![
                            text(&h["id"]),
                            text(&h["status"]),
                            text(&h["issueId"]),
                            out.time(&h["createdAt"]),
                        ]
                    })
                    .collect();
                table(&["ID", "STATUS", "ISSUE", "CREATED"], &rows);
            });
            Ok(())
        }
        "claim" => {
            let run = id_arg(args, 0, "HEARTBEAT_RUN")?;
            let claimed = api
                .post::<()>(&format!("/api/heartbeat-runs/{run}/claim"), None)
                .await?;
            out.emit(&claimed, show);
            Ok(())
        }
        "finish" => {
            let run = id_arg(args, 0, "HEARTBEAT_RUN")?;
            let status = args
                .value("--status")
                .ok_or_else(|| Failure::Usage("--status is required".to_owned()))?;
            let request = FinishBody {
                status: choice("--status", status, FinishStatus::ALL)?,
                summary: args.value("--summary").map(str::to_owned),
            };
            let finished = api
                .post(&format!("/api/heartbeat-runs/{run}/finish"), Some(&request))
                .await?;
            out.emit(&finished, show);
            Ok(())
        }
        _ => Err(Failure::Usage(format!(
            "unknown command heartbeats {action}"
        ))),
    }
}
