//! The client commands: what each is called, takes and does.

use std::str::FromStr;

use serde_json::Value;

use super::{Args, Failure, Spec, http::Api, show::Out};

mod catalog;
mod channels;
mod routines;

/// Every client command, in the order `nexus --help` lists them.
pub(crate) const SPECS: &[Spec] = &[
    Spec {
        words: "companies list",
        arguments: "",
        about: "List companies (the board sees all; an agent its own).",
        example: "nexus companies list",
        flags: &[],
    },
    Spec {
        words: "companies create",
        arguments: "NAME",
        about: "Create a company (board).",
        example: "nexus companies create Acme --json",
        flags: &[],
    },
    Spec {
        words: "agents list",
        arguments: "[--company ID]",
        about: "List a company's agents.",
        example: "nexus agents list --company 0193…",
        flags: &[("--company", true)],
    },
    Spec {
        words: "agents create",
        arguments: "NAME [--company ID] [--wakeup-url URL]",
        about: "Create an agent (board); its API key is printed once.\nWith --wakeup-url, every new heartbeat run is POSTed there, signed.",
        example: "nexus agents create Ada --json",
        flags: &[("--company", true), ("--wakeup-url", true)],
    },
    Spec {
        words: "agents me",
        arguments: "",
        about: "The calling agent (agent key).",
        example: "NEXUS_TOKEN=$AGENT_KEY nexus agents me",
        flags: &[],
    },
    Spec {
        words: "projects list",
        arguments: "[--company ID]",
        about: "List a company's projects.",
        example: "nexus projects list",
        flags: &[("--company", true)],
    },
    Spec {
        words: "projects create",
        arguments: "NAME [--company ID]",
        about: "Create a project (board).",
        example: "nexus projects create Operations --json",
        flags: &[("--company", true)],
    },
    Spec {
        words: "routines list",
        arguments: "[--company ID] [--status S] [--agent ID] [--project ID] [--limit N] [--before ID]",
        about: "List a company's routines: status, triggers in plain language, next fire.\nA full page ends with the --before value of the next.",
        example: "nexus routines list --status active",
        flags: &[
            ("--company", true),
            ("--status", true),
            ("--agent", true),
            ("--project", true),
            ("--limit", true),
            ("--before", true),
        ],
    },
    Spec {
        words: "routines get",
        arguments: "ROUTINE",
        about: "Show a routine with its triggers.",
        example: "nexus routines get 0193…",
        flags: &[],
    },
    Spec {
        words: "routines create",
        arguments: "TITLE --agent ID --project ID [--company ID] [--description D] [--priority P]\n      [--concurrency POLICY] [--catch-up POLICY] [--catch-up-cap N] [--run-timeout SECONDS]\n      [--pause-after-failures N] [--paused]",
        about: "Create a routine; add triggers with `nexus triggers add`.",
        example: "nexus routines create 'Daily report {{date}}' --agent $AGENT --project $PROJECT",
        flags: &[
            ("--company", true),
            ("--agent", true),
            ("--project", true),
            ("--description", true),
            ("--priority", true),
            ("--concurrency", true),
            ("--catch-up", true),
            ("--catch-up-cap", true),
            ("--run-timeout", true),
            ("--pause-after-failures", true),
            ("--paused", false),
        ],
    },
    Spec {
        words: "routines update",
        arguments: "ROUTINE [--title T] [--description D] [--agent ID] [--project ID] [--priority P]\n      [--concurrency POLICY] [--catch-up POLICY] [--catch-up-cap N] [--run-timeout SECONDS]\n      [--pause-after-failures N]",
        about: "Change a routine's settings.",
        example: "nexus routines update 0193… --concurrency always_enqueue",
        flags: &[
            ("--title", true),
            ("--description", true),
            ("--agent", true),
            ("--project", true),
            ("--priority", true),
            ("--concurrency", true),
            ("--catch-up", true),
            ("--catch-up-cap", true),
            ("--run-timeout", true),
            ("--pause-after-failures", true),
        ],
    },
    Spec {
        words: "routines pause",
        arguments: "ROUTINE [--note TEXT] [--until TIME]",
        about: "Pause a routine: its schedules stop firing, webhook calls are refused; with\n      --until (RFC 3339) it resumes by itself then.",
        example: "nexus routines pause 0193… --note 'vendor outage' --until 2026-12-05T09:00:00Z",
        flags: &[("--note", true), ("--until", true)],
    },
    Spec {
        words: "routines resume",
        arguments: "ROUTINE",
        about: "Resume a paused routine (fires missed while paused are not made up).",
        example: "nexus routines resume 0193…",
        flags: &[],
    },
    Spec {
        words: "routines archive",
        arguments: "ROUTINE --yes",
        about: "Archive a routine for good (it never fires again); --yes confirms.",
        example: "nexus routines archive 0193… --yes",
        flags: &[("--yes", false)],
    },
    Spec {
        words: "routines upcoming",
        arguments: "ROUTINE [--count N]",
        about: "The next fires of a routine's schedules.",
        example: "nexus routines upcoming 0193… --count 5",
        flags: &[("--count", true)],
    },
    Spec {
        words: "routines run",
        arguments: "ROUTINE [--payload JSON] [--idempotency-key KEY] [--trigger ID] [--source manual|api]",
        about: "Run a routine now; prints the run (follow it with `nexus runs watch`).",
        example: "nexus routines run 0193… --payload '{\"reason\": \"demo\"}'",
        flags: &[
            ("--payload", true),
            ("--idempotency-key", true),
            ("--trigger", true),
            ("--source", true),
        ],
    },
    Spec {
        words: "routines backfill",
        arguments: "ROUTINE --from TIME --to TIME [--trigger ID]",
        about: "Create the runs a routine's schedules would have made in [from, to) (RFC 3339).",
        example: "nexus routines backfill 0193… --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z",
        flags: &[("--from", true), ("--to", true), ("--trigger", true)],
    },
    Spec {
        words: "triggers add",
        arguments: "ROUTINE schedule --cron EXPR [--timezone ZONE] [--jitter S]\n    | ROUTINE webhook [--signing-mode MODE] [--replay-window S] [--secret S]\n    | ROUTINE api;  every kind: [--label L] [--disabled]",
        about: "Add a trigger; a webhook trigger's URL and secret are printed once.",
        example: "nexus triggers add 0193… schedule --cron '0 9 * * MON-FRI' --timezone Europe/Amsterdam",
        flags: &[
            ("--cron", true),
            ("--timezone", true),
            ("--jitter", true),
            ("--signing-mode", true),
            ("--replay-window", true),
            ("--secret", true),
            ("--label", true),
            ("--disabled", false),
        ],
    },
    Spec {
        words: "triggers update",
        arguments: "TRIGGER [--label L] [--enable | --disable] [--cron EXPR] [--timezone ZONE]\n      [--jitter S] [--signing-mode MODE] [--replay-window S]",
        about: "Change a trigger (fields of its own kind only).",
        example: "nexus triggers update 0193… --disable",
        flags: &[
            ("--label", true),
            ("--enable", false),
            ("--disable", false),
            ("--cron", true),
            ("--timezone", true),
            ("--jitter", true),
            ("--signing-mode", true),
            ("--replay-window", true),
        ],
    },
    Spec {
        words: "triggers delete",
        arguments: "TRIGGER",
        about: "Delete a trigger and its secret.",
        example: "nexus triggers delete 0193…",
        flags: &[],
    },
    Spec {
        words: "triggers rotate",
        arguments: "TRIGGER [--grace S] [--force] [--secret S]",
        about: "Replace a webhook trigger's secret; the old one keeps working for --grace seconds.\n--secret sets the sender's own secret (stripe and slack modes).",
        example: "nexus triggers rotate 0193… --grace 86400",
        flags: &[("--grace", true), ("--force", false), ("--secret", true)],
    },
    Spec {
        words: "runs list",
        arguments: "ROUTINE [--limit N] [--before RUN]",
        about: "A routine's runs, newest first.\nA full page ends with the --before value of the next.",
        example: "nexus runs list 0193… --limit 20",
        flags: &[("--limit", true), ("--before", true)],
    },
    Spec {
        words: "runs get",
        arguments: "RUN",
        about: "Show a run.",
        example: "nexus runs get 0193…",
        flags: &[],
    },
    Spec {
        words: "runs watch",
        arguments: "RUN [--timeout S]",
        about: "Follow a run until it settles (completed, failed, skipped or coalesced),\nprinting each status it passes through; exit 5 if it has not settled after --timeout (default 3600).",
        example: "nexus runs watch $(nexus routines run 0193… --json | jq -r .id)",
        flags: &[("--timeout", true)],
    },
    Spec {
        words: "heartbeats list",
        arguments: "[--status S]",
        about: "The calling agent's heartbeat runs (agent key).",
        example: "NEXUS_TOKEN=$AGENT_KEY nexus heartbeats list --status queued",
        flags: &[("--status", true)],
    },
    Spec {
        words: "heartbeats claim",
        arguments: "HEARTBEAT_RUN",
        about: "Claim a queued heartbeat run (agent key).",
        example: "nexus heartbeats claim 0193…",
        flags: &[],
    },
    Spec {
        words: "heartbeats finish",
        arguments: "HEARTBEAT_RUN --status succeeded|failed [--summary S]",
        about: "Finish a running heartbeat run (agent key).",
        example: "nexus heartbeats finish 0193… --status succeeded --summary 'rotated'",
        flags: &[("--status", true), ("--summary", true)],
    },
    Spec {
        words: "issues create",
        arguments: "TITLE [--company ID] [--project ID] [--agent ID] [--description D] [--priority P]",
        about: "Create an issue; assigned to an agent, it wakes the agent.",
        example: "nexus issues create 'Rotate the logs' --agent $AGENT --project $PROJECT",
        flags: &[
            ("--company", true),
            ("--project", true),
            ("--agent", true),
            ("--description", true),
            ("--priority", true),
        ],
    },
    Spec {
        words: "issues get",
        arguments: "ISSUE",
        about: "Show an issue with its events.",
        example: "nexus issues get 0193…",
        flags: &[],
    },
    Spec {
        words: "issues update",
        arguments: "ISSUE --status STATUS",
        about: "Change an issue's status (done or cancelled settles its routine run).",
        example: "nexus issues update 0193… --status done",
        flags: &[("--status", true)],
    },
    Spec {
        words: "channels list",
        arguments: "[--company ID]",
        about: "List a company's notification channels (board).",
        example: "nexus channels list",
        flags: &[("--company", true)],
    },
    Spec {
        words: "channels create",
        arguments: "NAME --kind webhook|slack --to URL --events E[,E…] [--routines ID[,ID…]]\n      [--disabled] [--company ID]",
        about: "Create a notification channel (board) posting to --to; a webhook channel's\n      signing secret is printed once. Events: run.failed, run.missed,\n      routine.paused_on_failures, routine.recovered, wakeup.failed, test.",
        example: "nexus channels create 'ops room' --kind slack --to $SLACK_WEBHOOK_URL --events run.failed,routine.paused_on_failures",
        flags: &[
            ("--company", true),
            ("--kind", true),
            ("--to", true),
            ("--events", true),
            ("--routines", true),
            ("--disabled", false),
        ],
    },
    Spec {
        words: "channels update",
        arguments: "CHANNEL [--name N] [--to URL] [--events E[,E…]] [--routines ID[,ID…]|all]\n      [--enable|--disable]",
        about: "Change a notification channel (board).",
        example: "nexus channels update 0193… --routines all --enable",
        flags: &[
            ("--name", true),
            ("--to", true),
            ("--events", true),
            ("--routines", true),
            ("--enable", false),
            ("--disable", false),
        ],
    },
    Spec {
        words: "channels delete",
        arguments: "CHANNEL",
        about: "Delete a notification channel; what it has not delivered yet is dropped.",
        example: "nexus channels delete 0193…",
        flags: &[],
    },
    Spec {
        words: "channels test",
        arguments: "CHANNEL",
        about: "Send the channel one `test` notification.",
        example: "nexus channels test 0193…",
        flags: &[],
    },
    Spec {
        words: "channels deliveries",
        arguments: "CHANNEL [--limit N]",
        about: "What the channel was sent and how each delivery went, newest first.",
        example: "nexus channels deliveries 0193… --limit 5",
        flags: &[("--limit", true)],
    },
    Spec {
        words: "activity list",
        arguments: "[--company ID] [--limit N]",
        about: "A company's audit log, newest first.",
        example: "nexus activity list --limit 5",
        flags: &[("--company", true), ("--limit", true)],
    },
];

/// Runs the command `spec` names.
pub(super) async fn execute(spec: &Spec, args: &Args, api: &Api, out: &Out) -> Result<(), Failure> {
    let (group, action) = spec.words.split_once(' ').unwrap_or_default();
    match group {
        "routines" => routines::routines(action, args, api, out).await,
        "triggers" => routines::triggers(action, args, api, out).await,
        "runs" => routines::runs(action, args, api, out).await,
        "channels" => channels::channels(action, args, api, out).await,
        _ => catalog::execute(group, action, args, api, out).await,
    }
}

/// A value of a closed set (`--status`, `--priority`…), with the allowed values when it is
/// not one of them.
pub(super) fn choice<T: FromStr + std::fmt::Display>(
    flag: &str,
    value: &str,
    all: &[T],
) -> Result<T, Failure> {
    value.parse().map_err(|_| {
        let allowed: Vec<String> = all.iter().map(ToString::to_string).collect();
        Failure::Usage(format!(
            "{flag}: {value:?} is not one of {}",
            allowed.join(", ")
        ))
    })
}

/// An optional flag parsed by `parse`.
pub(super) fn optional<T>(
    args: &Args,
    flag: &str,
    parse: impl FnOnce(&str) -> Result<T, Failure>,
) -> Result<Option<T>, Failure> {
    args.value(flag).map(parse).transpose()
}

/// A whole number.
pub(super) fn number(flag: &str, value: &str) -> Result<i64, Failure> {
    value
        .parse()
        .map_err(|_| Failure::Usage(format!("{flag}: {value:?} is not a whole number")))
}

/// A UUID.
pub(super) fn uuid(flag: &str, value: &str) -> Result<uuid::Uuid, Failure> {
    value
        .parse()
        .map_err(|_| Failure::Usage(format!("{flag}: {value:?} is not an id (a UUID)")))
}

/// The positional id `index`, checked to be a UUID (a path segment, so nothing else is sent).
pub(super) fn id_arg(args: &Args, index: usize, name: &str) -> Result<uuid::Uuid, Failure> {
    uuid(name, args.arg(index, name)?)
}

/// The company a command is about: `--company`, else `NEXUS_COMPANY`, else the only company
/// the token sees.
pub(super) async fn company(args: &Args, api: &Api) -> Result<uuid::Uuid, Failure> {
    if let Some(id) = args.value("--company").map(str::to_owned).or_else(|| {
        std::env::var("NEXUS_COMPANY")
            .ok()
            .filter(|c| !c.is_empty())
    }) {
        return uuid("--company", &id);
    }
    let listed = api.get("/api/companies").await?;
    match listed["companies"].as_array().map(Vec::as_slice) {
        Some([one]) => uuid("company id", one["id"].as_str().unwrap_or_default()),
        Some([]) => Err(Failure::Usage(
            "there is no company yet: create one with `nexus companies create NAME`".to_owned(),
        )),
        _ => Err(Failure::Usage(
            "there are several companies: pass --company ID (or set NEXUS_COMPANY)".to_owned(),
        )),
    }
}

/// For people: where the next page starts, when the answer says there is one.
pub(super) fn next_page(list: &Value) {
    if let Some(before) = list["nextBefore"].as_str() {
        println!("(more: --before {before})");
    }
}
