//! Bearer tokens: board tokens (instance-wide operators) and agent keys (one company). Only
//! keyed hashes are stored; a presented token is hashed and looked up.

use uuid::Uuid;

use super::PgStore;
use crate::{
    crypto::{AGENT_KEY_PREFIX, BOARD_TOKEN_PREFIX, generate_token},
    model::Actor,
    store::{BoardToken, BoardTokenInfo, StoreResult, auth::LAST_USED_EVERY, new_id},
};

impl PgStore {
    /// The actor a bearer token stands for: a live board token, or an unrevoked key of an agent
    /// that is not terminated. `None` for anything else.
    ///
    /// # Errors
    /// The database failed.
    pub async fn authenticate(&self, token: &str) -> StoreResult<Option<Actor>> {
        let hash = self.hasher.hash(token);
        if token.starts_with(AGENT_KEY_PREFIX) {
            let agent = sqlx::query!(
                "SELECT k.agent_id, k.company_id FROM agent_keys k
                 JOIN agents a ON a.id = k.agent_id
                 WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND a.status <> 'terminated'",
                hash
            )
            .fetch_optional(&self.pool)
            .await?;
            return Ok(agent.map(|a| Actor::Agent {
                agent_id: a.agent_id,
                company_id: a.company_id,
            }));
        }
        let Some(board) = sqlx::query!(
            "SELECT id, last_used_at FROM board_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
            hash
        )
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let now = self.now();
        if board
            .last_used_at
            .is_none_or(|at| now - at >= LAST_USED_EVERY)
        {
            sqlx::query!(
                "UPDATE board_tokens SET last_used_at = $2 WHERE id = $1",
                board.id,
                now
            )
            .execute(&self.pool)
            .await?;
        }
        Ok(Some(Actor::Board { token_id: board.id }))
    }

    /// Every board token, oldest first, without the tokens themselves.
    ///
    /// # Errors
    /// The database failed.
    pub async fn board_tokens(&self) -> StoreResult<Vec<BoardTokenInfo>> {
        Ok(sqlx::query_as!(
            BoardTokenInfo,
            "SELECT id, label, created_at, last_used_at, revoked_at FROM board_tokens
             ORDER BY created_at, id"
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a board token: it is refused from the next request on, by every replica (tokens
    /// are looked up on every request). `false` when no such token exists; revoking a revoked
    /// token keeps its first revocation time.
    ///
    /// # Errors
    /// The database failed.
    pub async fn revoke_board_token(&self, id: Uuid) -> StoreResult<bool> {
        let found = sqlx::query!(
            "UPDATE board_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
            id,
            self.now()
        )
        .execute(&self.pool)
        .await?;
        Ok(found.rows_affected() == 1)
    }

    /// Creates a board token.
    ///
    /// # Errors
    /// The database failed.
    pub async fn create_board_token(&self, label: &str) -> StoreResult<BoardToken> {
        let token = generate_token(BOARD_TOKEN_PREFIX);
        let id = self.insert_board_token(&token, label).await?;
        Ok(BoardToken { id, token })
    }

    /// Makes `token` a valid board token if it is not one already (`NEXUS_BOOTSTRAP_BOARD_TOKEN`).
    ///
    /// # Errors
    /// The database failed.
    pub async fn ensure_board_token(&self, token: &str, label: &str) -> StoreResult<()> {
        self.insert_board_token(token, label).await.map(drop)
    }

    /// Whether any unrevoked board token exists.
    ///
    /// # Errors
    /// The database failed.
    pub async fn has_board_token(&self) -> StoreResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM board_tokens WHERE revoked_at IS NULL) AS "exists!""#
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn insert_board_token(&self, token: &str, label: &str) -> StoreResult<Uuid> {
        let id = new_id();
        sqlx::query!(
            "INSERT INTO board_tokens (id, token_hash, label, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (token_hash) DO NOTHING",
            id,
            self.hasher.hash(token),
            label,
            self.now(),
        )
        .execute(&self.pool)
        .await?;
        Ok(id)
    }
}
