//! Heartbeat runs: requests for an agent to work on an issue, which the agent claims and
//! finishes. `queued → running → succeeded | failed`; the worker may also end them as
//! `timed_out` or `cancelled`.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use super::PgStore;
use crate::{
    engine::{dispatch::NewHeartbeat, refusal::Refusal},
    model::{Actor, FinishStatus, HeartbeatContext, HeartbeatRun, HeartbeatStatus, Summary},
    queue::{JobSpec, Task, WAKEUP_MAX_ATTEMPTS},
    store::{NewActivity, StoreError, StoreResult, heartbeats::HeartbeatRow, new_id},
};

impl NewHeartbeat {
    /// Inserts the heartbeat run, `queued`, inside the caller's transaction.
    pub(crate) async fn insert(
        self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> StoreResult<HeartbeatRun> {
        let mut runs = insert_heartbeats(conn, vec![self], now).await?;
        runs.pop().ok_or(StoreError::NotFound)
    }
}

/// Inserts heartbeat runs, `queued`, in one statement inside the caller's transaction, and
/// enqueues a wake-up delivery for each whose agent is woken over HTTP (workers are notified
/// on commit). Returns the runs in input order.
pub(crate) async fn insert_heartbeats(
    conn: &mut PgConnection,
    new: Vec<NewHeartbeat>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<HeartbeatRun>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let n = new.len();
    let (mut ids, mut companies, mut agents, mut issues, mut origins, mut contexts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for heartbeat in new {
        ids.push(new_id());
        companies.push(heartbeat.company_id);
        agents.push(heartbeat.agent_id);
        issues.push(heartbeat.issue_id);
        origins.push(heartbeat.routine_run_id);
        contexts.push(
            serde_json::to_value(&heartbeat.context)
                .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))?,
        );
    }
    let rows = sqlx::query_as!(
        HeartbeatRow,
        r#"INSERT INTO heartbeat_runs (id, company_id, agent_id, issue_id, routine_run_id, status,
                                       context, created_at)
           SELECT id, company_id, agent_id, issue_id, routine_run_id, 'queued', context, $7
           FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::jsonb[])
                AS h(id, company_id, agent_id, issue_id, routine_run_id, context)
           RETURNING id, company_id, agent_id, issue_id, routine_run_id,
                     status AS "status: HeartbeatStatus",
                     context AS "context: Json<HeartbeatContext>",
                     created_at, started_at, finished_at, summary"#,
        &ids,
        &companies,
        &agents,
        &issues,
        &origins as &[Option<Uuid>],
        &contexts,
        now,
    )
    .fetch_all(&mut *conn)
    .await?;
    let http: Vec<Uuid> = sqlx::query_scalar!(
        "SELECT id FROM agents WHERE id = ANY($1) AND wakeup_kind = 'http'",
        &agents
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut by_id: std::collections::HashMap<Uuid, HeartbeatRun> =
        rows.into_iter().map(|r| (r.id, r.into())).collect();
    let runs: Vec<HeartbeatRun> = ids.iter().filter_map(|id| by_id.remove(id)).collect();
    let deliveries: Vec<JobSpec> = runs
        .iter()
        .filter(|run| http.contains(&run.agent_id))
        .map(|run| JobSpec {
            task: Task::DeliverWakeup {
                heartbeat_run_id: run.id,
            },
            run_at: now,
            max_attempts: WAKEUP_MAX_ATTEMPTS,
            trace_context: None,
        })
        .collect();
    if !deliveries.is_empty() {
        super::jobs::enqueue_all_quietly(conn, deliveries, now).await?;
        super::jobs::notify(conn).await?;
    }
    Ok(runs)
}

impl PgStore {
    /// One heartbeat run.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or the database failed.
    pub async fn heartbeat_run(&self, id: Uuid) -> StoreResult<HeartbeatRun> {
        sqlx::query_as!(
            HeartbeatRow,
            r#"SELECT id, company_id, agent_id, issue_id, routine_run_id,
                      status AS "status: HeartbeatStatus",
                      context AS "context: Json<HeartbeatContext>",
                      created_at, started_at, finished_at, summary
               FROM heartbeat_runs WHERE id = $1"#,
            id,
        )
        .fetch_optional(&self.pool)
        .await?
        .map(HeartbeatRun::from)
        .ok_or(StoreError::NotFound)
    }

    /// An agent's heartbeat runs, oldest first, optionally only those in `status`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn agent_heartbeat_runs(
        &self,
        agent_id: Uuid,
        status: Option<HeartbeatStatus>,
        limit: i64,
    ) -> StoreResult<Vec<HeartbeatRun>> {
        let rows = sqlx::query_as!(
            HeartbeatRow,
            r#"SELECT id, company_id, agent_id, issue_id, routine_run_id,
                      status AS "status: HeartbeatStatus",
                      context AS "context: Json<HeartbeatContext>",
                      created_at, started_at, finished_at, summary
               FROM heartbeat_runs
               WHERE agent_id = $1 AND ($2::text IS NULL OR status = $2)
               ORDER BY created_at, id
               LIMIT $3"#,
            agent_id,
            status.map(HeartbeatStatus::as_str),
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(HeartbeatRun::from).collect())
    }

    /// Moves a heartbeat run from `queued` to `running`.
    ///
    /// # Errors
    /// [`StoreError::Refused`] `not_queued` when it is in another state; the database failed.
    pub async fn claim_heartbeat_run(&self, id: Uuid, actor: Actor) -> StoreResult<HeartbeatRun> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query_as!(
            HeartbeatRow,
            r#"UPDATE heartbeat_runs SET status = 'running', started_at = $2
               WHERE id = $1 AND status = 'queued'
               RETURNING id, company_id, agent_id, issue_id, routine_run_id,
                         status AS "status: HeartbeatStatus",
                         context AS "context: Json<HeartbeatContext>",
                         created_at, started_at, finished_at, summary"#,
            id,
            now,
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::from(Refusal::HeartbeatNotQueued))?;
        NewActivity::heartbeat_claimed(row.company_id, (id, row.issue_id), actor)
            .record(&mut tx, now)
            .await?;
        tx.commit().await?;
        Ok(row.into())
    }

    /// Moves a heartbeat run from `running` to its final status.
    ///
    /// # Errors
    /// [`StoreError::Refused`] `not_running` when it is in another state; the database failed.
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
        let row = sqlx::query_as!(
            HeartbeatRow,
            r#"UPDATE heartbeat_runs SET status = $2, finished_at = $3, summary = $4
               WHERE id = $1 AND status = 'running'
               RETURNING id, company_id, agent_id, issue_id, routine_run_id,
                         status AS "status: HeartbeatStatus",
                         context AS "context: Json<HeartbeatContext>",
                         created_at, started_at, finished_at, summary"#,
            id,
            final_status.as_str(),
            now,
            summary.as_ref().map(Summary::as_str),
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::from(Refusal::HeartbeatNotRunning))?;
        NewActivity::heartbeat_finished(row.company_id, id, final_status, actor)
            .record(&mut tx, now)
            .await?;
        tx.commit().await?;
        Ok(row.into())
    }
}
