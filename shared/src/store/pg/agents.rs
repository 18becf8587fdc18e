//! Agents and their API keys.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{PgStore, company_exists};
use crate::{
    crypto::{AGENT_KEY_PREFIX, generate_standard_webhooks_secret, generate_token},
    engine::refusal::{AgentAttempt, agent_allows, assignable},
    model::{Actor, Agent, AgentStatus, Title},
    store::{
        AgentChanges, CreatedAgent, IssuedKey, NewActivity, StoreError, StoreResult, UpdatedAgent,
        WakeupSpec, agents::AgentRow, new_id,
    },
};

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
        NewActivity::agent_created(
            company_id,
            id,
            (row.name.as_str(), row.wakeup_kind.as_str()),
            key.id,
            actor,
        )
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
    /// [`StoreError::NotFound`]; [`StoreError::Refused`] `agent_terminated`; the database failed.
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
        agent_allows(current.status, AgentAttempt::Change)?;
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
        NewActivity::agent_updated(
            (current.company_id, id),
            current.status,
            &changes,
            wakeup_kind,
            actor,
        )
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
    /// [`StoreError::NotFound`]; [`StoreError::Refused`] `agent_terminated`; the database failed.
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
        agent_allows(agent.status, AgentAttempt::IssueKey)?;
        let key = self
            .insert_key(&mut tx, agent.company_id, agent_id, now)
            .await?;
        NewActivity::agent_key_created(agent.company_id, agent_id, key.id, actor)
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
            NewActivity::agent_key_revoked(key.company_id, agent_id, key_id, actor)
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

/// Checks, under a share lock, that an agent of the company can take new work.
pub(crate) async fn ensure_assignable(
    conn: &mut PgConnection,
    company_id: Uuid,
    agent_id: Uuid,
) -> StoreResult<()> {
    let status = sqlx::query_scalar!(
        r#"SELECT status AS "status: AgentStatus" FROM agents
           WHERE company_id = $1 AND id = $2 FOR SHARE"#,
        company_id,
        agent_id,
    )
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::InvalidReference {
        field: "assigneeAgentId",
    })?;
    assignable(status)?;
    Ok(())
}
