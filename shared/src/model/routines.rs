//! Routines, their triggers and their runs, as stored and shown.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::*;

text_enum! {
    /// Lifecycle of a routine: `active ⇄ paused`, `→ archived` (terminal).
    RoutineStatus { Active => "active", Paused => "paused", Archived => "archived" }
}

text_enum! {
    /// Why a routine is paused: by a person (or the API), or by itself after
    /// `pauseAfterFailures` failed runs in a row.
    PausedReason { Manual => "manual", ConsecutiveFailures => "consecutive_failures" }
}

text_enum! {
    /// What a dispatch does while the routine has an open execution issue.
    ConcurrencyPolicy {
        CoalesceIfActive => "coalesce_if_active",
        SkipIfActive => "skip_if_active",
        AlwaysEnqueue => "always_enqueue",
    }
}

text_enum! {
    /// What happens to schedule fires missed during an outage.
    CatchUpPolicy { SkipMissed => "skip_missed", EnqueueMissedWithCap => "enqueue_missed_with_cap" }
}

text_enum! {
    /// Kind of a trigger.
    TriggerKind { Schedule => "schedule", Webhook => "webhook", Api => "api" }
}

text_enum! {
    /// How webhook calls authenticate.
    SigningMode {
        Bearer => "bearer",
        HmacSha256 => "hmac_sha256",
        StandardWebhooks => "standard_webhooks",
        Github => "github",
        Stripe => "stripe",
        Slack => "slack",
    }
}

impl SigningMode {
    /// Whether the sender issues the secret (Stripe's endpoint secret, Slack's signing secret):
    /// the operator sets it (`webhookSecret` on creation or rotation); every other mode's
    /// secret is generated here.
    #[must_use]
    pub fn sender_issues_secret(self) -> bool {
        matches!(self, Self::Stripe | Self::Slack)
    }
}

/// A webhook secret issued by the sender and set by the operator: 16–256 visible ASCII
/// characters, used as the HMAC key exactly as given. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SenderSecret(String);

impl SenderSecret {
    /// The shortest and longest secrets accepted.
    pub const LENGTH: std::ops::RangeInclusive<usize> = 16..=256;

    /// Parses a secret as the sender showed it.
    ///
    /// # Errors
    /// A sentence saying what is wrong with it (never repeating it).
    pub fn parse(value: String) -> Result<Self, String> {
        if !Self::LENGTH.contains(&value.len()) {
            return Err(format!(
                "must be {} to {} characters",
                Self::LENGTH.start(),
                Self::LENGTH.end()
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII characters (no spaces)".to_owned());
        }
        Ok(Self(value))
    }

    /// The secret.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SenderSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SenderSecret(<redacted>)")
    }
}

impl utoipa::PartialSchema for SenderSecret {
    /// Exactly what [`SenderSecret::parse`] accepts.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(*Self::LENGTH.start()))
            .max_length(Some(*Self::LENGTH.end()))
            .pattern(Some("^[!-~]+$"))
            .into()
    }
}

impl ToSchema for SenderSecret {}

/// What a trigger of each kind carries besides the common fields.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerConfig {
    /// Fires on a cron schedule in a time zone.
    #[serde(rename_all = "camelCase")]
    Schedule {
        /// The cron expression, as written.
        cron_expression: String,
        /// The expression in plain language ("weekdays at 09:00"), in the trigger's zone.
        description: String,
        /// IANA time zone name.
        timezone: String,
        /// 0–3600: each fire happens at its nominal time plus a stable offset in
        /// `[0, jitterSec)` seconds, derived from the trigger id and the nominal time.
        jitter_sec: i32,
        /// The next fire instant, jitter included; `null` while the trigger is disabled or the
        /// routine is not active.
        next_run_at: Option<DateTime<Utc>>,
    },
    /// Fires on a signed call to its public URL.
    #[serde(rename_all = "camelCase")]
    Webhook {
        /// How calls authenticate: `bearer`, `hmac_sha256`, or a sender's own format
        /// (`standard_webhooks`, `github`, `stripe`, `slack`).
        signing_mode: SigningMode,
        /// Accepted clock skew, and how long a signature is remembered.
        replay_window_sec: i32,
        /// Until when the secret the last rotation replaced still works; `null` when none does.
        previous_secret_expires_at: Option<DateTime<Utc>>,
        /// The random public id in the URL.
        public_id: String,
        /// The URL to call.
        webhook_url: String,
    },
    /// Fires only through a manual run naming it.
    Api,
}

/// A trigger of a routine (never with its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Id.
    pub id: Uuid,
    /// The routine.
    pub routine_id: Uuid,
    /// Kind and kind-specific fields.
    #[serde(flatten)]
    pub config: TriggerConfig,
    /// Label (may be empty).
    pub label: String,
    /// Whether it fires.
    pub enabled: bool,
    /// When it last fired.
    pub last_fired_at: Option<DateTime<Utc>>,
    /// Outcome of its last fire (the run's status).
    pub last_result: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Trigger {
    /// The trigger's kind.
    #[must_use]
    pub fn kind(&self) -> TriggerKind {
        match self.config {
            TriggerConfig::Schedule { .. } => TriggerKind::Schedule,
            TriggerConfig::Webhook { .. } => TriggerKind::Webhook,
            TriggerConfig::Api => TriggerKind::Api,
        }
    }
}

/// A recurring task for one agent.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Routine {
    /// Id.
    pub id: Uuid,
    /// Owning company.
    pub company_id: Uuid,
    /// Title of the issues it creates (may use `{{date}}` and `{{payload.<key>}}`).
    pub title: String,
    /// Description of the issues it creates (same placeholders).
    pub description: String,
    /// The agent its issues are assigned to.
    pub assignee_agent_id: Uuid,
    /// Project of its issues.
    pub project_id: Uuid,
    /// Goal of its issues.
    pub goal_id: Option<Uuid>,
    /// Parent of its issues.
    pub parent_issue_id: Option<Uuid>,
    /// Priority of its issues.
    pub priority: Priority,
    /// Lifecycle status.
    pub status: RoutineStatus,
    /// What a fire does while an issue of the routine is open.
    pub concurrency_policy: ConcurrencyPolicy,
    /// What happens to missed schedule fires.
    pub catch_up_policy: CatchUpPolicy,
    /// How many missed fires `enqueue_missed_with_cap` dispatches.
    pub catch_up_cap: i32,
    /// Its triggers, oldest first.
    pub triggers: Vec<Trigger>,
    /// When a trigger of it last fired.
    pub last_triggered_at: Option<DateTime<Utc>>,
    /// The earliest next fire over its enabled schedule triggers; `null` when there is none or
    /// the routine is not active.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Its newest run (by `triggeredAt`), or `null`.
    pub last_run: Option<LastRun>,
    /// How many of its newest finished runs (`completed` or `failed`, newest first by
    /// `triggeredAt`) are `failed` in a row.
    pub consecutive_failures: i32,
    /// `null` or 60–2,592,000: a run whose issue is still open this long after its dispatch
    /// fails with reason `timed_out`.
    pub run_timeout_sec: Option<i32>,
    /// `null` or 1–100: the routine pauses itself when `consecutiveFailures` reaches it.
    pub pause_after_failures: Option<i32>,
    /// Why it is paused (`null` unless paused).
    pub paused_reason: Option<PausedReason>,
    /// The note given with the pause (at most 500 characters).
    pub pause_note: Option<String>,
    /// When it resumes by itself.
    pub paused_until: Option<DateTime<Utc>>,
    /// When it was paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The newest run of a routine, as its health shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    /// Id.
    pub id: Uuid,
    /// Status.
    pub status: RunStatus,
    /// Why it was coalesced, skipped or failed.
    pub reason: Option<String>,
    /// When it was accepted.
    pub triggered_at: DateTime<Utc>,
}

/// An idempotency key: 1–255 characters.
pub type IdempotencyKey = BoundedText<1, 255>;

text_enum! {
    /// What created a run.
    RunSource {
        Schedule => "schedule",
        Webhook => "webhook",
        Manual => "manual",
        Api => "api",
        Backfill => "backfill",
    }
}

text_enum! {
    /// Status of a run: `received` → `issue_created | coalesced | skipped | failed`;
    /// `issue_created` → `completed | failed` when its issue is done or cancelled.
    RunStatus {
        Received => "received", IssueCreated => "issue_created", Coalesced => "coalesced",
        Skipped => "skipped", Failed => "failed", Completed => "completed",
    }
}

/// The trigger a run came from, as it is now.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerRef {
    /// Id.
    pub id: Uuid,
    /// Kind.
    pub kind: TriggerKind,
    /// Label.
    pub label: String,
}

/// One firing of a routine.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// Id.
    pub id: Uuid,
    /// Owning company.
    pub company_id: Uuid,
    /// The routine.
    pub routine_id: Uuid,
    /// The trigger that fired (`null` for a manual run without one, or once it is deleted).
    pub trigger_id: Option<Uuid>,
    /// That trigger's id, kind and label.
    pub trigger: Option<TriggerRef>,
    /// What created it.
    pub source: RunSource,
    /// Status.
    pub status: RunStatus,
    /// Why it was coalesced, skipped or failed: `active_issue`, `missed_schedule`,
    /// `catch_up_cap`, `agent_not_assignable`, `routine_archived`, `dispatch_failed`,
    /// `issue_cancelled`, `timed_out`.
    pub reason: Option<String>,
    /// The nominal fire time of a schedule fire.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Whether it is a missed schedule fire dispatched late.
    pub catch_up: bool,
    /// For a run standing for missed fires: `{count, from, to}`.
    #[schema(value_type = Option<Object>)]
    pub missed: Option<serde_json::Value>,
    /// When it was accepted.
    pub triggered_at: DateTime<Utc>,
    /// When it reached a final status.
    pub completed_at: Option<DateTime<Utc>>,
    /// The idempotency key it was accepted with.
    pub idempotency_key: Option<String>,
    /// The payload (an object).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The execution issue it created or was coalesced into.
    pub linked_issue_id: Option<Uuid>,
    /// The run whose issue it was coalesced into.
    pub coalesced_into_run_id: Option<Uuid>,
    /// The heartbeat run it queued.
    pub heartbeat_run_id: Option<Uuid>,
    /// A sentence explaining a failure.
    pub failure_reason: Option<String>,
    /// For a webhook call in a format that carries the sender's delivery id, that delivery;
    /// else `null`.
    pub delivery: Option<Delivery>,
}

/// The sender's delivery a webhook run was accepted from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Delivery {
    /// The signing format: `standard_webhooks`, `github`, `stripe`, or `slack` (an Events API
    /// callback).
    pub format: SigningMode,
    /// The sender's delivery id: `webhook-id`, `X-GitHub-Delivery`, the Stripe event's `id`,
    /// the Slack callback's `event_id`.
    pub id: String,
    /// The event name, where the format has one: the payload's `type` (Standard Webhooks,
    /// Stripe), `X-GitHub-Event`, the Slack callback's `event.type`.
    pub event: Option<String>,
}

/// The formats whose sender identifies its deliveries, each with the prefix of the idempotency
/// key a delivery is accepted under (`<prefix><id>`, and `:<event>` for GitHub, whose
/// redeliveries keep the id and event): a repeat of a delivery returns the run of the first.
const DELIVERY_KEY_PREFIXES: [(SigningMode, &str); 4] = [
    (SigningMode::StandardWebhooks, "webhook-id:"),
    (SigningMode::Github, "github:"),
    (SigningMode::Stripe, "stripe:"),
    (SigningMode::Slack, "slack:"),
];

impl Delivery {
    /// The delivery of a run, read from what was accepted: a webhook run's idempotency key in
    /// a delivery format, and its payload.
    #[must_use]
    pub fn of(source: RunSource, key: Option<&str>, payload: &serde_json::Value) -> Option<Self> {
        if source != RunSource::Webhook {
            return None;
        }
        let key = key?;
        let (format, rest) = DELIVERY_KEY_PREFIXES
            .iter()
            .find_map(|(format, prefix)| Some((*format, key.strip_prefix(prefix)?)))?;
        let named = |value: Option<&serde_json::Value>| {
            value.and_then(serde_json::Value::as_str).map(str::to_owned)
        };
        let (id, event) = match format {
            SigningMode::Github => {
                let (id, event) = rest.split_once(':')?;
                (id, (!event.is_empty()).then(|| event.to_owned()))
            }
            SigningMode::Slack => (rest, named(payload.pointer("/event/type"))),
            _ => (rest, named(payload.get("type"))),
        };
        Some(Self {
            format,
            id: id.to_owned(),
            event,
        })
    }

    /// Whether `key` starts like the key of a sender's delivery: such a key given by a caller
    /// (a webhook call's `Idempotency-Key` header) would show a delivery it never had.
    #[must_use]
    pub fn is_reserved(key: &str) -> bool {
        DELIVERY_KEY_PREFIXES
            .iter()
            .any(|(_, prefix)| key.starts_with(prefix))
    }

    /// The idempotency key a delivery of `format` is accepted under (`id` and `event` as the
    /// caller validated them: neither holds a `:`).
    #[must_use]
    pub fn key(format: SigningMode, id: &str, event: &str) -> Option<String> {
        let (_, prefix) = DELIVERY_KEY_PREFIXES.iter().find(|(f, _)| *f == format)?;
        Some(match format {
            SigningMode::Github => format!("{prefix}{id}:{event}"),
            _ => format!("{prefix}{id}"),
        })
    }
}

/// A run's payload as it is kept: every U+0000 in its strings and keys replaced by U+FFFD
/// (Postgres `jsonb` cannot hold U+0000; the embedded backend gets the same payload). The
/// request is accepted; nothing else changes.
#[must_use]
pub fn stored_payload(
    payload: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    fn clean_text(text: String) -> String {
        if text.contains('\0') {
            text.replace('\0', "\u{FFFD}")
        } else {
            text
        }
    }
    fn clean(value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(text) => Value::String(clean_text(text)),
            Value::Array(items) => Value::Array(items.into_iter().map(clean).collect()),
            Value::Object(map) => Value::Object(clean_map(map)),
            other => other,
        }
    }
    fn clean_map(
        map: serde_json::Map<String, serde_json::Value>,
    ) -> serde_json::Map<String, serde_json::Value> {
        map.into_iter()
            .map(|(key, value)| (clean_text(key), clean(value)))
            .collect()
    }
    clean_map(payload)
}
