//! Heartbeat runs on SQLite: queued for an agent, claimed, finished.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{SqliteStore, jobs::enqueue, record};
use crate::{
    engine::refusal::Refusal,
    model::{Actor, FinishStatus, HeartbeatRun, HeartbeatStatus, Summary},
    queue::{JobSpec, Task, WAKEUP_MAX_ATTEMPTS},
    store::{
        NewActivity, StoreError, StoreResult,
        heartbeats::{HeartbeatRow, NewHeartbeat},
        new_id,
    },
};

/// Inserts heartbeat runs and, for agents woken over HTTP, their delivery jobs; returns the
/// runs and whether jobs were enqueued (the caller announces them after committing).
pub(super) async fn insert_heartbeats(
    conn: &mut SqliteConnection,
    new: Vec<NewHeartbeat>,
    now: DateTime<Utc>,
) -> StoreResult<(Vec<HeartbeatRun>, bool)> {
    let mut runs = Vec::with_capacity(new.len());
    let mut deliveries = Vec::new();
    // Whether each agent is woken over HTTP, read once per agent (a batch wakes few agents).
    let mut http_agents: std::collections::HashMap<Uuid, bool> = std::collections::HashMap::new();
    for heartbeat in new {
        let row = sqlx::query_as::<_, HeartbeatRow>(concat!(
            "INSERT INTO heartbeat_runs (id, company_id, agent_id, issue_id, routine_run_id,
                                         status, context, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7)
             RETURNING ",
            heartbeat_columns!()
        ))
        .bind(new_id())
        .bind(heartbeat.company_id)
        .bind(heartbeat.agent_id)
        .bind(heartbeat.issue_id)
        .bind(heartbeat.routine_run_id)
        .bind(sqlx::types::Json(&heartbeat.context))
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
        let run = HeartbeatRun::from(row);
        let http = match http_agents.get(&run.agent_id) {
            Some(http) => *http,
            None => {
                let http = sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM agents WHERE id = ?1 AND wakeup_kind = 'http')",
                )
                .bind(run.agent_id)
                .fetch_one(&mut *conn)
                .await?;
                http_agents.insert(run.agent_id, http);
                http
            }
        };
        if http {
            deliveries.push(JobSpec {
                task: Task::DeliverWakeup {
                    heartbeat_run_id: run.id,
                },
                run_at: now,
                max_attempts: WAKEUP_MAX_ATTEMPTS,
                trace_context: None,
            });
        }
        runs.push(run);
    }
    let enqueued = !deliveries.is_empty();
    enqueue(conn, deliveries, now).await?;
    Ok((runs, enqueued))
}

impl SqliteStore {
    /// See [`crate::store::Storage::heartbeat_run`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn heartbeat_run(&self, id: Uuid) -> StoreResult<HeartbeatRun> {
        sqlx::query_as::<_, HeartbeatRow>(concat!(
            "SELECT ",
            heartbeat_columns!(),
            " FROM heartbeat_runs WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(HeartbeatRun::from)
        .ok_or(StoreError::NotFound)
    }

    /// See [`crate::store::Storage::agent_heartbeat_runs`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn agent_heartbeat_runs(
        &self,
        agent_id: Uuid,
        status: Option<HeartbeatStatus>,
        limit: i64,
    ) -> StoreResult<Vec<HeartbeatRun>> {
        let rows = sqlx::query_as::<_, HeartbeatRow>(concat!(
            "SELECT ",
            heartbeat_columns!(),
            " FROM heartbeat_runs
              WHERE agent_id = ?1 AND (?2 IS NULL OR status = ?2)
              ORDER BY created_at, id
              LIMIT ?3"
        ))
        .bind(agent_id)
        .bind(status.map(HeartbeatStatus::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(HeartbeatRun::from).collect())
    }

    /// See [`crate::store::Storage::claim_heartbeat_run`].
    ///
    /// # Errors
    /// `Refused` when not queued; the database failed.
    pub async fn claim_heartbeat_run(&self, id: Uuid, actor: Actor) -> StoreResult<HeartbeatRun> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query_as::<_, HeartbeatRow>(concat!(
            "UPDATE heartbeat_runs SET status = 'running', started_at = ?2
             WHERE id = ?1 AND status = 'queued'
             RETURNING ",
            heartbeat_columns!()
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::from(Refusal::HeartbeatNotQueued))?;
        let run = HeartbeatRun::from(row);
        let entry = NewActivity::heartbeat_claimed(run.company_id, (id, run.issue_id), actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(run)
    }

    /// See [`crate::store::Storage::finish_heartbeat_run`].
    ///
    /// # Errors
    /// `Refused` when not running; the database failed.
    pub async fn finish_heartbeat_run(
        &self,
        id: Uuid,
        status: FinishStatus,
        summary: Option<Summary>,
        actor: Actor,
    ) -> StoreResult<HeartbeatRun> {
        let now = self.now();
        let final_status = HeartbeatStatus::from(status);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query_as::<_, HeartbeatRow>(concat!(
            "UPDATE heartbeat_runs SET status = ?2, finished_at = ?3, summary = ?4
             WHERE id = ?1 AND status = 'running'
             RETURNING ",
            heartbeat_columns!()
        ))
        .bind(id)
        .bind(final_status.as_str())
        .bind(now)
        .bind(summary.as_ref().map(Summary::as_str))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::from(Refusal::HeartbeatNotRunning))?;
        let run = HeartbeatRun::from(row);
        let entry = NewActivity::heartbeat_finished(run.company_id, id, final_status, actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(run)
    }
}
