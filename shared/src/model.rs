//! Domain types: the resources of the API as they are stored and shown, and the parsed values
//! (bounded texts, enumerations, wake-up configuration) that make invalid states unrepresentable.
//! Values are parsed once at the edge; code that holds one never checks it again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Declares a closed set of snake_case names stored as `text` and shown as strings.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:tt),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stored and shown name.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(UnknownName(other.to_owned())),
                }
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?.parse()?)
            }
        }

        impl sqlx::Type<sqlx::Sqlite> for $name {
            fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
                <&str as sqlx::Type<sqlx::Sqlite>>::type_info()
            }
            fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Sqlite>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for $name {
            fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<sqlx::Sqlite>>::decode(value)?.parse()?)
            }
        }
    };
}

/// A stored name outside its enumeration (a schema/code mismatch).
#[derive(Debug, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownName(pub String);

text_enum! {
    /// Lifecycle of an agent; `terminated` is final.
    AgentStatus { Active => "active", Paused => "paused", Terminated => "terminated" }
}

text_enum! {
    /// Status of an issue.
    IssueStatus {
        Todo => "todo", InProgress => "in_progress", InReview => "in_review",
        Blocked => "blocked", Done => "done", Cancelled => "cancelled",
    }
}

impl IssueStatus {
    /// Whether work on the issue has ended (`done` or `cancelled`).
    #[must_use]
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Done | Self::Cancelled)
    }
}

text_enum! {
    /// Priority of an issue or routine (default `medium`).
    Priority { Critical => "critical", High => "high", Medium => "medium", Low => "low" }
}

#[allow(clippy::derivable_impls)] // the enum is declared by `text_enum!`, which derives no Default
impl Default for Priority {
    fn default() -> Self {
        Self::Medium
    }
}

text_enum! {
    /// Status of a heartbeat run.
    HeartbeatStatus {
        Queued => "queued", Running => "running", Succeeded => "succeeded",
        Failed => "failed", TimedOut => "timed_out", Cancelled => "cancelled",
    }
}

text_enum! {
    /// The final status an agent reports when it finishes a heartbeat run.
    FinishStatus { Succeeded => "succeeded", Failed => "failed" }
}

impl From<FinishStatus> for HeartbeatStatus {
    fn from(status: FinishStatus) -> Self {
        match status {
            FinishStatus::Succeeded => Self::Succeeded,
            FinishStatus::Failed => Self::Failed,
        }
    }
}

text_enum! {
    /// Who performed an action.
    ActorType { Board => "board", Agent => "agent", System => "system" }
}

text_enum! {
    /// Kind of an entry in an issue's history.
    IssueEventType {
        Created => "created", StatusChanged => "status_changed", FireCoalesced => "fire_coalesced",
    }
}

/// The authenticated caller of an operation, recorded in the activity log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// An operator holding a board token.
    Board {
        /// The board token's id.
        token_id: Uuid,
    },
    /// An agent holding one of its API keys.
    Agent {
        /// The agent.
        agent_id: Uuid,
        /// The agent's company.
        company_id: Uuid,
    },
    /// Nexus itself (scheduler, worker).
    System,
}

impl Actor {
    /// The actor's type.
    #[must_use]
    pub fn actor_type(self) -> ActorType {
        match self {
            Self::Board { .. } => ActorType::Board,
            Self::Agent { .. } => ActorType::Agent,
            Self::System => ActorType::System,
        }
    }

    /// The board token's or agent's id.
    #[must_use]
    pub fn actor_id(self) -> Option<Uuid> {
        match self {
            Self::Board { token_id } => Some(token_id),
            Self::Agent { agent_id, .. } => Some(agent_id),
            Self::System => None,
        }
    }

    /// Whether the actor may see the rows of `company_id` (the board sees every company).
    #[must_use]
    pub fn sees_company(self, company_id: Uuid) -> bool {
        match self {
            Self::Board { .. } | Self::System => true,
            Self::Agent {
                company_id: own, ..
            } => own == company_id,
        }
    }
}

/// A text whose length, in characters, lies in `MIN..=MAX`; when `MIN > 0` it must also contain
/// something other than white space. It never contains U+0000 (which Postgres cannot store in
/// `text`; refused on every backend alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BoundedText<const MIN: usize, const MAX: usize>(String);

/// A name or title: 1–200 characters.
pub type Title = BoundedText<1, 200>;
/// A description: up to 10,000 characters.
pub type Description = BoundedText<0, 10_000>;
/// A heartbeat run's summary: up to 10,000 characters.
pub type Summary = BoundedText<0, 10_000>;
/// A trigger label: up to 120 characters.
pub type Label = BoundedText<0, 120>;

impl<const MIN: usize, const MAX: usize> BoundedText<MIN, MAX> {
    /// Parses `value`.
    ///
    /// # Errors
    /// A sentence saying which bound was crossed.
    pub fn parse(value: String) -> Result<Self, String> {
        let len = value.chars().count();
        if len > MAX {
            return Err(format!("must be at most {MAX} characters (got {len})"));
        }
        if value.contains('\0') {
            return Err("must not contain the character U+0000".to_owned());
        }
        if MIN > 0 && value.trim().is_empty() {
            return Err("must not be empty".to_owned());
        }
        if len < MIN {
            return Err(format!("must be at least {MIN} characters (got {len})"));
        }
        Ok(Self(value))
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The characters that do not count as content in a text that must not be blank: exactly
/// those `str::trim` removes (Unicode `White_Space`), as ranges.
const BLANK: [(char, char); 10] = [
    ('\u{9}', '\u{d}'),
    (' ', ' '),
    ('\u{85}', '\u{85}'),
    ('\u{a0}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// [`BLANK`] as the inside of a regular-expression class, every character written as `\uXXXX`
/// so that every engine reads the published pattern the same way.
fn blank_class() -> String {
    BLANK
        .iter()
        .map(|&(from, to)| {
            if from == to {
                format!("\\u{:04x}", u32::from(from))
            } else {
                format!("\\u{:04x}-\\u{:04x}", u32::from(from), u32::from(to))
            }
        })
        .collect()
}

impl<const MIN: usize, const MAX: usize> utoipa::PartialSchema for BoundedText<MIN, MAX> {
    /// A string of `MIN` to `MAX` characters without U+0000 and, when `MIN > 0`, not blank —
    /// exactly what [`BoundedText::parse`] accepts.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let pattern = if MIN > 0 {
            format!("^[^\\u0000]*[^\\u0000{}][^\\u0000]*$", blank_class())
        } else {
            "^[^\\u0000]*$".to_owned()
        };
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length((MIN > 0).then_some(MIN))
            .max_length(Some(MAX))
            .pattern(Some(pattern))
            .into()
    }
}

impl<const MIN: usize, const MAX: usize> ToSchema for BoundedText<MIN, MAX> {}

impl<const MAX: usize> Default for BoundedText<0, MAX> {
    fn default() -> Self {
        Self(String::new())
    }
}

/// Longest accepted wake-up URL.
pub const MAX_URL_LEN: usize = 2048;

/// An absolute `http` or `https` URL an agent is woken at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeupUrl(String);

impl WakeupUrl {
    /// Parses `value`.
    ///
    /// # Errors
    /// A sentence saying what is wrong with it.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.len() > MAX_URL_LEN {
            return Err(format!("must be at most {MAX_URL_LEN} characters"));
        }
        let url = url::Url::parse(value).map_err(|e| format!("is not a valid URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err("must be an absolute http:// or https:// URL".to_owned());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials".to_owned());
        }
        Ok(Self(url.into()))
    }

    /// The URL.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How an agent learns about new heartbeat runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Wakeup {
    /// The agent polls `GET /api/agents/me/heartbeat-runs`.
    Poll,
    /// Nexus POSTs each new heartbeat run to `url`, signed per Standard Webhooks.
    Http {
        /// Where wake-ups are delivered.
        url: String,
    },
}

/// A company: the tenant every other resource belongs to.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// An AI agent of a company.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    /// Id.
    pub id: Uuid,
    /// Owning company.
    pub company_id: Uuid,
    /// Name.
    pub name: String,
    /// Lifecycle status.
    pub status: AgentStatus,
    /// How the agent is woken.
    pub wakeup: Wakeup,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A project of a company.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// Id.
    pub id: Uuid,
    /// Owning company.
    pub company_id: Uuid,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A goal of a company.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Goal {
    /// Id.
    pub id: Uuid,
    /// Owning company.
    pub company_id: Uuid,
    /// Title.
    pub title: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A unit of work, created by hand or by a routine run.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    /// Id.
    pub id: Uuid,
    /// Owning company.
    pub company_id: Uuid,
    /// Title.
    pub title: String,
    /// Description (may be empty).
    pub description: String,
    /// Project.
    pub project_id: Option<Uuid>,
    /// Goal.
    pub goal_id: Option<Uuid>,
    /// Parent issue.
    pub parent_issue_id: Option<Uuid>,
    /// The agent working on it.
    pub assignee_agent_id: Option<Uuid>,
    /// Priority.
    pub priority: Priority,
    /// Status.
    pub status: IssueStatus,
    /// The routine whose run created it.
    pub routine_id: Option<Uuid>,
    /// The run that created it.
    pub origin_run_id: Option<Uuid>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One entry of an issue's history.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct IssueEvent {
    /// Id.
    pub id: Uuid,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: IssueEventType,
    /// Who did it.
    pub actor_type: ActorType,
    /// The board token or agent that did it.
    pub actor_id: Option<Uuid>,
    /// Details: `from`/`to` for a status change; `runId`/`payload` for a coalesced fire.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An issue with its history, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssueWithEvents {
    /// The issue.
    #[serde(flatten)]
    pub issue: Issue,
    /// Its history, oldest first.
    pub events: Vec<IssueEvent>,
}

/// What a heartbeat run asks the agent to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatContext {
    /// The routine whose run created it (`null` for an issue assigned by hand).
    pub routine_id: Option<Uuid>,
    /// The issue's title.
    pub title: String,
    /// The issue's description.
    pub description: String,
    /// The fire's payload.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// What caused it: `schedule`, `webhook`, `manual`, `api`, or `assignment` for an issue
    /// created with an assignee.
    pub source: String,
    /// The nominal fire time of a schedule fire.
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// A request for an agent to work on an issue.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRun {
    /// Id.
    pub id: Uuid,
    /// Owning company.
    pub company_id: Uuid,
    /// The agent it wakes.
    pub agent_id: Uuid,
    /// The issue to work on.
    pub issue_id: Uuid,
    /// The routine run that created it.
    pub routine_run_id: Option<Uuid>,
    /// Status.
    pub status: HeartbeatStatus,
    /// What to do.
    pub context: HeartbeatContext,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When the agent claimed it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// The agent's summary of the outcome.
    pub summary: Option<String>,
}

/// An entry of a company's audit log.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ActivityEntry {
    /// Id.
    pub id: Uuid,
    /// Who did it.
    pub actor_type: ActorType,
    /// The board token or agent that did it.
    pub actor_id: Option<Uuid>,
    /// What was done, e.g. `issue.created`.
    pub action: String,
    /// The kind of thing it was done to, e.g. `issue`.
    pub entity_type: String,
    /// The thing it was done to.
    pub entity_id: Uuid,
    /// Details of the change.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_counts_characters_not_bytes() {
        assert!(Title::parse("é".repeat(200)).is_ok());
        let err = Title::parse("é".repeat(201)).expect_err("too long");
        assert!(err.contains("at most 200"), "{err}");
        assert!(Title::parse("   ".to_owned()).is_err());
        assert!(Title::parse(String::new()).is_err());
        assert!(Description::parse(String::new()).is_ok());
    }

    #[test]
    fn text_enums_round_trip() {
        for status in IssueStatus::ALL {
            assert_eq!(
                status.as_str().parse::<IssueStatus>().expect("parses"),
                *status
            );
            let json = serde_json::to_string(status).expect("serialises");
            assert_eq!(json, format!("\"{status}\""));
        }
        assert!("open".parse::<IssueStatus>().is_err());
    }

    #[test]
    fn wakeup_urls_must_be_absolute_http() {
        assert!(WakeupUrl::parse("https://agent.example.com/wake").is_ok());
        assert!(WakeupUrl::parse("http://127.0.0.1:9000/").is_ok());
        for bad in [
            "ftp://x/y",
            "/relative",
            "not a url",
            "https://user:pw@host/",
            "mailto:a@b",
        ] {
            assert!(WakeupUrl::parse(bad).is_err(), "{bad}");
        }
    }
}

text_enum! {
    /// Lifecycle of a routine: `active ⇄ paused`, `→ archived` (terminal).
    RoutineStatus { Active => "active", Paused => "paused", Archived => "archived" }
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
    SigningMode { Bearer => "bearer", HmacSha256 => "hmac_sha256" }
}

/// An integer within `MIN..=MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BoundedInt<const MIN: i64, const MAX: i64>(i32);

/// `catchUpCap`: 1–100.
pub type CatchUpCap = BoundedInt<1, 100>;
/// The default `catchUpCap`.
pub const DEFAULT_CATCH_UP_CAP: CatchUpCap = BoundedInt(25);
/// The default `replayWindowSec`.
pub const DEFAULT_REPLAY_WINDOW: ReplayWindow = BoundedInt(300);
/// `replayWindowSec`: 30–86400.
pub type ReplayWindow = BoundedInt<30, 86_400>;
/// `count` of upcoming fires: 1–100.
pub type UpcomingCount = BoundedInt<1, 100>;

impl<const MIN: i64, const MAX: i64> BoundedInt<MIN, MAX> {
    /// Parses `value`.
    ///
    /// # Errors
    /// A sentence with the allowed range.
    pub fn parse(value: i64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&value) {
            i32::try_from(value)
                .map(Self)
                .map_err(|_| format!("must be from {MIN} to {MAX}"))
        } else {
            Err(format!("must be from {MIN} to {MAX} (got {value})"))
        }
    }

    /// The value.
    #[must_use]
    pub fn get(self) -> i32 {
        self.0
    }
}

/// What a trigger of each kind carries besides the common fields.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerConfig {
    /// Fires on a cron schedule in a time zone.
    #[serde(rename_all = "camelCase")]
    Schedule {
        /// The cron expression, as written.
        cron_expression: String,
        /// IANA time zone name.
        timezone: String,
        /// The next fire instant; `null` while the trigger is disabled or the routine is not active.
        next_run_at: Option<DateTime<Utc>>,
    },
    /// Fires on a signed call to its public URL.
    #[serde(rename_all = "camelCase")]
    Webhook {
        /// `bearer` or `hmac_sha256`.
        signing_mode: SigningMode,
        /// Accepted clock skew, and how long a signature is remembered.
        replay_window_sec: i32,
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
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// An idempotency key: 1–255 characters.
pub type IdempotencyKey = BoundedText<1, 255>;

text_enum! {
    /// What created a run.
    RunSource { Schedule => "schedule", Webhook => "webhook", Manual => "manual", Api => "api" }
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
    /// `issue_cancelled`.
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

#[cfg(test)]
mod text_tests {
    use super::*;

    #[test]
    fn the_published_blank_class_is_exactly_what_trim_removes() {
        let listed = |c: char| BLANK.iter().any(|&(from, to)| (from..=to).contains(&c));
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            assert_eq!(c.is_whitespace(), listed(c), "{c:?}");
        }
        assert!(blank_class().starts_with("\\u0009-\\u000d\\u0020"));
    }

    #[test]
    fn bounded_texts_refuse_u0000_and_blank_and_publish_their_bounds() {
        assert!(Title::parse("a\0b".to_owned()).is_err());
        assert!(Title::parse(" \u{3000}\t".to_owned()).is_err());
        assert!(
            Title::parse("\u{feff}".to_owned()).is_ok(),
            "not White_Space"
        );
        assert!(Description::parse(String::new()).is_ok());
        let schema =
            serde_json::to_value(<Title as utoipa::PartialSchema>::schema()).expect("json");
        assert_eq!(
            (schema["minLength"].as_u64(), schema["maxLength"].as_u64()),
            (Some(1), Some(200))
        );
        let schema =
            serde_json::to_value(<Description as utoipa::PartialSchema>::schema()).expect("json");
        assert_eq!(schema["pattern"], "^[^\\u0000]*$");
        assert!(schema.get("minLength").is_none());
    }

    #[test]
    fn payloads_keep_u0000_as_u_fffd_in_strings_and_keys() {
        let payload = serde_json::json!({ "a\u{0}": ["x\u{0}y", { "b": "\u{0}" }], "n": 1 });
        let serde_json::Value::Object(payload) = payload else {
            unreachable!()
        };
        let stored = stored_payload(payload);
        assert_eq!(
            serde_json::Value::Object(stored),
            serde_json::json!({ "a\u{fffd}": ["x\u{fffd}y", { "b": "\u{fffd}" }], "n": 1 })
        );
    }
}
