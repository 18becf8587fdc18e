//! The scheduler's upkeep on SQLite: the same operation as on Postgres
//! (`store/pg/upkeep.rs`), in the one writer's transaction.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{
    SqliteStore, fires::fence, health::settle, issues::insert_event, record,
    routines::change_routine,
};
use crate::{
    engine::health::{RunChange, TIMED_OUT, TIMED_OUT_ENDING},
    model::{Actor, IssueEventType, IssueStatus, RoutineStatus},
    store::{Leadership, NewActivity, RoutineChanges, StoreResult, notifications::UpkeepReport},
};

/// As on Postgres: times out one overdue run whose issue is still open.
async fn time_out_run(
    conn: &mut SqliteConnection,
    run_id: Uuid,
    issue_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Option<RunChange>> {
    let issue = sqlx::query_as::<_, (Uuid, IssueStatus)>(
        "SELECT company_id, status FROM issues WHERE id = ?1",
    )
    .bind(issue_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((company_id, status)) = issue.filter(|(_, status)| !status.is_closed()) else {
        return Ok(None);
    };
    let ending = TIMED_OUT_ENDING;
    let routine_id = sqlx::query_scalar::<_, Uuid>(
        "UPDATE routine_runs SET status = ?2, reason = ?3, failure_reason = ?4,
                                 completed_at = ?5, updated_at = ?5, deadline_at = NULL
         WHERE id = ?1 AND status = 'issue_created' AND deadline_at <= ?5
         RETURNING routine_id",
    )
    .bind(run_id)
    .bind(ending.status.as_str())
    .bind(ending.reason)
    .bind(ending.failure)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(routine_id) = routine_id else {
        return Ok(None);
    };
    sqlx::query("UPDATE issues SET status = 'cancelled', updated_at = ?2 WHERE id = ?1")
        .bind(issue_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let change = json!({ "from": status, "to": IssueStatus::Cancelled, "reason": TIMED_OUT });
    insert_event(
        conn,
        (company_id, issue_id),
        IssueEventType::StatusChanged,
        Actor::System,
        &change,
        now,
    )
    .await?;
    sqlx::query(
        "UPDATE heartbeat_runs SET status = 'timed_out', finished_at = ?2
         WHERE issue_id = ?1 AND status IN ('queued', 'running')",
    )
    .bind(issue_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let entry = NewActivity::run_timed_out(company_id, run_id, issue_id);
    record(conn, vec![entry], now).await?;
    Ok(Some(RunChange {
        run_id,
        routine_id,
        status: ending.status,
        reason: ending.reason.map(str::to_owned),
    }))
}

impl SqliteStore {
    /// See [`crate::store::Storage::upkeep`].
    ///
    /// # Errors
    /// `Refused` `deposed`; the database failed.
    pub async fn upkeep(&self, leadership: &Leadership, batch: i64) -> StoreResult<UpkeepReport> {
        let now = self.now();
        let mut report = UpkeepReport::default();
        let mut enqueued = false;
        let mut tx = self.pool.begin().await?;
        fence(&mut tx, leadership, now).await?;
        let due = sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM routines WHERE status = 'paused' AND paused_until <= ?1
             ORDER BY paused_until LIMIT ?2",
        )
        .bind(now)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let changes = RoutineChanges {
            status: Some(RoutineStatus::Active),
            ..RoutineChanges::default()
        };
        for id in due {
            change_routine(&mut tx, id, &changes, Actor::System, now).await?;
            report.resumed += 1;
        }
        let overdue = sqlx::query_as::<_, (Uuid, Uuid)>(
            "SELECT id, linked_issue_id FROM routine_runs
             WHERE status = 'issue_created' AND deadline_at <= ?1 AND linked_issue_id IS NOT NULL
             ORDER BY deadline_at LIMIT ?2",
        )
        .bind(now)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        for (run_id, issue_id) in overdue {
            if let Some(change) = time_out_run(&mut tx, run_id, issue_id, now).await? {
                enqueued |= settle(&mut tx, &[change], now).await?;
                report.timed_out += 1;
            }
        }
        tx.commit().await?;
        if report.resumed > 0 {
            self.announce_triggers();
        }
        if enqueued {
            self.announce_jobs();
        }
        Ok(report)
    }
}
