//! The activity log on SQLite.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::SqliteStore;
use crate::{
    model::ActivityEntry,
    store::{NewActivity, StoreResult, new_id},
};

impl SqliteStore {
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
}

/// Writes audit entries in the caller's transaction.
pub(super) async fn record(
    conn: &mut SqliteConnection,
    entries: Vec<NewActivity<'_>>,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    for entry in entries {
        sqlx::query(
            "INSERT INTO activity_log
                 (id, company_id, actor_type, actor_id, action, entity_type, entity_id, details, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(new_id())
        .bind(entry.company_id)
        .bind(entry.actor.actor_type().as_str())
        .bind(entry.actor.actor_id())
        .bind(entry.action)
        .bind(entry.entity_type)
        .bind(entry.entity_id)
        .bind(&entry.details)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
