//! The console's system figures on Postgres (see [`crate::store::Storage::fire_lateness`]).

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::{
    queue::QueueDepth,
    store::{FireLateness, SchedulerLeader, StoreResult},
};

impl PgStore {
    /// See [`crate::store::Storage::scheduler_leader`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn scheduler_leader(&self) -> StoreResult<SchedulerLeader> {
        let row =
            sqlx::query!("SELECT epoch, leader_id, updated_at FROM scheduler_epoch WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(SchedulerLeader {
            epoch: row.epoch,
            leader_id: row.leader_id,
            since: row.updated_at,
        })
    }

    /// See [`crate::store::Storage::queue_status`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn queue_status(&self) -> StoreResult<Vec<QueueDepth>> {
        self.queue_depth().await
    }

    /// See [`crate::store::Storage::fire_lateness`]. Both statements walk
    /// `routine_runs_fire_at` over the interval only.
    ///
    /// # Errors
    /// The database failed.
    pub async fn fire_lateness(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        sample: i64,
    ) -> StoreResult<FireLateness> {
        let fires = sqlx::query_scalar!(
            r#"SELECT count(*) AS "fires!" FROM routine_runs
               WHERE fire_at >= $1 AND fire_at < $2 AND fire_at IS NOT NULL AND NOT catch_up"#,
            from,
            to,
        )
        .fetch_one(&self.pool)
        .await?;
        let pairs = sqlx::query!(
            r#"SELECT r.fire_at AS "fire_at!", h.created_at
               FROM (SELECT fire_at, heartbeat_run_id FROM routine_runs
                     WHERE fire_at >= $1 AND fire_at < $2 AND fire_at IS NOT NULL
                       AND NOT catch_up AND heartbeat_run_id IS NOT NULL
                     ORDER BY fire_at LIMIT $3) r
               JOIN heartbeat_runs h ON h.id = r.heartbeat_run_id"#,
            from,
            to,
            sample,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(FireLateness {
            fires,
            lateness: pairs
                .into_iter()
                .map(|p| (p.created_at - p.fire_at).as_seconds_f64().max(0.0))
                .collect(),
        })
    }
}
