//! The scheduler's upkeep on Postgres: paused routines whose `pausedUntil` came resume, runs
//! whose deadline passed with their issue open time out — fenced by the leader's epoch, one
//! transaction each.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    PgStore, begin_by_key,
    fires::fence,
    health::{end_waiting_run, settle},
    routines::change_routine,
};
use crate::{
    engine::health::{RunChange, TIMED_OUT, TIMED_OUT_ENDING},
    model::{Actor, IssueEventType, RoutineStatus},
    store::{
        Leadership, NewActivity, RoutineChanges, StoreResult, new_id, notifications::UpkeepReport,
    },
};

/// Times out one run whose deadline passed, if its issue is still open: the issue becomes
/// `cancelled` by `system` (reason `timed_out`), its queued and running heartbeat runs
/// `timed_out`, the run `failed` (`timed_out`). Returns whether it did.
async fn time_out_run(
    conn: &mut PgConnection,
    run_id: Uuid,
    issue_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Option<RunChange>> {
    // Issue first, as a status change locks it.
    let issue = sqlx::query!(
        "SELECT id, company_id, status FROM issues WHERE id = $1 FOR NO KEY UPDATE",
        issue_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(issue) = issue.filter(|i| !matches!(i.status.as_str(), "done" | "cancelled")) else {
        // Closing the issue ended the run and dropped its deadline in one transaction; a
        // deadline left behind by anything else is dropped here, not read at every pass.
        sqlx::query!("DELETE FROM run_deadlines WHERE run_id = $1", run_id)
            .execute(&mut *conn)
            .await?;
        return Ok(None);
    };
    let Some(ended) = end_waiting_run(conn, run_id, &TIMED_OUT_ENDING, now).await? else {
        return Ok(None);
    };
    sqlx::query!(
        "UPDATE issues SET status = 'cancelled', updated_at = $2 WHERE id = $1",
        issue.id,
        now
    )
    .execute(&mut *conn)
    .await?;
    let change = json!({ "from": issue.status, "to": "cancelled", "reason": TIMED_OUT });
    sqlx::query!(
        "INSERT INTO issue_events (id, company_id, issue_id, type, actor_type, actor_id, data, created_at)
         VALUES ($1, $2, $3, $4, 'system', NULL, $5, $6)",
        new_id(),
        issue.company_id,
        issue.id,
        IssueEventType::StatusChanged.as_str(),
        change,
        now,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE heartbeat_runs SET status = 'timed_out', finished_at = $2
         WHERE issue_id = $1 AND status IN ('queued', 'running')",
        issue.id,
        now
    )
    .execute(&mut *conn)
    .await?;
    NewActivity::run_timed_out(issue.company_id, run_id, issue.id)
        .record(conn, now)
        .await?;
    Ok(Some(ended))
}

impl PgStore {
    /// The scheduler's upkeep at the clock's now, fenced by `leadership`: paused routines whose
    /// `pausedUntil` came become active (catching up nothing), and runs whose deadline passed
    /// with their issue open time out — up to `batch` of each, one transaction each.
    ///
    /// # Errors
    /// `Refused` `deposed`; the database failed.
    pub async fn upkeep(&self, leadership: &Leadership, batch: i64) -> StoreResult<UpkeepReport> {
        let now = self.now();
        let mut report = UpkeepReport::default();
        // Fenced once up front, as on SQLite, so a deposed leader learns it even when nothing
        // is due; each change below is fenced again in its own transaction.
        let mut tx = begin_by_key(&self.pool).await?;
        fence(&mut tx, leadership, now).await?;
        tx.commit().await?;
        let due = sqlx::query_scalar!(
            "SELECT id FROM routines WHERE status = 'paused' AND paused_until <= $1
             ORDER BY paused_until LIMIT $2",
            now,
            batch
        )
        .fetch_all(&self.pool)
        .await?;
        for id in due {
            let mut tx = begin_by_key(&self.pool).await?;
            fence(&mut tx, leadership, now).await?;
            let still = sqlx::query_scalar!(
                "SELECT id FROM routines WHERE id = $1 AND status = 'paused' AND paused_until <= $2
                 FOR NO KEY UPDATE SKIP LOCKED",
                id,
                now
            )
            .fetch_optional(&mut *tx)
            .await?;
            if still.is_none() {
                continue;
            }
            let changes = RoutineChanges {
                status: Some(RoutineStatus::Active),
                ..RoutineChanges::default()
            };
            change_routine(&mut tx, id, &changes, Actor::System, now).await?;
            tx.commit().await?;
            report.resumed += 1;
        }
        let overdue = sqlx::query!(
            "SELECT run_id AS id, issue_id FROM run_deadlines
             WHERE deadline_at <= $1 ORDER BY deadline_at LIMIT $2",
            now,
            batch
        )
        .fetch_all(&self.pool)
        .await?;
        for run in overdue {
            let mut tx = begin_by_key(&self.pool).await?;
            fence(&mut tx, leadership, now).await?;
            if let Some(change) = time_out_run(&mut tx, run.id, run.issue_id, now).await? {
                settle(&mut tx, &[change], now).await?;
                report.timed_out += 1;
            }
            tx.commit().await?;
        }
        Ok(report)
    }
}
