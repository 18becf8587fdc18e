//! `channels …`: where a company's operators are told that something went wrong.

use nexus_api::requests::{CreateChannel, UpdateChannel};
use nexus_shared::model::{ChannelKind, NotificationEvent};
use serde_json::Value;

use super::{choice, company, id_arg, number, optional, uuid};
use crate::client::{
    Args, Failure,
    http::Api,
    show::{Out, fields, items, table, text},
};

/// `--events a,b`: each one of the events (a usage error names them otherwise).
fn events(value: &str) -> Result<Vec<String>, Failure> {
    value
        .split(',')
        .map(|e| choice("--events", e.trim(), NotificationEvent::ALL).map(|e| e.to_string()))
        .collect()
}

/// `--routines ID,ID`.
fn routine_ids(value: &str) -> Result<Vec<uuid::Uuid>, Failure> {
    value
        .split(',')
        .map(|id| uuid("--routines", id.trim()))
        .collect()
}

fn listed(values: &Value) -> String {
    match values.as_array() {
        Some(values) => values.iter().map(text).collect::<Vec<_>>().join(","),
        None => "all".to_owned(),
    }
}

fn show_channel(_: &Out, channel: &Value) {
    fields(&[
        ("id", text(&channel["id"])),
        ("name", text(&channel["name"])),
        ("kind", text(&channel["kind"])),
        ("url", text(&channel["url"])),
        ("events", listed(&channel["events"])),
        ("routines", listed(&channel["routineIds"])),
        ("enabled", text(&channel["enabled"])),
    ]);
}

pub(super) async fn channels(
    action: &str,
    args: &Args,
    api: &Api,
    out: &Out,
) -> Result<(), Failure> {
    match action {
        "list" => {
            let company = company(args, api).await?;
            let listed_channels = api
                .get(&format!("/api/companies/{company}/notification-channels"))
                .await?;
            out.emit(&listed_channels, |_, all| {
                let rows: Vec<Vec<String>> = items(all, "channels")
                    .iter()
                    .map(|c| {
                        vec![
                            text(&c["id"]),
                            text(&c["name"]),
                            text(&c["kind"]),
                            listed(&c["events"]),
                            listed(&c["routineIds"]),
                            text(&c["enabled"]),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "NAME", "KIND", "EVENTS", "ROUTINES", "ENABLED"],
                    &rows,
                );
            });
            Ok(())
        }
        "create" => {
            let company = company(args, api).await?;
            let required = |flag: &str| {
                args.value(flag)
                    .ok_or_else(|| Failure::Usage(format!("{flag} is required")))
            };
            let request = CreateChannel {
                name: args.arg(0, "NAME")?.to_owned(),
                kind: choice("--kind", required("--kind")?, ChannelKind::ALL)?,
                url: required("--to")?.to_owned(),
                events: events(required("--events")?)?,
                routine_ids: optional(args, "--routines", routine_ids)?,
                enabled: args.switch("--disabled").then_some(false),
            };
            let created = api
                .post(
                    &format!("/api/companies/{company}/notification-channels"),
                    Some(&request),
                )
                .await?;
            out.emit(&created, |out, c| {
                show_channel(out, &c["channel"]);
                if !c["signingSecret"].is_null() {
                    fields(&[("signing secret (shown once)", text(&c["signingSecret"]))]);
                }
            });
            Ok(())
        }
        "update" => {
            let id = id_arg(args, 0, "CHANNEL")?;
            let enabled = match (args.switch("--enable"), args.switch("--disable")) {
                (true, true) => {
                    return Err(Failure::Usage(
                        "--enable and --disable exclude each other".to_owned(),
                    ));
                }
                (true, false) => Some(true),
                (false, true) => Some(false),
                (false, false) => None,
            };
            let request = UpdateChannel {
                name: args.value("--name").map(str::to_owned),
                url: args.value("--to").map(str::to_owned),
                events: optional(args, "--events", events)?,
                routine_ids: optional(args, "--routines", |v| {
                    if v == "all" {
                        Ok(None)
                    } else {
                        routine_ids(v).map(Some)
                    }
                })?,
                enabled,
            };
            let changed = api
                .patch(&format!("/api/notification-channels/{id}"), &request)
                .await?;
            out.emit(&changed, show_channel);
            Ok(())
        }
        "delete" => {
            let id = id_arg(args, 0, "CHANNEL")?;
            let deleted = api
                .delete(&format!("/api/notification-channels/{id}"))
                .await?;
            out.emit(&deleted, |_, _| println!("deleted {id}"));
            Ok(())
        }
        "test" => {
            let id = id_arg(args, 0, "CHANNEL")?;
            let sent = api
                .post::<()>(&format!("/api/notification-channels/{id}/test"), None)
                .await?;
            out.emit(&sent, |_, sent| {
                fields(&[("test notification", text(&sent["notificationId"]))]);
            });
            Ok(())
        }
        "deliveries" => {
            let id = id_arg(args, 0, "CHANNEL")?;
            let limit = optional(args, "--limit", |v| number("--limit", v))?.unwrap_or(20);
            let log = api
                .get(&format!(
                    "/api/notification-channels/{id}/deliveries?limit={limit}"
                ))
                .await?;
            out.emit(&log, |out, log| {
                let rows: Vec<Vec<String>> = items(log, "deliveries")
                    .iter()
                    .map(|d| {
                        vec![
                            text(&d["id"]),
                            text(&d["event"]),
                            text(&d["status"]),
                            text(&d["attempts"]),
                            match (d["lastStatusCode"].as_i64(), d["lastError"].as_str()) {
                                (_, Some(error)) => error.to_owned(),
                                (Some(code), None) => code.to_string(),
                                (None, None) => "-".to_owned(),
                            },
                            out.time(&d["createdAt"]),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "EVENT", "STATUS", "ATTEMPTS", "LAST", "CREATED"],
                    &rows,
                );
            });
            Ok(())
        }
        _ => Err(Failure::Usage(format!(
            "unknown command: channels {action}"
        ))),
    }
}
