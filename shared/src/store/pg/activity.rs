//! The per-company audit log.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::PgStore;
use crate::model::{ActivityEntry, ActorType};
use crate::store::{NewActivity, StoreResult, new_id};

impl NewActivity<'_> {
    /// Writes the entry on `conn` (inside the mutation's transaction).
    pub(crate) async fn record(
        self,
        conn: &mut PgConnection,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        record_all(conn, vec![self], at).await
    }
}

/// Writes many entries in one statement (inside the mutations' transaction).
pub(crate) async fn record_all(
    conn: &mut PgConnection,
    entries: Vec<NewActivity<'_>>,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let n = entries.len();
    let (mut ids, mut companies, mut actor_types, mut actor_ids) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut actions, mut entity_types, mut entity_ids, mut details) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for entry in entries {
        ids.push(new_id());
        companies.push(entry.company_id);
        actor_types.push(entry.actor.actor_type().as_str().to_owned());
        actor_ids.push(entry.actor.actor_id());
        actions.push(entry.action.to_owned());
        entity_types.push(entry.entity_type.to_owned());
        entity_ids.push(entry.entity_id);
        details.push(entry.details);
    }
    sqlx::query!(
        "INSERT INTO activity_log
             (id, company_id, actor_type, actor_id, action, entity_type, entity_id, details, created_at)
         SELECT id, company_id, actor_type, actor_id, action, entity_type, entity_id, details, $9
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::uuid[], $8::jsonb[])
              AS a(id, company_id, actor_type, actor_id, action, entity_type, entity_id, details)",
        &ids,
        &companies,
        &actor_types,
        &actor_ids as &[Option<Uuid>],
        &actions,
        &entity_types,
        &entity_ids,
        &details,
        at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

impl PgStore {
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
