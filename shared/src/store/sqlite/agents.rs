//! Agents and their API keys on SQLite.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{SqliteStore, company_exists, record};
use crate::{
    crypto::{AGENT_KEY_PREFIX, generate_standard_webhooks_secret, generate_token},
    engine::refusal::{AgentAttempt, agent_allows, assignable},
    model::{Actor, Agent, AgentStatus, Title},
    store::{
        AgentChanges, CreatedAgent, IssuedKey, NewActivity, StoreError, StoreResult, UpdatedAgent,
        WakeupSpec, agents::AgentRow, new_id,
    },
};

impl SqliteStore {
    /// See [`crate::store::Storage::create_agent`].
    ///
    /// # Errors
    /// `NotFound` (company); the database failed.
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
        let row = sqlx::query_as::<_, AgentRow>(concat!(
            "INSERT INTO agents (id, company_id, name, status, wakeup_kind, wakeup_url,
                                 wakeup_secret_enc, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?6, ?7, ?7)
             RETURNING ",
            agent_columns!(),
            ""
        ))
        .bind(id)
        .bind(company_id)
        .bind(name.as_str())
        .bind(if url.is_some() { "http" } else { "poll" })
        .bind(url)
        .bind(sealed)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let key = self.insert_key(&mut tx, company_id, id, now).await?;
        let entry = NewActivity::agent_created(
            company_id,
            id,
            (row.name.as_str(), row.wakeup_kind.as_str()),
            key.id,
            actor,
        );
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(CreatedAgent {
            agent: row.into(),
            api_key: key.api_key,
            wakeup_secret: secret,
        })
    }

    /// See [`crate::store::Storage::agents`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn agents(&self, company_id: Uuid) -> StoreResult<Vec<Agent>> {
        let rows = sqlx::query_as::<_, AgentRow>(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE company_id = ?1 ORDER BY created_at, id"
        ))
        .bind(company_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Agent::from).collect())
    }

    /// See [`crate::store::Storage::agent`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn agent(&self, id: Uuid) -> StoreResult<Agent> {
        sqlx::query_as::<_, AgentRow>(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(Agent::from)
        .ok_or(StoreError::NotFound)
    }

    /// See [`crate::store::Storage::update_agent`].
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    pub async fn update_agent(
        &self,
        id: Uuid,
        changes: AgentChanges,
        actor: Actor,
    ) -> StoreResult<UpdatedAgent> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let (company_id, status, current_kind) = sqlx::query_as::<_, (Uuid, AgentStatus, String)>(
            "SELECT company_id, status, wakeup_kind FROM agents WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        agent_allows(status, AgentAttempt::Change)?;
        let (wakeup_kind, wakeup_url, new_secret) = match &changes.wakeup {
            None => (None, None, None),
            Some(WakeupSpec::Poll) => (Some("poll"), None, None),
            Some(WakeupSpec::Http(url)) => {
                let secret = (current_kind != "http").then(generate_standard_webhooks_secret);
                (Some("http"), Some(url.as_str()), secret)
            }
        };
        let sealed = new_secret
            .as_ref()
            .map(|s| self.secrets.seal(id.as_bytes(), s.as_bytes()));
        let row = sqlx::query_as::<_, AgentRow>(concat!(
            "UPDATE agents SET
                 name = COALESCE(?2, name),
                 status = COALESCE(?3, status),
                 wakeup_kind = COALESCE(?4, wakeup_kind),
                 wakeup_url = CASE WHEN ?4 IS NULL THEN wakeup_url ELSE ?5 END,
                 wakeup_secret_enc = CASE WHEN ?4 IS NULL THEN wakeup_secret_enc
                                          WHEN ?4 = 'poll' THEN NULL
                                          ELSE COALESCE(?6, wakeup_secret_enc) END,
                 updated_at = ?7
             WHERE id = ?1
             RETURNING ",
            agent_columns!(),
            ""
        ))
        .bind(id)
        .bind(changes.name.as_ref().map(Title::as_str))
        .bind(changes.status.map(AgentStatus::as_str))
        .bind(wakeup_kind)
        .bind(wakeup_url)
        .bind(sealed)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let entry =
            NewActivity::agent_updated((company_id, id), status, &changes, wakeup_kind, actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(UpdatedAgent {
            agent: row.into(),
            wakeup_secret: new_secret,
        })
    }

    /// See [`crate::store::Storage::issue_agent_key`].
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    pub async fn issue_agent_key(&self, agent_id: Uuid, actor: Actor) -> StoreResult<IssuedKey> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let (company_id, status) = sqlx::query_as::<_, (Uuid, AgentStatus)>(
            "SELECT company_id, status FROM agents WHERE id = ?1",
        )
        .bind(agent_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        agent_allows(status, AgentAttempt::IssueKey)?;
        let key = self.insert_key(&mut tx, company_id, agent_id, now).await?;
        let entry = NewActivity::agent_key_created(company_id, agent_id, key.id, actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(key)
    }

    /// See [`crate::store::Storage::revoke_agent_key`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn revoke_agent_key(
        &self,
        agent_id: Uuid,
        key_id: Uuid,
        actor: Actor,
    ) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let (company_id, revoked_at) = sqlx::query_as::<_, (Uuid, Option<DateTime<Utc>>)>(
            "SELECT company_id, revoked_at FROM agent_keys WHERE id = ?1 AND agent_id = ?2",
        )
        .bind(key_id)
        .bind(agent_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        if revoked_at.is_none() {
            sqlx::query("UPDATE agent_keys SET revoked_at = ?2 WHERE id = ?1")
                .bind(key_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let entry = NewActivity::agent_key_revoked(company_id, agent_id, key_id, actor);
            record(&mut tx, vec![entry], now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_key(
        &self,
        conn: &mut SqliteConnection,
        company_id: Uuid,
        agent_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<IssuedKey> {
        let id = new_id();
        let api_key = generate_token(AGENT_KEY_PREFIX);
        sqlx::query(
            "INSERT INTO agent_keys (id, company_id, agent_id, key_hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(id)
        .bind(company_id)
        .bind(agent_id)
        .bind(self.hasher.hash(&api_key))
        .bind(now)
        .execute(conn)
        .await?;
        Ok(IssuedKey { id, api_key })
    }
}

/// Checks that an agent of the company can take new work.
pub(super) async fn ensure_assignable(
    conn: &mut SqliteConnection,
    company_id: Uuid,
    agent_id: Uuid,
) -> StoreResult<()> {
    let status = sqlx::query_scalar::<_, AgentStatus>(
        "SELECT status FROM agents WHERE company_id = ?1 AND id = ?2",
    )
    .bind(company_id)
    .bind(agent_id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::InvalidReference {
        field: "assigneeAgentId",
    })?;
    assignable(status)?;
    Ok(())
}
