//! What a command prints: the API's JSON as it came (`--json`), or aligned tables and fields
//! for people, with times in the viewer's zone and schedules in plain language.

use chrono::{DateTime, Utc};
use nexus_shared::schedule::{CronExpression, TimeZone};
use serde_json::Value;

use super::Failure;

/// The zone times are shown in: `--tz`, else `TZ`, else the machine's.
enum Viewer {
    Local,
    Zone(TimeZone),
}

/// Where and how a command's result is printed.
pub(crate) struct Out {
    json: bool,
    viewer: Viewer,
}

impl Out {
    pub(crate) fn new(json: bool, zone: Option<&str>) -> Result<Self, Failure> {
        let named = zone
            .map(str::to_owned)
            .or_else(|| std::env::var("TZ").ok().filter(|z| !z.is_empty()));
        let viewer = match named {
            None => Viewer::Local,
            Some(name) => Viewer::Zone(TimeZone::parse(&name).map_err(|e| {
                Failure::Usage(format!(
                    "--tz: {name:?} {e} (an IANA name, e.g. Europe/Paris)"
                ))
            })?),
        };
        Ok(Self { json, viewer })
    }

    /// Whether the API's JSON is printed instead of tables.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    /// Prints `value` as JSON with `--json`, else what `human` makes of it.
    pub(crate) fn emit(&self, value: &Value, human: impl FnOnce(&Self, &Value)) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            human(self, value);
        }
    }

    /// An RFC 3339 instant of the API in the viewer's zone (`-` for none).
    pub(crate) fn time(&self, value: &Value) -> String {
        let Some(instant) = value
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
        else {
            return "-".to_owned();
        };
        match &self.viewer {
            Viewer::Local => instant
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string(),
            Viewer::Zone(zone) => {
                format!(
                    "{} {}",
                    zone.wall(instant).format("%Y-%m-%d %H:%M:%S"),
                    zone.name()
                )
            }
        }
    }
}

/// A string field, `-` when absent or null.
pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A trigger in plain language: "weekdays at 09:00, Europe/Amsterdam", "webhook (github)",
/// "api"; "(disabled)" when it is.
pub(crate) fn trigger(trigger: &Value) -> String {
    let described = match trigger["kind"].as_str() {
        Some("schedule") => {
            let expression = trigger["cronExpression"].as_str().unwrap_or_default();
            let plain = CronExpression::parse(expression)
                .map_or_else(|_| expression.to_owned(), |c| c.describe());
            let jitter = trigger["jitterSec"].as_i64().unwrap_or(0);
            let jitter = if jitter > 0 {
                format!(" (+ up to {jitter} s)")
            } else {
                String::new()
            };
            format!("{plain}, {}{jitter}", text(&trigger["timezone"]))
        }
        Some("webhook") => format!("webhook ({})", text(&trigger["signingMode"])),
        Some(kind) => kind.to_owned(),
        None => "-".to_owned(),
    };
    if trigger["enabled"] == Value::Bool(false) {
        format!("{described} (disabled)")
    } else {
        described
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Prints `label: value` lines, labels aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) {
    let width = pairs
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    for (label, value) in pairs {
        println!(
            "{:<width$}  {value}",
            format!("{label}:"),
            width = width + 1
        );
    }
}

/// The items of a list answer (`{"runs": [...]}`).
pub(crate) fn items<'v>(value: &'v Value, key: &str) -> &'v [Value] {
    value[key].as_array().map_or(&[], Vec::as_slice)
}

/// A routine: its settings, health, pause and triggers.
pub(crate) fn routine(out: &Out, routine: &Value) {
    let mut shown = vec![
        ("id", text(&routine["id"])),
        ("title", text(&routine["title"])),
        ("status", text(&routine["status"])),
        ("agent", text(&routine["assigneeAgentId"])),
        ("project", text(&routine["projectId"])),
        ("priority", text(&routine["priority"])),
        ("concurrency", text(&routine["concurrencyPolicy"])),
        (
            "catch-up",
            format!(
                "{} (cap {})",
                text(&routine["catchUpPolicy"]),
                text(&routine["catchUpCap"])
            ),
        ),
        ("next fire", out.time(&routine["nextRunAt"])),
        ("last fired", out.time(&routine["lastTriggeredAt"])),
        ("last run", last_run(out, &routine["lastRun"])),
        (
            "failures in a row",
            match routine["pauseAfterFailures"].as_i64() {
                Some(limit) => format!(
                    "{} (pauses at {limit})",
                    text(&routine["consecutiveFailures"])
                ),
                None => text(&routine["consecutiveFailures"]),
            },
        ),
        (
            "run timeout",
            routine["runTimeoutSec"]
                .as_i64()
                .map_or_else(|| "none".to_owned(), |s| format!("{s} s")),
        ),
    ];
    if !routine["pausedReason"].is_null() {
        shown.extend([
            ("paused", text(&routine["pausedReason"])),
            ("pause note", text(&routine["pauseNote"])),
            ("paused since", out.time(&routine["pausedAt"])),
            ("resumes", out.time(&routine["pausedUntil"])),
        ]);
    }
    fields(&shown);
    let rows: Vec<Vec<String>> = items(routine, "triggers")
        .iter()
        .map(|t| {
            vec![
                text(&t["id"]),
                trigger(t),
                out.time(&t["nextRunAt"]),
                text(&t["label"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        table(&["TRIGGER", "FIRES", "NEXT", "LABEL"], &rows);
    }
}

/// A routine's `lastRun`: its status (and reason) and when.
fn last_run(out: &Out, run: &Value) -> String {
    if run.is_null() {
        return "-".to_owned();
    }
    let reason = run["reason"]
        .as_str()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    format!(
        "{}{reason}, {}",
        text(&run["status"]),
        out.time(&run["triggeredAt"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_the_viewers_zone_and_triggers_in_plain_language() {
        let out = Out::new(false, Some("Europe/Amsterdam")).expect("zone");
        assert_eq!(
            out.time(&Value::from("2026-12-07T08:00:00Z")),
            "2026-12-07 09:00:00 Europe/Amsterdam"
        );
        assert_eq!(out.time(&Value::Null), "-");
        assert!(Out::new(false, Some("Mars/Olympus")).is_err());
        let schedule = serde_json::json!({
            "kind": "schedule", "cronExpression": "0 9 * * MON-FRI",
            "timezone": "Europe/Amsterdam", "jitterSec": 0, "enabled": true
        });
        assert_eq!(trigger(&schedule), "weekdays at 09:00, Europe/Amsterdam");
        let hook =
            serde_json::json!({ "kind": "webhook", "signingMode": "github", "enabled": false });
        assert_eq!(trigger(&hook), "webhook (github) (disabled)");
    }
}
