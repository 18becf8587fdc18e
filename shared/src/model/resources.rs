//! The resources of the API other than routines: companies, agents, projects, goals, issues,
//! heartbeat runs, the activity log, and who acts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::*;

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

impl Agent {
    /// The agent as another agent sees it in a list: an HTTP wake-up URL without its query
    /// string or fragment (where a token for the receiver may be).
    #[must_use]
    pub fn as_listed_to_agents(mut self) -> Self {
        if let Wakeup::Http { url } = &mut self.wakeup
            && let Ok(mut parsed) = url::Url::parse(url)
        {
            parsed.set_query(None);
            parsed.set_fragment(None);
            *url = parsed.into();
        }
        self
    }
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
