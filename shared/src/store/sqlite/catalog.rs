//! Companies, projects, goals, the activity log, tokens and agents on SQLite.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{SqliteStore, company_exists, record};
use crate::{
    crypto::{
        AGENT_KEY_PREFIX, BOARD_TOKEN_PREFIX, generate_standard_webhooks_secret, generate_token,
    },
    model::{ActivityEntry, Actor, Agent, AgentStatus, Company, Goal, Project, Title},
    store::{
        AgentChanges, BoardToken, BoardTokenInfo, CreatedAgent, IssuedKey, NewActivity, StoreError,
        StoreResult, UpdatedAgent, WakeupSpec, agents::AgentRow, auth::LAST_USED_EVERY, new_id,
    },
};

/// The columns of an [`AgentRow`].
macro_rules! agent_columns {
    () => {
        "id, company_id, name, status, wakeup_kind, wakeup_url, created_at"
    };
}

impl SqliteStore {
    /// See [`crate::store::Storage::create_company`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn create_company(&self, name: Title, actor: Actor) -> StoreResult<Company> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let company = sqlx::query_as::<_, Company>(
            "INSERT INTO companies (id, name, created_at) VALUES (?1, ?2, ?3)
             RETURNING id, name, created_at",
        )
        .bind(new_id())
        .bind(name.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let entry = NewActivity {
            company_id: company.id,
            actor,
            action: "company.created",
            entity_type: "company",
            entity_id: company.id,
            details: json!({ "name": company.name }),
        };
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(company)
    }

    /// See [`crate::store::Storage::companies`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn companies(&self) -> StoreResult<Vec<Company>> {
        Ok(sqlx::query_as::<_, Company>(
            "SELECT id, name, created_at FROM companies ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// See [`crate::store::Storage::company`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn company(&self, id: Uuid) -> StoreResult<Company> {
        sqlx::query_as::<_, Company>("SELECT id, name, created_at FROM companies WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// See [`crate::store::Storage::create_project`].
    ///
    /// # Errors
    /// `NotFound` (company); the database failed.
    pub async fn create_project(
        &self,
        company_id: Uuid,
        name: Title,
        actor: Actor,
    ) -> StoreResult<Project> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !company_exists(&mut tx, company_id).await? {
            return Err(StoreError::NotFound);
        }
        let project = sqlx::query_as::<_, Project>(
            "INSERT INTO projects (id, company_id, name, created_at) VALUES (?1, ?2, ?3, ?4)
             RETURNING id, company_id, name, created_at",
        )
        .bind(new_id())
        .bind(company_id)
        .bind(name.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let entry = NewActivity {
            company_id,
            actor,
            action: "project.created",
            entity_type: "project",
            entity_id: project.id,
            details: json!({ "name": project.name }),
        };
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(project)
    }

    /// See [`crate::store::Storage::projects`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn projects(&self, company_id: Uuid) -> StoreResult<Vec<Project>> {
        Ok(sqlx::query_as::<_, Project>(
            "SELECT id, company_id, name, created_at FROM projects
             WHERE company_id = ?1 ORDER BY created_at, id",
        )
        .bind(company_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// See [`crate::store::Storage::create_goal`].
    ///
    /// # Errors
    /// `NotFound` (company); the database failed.
    pub async fn create_goal(
        &self,
        company_id: Uuid,
        title: Title,
        actor: Actor,
    ) -> StoreResult<Goal> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !company_exists(&mut tx, company_id).await? {
            return Err(StoreError::NotFound);
        }
        let goal = sqlx::query_as::<_, Goal>(
            "INSERT INTO goals (id, company_id, title, created_at) VALUES (?1, ?2, ?3, ?4)
             RETURNING id, company_id, title, created_at",
        )
        .bind(new_id())
        .bind(company_id)
        .bind(title.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let entry = NewActivity {
            company_id,
            actor,
            action: "goal.created",
            entity_type: "goal",
            entity_id: goal.id,
            details: json!({ "title": goal.title }),
        };
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(goal)
    }

    /// See [`crate::store::Storage::goals`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn goals(&self, company_id: Uuid) -> StoreResult<Vec<Goal>> {
        Ok(sqlx::query_as::<_, Goal>(
            "SELECT id, company_id, title, created_at FROM goals
             WHERE company_id = ?1 ORDER BY created_at, id",
        )
        .bind(company_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// See [`crate::store::Storage::activity`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn activity(&self, company_id: Uuid, limit: i64) -> StoreResult<Vec<ActivityEntry>> {
        Ok(sqlx::query_as::<_, ActivityEntry>(
            "SELECT id, actor_type, actor_id, action, entity_type, entity_id, details, created_at
             FROM activity_log WHERE company_id = ?1
             ORDER BY created_at DESC, id DESC LIMIT ?2",
        )
        .bind(company_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// See [`crate::store::Storage::authenticate`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn authenticate(&self, token: &str) -> StoreResult<Option<Actor>> {
        let hash = self.hasher.hash(token);
        if token.starts_with(AGENT_KEY_PREFIX) {
            let agent = sqlx::query_as::<_, (Uuid, Uuid)>(
                "SELECT k.agent_id, k.company_id FROM agent_keys k
                 JOIN agents a ON a.id = k.agent_id
                 WHERE k.key_hash = ?1 AND k.revoked_at IS NULL AND a.status <> 'terminated'",
            )
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
            return Ok(agent.map(|(agent_id, company_id)| Actor::Agent {
                agent_id,
                company_id,
            }));
        }
        let Some((id, last_used_at)) = sqlx::query_as::<_, (Uuid, Option<DateTime<Utc>>)>(
            "SELECT id, last_used_at FROM board_tokens WHERE token_hash = ?1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let now = self.now();
        if last_used_at.is_none_or(|at| now - at >= LAST_USED_EVERY) {
            sqlx::query("UPDATE board_tokens SET last_used_at = ?2 WHERE id = ?1")
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(Actor::Board { token_id: id }))
    }

    /// See [`crate::store::Storage::board_tokens`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn board_tokens(&self) -> StoreResult<Vec<BoardTokenInfo>> {
        let rows = sqlx::query_as::<
            _,
            (
                Uuid,
                String,
                DateTime<Utc>,
                Option<DateTime<Utc>>,
                Option<DateTime<Utc>>,
            ),
        >(
            "SELECT id, label, created_at, last_used_at, revoked_at FROM board_tokens
             ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, label, created_at, last_used_at, revoked_at)| BoardTokenInfo {
                    id,
                    label,
                    created_at,
                    last_used_at,
                    revoked_at,
                },
            )
            .collect())
    }

    /// See [`crate::store::Storage::revoke_board_token`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn revoke_board_token(&self, id: Uuid) -> StoreResult<bool> {
        let found = sqlx::query(
            "UPDATE board_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        )
        .bind(id)
        .bind(self.now())
        .execute(&self.pool)
        .await?;
        Ok(found.rows_affected() == 1)
    }

    /// See [`crate::store::Storage::create_board_token`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn create_board_token(&self, label: &str) -> StoreResult<BoardToken> {
        let token = generate_token(BOARD_TOKEN_PREFIX);
        let id = self.insert_board_token(&token, label).await?;
        Ok(BoardToken { id, token })
    }

    /// See [`crate::store::Storage::ensure_board_token`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn ensure_board_token(&self, token: &str, label: &str) -> StoreResult<()> {
        self.insert_board_token(token, label).await.map(drop)
    }

    /// See [`crate::store::Storage::has_board_token`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn has_board_token(&self) -> StoreResult<bool> {
        Ok(sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM board_tokens WHERE revoked_at IS NULL)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn insert_board_token(&self, token: &str, label: &str) -> StoreResult<Uuid> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO board_tokens (id, token_hash, label, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(id)
        .bind(self.hasher.hash(token))
        .bind(label)
        .bind(self.now())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

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
        let entry = NewActivity {
            company_id,
            actor,
            action: "agent.created",
            entity_type: "agent",
            entity_id: id,
            details: json!({ "name": row.name, "wakeup": row.wakeup_kind, "keyId": key.id }),
        };
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
    /// `NotFound`, `Conflict`; the database failed.
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
        if status == AgentStatus::Terminated {
            return Err(StoreError::conflict(
                "agent_terminated",
                "the agent is terminated; a terminated agent cannot be changed",
            ));
        }
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
        let entry = NewActivity {
            company_id,
            actor,
            action: "agent.updated",
            entity_type: "agent",
            entity_id: id,
            details: json!({
                "name": changes.name.as_ref().map(Title::as_str),
                "status": changes.status.map(|s| json!({ "from": status, "to": s })),
                "wakeup": wakeup_kind,
            }),
        };
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
    /// `NotFound`, `Conflict`; the database failed.
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
        if status == AgentStatus::Terminated {
            return Err(StoreError::conflict(
                "agent_terminated",
                "the agent is terminated; it cannot get new keys",
            ));
        }
        let key = self.insert_key(&mut tx, company_id, agent_id, now).await?;
        let entry = NewActivity {
            company_id,
            actor,
            action: "agent_key.created",
            entity_type: "agent",
            entity_id: agent_id,
            details: json!({ "keyId": key.id }),
        };
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
            let entry = NewActivity {
                company_id,
                actor,
                action: "agent_key.revoked",
                entity_type: "agent",
                entity_id: agent_id,
                details: json!({ "keyId": key_id }),
            };
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
