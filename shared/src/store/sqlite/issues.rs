//! Issues and their history on SQLite.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{
    SqliteStore, agents::ensure_assignable, company_exists, heartbeats::insert_heartbeats, record,
};
use crate::{
    engine::{health::RunChange, lifecycle::run_after_issue},
    model::{
        Actor, HeartbeatContext, Issue, IssueEvent, IssueEventType, IssueStatus, IssueWithEvents,
    },
    store::{
        IssueFilter, NewActivity, NewIssue, StoreError, StoreResult, heartbeats::NewHeartbeat,
        new_id,
    },
};

pub(super) async fn fetch_issue(conn: &mut SqliteConnection, id: Uuid) -> StoreResult<Issue> {
    sqlx::query_as::<_, Issue>(concat!(
        "SELECT ",
        issue_columns!(),
        " FROM issues WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

/// Inserts an issue with the given routine origin; returns it.
pub(super) async fn insert_issue(
    conn: &mut SqliteConnection,
    company_id: Uuid,
    new: &NewIssue,
    origin: Option<(Uuid, Uuid)>,
    now: DateTime<Utc>,
) -> StoreResult<Issue> {
    Ok(sqlx::query_as::<_, Issue>(concat!(
        "INSERT INTO issues (id, company_id, title, description, project_id, goal_id,
                             parent_issue_id, assignee_agent_id, priority, status, routine_id,
                             origin_run_id, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'todo', ?10, ?11, ?12, ?12)
         RETURNING ",
        issue_columns!()
    ))
    .bind(new_id())
    .bind(company_id)
    .bind(new.title.as_str())
    .bind(new.description.as_str())
    .bind(new.project_id)
    .bind(new.goal_id)
    .bind(new.parent_issue_id)
    .bind(new.assignee_agent_id)
    .bind(new.priority.as_str())
    .bind(origin.map(|(routine, _)| routine))
    .bind(origin.map(|(_, run)| run))
    .bind(now)
    .fetch_one(conn)
    .await?)
}

pub(super) async fn insert_event(
    conn: &mut SqliteConnection,
    issue: (Uuid, Uuid),
    event_type: IssueEventType,
    actor: Actor,
    data: &serde_json::Value,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let (company_id, issue_id) = issue;
    sqlx::query(
        "INSERT INTO issue_events (id, company_id, issue_id, type, actor_type, actor_id, data, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .bind(new_id())
    .bind(company_id)
    .bind(issue_id)
    .bind(event_type.as_str())
    .bind(actor.actor_type().as_str())
    .bind(actor.actor_id())
    .bind(data)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

impl SqliteStore {
    /// See [`crate::store::Storage::create_issue`].
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`, `Refused`; the database failed.
    pub async fn create_issue(
        &self,
        company_id: Uuid,
        new: NewIssue,
        actor: Actor,
    ) -> StoreResult<Issue> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !company_exists(&mut tx, company_id).await? {
            return Err(StoreError::NotFound);
        }
        if let Some(agent_id) = new.assignee_agent_id {
            ensure_assignable(&mut tx, company_id, agent_id).await?;
        }
        super::catalog::ensure_references(
            &mut tx,
            company_id,
            new.project_id,
            new.goal_id,
            new.parent_issue_id,
        )
        .await?;
        let issue = insert_issue(&mut tx, company_id, &new, None, now).await?;
        insert_event(
            &mut tx,
            (company_id, issue.id),
            IssueEventType::Created,
            actor,
            &json!({}),
            now,
        )
        .await?;
        let mut wakeups = false;
        if let Some(agent_id) = issue.assignee_agent_id {
            let heartbeat = NewHeartbeat {
                company_id,
                agent_id,
                issue_id: issue.id,
                routine_run_id: None,
                context: HeartbeatContext {
                    routine_id: None,
                    title: issue.title.clone(),
                    description: issue.description.clone(),
                    payload: json!({}),
                    source: "assignment".to_owned(),
                    scheduled_for: None,
                },
            };
            wakeups = insert_heartbeats(&mut tx, vec![heartbeat], now).await?.1;
        }
        let entry = NewActivity::issue_created(&issue, actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        if wakeups {
            self.announce_jobs();
        }
        Ok(issue)
    }

    /// See [`crate::store::Storage::issue`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn issue(&self, id: Uuid) -> StoreResult<Issue> {
        fetch_issue(&mut *self.pool.acquire().await?, id).await
    }

    /// See [`crate::store::Storage::issue_with_events`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn issue_with_events(&self, id: Uuid) -> StoreResult<IssueWithEvents> {
        let issue = self.issue(id).await?;
        let events = sqlx::query_as::<_, IssueEvent>(
            "SELECT id, type AS event_type, actor_type, actor_id, data, created_at
             FROM issue_events WHERE issue_id = ?1 ORDER BY created_at, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(IssueWithEvents { issue, events })
    }

    /// See [`crate::store::Storage::issues`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn issues(&self, company_id: Uuid, filter: IssueFilter) -> StoreResult<Vec<Issue>> {
        Ok(sqlx::query_as::<_, Issue>(concat!(
            "SELECT ",
            issue_columns!(),
            " FROM issues
              WHERE company_id = ?1
                AND (?2 IS NULL OR routine_id = ?2)
                AND (?3 IS NULL OR status = ?3)
                AND (?4 IS NULL OR assignee_agent_id = ?4)
                AND (?5 IS NULL OR id < ?5)
              ORDER BY id DESC
              LIMIT ?6"
        ))
        .bind(company_id)
        .bind(filter.routine_id)
        .bind(filter.status.map(IssueStatus::as_str))
        .bind(filter.assignee_agent_id)
        .bind(filter.before)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// See [`crate::store::Storage::set_issue_status`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn set_issue_status(
        &self,
        id: Uuid,
        status: IssueStatus,
        actor: Actor,
    ) -> StoreResult<Issue> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let current = fetch_issue(&mut tx, id).await?;
        if current.status == status {
            return Ok(current);
        }
        let issue = sqlx::query_as::<_, Issue>(concat!(
            "UPDATE issues SET status = ?2, updated_at = ?3 WHERE id = ?1 RETURNING ",
            issue_columns!()
        ))
        .bind(id)
        .bind(status.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        // The run that created the issue follows it (see `engine::lifecycle`).
        let mut notified = false;
        if let (Some(run_id), Some(ending)) = (issue.origin_run_id, run_after_issue(status)) {
            let ended = sqlx::query_scalar::<_, Uuid>(
                "UPDATE routine_runs SET status = ?2, reason = ?3, failure_reason = ?4,
                                         completed_at = ?5, updated_at = ?5, deadline_at = NULL
                 WHERE id = ?1 AND status = 'issue_created'
                 RETURNING routine_id",
            )
            .bind(run_id)
            .bind(ending.status.as_str())
            .bind(ending.reason)
            .bind(ending.failure)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(routine_id) = ended {
                let change = RunChange {
                    run_id,
                    routine_id,
                    status: ending.status,
                    reason: ending.reason.map(str::to_owned),
                };
                notified = super::health::settle(&mut tx, &[change], now).await?;
            }
        }
        let change = json!({ "from": current.status, "to": status });
        insert_event(
            &mut tx,
            (issue.company_id, issue.id),
            IssueEventType::StatusChanged,
            actor,
            &change,
            now,
        )
        .await?;
        let entry = NewActivity::issue_status_changed(&issue, change, actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        if notified {
            self.announce_jobs();
        }
        Ok(issue)
    }
}
