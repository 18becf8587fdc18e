//! The change log on SQLite: the same batches as on Postgres (`store/pg/events.rs`), in one
//! transaction of the one writer.

use uuid::Uuid;

use super::SqliteStore;
use crate::store::{
    ChangeEvent, EVENTS_KEPT, EventLogState, StoreResult,
    events::{EventRow, events},
};

/// Most expired events deleted per relay batch.
const PURGE_BATCH: i64 = 10_000;

impl SqliteStore {
    /// See [`crate::store::Storage::relay_events`].
    ///
    /// # Errors
    /// The database failed (nothing is moved).
    pub async fn relay_events(&self, limit: i64) -> StoreResult<u64> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        // A write first, so the transaction holds the database from here on.
        let last_id: i64 =
            sqlx::query_scalar("UPDATE event_log SET last_id = last_id RETURNING last_id")
                .fetch_one(&mut *tx)
                .await?;
        let moved = sqlx::query(
            "INSERT INTO company_events (id, company_id, kind, resource_id, routine_id, created_at)
             SELECT ?1 + row_number() OVER (ORDER BY seq), company_id, kind, resource_id,
                    routine_id, ?3
             FROM (SELECT * FROM event_outbox ORDER BY seq LIMIT ?2)",
        )
        .bind(last_id)
        .bind(limit)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM event_outbox WHERE seq IN (
                 SELECT seq FROM event_outbox ORDER BY seq LIMIT ?1)",
        )
        .bind(i64::try_from(moved).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        // The expired events are the oldest numbers (see the Postgres store).
        let purged: Option<i64> = sqlx::query_scalar(
            "DELETE FROM company_events WHERE id IN (
                 SELECT id FROM (SELECT id, created_at FROM company_events ORDER BY id LIMIT ?2)
                 WHERE created_at < ?1)
             RETURNING id",
        )
        .bind(now - EVENTS_KEPT)
        .bind(PURGE_BATCH)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .max();
        sqlx::query(
            "UPDATE event_log SET last_id = last_id + ?1,
                                  purged_through = max(purged_through, ?2)",
        )
        .bind(i64::try_from(moved).unwrap_or(i64::MAX))
        .bind(purged.unwrap_or(0))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// See [`crate::store::Storage::queue_busy`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn queue_busy(&self) -> StoreResult<bool> {
        self.jobs_waiting().await
    }

    /// See [`crate::store::Storage::event_log`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn event_log(&self) -> StoreResult<EventLogState> {
        let (last_id, purged_through): (i64, i64) =
            sqlx::query_as("SELECT last_id, purged_through FROM event_log")
                .fetch_one(&self.pool)
                .await?;
        Ok(EventLogState {
            last_id,
            purged_through,
        })
    }

    /// See [`crate::store::Storage::events_after`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn events_after(
        &self,
        company_id: Option<Uuid>,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<ChangeEvent>> {
        let rows: Vec<EventRow> = match company_id {
            Some(company_id) => {
                sqlx::query_as(
                    "SELECT id, company_id, kind, resource_id, routine_id FROM company_events
                     WHERE company_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                )
                .bind(company_id)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as(
                    "SELECT id, company_id, kind, resource_id, routine_id FROM company_events
                     WHERE id > ?1 ORDER BY id LIMIT ?2",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(events(rows))
    }
}
