//! The per-company audit log.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Store, StoreResult, new_id};
use crate::model::{ActivityEntry, Actor, ActorType};

/// One mutation to record.
#[derive(Debug)]
pub struct NewActivity<'a> {
    /// The company whose log gets the entry.
    pub company_id: Uuid,
    /// Who did it.
    pub actor: Actor,
    /// What was done, `<entity>.<verb>`.
    pub action: &'a str,
    /// The kind of thing it was done to.
    pub entity_type: &'a str,
    /// The thing it was done to.
    pub entity_id: Uuid,
    /// Details of the change (never a secret).
    pub details: serde_json::Value,
}

impl NewActivity<'_> {
    /// Writes the entry on `conn` (inside the mutation's transaction).
    pub(crate) async fn record(
        self,
        conn: &mut PgConnection,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query!(
            "INSERT INTO activity_log
                 (id, company_id, actor_type, actor_id, action, entity_type, entity_id, details, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            new_id(),
            self.company_id,
            self.actor.actor_type().as_str(),
            self.actor.actor_id(),
            self.action,
            self.entity_type,
            self.entity_id,
            self.details,
            at,
        )
        .execute(conn)
        .await?;
        Ok(())
    }
}

impl Store {
    /// The newest `limit` entries of a company's log, newest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn activity(&self, company_id: Uuid, limit: i64) -> StoreResult<Vec<ActivityEntry>> {
        Ok(sqlx::query_as!(
            ActivityEntry,
            r#"SELECT id, actor_type AS "actor_type: ActorType", actor_id, action, entity_type,
                      entity_id, details, created_at
               FROM activity_log WHERE company_id = $1
               ORDER BY created_at DESC, id DESC LIMIT $2"#,
            company_id,
            limit,
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
