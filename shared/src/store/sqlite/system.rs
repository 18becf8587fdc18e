//! The console's system figures on SQLite: the same statements as on Postgres
//! (`store/pg/system.rs`).

use chrono::{DateTime, Utc};

use super::SqliteStore;
use crate::{
    queue::QueueDepth,
    store::{FireLateness, SchedulerLeader, StoreResult},
};

impl SqliteStore {
    /// See [`crate::store::Storage::scheduler_leader`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn scheduler_leader(&self) -> StoreResult<SchedulerLeader> {
        let (epoch, leader_id, since): (i64, Option<String>, DateTime<Utc>) =
            sqlx::query_as("SELECT epoch, leader_id, updated_at FROM scheduler_epoch WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(SchedulerLeader {
            epoch,
            leader_id,
            since,
        })
    }

    /// See [`crate::store::Storage::queue_status`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn queue_status(&self) -> StoreResult<Vec<QueueDepth>> {
        self.queue_depth().await
    }

    /// See [`crate::store::Storage::fire_lateness`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn fire_lateness(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        sample: i64,
    ) -> StoreResult<FireLateness> {
        let fires: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM routine_runs
             WHERE fire_at >= ?1 AND fire_at < ?2 AND fire_at IS NOT NULL AND NOT catch_up",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        let pairs: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT r.fire_at, h.created_at
             FROM (SELECT fire_at, heartbeat_run_id FROM routine_runs
                   WHERE fire_at >= ?1 AND fire_at < ?2 AND fire_at IS NOT NULL
                     AND NOT catch_up AND heartbeat_run_id IS NOT NULL
                   ORDER BY fire_at LIMIT ?3) r
             JOIN heartbeat_runs h ON h.id = r.heartbeat_run_id",
        )
        .bind(from)
        .bind(to)
        .bind(sample)
        .fetch_all(&self.pool)
        .await?;
        Ok(FireLateness {
            fires,
            lateness: pairs
                .into_iter()
                .map(|(fire_at, created_at)| (created_at - fire_at).as_seconds_f64().max(0.0))
                .collect(),
        })
    }
}
