//! Agents and their API keys.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{NewActivity, PgStore, StoreError, StoreResult, company_exists, new_id};
use crate::{
    crypto::{AGENT_KEY_PREFIX, generate_standard_webhooks_secret, generate_token},
    model::{Actor, Agent, AgentStatus, Title, Wakeup, WakeupUrl},
};

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
pub(super) struct AgentRow {
    pub(super) id: Uuid,
    pub(super) company_id: Uuid,
    pub(super) name: String,
    pub(super) status: AgentStatus,
    pub(super) wakeup_kind: String,
    pub(super) wakeup_url: Option<String>,
    pub(super) created_at: DateTime<Utc>,
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

impl PgStore {
    /// Creates an agent with a first API key.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown company, or the database failed.
    pub async fn create_agent(
        &self,
        company_id: Uuid,
        name: Title,
        wakeup: WakeupSpec,
        actor: Actor,
    ) -> StoreResult<CreatedAgent> {
        let now = self.now();
        let id = new_id();
        let (url, secret) = match &wakeup {
            WakeupSpec::Poll => (None, None),
            WakeupSpec::Http(url) => (
                Some(url.as_str()),
                Some(generate_standard_webhooks_secret()),
            ),
        };
        let sealed = secret
            .as_ref()
            .map(|s| self.secrets.seal(id.as_bytes(), s.as_bytes()));
        let mut tx = self.pool.begin().await?;
        if !company_exists(&mut tx, company_id).await? {
            return Err(StoreError::NotFound);
        }
        let row = sqlx::query_as!(
            AgentRow,
            r#"INSERT INTO agents (id, company_id, name, status, wakeup_kind, wakeup_url,
                                   wakeup_secret_enc, created_at, updated_at)
               VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $7)
               RETURNING id, company_id, name, status AS "status: AgentStatus", wakeup_kind,
                         wakeup_url, created_at"#,
            id,
            company_id,
            name.as_str(),
            if url.is_some() { "http" } else { "poll" },
            url,
            sealed,
            now,
        )
        .fetch_one(&mut *tx)
        .await?;
        let key = self.insert_key(&mut tx, company_id, id, now).await?;
        NewActivity {
            company_id,
            actor,
            action: "agent.created",
            entity_type: "agent",
            entity_id: id,
            details: json!({ "name": row.name, "wakeup": row.wakeup_kind, "keyId": key.id }),
        }
        .record(&mut tx, now)
        .await?;
        tx.commit().await?;
        Ok(CreatedAgent {
            agent: row.into(),
            api_key: key.api_key,
            wakeup_secret: secret,
        })
    }

    /// The agents of a company, oldest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn agents(&self, company_id: Uuid) -> StoreResult<Vec<Agent>> {
        let rows = sqlx::query_as!(
            AgentRow,
            r#"SELECT id, company_id, name, status AS "status: AgentStatus", wakeup_kind, wakeup_url,
                      created_at
               FROM agents WHERE company_id = $1 ORDER BY created_at, id"#,
            company_id,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Agent::from).collect())
    }

    /// One agent.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or the database failed.
    pub async fn agent(&self, id: Uuid) -> StoreResult<Agent> {
        sqlx::query_as!(
            AgentRow,
            r#"SELECT id, company_id, name, status AS "status: AgentStatus", wakeup_kind, wakeup_url,
                      created_at
               FROM agents WHERE id = $1"#,
            id,
        )
        .fetch_optional(&self.pool)
        .await?
        .map(Agent::from)
        .ok_or(StoreError::NotFound)
    }

    /// Applies `changes` to an agent. A terminated agent cannot change any more.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] `agent_terminated`; the database failed.
    pub async fn update_agent(
        &self,
        id: Uuid,
        changes: AgentChanges,
        actor: Actor,
    ) -> StoreResult<UpdatedAgent> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let current = sqlx::query!(
            r#"SELECT company_id, status AS "status: AgentStatus", wakeup_kind
               FROM agents WHERE id = $1 FOR UPDATE"#,
            id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        if current.status == AgentStatus::Terminated {
            return Err(StoreError::conflict(
                "agent_terminated",
                "the agent is terminated; a terminated agent cannot be changed",
            ));
        }
        // Switching to HTTP creates a secret; an HTTP agent that changes its URL keeps its secret.
        let (wakeup_kind, wakeup_url, new_secret) = match &changes.wakeup {
            None => (None, None, None),
            Some(WakeupSpec::Poll) => (Some("poll"), None, None),
            Some(WakeupSpec::Http(url)) => {
                let secret =
                    (current.wakeup_kind != "http").then(generate_standard_webhooks_secret);
                (Some("http"), Some(url.as_str()), secret)
            }
        };
        let sealed = new_secret
            .as_ref()
            .map(|s| self.secrets.seal(id.as_bytes(), s.as_bytes()));
        let row = sqlx::query_as!(
            AgentRow,
            r#"UPDATE agents SET
                   name = COALESCE($2, name),
                   status = COALESCE($3, status),
                   wakeup_kind = COALESCE($4, wakeup_kind),
                   wakeup_url = CASE WHEN $4::text IS NULL THEN wakeup_url ELSE $5 END,
                   wakeup_secret_enc = CASE WHEN $4::text IS NULL THEN wakeup_secret_enc
                                            WHEN $4 = 'poll' THEN NULL
                                            ELSE COALESCE($6, wakeup_secret_enc) END,
                   updated_at = $7
               WHERE id = $1
               RETURNING id, company_id, name, status AS "status: AgentStatus", wakeup_kind,
                         wakeup_url, created_at"#,
            id,
            changes.name.as_ref().map(Title::as_str),
            changes.status.map(AgentStatus::as_str),
            wakeup_kind,
            wakeup_url,
            sealed,
            now,
        )
        .fetch_one(&mut *tx)
        .await?;
        NewActivity {
            company_id: current.company_id,
            actor,
            action: "agent.updated",
            entity_type: "agent",
            entity_id: id,
            details: json!({
                "name": changes.name.as_ref().map(Title::as_str),
                "status": changes.status.map(|s| json!({ "from": current.status, "to": s })),
                "wakeup": wakeup_kind,
            }),
        }
        .record(&mut tx, now)
        .await?;
        tx.commit().await?;
        Ok(UpdatedAgent {
            agent: row.into(),
            wakeup_secret: new_secret,
        })
    }

    /// Issues another API key for an agent; older keys keep working.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] `agent_terminated`; the database failed.
    pub async fn issue_agent_key(&self, agent_id: Uuid, actor: Actor) -> StoreResult<IssuedKey> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let agent = sqlx::query!(
            r#"SELECT company_id, status AS "status: AgentStatus" FROM agents WHERE id = $1 FOR SHARE"#,
            agent_id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        if agent.status == AgentStatus::Terminated {
            return Err(StoreError::conflict(
                "agent_terminated",
                "the agent is terminated; it cannot get new keys",
            ));
        }
        let key = self
            .insert_key(&mut tx, agent.company_id, agent_id, now)
            .await?;
        NewActivity {
            company_id: agent.company_id,
            actor,
            action: "agent_key.created",
            entity_type: "agent",
            entity_id: agent_id,
            details: json!({ "keyId": key.id }),
        }
        .record(&mut tx, now)
        .await?;
        tx.commit().await?;
        Ok(key)
    }

    /// Revokes one key of an agent. Revoking a revoked key again changes nothing.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the key is not one of the agent's; the database failed.
    pub async fn revoke_agent_key(
        &self,
        agent_id: Uuid,
        key_id: Uuid,
        actor: Actor,
    ) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        // Whether this call revoked the key is decided by the row lock, not by comparing
        // timestamps (two revocations can carry the same clock reading).
        let key = sqlx::query!(
            "SELECT company_id, revoked_at IS NULL AS \"active!\" FROM agent_keys
             WHERE id = $1 AND agent_id = $2 FOR UPDATE",
            key_id,
            agent_id,
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        if key.active {
            sqlx::query!(
                "UPDATE agent_keys SET revoked_at = $2 WHERE id = $1",
                key_id,
                now
            )
            .execute(&mut *tx)
            .await?;
            NewActivity {
                company_id: key.company_id,
                actor,
                action: "agent_key.revoked",
                entity_type: "agent",
                entity_id: agent_id,
                details: json!({ "keyId": key_id }),
            }
            .record(&mut tx, now)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_key(
        &self,
        conn: &mut PgConnection,
        company_id: Uuid,
        agent_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<IssuedKey> {
        let id = new_id();
        let api_key = generate_token(AGENT_KEY_PREFIX);
        sqlx::query!(
            "INSERT INTO agent_keys (id, company_id, agent_id, key_hash, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            id,
            company_id,
            agent_id,
            self.hasher.hash(&api_key),
            now,
        )
        .execute(conn)
        .await?;
        Ok(IssuedKey { id, api_key })
    }
}
