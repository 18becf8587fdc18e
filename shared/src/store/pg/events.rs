//! The change log on Postgres (see [`crate::store::events`]). A relay batch locks the log's
//! only row (`SKIP LOCKED`: another process already relaying is left to it), moves up to a
//! batch of committed outbox rows into `company_events` with the next numbers, deletes the
//! events older than [`EVENTS_KEPT`], and commits before the row is free again: numbers are
//! given in the order events become visible.

use uuid::Uuid;

use super::PgStore;
use crate::store::{
    ChangeEvent, EVENTS_KEPT, EventLogState, StoreResult,
    events::{EventRow, events},
};

/// Most expired events deleted per relay batch.
const PURGE_BATCH: i64 = 10_000;

impl PgStore {
    /// See [`crate::store::Storage::relay_events`].
    ///
    /// # Errors
    /// The database failed (nothing is moved).
    pub async fn relay_events(&self, limit: i64) -> StoreResult<u64> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let Some(log) =
            sqlx::query!("SELECT last_id, purged_through FROM event_log FOR UPDATE SKIP LOCKED")
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(0);
        };
        let moved = sqlx::query_scalar!(
            r#"WITH batch AS (
                   DELETE FROM event_outbox WHERE seq IN (
                       SELECT seq FROM event_outbox ORDER BY seq LIMIT $2)
                   RETURNING seq, company_id, kind, resource_id, routine_id),
               numbered AS (
                   INSERT INTO company_events (id, company_id, kind, resource_id, routine_id,
                                               created_at)
                   SELECT $1 + row_number() OVER (ORDER BY seq), company_id, kind, resource_id,
                          routine_id, $3
                   FROM batch
                   RETURNING id)
               SELECT count(*) AS "moved!" FROM numbered"#,
            log.last_id,
            limit,
            now,
        )
        .fetch_one(&mut *tx)
        .await?;
        // Numbers are given in time order, so the expired events are the oldest numbers: walk
        // the key from the start, at most a batch of them (no index on the time).
        let purged = sqlx::query_scalar!(
            r#"WITH gone AS (
                   DELETE FROM company_events WHERE id IN (
                       SELECT id FROM (SELECT id, created_at FROM company_events
                                       ORDER BY id LIMIT $2) oldest
                       WHERE created_at < $1)
                   RETURNING id)
               SELECT max(id) FROM gone"#,
            now - EVENTS_KEPT,
            PURGE_BATCH,
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE event_log SET last_id = last_id + $1,
                                  purged_through = GREATEST(purged_through, $2)",
            moved,
            purged.unwrap_or(0),
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(u64::try_from(moved).unwrap_or(0))
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
        let log = sqlx::query!("SELECT last_id, purged_through FROM event_log")
            .fetch_one(&self.pool)
            .await?;
        Ok(EventLogState {
            last_id: log.last_id,
            purged_through: log.purged_through,
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
        // Two statements, so each is a range scan of its own index.
        let rows: Vec<EventRow> = match company_id {
            Some(company_id) => {
                sqlx::query_as(
                    "SELECT id, company_id, kind, resource_id, routine_id FROM company_events
                     WHERE company_id = $1 AND id > $2 ORDER BY id LIMIT $3",
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
                     WHERE id > $1 ORDER BY id LIMIT $2",
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
