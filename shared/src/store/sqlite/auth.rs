//! Bearer tokens on SQLite: board tokens and agent keys, stored as keyed hashes.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::SqliteStore;
use crate::{
    crypto::{AGENT_KEY_PREFIX, BOARD_TOKEN_PREFIX, generate_token},
    model::Actor,
    store::{BoardToken, BoardTokenInfo, StoreResult, auth::LAST_USED_EVERY, new_id},
};

impl SqliteStore {
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
}
