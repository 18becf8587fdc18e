//! Agents and their API keys: what the agent operations take and return, and an agent row as
//! both backends read it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{Agent, AgentStatus, Title, Wakeup, WakeupUrl};

/// The wake-up an agent asks for.
#[derive(Debug, Clone)]
pub enum WakeupSpec {
    /// Poll for heartbeat runs.
    Poll,
    /// Receive signed POSTs at a URL.
    Http(WakeupUrl),
}

/// A new agent with its first API key (and wake-up secret for an HTTP agent), both shown once.
pub struct CreatedAgent {
    /// The agent.
    pub agent: Agent,
    /// Its first API key, in plaintext.
    pub api_key: String,
    /// Its Standard Webhooks secret, for an HTTP agent.
    pub wakeup_secret: Option<String>,
}

impl std::fmt::Debug for CreatedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedAgent")
            .field("agent", &self.agent)
            .field("api_key", &crate::crypto::Redacted)
            .field(
                "wakeup_secret",
                &crate::crypto::redacted(self.wakeup_secret.as_ref()),
            )
            .finish()
    }
}

/// Changes to an agent; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct AgentChanges {
    /// New name.
    pub name: Option<Title>,
    /// New status.
    pub status: Option<AgentStatus>,
    /// New wake-up.
    pub wakeup: Option<WakeupSpec>,
}

/// An updated agent, with the wake-up secret when the change created one (a switch to HTTP).
pub struct UpdatedAgent {
    /// The agent after the change.
    pub agent: Agent,
    /// A newly generated wake-up secret, shown once.
    pub wakeup_secret: Option<String>,
}

impl std::fmt::Debug for UpdatedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdatedAgent")
            .field("agent", &self.agent)
            .field(
                "wakeup_secret",
                &crate::crypto::redacted(self.wakeup_secret.as_ref()),
            )
            .finish()
    }
}

/// A newly issued API key.
pub struct IssuedKey {
    /// The key's id (for revocation).
    pub id: Uuid,
    /// The key, in plaintext, shown once.
    pub api_key: String,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("id", &self.id)
            .field("api_key", &crate::crypto::Redacted)
            .finish()
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AgentRow {
    pub(crate) id: Uuid,
    pub(crate) company_id: Uuid,
    pub(crate) name: String,
    pub(crate) status: AgentStatus,
    pub(crate) wakeup_kind: String,
    pub(crate) wakeup_url: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
}

impl From<AgentRow> for Agent {
    fn from(row: AgentRow) -> Self {
        let wakeup = match (row.wakeup_kind.as_str(), row.wakeup_url) {
            ("http", Some(url)) => Wakeup::Http { url },
            _ => Wakeup::Poll,
        };
        Self {
            id: row.id,
            company_id: row.company_id,
            name: row.name,
            status: row.status,
            wakeup,
            created_at: row.created_at,
        }
    }
}
